//! The public request path: tracked-link clicks, open pixels and `/health`, answered inside
//! Pingora's `request_filter` without waiting for any I/O but the response itself.

use crate::client_ip;
use crate::events::{Event, Recorder};
use crate::metrics::{self, Route};
use crate::token::{Keyring, Kind, TokenError, normalize_host};
use async_trait::async_trait;
use bytes::Bytes;
use ipnet::IpNet;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
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
}

impl Edge {
    /// An edge verifying with `keyring` and recording to `recorder`.
    pub fn new(keyring: Keyring, recorder: Arc<Recorder>, trusted_proxies: Vec<IpNet>) -> Edge {
        Edge {
            keyring,
            recorder,
            trusted_proxies,
        }
    }
}

/// A complete response decided by the router, before it is written.
struct Reply {
    status: u16,
    content_type: Option<&'static str>,
    location: Option<String>,
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
    fn answer(&self, session: &Session, route: Route, token: &str, head: bool) -> Reply {
        let req = session.req_header();
        let get_like = head || req.method == http::Method::GET;
        match route {
            Route::Health if get_like => Reply {
                content_type: Some("application/json"),
                ..Reply::text(200, "{}")
            },
            Route::Click | Route::Open if get_like => self.link(session, route, token),
            Route::Health | Route::Click | Route::Open => Reply::method_not_allowed(),
            Route::Other => Reply::not_found(),
        }
    }

    fn link(&self, session: &Session, route: Route, token: &str) -> Reply {
        let req = session.req_header();
        let raw_host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()));
        let Some(host) = raw_host.and_then(normalize_host) else {
            return Reply::text(400, "Bad Request: missing or invalid Host\n");
        };
        let link = match self.keyring.verify(&host, token) {
            Ok(link) => link,
            Err(TokenError::WrongHost) => {
                metrics::token_failure(TokenError::WrongHost.reason()).inc();
                metrics::HOST_MISMATCH.inc();
                tracing::info!(host = %host, "link minted for another host: a proxy in front may rewrite Host");
                return Reply::text(403, HOST_MISMATCH_BODY);
            }
            Err(e) => {
                metrics::token_failure(e.reason()).inc();
                return Reply::not_found();
            }
        };
        let want = if route == Route::Click {
            Kind::Click
        } else {
            Kind::Open
        };
        if link.kind != want {
            metrics::token_failure(TokenError::Kind.reason()).inc();
            return Reply::not_found();
        }
        let header = |name: http::header::HeaderName| {
            req.headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
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
        self.recorder.record(Event {
            id: self.recorder.next_id(),
            kind: link.kind.event_type().to_owned(),
            ts,
            host,
            workspace: link.workspace,
            message: link.message,
            link: link.link,
            url: link.url.clone(),
            ip: ip.map(|i| i.to_string()).unwrap_or_default(),
            ua: header(http::header::USER_AGENT),
            referer: header(http::header::REFERER),
        });
        match link.kind {
            Kind::Click => Reply {
                status: 302,
                content_type: None,
                location: Some(link.url),
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
        }
    }
}

async fn write(session: &mut Session, reply: Reply, head: bool) -> Result<()> {
    let mut h = ResponseHeader::build(reply.status, Some(5))?;
    if let Some(ct) = reply.content_type {
        h.insert_header("Content-Type", ct)?;
    }
    h.insert_header("Content-Length", reply.body.len().to_string())?;
    if let Some(loc) = reply.location {
        h.insert_header("Location", loc)?;
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
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    /// Never reached while every request is answered in `request_filter`; proxying to the
    /// regional backends comes with the regions module.
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Err(Error::explain(
            ErrorType::InternalError,
            "no upstream configured",
        ))
    }

    /// What Pingora's error logs say about a request: method, redacted path, Host.
    fn request_summary(&self, session: &Session, _ctx: &()) -> String {
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

    /// Answers every request: links, pixels, `/health`, and 404 for anything else. Returns
    /// `Ok(true)` (response written) with keep-alive left on.
    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        let start = Instant::now();
        let head = session.req_header().method == http::Method::HEAD;
        let (route, token) = route_of(session.req_header().uri.path());
        let reply = self.answer(session, route, token, head);
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
