//! `POST /v1/links`, the batch mint API, against a real Redis and a running linkedge: answers in
//! order with each URL or why it was refused, hosts checked against the registry mirror, and
//! every minted link works on the edge.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

fn started() -> (Redis, Linkedge) {
    let redis = Redis::start();
    let mut o = Options::new(redis.url());
    o.extra_yaml = "regions:\n  us: { backends: [{ addr: \"127.0.0.1:9\" }] }\n".into();
    let le = Linkedge::start(&o);
    (redis, le)
}

async fn post(le: &Linkedge, content_type: &str, body: Vec<u8>) -> (StatusCode, String) {
    let r = client()
        .post(format!("http://{}/v1/links", le.metrics))
        .bearer_auth(ADMIN_TOKEN)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

/// Follows a minted URL on the edge's HTTP listener with its host as Host.
async fn follow(le: &Linkedge, url: &str) -> (StatusCode, String) {
    let rest = url.strip_prefix("https://").expect(url);
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let r = client()
        .get(le.http_url(path))
        .header("Host", host)
        .send()
        .await
        .unwrap();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status(), location)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_answered_in_order_and_its_links_work() {
    let (redis, le) = started();
    add_domain(&le, "link.example.com", &[]);
    add_domain(&le, "link.old.example", &[]);
    let (ok, out) = cli(
        &le,
        "domain",
        &["move", "link.old.example", "link.new.example"],
    );
    assert!(ok, "{out}");
    // The mirror follows the move through the change feed.
    let old = json!([{"host": "link.old.example", "url": "https://shop.example/", "workspace": 7, "message": 9}]);
    let mut retired = false;
    for _ in 0..50 {
        let (_, body) = post(&le, "application/json", serde_json::to_vec(&old).unwrap()).await;
        if body.contains("retired_host") {
            retired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(retired, "the registry mirror never saw the move");
    let minted_before = le.metric("linkedge_links_minted_total{outcome=\"minted\"}");
    let refused_before = le.metric("linkedge_links_minted_total{outcome=\"refused\"}");

    let items = json!([
        {"host": "link.example.com", "url": "https://shop.example/a?x=1&y=2#f", "workspace": 7, "message": 9, "link": 1},
        {"host": "Link.Example.COM", "kind": "open", "workspace": 7, "message": 9},
        {"host": "link.example.com", "kind": "trap", "url": "https://shop.example/hidden", "workspace": 7, "message": 9, "link": 99},
        {"host": "unknown.example", "url": "https://shop.example/", "workspace": 7, "message": 9},
        {"host": "link.old.example", "url": "https://shop.example/", "workspace": 7, "message": 9},
        {"host": "link.example.com", "url": "javascript:alert(1)", "workspace": 7, "message": 9},
        {"host": "link.example.com", "kind": "open", "url": "https://shop.example/", "workspace": 7, "message": 9},
        {"host": "link.example.com", "workspace": 7, "message": 9},
        {"host": "link.example.com", "url": "https://shop.example/", "workspace": -1, "message": 9},
        {"host": "link.example.com", "url": "https://shop.example/", "workspace": "TOO_BIG", "message": 9},
        {"host": "not a host", "url": "https://shop.example/", "workspace": 7, "message": 9},
        {"host": "link.example.com", "url": "https://shop.example/", "workspace": 7, "message": 9, "color": "red"},
        {"host": "link.example.com", "url": "https://shop.example/last", "workspace": 18446744073709551615u64, "message": 9, "link": 2}
    ]);
    // An id past 2^64-1, which serde_json will not build as a value.
    let text = items
        .to_string()
        .replace("\"TOO_BIG\"", "18446744073709551616");
    let (status, body) = post(&le, "application/json", text.into_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let links = answer["links"].as_array().unwrap();
    assert_eq!(links.len(), 13, "{body}");
    assert_eq!(
        (answer["minted"].as_u64(), answer["refused"].as_u64()),
        (Some(4), Some(9)),
        "{body}"
    );
    let codes: Vec<&str> = links
        .iter()
        .map(|l| l["code"].as_str().unwrap_or("ok"))
        .collect();
    assert_eq!(
        codes,
        [
            "ok",
            "ok",
            "ok",
            "unregistered_host",
            "retired_host",
            "bad_url",
            "url_on_open",
            "missing_url",
            "bad_item",
            "bad_item",
            "bad_host",
            "bad_item",
            "ok"
        ],
        "{body}"
    );
    assert!(
        links[4]["error"]
            .as_str()
            .unwrap()
            .contains("link.old.example is retired"),
        "{body}"
    );
    assert!(
        links[3]["error"]
            .as_str()
            .unwrap()
            .contains("linkedge domain add"),
        "{body}"
    );
    assert!(
        links[11]["error"].as_str().unwrap().contains("color"),
        "{body}"
    );

    // Every minted link works on the edge, as minted.
    let url = |i: usize| links[i]["url"].as_str().unwrap().to_string();
    assert!(
        url(1).starts_with("https://link.example.com/o/"),
        "{}",
        url(1)
    );
    assert_eq!(
        follow(&le, &url(0)).await,
        (StatusCode::FOUND, "https://shop.example/a?x=1&y=2#f".into())
    );
    assert_eq!(follow(&le, &url(1)).await.0, StatusCode::OK);
    assert_eq!(
        follow(&le, &url(2)).await,
        (StatusCode::FOUND, "https://shop.example/hidden".into())
    );
    assert_eq!(
        follow(&le, &url(12)).await,
        (StatusCode::FOUND, "https://shop.example/last".into())
    );
    let (ok, out) = cli(&le, "link", &["decode", &url(12)]);
    assert!(
        ok && out.contains("workspace: 18446744073709551615") && out.contains("link:      2"),
        "{out}"
    );
    assert!(
        eventually(Duration::from_secs(5), || redis.xlen(STREAM) == 4),
        "four events (two clicks, an open, a trap) in the stream: {}",
        redis.xlen(STREAM)
    );
    assert_eq!(
        le.metric("linkedge_links_minted_total{outcome=\"minted\"}") - minted_before,
        4.0
    );
    assert_eq!(
        le.metric("linkedge_links_minted_total{outcome=\"refused\"}") - refused_before,
        9.0
    );

    // NDJSON: one answer line per link line, blank lines skipped, a broken line refused alone.
    let lines = "{\"host\":\"link.example.com\",\"url\":\"https://shop.example/n1\",\"workspace\":1,\"message\":2,\"link\":1}\n\
                 \n\
                 {\"host\":\"link.example.com\",\"url\":\n\
                 {\"host\":\"unknown.example\",\"url\":\"https://shop.example/\",\"workspace\":1,\"message\":2}\n\
                 {\"host\":\"link.example.com\",\"kind\":\"open\",\"workspace\":1,\"message\":2}";
    let (status, body) = post(&le, "application/x-ndjson", lines.as_bytes().to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answers: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 4, "{body}");
    assert!(
        answers[0]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://link.example.com/c/")
    );
    assert_eq!(answers[1]["code"], "bad_item", "{body}");
    assert_eq!(answers[2]["code"], "unregistered_host", "{body}");
    assert!(
        answers[3]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://link.example.com/o/")
    );
    assert_eq!(
        follow(&le, answers[0]["url"].as_str().unwrap()).await.1,
        "https://shop.example/n1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_batch_is_refused_whole_with_the_reason() {
    let (_redis, le) = started();
    add_domain(&le, "link.example.com", &[]);
    for (body, want) in [
        (
            &b"{\"host\":\"link.example.com\"}"[..],
            "expected a JSON array of links",
        ),
        (
            b"[{\"host\":\"link.example.com\",",
            "expected a JSON array of links",
        ),
        (b"", "expected a JSON array of links"),
    ] {
        let (status, text) = post(&le, "application/json", body.to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(
            text.contains(want) && text.contains("nothing was minted"),
            "{text}"
        );
    }
    let item = json!({"host": "link.example.com", "url": "https://shop.example/", "workspace": 1, "message": 2});
    let many = serde_json::to_vec(&vec![item.clone(); 10_001]).unwrap();
    let (status, text) = post(&le, "application/json", many).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains("at most 10000 links"), "{text}");
    let mut lines = Vec::new();
    for _ in 0..10_001 {
        serde_json::to_writer(&mut lines, &item).unwrap();
        lines.push(b'\n');
    }
    let (status, text) = post(&le, "application/x-ndjson", lines).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    let huge = vec![b' '; 33 << 20];
    let (status, text) = post(&le, "application/json", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    // Exactly the limit is served.
    let full = serde_json::to_vec(&vec![item.clone(); 10_000]).unwrap();
    let (status, text) = post(&le, "application/json", full).await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["minted"], 10_000);

    let c = client();
    let url = format!("http://{}/v1/links", le.metrics);
    let r = c.post(&url).body("[]").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c.get(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        le.metric("linkedge_links_minted_total{outcome=\"minted\"}"),
        10_000.0
    );
}
