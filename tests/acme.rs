//! A valid certificate for a customer domain from a real ACME CA (pebble), with real DNS
//! (pebble-challtestsrv), real TLS handshakes and a real Redis.

mod common;

use common::ca::Ca;
use common::*;
use std::time::{Duration, Instant};

const TARGET: &str = "track.linkedge.test";

struct Env {
    redis: Redis,
    ca: Ca,
    nodes: Vec<Linkedge>,
}

fn yaml(ca: &Ca, http_port: u16, scan: &str, extra: &str) -> String {
    format!(
        "regions:\n  us: {{ backends: [{{ addr: \"127.0.0.1:9\" }}] }}\n  eu: {{ backends: [{{ addr: \"127.0.0.1:9\" }}] }}\n\
certs:\n  master_key: 1\n  master_keys: [{{ id: 1, secret_file: master-key }}]\n\
acme:\n  directory: \"{}\"\n  extra_root: {}\n  scan_interval: {scan}\n  order_timeout: 30s\n  backoff_base: 1s\n{extra}\
verify:\n  target: {TARGET}\n  target_addrs: [127.0.0.1]\n  nameservers: [\"{}\"]\n  http_port: {http_port}\n",
        ca.directory,
        dev_ca().display(),
        ca.dns
    )
}

fn env(nodes: usize) -> Env {
    env_with(nodes, "1s")
}

fn env_with(nodes: usize, scan: &str) -> Env {
    env_full(nodes, scan, "  max_failures: 1\n")
}

fn env_full(nodes: usize, scan: &str, acme_extra: &str) -> Env {
    let redis = Redis::start();
    let http = free_port();
    let ca = Ca::start(http);
    let mut list = Vec::new();
    for i in 0..nodes {
        let mut o = Options::new(redis.url());
        // pebble validates on the first node's port; every node shares the challenges in Redis.
        o.http_port = (i == 0).then_some(http);
        o.extra_yaml = yaml(&ca, http, scan, acme_extra);
        list.push(Linkedge::start(&o));
    }
    Env {
        redis,
        ca,
        nodes: list,
    }
}

/// pebble's root certificate, from its management API.
async fn pebble_root(ca: &Ca) -> reqwest::Certificate {
    reqwest::Certificate::from_pem(&ca.root_pem().await).unwrap()
}

/// Marks `host` verified in the registry, as `domain verify` would have earlier.
fn mark_verified(redis: &Redis, host: &str) {
    set_domain_state(&mut redis.conn(), host, "verified");
}

fn domain(redis: &Redis, host: &str) -> serde_json::Value {
    let raw: String = redis::cmd("HGET")
        .arg("linkedge:domains")
        .arg(host)
        .query(&mut redis.conn())
        .unwrap();
    serde_json::from_str(&raw).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn add_verify_issue_and_serve_a_tracked_link_over_https() {
    let e = env(1);
    let le = &e.nodes[0];
    let host = "link.customer-one.test";
    let (ok, out) = cli(
        le,
        "domain",
        &["add", host, "--workspace", "11", "--region", "us"],
    );
    assert!(ok, "{out}");
    let verified_at = Instant::now();
    let (ok, out) = cli(le, "domain", &["verify", host]);
    assert!(ok, "{out}\n{}", le.log());
    assert!(
        out.contains("verified") && out.contains("certificate issued"),
        "{out}"
    );

    let root = pebble_root(&e.ca).await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(root)
        .resolve(host, le.https)
        .no_proxy()
        .build()
        .unwrap();
    let t = click(host, "https://shop.example.com/", 5);
    let r = c
        .get(format!("https://{host}:{}/c/{t}", le.https.port()))
        .send()
        .await
        .expect("a valid chain from pebble's root for the new domain");
    let took = verified_at.elapsed();
    assert_eq!(r.status(), reqwest::StatusCode::FOUND);
    assert_eq!(r.headers()["location"], "https://shop.example.com/");
    eprintln!("from domain verify to the first HTTPS redirect with the new certificate: {took:?}");
    assert_eq!(domain(&e.redis, host)["state"], "issued");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cname_elsewhere_is_refused_saying_where_it_points() {
    let e = env(1);
    let le = &e.nodes[0];
    let host = "link.customer-two.test";
    e.ca.set_cname(host, "old-tracker.example.net");
    let (ok, _) = cli(
        le,
        "domain",
        &["add", host, "--workspace", "12", "--region", "eu"],
    );
    assert!(ok);
    let (ok, out) = cli(le, "domain", &["verify", host]);
    assert!(!ok);
    assert!(
        out.contains(&format!(
            "{host} is a CNAME to old-tracker.example.net, not to {TARGET}"
        )),
        "{out}"
    );
    let d = domain(&e.redis, host);
    assert_eq!(d["state"], "pending");
    assert!(
        d["error"]
            .as_str()
            .unwrap()
            .contains("old-tracker.example.net")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_sharing_redis_place_one_order() {
    let e = env(2);
    let host = "link.customer-three.test";
    let (ok, out) = cli(
        &e.nodes[0],
        "domain",
        &["add", host, "--workspace", "13", "--region", "us"],
    );
    assert!(ok, "{out}");
    mark_verified(&e.redis, host);
    assert!(
        eventually(Duration::from_secs(30), || domain(&e.redis, host)["state"]
            == "issued"),
        "not issued: {}\n{}",
        domain(&e.redis, host),
        e.nodes[0].log()
    );
    assert!(eventually(Duration::from_secs(5), || e.nodes[0]
        .metric("linkedge_domains{state=\"issued\"}")
        == 1.0));
    let placed: f64 = e
        .nodes
        .iter()
        .map(|n| n.metric("linkedge_acme_orders_total{outcome=\"placed\"}"))
        .sum();
    assert_eq!(placed, 1.0, "orders placed across the fleet");
    let accounts: Vec<String> = redis::cmd("KEYS")
        .arg("linkedge:acme:account:*")
        .query(&mut e.redis.conn())
        .unwrap();
    assert_eq!(accounts.len(), 1, "one ACME account per directory");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_validation_ends_failed_with_the_reason() {
    let e = env(1);
    let host = "link.customer-four.test";
    let (ok, _) = cli(
        &e.nodes[0],
        "domain",
        &["add", host, "--workspace", "14", "--region", "us"],
    );
    assert!(ok);
    // Verified earlier, but its DNS now points where no linkedge listens.
    e.ca.set_a(host, &["127.0.0.2"]);
    mark_verified(&e.redis, host);
    assert!(
        eventually(Duration::from_secs(30), || domain(&e.redis, host)["state"]
            == "failed"),
        "{}",
        domain(&e.redis, host)
    );
    let err = domain(&e.redis, host)["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!err.is_empty(), "the CA's reason is recorded");
    eprintln!("recorded reason: {err}");
}

/// Adds `host` for `workspace` with an imported development certificate issued 20 days ago and
/// valid 21 (past two thirds of its life: due for renewal). Returns its serial.
fn add_with_expiring_cert(le: &Linkedge, host: &str, workspace: &str) -> String {
    let (ok, out) = cli(
        le,
        "domain",
        &["add", host, "--workspace", workspace, "--region", "us"],
    );
    assert!(ok, "{out}");
    let (cert, key, serial) = dev_leaf(le.dir.path(), host, 20, 21);
    import_cert(le, host, &cert, &key);
    serial
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_near_expiry_is_renewed_and_served_without_restart() {
    let e = env(1);
    let le = &e.nodes[0];
    let host = "link.customer-five.test";
    let old = add_with_expiring_cert(le, host, "15");
    let dev_pem = std::fs::read(dev_ca()).unwrap();
    assert_eq!(tls_serial(le, host, &dev_pem).await, Ok(old));
    mark_verified(&e.redis, host);

    let pebble_pem = e.ca.root_pem().await;
    assert!(
        eventually(Duration::from_secs(30), || domain(&e.redis, host)["state"]
            == "issued"),
        "not renewed: {}",
        domain(&e.redis, host)
    );
    // Served at once by the running node, chained to pebble's root.
    // (Until the node drops its cached copy, the old certificate fails pebble's chain.)
    let mut now = Err(String::new());
    let renewed = eventually(Duration::from_secs(5), || {
        now = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(tls_serial(le, host, &pebble_pem))
        });
        now.is_ok()
    });
    assert!(renewed, "not serving the renewed certificate: {now:?}");
    assert!(
        le.metric("linkedge_certificate_attempts_total{kind=\"renewal\",outcome=\"ok\"}") >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn first_handshake_of_a_verified_domain_gets_its_certificate_on_demand() {
    // The background issuer's next pass is an hour away: only the handshake can order.
    let e = env_with(1, "60m");
    let le = &e.nodes[0];
    let host = "link.customer-six.test";
    let (ok, _) = cli(
        le,
        "domain",
        &["add", host, "--workspace", "16", "--region", "us"],
    );
    assert!(ok);
    mark_verified(&e.redis, host);
    let pebble_pem = e.ca.root_pem().await;
    let started = Instant::now();
    let serial = tls_serial(le, host, &pebble_pem).await;
    let took = started.elapsed();
    assert!(serial.is_ok(), "first handshake: {serial:?}\n{}", le.log());
    eprintln!("first handshake to a verified domain without a certificate: {took:?}");
    assert_eq!(domain(&e.redis, host)["state"], "issued");
    // A registered but unverified domain is never ordered.
    let other = "link.customer-seven.test";
    let (ok, _) = cli(
        le,
        "domain",
        &["add", other, "--workspace", "17", "--region", "us"],
    );
    assert!(ok);
    assert!(tls_serial(le, other, &pebble_pem).await.is_err());
    assert_eq!(
        le.metric("linkedge_acme_orders_total{outcome=\"placed\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_verifies_and_issues() {
    let e = env_with(1, "60m");
    let le = &e.nodes[0];
    let base = format!("http://{}/v1/domains", le.metrics);
    let c = client();
    let r = c
        .put(format!("{base}/link.customer-eight.test"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"workspace": 18, "region": "eu"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let r = c
        .post(format!("{base}/link.customer-eight.test/verify"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    let r = c
        .post(format!("{base}/link.customer-eight.test/verify"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["verified"], true);
    assert!(v["certificate"]["not_after"].as_i64().unwrap() > 0, "{v}");

    e.ca.set_cname("link.customer-nine.test", "elsewhere.example.org");
    let r = c
        .put(format!("{base}/link.customer-nine.test"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"workspace": 19, "region": "us"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let r = c
        .post(format!("{base}/link.customer-nine.test/verify"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("is a CNAME to elsewhere.example.org"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_hold_orders_back_without_asking_the_ca() {
    let e = env_full(
        1,
        "1s",
        "  max_failures: 5\n  limits: { failed_validations_per_hour: 1 }\n",
    );
    let host = "link.customer-ten.test";
    let (ok, _) = cli(
        &e.nodes[0],
        "domain",
        &["add", host, "--workspace", "20", "--region", "us"],
    );
    assert!(ok);
    e.ca.set_a(host, &["127.0.0.2"]);
    mark_verified(&e.redis, host);
    // One real order fails validation; the next attempts are held back locally.
    assert!(
        eventually(Duration::from_secs(20), || domain(&e.redis, host)["error"]
            .as_str()
            .unwrap()
            .starts_with(
                "held back to stay inside the CA's limits: 1 failed validations"
            )),
        "{}",
        domain(&e.redis, host)
    );
    assert_eq!(
        e.nodes[0].metric("linkedge_acme_orders_total{outcome=\"placed\"}"),
        1.0
    );
    assert!(e.nodes[0].metric("linkedge_acme_orders_total{outcome=\"rate_limited\"}") >= 1.0);
    assert_eq!(
        domain(&e.redis, host)["state"],
        "verified",
        "not marked failed for our own limit"
    );
}

/// The weekly limit per registered domain holds new certificates back but not renewals, which
/// the CA exempts from it: with this week's one certificate for `customer-six.test` already
/// counted, the near-expiry certificate of `link.customer-six.test` is renewed, and a new name
/// under the same registered domain is not ordered.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_weekly_domain_limit_holds_new_names_back_but_not_renewals() {
    let e = env_full(
        1,
        "1s",
        "  max_failures: 5\n  limits: { certs_per_domain_per_week: 1 }\n",
    );
    let le = &e.nodes[0];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Counted by another node earlier this week.
    let _: () = redis::cmd("ZADD")
        .arg("linkedge:acme:limit:certs:customer-six.test")
        .arg(now)
        .arg("earlier-this-week")
        .query(&mut e.redis.conn())
        .unwrap();

    let host = "link.customer-six.test";
    add_with_expiring_cert(le, host, "16");
    mark_verified(&e.redis, host);
    // (A held-back renewal would leave the state `issued`, the old certificate serving, with
    // the reason in `error`: look at the renewal itself.)
    assert!(
        eventually(Duration::from_secs(30), || le.metric(
            "linkedge_certificate_attempts_total{kind=\"renewal\",outcome=\"ok\"}"
        ) >= 1.0),
        "renewal held back: {}",
        domain(&e.redis, host)
    );
    assert_eq!(domain(&e.redis, host)["error"], "");

    let other = "new.customer-six.test";
    let (ok, _) = cli(
        le,
        "domain",
        &["add", other, "--workspace", "16", "--region", "us"],
    );
    assert!(ok);
    mark_verified(&e.redis, other);
    assert!(
        eventually(Duration::from_secs(20), || {
            domain(&e.redis, other)["error"]
            .as_str()
            .unwrap()
            .starts_with(
                "held back to stay inside the CA's limits: 1 certificates for this registered domain"
            )
        }),
        "{}",
        domain(&e.redis, other)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_rsa_on_both_an_ecdsa_and_an_rsa_certificate_are_ordered() {
    let e = env_full(1, "60m", "  max_failures: 1\n  rsa: true\n");
    let le = &e.nodes[0];
    let host = "link.customer-eleven.test";
    let (ok, _) = cli(
        le,
        "domain",
        &["add", host, "--workspace", "21", "--region", "us"],
    );
    assert!(ok);
    let (ok, out) = cli(le, "domain", &["verify", host]);
    assert!(ok, "{out}");
    assert_eq!(
        le.metric("linkedge_acme_orders_total{outcome=\"placed\"}"),
        0.0,
        "ordered by the CLI, not the node"
    );
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(format!("linkedge:cert:{host}"))
        .query(&mut e.redis.conn())
        .unwrap();
    assert!(
        fields.contains(&"chain".to_string()) && fields.contains(&"chain_rsa".to_string()),
        "{fields:?}"
    );
}

/// Relays each connection accepted on `listener` to `to` after holding it `delay`, on loopback:
/// the CA's HTTP-01 validation through it, and so the whole order, takes longer than `delay`.
async fn slow_relay(listener: tokio::net::TcpListener, to: std::net::SocketAddr, delay: Duration) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// An on-demand order slower than `limits.handshake_timeout` is not dropped with the handshake
/// that started it: handshakes meanwhile give up after `acme.on_demand_wait` without ordering
/// again, the order completes in the background and releases its lock, and the next handshake
/// gets the certificate.
#[tokio::test(flavor = "multi_thread")]
async fn an_on_demand_order_slower_than_the_handshake_completes_in_the_background() {
    let redis = Redis::start();
    // pebble validates through the relay, which holds each connection 4 s: longer than a
    // handshake may take (2 s) and than it waits for the order (1 s).
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let ca = Ca::start(relay_port);
    let mut o = Options::new(redis.url());
    o.extra_yaml = format!(
        "{}limits:\n  handshake_timeout: 2s\n",
        yaml(
            &ca,
            relay_port,
            "60m",
            "  max_failures: 1\n  on_demand_wait: 1s\n"
        )
    );
    let le = Linkedge::start(&o);
    tokio::spawn(slow_relay(relay, le.http, Duration::from_secs(4)));
    let host = "link.customer-twelve.test";
    // Loaded once, so subscribed to the change feed: both changes below arrive as messages.
    assert!(eventually(Duration::from_secs(10), || le
        .metric("linkedge_registry_loads_total")
        >= 1.0));
    let changes = "linkedge_registry_changes_total";
    let before = le.metric(changes);
    let (ok, out) = cli(
        &le,
        "domain",
        &["add", host, "--workspace", "22", "--region", "us"],
    );
    assert!(ok, "{out}");
    mark_verified(&redis, host);
    // The mirror must know the name as verified, or the handshake orders nothing.
    assert!(
        eventually(Duration::from_secs(5), || le.metric(changes)
            >= before + 2.0),
        "the registry mirror did not apply the changes to {host}"
    );
    let pebble_pem = ca.root_pem().await;

    // The handshake that starts the order, then one while it runs: each gets no certificate
    // (no fallback) after on_demand_wait, well before the handshake's own deadline.
    let lock = format!("linkedge:acme:lock:{host}");
    for attempt in ["first", "second"] {
        let started = Instant::now();
        let r = tls_serial(&le, host, &pebble_pem).await;
        let took = started.elapsed();
        assert!(
            r.is_err(),
            "{attempt} handshake got {r:?} before the order could finish"
        );
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(1900),
            "{attempt} handshake took {took:?}: not ended by acme.on_demand_wait (1s)"
        );
        // The order holds the lock, for its own bound: order_timeout (30s) plus 30 s.
        let ttl: i64 = redis::cmd("TTL")
            .arg(&lock)
            .query(&mut redis.conn())
            .unwrap();
        assert!(
            (1..=60).contains(&ttl),
            "lock TTL {ttl} after the {attempt} handshake"
        );
    }
    assert_eq!(
        le.metric("linkedge_cert_lookups_total{source=\"pending\"}"),
        2.0
    );

    // The order goes on past both handshakes and ends issued, its lock released.
    let deadline = Instant::now() + Duration::from_secs(30);
    while domain(&redis, host)["state"] != "issued" {
        assert!(
            Instant::now() < deadline,
            "not issued: {}\n{}",
            domain(&redis, host),
            le.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held: i64 = redis::cmd("EXISTS")
        .arg(&lock)
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(held, 0, "the lock outlived the order");

    let serial = tls_serial(&le, host, &pebble_pem).await;
    assert!(serial.is_ok(), "after the order: {serial:?}\n{}", le.log());
    assert_eq!(
        le.metric("linkedge_acme_orders_total{outcome=\"placed\"}"),
        1.0,
        "one order, though two handshakes found none"
    );
}

/// `le`'s config as `domain verify` sees a domain behind a customer's own proxy: the edge's
/// addresses are elsewhere (127.0.0.2, while every name resolves to 127.0.0.1 unless told
/// otherwise), and the HTTPS check goes to `le`'s HTTPS listener trusting the development CA.
/// `le` itself stands in for the customer's proxy: any linkedge node answers the nonce from
/// Redis, over HTTPS (here) and HTTP (`verify.http_port`, its plain listener).
fn behind_a_proxy(le: &Linkedge) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&le.config).unwrap();
    let verify = format!(
        "  target_addrs: [127.0.0.2]\n  https_port: {}\n  ca_file: {}\n",
        le.https.port(),
        dev_ca().display()
    );
    let text = text.replace("  target_addrs: [127.0.0.1]\n", &verify);
    assert!(text.contains("https_port"), "{text}");
    let path = le.dir.path().join("behind-a-proxy.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Domains fronted by the customer's own proxy: `domain verify` checks the nonce through the
/// proxy over HTTPS, else HTTP, though the name does not resolve to the edge; verified, they are
/// never ordered a certificate, by verify, the background issuer or a handshake, while a domain
/// that is not fronted is.
#[tokio::test(flavor = "multi_thread")]
async fn fronted_domains_are_verified_through_their_proxy_and_never_ordered() {
    let e = env(1);
    let le = &e.nodes[0];
    let config = behind_a_proxy(le);
    let config = config.as_path();
    let verify = |host: &str| {
        run(std::process::Command::new(env!("CARGO_BIN_EXE_linkedge"))
            .args(["domain", "verify", "--config"])
            .arg(config)
            .arg(host))
    };
    let add = |host: &str, fronted: bool| {
        let mut args = vec!["add", host, "--workspace", "21", "--region", "us"];
        if fronted {
            args.push("--fronted");
        }
        let (ok, out) = cli(le, "domain", &args);
        assert!(ok, "{out}");
    };
    // tls.cert (*.linkedge.test) covers the first, not the second.
    let (over_https, over_http) = ("shop.linkedge.test", "link.fronted.test");
    let (nowhere, direct, proxied) = ("link.nowhere.test", "link.direct.test", "link.proxied.test");
    let changes = le.metric("linkedge_registry_changes_total");
    for (host, fronted) in [
        (over_https, true),
        (over_http, true),
        (nowhere, true),
        (direct, false),
        (proxied, false),
    ] {
        add(host, fronted);
    }
    e.ca.set_a(nowhere, &["127.0.0.2"]);
    e.ca.set_a(proxied, &["104.16.1.1"]);
    assert!(eventually(Duration::from_secs(5), || le
        .metric("linkedge_registry_changes_total")
        >= changes + 5.0));

    let (ok, out) = verify(over_https);
    assert!(ok, "{out}\n{}", le.log());
    assert!(
        out.contains(&format!(
            "{over_https} verified through the customer's proxy over HTTPS\n"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "no certificate is ordered: the customer's proxy serves {over_https}'s certificate"
        )),
        "{out}"
    );
    assert!(!out.contains("warning"), "{out}");
    let (ok, out) = verify(over_http);
    assert!(ok, "{out}\n{}", le.log());
    assert!(
        out.contains(&format!(
            "{over_http} verified through the customer's proxy over HTTP\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("warning: HTTPS did not pass")
            && out.contains(&format!("not valid for {over_http}")),
        "{out}"
    );
    // Fronted, but nothing answers where the name resolves: both reasons, still pending.
    let (ok, out) = verify(nowhere);
    assert!(!ok);
    assert!(
        out.contains(&format!("HTTPS check: cannot reach https://{nowhere}:"))
            && out.contains(&format!("HTTP check: cannot reach http://{nowhere}:")),
        "{out}"
    );
    assert_eq!(domain(&e.redis, nowhere)["state"], "pending");
    // Not fronted, the same setup fails: the name does not resolve to the edge.
    let (ok, out) = verify(direct);
    assert!(!ok);
    assert!(
        out.contains(&format!(
            "{direct} resolves to 127.0.0.1, not to {TARGET} (127.0.0.2)"
        )),
        "{out}"
    );
    // Not fronted, behind Cloudflare: both ways out.
    let (ok, out) = verify(proxied);
    assert!(!ok);
    assert!(
        out.contains("\"DNS only\"")
            && out.contains(&format!(
                "linkedge domain add {proxied} --workspace <id> --region <region> --fronted"
            )),
        "{out}"
    );

    // A handshake for a verified fronted domain with no certificate orders nothing.
    let c = client_builder()
        .tls_danger_accept_invalid_hostnames(true)
        .resolve(over_http, le.https)
        .build()
        .unwrap();
    let r = c
        .get(format!("https://{over_http}:{}/health", le.https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    // A domain that is not fronted, verified, is ordered by the background issuer.
    let control = "link.control.test";
    add(control, false);
    mark_verified(&e.redis, control);
    assert!(
        eventually(
            Duration::from_secs(30),
            || domain(&e.redis, control)["state"] == "issued"
        ),
        "not issued: {}\n{}",
        domain(&e.redis, control),
        le.log()
    );
    // Three more passes of the issuer (every second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        le.metric("linkedge_acme_orders_total{outcome=\"placed\"}"),
        1.0
    );
    assert_eq!(le.metric("linkedge_domains{state=\"verified\"}"), 2.0);
    for host in [over_https, over_http] {
        assert_eq!(domain(&e.redis, host)["state"], "verified");
        let (ok, out) = cli(le, "cert", &["show", host]);
        assert!(!ok && out.contains("no certificate stored"), "{out}");
    }
}
