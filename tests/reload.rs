//! `linkedge reload`: a new config without dropping a connection. Under a steady stream of
//! clicks, three reloads in a row lose no request and no event; a bad config changes nothing.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// `linkedge reload --config CONFIG`, the new process logging beside the test's log, with
/// systemd's `NOTIFY_SOCKET` set as under the unit's `ExecReload`.
fn reload(le: &Linkedge, config: &Path, notify: &Path) -> (bool, String) {
    run(Command::new(env!("CARGO_BIN_EXE_linkedge"))
        .args(["reload", "--config"])
        .arg(config)
        .arg("--log")
        .arg(le.dir.path().join("linkedge.log"))
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", notify))
}

/// What systemd would receive on its notification socket: each `MAINPID=` announced, and
/// whether the main process it replaced still ran when it arrived (systemd stops a unit whose
/// main process exits, so the new one must be named first).
struct Notifications {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    seen: Arc<std::sync::Mutex<Vec<(i32, bool)>>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Notifications {
    fn listen() -> Notifications {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (seen, stop) = (
            Arc::new(std::sync::Mutex::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let reader = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut main = None;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = sock.recv(&mut buf) else { continue };
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    assert!(text.lines().any(|l| l == "READY=1"), "{text}");
                    let pid: i32 = text
                        .lines()
                        .find_map(|l| l.strip_prefix("MAINPID="))
                        .unwrap_or_else(|| panic!("no MAINPID in {text:?}"))
                        .parse()
                        .unwrap();
                    let before_alive = main.is_none_or(alive);
                    main = Some(pid);
                    seen.lock().unwrap().push((pid, before_alive));
                }
            })
        };
        Notifications {
            path,
            _dir: dir,
            seen,
            stop,
            reader: Some(reader),
        }
    }

    /// The announcements so far.
    fn seen(&self) -> Vec<(i32, bool)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
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
    let notify = Notifications::listen();
    let mut opts = Options::new(redis.url());
    opts.env = vec![(
        "NOTIFY_SOCKET".into(),
        notify.path.to_string_lossy().into_owned(),
    )];
    let le = Linkedge::start(&opts);
    let first = serving_pid(&le);
    assert!(
        eventually(Duration::from_secs(10), || notify.seen() == [(first, true)]),
        "systemd was not told pid {first} serves: {:?}",
        notify.seen()
    );

    // A bad config: refused, and the running process is untouched.
    let bad = le.dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(&le.config).unwrap();
    std::fs::write(&bad, text.replace("secret_file:", "secret_fyle:")).unwrap();
    let (ok, out) = reload(&le, &bad, &notify.path);
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
        let (ok, out) = tokio::task::block_in_place(|| reload(&le, &le.config, &notify.path));
        assert!(ok, "reload {i}: {out}\n{}", le.log());
        let now = serving_pid(&le);
        assert!(!pids.contains(&now), "reload {i}: pid {now} again");
        assert!(!alive(*pids.last().unwrap()), "the old process still runs");
        pids.push(now);
        // systemd follows the new process: named its main process while the old one still ran.
        assert_eq!(
            notify.seen().last(),
            Some(&(now, true)),
            "reload {i}: systemd heard {:?}",
            notify.seen()
        );
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
    assert_eq!(
        notify.seen().iter().map(|n| n.0).collect::<Vec<_>>(),
        pids,
        "main processes announced to systemd (the bad config announced nothing)"
    );
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
