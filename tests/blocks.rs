//! The block list against a real Redis and two running linkedge nodes: a rule added on one is
//! applied by the other within a second; each kind of rule blocks exactly what it names;
//! `warn` then continue; expiry; Redis down keeps the rules; a restart loads them; bad input is
//! refused; blocked clicks are events.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

const HOST: &str = "link.example.com";

fn node(redis: &Redis) -> Linkedge {
    let mut o = Options::new(redis.url());
    o.extra_yaml = "regions:\n  us: { backends: [{ addr: \"127.0.0.1:9\" }] }\nblocks: { resync_interval: 1s }\n".into();
    Linkedge::start(&o)
}

/// Follows a click (workspace 11, message 22) to `url` on `le`: status, Location, body.
async fn follow(le: &Linkedge, path: &str) -> (StatusCode, String, String) {
    let r = client()
        .get(le.http_url(path))
        .header("Host", HOST)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, location, r.text().await.unwrap())
}

fn path_to(url: &str, link: u64) -> String {
    format!("/c/{}", click(HOST, url, link))
}

fn add(le: &Linkedge, args: &[&str]) -> String {
    let mut all = vec!["add"];
    all.extend(args);
    all.extend([
        "--reason",
        "phishing report 42",
        "--by",
        "abuse@example.com",
    ]);
    let (ok, out) = cli(le, "block", &all);
    assert!(ok, "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    r["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_reach_every_node_and_block_exactly_what_they_name() {
    let mut redis = Redis::start();
    let a = node(&redis);
    let mut b = node(&redis);
    let phish = "https://phish.example/login";
    let ok_url = "https://shop.example/";
    assert_eq!(follow(&b, &path_to(phish, 1)).await.0, StatusCode::FOUND);

    // Added through node A's command line, applied by node B: the delay, measured.
    let started = Instant::now();
    let id = add(&a, &["--url", phish, "--action", "block"]);
    let mut applied = None;
    while started.elapsed() < Duration::from_secs(5) {
        if follow(&b, &path_to(phish, 1)).await.0 == StatusCode::GONE {
            applied = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let applied = applied.expect("node B never applied the rule");
    println!("rule added on node A, applied by node B after {applied:?}");
    assert!(applied < Duration::from_secs(1), "{applied:?}");
    let (status, _, body) = follow(&b, &path_to(phish, 1)).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(
        body.contains("This link has been disabled") && body.contains("Request id: "),
        "{body}"
    );
    assert!(
        !body.contains("src=") && !body.contains("http"),
        "self-contained: {body}"
    );
    assert_eq!(follow(&b, &path_to(ok_url, 1)).await.0, StatusCode::FOUND);

    // Each kind of rule, and what it must leave alone.
    add(
        &a,
        &[
            "--prefix",
            "https://files.example/share/",
            "--action",
            "block",
        ],
    );
    add(&a, &["--host", "evil.example", "--action", "block"]);
    add(&a, &["--subdomains", "scam.example", "--action", "block"]);
    add(
        &a,
        &["--workspace", "11", "--message", "99", "--action", "block"],
    );
    add(&a, &["--domain", "link.bad.example", "--action", "block"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (url, want) in [
        ("https://files.example/share/x1", StatusCode::GONE),
        ("https://files.example/other", StatusCode::FOUND),
        ("https://evil.example/a", StatusCode::GONE),
        ("https://www.evil.example/a", StatusCode::FOUND),
        ("https://a.b.scam.example/", StatusCode::GONE),
        ("https://notscam.example/", StatusCode::FOUND),
    ] {
        assert_eq!(follow(&b, &path_to(url, 2)).await.0, want, "{url}");
    }
    // Message 99 of workspace 11 is blocked; message 22 (the helper's) is not.
    let ring = keyring(2);
    let mint = |host: &str, ws: u64, msg: u64| {
        let t = ring
            .mint(
                host,
                &linkedge::token::Link {
                    kind: linkedge::token::Kind::Click,
                    key_id: 2,
                    workspace: ws,
                    message: msg,
                    link: 1,
                    issued: 1_790_000_000,
                    url: ok_url.into(),
                    trap: false,
                },
            )
            .unwrap();
        format!("/c/{t}")
    };
    assert_eq!(follow(&b, &mint(HOST, 11, 99)).await.0, StatusCode::GONE);
    assert_eq!(follow(&b, &mint(HOST, 11, 98)).await.0, StatusCode::FOUND);
    assert_eq!(follow(&b, &mint(HOST, 12, 99)).await.0, StatusCode::FOUND);
    // A domain rule: links on link.bad.example stop, the same link on another domain works.
    let r = client()
        .get(b.http_url(&mint("link.bad.example", 11, 22)))
        .header("Host", "link.bad.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::GONE);
    // Opens are never blocked, even on a blocked domain.
    let r = client()
        .get(b.http_url(&format!("/o/{}", pixel("link.bad.example"))))
        .header("Host", "link.bad.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Warn, then continue: two events, and a redirect only after the choice.
    add(&a, &["--workspace", "11", "--action", "warn"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let path = path_to("https://shop.example/sale?a=1&b=<2>", 3);
    let (status, _, page) = follow(&b, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("https://shop.example/sale?a=1&amp;b=&lt;2&gt;"),
        "escaped: {page}"
    );
    // The page's continue link is signed: appending the parameter by hand shows the page again.
    let href = page
        .split("<a href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let continue_url = htmlize::unescape_attribute(href).into_owned();
    assert!(
        continue_url.starts_with(&format!("{path}?linkedge=continue&exp=")),
        "{continue_url}"
    );
    assert_eq!(
        follow(&b, &format!("{path}?linkedge=continue")).await.0,
        StatusCode::OK
    );
    let forged = continue_url.replace("&sig=", "&sig=A");
    assert_eq!(follow(&b, &forged).await.0, StatusCode::OK);
    // A blocked link cannot be continued past.
    let blocked = path_to(phish, 3);
    assert_eq!(
        follow(&b, &format!("{blocked}?linkedge=continue")).await.0,
        StatusCode::GONE
    );
    let (status, location, _) = follow(&b, &continue_url).await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::FOUND, "https://shop.example/sale?a=1&b=<2>")
    );

    // The stream: blocked and warned clicks carry the rule and the action.
    assert!(eventually(Duration::from_secs(5), || {
        redis
            .entries(STREAM)
            .iter()
            .any(|e| e.get("action").map(String::as_str) == Some("continue"))
    }));
    let events = redis.entries(STREAM);
    let with = |action: &str| {
        events
            .iter()
            .filter(|e| e.get("action").map(String::as_str) == Some(action))
            .count()
    };
    assert!(
        with("block") >= 8 && with("warn") == 3 && with("continue") == 1,
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.get("blocked") == Some(&id)),
        "the URL rule's id"
    );
    assert!(eventually(Duration::from_secs(2), || b
        .metric("linkedge_blocked_clicks_total{action=\"continue\"}")
        == 1.0));

    // Redis down: node B keeps every rule, through several failed re-syncs.
    redis.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(follow(&b, &path_to(phish, 4)).await.0, StatusCode::GONE);
    assert_eq!(
        follow(&b, &path_to(ok_url, 4)).await.0,
        StatusCode::OK,
        "workspace 11 warned"
    );
    redis.restart();
    // A restart loads them.
    b.restart();
    assert!(eventually(Duration::from_secs(10), || b
        .metric("linkedge_block_rules")
        == 7.0));
    assert_eq!(follow(&b, &path_to(phish, 5)).await.0, StatusCode::GONE);

    // Removing lifts it everywhere.
    let (ok, out) = cli(&a, "block", &["remove", &id, "--by", "abuse@example.com"]);
    assert!(ok, "{out}");
    assert!(eventually(Duration::from_secs(2), || b
        .metric("linkedge_block_rules")
        == 6.0));
    assert_eq!(
        follow(&b, &path_to(phish, 6)).await.0,
        StatusCode::OK,
        "still warned by workspace 11"
    );
    // The audit stream has every change.
    let audit: Vec<_> = redis.entries("linkedge:{blocks}:audit");
    assert_eq!(audit.len(), 8, "{audit:?}");
    assert_eq!(audit[7].get("op").map(String::as_str), Some("remove"));
    assert_eq!(
        audit[7].get("by").map(String::as_str),
        Some("abuse@example.com")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expiry_lifts_a_rule_and_bad_input_changes_nothing() {
    let redis = Redis::start();
    let le = node(&redis);
    let url = "https://temp.example/";
    add(
        &le,
        &["--host", "temp.example", "--action", "block", "--for", "2s"],
    );
    assert!(eventually(Duration::from_secs(2), || le
        .metric("linkedge_block_rules")
        == 1.0));
    assert_eq!(follow(&le, &path_to(url, 1)).await.0, StatusCode::GONE);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        follow(&le, &path_to(url, 1)).await.0,
        StatusCode::FOUND,
        "expired"
    );

    for (args, want) in [
        (
            vec!["add", "--url", "not a url", "--action", "block"],
            "url:",
        ),
        (
            vec!["add", "--prefix", "example.com/x", "--action", "block"],
            "must start with http",
        ),
        (
            vec!["add", "--prefix", "https://", "--action", "block"],
            "must start with http",
        ),
        (
            vec!["add", "--host", "*", "--action", "block"],
            "not a host name",
        ),
        (
            vec!["add", "--host", "a.example", "--action", "delete"],
            "invalid value 'delete'",
        ),
        (
            vec![
                "add",
                "--host",
                "a.example",
                "--action",
                "block",
                "--for",
                "soon",
            ],
            "expected a duration",
        ),
        (
            vec!["remove", "b0000000000000000", "--by", "me"],
            "no block rule b0000000000000000",
        ),
    ] {
        let mut all = args.clone();
        if args[0] == "add" {
            all.extend(["--reason", "r", "--by", "me"]);
        }
        let (ok, out) = cli(&le, "block", &all);
        assert!(!ok && out.contains(want), "{args:?}: {out}");
    }
    // The admin API: the same rules and refusals, nothing stored by a refusal.
    let base = format!("http://{}/v1/blocks", le.metrics);
    let c = client();
    let post = |body: Value| c.post(&base).bearer_auth(ADMIN_TOKEN).json(&body).send();
    let r = post(serde_json::json!({"match": "host", "host": "api.example", "action": "warn", "reason": "r", "added_by": "me"})).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for body in [
        serde_json::json!({"match": "prefix", "prefix": "", "action": "block", "reason": "r", "added_by": "me"}),
        serde_json::json!({"match": "host", "host": "x.example", "action": "nuke", "reason": "r", "added_by": "me"}),
        serde_json::json!({"match": "workspace", "workspace": 1, "action": "block", "reason": "r", "added_by": "me", "expires_ms": 1}),
        serde_json::json!({"match": "host", "host": "x.example", "action": "block", "reason": "", "added_by": "me"}),
        serde_json::json!({"match": "host", "host": "x.example", "action": "block", "reason": "r", "added_by": "me", "expires": 5}),
        serde_json::json!({"match": "prefix", "prefix": "https://x.example/", "url": "https://y.example/", "action": "block", "reason": "r", "added_by": "me"}),
    ] {
        let r = post(body.clone()).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let all: Value = c
        .get(&base)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["blocks"].as_array().unwrap().len(), 2, "{all}");
    let r = c
        .delete(format!("{base}/{id}"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"removed_by": "me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .delete(format!("{base}/{id}"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"removed_by": "me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c.get(&base).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_announcement_heals_at_a_resync() {
    let redis = Redis::start();
    let le = node(&redis);
    // Every node says when it last confirmed it holds every rule.
    assert!(eventually(Duration::from_secs(10), || le
        .metric("linkedge_block_list_synced_timestamp_seconds")
        > 0.0));
    let ok_url = "https://shop.example.org/sale";
    assert_eq!(follow(&le, &path_to(ok_url, 1)).await.0, StatusCode::FOUND);
    let rule = |id: &str, host: &str| {
        serde_json::json!({
            "id": id, "match": "host", "host": host, "action": "block",
            "reason": "r", "added_by": "test", "created_ms": 1,
        })
        .to_string()
    };
    let mut conn = redis.conn();
    // A change whose announcement was lost (written, version raised, nothing published): the
    // next re-sync (every second here) sees the version move and loads every rule.
    let () = redis::pipe()
        .hset("linkedge:{blocks}", "b1", rule("b1", "shop.example.org"))
        .ignore()
        .incr("linkedge:{blocks}:version", 1)
        .ignore()
        .query(&mut conn)
        .unwrap();
    let t = Instant::now();
    assert!(eventually(Duration::from_secs(5), || le
        .metric("linkedge_block_rules")
        == 1.0));
    println!(
        "a change without its announcement applied after {:?}",
        t.elapsed()
    );
    assert_eq!(follow(&le, &path_to(ok_url, 2)).await.0, StatusCode::GONE);

    // A rule written by hand, without raising the version: loaded by the periodic full load
    // (every tenth re-sync), not by the version check.
    let () = redis::cmd("HSET")
        .arg("linkedge:{blocks}")
        .arg("b2")
        .arg(rule("b2", "other.example.org"))
        .query(&mut conn)
        .unwrap();
    assert!(eventually(Duration::from_secs(15), || le
        .metric("linkedge_block_rules")
        == 2.0));
    assert_eq!(
        follow(&le, &path_to("https://other.example.org/", 3))
            .await
            .0,
        StatusCode::GONE
    );
}
