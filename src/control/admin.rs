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
use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;

/// Largest admin request body read.
const MAX_BODY: usize = 64 << 10;

/// The admin application.
pub struct Admin {
    token: Option<AdminToken>,
    control: Control,
}

impl Admin {
    /// An admin app; with `token` `None` the `/v1/` API is off.
    pub fn new(token: Option<AdminToken>, control: Control) -> Admin {
        Admin { token, control }
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
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return Err(Reply::json_error(413, "request body too large"));
                }
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
