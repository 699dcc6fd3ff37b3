//! Per-domain certificates chosen by SNI, from a real Redis, over real TLS handshakes.

mod common;

use common::*;
use openssl::ssl::{SslConnector, SslMethod};
use openssl::x509::X509;
use std::path::{Path, PathBuf};
use std::pin::Pin;

fn leaf(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    dev_leaf(dir, name, 0, 30)
}

fn start(fallback: bool) -> (Redis, Linkedge) {
    let redis = Redis::start();
    let mut o = Options::new(redis.url());
    o.extra_yaml = format!(
        "regions:\n  us: {{ backends: [{{ addr: \"127.0.0.1:9\" }}] }}\n\
certs:\n  master_key: 1\n  master_keys: [{{ id: 1, secret_file: master-key }}]\n  negative_ttl: 60s\n  fallback: {fallback}\n"
    );
    let le = Linkedge::start(&o);
    (redis, le)
}

/// A TLS handshake with `sni`, verifying against the development CA; the served leaf's serial.
async fn handshake(le: &Linkedge, sni: &str) -> Result<String, String> {
    tls_serial(le, sni, &std::fs::read(dev_ca()).unwrap()).await
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

    // No certificate for the name, no fallback: the handshake fails cleanly.
    assert!(handshake(&le, "c.linkedge.test").await.is_err());

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
    // Unknown name with fallback on: the tls.cert (dev certificate) is served.
    let serial = handshake(&le, "x.linkedge.test").await.unwrap();
    let dev = X509::from_pem(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-dev/leaf.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        serial,
        dev.serial_number()
            .to_bn()
            .unwrap()
            .to_hex_str()
            .unwrap()
            .to_string()
    );

    // A link for x.linkedge.test requested with Host y.linkedge.test on a connection made for
    // x.linkedge.test: the Host-mismatch answer.
    let t = click("y.linkedge.test", "https://example.com/", 1);
    let c = client_builder()
        .resolve("x.linkedge.test", le.https)
        .http1_only()
        .build()
        .unwrap();
    let r = c
        .get(format!("https://x.linkedge.test:{}/c/{t}", le.https.port()))
        .header("Host", "y.linkedge.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN);
    assert_eq!(r.text().await.unwrap(), "Invalid link security token");
    assert!(le.metric("linkedge_tls_handshakes_total{resumed=\"false\"}") >= 2.0);
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
