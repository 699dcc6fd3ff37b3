//! `linkedge reload`: a new config without dropping a connection. Under a steady stream of
//! clicks, three reloads in a row lose no request and no event; a bad config changes nothing.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// `linkedge reload --config CONFIG`, the new process logging beside the test's log.
fn reload(le: &Linkedge, config: &Path) -> (bool, String) {
    run(Command::new(env!("CARGO_BIN_EXE_linkedge"))
        .args(["reload", "--config"])
        .arg(config)
        .arg("--log")
        .arg(le.dir.path().join("linkedge.log"))
        .env("RUST_LOG", "info"))
}

/// The pid in the config's pid file.
fn serving_pid(le: &Linkedge) -> i32 {
    std::fs::read_to_string(le.dir.path().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Whether `pid` runs (the first process, the test's child, stays a zombie until reaped).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            != Some("Z")
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn three_reloads_under_load_lose_no_request_and_no_event() {
    let redis = Redis::start();
    let le = Linkedge::start(&Options::new(redis.url()));
    let first = serving_pid(&le);

    // A bad config: refused, and the running process is untouched.
    let bad = le.dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(&le.config).unwrap();
    std::fs::write(&bad, text.replace("secret_file:", "secret_fyle:")).unwrap();
    let (ok, out) = reload(&le, &bad);
    assert!(!ok && out.contains("nothing was changed"), "{out}");
    assert_eq!(serving_pid(&le), first);

    // Steady clicks from 8 keep-alive clients while the config is reloaded three times.
    let url = le.http_url(&format!("/c/{}", click(LOCAL, "https://example.com/r", 9)));
    let (stop, ok_n, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (url, stop, ok_n, failed, errors) = (
            url.clone(),
            stop.clone(),
            ok_n.clone(),
            failed.clone(),
            errors.clone(),
        );
        tasks.spawn(async move {
            let c = client_builder().http1_only().build().unwrap();
            // Bounded: at most 60 s of clicks.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 302 => ok_n.fetch_add(1, Ordering::Relaxed),
                    other => {
                        errors.lock().unwrap().push(format!("{other:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut pids = vec![first];
    for i in 0..3 {
        let before = ok_n.load(Ordering::Relaxed);
        let (ok, out) = tokio::task::block_in_place(|| reload(&le, &le.config));
        assert!(ok, "reload {i}: {out}\n{}", le.log());
        let now = serving_pid(&le);
        assert!(!pids.contains(&now), "reload {i}: pid {now} again");
        assert!(!alive(*pids.last().unwrap()), "the old process still runs");
        pids.push(now);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            ok_n.load(Ordering::Relaxed) > before,
            "no click answered after reload {i}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let redirected = ok_n.load(Ordering::Relaxed);
    println!(
        "3 reloads (pids {pids:?}): {redirected} redirects, {} failed",
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests: {:?}\nlog (warnings and errors):\n{}",
        errors.lock().unwrap().iter().take(3).collect::<Vec<_>>(),
        le.log()
            .lines()
            .filter(|l| l.contains("WARN")
                || l.contains("ERROR")
                || l.contains("upgrade")
                || l.contains("shutdown")
                || l.contains("graceful"))
            .take(80)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(redirected > 100, "{redirected} redirects");
    // Every redirect is an event in the stream, none twice: stop the last process (it writes
    // or spools what it holds; an exited process's spool is adopted by the next).
    let last = *pids.last().unwrap();
    assert!(
        Command::new("kill")
            .args(["-TERM", &last.to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(eventually(Duration::from_secs(30), || !alive(last)));
    let ids: std::collections::HashSet<String> = redis
        .entries(STREAM)
        .into_iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(
        redis.xlen(STREAM) as u64,
        redirected,
        "events in the stream"
    );
    assert_eq!(ids.len() as u64, redirected, "distinct event ids");
}
