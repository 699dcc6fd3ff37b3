//! `linkedge reload`: a new config without dropping a connection. The config is checked as
//! `serve` would load it (secrets, certificate files, backend names) before anything is
//! touched; then a new process starts with `serve --upgrade`, the running one (named by
//! `server.pid_file`) gets SIGQUIT and hands its listening sockets over, finishes its open
//! requests within `server.grace_period_seconds` and exits; its spooled events are adopted by
//! the new process.

use super::{Outcome, load};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the new process gets to start listening for the hand-over.
const START_WITHIN: Duration = Duration::from_secs(30);

/// Checks `config`, starts the new process and hands the listeners over. The new process's
/// log goes to `log` (appended) or, without it, where this command's output goes (the journal
/// under systemd; a caller capturing this command's output would wait for the new process).
pub fn reload(config: &Path, log: Option<&Path>) -> Outcome {
    let shown = config.display();
    let s = load(config).map_err(|e| format!("{e}; nothing was changed"))?;
    crate::server::check(&s).map_err(|e| format!("{shown}: {e:#}; nothing was changed"))?;
    let pid_file = &s.server.pid_file;
    let old = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|&pid| pid > 0 && alive(pid))
        .ok_or_else(|| {
            format!(
                "no running linkedge named by server.pid_file ({pid_file}); nothing was changed"
            )
        })?;
    let sock = Path::new(&s.server.upgrade_sock);
    let _ = std::fs::remove_file(sock);
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let log = match log {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("--log {}: {e}", p.display()))?,
        ),
        None => None,
    };
    // The new process outlives this command: its own session, no terminal input.
    let mut new = {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(exe);
        c.arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--upgrade")
            .stdin(Stdio::null());
        if let Some(f) = log {
            let err = f
                .try_clone()
                .map_err(|e| format!("cannot use the log file: {e}"))?;
            c.stdout(f).stderr(err);
        }
        // SAFETY: setsid is async-signal-safe and touches nothing of this process's state.
        unsafe {
            c.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        c.spawn()
            .map_err(|e| format!("cannot start the new process: {e}"))?
    };
    let start = Instant::now();
    while !sock.exists() {
        if let Some(status) = new.try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "the new process exited ({status}) before taking over; pid {old} still serves"
            ));
        }
        if start.elapsed() > START_WITHIN {
            let _ = new.kill();
            return Err(format!(
                "the new process did not start within {}s; stopped it, pid {old} still serves",
                START_WITHIN.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) with a pid read from the pid file and checked alive above.
    if unsafe { libc::kill(old, libc::SIGQUIT) } != 0 {
        let _ = new.kill();
        return Err(format!(
            "cannot signal pid {old}: {}; stopped the new process",
            std::io::Error::last_os_error()
        ));
    }
    // The old process exits after its grace period; the new one must still be running then.
    let limit = Duration::from_secs(
        s.server.grace_period_seconds + s.server.graceful_shutdown_timeout_seconds + 10,
    );
    let start = Instant::now();
    while alive(old) && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(status) = new.try_wait().map_err(|e| e.to_string())? {
        return Err(format!(
            "the new process exited ({status}) after the hand-over"
        ));
    }
    if alive(old) {
        return Err(format!(
            "pid {old} still runs {}s after SIGQUIT; pid {} serves beside it",
            limit.as_secs(),
            new.id()
        ));
    }
    println!(
        "{shown}: reloaded: pid {old} handed over to pid {}",
        new.id()
    );
    Ok(true)
}

/// Whether a process with id `pid` exists (and is not a zombie of ours).
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    exists
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next())
                    != Some("Z")
            })
            .unwrap_or(true)
}
