//! The floor under linkedge's own answers: a Pingora server that answers every HTTP/1.1 request
//! with the same fixed `302` and does nothing else (no token, no event, no metric), built two
//! ways, for `benches/instructions` (instructions per request) and `benches/load`-style runs:
//!
//! - `proxy`: Pingora's `HttpProxy` with the answer written in `request_filter` — how linkedge
//!   answers `/c/`, `/o/` and `/health` today, so the cost of the proxy machinery around a
//!   request that never reaches an upstream;
//! - `app`: an `HttpServerApp` that reads the request and writes the answer — Pingora's HTTP/1
//!   server without the proxy, the floor for an edge that answered its own paths at that level;
//! - `pass UPSTREAM`: Pingora's `HttpProxy` proxying every request to `UPSTREAM` (host:port,
//!   plain HTTP, pooled keep-alive connections) with no hook of its own — the floor under
//!   linkedge's proxy path (scenario 5);
//! - `raw`: no Pingora: a current-thread tokio runtime, `httparse` on each connection's buffer
//!   and the answer written from a constant — what an edge could reach with its own minimal
//!   HTTP/1 path in front of Pingora (keep-alive only: no body, no chunking, no h2, no TLS).
//!
//! ```sh
//! cargo build --release --example floor
//! target/release/examples/floor proxy 127.0.0.1:8080    # or: app, raw
//! ```
//! One worker thread and mimalloc, as the benchmarks run linkedge.

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use std::sync::Arc;

/// The same allocator as linkedge (src/main.rs), so the floor differs from it only in what it does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LOCATION: &str = "https://example.com/landing";

/// The fixed answer.
fn answer() -> Box<ResponseHeader> {
    let mut h = ResponseHeader::build(302, Some(2)).expect("a valid status");
    h.insert_header("Location", LOCATION)
        .expect("a valid header");
    h.insert_header("Content-Length", "0")
        .expect("a valid header");
    Box::new(h)
}

/// `proxy`: answers in `request_filter`, as linkedge does.
struct Proxy;

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        session.write_response_header(answer(), true).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Error::e_explain(ErrorType::InternalError, "the floor never proxies")
    }
}

/// `pass`: proxies everything to one upstream.
struct Pass(String);

#[async_trait]
impl ProxyHttp for Pass {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.0.as_str(),
            false,
            String::new(),
        )))
    }
}

/// `app`: Pingora's HTTP/1 server, no proxy.
struct App;

#[async_trait]
impl HttpServerApp for App {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !http.read_request().await.ok()? {
            return None;
        }
        http.set_keepalive((!*shutdown.borrow()).then_some(60));
        http.write_response_header(answer()).await.ok()?;
        let settings = HttpPersistentSettings::for_session(&http);
        let stream = http.finish().await.ok()??;
        Some(ReusedHttpStream::from_reusable_stream(stream, settings))
    }
}

/// `raw`: the whole answer, bytes on the wire.
const RAW_ANSWER: &[u8] = b"HTTP/1.1 302 Found\r\nLocation: https://example.com/landing\r\n\
Content-Length: 0\r\n\r\n";

/// `raw`: one connection, requests answered as they are parsed (pipelined ones included).
async fn raw_connection(mut sock: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    let mut out = Vec::with_capacity(1024);
    loop {
        match sock.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        let mut start = 0;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[start..filled]) {
                Ok(httparse::Status::Complete(len)) => {
                    start += len;
                    out.extend_from_slice(RAW_ANSWER);
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            }
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() {
            return; // a request header larger than the buffer
        }
        if !out.is_empty() {
            if sock.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

/// `raw`: accept and answer on one thread.
fn raw(addr: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        loop {
            if let Ok((sock, _)) = listener.accept().await {
                let _ = sock.set_nodelay(true);
                tokio::spawn(raw_connection(sock));
            }
        }
    });
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(kind), Some(addr)) = (args.next(), args.next()) else {
        eprintln!("usage: floor (proxy|app|raw) ADDR | floor pass ADDR UPSTREAM");
        std::process::exit(2);
    };
    if kind == "raw" {
        // SIGINT's default action stops it, as the others.
        raw(&addr);
        return;
    }
    let mut server = Server::new(None).expect("a server");
    server.bootstrap();
    match kind.as_str() {
        "proxy" => {
            let mut svc = http_proxy_service(&server.configuration, Proxy);
            svc.add_tcp(&addr);
            server.add_service(svc);
        }
        "pass" => {
            let Some(upstream) = args.next() else {
                eprintln!("usage: floor pass ADDR UPSTREAM");
                std::process::exit(2);
            };
            let mut svc = http_proxy_service(&server.configuration, Pass(upstream));
            svc.add_tcp(&addr);
            server.add_service(svc);
        }
        "app" => {
            let mut svc = pingora::services::listening::Service::new("floor".into(), App);
            svc.add_tcp(&addr);
            server.add_service(svc);
        }
        other => {
            eprintln!("floor: unknown kind {other:?} (proxy, app, pass or raw)");
            std::process::exit(2);
        }
    }
    server.run_forever();
}
