//! The access log: one JSON line per request, off by default (`access_log.to`). Lines are
//! formatted on the request thread and handed to a writer thread through a bounded queue, which
//! it empties every 20 ms: the request never waits for the disk nor wakes a thread, and when the
//! queue is full the line is dropped and counted
//! (`linkedge_access_log_lines_total{outcome="dropped"}`). A file is reopened on SIGUSR1 (after
//! logrotate moved it); stdout gets the same lines.

use crate::metrics;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
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
#[derive(Debug)]
pub struct Entry<'a> {
    /// When, Unix milliseconds (written as RFC 3339 in UTC).
    pub time_ms: u64,
    /// `X-Request-Id` (the client's, or the one generated for a proxied request); empty if none.
    pub request_id: &'a str,
    /// The client's address (after trusted proxies), if known.
    pub client_ip: Option<std::net::IpAddr>,
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
    pub upstream: Option<std::net::SocketAddr>,
    /// The region that served a proxied request.
    pub region: Option<&'a str>,
    /// The TLS version (`TLSv1.3`), for HTTPS.
    pub tls: Option<&'a str>,
    /// Whether the TLS session was resumed, for HTTPS.
    pub tls_resumed: Option<bool>,
}

impl Entry<'_> {
    /// The JSON object, written by hand into `out` (no intermediate strings; client-supplied
    /// text escaped).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":\"");
        write_time(self.time_ms, out);
        out.extend_from_slice(b"\",\"request_id\":");
        json_str(self.request_id, out);
        out.extend_from_slice(b",\"client_ip\":\"");
        if let Some(ip) = self.client_ip {
            let _ = write!(out, "{ip}");
        }
        out.extend_from_slice(b"\",\"host\":");
        json_str(self.host, out);
        out.extend_from_slice(b",\"method\":");
        json_str(self.method, out);
        out.extend_from_slice(b",\"route\":\"");
        out.extend_from_slice(self.route.as_bytes());
        out.extend_from_slice(b"\",\"path\":");
        json_str(self.path, out);
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        out.extend_from_slice(b",\"bytes\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.bytes).as_bytes());
        out.extend_from_slice(b",\"duration\":");
        // Microsecond resolution.
        let us = (self.duration * 1e6).round() as u64;
        let _ = write!(out, "{}.{:06}", us / 1_000_000, us % 1_000_000);
        if let Some(up) = self.upstream {
            let _ = write!(out, ",\"upstream\":\"{up}\"");
        }
        if let Some(region) = self.region {
            out.extend_from_slice(b",\"region\":");
            json_str(region, out);
        }
        if let Some(tls) = self.tls {
            out.extend_from_slice(b",\"tls\":");
            json_str(tls, out);
        }
        if let Some(resumed) = self.tls_resumed {
            out.extend_from_slice(if resumed {
                b",\"tls_resumed\":true"
            } else {
                b",\"tls_resumed\":false"
            });
        }
        out.extend_from_slice(b"}\n");
    }
}

/// `s` as a JSON string: quoted, with `"`, `\\` and control characters escaped (bytes that
/// are not UTF-8 cannot occur: header values and paths are checked by the parser as text).
fn json_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f)
    {
        out.extend_from_slice(s.as_bytes());
    } else {
        for c in s.chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
    }
    out.push(b'"');
}

/// `unix_ms` as RFC 3339, UTC, milliseconds; the part up to the second is formatted once a
/// second per thread.
fn write_time(unix_ms: u64, out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, [u8; 19])> = const { std::cell::RefCell::new((u64::MAX, [0; 19])) };
    }
    let secs = unix_ms / 1000;
    SECOND.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let full = rfc3339_ms(secs * 1000);
            c.1.copy_from_slice(&full.as_bytes()[..19]);
            c.0 = secs;
        }
        out.extend_from_slice(&c.1);
    });
    let ms = unix_ms % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
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
        let mut line = Vec::with_capacity(320);
        entry.write_json(&mut line);
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

/// How often the writer thread takes what is queued. It sleeps in between instead of waiting
/// on the queue, so a request never wakes it (waking it per line cost a context switch per
/// request: 1,439 per 1,000 requests and a third of scenario 1's rate).
const WRITE_EVERY: Duration = Duration::from_millis(20);

/// The writer thread: every [`WRITE_EVERY`], the queued lines through one buffer and one
/// flush; the file reopened after SIGUSR1.
fn write_lines(rx: Receiver<Vec<u8>>, target: Target, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    loop {
        std::thread::sleep(WRITE_EVERY);
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
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    let _ = out.write_all(&line);
                    wrote = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        if wrote && let Err(e) = out.flush() {
            tracing::warn!(error = %e, "access log write failed");
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
    fn a_line_is_json_with_client_text_escaped() {
        let e = Entry {
            time_ms: 1_796_087_551_123,
            request_id: "id\"1",
            client_ip: Some("198.51.100.7".parse().unwrap()),
            host: "link.example.com\u{1}",
            method: "GET",
            route: "proxy",
            path: "/a\\b",
            status: 200,
            bytes: 12,
            duration: 0.000_061_4,
            upstream: Some("10.0.0.1:8080".parse().unwrap()),
            region: Some("eu"),
            tls: Some("TLSv1.3"),
            tls_resumed: Some(true),
        };
        let mut out = Vec::new();
        e.write_json(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "time": "2026-12-01T01:12:31.123Z", "request_id": "id\"1",
                "client_ip": "198.51.100.7", "host": "link.example.com\u{1}", "method": "GET",
                "route": "proxy", "path": "/a\\b", "status": 200, "bytes": 12,
                "duration": 0.000061, "upstream": "10.0.0.1:8080", "region": "eu",
                "tls": "TLSv1.3", "tls_resumed": true
            })
        );
        // Twice in the same second: the cached part is reused.
        let mut again = Vec::new();
        Entry {
            time_ms: 1_796_087_551_999,
            ..e
        }
        .write_json(&mut again);
        assert!(
            String::from_utf8(again)
                .unwrap()
                .contains("2026-12-01T01:12:31.999Z")
        );
    }

    #[test]
    fn times_in_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_087_551_123), "2026-12-01T01:12:31.123Z");
        assert_eq!(rfc3339_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}
