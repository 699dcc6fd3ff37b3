//! Everything the edge does not answer goes to the Host's regional backends: real upstream
//! servers (some over TLS) on free ports, a real linkedge, real HTTP clients.

mod common;

use common::upstream::Upstream;
use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One region's YAML: backends as `(addr, tls)`, plus extra region keys.
fn region(name: &str, backends: &[(&Upstream, bool)], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|(u, tls)| {
            if *tls {
                format!("{{ addr: \"{}\", tls: true, sni: localhost }}", u.addr)
            } else {
                format!("{{ addr: \"{}\" }}", u.addr)
            }
        })
        .collect();
    let ca = dev_ca().display().to_string();
    let check = if extra.contains("health_check") {
        ""
    } else {
        "    health_check: { interval: 200ms, timeout: 500ms, failures: 1, successes: 1 }\n"
    };
    format!(
        "  {name}:\n    backends: [{}]\n    ca_file: {ca}\n{check}    timeouts: {{ connect: 500ms, read: 1s, write: 1s }}\n{extra}",
        list.join(", ")
    )
}

fn start(redis: &Redis, regions: &[String], routing: &str) -> Linkedge {
    let mut o = Options::new(redis.url());
    o.extra_yaml = format!("regions:\n{}routing:\n{routing}", regions.concat());
    Linkedge::start(&o)
}

async fn echo(le: &Linkedge, host: &str, path: &str) -> (StatusCode, Value) {
    let r = client()
        .get(le.http_url(path))
        .header("Host", host)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn branded_host_and_forwarded_headers_reach_the_backend() {
    let redis = Redis::start();
    let us = Upstream::start("us-1", false).await;
    let le = start(
        &redis,
        &[region("us", &[(&us, false)], "")],
        "  default_region: us\n",
    );

    let r = client()
        .get(le.http_url("/unsubscribe/abc?x=1"))
        .header("Host", "Link.Example.com")
        .header("X-Forwarded-For", "6.6.6.6")
        .header("Forwarded", "for=6.6.6.6;proto=https")
        .header("X-Real-IP", "6.6.6.6")
        .header("Connection", "keep-alive")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["server"], "us-1");
    assert_eq!(e["target"], "/unsubscribe/abc?x=1");
    let h = &e["headers"];
    assert_eq!(h["host"], "link.example.com");
    assert_eq!(h["x-forwarded-host"], "link.example.com");
    assert_eq!(h["x-forwarded-proto"], "http");
    // The client is not a trusted proxy: its X-Forwarded-For is replaced, not extended.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    // Nor may its other ways of naming a client reach the backend.
    assert!(h.get("forwarded").is_none(), "{h}");
    assert!(h.get("x-real-ip").is_none(), "{h}");
    assert_eq!(h["x-request-id"], rid.as_str());

    // Over HTTPS (and HTTP/2 to the edge), a client-given request id is kept.
    let host = "link.linkedge.test";
    let c = client_builder().resolve(host, le.https).build().unwrap();
    let r = c
        .post(format!("https://{host}:{}/webhooks/x", le.https.port()))
        .header("X-Request-Id", "abc-123")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), StatusCode::OK);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["method"], "POST");
    assert_eq!(e["body_bytes"], 7);
    assert_eq!(e["headers"]["host"], host);
    assert_eq!(e["headers"]["x-forwarded-proto"], "https");
    assert_eq!(e["headers"]["x-request-id"], "abc-123");
    // Counted in the logging phase, just after the response went out.
    assert!(eventually(Duration::from_secs(2), || le.metric(
        "linkedge_upstream_requests_total{region=\"us\",status=\"200\"}"
    ) >= 2.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_spreads_and_ketama_sticks() {
    let redis = Redis::start();
    let (a, b) = (
        Upstream::start("a", false).await,
        Upstream::start("b", true).await,
    );
    let (k1, k2, k3) = (
        Upstream::start("k1", false).await,
        Upstream::start("k2", false).await,
        Upstream::start("k3", false).await,
    );
    let le = start(
        &redis,
        &[
            region("us", &[(&a, false), (&b, true)], ""),
            region(
                "eu",
                &[(&k1, false), (&k2, false), (&k3, false)],
                "    selection: ketama\n",
            ),
        ],
        "  default_region: us\n  domains: { sticky.example.com: eu, other.example.com: eu }\n",
    );
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..10 {
        let (s, e) = echo(&le, "link.example.com", "/p").await;
        assert_eq!(s, StatusCode::OK);
        *seen
            .entry(e["server"].as_str().unwrap().into())
            .or_default() += 1;
    }
    assert_eq!(seen.get("a"), Some(&5), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&5), "{seen:?}");

    let mut sticky = std::collections::HashSet::new();
    for _ in 0..10 {
        let (s, e) = echo(&le, "sticky.example.com", "/p").await;
        assert_eq!(s, StatusCode::OK);
        sticky.insert(e["server"].as_str().unwrap().to_string());
    }
    assert_eq!(sticky.len(), 1, "one Host keeps to one backend: {sticky:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_backend_leaves_rotation_and_no_request_fails() {
    let redis = Redis::start();
    let (a, mut b) = (
        Upstream::start("a", false).await,
        Upstream::start("b", false).await,
    );
    let le = start(
        &redis,
        &[region("us", &[(&a, false), (&b, false)], "")],
        "  default_region: us\n",
    );
    let gauge = format!(
        "linkedge_backend_healthy{{backend=\"{}\",region=\"us\"}}",
        b.addr
    );
    assert_eq!(le.metric(&gauge), 1.0);

    b.stop().await;
    // Even before the health check notices, a refused connection is retried on `a`.
    for _ in 0..10 {
        let (s, e) = echo(&le, "link.example.com", "/p").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(e["server"], "a");
    }
    assert!(
        eventually(Duration::from_secs(5), || le.metric(&gauge) == 0.0),
        "b never left rotation:\n{}",
        le.metrics_text()
    );
    let retries = le.metric("linkedge_upstream_events_total{event=\"retry\",region=\"us\"}");
    for _ in 0..20 {
        let (s, _) = echo(&le, "link.example.com", "/p").await;
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(
        le.metric("linkedge_upstream_events_total{event=\"retry\",region=\"us\"}"),
        retries,
        "no retries once b is out of rotation"
    );

    // Back up: it returns to rotation.
    let b2 = Upstream::start_at(b.addr, "b", false).await;
    assert!(eventually(Duration::from_secs(5), || le.metric(&gauge) == 1.0));
    let mut saw_b = false;
    for _ in 0..6 {
        saw_b |= echo(&le, "link.example.com", "/p").await.1["server"] == "b";
    }
    assert!(saw_b);
    drop(b2);
}

#[tokio::test(flavor = "multi_thread")]
async fn region_down_fails_over_only_where_allowed() {
    let redis = Redis::start();
    let mut us = Upstream::start("us-1", false).await;
    let mut eu = Upstream::start("eu-1", false).await;
    let le = start(
        &redis,
        &[
            // us may fail over to eu; eu traffic must stay in eu (data residency).
            region("us", &[(&us, false)], "    fallback: eu\n"),
            region("eu", &[(&eu, false)], ""),
        ],
        "  default_region: us\n  domains: { link.eu-customer.example: eu }\n",
    );
    us.stop().await;
    let (s, e) = echo(&le, "link.example.com", "/p").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(e["server"], "eu-1", "us down: served by eu");
    assert!(le.metric("linkedge_upstream_events_total{event=\"failover\",region=\"us\"}") >= 1.0);

    let us2 = Upstream::start_at(us.addr, "us-1", false).await;
    eu.stop().await;
    let hits_before = us2.hits.load(std::sync::atomic::Ordering::Relaxed);
    let (s, body) = echo(&le, "link.eu-customer.example", "/p").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert!(
        body.as_str()
            .unwrap()
            .starts_with("502 Bad Gateway (request id "),
        "{body}"
    );
    // Health checks to us may land, but no request of the eu domain did.
    let hits_after = us2.hits.load(std::sync::atomic::Ordering::Relaxed);
    assert!(hits_after - hits_before <= 2, "an eu request reached us");
}

#[tokio::test(flavor = "multi_thread")]
async fn all_backends_down_without_fallback_is_502_and_unknown_host_421() {
    let redis = Redis::start();
    let mut us = Upstream::start("us-1", false).await;
    let le = start(
        &redis,
        &[region("us", &[(&us, false)], "")],
        "  domains: { link.example.com: us }\n",
    );
    let (s, _) = echo(&le, "unknown.example.org", "/p").await;
    assert_eq!(s, StatusCode::MISDIRECTED_REQUEST);
    // Links, pixels and /health are still answered on any Host.
    let (s, _) = echo(&le, "unknown.example.org", "/health").await;
    assert_eq!(s, StatusCode::OK);

    us.stop().await;
    let (s, _) = echo(&le, "link.example.com", "/p").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_backend_gets_504_within_the_read_timeout() {
    let redis = Redis::start();
    let us = Upstream::start("us-1", false).await;
    let le = start(
        &redis,
        &[region("us", &[(&us, false)], "")],
        "  default_region: us\n",
    );
    let started = Instant::now();
    let (s, _) = echo(&le, "link.example.com", "/slow").await;
    let took = started.elapsed();
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    // read timeout 1 s; the backend would take 3 s.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_token_versions_go_to_the_backend() {
    let redis = Redis::start();
    let us = Upstream::start("us-1", false).await;
    let le = start(
        &redis,
        &[region("us", &[(&us, false)], "")],
        "  default_region: us\n",
    );
    // A version-2 token (this edge decodes version 1): the backend decides.
    use base64::Engine;
    let mut v2 = vec![2u8, 1, 2, 0, 0, 0, 0, 0];
    v2.extend([7u8; 20]);
    let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&v2);
    let (s, e) = echo(&le, LOCAL, &format!("/c/{t}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(e["server"], "us-1");
    // A forged version-1 token is still refused at the edge.
    let mut v1 = v2.clone();
    v1[0] = 1;
    let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&v1);
    let (s, _) = echo(&le, LOCAL, &format!("/c/{t}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_megabytes_stream_both_ways_in_flat_memory() {
    let redis = Redis::start();
    let us = Upstream::start("us-1", false).await;
    let le = start(
        &redis,
        &[region("us", &[(&us, false)], "")],
        "  default_region: us\n",
    );
    // Warm up, then take the baseline.
    echo(&le, "link.example.com", "/p").await;
    let base = le.proc_kb("VmRSS");
    const SIZE: u64 = 100 << 20;

    let chunks = futures_util_stream(SIZE);
    let r = client()
        .post(le.http_url("/upload"))
        .header("Host", "link.example.com")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["body_bytes"], SIZE);

    let mut r = client()
        .get(le.http_url(&format!("/download?bytes={SIZE}")))
        .header("Host", "link.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut got = 0u64;
    while let Some(c) = r.chunk().await.unwrap() {
        got += c.len() as u64;
    }
    assert_eq!(got, SIZE);
    let peak = le.proc_kb("VmHWM");
    eprintln!("linkedge RSS before {base} kB, peak after 2 x 100 MB {peak} kB");
    assert!(
        peak < base + 32 * 1024,
        "memory grew with the body: {base} kB -> peak {peak} kB"
    );
}

/// 100 MB in 64 KiB chunks, generated as they are sent.
fn futures_util_stream(
    total: u64,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    struct S {
        left: u64,
    }
    impl futures_core::Stream for S {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if self.left == 0 {
                return std::task::Poll::Ready(None);
            }
            let n = self.left.min(64 << 10);
            self.left -= n;
            std::task::Poll::Ready(Some(Ok(vec![b'u'; n as usize])))
        }
    }
    S { left: total }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_health_checks_fail_open_instead_of_breaking_links() {
    let redis = Redis::start();
    let us = Upstream::start("us-1", false).await;
    // The check expects a body the backend never sends: it is marked unhealthy, yet it serves.
    let le = start(
        &redis,
        &[region(
            "us",
            &[(&us, false)],
            "    health_check: { interval: 200ms, failures: 1, expect_body: nope }\n",
        )],
        "  default_region: us\n",
    );
    let gauge = format!(
        "linkedge_backend_healthy{{backend=\"{}\",region=\"us\"}}",
        us.addr
    );
    assert!(eventually(Duration::from_secs(5), || le.metric(&gauge) == 0.0));
    let (s, e) = echo(&le, "link.example.com", "/p").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(e["server"], "us-1");
    assert!(le.metric("linkedge_upstream_events_total{event=\"fail_open\",region=\"us\"}") >= 1.0);
}

/// A backend given by host name follows its DNS: when the name moves to another address (a
/// cloud load balancer's addresses change), requests follow within `resolve_interval`, with no
/// restart. The name resolves through a real DNS server (pebble-challtestsrv).
#[tokio::test(flavor = "multi_thread")]
async fn backend_names_are_resolved_again_and_followed() {
    let redis = Redis::start();
    let ca = common::ca::Ca::start(free_port());
    let first = Upstream::start("first", false).await;
    let port = first.addr.port();
    let second = Upstream::start_at(([127, 0, 0, 2], port).into(), "second", false).await;
    ca.set_a("backend.track.test", &["127.0.0.1"]);
    let mut o = Options::new(redis.url());
    o.extra_yaml = format!(
        "regions:\n  us:\n    backends: [{{ addr: \"backend.track.test:{port}\" }}]\n    \
         resolve_interval: 200ms\n    nameservers: [\"{}\"]\n    \
         health_check: {{ interval: 200ms, timeout: 500ms, failures: 1, successes: 1 }}\n\
         routing:\n  default_region: us\n",
        ca.dns
    );
    let le = Linkedge::start(&o);
    let (status, e) = echo(&le, "link.example.com", "/page").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(e["server"], "first");

    ca.clear_a("backend.track.test");
    ca.set_a("backend.track.test", &["127.0.0.2"]);
    let mut last = Value::Null;
    let mut followed = false;
    let start = Instant::now();
    while !followed && start.elapsed() < Duration::from_secs(10) {
        let (status, e) = echo(&le, "link.example.com", "/page").await;
        assert_eq!(status, StatusCode::OK, "{e}");
        followed = e["server"] == "second";
        last = e;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        followed,
        "still proxied to {last} after the name moved:\n{}",
        le.log()
    );
    // Once moved, every request goes to the new address.
    for _ in 0..20 {
        assert_eq!(
            echo(&le, "link.example.com", "/page").await.1["server"],
            "second"
        );
    }
    assert!(le.log().contains("backend name resolves to new addresses"));
    // The health gauge follows: the new address is there, the old one gone.
    let m = le.metrics_text();
    assert!(
        m.contains(&format!(
            "linkedge_backend_healthy{{backend=\"backend.track.test:{port} (127.0.0.2)\",region=\"us\"}} 1"
        )),
        "{m}"
    );
    assert!(!m.contains("(127.0.0.1)"), "{m}");
    drop(second);
}

/// A backend name that does not resolve stops the start with the field and the name.
#[test]
fn an_unresolvable_backend_name_is_a_clear_error_at_start() {
    let le_dir = tempfile::tempdir().unwrap();
    let cfg = le_dir.path().join("linkedge.yaml");
    let key = le_dir.path().join("key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef").unwrap();
    std::fs::write(
        &cfg,
        format!(
            "listen: {{ http: 127.0.0.1:{} }}\ntls: {{ cert: {root}/certs-dev/leaf.pem, key: {root}/certs-dev/leaf.key }}\n\
             links: {{ mint_key: 1, keys: [{{ id: 1, secret_file: {} }}] }}\n\
             regions: {{ us: {{ backends: [{{ addr: \"no-such-backend.invalid:80\" }}] }} }}\n\
             routing: {{ default_region: us }}\n\
             events: {{ spool: {{ dir: {} }} }}\n",
            free_port(),
            key.display(),
            le_dir.path().join("spool").display(),
            root = env!("CARGO_MANIFEST_DIR"),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_linkedge"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("regions.us: cannot resolve no-such-backend.invalid:80"),
        "{err}"
    );
}
