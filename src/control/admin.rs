//! The metrics and admin listener: `/metrics` (Prometheus text), `/health`, and the admin API
//! under `/v1/` (bearer token) that manages the domain registry through [`Control`]. Bind it to a
//! private address; it is never served on the public listeners. Responses are built by
//! [`Reply`], like the public edge's.
//!
//! ```sh
//! curl -s -X PUT -H "Authorization: Bearer $TOKEN" -d '{"workspace":7,"region":"us"}' \
//!   http://127.0.0.1:9090/v1/domains/link.example.com
//! # Fronted by the customer's own proxy or CDN, which serves its certificate:
//! curl -s -X PUT -H "Authorization: Bearer $TOKEN" -d '{"workspace":7,"region":"eu","fronted":true}' \
//!   http://127.0.0.1:9090/v1/domains/link.example.com
//! # Moving to a new domain: link.example.com is retired, its links keep working:
//! curl -s -X POST -H "Authorization: Bearer $TOKEN" -d '{"to":"link.example.net"}' \
//!   http://127.0.0.1:9090/v1/domains/link.example.com/move
//! ```

use super::{Control, ControlError, Verified};
use crate::config::AdminToken;
use crate::edge::Reply;
use crate::mint::{Hosts, Minter, Request};
use crate::registry::Mirror;
use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use std::sync::Arc;

/// Largest admin request body read.
const MAX_BODY: usize = 64 << 10;
/// Largest `POST /v1/links` body read (10,000 links with 2 KB destinations fit).
pub const MAX_LINKS_BODY: usize = 32 << 20;
/// Most links one `POST /v1/links` mints.
pub const MAX_LINKS: usize = 10_000;

/// The admin application.
pub struct Admin {
    token: Option<AdminToken>,
    control: Control,
    /// Minting for `POST /v1/links`, hosts checked against the registry mirror.
    links: Option<(Minter, Arc<Mirror>)>,
}

impl Admin {
    /// An admin app; with `token` `None` the `/v1/` API is off.
    pub fn new(token: Option<AdminToken>, control: Control) -> Admin {
        Admin {
            token,
            control,
            links: None,
        }
    }

    /// Serves `POST /v1/links` with `minter`, hosts checked against `mirror` (no Redis command
    /// per link).
    pub fn with_links(mut self, minter: Minter, mirror: Arc<Mirror>) -> Admin {
        self.links = Some((minter, mirror));
        self
    }
}

/// The answer to a failed operation: its status and words, except for linkedge's own failures,
/// whose detail goes to the log only.
fn failed(e: ControlError) -> Reply {
    if let ControlError::Unavailable(detail) = &e {
        tracing::error!(error = %detail, "admin API: shared state unavailable");
        return Reply::json_error(
            503,
            "linkedge's shared state is unavailable; nothing was decided; see the linkedge log",
        );
    }
    Reply::json_error(e.status(), e)
}

fn ok(v: impl serde::Serialize) -> Reply {
    Reply::json(200, &serde_json::to_value(v).expect("answers serialize"))
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110, section 11.1).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
}

/// The body of `PUT /v1/domains/<host>`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDomain {
    workspace: u64,
    region: String,
    /// Fronted by the customer's own proxy; default false.
    #[serde(default)]
    fronted: bool,
}

/// The body of `POST /v1/domains/<host>/move`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveDomain {
    /// The new domain.
    to: String,
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Reply> {
    read_body_up_to(session, MAX_BODY).await
}

async fn read_body_up_to(session: &mut ServerSession, max: usize) -> Result<Vec<u8>, Reply> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return Err(Reply::json_error(
                        413,
                        format!("request body too large: at most {max} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(Reply::json_error(
                    400,
                    format!("cannot read the request body: {e}"),
                ));
            }
        }
    }
}

impl Admin {
    async fn api(&self, session: &mut ServerSession, path: &str) -> Reply {
        let Some(token) = &self.token else {
            return Reply::json_error(
                404,
                "the admin API is off: set admin.token_env or admin.token_file",
            );
        };
        let presented = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| bearer(v.as_bytes()))
            .unwrap_or(b"");
        if presented.is_empty() || !token.matches(presented) {
            return Reply::json_error(401, "missing or wrong bearer token");
        }
        let method = session.req_header().method.clone();
        if path == "/v1/links" {
            if method != Method::POST {
                return Reply::json_error(405, "use POST with a JSON array or NDJSON of links");
            }
            return self.links(session).await;
        }
        let rest = path.strip_prefix("/v1/domains").unwrap_or("\0");
        let c = &self.control;
        if let (&Method::POST, Some(host)) = (
            &method,
            rest.strip_prefix('/')
                .and_then(|r| r.strip_suffix("/verify")),
        ) {
            return match c.verify(host).await {
                Ok(Verified::Verified) => ok(serde_json::json!({ "host": host, "verified": true })),
                Ok(Verified::Issued(info)) => {
                    ok(serde_json::json!({ "host": host, "verified": true, "certificate": info }))
                }
                Ok(Verified::Fronted(through)) => ok(serde_json::json!({
                    "host": host,
                    "verified": true,
                    "fronted": true,
                    "over": through.over.as_str(),
                    "https_error": through.https_error,
                    "note": format!("no certificate is ordered: the customer's proxy serves {host}'s certificate"),
                })),
                Err(e) => failed(e),
            };
        }
        if let (&Method::POST, Some(host)) = (
            &method,
            rest.strip_prefix('/').and_then(|r| r.strip_suffix("/move")),
        ) {
            let body = match read_body(session).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let moved = match serde_json::from_slice::<MoveDomain>(&body) {
                Ok(m) => c.move_domain(host, &m.to).await,
                Err(e) => Err(ControlError::Invalid(format!(
                    "expected {{\"to\": \"<the new domain>\"}}: {e}"
                ))),
            };
            return moved.map(ok).unwrap_or_else(failed);
        }
        let host = rest.strip_prefix('/').filter(|h| !h.is_empty());
        let result = match (method, host) {
            (Method::GET, None) if rest.is_empty() || rest == "/" => c
                .domains()
                .await
                .map(|all| ok(serde_json::json!({ "domains": all }))),
            (Method::GET, Some(host)) => c.show_domain(host).await.map(ok),
            (Method::PUT, Some(host)) => {
                let body = match read_body(session).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                match serde_json::from_slice::<AddDomain>(&body) {
                    Ok(add) => c
                        .add_domain(host, add.workspace, &add.region, add.fronted)
                        .await
                        .map(ok),
                    Err(e) => Err(ControlError::Invalid(format!(
                        "expected {{\"workspace\": <number>, \"region\": \"us\", \"fronted\": <true|false, optional>}}: {e}"
                    ))),
                }
            }
            (Method::DELETE, Some(host)) => c
                .remove_domain(host)
                .await
                .map(|()| ok(serde_json::json!({ "removed": host }))),
            (_, Some(_)) => Ok(Reply::json_error(
                405,
                "use GET, PUT or DELETE (POST for <host>/verify and <host>/move)",
            )),
            _ => Ok(Reply::json_error(
                404,
                "no such admin endpoint; see /v1/domains",
            )),
        };
        result.unwrap_or_else(failed)
    }
}

impl Admin {
    /// `POST /v1/links`: a JSON array, or NDJSON (`Content-Type: application/x-ndjson`), of
    /// [`Request`]s, answered in the same order with each URL or why it was refused.
    async fn links(&self, session: &mut ServerSession) -> Reply {
        let Some((minter, mirror)) = &self.links else {
            return Reply::json_error(404, "minting is not served by this process");
        };
        if !mirror.ready() {
            return Reply::json_error(
                503,
                "the domain registry has not been loaded from Redis yet; nothing was minted",
            );
        }
        let ndjson = session
            .req_header()
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let t = v.split(';').next().unwrap_or("").trim();
                [
                    "application/x-ndjson",
                    "application/ndjson",
                    "application/jsonl",
                ]
                .iter()
                .any(|n| t.eq_ignore_ascii_case(n))
            });
        let body = match read_body_up_to(session, MAX_LINKS_BODY).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let issued = crate::time::unix_s() as u64;
        let answer = if ndjson {
            mint_ndjson(minter, &**mirror, &body, issued)
        } else {
            mint_array(minter, &**mirror, &body, issued)
        };
        match answer {
            Ok((body, minted, refused)) => {
                crate::metrics::links_minted(minted, refused);
                Reply {
                    content_type: Some(if ndjson {
                        "application/x-ndjson"
                    } else {
                        "application/json"
                    }),
                    ..Reply::text(200, body)
                }
            }
            Err(r) => r,
        }
    }
}

/// A batch's answer: the body, how many links were minted and how many refused.
type Minted = (Vec<u8>, u64, u64);

/// Appends one item's answer (`{"url":...}` or `{"error":...,"code":...}`) to `out`.
fn answer_item(
    minter: &Minter,
    hosts: &impl Hosts,
    item: Result<Request<'_>, serde_json::Error>,
    issued: u64,
    url: &mut String,
    out: &mut Vec<u8>,
) -> bool {
    let refused = match item {
        Ok(req) => {
            url.clear();
            match minter.mint_into(hosts, &req, issued, url) {
                Ok(()) => {
                    // Scheme, a normalised host and base64url: nothing to escape.
                    out.extend_from_slice(b"{\"url\":\"");
                    out.extend_from_slice(url.as_bytes());
                    out.extend_from_slice(b"\"}");
                    return true;
                }
                Err(e) => (e.code(), e.to_string()),
            }
        }
        Err(e) => ("bad_item", format!("not a link: {e}")),
    };
    serde_json::to_writer(
        &mut *out,
        &serde_json::json!({ "error": refused.1, "code": refused.0 }),
    )
    .expect("writing to a Vec");
    false
}

fn too_many() -> Reply {
    Reply::json_error(
        413,
        format!("at most {MAX_LINKS} links per request: split the batch; nothing was minted"),
    )
}

/// A JSON array of links: `{"minted":N,"refused":M,"links":[...]}`. A body that is not a JSON
/// array is refused whole; an item that is not a link is refused alone.
fn mint_array(
    minter: &Minter,
    hosts: &impl Hosts,
    body: &[u8],
    issued: u64,
) -> Result<Minted, Reply> {
    let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body).map_err(|e| {
        Reply::json_error(
            400,
            format!("expected a JSON array of links ({{\"host\", \"url\", \"workspace\", \"message\", \"link\", \"kind\"}}), or NDJSON with Content-Type: application/x-ndjson: {e}; nothing was minted"),
        )
    })?;
    if items.len() > MAX_LINKS {
        return Err(too_many());
    }
    let mut links = Vec::with_capacity(items.len() * 200);
    let (mut minted, mut refused) = (0, 0);
    let mut url = String::new();
    for (i, raw) in items.iter().enumerate() {
        if i > 0 {
            links.push(b',');
        }
        let item = serde_json::from_str::<Request<'_>>(raw.get());
        if answer_item(minter, hosts, item, issued, &mut url, &mut links) {
            minted += 1;
        } else {
            refused += 1;
        }
    }
    let mut out = Vec::with_capacity(links.len() + 64);
    out.extend_from_slice(
        format!("{{\"minted\":{minted},\"refused\":{refused},\"links\":[").as_bytes(),
    );
    out.extend_from_slice(&links);
    out.extend_from_slice(b"]}\n");
    Ok((out, minted, refused))
}

/// NDJSON: one link per line, answered one line per link (blank lines skipped).
fn mint_ndjson(
    minter: &Minter,
    hosts: &impl Hosts,
    body: &[u8],
    issued: u64,
) -> Result<Minted, Reply> {
    let mut out = Vec::with_capacity(body.len() * 2);
    let (mut minted, mut refused) = (0u64, 0u64);
    let mut url = String::new();
    for line in body.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if (minted + refused) as usize == MAX_LINKS {
            return Err(too_many());
        }
        let item = serde_json::from_slice::<Request<'_>>(line);
        if answer_item(minter, hosts, item, issued, &mut url, &mut out) {
            minted += 1;
        } else {
            refused += 1;
        }
        out.push(b'\n');
    }
    Ok((out, minted, refused))
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let reply = match path.as_str() {
            "/metrics" => Reply {
                content_type: Some("text/plain; version=0.0.4"),
                ..Reply::text(200, crate::metrics::render())
            },
            "/health" => Reply::health(),
            p if p.starts_with("/v1/") => self.api(session, p).await,
            _ => Reply::not_found(),
        };
        reply.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bEaReR abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bear"), None);
    }
}
