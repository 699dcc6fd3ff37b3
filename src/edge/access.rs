//! The access log: one JSON line per request, off by default (`access_log.to`). Lines are
//! formatted on the request thread and handed to a writer thread through a bounded queue: the
//! request never waits for the disk, and when the queue is full the line is dropped and
//! counted (`linkedge_access_log_lines_total{outcome="dropped"}`). A file is reopened on SIGUSR1
//! (after logrotate moved it); stdout gets the same lines.

use crate::metrics;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Standard output.
    Stdout,
    /// A file, appended to, reopened on SIGUSR1.
    File(PathBuf),
}

/// Lines waiting for the writer at most.
const QUEUE: usize = 65_536;

/// One request, as logged. Paths carry no token (`/c/<token:143 chars>`).
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// RFC 3339, UTC, milliseconds.
    pub time: &'a str,
    /// `X-Request-Id` (the client's, or the one generated for a proxied request); empty if none.
    pub request_id: &'a str,
    /// The client's address (after trusted proxies), empty if unknown.
    pub client_ip: &'a str,
    /// The Host header (or HTTP/2 authority).
    pub host: &'a str,
    /// The method.
    pub method: &'a str,
    /// `click`, `open`, `health`, `well_known`, `proxy` or `other`.
    pub route: &'a str,
    /// The path with link tokens redacted.
    pub path: &'a str,
    /// The status sent (0: none, the client went away).
    pub status: u16,
    /// Body bytes sent.
    pub bytes: usize,
    /// Seconds from the request head read to the end of the response.
    pub duration: f64,
    /// The backend of a proxied request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<&'a str>,
    /// The region that served a proxied request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<&'a str>,
    /// The TLS version (`TLSv1.3`), for HTTPS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<&'a str>,
    /// Whether the TLS session was resumed, for HTTPS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_resumed: Option<bool>,
}

/// The handle the request path logs through.
pub struct AccessLog {
    tx: SyncSender<Vec<u8>>,
}

static REOPEN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigusr1(_: libc::c_int) {
    REOPEN.store(true, Ordering::Relaxed);
}

impl AccessLog {
    /// Opens `target` (a file must be writable now: a wrong path stops the start) and starts
    /// the writer thread.
    pub fn start(target: Target) -> std::io::Result<AccessLog> {
        let out = open(&target)?;
        if matches!(target, Target::File(_)) {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            unsafe {
                libc::signal(libc::SIGUSR1, on_sigusr1 as *const () as libc::sighandler_t);
            }
        }
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access log".into())
            .spawn(move || write_lines(rx, target, out))?;
        Ok(AccessLog { tx })
    }

    /// Queues `entry`'s line; drops it (counted) when the writer is behind.
    pub fn log(&self, entry: &Entry<'_>) {
        let mut line = serde_json::to_vec(entry).expect("an entry serialises");
        line.push(b'\n');
        match self.tx.try_send(line) {
            Ok(()) => metrics::access_log("written").inc(),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                metrics::access_log("dropped").inc()
            }
        }
    }
}

fn open(target: &Target) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        Target::Stdout => Box::new(std::io::stdout()),
        Target::File(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?,
        ),
    })
}

/// The writer thread: lines in batches through a buffer, flushed when the queue is empty (so a
/// line reaches the file within 100 ms), the file reopened after SIGUSR1.
fn write_lines(rx: Receiver<Vec<u8>>, target: Target, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    loop {
        if REOPEN.swap(false, Ordering::Relaxed) {
            let _ = out.flush();
            match open(&target) {
                Ok(f) => {
                    out = std::io::BufWriter::with_capacity(64 * 1024, f);
                    tracing::info!(?target, "access log reopened");
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot reopen the access log; writing to the old file")
                }
            }
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let _ = out.write_all(&line);
                while let Ok(line) = rx.try_recv() {
                    let _ = out.write_all(&line);
                }
                if let Err(e) = out.flush() {
                    tracing::warn!(error = %e, "access log write failed");
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
    }
}

/// `unix_ms` as RFC 3339 in UTC with milliseconds: `2026-12-01T01:12:31.123Z`.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_087_551_123), "2026-12-01T01:12:31.123Z");
        assert_eq!(rfc3339_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}
