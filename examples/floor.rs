//! The floor under linkedge's own answers: a Pingora server that answers every HTTP/1.1 request
//! with the same fixed `302` and does nothing else (no token, no event, no metric), built two
//! ways, for `benches/instructions` (instructions per request) and `benches/load`-style runs:
//!
//! - `proxy`: Pingora's `HttpProxy` with the answer written in `request_filter` — how linkedge
//!   answers `/c/`, `/o/` and `/health` today, so the cost of the proxy machinery around a
//!   request that never reaches an upstream;
//! - `app`: an `HttpServerApp` that reads the request and writes the answer — Pingora's HTTP/1
//!   server without the proxy, the floor for an edge that answered its own paths at that level.
//!
//! ```sh
//! cargo build --release --example floor
//! target/release/examples/floor proxy 127.0.0.1:8080    # or: app
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

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(kind), Some(addr)) = (args.next(), args.next()) else {
        eprintln!("usage: floor (proxy|app) ADDR");
        std::process::exit(2);
    };
    let mut server = Server::new(None).expect("a server");
    server.bootstrap();
    match kind.as_str() {
        "proxy" => {
            let mut svc = http_proxy_service(&server.configuration, Proxy);
            svc.add_tcp(&addr);
            server.add_service(svc);
        }
        "app" => {
            let mut svc = pingora::services::listening::Service::new("floor".into(), App);
            svc.add_tcp(&addr);
            server.add_service(svc);
        }
        other => {
            eprintln!("floor: unknown kind {other:?} (proxy or app)");
            std::process::exit(2);
        }
    }
    server.run_forever();
}
