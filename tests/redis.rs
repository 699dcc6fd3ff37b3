//! Redis restarts, fails over and is a cluster: every use of Redis recovers without restarting
//! linkedge. Real `redis-server` processes (standalone, Sentinel, Cluster), a real ACME CA
//! (pebble) and real TLS handshakes, all on free loopback ports.

mod common;

use common::ca::Ca;
use common::topology::{ClusterSet, SentinelSet};
use common::*;
use linkedge::registry::Registry;
use linkedge::store::Db;
use linkedge::tls::{CertStore, Sealer};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CERTS: &str =
    "certs:\n  master_key: 1\n  master_keys: [{ id: 1, secret_file: master-key }]\n";

fn dev_root() -> Vec<u8> {
    std::fs::read(dev_ca()).unwrap()
}

/// The certificate store and the domain registry in the Redis `section` describes, as linkedge
/// sees them.
struct Stores {
    certs: CertStore,
    registry: Registry,
}

fn store(section: &str) -> Stores {
    let yaml = format!("redis:\n{section}");
    #[derive(serde::Deserialize)]
    struct R {
        redis: linkedge::config::Redis,
    }
    let r: R = serde_yaml::from_str(&yaml).unwrap();
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&MASTER_KEY[2 * i..2 * i + 2], 16).unwrap();
    }
    let spec = linkedge::config::redis_section(&r.redis, "linkedge:", &|_| None).unwrap();
    let db = Db::new(&spec, "test").unwrap();
    Stores {
        certs: CertStore::new(db.clone(), Sealer::new(vec![(1, key)], 1)),
        registry: Registry::new(db, vec!["us".into()]),
    }
}

/// Registers `name` (region us) and stores a fresh development certificate for it, through
/// the library.
async fn put_cert(store: &Stores, dir: &Path, name: &str) -> String {
    let (cert, key, serial) = dev_leaf(dir, name, 0, 30);
    store.registry.add(name, 1, "us", false).await.unwrap();
    store
        .certs
        .put(
            name,
            &std::fs::read(cert).unwrap(),
            &std::fs::read(key).unwrap(),
        )
        .await
        .unwrap();
    serial
}

async fn get(url: &str) -> Result<reqwest::Response, reqwest::Error> {
    client().get(url).send().await
}

/// Counts of a click load.
#[derive(Debug, Default)]
struct Load {
    sent: u64,
    redirected: u64,
    failed: u64,
}

/// `conc` keep-alive clients clicking for `secs` seconds (each request bounded by the client's
/// 10 s timeout); `during` runs meanwhile, after `at`.
async fn click_load<F: std::future::Future<Output = ()>>(
    le: &Linkedge,
    secs: u64,
    conc: usize,
    at: Duration,
    during: F,
) -> Load {
    let url = le.http_url(&format!(
        "/c/{}",
        click(LOCAL, "https://example.com/load", 5)
    ));
    let (sent, ok, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let (url, sent, ok, failed) = (url.clone(), sent.clone(), ok.clone(), failed.clone());
        tasks.spawn(async move {
            let c = client_builder().http1_only().build().unwrap();
            while Instant::now() < deadline {
                sent.fetch_add(1, Ordering::Relaxed);
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 302 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    tokio::time::sleep(at).await;
    during.await;
    while tasks.join_next().await.is_some() {}
    Load {
        sent: sent.load(Ordering::Relaxed),
        redirected: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
    }
}

/// Waits until the stream holds `want` entries (the spool replays after a failover), then
/// asserts each is there exactly once.
fn assert_exactly_once(
    want: u64,
    le: &Linkedge,
    mut conn: impl FnMut() -> Box<dyn redis::ConnectionLike>,
) {
    let mut ids = Vec::new();
    let ok = eventually(Duration::from_secs(60), || {
        ids = stream_ids(conn().as_mut());
        ids.len() as u64 >= want
    });
    let distinct: HashSet<&String> = ids.iter().collect();
    assert!(
        ok && ids.len() as u64 == want && distinct.len() == ids.len(),
        "{want} redirects, {} stream entries, {} distinct ids\n{}",
        ids.len(),
        distinct.len(),
        le.log()
    );
}

/// Handshakes for names that each have a certificate but none is cached yet, one every
/// `every`, until `until`; returns (attempts, failures, first and last failure since start).
async fn probe_uncached(
    le: &Linkedge,
    names: &[String],
    every: Duration,
) -> (usize, usize, Option<(Duration, Duration)>) {
    let start = Instant::now();
    let root = dev_root();
    let (mut failures, mut window) = (0, None::<(Duration, Duration)>);
    for name in names {
        let t = start.elapsed();
        if tls_serial(le, name, &root).await.is_err() {
            failures += 1;
            window = Some(window.map_or((t, t), |(a, _)| (a, t)));
        }
        tokio::time::sleep(every).await;
    }
    (names.len(), failures, window)
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_restarted_empty_heals_every_use_without_restarting_linkedge() {
    let mut redis = Redis::start();
    let http = free_port();
    let ca = Ca::start(http);
    let mut o = Options::new(redis.url());
    o.http_port = Some(http);
    o.extra_yaml = format!(
        "regions:\n  us: {{ backends: [{{ addr: \"127.0.0.1:9\" }}] }}\n{CERTS}\
acme:\n  directory: \"{}\"\n  extra_root: {}\n  scan_interval: 1s\n  order_timeout: 30s\n  backoff_base: 1s\n",
        ca.directory,
        dev_ca().display()
    );
    let le = Linkedge::start(&o);
    let dir = tempfile::tempdir().unwrap();
    let root = dev_root();

    // Before: a certificate served, a name without one looked up (and remembered as missing).
    let (c, k, a_serial) = dev_leaf(dir.path(), "a.example.test", 0, 30);
    import_cert(&le, "a.example.test", &c, &k);
    assert_eq!(
        tls_serial(&le, "a.example.test", &root).await.unwrap(),
        a_serial
    );
    assert!(tls_serial(&le, "b.example.test", &root).await.is_err());
    let link = le.http_url(&format!("/c/{}", click(LOCAL, "https://example.com/", 1)));
    assert_eq!(get(&link).await.unwrap().status(), 302);

    let loads = le.metric("linkedge_registry_loads_total");
    redis.restart_empty();
    assert_eq!(redis.xlen(STREAM), 0, "the restarted Redis is empty");
    // The registry mirror subscribes again and loads the (now empty) registry.
    assert!(
        eventually(Duration::from_secs(10), || {
            le.metric("linkedge_registry_loads_total") > loads
        }),
        "the registry mirror did not reload after the restart:\n{}",
        le.log()
    );

    // Clicks reach the new stream.
    assert_eq!(get(&link).await.unwrap().status(), 302);
    assert!(
        eventually(Duration::from_secs(10), || redis.xlen(STREAM) >= 1),
        "no click reached the new Redis:\n{}",
        le.log()
    );

    // A certificate imported afterwards is served at the next handshake (the store reconnects,
    // and the invalidation channel, subscribed again, forgot the earlier miss).
    let (c, k, b_serial) = dev_leaf(dir.path(), "b.example.test", 0, 30);
    import_cert(&le, "b.example.test", &c, &k);
    let mut served = Err(String::new());
    assert!(
        eventually(Duration::from_secs(10), || {
            served = futures_block(tls_serial(&le, "b.example.test", &root));
            served.as_deref() == Ok(b_serial.as_str())
        }),
        "b.example.test not served after the restart: {served:?}\n{}",
        le.log()
    );

    // ACME HTTP-01 answers and verify nonces come from the new Redis.
    let _: () = redis::cmd("SET")
        .arg("linkedge:acme:http01:tok-1")
        .arg("tok-1.thumb")
        .query(&mut redis.conn())
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("linkedge:verify:nonce1")
        .arg("link.x.test")
        .query(&mut redis.conn())
        .unwrap();
    let r = get(&le.http_url("/.well-known/acme-challenge/tok-1"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "tok-1.thumb");
    let r = get(&le.http_url("/.well-known/linkedge/verify/nonce1"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The admin API writes to the new Redis.
    let r = client()
        .put(format!("http://{}/v1/domains/link.new.test", le.metrics))
        .bearer_auth(ADMIN_TOKEN)
        .body(r#"{"workspace":3,"region":"us"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // The background issuer still orders (a verified domain without a certificate) and renews
    // (an issued domain whose certificate is two thirds through its life).
    let (c, k, old_serial) = dev_leaf(dir.path(), "link.renew.test", 61, 90);
    for host in ["link.new.test", "link.renew.test"] {
        let (ok, out) = cli(
            &le,
            "domain",
            &["add", host, "--workspace", "3", "--region", "us"],
        );
        assert!(ok, "{out}");
        let state = if host == "link.new.test" {
            "verified"
        } else {
            "issued"
        };
        set_domain_state(&mut redis.conn(), host, state);
    }
    import_cert(&le, "link.renew.test", &c, &k);
    let not_after = |host: &str| -> i64 {
        let (ok, out) = cli(&le, "cert", &["show", host]);
        if !ok {
            return 0;
        }
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["not_after"]
            .as_i64()
            .unwrap()
    };
    let renewed_from = not_after("link.renew.test");
    assert!(
        eventually(Duration::from_secs(60), || not_after("link.new.test") > 0
            && not_after("link.renew.test") != renewed_from),
        "the issuer did not order and renew after the restart:\n{}",
        le.log()
    );
    let pebble = tls_serial(&le, "link.renew.test", &root).await;
    assert!(
        pebble.as_deref() != Ok(old_serial.as_str()),
        "still the old certificate: {pebble:?}"
    );
    drop(ca);
}

/// Opens the connections an idle node keeps (the certificate store's, by a handshake for a
/// stored name, and the admin API's, by a read) and leaves them idle.
async fn warm_idle_connections(le: &Linkedge, stores: &Stores, dir: &Path) {
    let serial = put_cert(stores, dir, "warm.example.test").await;
    assert!(
        eventually(Duration::from_secs(10), || futures_block(tls_serial(
            le,
            "warm.example.test",
            &dev_root()
        ))
        .as_deref()
            == Ok(serial.as_str())),
        "warm.example.test never served:\n{}",
        le.log()
    );
    let r = admin_show(le, "warm.example.test").await;
    assert_eq!(r.0, 200, "{}", r.1);
}

/// `GET /v1/domains/HOST` on the admin API: status and body.
async fn admin_show(le: &Linkedge, host: &str) -> (u16, String) {
    let r = client()
        .get(format!("http://{}/v1/domains/{host}", le.metrics))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Once Redis answers again (restarted or failed over) and the registry mirror has followed,
/// a name stored then gets its certificate at the first handshake, and the admin API answers
/// its first read: each on a connection that sat idle across the outage.
async fn first_reads_succeed(le: &Linkedge, section: &str, dir: &Path, loads_before: f64) {
    // The test's own store, connected after the outage (its writes are not sent again).
    let stores = store(section);
    assert!(
        eventually(Duration::from_secs(20), || {
            le.metric("linkedge_registry_loads_total") > loads_before
        }),
        "the registry mirror did not reload:\n{}",
        le.log()
    );
    let changes = le.metric("linkedge_registry_changes_total");
    let serial = put_cert(&stores, dir, "first.example.test").await;
    assert!(
        eventually(Duration::from_secs(10), || {
            le.metric("linkedge_registry_changes_total") >= changes + 2.0
        }),
        "the mirror never heard of first.example.test:\n{}",
        le.log()
    );
    let stale = |c: &str| {
        le.metric(&format!(
            "linkedge_redis_stale_reads_total{{connection=\"{c}\"}}"
        ))
    };
    assert_eq!(
        tls_serial(le, "first.example.test", &dev_root()).await,
        Ok(serial),
        "the first handshake after Redis came back failed:\n{}",
        le.log()
    );
    let (status, body) = admin_show(le, "first.example.test").await;
    assert_eq!(
        status, 200,
        "the first admin read after Redis came back: {body}"
    );
    assert!(body.contains("first.example.test"), "{body}");
    // Both went out on a connection opened before the outage and were sent again.
    assert!(
        stale("state") >= 1.0 && stale("admin") >= 1.0,
        "{}",
        le.metrics_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_reads_after_a_restart_succeed_on_connections_idle_across_it() {
    let mut redis = Redis::start();
    let mut o = Options::new(redis.url());
    o.extra_yaml =
        format!("regions:\n  us: {{ backends: [{{ addr: \"127.0.0.1:9\" }}] }}\n{CERTS}");
    let le = Linkedge::start(&o);
    let section = format!("  url: \"{}\"\n", redis.url());
    let stores = store(&section);
    let dir = tempfile::tempdir().unwrap();
    warm_idle_connections(&le, &stores, dir.path()).await;
    let loads = le.metric("linkedge_registry_loads_total");
    redis.restart_empty();
    first_reads_succeed(&le, &section, dir.path(), loads).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_reads_after_a_sentinel_failover_succeed_on_connections_idle_across_it() {
    let mut set = SentinelSet::start();
    let mut o = Options::with_redis(&set.section());
    o.extra_yaml =
        format!("regions:\n  us: {{ backends: [{{ addr: \"127.0.0.1:9\" }}] }}\n{CERTS}");
    let le = Linkedge::start(&o);
    let stores = store(&set.section());
    let dir = tempfile::tempdir().unwrap();
    warm_idle_connections(&le, &stores, dir.path()).await;
    let loads = le.metric("linkedge_registry_loads_total");
    let old = set.master.addr();
    set.master.kill();
    // Redis answers again: the sentinels name the promoted replica and it takes writes.
    assert!(
        eventually(Duration::from_secs(30), || {
            set.master_addr().is_some_and(|m| m != old)
                && set.replica.info("replication", "role").as_deref() == Some("master")
        }),
        "no failover happened"
    );
    first_reads_succeed(&le, &set.section(), dir.path(), loads).await;
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread")]
async fn sentinel_failover_under_click_load_loses_and_repeats_nothing() {
    let mut set = SentinelSet::start();
    let mut o = Options::with_redis(&set.section());
    o.extra_yaml =
        format!("regions:\n  us: {{ backends: [{{ addr: \"127.0.0.1:9\" }}] }}\n{CERTS}");
    let le = Linkedge::start(&o);
    let dir = tempfile::tempdir().unwrap();
    let root = dev_root();
    let (ok, out) = cli(&le, "check", &["--online"]);
    assert!(
        ok && out.contains(&format!("at 127.0.0.1:{}", set.master.port)),
        "{out}"
    );

    // A cached name, and 80 names stored but never looked up (each handshake is a cache miss).
    let s = store(&set.section());
    let changes = le.metric("linkedge_registry_changes_total");
    let cached = put_cert(&s, dir.path(), "cached.example.test").await;
    let uncached: Vec<String> = (0..80).map(|i| format!("u{i}.example.test")).collect();
    for n in &uncached {
        put_cert(&s, dir.path(), n).await;
    }
    // Two announcements per name (registered, certificate stored), applied by the mirror.
    assert!(eventually(Duration::from_secs(10), || {
        le.metric("linkedge_registry_changes_total") >= changes + 162.0
    }));
    assert_eq!(
        tls_serial(&le, "cached.example.test", &root).await.unwrap(),
        cached
    );
    let old_master = set.master.port;

    let mut probe = None;
    let load = click_load(&le, 12, 8, Duration::from_secs(3), async {
        set.master.kill();
        probe = Some(probe_uncached(&le, &uncached, Duration::from_millis(100)).await);
    })
    .await;
    let (attempts, failures, window) = probe.unwrap();
    eprintln!(
        "sentinel failover: {load:?}; uncached handshakes: {failures} of {attempts} failed, \
         between {window:?} after the kill"
    );
    assert_eq!(load.failed, 0, "{load:?}");
    assert_eq!(load.sent, load.redirected);
    let new_master = set.master_addr().unwrap();
    assert_ne!(
        new_master,
        format!("127.0.0.1:{old_master}"),
        "no failover happened"
    );
    assert_exactly_once(load.redirected, &le, || {
        Box::new(
            redis::Client::open(format!("redis://{new_master}/"))
                .unwrap()
                .get_connection()
                .unwrap(),
        )
    });

    // Handshakes work again for cached and uncached names, and a certificate imported after
    // the failover is served.
    assert_eq!(
        tls_serial(&le, "cached.example.test", &root).await.unwrap(),
        cached
    );
    for n in &uncached[uncached.len() - 5..] {
        assert!(
            tls_serial(&le, n, &root).await.is_ok(),
            "{n} after the failover"
        );
    }
    let (c, k, after) = dev_leaf(dir.path(), "after.example.test", 0, 30);
    import_cert(&le, "after.example.test", &c, &k);
    assert_eq!(
        tls_serial(&le, "after.example.test", &root).await.unwrap(),
        after
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_failover_issuance_lock_and_invalidation_across_two_nodes() {
    let mut cluster = ClusterSet::start();
    let http = free_port();
    let ca = Ca::start(http);
    let extra = format!(
        "regions:\n  us: {{ backends: [{{ addr: \"127.0.0.1:9\" }}] }}\n{CERTS}\
acme:\n  directory: \"{}\"\n  extra_root: {}\n  scan_interval: 1s\n  order_timeout: 30s\n  backoff_base: 1s\n",
        ca.directory,
        dev_ca().display()
    );
    let mut nodes = Vec::new();
    for i in 0..2 {
        let mut o = Options::with_redis(&cluster.section());
        o.http_port = (i == 0).then_some(http);
        o.extra_yaml = extra.clone();
        nodes.push(Linkedge::start(&o));
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let (ok, out) = cli(a, "check", &["--online"]);
    assert!(ok && out.contains("cluster"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let root = dev_root();

    // Invalidation reaches both nodes: b remembers a miss, a imports, b serves it.
    assert!(tls_serial(b, "inv.example.test", &root).await.is_err());
    let (c, k, serial) = dev_leaf(dir.path(), "inv.example.test", 0, 30);
    import_cert(a, "inv.example.test", &c, &k);
    let mut got = Err(String::new());
    assert!(
        eventually(Duration::from_secs(10), || {
            got = futures_block(tls_serial(b, "inv.example.test", &root));
            got.as_deref() == Ok(serial.as_str())
        }),
        "node b still refuses inv.example.test: {got:?}\n{}",
        b.log()
    );

    // One ACME order for a verified domain, though both nodes' issuers scan every second.
    let host = "link.cluster.test";
    let (ok, out) = cli(
        a,
        "domain",
        &["add", host, "--workspace", "4", "--region", "us"],
    );
    assert!(ok, "{out}");
    set_domain_state(&mut cluster.conn(), host, "verified");
    assert!(
        eventually(Duration::from_secs(60), || cli(a, "cert", &["show", host])
            .0),
        "no certificate issued in the cluster:\n{}\n{}",
        a.log(),
        b.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    let placed = |le: &Linkedge| le.metric("linkedge_acme_orders_total{outcome=\"placed\"}");
    assert_eq!(placed(a) + placed(b), 1.0, "orders placed by a and b");

    // The master holding the events stream is SIGKILLed under click load; its replica takes
    // over; every click lands exactly once.
    let victim = cluster.master_of(STREAM);
    let load = click_load(a, 12, 8, Duration::from_secs(3), async {
        cluster.nodes[victim].kill();
    })
    .await;
    eprintln!("cluster failover: {load:?}");
    assert_eq!(load.failed, 0, "{load:?}");
    assert_exactly_once(load.redirected, a, || Box::new(cluster.conn()));
    assert_eq!(
        tls_serial(b, "inv.example.test", &root).await.unwrap(),
        serial
    );
    let (c, k, after) = dev_leaf(dir.path(), "after.cluster.test", 0, 30);
    import_cert(a, "after.cluster.test", &c, &k);
    assert!(
        eventually(Duration::from_secs(10), || futures_block(tls_serial(
            b,
            "after.cluster.test",
            &root
        ))
        .as_deref()
            == Ok(after.as_str())),
        "a certificate imported after the cluster failover is not served by b:\n{}",
        b.log()
    );
    drop(ca);
}

#[tokio::test(flavor = "multi_thread")]
async fn rediss_with_an_acl_user_from_files() {
    let dir = tempfile::tempdir().unwrap();
    // A server certificate for "localhost" from the development CA (test material only).
    let (cert, key, _) = dev_leaf(dir.path(), "localhost", 0, 30);
    let port = free_port();
    let mut server = std::process::Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args([
            "--bind",
            "127.0.0.1",
            "-::1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(dev_ca())
        .args(["--tls-auth-clients", "no"])
        .args([
            "--user",
            "edge",
            "on",
            ">pw-not-a-secret",
            "~*",
            "&*",
            "+@all",
        ])
        .args(["--user", "default", "off"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("rediss://localhost:{port}/");
    std::fs::write(dir.path().join("user"), "edge\n").unwrap();
    std::fs::write(dir.path().join("pass"), "pw-not-a-secret\n").unwrap();
    let section = |pass: &str| {
        format!(
            "  url: {url}\n  ca_file: {}\n  username_file: {}\n  password_file: {}\n  timeout: 500ms\n",
            dev_ca().display(),
            dir.path().join("user").display(),
            dir.path().join(pass).display()
        )
    };
    let tls_conn = || {
        redis::Client::build_with_tls(
            format!("rediss://edge:pw-not-a-secret@localhost:{port}/"),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(dev_root()),
            },
        )
        .and_then(|c| c.get_connection())
    };
    assert!(
        eventually(Duration::from_secs(10), || tls_conn().is_ok()),
        "TLS redis-server did not start"
    );
    let le = Linkedge::start(&Options::with_redis(&section("pass")));
    let (ok, out) = cli(&le, "check", &["--online"]);
    assert!(
        ok && out.contains("redis 7") && out.contains("rediss://"),
        "{out}"
    );
    let link = le.http_url(&format!("/c/{}", click(LOCAL, "https://example.com/", 9)));
    assert_eq!(get(&link).await.unwrap().status(), 302);
    assert!(
        eventually(Duration::from_secs(10), || stream_ids(
            &mut tls_conn().unwrap()
        )
        .len()
            == 1),
        "the click did not reach the TLS Redis:\n{}",
        le.log()
    );
    // A wrong password: `check --online` fails and says why, without printing the password.
    std::fs::write(dir.path().join("wrong"), "not-the-password").unwrap();
    let bad = Options::with_redis(&section("wrong"));
    let le2 = Linkedge::start(&bad);
    let (ok, out) = cli(&le2, "check", &["--online"]);
    assert!(!ok && out.contains("cannot reach"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("wrongpass") || out.contains("auth"),
        "{out}"
    );
    assert!(!out.contains("not-the-password"), "{out}");
    let _ = server.kill();
    let _ = server.wait();
}
