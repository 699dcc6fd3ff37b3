//! The public request path: tracked-link clicks, open pixels, `/health` and the well-known paths
//! answered by the edge itself inside Pingora's `request_filter`, without waiting for any I/O but
//! the response (the click is queued, never awaited); everything else proxied to the Host's
//! region.
//!
//! - [`route`]: the decision, a pure function of the request (unit-tested as a table);
//! - [`reply`]: the one map from outcomes and errors to responses;
//! - [`well_known`]: ACME challenges and verification nonces from shared state;
//! - [`client_ip`]: who the client is, behind trusted proxies.

pub mod access;
pub mod client_ip;
pub mod reply;
pub mod route;
pub mod well_known;

pub use reply::{HOST_MISMATCH_BODY, PIXEL_GIF, REQUEST_ID, Reply};
pub use well_known::WellKnown;

use crate::agent::{self, Detector};
use crate::events::{Blocked, BlockedAction, Event, Sinks};
use crate::host::normalize_host;
use crate::metrics::{self, Served};
use crate::privacy::Privacy;
use crate::tls::Handshake;
use crate::token::{Keyring, Kind};
use crate::upstream::{Region, Regions};
use async_trait::async_trait;
use bytes::Bytes;
use ipnet::IpNet;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use route::{Decision, Refusal};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The edge's Pingora application.
pub struct Edge {
    keyring: Keyring,
    sinks: Arc<Sinks>,
    trusted_proxies: Vec<IpNet>,
    regions: Arc<Regions>,
    well_known: WellKnown,
    agents: Arc<Detector>,
    privacy: Privacy,
    /// `access_log.to`; `None`: off.
    access: Option<access::AccessLog>,
    /// `limits`: the header limits and send timeout applied per request.
    limits: crate::config::Limits,
    /// The registry mirror, which notes clicks on retired domains; `None`: not noted.
    registry: Option<Arc<crate::registry::Mirror>>,
    /// The block list and its pages; `None`: no click is checked.
    blocks: Option<(Arc<crate::blocks::BlockList>, crate::config::BlockSettings)>,
}

impl Edge {
    /// An edge verifying with `keyring`, recording to `sinks`, answering the well-known paths
    /// from `well_known`, and proxying what it does not answer itself to `regions`.
    pub fn new(
        keyring: Keyring,
        sinks: Arc<Sinks>,
        trusted_proxies: Vec<IpNet>,
        regions: Arc<Regions>,
        well_known: WellKnown,
        agents: Arc<Detector>,
        privacy: Privacy,
    ) -> Edge {
        Edge {
            keyring,
            sinks,
            trusted_proxies,
            regions,
            well_known,
            agents,
            privacy,
            access: None,
            limits: crate::config::Limits::default(),
            registry: None,
            blocks: None,
        }
    }

    /// Checks every click against `list` (memory only), answering with `settings`' pages.
    pub fn with_blocks(
        mut self,
        list: Arc<crate::blocks::BlockList>,
        settings: crate::config::BlockSettings,
    ) -> Edge {
        self.blocks = Some((list, settings));
        self
    }

    /// Applies `limits`' per-request settings (header limits, send timeout) instead of the
    /// defaults.
    pub fn with_limits(mut self, limits: crate::config::Limits) -> Edge {
        self.limits = limits;
        self
    }

    /// Notes each click on a retired domain in `registry` (memory only; see
    /// [`crate::registry::last_click`]).
    pub fn with_registry(mut self, registry: Arc<crate::registry::Mirror>) -> Edge {
        self.registry = Some(registry);
        self
    }

    /// Logs every request to `access` (see [`access`]).
    pub fn with_access_log(mut self, access: access::AccessLog) -> Edge {
        self.access = Some(access);
        self
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
    /// Which answer it got (the access log's `route`).
    route: Option<Served>,
    /// The request holds its connection busy (no head or idle deadline) until dropped.
    busy: Option<crate::limits::Busy>,
}

/// Header names looked up per request, parsed once.
const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// A response write to the client timed out (`limits.send_timeout`): Pingora's HTTP/2 write
/// timeout leaves the source unset, an upstream one is marked as such.
fn send_timed_out(e: &Error) -> bool {
    e.etype() == &ErrorType::WriteTimedout && e.esource() != &ErrorSource::Upstream
}

/// How long a warning page's continue link works.
const CONTINUE_FOR_S: u64 = 600;

/// The Host the client asked for: the `Host` header, or the HTTP/2 `:authority`.
fn raw_host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

impl Edge {
    /// Records a verified link's event (queued, never awaited) and returns its answer.
    fn link(&self, session: &Session, host: String, link: crate::token::Link) -> Reply {
        let req = session.req_header();
        let header = |name: http::header::HeaderName| {
            req.headers
                .get(name)
                .map_or_else(Bytes::new, |v| Bytes::copy_from_slice(v.as_bytes()))
        };
        let ip = self.client_ip(session);
        let ua = header(http::header::USER_AGENT);
        let ts = crate::time::unix_ms();
        // Labels the event; never refuses or delays the answer.
        let (agent, agent_reasons) = self.agents.judge(&agent::Request {
            head: req.method == http::Method::HEAD,
            ua: &ua,
            ip,
            kind: link.kind,
            workspace: link.workspace,
            message: link.message,
            link: link.link,
            trap: link.trap,
            issued_s: link.issued,
            now_ms: ts,
        });
        // The verdict saw the full address; the event keeps what `events.client_ip` allows.
        let (ip, ip_hash) = self.privacy.reduce(ip);
        // Opens are never blocked; a click is checked in memory, and only when rules exist.
        let met = match (&self.blocks, link.kind) {
            (Some((list, _)), Kind::Click) => list
                .check(&host, link.workspace, link.message, &link.url)
                .map(|rule| {
                    let action = match rule.action {
                        crate::blocks::Action::Block => BlockedAction::Block,
                        crate::blocks::Action::Warn if self.continues(req, &rule.id) => {
                            BlockedAction::Continue
                        }
                        crate::blocks::Action::Warn => BlockedAction::Warn,
                    };
                    metrics::blocked_click(action.as_str()).inc();
                    Blocked {
                        rule: rule.id.as_str().into(),
                        action,
                    }
                }),
            _ => None,
        };
        let action = met.as_ref().map(|b| b.action);
        let met_rule = met.as_ref().map(|b| b.rule.clone());
        // One buffer for the destination, shared by the event and the Location header.
        let url = Bytes::from(link.url);
        // The event goes where the Host's region keeps its click data.
        let region = self.regions.home_region(&host).map(|r| r.name.clone());
        if let Some(m) = &self.registry {
            m.clicked(&host);
        }
        let recorder = self.sinks.for_region(region.as_deref());
        let id = recorder.next_id();
        recorder.record(Event {
            blocked: met,
            id,
            region,
            agent,
            agent_reasons,
            ip_hash,
            kind: link.kind,
            ts,
            host,
            workspace: link.workspace,
            message: link.message,
            link: link.link,
            url: url.clone(),
            ip,
            ua,
            referer: header(http::header::REFERER),
        });
        match (link.kind, action) {
            (Kind::Open, _) => Reply::pixel(),
            (Kind::Click, None | Some(BlockedAction::Continue)) => Reply::redirect(url),
            (Kind::Click, Some(action)) => {
                let (_, pages) = self.blocks.as_ref().expect("a rule met means a block list");
                let request_id = id.to_string();
                let (status, template) = match action {
                    BlockedAction::Block => (410, &pages.blocked_page),
                    _ => (200, &pages.warned_page),
                };
                let continue_url = self.continue_url(req.uri.path(), met_rule.as_deref());
                let destination = String::from_utf8_lossy(&url);
                let body = crate::blocks::page(template, &request_id, &destination, &continue_url);
                Reply {
                    content_type: Some("text/html; charset=utf-8"),
                    request_id: Some(request_id),
                    ..Reply::text(status, body)
                }
            }
        }
    }

    /// The warning page's continue link for the click at `path` warned by `rule`: signed, so
    /// only a person shown that page can skip it, for [`CONTINUE_FOR_S`].
    fn continue_url(&self, path: &str, rule: Option<&str>) -> String {
        let exp = (crate::time::unix_s() as u64 + CONTINUE_FOR_S).to_string();
        let rule = rule.unwrap_or("");
        let sig = self.keyring.seal(&[
            b"continue",
            path.as_bytes(),
            rule.as_bytes(),
            exp.as_bytes(),
        ]);
        format!("{path}?linkedge=continue&exp={exp}&sig={sig}")
    }

    /// Whether the click's query is a current continue link ([`Edge::continue_url`]) for the
    /// warning of `rule`.
    fn continues(&self, req: &RequestHeader, rule: &str) -> bool {
        let Some(q) = req.uri.query() else {
            return false;
        };
        let (mut cont, mut exp, mut sig) = (false, None, None);
        for p in q.split('&') {
            match p.split_once('=') {
                Some(("linkedge", "continue")) => cont = true,
                Some(("exp", v)) => exp = Some(v),
                Some(("sig", v)) => sig = Some(v),
                _ => {}
            }
        }
        let (Some(exp), Some(sig)) = (exp, sig) else {
            return false;
        };
        let now = crate::time::unix_s() as u64;
        let fresh = exp
            .parse::<u64>()
            .is_ok_and(|e| e >= now && e <= now + CONTINUE_FOR_S);
        cont && fresh
            && self.keyring.unseal(
                &[
                    b"continue",
                    req.uri.path().as_bytes(),
                    rule.as_bytes(),
                    exp.as_bytes(),
                ],
                sig,
            )
    }

    /// The client's address: the peer, or the last untrusted hop of `X-Forwarded-For` when the
    /// peer is a trusted proxy.
    fn client_ip(&self, session: &Session) -> Option<std::net::IpAddr> {
        client_ip::resolve(
            session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            session
                .req_header()
                .headers
                .get(X_FORWARDED_FOR)
                .map(|v| v.as_bytes()),
            &self.trusted_proxies,
        )
    }

    /// Writes the access log's line for the request (see [`access::Entry`]).
    fn access_line(&self, log: &access::AccessLog, session: &Session, ctx: &Ctx) {
        let req = session.req_header();
        let client_ip = self.client_ip(session);
        let request_id = if ctx.request_id.is_empty() {
            req.headers
                .get(X_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        } else {
            ctx.request_id.as_str()
        };
        let ssl = session.digest().and_then(|d| d.ssl_digest.as_ref());
        log.log(&access::Entry {
            time_ms: crate::time::unix_ms(),
            request_id,
            client_ip,
            host: raw_host(req).unwrap_or(""),
            method: req.method.as_str(),
            route: ctx.route.map_or("other", Served::label),
            path: &route::redact_path(req.uri.path()),
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            bytes: session.body_bytes_sent(),
            duration: ctx.start.map_or(0.0, |s| s.elapsed().as_secs_f64()),
            upstream: ctx.served_by.as_ref().and(ctx.tried.last().copied()),
            region: ctx.served_by.as_ref().map(|r| &*r.name),
            tls: ssl.map(|d| d.version.as_ref()),
            tls_resumed: ssl.map(|d| d.extension.get::<Handshake>().is_some_and(|h| h.resumed)),
        });
    }

    /// Sets up `ctx` for proxying, or refuses a Host no region serves (421).
    fn prepare_proxy(&self, session: &Session, ctx: &mut Ctx) -> Result<(), Refusal> {
        let req = session.req_header();
        let host = raw_host(req)
            .and_then(normalize_host)
            .ok_or(Refusal::BadHost)?;
        let region = self.regions.region_for(&host).ok_or(Refusal::Misdirected)?;
        ctx.region = Some(region);
        ctx.host = host;
        ctx.request_id = req
            .headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map_or_else(
                || self.sinks.default_sink().next_id().to_string(),
                str::to_owned,
            );
        Ok(())
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
            .get(X_FORWARDED_FOR)
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

    /// A failed proxied request: logged with its detail, answered through
    /// [`Reply::proxy_error`] (502 when no backend could be reached, 504 on a timeout).
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if send_timed_out(e) {
            // Pingora's write timeout, set on HTTP/2 streams only: the stream is reset.
            metrics::stream_reset("send_timeout").inc();
        }
        let reply = Reply::proxy_error(e, &ctx.request_id);
        let code = reply.as_ref().map_or(0, |r| r.status);
        if let Some(reply) = reply {
            let region = ctx
                .served_by
                .as_ref()
                .or(ctx.region.as_ref())
                .map_or("-", |r| &*r.name);
            tracing::warn!(request_id = %ctx.request_id, region = %region, status = code, error = %e, "proxying failed");
            if let Err(err) = reply.write(session, false).await {
                tracing::debug!(error = %err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// The request head is complete: the connection's header deadline stops (until the
    /// request ends), its writes get `limits.send_timeout`, and pipelined requests are
    /// answered in order (Pingora keeps the next request's bytes).
    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.busy = crate::limits::request_started(session);
        if session.is_http2() {
            // A stream whose window stays shut is reset after this; HTTP/1 writes are bounded
            // by the connection's send deadline (crate::limits).
            session.set_write_timeout(Some(self.limits.send_timeout));
        } else {
            session.set_pipelining_enabled(true);
            // The idle deadline between requests is linkedge's (`limits.keepalive_timeout`,
            // any length); Pingora's own would close at 60 s.
            if session.get_keepalive().is_some_and(|s| s > 0) {
                session.set_keepalive(Some(0));
            }
        }
        Ok(())
    }

    /// Metrics for proxied requests. (The connection's idle deadline starts when the context
    /// is dropped, after Pingora has read what is left of the request body.)
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if let Some(log) = &self.access {
            self.access_line(log, session, ctx);
        }
        let Some(region) = ctx.served_by.as_ref().or(ctx.region.as_ref()) else {
            return;
        };
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        metrics::upstream_request(&region.name, status);
        if let Some(start) = ctx.upstream_start {
            metrics::upstream_seconds(&region.name, start.elapsed().as_secs_f64());
        }
        let seconds = ctx.start.map_or(0.0, |s| s.elapsed().as_secs_f64());
        metrics::served(Served::Proxy).observe(status, seconds);
        if e.is_none() {
            tracing::debug!(request_id = %ctx.request_id, region = %region.name, status, "proxied");
        }
    }

    /// Each piece of a proxied request's body restarts its `limits.body_timeout`.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(b) = &mut ctx.busy {
            b.body_progress(end_of_stream);
        }
        Ok(())
    }

    /// A client that stopped taking its response (`limits.send_timeout`) is counted, not
    /// logged: one attacker connection could otherwise write a log line per stream.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        send_timed_out(e)
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
            route::redact_path(req.uri.path())
        )
    }

    /// Answers links, pixels, `/health` and the well-known paths (returns `Ok(true)`: response
    /// written, keep-alive left on); returns `Ok(false)` to proxy anything else to the Host's
    /// region. The decision is [`route::decide`]'s.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let start = Instant::now();
        let req = session.req_header();
        let head = req.method == http::Method::HEAD;
        let handshake = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|d| d.extension.get::<Handshake>());
        // HTTP/2 header lists over max_header_bytes never get here (its codec answers 431),
        // nor do first HTTP/1 heads over either limit (crate::limits answers 431); a header
        // with too many fields over HTTP/2, or a pipelined HTTP/1 head, is refused here.
        let http2 = session.is_http2();
        if let Some(limit) = crate::limits::header_excess(&self.limits, req, http2) {
            let protocol = if http2 { "http2" } else { "http1" };
            metrics::header_refused(protocol, limit).inc();
            let reply = Reply::header_too_large();
            let status = reply.status;
            reply.write(session, head).await?;
            metrics::served(Served::Other).observe(status, start.elapsed().as_secs_f64());
            return Ok(true);
        }
        let decision = route::decide(
            &route::Request {
                method: &req.method,
                path: req.uri.path(),
                host: raw_host(req),
                sni: handshake.and_then(|h| h.sni.as_ref()).map(|s| s.0.as_str()),
                own_name: handshake.is_some_and(|h| h.own_name),
                proxying: !self.regions.is_empty(),
            },
            &self.keyring,
        );
        let (served, reply) = match decision {
            Decision::Health => (Served::Health, Reply::health()),
            Decision::Link { host, link } => {
                let served = match link.kind {
                    Kind::Click => Served::Click,
                    Kind::Open => Served::Open,
                };
                (served, self.link(session, host, link))
            }
            Decision::WellKnown => {
                let host = raw_host(req).and_then(normalize_host);
                let path = req.uri.path().to_string();
                (Served::WellKnown, self.well_known.answer(&path, host).await)
            }
            Decision::Refuse { refusal, failure } => {
                if let Some(reason) = failure {
                    metrics::token_failure(reason).inc();
                }
                if refusal == Refusal::HostMismatch {
                    metrics::HOST_MISMATCH.inc();
                    tracing::info!(host = ?raw_host(req), "link minted for another host: a proxy in front may rewrite Host");
                }
                let served = match route::target(req.uri.path()) {
                    route::Target::Click(_) => Served::Click,
                    route::Target::Open(_) => Served::Open,
                    route::Target::Health => Served::Health,
                    _ => Served::Other,
                };
                (served, Reply::refusal(refusal))
            }
            Decision::Proxy { failure } => {
                if let Some(reason) = failure {
                    metrics::token_failure(reason).inc();
                }
                match self.prepare_proxy(session, ctx) {
                    Ok(()) => {
                        ctx.start = Some(start);
                        ctx.route = Some(Served::Proxy);
                        return Ok(false);
                    }
                    Err(r) => (Served::Other, Reply::refusal(r)),
                }
            }
        };
        let status = reply.status;
        if self.access.is_some() {
            ctx.start = Some(start);
            ctx.route = Some(served);
        }
        reply.write(session, head).await?;
        metrics::served(served).observe(status, start.elapsed().as_secs_f64());
        Ok(true)
    }
}
