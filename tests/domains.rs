//! The domain registry through the CLI and the admin API, against a real Redis; moving a
//! domain keeps its links working.

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

/// Registers `host` through the CLI, or panics.
fn add(le: &Linkedge, host: &str, workspace: &str, region: &str, extra: &[&str]) {
    let mut args = vec!["add", host, "--workspace", workspace, "--region", region];
    args.extend(extra);
    let (ok, out) = cli(le, "domain", &args);
    assert!(ok, "{out}");
}

/// A click on `host` over plain HTTP: its status.
async fn click_status(le: &Linkedge, host: &str, token: &str) -> StatusCode {
    client()
        .get(le.http_url(&format!("/c/{token}")))
        .header("Host", host)
        .send()
        .await
        .unwrap()
        .status()
}

/// The whole registry hash, to show that a refused command changed nothing.
fn registry_raw(redis: &Redis) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg("linkedge:domains")
        .query(&mut redis.conn())
        .unwrap();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn a_moved_domain_keeps_its_links_and_refuses_new_ones() {
    let redis = Redis::start();
    let mut o = Options::new(redis.url());
    o.extra_yaml = format!("{}registry:\n  last_click_interval: 1s\n", regions_yaml());
    let le = Linkedge::start(&o);
    let (old, new) = ("link.old.example", "link.new.example");
    add(&le, old, "7", "eu", &["--fronted"]);
    set_domain_state(&mut redis.conn(), old, "issued");
    add(&le, "link.other.example", "8", "us", &[]);
    // A link sent before the move.
    let sent = click(old, "https://shop.example/spring", 41);
    assert_eq!(click_status(&le, old, &sent).await, StatusCode::FOUND);

    let (ok, out) = cli(
        &le,
        "domain",
        &["move", "Link.Old.Example", "Link.New.Example"],
    );
    assert!(ok, "{out}");
    let moved: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(moved["retired"]["host"], old);
    assert_eq!(moved["retired"]["state"], "retired");
    assert_eq!(moved["retired"]["moved_to"], new);
    let d = &moved["added"];
    assert_eq!(
        (
            &d["host"],
            &d["state"],
            &d["workspace"],
            &d["region"],
            &d["fronted"]
        ),
        (
            &Value::from(new),
            &Value::from("pending"),
            &Value::from(7),
            &Value::from("eu"),
            &Value::from(true)
        )
    );
    let (ok, out) = cli(&le, "domain", &["list"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{old}\tretired\teu\t7\tfronted\t")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{new}\tpending\teu\t7\tfronted\t")),
        "{out}"
    );

    // The old link still answers, and is recorded with the Host it arrived on; the retired
    // domain's last click shows up in `domain show` within the write interval.
    let mut shown = Value::Null;
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(10) {
        assert_eq!(click_status(&le, old, &sent).await, StatusCode::FOUND);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let (ok, out) = cli(&le, "domain", &["show", old]);
        assert!(ok, "{out}");
        shown = serde_json::from_str(&out).unwrap();
        if shown["last_click_ms"].is_u64() {
            break;
        }
    }
    assert!(
        shown["last_click_ms"].as_u64().unwrap() > 0,
        "{shown}\n{}",
        le.log()
    );
    assert_eq!(shown["moved_to"], new);
    assert!(
        eventually(std::time::Duration::from_secs(5), || {
            redis
                .entries(STREAM)
                .iter()
                .filter(|e| e["host"] == old)
                .count()
                >= 2
        }),
        "clicks on {old} after the move not recorded"
    );
    let (ok, out) = cli(&le, "domain", &["show", new]);
    assert!(ok && !out.contains("last_click_ms"), "{out}");

    // No new link on the retired domain, naming the new one; the new one mints.
    for kind in ["mint", "pixel"] {
        let mut args = vec![kind, "--host", old];
        if kind == "mint" {
            args.extend(["--url", "https://shop.example/"]);
        }
        let (ok, out) = cli(&le, "link", &args);
        assert!(!ok, "{out}");
        assert!(
            out.contains("link.old.example is retired: new links go on link.new.example"),
            "{out}"
        );
    }
    let (ok, out) = cli(
        &le,
        "link",
        &["mint", "--host", new, "--url", "https://shop.example/"],
    );
    assert!(
        ok && out.starts_with("https://link.new.example/c/"),
        "{out}"
    );

    // Bad input: a clear error, and the registry unchanged.
    let before = registry_raw(&redis);
    for (args, want) in [
        (
            vec!["move", old, "link.newer.example"],
            "link.old.example is retired: new links go on link.new.example",
        ),
        (
            vec!["move", new, "link.other.example"],
            "link.other.example is already registered to workspace 8",
        ),
        (
            vec!["move", new, old],
            "link.old.example is already registered to workspace 7",
        ),
        (
            vec!["move", new, "LINK.NEW.EXAMPLE."],
            "link.new.example cannot move to itself",
        ),
        (
            vec!["move", "link.nobody.example", "link.x.example"],
            "link.nobody.example is not registered",
        ),
        (
            vec!["move", new, "bad_name.example"],
            "may hold only letters, digits and hyphens",
        ),
        (
            vec!["add", old, "--workspace", "7", "--region", "eu"],
            "link.old.example is retired",
        ),
        (vec!["verify", old], "link.old.example is retired"),
    ] {
        let (ok, out) = cli(&le, "domain", &args);
        assert!(!ok, "{args:?}: {out}");
        assert!(out.contains(want), "{args:?}: want {want:?} in {out}");
    }
    let base = format!("http://{}/v1/domains", le.metrics);
    let post = |host: &str, body: Value| {
        client()
            .post(format!("{base}/{host}/move"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    for (host, body, status) in [
        (
            old,
            serde_json::json!({"to": "link.newer.example"}),
            StatusCode::CONFLICT,
        ),
        (
            new,
            serde_json::json!({"to": "link.other.example"}),
            StatusCode::CONFLICT,
        ),
        (new, serde_json::json!({"to": new}), StatusCode::BAD_REQUEST),
        (
            new,
            serde_json::json!({"to": "-bad-.example"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            new,
            serde_json::json!({"destination": "link.x.example"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "link.nobody.example",
            serde_json::json!({"to": "link.x.example"}),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let r = post(host, body.clone()).await.unwrap();
        assert_eq!(r.status(), status, "{host} {body}");
    }
    assert_eq!(
        registry_raw(&redis),
        before,
        "a refused move changed the registry"
    );

    // The admin API moves too, and shows the retired domain's last click.
    let r = post(new, serde_json::json!({"to": "link.newest.example"}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let moved: Value = r.json().await.unwrap();
    assert_eq!(moved["retired"]["moved_to"], "link.newest.example");
    assert_eq!(moved["added"]["workspace"], 7);
    let r = client()
        .get(format!("{base}/{new}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["state"], "retired");
    assert!(
        d.get("last_click_ms").is_some_and(Value::is_null),
        "a retired domain never clicked shows null: {d}"
    );

    // Only remove removes a retired domain; its links then get what any unknown Host gets.
    let (ok, out) = cli(&le, "domain", &["remove", old]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&le, "domain", &["show", old]);
    assert!(!ok && out.contains("is not registered"), "{out}");
    let left: Option<String> = redis::cmd("HGET")
        .arg("linkedge:domains:last_click")
        .arg(old)
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(left, None);
}
