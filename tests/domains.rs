//! The domain registry through the CLI and the admin API, against a real Redis.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;

fn regions_yaml() -> String {
    // Regions name the data regions a domain may be in; these backends are never contacted here.
    "regions:\n  us: { backends: [{ addr: \"127.0.0.1:9\" }] }\n  eu: { backends: [{ addr: \"127.0.0.1:9\" }] }\n".into()
}

fn started() -> (Redis, Linkedge) {
    let redis = Redis::start();
    let mut o = Options::new(redis.url());
    o.extra_yaml = regions_yaml();
    let le = Linkedge::start(&o);
    (redis, le)
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_adds_shows_lists_and_removes() {
    let (_redis, le) = started();
    let (ok, out) = cli(
        &le,
        "domain",
        &[
            "add",
            "Link.Example.COM.",
            "--workspace",
            "7",
            "--region",
            "eu",
        ],
    );
    assert!(ok, "{out}");
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["host"], "link.example.com");
    assert_eq!(d["state"], "pending");
    assert_eq!(d["region"], "eu");

    let (ok, out) = cli(
        &le,
        "domain",
        &[
            "add",
            "a.b.bücher.example",
            "--workspace",
            "7",
            "--region",
            "us",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("a.b.xn--bcher-kva.example"), "{out}");

    let (ok, out) = cli(
        &le,
        "domain",
        &[
            "add",
            "link.example.com",
            "--workspace",
            "8",
            "--region",
            "eu",
        ],
    );
    assert!(!ok);
    assert!(out.contains("already registered to workspace 7"), "{out}");
    let (ok, out) = cli(
        &le,
        "domain",
        &[
            "add",
            "link.other.example",
            "--workspace",
            "8",
            "--region",
            "ap",
        ],
    );
    assert!(!ok);
    assert!(
        out.contains("unknown region \"ap\"; configured: eu, us"),
        "{out}"
    );
    let (ok, out) = cli(
        &le,
        "domain",
        &[
            "add",
            "bad_name.example",
            "--workspace",
            "8",
            "--region",
            "us",
        ],
    );
    assert!(!ok);
    assert!(
        out.contains("may hold only letters, digits and hyphens"),
        "{out}"
    );

    let (ok, out) = cli(&le, "domain", &["list"]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[1].starts_with("link.example.com\tpending\teu\t7"),
        "{out}"
    );

    let (ok, out) = cli(&le, "domain", &["show", "link.example.com"]);
    assert!(ok && out.contains("\"workspace\": 7"), "{out}");
    let (ok, _) = cli(&le, "domain", &["remove", "link.example.com"]);
    assert!(ok);
    let (ok, out) = cli(&le, "domain", &["show", "link.example.com"]);
    assert!(!ok && out.contains("is not registered"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_requires_the_token_and_explains_refusals() {
    let (_redis, le) = started();
    let base = format!("http://{}/v1/domains", le.metrics);
    let c = client();

    let r = c.get(&base).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(&base)
        .bearer_auth("wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .put(format!("{base}/link.example.com"))
        .json(&serde_json::json!({"workspace": 3, "region": "us"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "no write without a token"
    );

    let put = |host: &str, body: Value| {
        c.put(format!("{base}/{host}"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    let r = put(
        "Link.Example.com",
        serde_json::json!({"workspace": 3, "region": "us"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["host"], "link.example.com");

    let r = put(
        "-bad-.example.com",
        serde_json::json!({"workspace": 3, "region": "us"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        e["error"],
        "label \"-bad-\" may not start or end with a hyphen"
    );

    let r = put("x.example.com", serde_json::json!({"workspace": 3}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = put(
        "link.example.com",
        serde_json::json!({"workspace": 4, "region": "us"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);

    let r = c.get(&base).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let all: Value = r.json().await.unwrap();
    assert_eq!(all["domains"].as_array().unwrap().len(), 1);
    // The scheme is case-insensitive (RFC 9110); the token is not.
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let r = c
            .get(&base)
            .header("Authorization", format!("{scheme} {ADMIN_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "scheme {scheme}");
    }
    let r = c
        .get(&base)
        .header(
            "Authorization",
            format!("Bearer {}", ADMIN_TOKEN.to_uppercase()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = c
        .delete(format!("{base}/link.example.com"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(format!("{base}/link.example.com"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Never on the public listener (this Host is in no region: 421, not the admin API).
    let r = c
        .get(le.http_url("/v1/domains"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
}

/// With Redis down, `verify` cannot decide: 503 (nothing changed), not 422 (which would tell the
/// customer their setup is wrong); unknown domains get 404.
#[tokio::test(flavor = "multi_thread")]
async fn verify_says_unavailable_when_redis_is_down_and_not_registered_when_unknown() {
    let (mut redis, le) = started();
    let base = format!("http://{}/v1/domains", le.metrics);
    let c = client();
    let r = c
        .post(format!("{base}/link.unknown.example/verify"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"].as_str().unwrap().contains("is not registered"),
        "{e}"
    );
    redis.kill();
    let r = c
        .post(format!("{base}/link.example.com/verify"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let e: Value = r.json().await.unwrap();
    let msg = e["error"].as_str().unwrap();
    assert!(msg.contains("nothing was decided"), "{msg}");
    assert!(
        !msg.contains("refused"),
        "no internal detail to the client: {msg}"
    );
}

/// A domain fronted by the customer's own proxy or CDN: registered with `--fronted` or
/// `"fronted": true`, shown as such; adding it again sets the flag, and a change makes it
/// pending again; records written before the flag existed read as not fronted.
#[tokio::test(flavor = "multi_thread")]
async fn fronted_domains_are_registered_shown_and_switched() {
    let (redis, le) = started();
    let (ok, out) = cli(
        &le,
        "domain",
        &[
            "add",
            "Link.CDN.example",
            "--workspace",
            "7",
            "--region",
            "eu",
            "--fronted",
        ],
    );
    assert!(ok, "{out}");
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["host"], "link.cdn.example");
    assert_eq!(d["fronted"], true);
    assert_eq!(d["state"], "pending");
    let (ok, out) = cli(&le, "domain", &["show", "link.cdn.example"]);
    assert!(ok && out.contains("\"fronted\": true"), "{out}");
    // A bad name gets the same error with --fronted as without, and nothing is registered.
    let (ok, out) = cli(
        &le,
        "domain",
        &[
            "add",
            "bad_name.example",
            "--workspace",
            "7",
            "--region",
            "eu",
            "--fronted",
        ],
    );
    assert!(!ok);
    assert!(
        out.contains("may hold only letters, digits and hyphens"),
        "{out}"
    );

    let base = format!("http://{}/v1/domains", le.metrics);
    let c = client();
    let put = |host: &str, body: Value| {
        c.put(format!("{base}/{host}"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    let r = put(
        "link.api.example",
        serde_json::json!({"workspace": 8, "region": "us", "fronted": true}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["fronted"], true);
    let r = put(
        "-bad-.example.com",
        serde_json::json!({"workspace": 8, "region": "us", "fronted": true}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        e["error"],
        "label \"-bad-\" may not start or end with a hyphen"
    );
    let r = put(
        "link.x.example",
        serde_json::json!({"workspace": 8, "region": "us", "fronted": "yes"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .get(format!("{base}/link.api.example"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["fronted"], true);

    let (ok, out) = cli(&le, "domain", &["list"]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("link.api.example\tpending\tus\t8\tfronted\t"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("link.cdn.example\tpending\teu\t7\tfronted\t"),
        "{out}"
    );

    // Adding it again without the flag: no longer fronted, and pending again (verified before).
    set_domain_state(&mut redis.conn(), "link.api.example", "verified");
    let r = put(
        "link.api.example",
        serde_json::json!({"workspace": 8, "region": "eu"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["fronted"], false);
    assert_eq!(d["region"], "eu");
    assert_eq!(d["state"], "pending");
    // The same flag again keeps the state.
    set_domain_state(&mut redis.conn(), "link.api.example", "verified");
    let (ok, out) = cli(
        &le,
        "domain",
        &[
            "add",
            "link.api.example",
            "--workspace",
            "8",
            "--region",
            "us",
        ],
    );
    assert!(ok, "{out}");
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (d["fronted"].as_bool(), d["state"].as_str()),
        (Some(false), Some("verified"))
    );

    // A record written before the flag existed.
    let old = r#"{"host":"link.old.example","workspace":9,"region":"us","state":"issued","error":"","created_ms":1,"updated_ms":1,"verified_ms":1}"#;
    let _: () = redis::cmd("HSET")
        .arg("linkedge:domains")
        .arg("link.old.example")
        .arg(old)
        .query(&mut redis.conn())
        .unwrap();
    let (ok, out) = cli(&le, "domain", &["show", "link.old.example"]);
    assert!(ok && out.contains("\"fronted\": false"), "{out}");
}
