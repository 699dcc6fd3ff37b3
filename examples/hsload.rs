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
//!
//! **Click mix** (benches/load scenario 7): with `--mix h2:60,h1:25,http:15 --paths FILE`,
//! every click is a new TCP connection and one `GET` of the next path from FILE (each client
//! walks its own share of the paths, so links are distinct), answered `302`: `h2` over TLS
//! with ALPN h2 (a browser), `h1` HTTP/1.1 over TLS (a link scanner), `http` plain HTTP/1.1 to
//! `--http ADDR`. `--resume-share 30` makes that share of TLS connections offer the session of
//! the client's earlier connection of the same kind (once it has one). `--host` is the Host
//! (and `:authority`) sent, by default the SNI name. The kind of each click is drawn from a
//! fixed pseudo-random sequence per client, so two runs make the same mix.

use openssl::ex_data::Index;
use openssl::ssl::{Ssl, SslConnector, SslMethod, SslSession, SslSessionCacheMode, SslVerifyMode};
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
    /// Click mix: (kind, weight) pairs; empty: the handshake mode.
    mix: Vec<(Proto, u32)>,
    /// Percentage of TLS connections that offer an earlier session.
    resume_share: u32,
    /// Paths to `GET` in the click mix.
    paths: Vec<String>,
    /// Plain HTTP address for the mix's `http` kind.
    http: Option<String>,
    /// Host header, when not the SNI name.
    host: Option<String>,
}

/// One kind of click connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    /// HTTP/2 over TLS.
    H2,
    /// HTTP/1.1 over TLS.
    H1,
    /// HTTP/1.1 in the clear.
    Http,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::H2 => "h2",
            Proto::H1 => "h1",
            Proto::Http => "http",
        }
    }
}

fn parse_mix(v: &str) -> Vec<(Proto, u32)> {
    v.split(',')
        .map(|part| {
            let (k, w) = part.split_once(':').expect("--mix KIND:WEIGHT,...");
            let kind = match k {
                "h2" => Proto::H2,
                "h1" => Proto::H1,
                "http" => Proto::Http,
                _ => panic!("--mix: unknown kind {k:?} (h2, h1, http)"),
            };
            (kind, w.parse().expect("--mix: a weight is a whole number"))
        })
        .collect()
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
        mix: Vec::new(),
        resume_share: 0,
        paths: Vec::new(),
        http: None,
        host: None,
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
            "--mix" => a.mix = parse_mix(&it.next().unwrap()),
            "--resume-share" => a.resume_share = it.next().unwrap().parse().unwrap(),
            "--http" => a.http = it.next(),
            "--host" => a.host = it.next(),
            "--paths" => {
                a.paths = std::fs::read_to_string(it.next().unwrap())
                    .unwrap()
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
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
         [--groups LIST] [--resume] [--also ADDR] \
         [--mix h2:60,h1:25,http:15 --paths FILE --http ADDR [--resume-share PCT] [--host NAME]]"
    );
    assert!(
        a.mix.is_empty() || !a.paths.is_empty(),
        "--mix needs --paths FILE"
    );
    assert!(
        a.http.is_some() || !a.mix.iter().any(|&(k, w)| k == Proto::Http && w > 0),
        "--mix with http needs --http ADDR"
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

/// A session kept for resumption: a copy of the one OpenSSL handed over, so that the
/// connection it came from (which h2 closes without a close_notify) cannot mark it unresumable.
type Kept = Arc<std::sync::Mutex<Option<SslSession>>>;

/// The mix's TLS client for one ALPN protocol, keeping each connection's newest session in its
/// [`Kept`] (ex_data `idx`).
fn mix_connector(groups: Option<&str>, alpn: &[u8], idx: Index<Ssl, Kept>) -> SslConnector {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    // The callback needs the client cache mode; OpenSSL's own client cache is never consulted.
    b.set_session_cache_mode(SslSessionCacheMode::CLIENT | SslSessionCacheMode::NO_INTERNAL);
    b.set_new_session_callback(move |ssl, sess| {
        if let Some(kept) = ssl.ex_data(idx) {
            let copy = sess
                .to_der()
                .ok()
                .and_then(|d| SslSession::from_der(&d).ok());
            *kept.lock().unwrap() = copy;
        }
    });
    b.set_alpn_protos(alpn).unwrap();
    if let Some(g) = groups {
        b.set_groups_list(g).unwrap();
    }
    b.build()
}

/// What one click of the mix needs to know.
struct Target<'a> {
    tls_addr: &'a str,
    http_addr: &'a str,
    sni: &'a str,
    host: &'a str,
    path: &'a str,
}

const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                          (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// One click: a new connection of `kind`, one `GET`, a `302` expected. Ok(resumed).
async fn click(
    connectors: &[SslConnector; 2],
    idx: Index<Ssl, Kept>,
    kind: Proto,
    t: &Target<'_>,
    offer: Option<SslSession>,
    kept: &Kept,
) -> Result<bool, String> {
    let e = |e: &dyn std::fmt::Display| format!("{}: {e}", kind.name());
    let h1 = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\nConnection: close\r\n\r\n",
        t.path, t.host
    );
    let expect_302 = |buf: &[u8]| {
        if buf.starts_with(b"HTTP/1.1 302") {
            Ok(())
        } else {
            Err(e(&format_args!(
                "unexpected answer: {:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(40)])
            )))
        }
    };
    if kind == Proto::Http {
        let mut tcp = TcpStream::connect(t.http_addr).await.map_err(|x| e(&x))?;
        tcp.set_nodelay(true).ok();
        tcp.write_all(h1.as_bytes()).await.map_err(|x| e(&x))?;
        let mut buf = Vec::with_capacity(512);
        tcp.read_to_end(&mut buf).await.map_err(|x| e(&x))?;
        return expect_302(&buf).map(|()| false);
    }
    let tcp = TcpStream::connect(t.tls_addr).await.map_err(|x| e(&x))?;
    tcp.set_nodelay(true).ok();
    let connector = &connectors[usize::from(kind == Proto::H1)];
    let mut cfg = connector.configure().map_err(|x| e(&x))?;
    cfg.set_verify_hostname(false);
    let mut ssl = cfg.into_ssl(t.sni).map_err(|x| e(&x))?;
    ssl.set_ex_data(idx, kept.clone());
    if let Some(sess) = offer.as_ref() {
        // SAFETY: the session comes from a connector with the same settings, for the same name.
        unsafe { ssl.set_session(sess).map_err(|x| e(&x))? };
    }
    let mut s = tokio_openssl::SslStream::new(ssl, tcp).map_err(|x| e(&x))?;
    Pin::new(&mut s).connect().await.map_err(|x| e(&x))?;
    let resumed = s.ssl().session_reused();
    if kind == Proto::H1 {
        s.write_all(h1.as_bytes()).await.map_err(|x| e(&x))?;
        let mut buf = Vec::with_capacity(512);
        let _ = s.read_to_end(&mut buf).await;
        let _ = s.shutdown().await;
        return expect_302(&buf).map(|()| resumed);
    }
    if s.ssl().selected_alpn_protocol() != Some(b"h2") {
        return Err(e(&"the server did not negotiate h2"));
    }
    let (mut client, conn) = h2::client::handshake(s).await.map_err(|x| e(&x))?;
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("https://{}{}", t.host, t.path))
        .header("user-agent", USER_AGENT)
        .body(())
        .map_err(|x| e(&x))?;
    let (resp, _) = client.send_request(req, true).map_err(|x| e(&x))?;
    let status = resp.await.map_err(|x| e(&x))?.status();
    // Every handle dropped: h2 sends GOAWAY and the connection ends.
    drop(client);
    let _ = conn.await;
    if status != http::StatusCode::FOUND {
        return Err(e(&format_args!("status {status}")));
    }
    Ok(resumed)
}

/// The click mix: see the module's documentation.
fn mix_main(a: Args) {
    let idx = Ssl::new_ex_index::<Kept>().unwrap();
    let groups = a.groups.as_deref();
    let connectors = Arc::new([
        mix_connector(groups, b"\x02h2", idx),
        mix_connector(groups, b"\x08http/1.1", idx),
    ]);
    let total: u32 = a.mix.iter().map(|&(_, w)| w).sum();
    assert!(total > 0, "--mix: the weights add up to 0");
    let a = Arc::new(a);
    let counts = Arc::new(Counts::default());
    let per_kind: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let offered = Arc::new(AtomicU64::new(0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.seconds);
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..a.concurrency {
            let (a, connectors, counts, per_kind, offered) = (
                a.clone(),
                connectors.clone(),
                counts.clone(),
                per_kind.clone(),
                offered.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut rng = (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                // One kept session per TLS kind.
                let kept: [Kept; 2] = Default::default();
                let (mut first_error, mut took) = (None, Vec::new());
                let mut i = t;
                while Instant::now() < deadline {
                    let mut pick = (next() % u64::from(total)) as u32;
                    let kind = a
                        .mix
                        .iter()
                        .find(|&&(_, w)| {
                            let hit = pick < w;
                            pick = pick.saturating_sub(w);
                            hit
                        })
                        .map(|&(k, _)| k)
                        .unwrap();
                    let keep = &kept[usize::from(kind == Proto::H1)];
                    let offer = if kind != Proto::Http && next() % 100 < u64::from(a.resume_share) {
                        keep.lock().unwrap().clone()
                    } else {
                        None
                    };
                    if offer.is_some() {
                        offered.fetch_add(1, Ordering::Relaxed);
                    }
                    let name = &a.names[t % a.names.len()];
                    let target = Target {
                        tls_addr: &a.addr,
                        http_addr: a.http.as_deref().unwrap_or(&a.addr),
                        sni: name,
                        host: a.host.as_deref().unwrap_or(name),
                        path: &a.paths[i % a.paths.len()],
                    };
                    i += a.concurrency;
                    let began = Instant::now();
                    let done = tokio::time::timeout(
                        Duration::from_secs(10),
                        click(&connectors, idx, kind, &target, offer, keep),
                    )
                    .await
                    .unwrap_or_else(|_| Err(format!("{}: no answer in 10 s", kind.name())));
                    match done {
                        Ok(resumed) => {
                            took.push(began.elapsed());
                            counts.ok.fetch_add(1, Ordering::Relaxed);
                            per_kind[kind as usize].fetch_add(1, Ordering::Relaxed);
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
        let (first, took) = gather(tasks).await;
        let secs = start.elapsed().as_secs_f64();
        let ok = counts.ok.load(Ordering::Relaxed);
        let kinds: serde_json::Map<String, serde_json::Value> = [Proto::H2, Proto::H1, Proto::Http]
            .iter()
            .map(|&k| {
                (
                    k.name().into(),
                    per_kind[k as usize].load(Ordering::Relaxed).into(),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "clicks": ok,
                "errors": counts.errors.load(Ordering::Relaxed),
                "resumed": counts.resumed.load(Ordering::Relaxed),
                "offered": offered.load(Ordering::Relaxed),
                "kinds": kinds,
                "seconds": secs,
                "per_second": ok as f64 / secs,
                "p50": at(&took, 0.50),
                "p99": at(&took, 0.99),
                "max": took.last().map(|d| d.as_secs_f64()),
                "first_error": first,
            })
        );
    });
}

type Outcome = (Option<String>, Vec<Duration>);

/// Every client's first error and latencies, the latencies sorted.
async fn gather(tasks: Vec<tokio::task::JoinHandle<Outcome>>) -> Outcome {
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
    (first, took)
}

/// The `q` quantile of sorted latencies, in seconds.
fn at(took: &[Duration], q: f64) -> Option<f64> {
    took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1)))
        .map(|d| d.as_secs_f64())
}

fn main() {
    let a = args();
    if !a.mix.is_empty() {
        return mix_main(a);
    }
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
        let (first, took) = gather(tasks).await;
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
                "p50": at(&took, 0.50),
                "p99": at(&took, 0.99),
                "max": took.last().map(|d| d.as_secs_f64()),
                "first_error": first,
            })
        );
    });
}
