//! Per-domain certificates chosen by SNI, from a real Redis, over real TLS handshakes.

mod common;

use common::*;
use openssl::ssl::{SslConnector, SslMethod};
use openssl::x509::X509;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

fn leaf(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    dev_leaf(dir, name, 0, 30)
}

fn start(fallback: bool) -> (Redis, Linkedge) {
    let redis = Redis::start();
    let mut o = Options::new(redis.url());
    // The block list's periodic re-sync reads Redis on its own schedule (every minute by
    // default), which the counts of reads made for handshakes must not include.
    o.extra_yaml = format!(
        "regions:\n  us: {{ backends: [{{ addr: \"127.0.0.1:9\" }}] }}\n\
certs:\n  master_key: 1\n  master_keys: [{{ id: 1, secret_file: master-key }}]\n  negative_ttl: 60s\n  fallback: {fallback}\n\
blocks: {{ resync_interval: 3600s }}\n"
    );
    let le = Linkedge::start(&o);
    (redis, le)
}

/// A TLS handshake with `sni`, verifying against the development CA; the served leaf's serial.
async fn handshake(le: &Linkedge, sni: &str) -> Result<String, String> {
    tls_serial(le, sni, &std::fs::read(dev_ca()).unwrap()).await
}

/// A TLS connection to `le` sending `sni` (no SNI when `None`), its chain verified against the
/// development CA but not its name, as a proxy in front may connect.
async fn connect(le: &Linkedge, sni: Option<&str>) -> Result<SslStream<TcpStream>, String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(dev_ca()).unwrap();
    let ssl = b
        .build()
        .configure()
        .unwrap()
        .use_server_name_indication(sni.is_some())
        .verify_hostname(false)
        .into_ssl(sni.unwrap_or("localhost"))
        .unwrap();
    let tcp = TcpStream::connect(le.https).await.unwrap();
    let mut s = SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut s)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// The serial of the leaf `s` was served.
fn served_serial(s: &SslStream<TcpStream>) -> String {
    let cert = s.ssl().peer_certificate().expect("a certificate");
    cert.serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string()
}

/// The serial of `tls.cert` (the development certificate).
fn dev_serial() -> String {
    let pem = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-dev/leaf.pem"));
    let dev = X509::from_pem(&pem.unwrap()).unwrap();
    dev.serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string()
}

/// `GET path` with `Host: host` over `s` (HTTP/1.1, closed after): the response as text.
async fn get(mut s: SslStream<TcpStream>, path: &str, host: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                // The server closed (without close_notify, an error here: the end too).
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("the response within 10 s");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_per_sni_from_redis_replaced_without_restart() {
    let (redis, le) = start(false);
    let (cert, key, serial) = leaf(le.dir.path(), "a.linkedge.test");
    import_cert(&le, "a.linkedge.test", &cert, &key);

    assert_eq!(handshake(&le, "a.linkedge.test").await.unwrap(), serial);
    // The second handshake is answered from memory.
    assert_eq!(handshake(&le, "a.linkedge.test").await.unwrap(), serial);
    assert!(le.metric("linkedge_cert_lookups_total{source=\"memory\"}") >= 1.0);
    assert_eq!(
        le.metric("linkedge_cert_lookups_total{source=\"redis\"}"),
        1.0
    );
    // The private key is sealed at rest: Redis alone does not hold a usable key.
    let sealed: String = redis::cmd("HGET")
        .arg("linkedge:cert:a.linkedge.test")
        .arg("key")
        .query(&mut redis.conn())
        .unwrap();
    assert!(!sealed.contains("PRIVATE KEY"));
    assert!(!std::fs::read_to_string(&key).unwrap().contains(&sealed));

    // No certificate for the name, no fallback: the handshake fails cleanly. (A name under
    // *.linkedge.test would be one of the edge's own names, which tls.cert covers.)
    assert!(connect(&le, Some("c.customer.test")).await.is_err());

    // A new certificate is served at the next handshake, no restart.
    let (cert2, key2, serial2) = leaf(le.dir.path(), "a.linkedge.test");
    import_cert(&le, "a.linkedge.test", &cert2, &key2);
    let mut now = String::new();
    assert!(
        eventually(std::time::Duration::from_secs(5), || {
            now = futures_block(handshake(&le, "a.linkedge.test")).unwrap();
            now == serial2
        }),
        "still serving {now}, not {serial2}"
    );

    // A certificate that does not cover the name, or a key of another certificate, is refused.
    let (other_cert, _, _) = leaf(le.dir.path(), "b.linkedge.test");
    let (ok, out) = cli(
        &le,
        "cert",
        &[
            "import",
            "a.linkedge.test",
            "--cert",
            other_cert.to_str().unwrap(),
            "--key",
            key2.to_str().unwrap(),
        ],
    );
    assert!(!ok);
    assert!(
        out.contains("does not match") || out.contains("does not cover"),
        "{out}"
    );
    let (ok, out) = cli(&le, "cert", &["show", "a.linkedge.test"]);
    assert!(ok && out.contains("not_after"), "{out}");
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// Calls of the commands a handshake could read the registry or certificate store with.
fn lookup_calls(redis: &Redis) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.conn())
        .unwrap();
    ["hgetall", "hget", "exists", "get", "hscan"]
        .iter()
        .map(|c| {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("cmdstat_{c}:calls=")))
                .and_then(|v| v.split(',').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn unregistered_sni_names_cost_no_redis_command() {
    let (redis, le) = start(false);
    let (cert, key, serial) = leaf(le.dir.path(), "a.linkedge.test");
    import_cert(&le, "a.linkedge.test", &cert, &key);
    assert_eq!(handshake(&le, "a.linkedge.test").await.unwrap(), serial);
    let before = lookup_calls(&redis);
    // 10,000 handshakes, 8 at a time, each for a random name no one registered.
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8u64 {
        let (root, https) = (std::fs::read(dev_ca()).unwrap(), le.https);
        tasks.spawn(async move {
            let mut refused = 0;
            for i in 0..1250u64 {
                let name = format!("scan{:x}.example.org", rand_u64(w * 1_000_000 + i));
                if tls_serial_at(https, &name, &root).await.is_err() {
                    refused += 1;
                }
            }
            refused
        });
    }
    let mut refused = 0;
    while let Some(r) = tasks.join_next().await {
        refused += r.unwrap();
    }
    let elapsed = started.elapsed();
    let reads = lookup_calls(&redis) - before;
    println!(
        "10000 unregistered SNI handshakes in {:.1} s: {reads} registry or certificate reads",
        elapsed.as_secs_f64()
    );
    assert_eq!(
        refused, 10_000,
        "a name no one registered got a certificate"
    );
    assert_eq!(reads, 0, "unregistered names reached Redis");
    assert!(le.metric("linkedge_cert_lookups_total{source=\"unregistered\"}") >= 10_000.0);
    // Still serving: the registered name, and plain HTTP.
    assert_eq!(handshake(&le, "a.linkedge.test").await.unwrap(), serial);
    let r = client().get(le.http_url("/health")).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    // A certificate for a name the registry does not know is refused, saying why.
    let (c, k, _) = leaf(le.dir.path(), "z.linkedge.test");
    let (ok, out) = cli(
        &le,
        "cert",
        &[
            "import",
            "z.linkedge.test",
            "--cert",
            c.to_str().unwrap(),
            "--key",
            k.to_str().unwrap(),
        ],
    );
    assert!(
        !ok && out.contains("z.linkedge.test is not registered: add it first"),
        "{out}"
    );
}

/// A well-mixed 64-bit value of `i` (splitmix64), for names no one could have registered.
fn rand_u64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[tokio::test(flavor = "multi_thread")]
async fn fallback_certificate_and_sni_host_mismatch() {
    let (_redis, le) = start(true);
    // Unknown name tls.cert does not cover, with fallback on: tls.cert (the dev certificate)
    // is served all the same.
    let s = connect(&le, Some("x.customer.test")).await.unwrap();
    assert_eq!(served_serial(&s), dev_serial());
    assert!(le.metric("linkedge_cert_lookups_total{source=\"fallback\"}") >= 1.0);

    // A link for y.customer.test requested with Host y.customer.test on a connection made for
    // x.customer.test: the Host-mismatch answer (a name served the fallback is no own name).
    let t = click("y.customer.test", "https://example.com/", 1);
    let r = get(s, &format!("/c/{t}"), "y.customer.test").await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(r.ends_with("Invalid link security token"), "{r}");
    assert!(le.metric("linkedge_tls_handshakes_total{resumed=\"false\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn own_names_get_tls_cert_from_memory_whatever_fallback() {
    let (redis, le) = start(false);
    let dev = dev_serial();
    // A customer domain under tls.cert's *.linkedge.test keeps its own certificate.
    let (cert, key, serial) = leaf(le.dir.path(), "a.linkedge.test");
    import_cert(&le, "a.linkedge.test", &cert, &key);
    assert_eq!(handshake(&le, "a.linkedge.test").await.unwrap(), serial);
    // One without a certificate yet gets tls.cert, which covers it.
    add_domain(&le, "p.linkedge.test", &[]);
    assert_eq!(handshake(&le, "p.linkedge.test").await.unwrap(), dev);

    // The development certificate's names: *.linkedge.test, linkedge.test, localhost.
    let before = lookup_calls(&redis);
    let no_sni = connect(&le, None).await.unwrap();
    assert_eq!(served_serial(&no_sni), dev, "no SNI");
    for own in [
        "linkedge.test",
        "LinkEdge.Test",
        "localhost",
        "track.linkedge.test",
    ] {
        assert_eq!(handshake(&le, own).await.unwrap(), dev, "{own}");
    }
    // 1,000 random names no one registered, and 1,000 random names under *.linkedge.test,
    // 8 handshakes at a time.
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8u64 {
        let (root, https, dev) = (std::fs::read(dev_ca()).unwrap(), le.https, dev.clone());
        tasks.spawn(async move {
            let (mut refused, mut own) = (0, 0);
            for i in 0..125u64 {
                let r = rand_u64(7_000_000 + w * 1_000 + i);
                let scan = format!("scan{r:x}.example.org");
                refused += u32::from(tls_serial_at(https, &scan, &root).await.is_err());
                let ours = format!("t{r:x}.linkedge.test");
                own += u32::from(tls_serial_at(https, &ours, &root).await.as_ref() == Ok(&dev));
            }
            (refused, own)
        });
    }
    let (mut refused, mut own) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (r, o) = r.unwrap();
        refused += r;
        own += o;
    }
    let reads = lookup_calls(&redis) - before;
    println!(
        "1000 random SNI names and 1000 random names under the edge's *. name, no SNI, exact \
         own names, fallback off: {reads} registry or certificate reads"
    );
    assert_eq!(refused, 1_000, "a name no one registered got a certificate");
    assert_eq!(
        own, 1_000,
        "a name under *.linkedge.test did not get tls.cert"
    );
    assert_eq!(reads, 0, "own or unknown names reached Redis");
    assert!(le.metric("linkedge_cert_lookups_total{source=\"own\"}") >= 1_005.0);
    assert_eq!(
        le.metric("linkedge_cert_lookups_total{source=\"fallback\"}"),
        0.0
    );
}

/// What a customer's own proxy in front sends: no SNI (nginx's `proxy_pass https://…`) or the
/// edge's name (Fastly), with the customer's Host. The link's signature binds the Host.
#[tokio::test(flavor = "multi_thread")]
async fn own_names_and_no_sni_are_judged_by_host_alone() {
    let (_redis, le) = start(false);
    // Another customer's domain, with its certificate.
    let (cert, key, _) = leaf(le.dir.path(), "shop.customer.test");
    import_cert(&le, "shop.customer.test", &cert, &key);
    let host = "link.example.com";
    let path = format!("/c/{}", click(host, "https://example.com/welcome", 1));
    let before = le.metric("linkedge_host_mismatch_total");

    // No SNI: the Host alone decides.
    let r = get(connect(&le, None).await.unwrap(), &path, host).await;
    assert!(r.starts_with("HTTP/1.1 302"), "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains("\r\nlocation: https://example.com/welcome\r\n"),
        "{r}"
    );
    let r = get(connect(&le, None).await.unwrap(), "/health", host).await;
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("{}"), "{r}");

    // Anyone may register the edge's name under its *. name; merely registered (pending), it
    // stays the edge's own, or every proxy connecting by it would get 403.
    add_domain(&le, "track.linkedge.test", &[]);

    // The edge's own names, exact and under *.linkedge.test, verified as a client would.
    for own in ["linkedge.test", "track.linkedge.test"] {
        let c = client_builder()
            .resolve(own, le.https)
            .http1_only()
            .build()
            .unwrap();
        let url = format!("https://{own}:{}{path}", le.https.port());
        let r = c.get(&url).header("Host", host).send().await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::FOUND, "SNI {own}");
        assert_eq!(r.headers()["location"], "https://example.com/welcome");
        // A proxy that rewrites the Host (to the edge's name) breaks the link's signature.
        let r = c.get(&url).header("Host", own).send().await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN, "SNI {own}");
        assert_eq!(r.text().await.unwrap(), "Invalid link security token");
    }

    // Another customer's name as SNI: its connection may not carry link.example.com's links.
    let c = client_builder()
        .resolve("shop.customer.test", le.https)
        .http1_only()
        .build()
        .unwrap();
    let r = c
        .get(format!(
            "https://shop.customer.test:{}{path}",
            le.https.port()
        ))
        .header("Host", host)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN);
    assert_eq!(r.text().await.unwrap(), "Invalid link security token");
    assert_eq!(
        le.metric("linkedge_token_failures_total{reason=\"sni_mismatch\"}"),
        1.0
    );
    assert_eq!(le.metric("linkedge_host_mismatch_total"), before + 3.0);
}

/// The key type of the leaf served to a client offering only `sigalgs` (TLS 1.2 for RSA-only).
async fn served_key_type(le: &Linkedge, sni: &str, sigalgs: Option<&str>) -> openssl::pkey::Id {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(dev_ca()).unwrap();
    if let Some(algs) = sigalgs {
        b.set_sigalgs_list(algs).unwrap();
        b.set_max_proto_version(Some(openssl::ssl::SslVersion::TLS1_2))
            .unwrap();
        b.set_cipher_list("ECDHE-RSA-AES128-GCM-SHA256").unwrap();
    }
    let ssl = b.build().configure().unwrap().into_ssl(sni).unwrap();
    let tcp = tokio::net::TcpStream::connect(le.https).await.unwrap();
    let mut s = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut s).connect().await.unwrap();
    s.ssl()
        .peer_certificate()
        .unwrap()
        .public_key()
        .unwrap()
        .id()
}

#[tokio::test(flavor = "multi_thread")]
async fn rsa_certificate_for_clients_without_ecdsa() {
    let (_redis, le) = start(false);
    let host = "r.linkedge.test";
    for rsa in [false, true] {
        let (cert, key, _) = dev_leaf_with(le.dir.path(), host, 0, 30, rsa);
        import_cert(&le, host, &cert, &key);
    }
    assert_eq!(
        served_key_type(&le, host, None).await,
        openssl::pkey::Id::EC
    );
    assert_eq!(
        served_key_type(&le, host, Some("RSA+SHA256:RSA-PSS+SHA256")).await,
        openssl::pkey::Id::RSA
    );
}

/// A domain fronted by the customer's own proxy, which forwards the domain as SNI (CloudFront
/// with "Headers: All", Cloudflare "Full"): `tls.cert`, decided from memory with fallback off,
/// even over a certificate imported for it; over such a connection the Host must still be the
/// SNI name.
#[tokio::test(flavor = "multi_thread")]
async fn fronted_domains_get_tls_cert_from_memory_whatever_fallback() {
    let (redis, le) = start(false);
    let dev = dev_serial();
    let host = "link.fronted.test";
    let (cert, key, serial) = leaf(le.dir.path(), host);
    import_cert(&le, host, &cert, &key);
    assert_eq!(handshake(&le, host).await.unwrap(), serial);
    let out = add_domain(&le, host, &["--fronted"]);
    assert!(out.contains("\"fronted\": true"), "{out}");

    let before = lookup_calls(&redis);
    for _ in 0..200 {
        let s = connect(&le, Some(host)).await.unwrap();
        assert_eq!(served_serial(&s), dev);
    }
    let reads = lookup_calls(&redis) - before;
    println!(
        "200 handshakes for a fronted domain, fallback off: {reads} registry or certificate reads"
    );
    assert_eq!(reads, 0, "a fronted domain's handshake reached Redis");
    assert!(le.metric("linkedge_cert_lookups_total{source=\"fronted\"}") >= 200.0);
    assert_eq!(
        le.metric("linkedge_cert_lookups_total{source=\"fallback\"}"),
        0.0
    );

    // Its own links, with its Host, redirect; another domain's Host on its connection is refused.
    let path = format!("/c/{}", click(host, "https://example.com/welcome", 1));
    let r = get(connect(&le, Some(host)).await.unwrap(), &path, host).await;
    assert!(r.starts_with("HTTP/1.1 302"), "{r}");
    let other = "link.example.com";
    let path = format!("/c/{}", click(other, "https://example.com/welcome", 2));
    let r = get(connect(&le, Some(host)).await.unwrap(), &path, other).await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(r.ends_with("Invalid link security token"), "{r}");
}

/// A TLS connection like [`connect`], offering `session` for resumption.
async fn resume(
    le: &Linkedge,
    sni: Option<&str>,
    session: &openssl::ssl::SslSession,
) -> Result<SslStream<TcpStream>, String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(dev_ca()).unwrap();
    let mut ssl = b
        .build()
        .configure()
        .unwrap()
        .use_server_name_indication(sni.is_some())
        .verify_hostname(false)
        .into_ssl(sni.unwrap_or("localhost"))
        .unwrap();
    // SAFETY: the session comes from a connection with the same connector settings.
    unsafe { ssl.set_session(session).unwrap() };
    let tcp = TcpStream::connect(le.https).await.unwrap();
    let mut s = SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut s)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(s)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_resumed_under_a_name_without_a_certificate_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_redis, le) = start(false);
    // A session from a connection without SNI (the edge's own certificate), read to its end
    // so that TLS 1.3's session ticket has arrived.
    let mut s = connect(&le, None).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let session = s.ssl().session().expect("a session").to_owned();
    // Resumed as it was made: accepted, and resumed.
    let again = resume(&le, None, &session).await.unwrap();
    assert!(again.ssl().session_reused(), "the session was not resumed");
    // Resumed under a name the edge has no certificate for (fallback off): refused, as a full
    // handshake for that name is, not let through on the earlier session.
    let refused = resume(&le, Some("stranger.example.test"), &session).await;
    assert!(refused.is_err(), "a resumed session got around the refusal");
    assert!(connect(&le, Some("stranger.example.test")).await.is_err());
}
