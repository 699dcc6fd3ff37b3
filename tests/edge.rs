//! The request path over real HTTP and HTTPS against a real linkedge and a real Redis.

mod common;

use common::*;
use reqwest::StatusCode;
use std::time::Duration;

async fn get(le: &Linkedge, path: &str) -> reqwest::Response {
    client().get(le.http_url(path)).send().await.unwrap()
}

async fn head(le: &Linkedge, path: &str) -> reqwest::Response {
    client().head(le.http_url(path)).send().await.unwrap()
}

fn started() -> (Redis, Linkedge) {
    let redis = Redis::start();
    let le = Linkedge::start(&Options::new(redis.url()));
    (redis, le)
}

/// A client that reaches `name` (covered by the dev certificate) at the linkedge HTTPS port.
fn tls_client(le: &Linkedge, name: &str, h1_only: bool) -> reqwest::Client {
    let b = client_builder().resolve(name, le.https);
    let b = if h1_only { b.http1_only() } else { b };
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn click_redirects_over_http_https_and_h2() {
    let (_redis, le) = started();
    let dest = "https://shop.example.com/spring?utm_source=email";

    let t = click(LOCAL, dest, 1);
    let r = get(&le, &format!("/c/{t}")).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], dest);
    assert_eq!(r.headers()["cache-control"], "no-store, max-age=0");
    assert_eq!(r.headers()["content-length"], "0");

    let host = "link.linkedge.test";
    let t = click(host, dest, 2);
    let url = format!("https://{host}:{}/c/{t}", le.https.port());
    for (h1_only, version) in [
        (true, reqwest::Version::HTTP_11),
        (false, reqwest::Version::HTTP_2),
    ] {
        let r = tls_client(&le, host, h1_only)
            .get(&url)
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), version);
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(r.headers()["location"], dest);
        assert_eq!(r.headers()["cache-control"], "no-store, max-age=0");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_survives_link_answers() {
    let (_redis, le) = started();
    let t = click(LOCAL, "https://example.com/", 1);
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(le.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!("GET /c/{t} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let mut seen = String::new();
    for _ in 0..3 {
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        seen = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(seen.starts_with("HTTP/1.1 302"), "{seen}");
    }
    assert!(
        !seen.to_ascii_lowercase().contains("connection: close"),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_mismatch_is_403_with_the_exact_body_and_counted() {
    let (_redis, le) = started();
    let before = le.metric("linkedge_host_mismatch_total");
    let t = click("a.linkedge.test", "https://example.com/", 1);
    // HTTPS to b.linkedge.test, as if a proxy in front forwarded with its own Host.
    let url = format!("https://b.linkedge.test:{}/c/{t}", le.https.port());
    let r = tls_client(&le, "b.linkedge.test", false)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.text().await.unwrap(), "Invalid link security token");
    // Plain HTTP with a rewritten Host header.
    let r = client()
        .get(le.http_url(&format!("/c/{t}")))
        .header("Host", "track.proxy.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.text().await.unwrap(), "Invalid link security token");
    assert_eq!(le.metric("linkedge_host_mismatch_total"), before + 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_truncated_and_garbage_tokens_are_404() {
    let (_redis, le) = started();
    let t = click(LOCAL, "https://example.com/", 1);
    let mut tampered = t.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let truncated = &t[..t.len() - 3];
    for bad in [tampered.as_str(), truncated, "not-a-token", "", "%00%0d%0a"] {
        let r = get(&le, &format!("/c/{bad}")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "token {bad:?}");
        assert!(r.headers().get("location").is_none());
    }
    // A pixel token is not a click and the other way round.
    let p = pixel(LOCAL);
    let r = get(&le, &format!("/c/{p}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = get(&le, &format!("/o/{t}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(le.metric("linkedge_token_failures_total{reason=\"bad_signature\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn link_signed_with_rotated_out_key_still_verifies() {
    let (_redis, le) = started();
    // The server mints with key 2; key 1 is still listed for links already sent.
    let old = keyring(1)
        .mint(
            LOCAL,
            &linkedge::token::Link {
                kind: linkedge::token::Kind::Click,
                key_id: 1,
                workspace: 1,
                message: 1,
                link: 1,
                issued: 1_700_000_000,
                url: "https://example.com/old".into(),
                trap: false,
            },
        )
        .unwrap();
    let r = get(&le, &format!("/c/{old}")).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], "https://example.com/old");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_on_every_host_http_and_https() {
    let (_redis, le) = started();
    for host in ["localhost", "link.customer.example", "anything"] {
        let r = client()
            .get(le.http_url("/health"))
            .header("Host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.text().await.unwrap(), "{}");
    }
    let url = format!("https://x.linkedge.test:{}/health", le.https.port());
    let r = tls_client(&le, "x.linkedge.test", false)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), "{}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pixel_head_405_and_other_paths() {
    let (_redis, le) = started();
    let p = pixel(LOCAL);
    let r = get(&le, &format!("/o/{p}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/gif");
    assert_eq!(r.headers()["cache-control"], "no-store, max-age=0");
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), 43);
    assert_eq!(&body[..6], b"GIF89a");

    let r = head(&le, &format!("/o/{p}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "43");
    assert!(r.bytes().await.unwrap().is_empty());

    let t = click(LOCAL, "https://example.com/h", 1);
    let r = head(&le, &format!("/c/{t}")).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], "https://example.com/h");

    let r = head(&le, "/health").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap().is_empty());

    for path in [format!("/c/{t}"), format!("/o/{p}"), "/health".into()] {
        let r = client()
            .post(le.http_url(&path))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(r.headers()["allow"], "GET, HEAD");
    }
    for path in ["/", "/unsubscribe/abc", "/c", "/favicon.ico"] {
        let r = get(&le, path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_field_lands_in_the_stream() {
    let redis = Redis::start();
    let le = Linkedge::start(&Options::new(redis.url()));
    let dest = "https://example.com/landing?x=1";
    let t = click(LOCAL, dest, 77);
    let r = client()
        .get(le.http_url(&format!("/c/{t}")))
        .header("User-Agent", "Mozilla/5.0 (test)")
        .header("Referer", "https://mail.example.net/inbox")
        // Not believed: the peer is not a trusted proxy.
        .header("X-Forwarded-For", "203.0.113.50")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let p = pixel(LOCAL);
    let r = get(&le, &format!("/o/{p}")).await;
    assert_eq!(r.status(), StatusCode::OK);

    assert!(
        eventually(Duration::from_secs(10), || redis.xlen(STREAM) == 2),
        "events not written:\n{}",
        le.log()
    );
    let entries = redis.entries(STREAM);
    let c = &entries[0];
    assert_eq!(c["type"], "click");
    assert_eq!(c["id"].len(), 32);
    assert_eq!(c["host"], LOCAL);
    assert_eq!(c["workspace"], "11");
    assert_eq!(c["message"], "22");
    assert_eq!(c["link"], "77");
    assert_eq!(c["url"], dest);
    assert_eq!(c["ip"], "127.0.0.1");
    assert_eq!(c["ua"], "Mozilla/5.0 (test)");
    assert_eq!(c["referer"], "https://mail.example.net/inbox");
    let ts: u64 = c["ts"].parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(now - ts < 60_000, "ts {ts} is not recent");
    let o = &entries[1];
    assert_eq!(o["type"], "open");
    assert!(!o.contains_key("url"));
    assert_ne!(o["id"], c["id"]);
    // Counted when the writer reads Redis's answer, just after the entries are in the stream.
    assert!(eventually(Duration::from_secs(5), || le.metric(
        "linkedge_events_total{outcome=\"written\",sink=\"default\"}"
    ) >= 2.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let redis = Redis::start();
    let mut opts = Options::new(redis.url());
    opts.trusted_proxies = vec!["127.0.0.0/8".into()];
    let le = Linkedge::start(&opts);
    let t = click(LOCAL, "https://example.com/", 1);
    let r = client()
        .get(le.http_url(&format!("/c/{t}")))
        .header("X-Forwarded-For", "6.6.6.6, 198.51.100.23")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(eventually(Duration::from_secs(10), || redis.xlen(STREAM) == 1));
    assert_eq!(redis.entries(STREAM)[0]["ip"], "198.51.100.23");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_listener_exports_prometheus_text() {
    let (_redis, le) = started();
    let t = click(LOCAL, "https://example.com/", 1);
    get(&le, &format!("/c/{t}")).await;
    get(&le, "/nope").await;
    // A request is counted when it ends, just after its response went out.
    let mut m = String::new();
    eventually(Duration::from_secs(5), || {
        m = le.metrics_text();
        m.contains("linkedge_requests_total{route=\"other\",status=\"404\"} 1")
    });
    for series in [
        "linkedge_requests_total{route=\"click\",status=\"302\"} 1",
        "linkedge_requests_total{route=\"other\",status=\"404\"} 1",
        "linkedge_request_duration_seconds_bucket",
        "linkedge_events_total{outcome=\"spooled\",sink=\"default\"}",
        "linkedge_events_dropped_total{reason=\"spool_full\",sink=\"default\"}",
        "linkedge_event_queue_depth{sink=\"default\"}",
        "linkedge_redis_write_duration_seconds",
    ] {
        assert!(m.contains(series), "missing {series} in\n{m}");
    }
    // /metrics is not served on the public listener.
    let r = get(&le, "/metrics").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
