//! Handshake load generator for benches/load scenario 3: many concurrent clients, each opening a
//! new TCP connection and a full TLS handshake per request (no session is ever offered for
//! resumption), then `GET /health` with `Connection: close`. With `--resume`, each client
//! offers the session of its previous connection (closed cleanly, so that it may be resumed),
//! and with `--also ADDR` it alternates between the two addresses (two nodes sharing ticket
//! keys: benches/tickets).
//!
//! ```sh
//! cargo run --release --example hsload -- 127.0.0.1:8443 --seconds 10 --concurrency 64 \
//!     [--sni-file names.txt | --sni localhost] [--groups X25519] [--resume] [--also ADDR]
//! ```
//! `--groups` sets the key-exchange groups offered (OpenSSL syntax); by default this build's
//! OpenSSL (3.6) offers the hybrid post-quantum X25519MLKEM768 first, as current browsers do.
//! Prints one JSON line: handshakes, errors, resumed (must be 0), per second, and the latency
//! of each request (connect, full handshake, `GET /health` answered) at p50, p99 and max, in
//! seconds.

use openssl::ssl::{SslConnector, SslMethod, SslSession, SslSessionCacheMode, SslVerifyMode};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    addr: String,
    seconds: u64,
    concurrency: usize,
    names: Vec<String>,
    groups: Option<String>,
    resume: bool,
    also: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        addr: String::new(),
        seconds: 10,
        concurrency: 64,
        names: vec!["localhost".into()],
        groups: None,
        resume: false,
        also: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => a.seconds = it.next().unwrap().parse().unwrap(),
            "--concurrency" => a.concurrency = it.next().unwrap().parse().unwrap(),
            "--sni" => a.names = vec![it.next().unwrap()],
            "--groups" => a.groups = it.next(),
            "--resume" => a.resume = true,
            "--also" => a.also = it.next(),
            "--sni-file" => {
                a.names = std::fs::read_to_string(it.next().unwrap())
                    .unwrap()
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            _ => a.addr = arg,
        }
    }
    assert!(
        !a.addr.is_empty(),
        "usage: hsload HOST:PORT [--seconds N] [--concurrency N] [--sni NAME | --sni-file FILE] \
         [--groups LIST]"
    );
    a
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    errors: AtomicU64,
    resumed: AtomicU64,
}

async fn one(
    connector: &SslConnector,
    addr: &str,
    name: &str,
    resume: bool,
    session: &mut Option<SslSession>,
) -> Result<bool, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).ok();
    let mut cfg = connector.configure().map_err(|e| e.to_string())?;
    cfg.set_verify_hostname(false);
    let mut ssl = cfg.into_ssl(name).map_err(|e| e.to_string())?;
    if let Some(sess) = session.as_ref() {
        // SAFETY: the session comes from this same connector's settings, for the same name.
        unsafe { ssl.set_session(sess).map_err(|e| e.to_string())? };
    }
    let mut s = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
    Pin::new(&mut s)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let resumed = s.ssl().session_reused();
    let req = format!("GET /health HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(512);
    let _ = s.read_to_end(&mut buf).await;
    if resume {
        // The newest ticket, and a clean close, without which OpenSSL offers it no more.
        *session = s.ssl().session().map(|x| x.to_owned());
        let _ = s.shutdown().await;
    }
    if !buf.starts_with(b"HTTP/1.1 200") {
        return Err(format!(
            "unexpected answer: {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(40)])
        ));
    }
    Ok(resumed)
}

fn main() {
    let a = args();
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    // No client-side session cache: every handshake is a full one.
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    b.set_alpn_protos(b"\x08http/1.1").unwrap();
    if let Some(g) = &a.groups {
        b.set_groups_list(g).unwrap();
    }
    let connector = Arc::new(b.build());
    let counts = Arc::new(Counts::default());
    let names = Arc::new(a.names);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.seconds);
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..a.concurrency {
            let (connector, counts, names, addr, also) = (
                connector.clone(),
                counts.clone(),
                names.clone(),
                a.addr.clone(),
                a.also.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut i = t;
                let mut first_error = None;
                let mut took = Vec::new();
                let mut session = None;
                let mut n = 0usize;
                while Instant::now() < deadline {
                    // One name per client when resuming: a session resumes under its own name.
                    let name = &names[if a.resume { t } else { i } % names.len()];
                    i += a.concurrency;
                    let at = match &also {
                        Some(other) if n % 2 == 1 => other,
                        _ => &addr,
                    };
                    n += 1;
                    let began = Instant::now();
                    match one(&connector, at, name, a.resume, &mut session).await {
                        Ok(resumed) => {
                            took.push(began.elapsed());
                            counts.ok.fetch_add(1, Ordering::Relaxed);
                            if resumed {
                                counts.resumed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            counts.errors.fetch_add(1, Ordering::Relaxed);
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (first_error, took)
            }));
        }
        let mut first = None;
        let mut took = Vec::new();
        for t in tasks {
            let (e, t) = t.await.unwrap();
            if let Some(e) = e {
                first.get_or_insert(e);
            }
            took.extend(t);
        }
        took.sort_unstable();
        let at = |q: f64| {
            took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1)))
                .map(|d| d.as_secs_f64())
        };
        let secs = start.elapsed().as_secs_f64();
        let ok = counts.ok.load(Ordering::Relaxed);
        println!(
            "{}",
            serde_json::json!({
                "handshakes": ok,
                "errors": counts.errors.load(Ordering::Relaxed),
                "resumed": counts.resumed.load(Ordering::Relaxed),
                "seconds": secs,
                "per_second": ok as f64 / secs,
                "p50": at(0.50),
                "p99": at(0.99),
                "max": took.last().map(|d| d.as_secs_f64()),
                "first_error": first,
            })
        );
    });
}
