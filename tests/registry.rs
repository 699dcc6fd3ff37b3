//! The domain registry as the source of truth per domain: every node mirrors it in memory and
//! routes by it, following changes made on any node. Real Redis, real upstreams, real linkedge
//! processes and HTTP clients.

mod common;

use common::upstream::Upstream;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const HOST: &str = "link.shop.example";

/// A node with two regions, `us` and `eu`, one echo backend each, and no default region.
fn node(redis: &Redis, us: &Upstream, eu: &Upstream) -> Linkedge {
    let mut o = Options::new(redis.url());
    let r = |name: &str, u: &Upstream| {
        format!(
            "  {name}:\n    backends: [{{ addr: \"{}\" }}]\n    health_check: {{ interval: 200ms, timeout: 500ms, failures: 1, successes: 1 }}\n",
            u.addr
        )
    };
    o.extra_yaml = format!("regions:\n{}{}", r("us", us), r("eu", eu));
    Linkedge::start(&o)
}

/// Which backend answered `GET /unsubscribe/x` for HOST on `le` (`None`: not proxied).
async fn served_by(le: &Linkedge) -> Option<String> {
    served_by_host(le, HOST).await
}

/// Which backend answered `GET /unsubscribe/x` for `host` on `le` (`None`: not proxied).
async fn served_by_host(le: &Linkedge, host: &str) -> Option<String> {
    let r = client()
        .get(le.http_url("/unsubscribe/x"))
        .header("Host", host)
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    v["server"].as_str().map(str::to_owned)
}

/// Registers (or moves) HOST through `le`'s admin API.
async fn put_domain(le: &Linkedge, region: &str) {
    let r = client()
        .put(format!("http://{}/v1/domains/{HOST}", le.metrics))
        .bearer_auth(ADMIN_TOKEN)
        .body(format!("{{\"workspace\": 3, \"region\": \"{region}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// Polls `b` until HOST is served by `want`; the time it took.
async fn until_served(b: &Linkedge, want: &str) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if served_by(b).await.as_deref() == Some(want) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("{HOST} not served by {want} within 10 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_domain_added_on_one_node_is_routed_to_its_region_by_another() {
    let redis = Redis::start();
    let us = Upstream::start("us-1", false).await;
    let eu = Upstream::start("eu-1", false).await;
    let (a, b) = (node(&redis, &us, &eu), node(&redis, &us, &eu));
    for le in [&a, &b] {
        assert!(eventually(Duration::from_secs(10), || {
            le.metric("linkedge_registry_synced_timestamp_seconds") > 0.0
        }));
    }
    // Not registered, no default region, not in the config: not served here.
    let r = client()
        .get(b.http_url("/unsubscribe/x"))
        .header("Host", HOST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);

    // Added in eu through node A: node B proxies it to eu, with no config change.
    let mut delays = Vec::new();
    for (i, region) in ["eu", "us", "eu", "us", "eu", "us"].iter().enumerate() {
        put_domain(&a, region).await;
        let d = until_served(&b, &format!("{region}-1")).await;
        if i > 0 {
            // The first one includes the node's first request to that backend.
            delays.push(d);
        }
    }
    delays.sort();
    println!(
        "change-feed delay (admin API on node A to routing on node B, {} moves): min {:?}, median {:?}, max {:?}",
        delays.len(),
        delays[0],
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
    assert!(b.metric("linkedge_registry_changes_total") >= 6.0);
    // Removed: not served any more.
    let r = client()
        .delete(format!("http://{}/v1/domains/{HOST}", a.metrics))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(eventually(Duration::from_secs(5), || {
        futures_block(served_by(&b)).is_none()
    }));
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// Writes `n` registry records straight into Redis (as `domain add` would, in bulk).
fn register_many(redis: &Redis, n: usize) {
    let mut conn = redis.conn();
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            let host = format!("d{i}.bulk.example");
            let region = if i % 2 == 0 { "us" } else { "eu" };
            let d = serde_json::json!({
                "host": host, "workspace": 1, "region": region, "state": "pending",
                "error": "", "created_ms": 0, "updated_ms": 0,
            });
            pipe.hset("linkedge:domains", &host, d.to_string()).ignore();
        }
        let _: () = pipe.query(&mut conn).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_started_after_100k_registrations_has_them_all() {
    let redis = Redis::start();
    let us = Upstream::start("us-1", false).await;
    let eu = Upstream::start("eu-1", false).await;
    // The same node with an empty registry, for the memory baseline.
    let empty = node(&redis, &us, &eu);
    assert!(eventually(Duration::from_secs(10), || {
        empty.metric("linkedge_registry_synced_timestamp_seconds") > 0.0
    }));
    let rss_empty = empty.proc_kb("VmRSS");
    drop(empty);

    register_many(&redis, 100_000);
    let le = node(&redis, &us, &eu);
    assert!(
        eventually(Duration::from_secs(60), || {
            le.metric("linkedge_registry_domains") == 100_000.0
        }),
        "the mirror holds {} domains",
        le.metric("linkedge_registry_domains")
    );
    let rss = le.proc_kb("VmRSS");
    let log = le.log();
    let load = log
        .lines()
        .find(|l| l.contains("registry mirror loaded"))
        .unwrap_or("")
        .to_string();
    println!(
        "100000 domains: RSS {rss} KiB vs {rss_empty} KiB empty, {:.0} bytes per domain; {load}",
        (rss.saturating_sub(rss_empty) * 1024) as f64 / 100_000.0
    );
    // Routed from memory: an odd one to eu, an even one to us.
    for (host, want) in [("d7.bulk.example", "eu-1"), ("d8.bulk.example", "us-1")] {
        let r = client()
            .get(le.http_url("/x"))
            .header("Host", host)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["server"], want, "{host}");
    }
}

/// Follows `n` tracked clicks on `host` through `le`; each must redirect.
async fn clicks(le: &Linkedge, host: &str, n: u64, first: u64) {
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for i in first..first + n {
        let t = click(host, "https://shop.example/p", i);
        let r = c
            .get(le.http_url(&format!("/c/{t}")))
            .header("Host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "click {i} on {host}");
    }
}

/// The stream's events of `host`, with their `region` field.
fn events_of(redis: &Redis, host: &str) -> Vec<String> {
    redis
        .entries(STREAM)
        .into_iter()
        .filter(|e| e["host"] == host)
        .map(|e| e["region"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn eu_clicks_and_traffic_stay_in_the_eu_and_survive_an_eu_redis_outage() {
    // The default sink (and the registry) on one Redis, the EU sink on another.
    let redis = Redis::start();
    let mut eu_redis = Redis::start();
    let us = Upstream::start("us-1", false).await;
    let mut eu = Upstream::start("eu-1", false).await;
    let mut o = Options::new(redis.url());
    let r = |name: &str, u: &Upstream| {
        format!(
            "  {name}:\n    backends: [{{ addr: \"{}\" }}]\n    health_check: {{ interval: 200ms, timeout: 500ms, failures: 1, successes: 1 }}\n    timeouts: {{ connect: 300ms, read: 1s, write: 1s }}\n",
            u.addr
        )
    };
    // us may fail over to eu; eu names no fallback: nothing about an EU domain leaves the EU.
    o.extra_yaml = format!(
        "regions:\n{}    fallback: eu\n{}routing:\n  default_region: us\n",
        r("us", &us),
        r("eu", &eu)
    );
    o.events_extra = format!(
        "  regions:\n    eu:\n      redis: {{ url: \"{}\", timeout: 300ms }}\n",
        eu_redis.url()
    );
    let le = Linkedge::start(&o);
    let eu_host = "link.eu-shop.example";
    let us_host = "link.us-shop.example";
    for (host, region) in [(eu_host, "eu"), (us_host, "us")] {
        let (ok, out) = cli(
            &le,
            "domain",
            &["add", host, "--workspace", "5", "--region", region],
        );
        assert!(ok, "{out}");
    }
    assert!(eventually(Duration::from_secs(5), || {
        le.metric("linkedge_registry_changes_total") >= 2.0
    }));

    // Clicks on the EU domain land only in the EU stream, with region eu; US ones only in the
    // default stream; an unregistered Host's in the default stream, with no region.
    clicks(&le, eu_host, 20, 0).await;
    clicks(&le, us_host, 20, 0).await;
    clicks(&le, LOCAL, 5, 0).await;
    assert!(eventually(Duration::from_secs(10), || {
        eu_redis.xlen(STREAM) == 20 && redis.xlen(STREAM) == 25
    }));
    assert_eq!(events_of(&eu_redis, eu_host), vec!["eu"; 20]);
    assert!(events_of(&eu_redis, us_host).is_empty());
    assert!(events_of(&redis, eu_host).is_empty());
    assert_eq!(events_of(&redis, us_host), vec!["us"; 20]);
    assert_eq!(events_of(&redis, LOCAL), vec![""; 5]);

    // The EU Redis goes away: EU events are spooled in the EU sink's own spool, US events keep
    // flowing, and nothing EU reaches the default stream.
    eu_redis.kill();
    clicks(&le, eu_host, 30, 100).await;
    clicks(&le, us_host, 30, 100).await;
    assert!(eventually(Duration::from_secs(10), || redis.xlen(STREAM) == 55));
    assert!(eventually(Duration::from_secs(10), || {
        le.metric("linkedge_events_total{outcome=\"spooled\",sink=\"eu\"}") >= 30.0
    }));
    assert_eq!(
        le.metric("linkedge_events_total{outcome=\"spooled\",sink=\"default\"}"),
        0.0
    );
    assert!(events_of(&redis, eu_host).is_empty());
    assert!(le.spool_dir.join("region-eu").is_dir());

    // Back: every EU event replayed into the EU stream, none lost, none repeated.
    eu_redis.restart();
    assert!(
        eventually(Duration::from_secs(20), || eu_redis.xlen(STREAM) == 50),
        "EU stream holds {} of 50:\n{}",
        eu_redis.xlen(STREAM),
        le.log()
    );
    let ids: std::collections::HashSet<String> = eu_redis
        .entries(STREAM)
        .into_iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(ids.len(), 50);
    assert!(events_of(&redis, eu_host).is_empty());

    // The EU backends down: EU requests fail (502); none is served by the US backends.
    eu.stop().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..5 {
        let r = client()
            .get(le.http_url("/unsubscribe/x"))
            .header("Host", eu_host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502, "{}", r.text().await.unwrap());
    }
    // While a US domain's requests fail over to the EU (us names eu as its fallback) only when
    // the US backends are down, which they are not: still served in the US.
    assert_eq!(served_by_host(&le, us_host).await.as_deref(), Some("us-1"));
}
