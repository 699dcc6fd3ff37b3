//! A fleet under a network partition: three linkedge nodes, each in a network namespace of its
//! own, a Redis Sentinel set in another, clients and the ACME CA (pebble) in a third. One node's
//! link to Redis is set down for 20 s while all three take clicks and handshakes, then brought
//! back up. Needs root (`ip netns`); CI runs as root. Every address is inside the namespaces
//! the test creates (10.199.1.0/24 front, 10.199.2.0/24 back), deleted at the end.

mod common;

use common::ca::Ca;
use common::netns::{Host, Netns};
use common::topology::SentinelSet;
use common::*;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CERTS: &str =
    "certs:\n  master_key: 1\n  master_keys: [{ id: 1, secret_file: master-key }]\n";
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const CUT: Duration = Duration::from_secs(20);
const CACHED: &str = "cached.fleet.linkedge.test";
const ADDED: &str = "added.fleet.linkedge.test";
const ORDERED: &str = "ordered.fleet.linkedge.test";

/// Node `i`'s (0-based) address on the front network.
fn front(i: usize) -> std::net::IpAddr {
    [10, 199, 1, 11 + i as u8].into()
}

fn dev_root() -> Vec<u8> {
    std::fs::read(dev_ca()).unwrap()
}

/// What the clients saw of one node.
#[derive(Debug, Default)]
struct Seen {
    redirected: AtomicU64,
    failed_clicks: AtomicU64,
    handshakes: AtomicU64,
    failed_handshakes: AtomicU64,
}

/// Clicks (two keep-alive clients per node) and a handshake for the cached name every 200 ms
/// per node, until `stop`.
fn load(
    https: Vec<SocketAddr>,
    http: Vec<SocketAddr>,
    seen: Arc<Vec<Seen>>,
    stop: Arc<AtomicBool>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let root = dev_root();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, addr) in http.iter().enumerate() {
            let url = format!(
                "http://{addr}/c/{}",
                click(
                    &addr.ip().to_string(),
                    "https://example.com/fleet",
                    1 + i as u64
                )
            );
            for _ in 0..2 {
                let (url, seen, stop) = (url.clone(), seen.clone(), stop.clone());
                tasks.spawn(async move {
                    let c = client_builder().http1_only().build().unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        match c.get(&url).send().await {
                            Ok(r) if r.status() == 302 => &seen[i].redirected,
                            _ => &seen[i].failed_clicks,
                        }
                        .fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            let (addr, seen, stop, root) = (https[i], seen.clone(), stop.clone(), root.clone());
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let ok = tls_serial_at(addr, CACHED, &root).await.is_ok();
                    seen[i].handshakes.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        seen[i].failed_handshakes.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
}

/// Runs `f` on a current-thread runtime (inside whatever namespace the calling thread is in).
fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn a_node_cut_off_from_redis_keeps_serving_and_catches_up_on_heal() {
    assert!(
        common::netns::available(),
        "this test builds network namespaces: it needs root and iproute2 (`ip netns`), as CI has"
    );
    let mut hosts = vec![
        Host {
            name: "r",
            front: None,
            back: Some(100),
        },
        Host {
            name: "c",
            front: Some(100),
            back: None,
        },
    ];
    for (i, n) in NODES.iter().enumerate() {
        hosts.push(Host {
            name: n,
            front: Some(11 + i as u8),
            back: Some(11 + i as u8),
        });
    }
    let net = Netns::create(&hosts);
    let set = net.run("r", || SentinelSet::start_on("10.199.2.100"));
    // pebble validates HTTP-01 at node 2 (the A record of every name); each node reaches it as
    // 127.0.0.1:<port> through a small proxy in its own namespace (the CA's certificate names
    // 127.0.0.1).
    let http_port = free_port();
    let ca = net.run("c", || {
        Ca::start_with(http_port, "0.0.0.0", &front(1).to_string())
    });
    let acme: SocketAddr = ([127, 0, 0, 1], ca.acme_port).into();
    let _forwards: Vec<_> = NODES
        .iter()
        .map(|n| net.forward(n, acme, ([10, 199, 1, 100], ca.acme_port).into()))
        .collect();
    let mut o = Options::with_redis(&set.section());
    o.listen_host = [0, 0, 0, 0].into();
    o.http_port = Some(http_port);
    o.extra_yaml = format!(
        "regions:\n  us: {{ backends: [{{ addr: \"127.0.0.1:9\" }}] }}\n{CERTS}\
acme:\n  directory: \"{}\"\n  extra_root: {}\n  scan_interval: 1s\n  order_timeout: 30s\n  backoff_base: 1s\n",
        ca.directory,
        dev_ca().display()
    );
    let nodes: Vec<Linkedge> = NODES
        .iter()
        .map(|n| net.run(n, || Linkedge::start(&o)))
        .collect();
    let at = |i: usize, port: u16| -> SocketAddr { (front(i), port).into() };
    let https: Vec<SocketAddr> = (0..3).map(|i| at(i, nodes[i].https.port())).collect();
    let http: Vec<SocketAddr> = (0..3).map(|i| at(i, nodes[i].http.port())).collect();
    let metric = |i: usize, series: &str| net.run(NODES[i], || nodes[i].metric(series));
    let dir = tempfile::tempdir().unwrap();
    let root = dev_root();

    // A certificate every node has cached before the cut.
    let (c, k, cached) = dev_leaf(dir.path(), CACHED, 0, 30);
    net.run("n2", || import_cert(&nodes[1], CACHED, &c, &k));
    for (i, addr) in https.iter().enumerate() {
        let served = net.run("c", || {
            eventually(Duration::from_secs(10), || {
                block(tls_serial_at(*addr, CACHED, &root)).as_deref() == Ok(cached.as_str())
            })
        });
        assert!(served, "node {} never served {CACHED}", i + 1);
    }

    let seen: Arc<Vec<Seen>> = Arc::new((0..3).map(|_| Seen::default()).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = {
        let (https, http, seen, stop) = (https.clone(), http.clone(), seen.clone(), stop.clone());
        net.spawn("c", move || load(https, http, seen, stop))
    };
    std::thread::sleep(Duration::from_secs(3));

    // The cut: node 1's link to the back network (Redis) goes down.
    let cut_at = Instant::now();
    net.set_back("n1", false);
    let before_cut = seen[0].redirected.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2));
    // During it, through node 2: a domain added with a certificate imported, and a domain
    // verified (which the fleet's issuers order a certificate for).
    let (c, k, added) = dev_leaf(dir.path(), ADDED, 0, 30);
    net.run("n2", || import_cert(&nodes[1], ADDED, &c, &k));
    net.run("n2", || add_domain(&nodes[1], ORDERED, &[]));
    let master = net.run("r", || set.master_addr()).unwrap();
    net.run("r", || {
        let mut conn = redis::Client::open(format!("redis://{master}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        set_domain_state(&mut conn, ORDERED, "verified");
    });
    let issued = net.run("n2", || {
        eventually(Duration::from_secs(15), || {
            let (ok, out) = cli(&nodes[1], "cert", &["show", ORDERED]);
            ok && out.contains("not_after")
        })
    });
    assert!(issued, "no certificate issued for {ORDERED} during the cut");
    let rest = CUT.saturating_sub(cut_at.elapsed());
    std::thread::sleep(rest);
    let during_cut = seen[0].redirected.load(Ordering::Relaxed) - before_cut;

    // The heal; node 1 must follow what changed while it was away.
    net.set_back("n1", true);
    let healed_at = Instant::now();
    let (followed, tries) = net.run("c", || {
        let mut tries = 0;
        let ok = eventually(Duration::from_secs(15), || {
            tries += 1;
            block(tls_serial_at(https[0], ADDED, &root)).as_deref() == Ok(added.as_str())
        });
        (ok.then(|| healed_at.elapsed()), tries)
    });
    let followed = followed.unwrap_or_else(|| {
        panic!(
            "node 1 never served {ADDED} after the heal:\n{}",
            nodes[0].log()
        )
    });
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    clients.join().unwrap();

    // Every node's events written: queues and spools empty.
    for (i, node) in nodes.iter().enumerate() {
        let drained = eventually(Duration::from_secs(60), || {
            metric(i, "linkedge_event_queue_depth{sink=\"default\"}") == 0.0
                && metric(i, "linkedge_event_spool_bytes{sink=\"default\"}") == 0.0
        });
        assert!(drained, "node {} never drained:\n{}", i + 1, node.log());
    }
    let master = net.run("r", || set.master_addr()).unwrap();
    let ids: Vec<String> = net.run("r", || {
        let mut conn = redis::Client::open(format!("redis://{master}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        stream_ids(&mut conn)
    });
    let distinct: HashSet<&String> = ids.iter().collect();
    let redirected: Vec<u64> = seen
        .iter()
        .map(|s| s.redirected.load(Ordering::Relaxed))
        .collect();
    let total: u64 = redirected.iter().sum();
    let replayed = metric(
        0,
        "linkedge_events_total{outcome=\"replayed\",sink=\"default\"}",
    );
    let spooled = metric(
        0,
        "linkedge_events_total{outcome=\"spooled\",sink=\"default\"}",
    );
    let orders: f64 = (0..3)
        .map(|i| metric(i, "linkedge_acme_orders_total{outcome=\"placed\"}"))
        .sum();
    // The certificate the fleet ordered, as node 1 and node 2 serve it (pebble's root).
    let (ordered_on_1, ordered_on_2) = net.run("c", || {
        block(async {
            let pebble_root = ca.root_pem().await;
            (
                tls_serial_at(https[0], ORDERED, &pebble_root).await,
                tls_serial_at(https[1], ORDERED, &pebble_root).await,
            )
        })
    });
    eprintln!(
        "fleet: redirects per node {redirected:?} (node 1 during the cut: {during_cut}), \
         events {} ({} distinct), lost {}, duplicated {}; node 1 spooled {spooled}, replayed \
         {replayed}; handshakes for {CACHED}: {:?} of {:?} failed; {ADDED} served by node 1 \
         {followed:?} after the heal ({tries} tries); ACME orders placed fleet-wide {orders}",
        ids.len(),
        distinct.len(),
        total.saturating_sub(distinct.len() as u64),
        ids.len() - distinct.len(),
        seen.iter()
            .map(|s| s.failed_handshakes.load(Ordering::Relaxed))
            .collect::<Vec<_>>(),
        seen.iter()
            .map(|s| s.handshakes.load(Ordering::Relaxed))
            .collect::<Vec<_>>(),
    );
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(
            s.failed_clicks.load(Ordering::Relaxed),
            0,
            "node {} failed clicks",
            i + 1
        );
        assert_eq!(
            s.failed_handshakes.load(Ordering::Relaxed),
            0,
            "node {}: handshakes for a cached name failed",
            i + 1
        );
    }
    assert!(during_cut > 0, "node 1 redirected nothing during the cut");
    assert!(
        spooled > 0.0 && replayed > 0.0,
        "node 1 spooled {spooled}, replayed {replayed}"
    );
    assert_eq!(ids.len(), distinct.len(), "duplicated events");
    assert_eq!(distinct.len() as u64, total, "lost events");
    assert!(
        followed <= Duration::from_secs(1),
        "node 1 followed the registry and certificate changes {followed:?} after the heal"
    );
    assert_eq!(orders, 1.0, "one ACME order fleet-wide");
    assert!(
        ordered_on_1.is_ok() && ordered_on_1 == ordered_on_2,
        "{ORDERED} on node 1: {ordered_on_1:?}, on node 2: {ordered_on_2:?}"
    );
}
