//! The public request path: tracked-link clicks, open pixels and `/health`, answered inside
//! Pingora's `request_filter` without waiting for any I/O but the response itself.

use crate::certs::Sni;
use crate::client_ip;
use crate::events::{Event, Recorder};
use crate::metrics::{self, Route};
use crate::regions::{Region, Regions};
use crate::token::{Keyring, Kind, TokenError, normalize_host};
use async_trait::async_trait;
use bytes::Bytes;
use ipnet::IpNet;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The body of a 403 for a link minted for another Host, as the track backends word it.
pub const HOST_MISMATCH_BODY: &str = "Invalid link security token";

/// A 1×1 transparent GIF, 43 bytes.
pub const PIXEL_GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// The edge's Pingora application.
pub struct Edge {
    keyring: Keyring,
    recorder: Arc<Recorder>,
    trusted_proxies: Vec<IpNet>,
    regions: Arc<Regions>,
    well_known: Option<WellKnown>,
}

impl Edge {
    /// An edge verifying with `keyring`, recording to `recorder`, and proxying what it does not
    /// answer itself to `regions`.
    pub fn new(
        keyring: Keyring,
        recorder: Arc<Recorder>,
        trusted_proxies: Vec<IpNet>,
        regions: Arc<Regions>,
    ) -> Edge {
        Edge {
            keyring,
            recorder,
            trusted_proxies,
            regions,
            well_known: None,
        }
    }

    /// Serves ACME HTTP-01 and verification nonces from shared state.
    pub fn with_well_known(mut self, wk: WellKnown) -> Edge {
        self.well_known = Some(wk);
        self
    }
}

/// Answers the two `/.well-known/` paths every node must serve from shared state: ACME HTTP-01
/// key authorizations, and the nonces of `linkedge domain verify`'s Host check.
pub struct WellKnown {
    db: crate::db::Db,
}

impl WellKnown {
    /// Reads from `db`.
    pub fn new(db: crate::db::Db) -> WellKnown {
        WellKnown { db }
    }

    async fn get(&self, key: &str) -> redis::RedisResult<Option<String>> {
        let mut conn = self.db.conn().await?;
        redis::AsyncCommands::get(&mut conn, key).await
    }

    /// The reply for `path`, or `None` when it is not one of ours.
    async fn answer(&self, path: &str, host: Option<String>) -> Option<Reply> {
        let (key, verify) = if let Some(t) = path.strip_prefix("/.well-known/acme-challenge/") {
            (self.db.keys().acme_http01(t), false)
        } else if let Some(n) = path.strip_prefix("/.well-known/linkedge/verify/") {
            (self.db.keys().verify_nonce(n), true)
        } else {
            return None;
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !valid(path.rsplit('/').next().unwrap_or("")) {
            return Some(Reply::not_found());
        }
        match self.get(&key).await {
            Ok(Some(v)) if !verify => Some(Reply {
                body: Bytes::from(v),
                ..Reply::text(200, "")
            }),
            // The verifier compares the Host this node saw with the domain it is verifying.
            Ok(Some(_)) => Some(Reply {
                content_type: Some("application/json"),
                body: Bytes::from(
                    serde_json::json!({ "host": host.unwrap_or_default() }).to_string(),
                ),
                ..Reply::text(200, "")
            }),
            Ok(None) => Some(Reply::not_found()),
            Err(e) => {
                tracing::warn!(error = %e, "well-known look-up failed");
                Some(Reply::text(503, "Service Unavailable\n"))
            }
        }
    }
}

/// Per-request state for proxied requests.
#[derive(Default)]
pub struct Ctx {
    /// The region chosen for the Host.
    region: Option<Arc<Region>>,
    /// The region that took the request (differs from `region` after a failover).
    served_by: Option<Arc<Region>>,
    /// The Host to present upstream: the branded domain the client used (normalised: lowercase,
    /// no port).
    host: String,
    /// Backends already tried for this request.
    tried: Vec<SocketAddr>,
    /// `X-Request-Id`, from the client or generated.
    request_id: String,
    /// When the first backend was chosen.
    upstream_start: Option<Instant>,
    /// When the request header was read.
    start: Option<Instant>,
}

/// What the router decided.
enum Outcome {
    /// The edge answers.
    Reply(Reply),
    /// The regional backends answer.
    Proxy,
}

/// A complete response decided by the router, before it is written.
struct Reply {
    status: u16,
    content_type: Option<&'static str>,
    location: Option<Bytes>,
    allow: bool,
    body: Bytes,
}

impl Reply {
    fn text(status: u16, body: &'static str) -> Reply {
        Reply {
            status,
            content_type: Some("text/plain; charset=utf-8"),
            location: None,
            allow: false,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    fn not_found() -> Reply {
        Reply::text(404, "Not Found\n")
    }

    fn method_not_allowed() -> Reply {
        Reply {
            allow: true,
            ..Reply::text(405, "Method Not Allowed\n")
        }
    }
}

fn route_of(path: &str) -> (Route, &str) {
    if path == "/health" {
        (Route::Health, "")
    } else if let Some(t) = path.strip_prefix("/c/") {
        (Route::Click, t)
    } else if let Some(t) = path.strip_prefix("/o/") {
        (Route::Open, t)
    } else {
        (Route::Other, "")
    }
}

impl Edge {
    fn answer(&self, session: &Session, route: Route, token: &str, head: bool) -> Outcome {
        let req = session.req_header();
        let get_like = head || req.method == http::Method::GET;
        let reply = match route {
            Route::Health if get_like => Reply {
                content_type: Some("application/json"),
                ..Reply::text(200, "{}")
            },
            Route::Click | Route::Open if get_like => return self.link(session, route, token),
            Route::Health | Route::Click | Route::Open => Reply::method_not_allowed(),
            Route::Other | Route::Proxy | Route::WellKnown if self.regions.is_empty() => {
                Reply::not_found()
            }
            Route::Other | Route::Proxy | Route::WellKnown => return Outcome::Proxy,
        };
        Outcome::Reply(reply)
    }

    fn link(&self, session: &Session, route: Route, token: &str) -> Outcome {
        let req = session.req_header();
        let Some(host) = raw_host(req).and_then(normalize_host) else {
            return Outcome::Reply(Reply::text(400, "Bad Request: missing or invalid Host\n"));
        };
        // Over TLS, the Host must be the name the handshake was for (SNI): a request on one
        // customer's connection may not borrow another's Host.
        let sni = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|d| d.extension.get::<Sni>());
        if let Some(Sni(sni)) = sni
            && *sni != host
        {
            metrics::token_failure("sni_mismatch").inc();
            metrics::HOST_MISMATCH.inc();
            return Outcome::Reply(Reply::text(403, HOST_MISMATCH_BODY));
        }
        let link = match self.keyring.verify(&host, token) {
            Ok(link) => link,
            Err(TokenError::WrongHost) => {
                metrics::token_failure(TokenError::WrongHost.reason()).inc();
                metrics::HOST_MISMATCH.inc();
                tracing::info!(host = %host, "link minted for another host: a proxy in front may rewrite Host");
                return Outcome::Reply(Reply::text(403, HOST_MISMATCH_BODY));
            }
            // A format this edge does not know (older or newer): the track backends decode it.
            Err(TokenError::Version) if !self.regions.is_empty() => {
                metrics::token_failure(TokenError::Version.reason()).inc();
                return Outcome::Proxy;
            }
            Err(e) => {
                metrics::token_failure(e.reason()).inc();
                return Outcome::Reply(Reply::not_found());
            }
        };
        let want = if route == Route::Click {
            Kind::Click
        } else {
            Kind::Open
        };
        if link.kind != want {
            metrics::token_failure(TokenError::Kind.reason()).inc();
            return Outcome::Reply(Reply::not_found());
        }
        let header = |name: http::header::HeaderName| {
            req.headers
                .get(name)
                .map_or_else(Bytes::new, |v| Bytes::copy_from_slice(v.as_bytes()))
        };
        let ip = client_ip::resolve(
            session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            req.headers.get("x-forwarded-for").map(|v| v.as_bytes()),
            &self.trusted_proxies,
        );
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // One buffer for the destination, shared by the event and the Location header.
        let url = Bytes::from(link.url);
        self.recorder.record(Event {
            id: self.recorder.next_id(),
            kind: link.kind,
            ts,
            host,
            workspace: link.workspace,
            message: link.message,
            link: link.link,
            url: url.clone(),
            ip,
            ua: header(http::header::USER_AGENT),
            referer: header(http::header::REFERER),
        });
        Outcome::Reply(match link.kind {
            Kind::Click => Reply {
                status: 302,
                content_type: None,
                location: Some(url),
                allow: false,
                body: Bytes::new(),
            },
            Kind::Open => Reply {
                status: 200,
                content_type: Some("image/gif"),
                location: None,
                allow: false,
                body: Bytes::from_static(&PIXEL_GIF),
            },
        })
    }

    /// Sets up `ctx` for proxying, or answers 421 for a Host no region serves.
    fn prepare_proxy(&self, session: &Session, ctx: &mut Ctx) -> Option<Reply> {
        let req = session.req_header();
        let raw = raw_host(req).unwrap_or("");
        let Some(host) = normalize_host(raw) else {
            return Some(Reply::text(400, "Bad Request: missing or invalid Host\n"));
        };
        let Some(region) = self.regions.region_for(&host) else {
            return Some(Reply::text(
                421,
                "Misdirected Request: this host is not served here\n",
            ));
        };
        ctx.region = Some(region);
        ctx.host = host;
        ctx.request_id = req
            .headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map_or_else(|| self.recorder.next_id().to_string(), str::to_owned);
        None
    }
}

/// The request-id header, read from clients and sent to backends and back.
pub const REQUEST_ID: &str = "x-request-id";

/// The Host the client asked for: the `Host` header, or the HTTP/2 `:authority`.
fn raw_host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

/// A short plain-text error for a failed proxied request: the status and, for the client, only
/// the request id; the detail goes to the log.
fn proxy_error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::InvalidCert => 502,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

async fn write(session: &mut Session, reply: Reply, head: bool) -> Result<()> {
    let mut h = ResponseHeader::build(reply.status, Some(5))?;
    if let Some(ct) = reply.content_type {
        h.insert_header("Content-Type", ct)?;
    }
    h.insert_header("Content-Length", reply.body.len().to_string())?;
    if let Some(loc) = reply.location {
        // Verified destinations hold no control characters; the check here costs a scan only.
        let v = http::HeaderValue::from_maybe_shared(loc)
            .map_err(|_| Error::explain(ErrorType::InternalError, "invalid Location"))?;
        h.insert_header("Location", v)?;
    }
    if reply.allow {
        h.insert_header("Allow", "GET, HEAD")?;
    }
    // No CDN or browser cache may hide a repeat click or open.
    h.insert_header("Cache-Control", "no-store, max-age=0")?;
    let end = head || reply.body.is_empty();
    session.write_response_header(Box::new(h), end).await?;
    if !end {
        session.write_response_body(Some(reply.body), true).await?;
    }
    Ok(())
}

/// A path fit for logs: a link token is replaced by its length, so logs never hold a whole
/// (replayable) token.
pub fn redact_path(path: &str) -> String {
    match route_of(path) {
        (Route::Click | Route::Open, token) => {
            format!("{}<token:{} chars>", &path[..3], token.len())
        }
        _ => path.chars().take(200).collect(),
    }
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Self::CTX {
        Ctx::default()
    }

    /// Picks a healthy backend of the Host's region not tried yet for this request, or of the
    /// fallback region when the operator allowed it. None left: 502.
    async fn upstream_peer(&self, _s: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let region = ctx
            .region
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no region chosen"))?;
        let choice = self
            .regions
            .choose(&region, ctx.host.as_bytes(), &ctx.tried)
            .ok_or_else(|| {
                Error::explain(
                    ErrorType::HTTPStatus(502),
                    format!("no healthy backend in region {}", region.name),
                )
            })?;
        if choice.failover && ctx.served_by.as_ref().is_none_or(|r| r.name == region.name) {
            metrics::upstream_event(&region.name, "failover");
            tracing::warn!(request_id = %ctx.request_id, from = %region.name, to = %choice.region.name, "region has no healthy backend: failing over");
        }
        if let Some(a) = choice.backend.addr.as_inet() {
            ctx.tried.push(*a);
        }
        ctx.served_by = Some(choice.region);
        ctx.upstream_start.get_or_insert_with(Instant::now);
        Ok(choice.peer)
    }

    /// Retries a failed connection on another backend, up to the region's `retries`.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(region) = ctx.served_by.as_ref() else {
            return e;
        };
        if ctx.tried.len() <= region.retries {
            metrics::upstream_event(&region.name, "retry");
            tracing::warn!(request_id = %ctx.request_id, region = %region.name, backend = %peer, error = %e, "connect failed: retrying another backend");
            e.set_retry(true);
        }
        e
    }

    /// The branded Host goes upstream unchanged, with the forwarding headers and a request id.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        up.insert_header(http::header::HOST, &ctx.host)?;
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| client_ip::canonical(a.ip()));
        let peer_s = peer.map(|p| p.to_string()).unwrap_or_default();
        let trusted = peer.is_some_and(|p| client_ip::is_trusted(p, &self.trusted_proxies));
        let xff = match up
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            // Only a trusted proxy's chain is kept; anyone else could have forged it.
            Some(prev) if trusted && !prev.is_empty() => format!("{prev}, {peer_s}"),
            _ => peer_s,
        };
        up.insert_header("X-Forwarded-For", xff)?;
        // Other ways of naming the client, believed only from a trusted proxy; from anyone
        // else they could be forged to feed a backend a false client address.
        if !trusted {
            up.remove_header("forwarded");
            up.remove_header("x-real-ip");
        }
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        up.insert_header("X-Forwarded-Proto", if tls { "https" } else { "http" })?;
        up.insert_header("X-Forwarded-Host", &ctx.host)?;
        up.insert_header(REQUEST_ID, &ctx.request_id)?;
        Ok(())
    }

    /// Hands the request id back to the client.
    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if !ctx.request_id.is_empty() {
            resp.insert_header(REQUEST_ID, &ctx.request_id)?;
        }
        Ok(())
    }

    /// Counts pooled-connection reuse.
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        metrics::upstream_connection(reused);
        Ok(())
    }

    /// The one place a failed proxied request becomes a response: 502 when no backend could be
    /// reached, 504 on a timeout, with a short plain body naming the request id.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = proxy_error_status(e);
        if code > 0 {
            let region = ctx
                .served_by
                .as_ref()
                .or(ctx.region.as_ref())
                .map_or("-", |r| r.name.as_str());
            tracing::warn!(request_id = %ctx.request_id, region = %region, status = code, error = %e, "proxying failed");
            let reason = http::StatusCode::from_u16(code)
                .ok()
                .and_then(|c| c.canonical_reason())
                .unwrap_or("Error");
            let body = format!("{code} {reason} (request id {})\n", ctx.request_id);
            let written = async {
                let mut h = ResponseHeader::build(code, Some(4))?;
                h.insert_header("Content-Type", "text/plain; charset=utf-8")?;
                h.insert_header("Content-Length", body.len().to_string())?;
                h.insert_header("Cache-Control", "no-store")?;
                if !ctx.request_id.is_empty() {
                    h.insert_header(REQUEST_ID, &ctx.request_id)?;
                }
                session.write_response_header(Box::new(h), false).await?;
                session
                    .write_response_body(Some(Bytes::from(body)), true)
                    .await
            };
            if let Err(err) = written.await {
                tracing::debug!(error = %err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// The request head is complete: the connection's header deadline stops, and pipelined
    /// requests are answered in order (Pingora keeps the next request's bytes).
    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        crate::limits::request_started(session);
        session.set_pipelining_enabled(true);
        Ok(())
    }

    /// Metrics for proxied requests; the connection's idle deadline starts.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        crate::limits::request_finished(session);
        let Some(region) = ctx.served_by.as_ref().or(ctx.region.as_ref()) else {
            return;
        };
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        metrics::upstream_request(&region.name, status);
        if let Some(start) = ctx.upstream_start {
            metrics::upstream_seconds(&region.name, start.elapsed().as_secs_f64());
        }
        let seconds = ctx.start.map_or(0.0, |s| s.elapsed().as_secs_f64());
        metrics::route(Route::Proxy).observe(status, seconds);
        if e.is_none() {
            tracing::debug!(request_id = %ctx.request_id, region = %region.name, status, "proxied");
        }
    }

    /// What Pingora's error logs say about a request: method, redacted path, Host.
    fn request_summary(&self, session: &Session, _ctx: &Ctx) -> String {
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .unwrap_or_default();
        format!(
            "{} {}, Host: {host}",
            req.method,
            redact_path(req.uri.path())
        )
    }

    /// Answers links, pixels and `/health` (returns `Ok(true)`: response written, keep-alive left
    /// on); returns `Ok(false)` to proxy anything else to the Host's region.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let start = Instant::now();
        let head = session.req_header().method == http::Method::HEAD;
        if let Some(wk) = &self.well_known
            && session.req_header().uri.path().starts_with("/.well-known/")
            && (head || session.req_header().method == http::Method::GET)
        {
            let host = raw_host(session.req_header()).and_then(normalize_host);
            let path = session.req_header().uri.path().to_string();
            if let Some(reply) = wk.answer(&path, host).await {
                let status = reply.status;
                write(session, reply, head).await?;
                metrics::route(Route::WellKnown).observe(status, start.elapsed().as_secs_f64());
                return Ok(true);
            }
        }
        let (route, token) = route_of(session.req_header().uri.path());
        let (route, reply) = match self.answer(session, route, token, head) {
            Outcome::Reply(r) => (route, r),
            Outcome::Proxy => match self.prepare_proxy(session, ctx) {
                None => {
                    ctx.start = Some(start);
                    return Ok(false);
                }
                Some(r) => (Route::Other, r),
            },
        };
        let status = reply.status;
        write(session, reply, head).await?;
        metrics::route(route).observe(status, start.elapsed().as_secs_f64());
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_never_see_a_whole_token() {
        assert_eq!(redact_path("/c/AQEBAQEBsLuo2AYV"), "/c/<token:16 chars>");
        assert_eq!(redact_path("/o/abc"), "/o/<token:3 chars>");
        assert_eq!(redact_path("/health"), "/health");
    }
}
