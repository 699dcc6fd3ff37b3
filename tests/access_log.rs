//! The access log: one JSON line per request with what an operator needs to follow it, no
//! token in any path, to a file that logrotate can move (SIGUSR1 reopens it).

mod common;

use common::upstream::Upstream;
use common::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// The JSON lines of `path`.
fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_json_line_per_request_without_tokens_and_reopened_on_sigusr1() {
    let redis = Redis::start();
    let us = Upstream::start("us-1", false).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut o = Options::new(redis.url());
    o.extra_yaml = format!(
        "regions:\n  us:\n    backends: [{{ addr: \"{}\" }}]\nrouting:\n  default_region: us\naccess_log:\n  to: {}\n",
        us.addr,
        log.display()
    );
    let le = Linkedge::start(&o);
    let c = client();
    let token = click(LOCAL, "https://example.com/landing", 1);
    assert_eq!(
        c.get(le.http_url(&format!("/c/{token}")))
            .header("User-Agent", "test")
            .send()
            .await
            .unwrap()
            .status(),
        302
    );
    let r = c
        .get(le.http_url("/health"))
        .header("X-Request-Id", "req-from-client")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(le.http_url("/unsubscribe/abc"))
        .header("Host", "link.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tls = client_builder()
        .resolve("link.linkedge.test", le.https)
        .http1_only()
        .build()
        .unwrap();
    let r = tls
        .get(format!(
            "https://link.linkedge.test:{}/health",
            le.https.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    assert!(
        eventually(Duration::from_secs(5), || lines(&log).len() == 4),
        "{:?}\n{}",
        lines(&log),
        le.log()
    );
    let got = lines(&log);
    let (click_line, health, proxied, https) = (&got[0], &got[1], &got[2], &got[3]);
    // The click: route, status, method, Host, client, and the path without its token.
    assert_eq!(click_line["route"], "click");
    assert_eq!(click_line["status"], 302);
    assert_eq!(click_line["method"], "GET");
    assert!(
        click_line["host"].as_str().unwrap().starts_with(LOCAL),
        "{click_line}"
    );
    assert_eq!(click_line["client_ip"], "127.0.0.1");
    let path = click_line["path"].as_str().unwrap();
    assert!(
        path.starts_with("/c/<token:") && !path.contains(&token[..20]),
        "{path}"
    );
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap()
            .contains(&token[..20])
    );
    assert!(click_line["duration"].as_f64().unwrap() > 0.0);
    assert!(click_line["time"].as_str().unwrap().ends_with('Z'));
    assert!(click_line.get("tls").is_none() && click_line.get("upstream").is_none());
    // The client's request id is kept; the body size is counted.
    assert_eq!(health["route"], "health");
    assert_eq!(health["request_id"], "req-from-client");
    assert_eq!(health["bytes"], 2);
    // A proxied request names its backend and region, and carries a generated request id.
    assert_eq!(proxied["route"], "proxy");
    assert_eq!(proxied["status"], 200);
    assert_eq!(proxied["region"], "us");
    assert_eq!(proxied["upstream"], us.addr.to_string());
    assert_eq!(proxied["host"], "link.example.com");
    assert!(!proxied["request_id"].as_str().unwrap().is_empty());
    // Over HTTPS: the TLS version and a full handshake.
    assert_eq!(https["tls"], "TLSv1.3");
    assert_eq!(https["tls_resumed"], false);

    // logrotate moves the file, then SIGUSR1: the next line goes to a new file.
    std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    assert!(
        Command::new("kill")
            .args(["-USR1", &le.pid().to_string()])
            .status()
            .unwrap()
            .success()
    );
    // The writer reopens within 100 ms; a request after it lands in the new file.
    assert!(
        eventually(Duration::from_secs(5), || {
            futures_block(async {
                c.get(le.http_url("/health")).send().await.unwrap();
            });
            !lines(&log).is_empty()
        }),
        "no new access log after SIGUSR1:\n{}",
        le.log()
    );
    // The moved file kept its lines; the new one holds only what came after.
    let old = lines(&dir.path().join("access.log.1"));
    assert_eq!(&old[..4], &got[..]);
    assert!(lines(&log).iter().all(|l| l["route"] == "health"));
    assert_eq!(
        le.metric("linkedge_access_log_lines_total{outcome=\"dropped\"}"),
        0.0
    );
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
