//! The metrics and admin listener: `/metrics` (Prometheus text), `/health`, and the admin API
//! under `/v1/` (bearer token) that manages the domain registry. Bind it to a private address;
//! it is never served on the public listeners.
//!
//! ```sh
//! curl -s -X PUT -H "Authorization: Bearer $TOKEN" -d '{"workspace":7,"region":"us"}' \
//!   http://127.0.0.1:9090/v1/domains/link.example.com
//! ```

use crate::config::AdminToken;
use crate::domains::{Registry, RegistryError};
use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;

/// Largest admin request body read.
const MAX_BODY: usize = 64 << 10;

/// What the admin API manages and how `verify` checks and issues.
pub struct RegistryConfig {
    /// The domain registry.
    pub registry: Registry,
    /// How `verify` checks domains.
    pub verify: crate::config::Verify,
    /// With ACME and the store's sealer, `verify` orders the certificate at once.
    pub acme: Option<(crate::config::Acme, crate::certs::Sealer)>,
}

/// The admin application.
pub struct Admin {
    token: Option<AdminToken>,
    registry_config: RegistryConfig,
}

impl Admin {
    /// An admin app; with `token` `None` the `/v1/` API is off.
    pub fn new(token: Option<AdminToken>, registry_config: RegistryConfig) -> Admin {
        Admin {
            token,
            registry_config,
        }
    }
}

struct Answer {
    status: u16,
    ctype: &'static str,
    body: Vec<u8>,
}

fn json(status: u16, v: serde_json::Value) -> Answer {
    Answer {
        status,
        ctype: "application/json",
        body: v.to_string().into_bytes(),
    }
}

fn error(status: u16, msg: impl std::fmt::Display) -> Answer {
    json(status, serde_json::json!({ "error": msg.to_string() }))
}

fn registry_error(e: RegistryError) -> Answer {
    match e {
        RegistryError::Invalid(_) | RegistryError::UnknownRegion { .. } => error(400, e),
        RegistryError::Taken { .. } => error(409, e),
        RegistryError::NotFound(_) => error(404, e),
        RegistryError::Redis(_) | RegistryError::Damaged(_) => {
            tracing::error!(error = %e, "admin API: registry unavailable");
            error(
                503,
                "the domain registry is unavailable; see the linkedge log",
            )
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110, section 11.1).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDomain {
    workspace: u64,
    region: String,
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Answer> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return Err(error(413, "request body too large"));
                }
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(error(400, format!("cannot read the request body: {e}"))),
        }
    }
}

impl Admin {
    async fn api(&self, session: &mut ServerSession, path: &str) -> Answer {
        let Some(token) = &self.token else {
            return error(
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
            return error(401, "missing or wrong bearer token");
        }
        let method = session.req_header().method.clone();
        let rest = path.strip_prefix("/v1/domains").unwrap_or("\0");
        let registry = &self.registry_config.registry;
        if let (&Method::POST, Some(host)) = (
            &method,
            rest.strip_prefix('/')
                .and_then(|r| r.strip_suffix("/verify")),
        ) {
            let c = &self.registry_config;
            let acme = c.acme.as_ref().map(|(a, s)| (a, s.clone()));
            return match crate::verify::verify_and_issue(registry, &c.verify, acme, host).await {
                Ok(crate::verify::Verified::Verified) => {
                    json(200, serde_json::json!({ "host": host, "verified": true }))
                }
                Ok(crate::verify::Verified::Issued(info)) => json(
                    200,
                    serde_json::json!({ "host": host, "verified": true, "certificate": info }),
                ),
                Err(e @ crate::verify::VerifyError::NotRegistered(_)) => error(404, e),
                Err(e @ crate::verify::VerifyError::Unavailable(_)) => {
                    tracing::error!(host = %host, error = %e, "admin API: verify could not run");
                    error(
                        503,
                        "linkedge's shared state is unavailable; nothing was decided; see the linkedge log",
                    )
                }
                Err(why) => error(422, why),
            };
        }
        match (method, rest) {
            (Method::GET, "" | "/") => match registry.list().await {
                Ok(all) => json(200, serde_json::json!({ "domains": all })),
                Err(e) => registry_error(e),
            },
            (m, host) if host.len() > 1 && host.starts_with('/') => {
                let host = &host[1..];
                match m {
                    Method::GET => match registry.get(host).await {
                        Ok(Some(d)) => json(200, serde_json::to_value(d).expect("serializes")),
                        Ok(None) => error(404, format!("{host} is not registered")),
                        Err(e) => registry_error(e),
                    },
                    Method::PUT => {
                        let body = match read_body(session).await {
                            Ok(b) => b,
                            Err(a) => return a,
                        };
                        let add: AddDomain = match serde_json::from_slice(&body) {
                            Ok(a) => a,
                            Err(e) => {
                                return error(
                                    400,
                                    format!(
                                        "expected {{\"workspace\": <number>, \"region\": \"us\"}}: {e}"
                                    ),
                                );
                            }
                        };
                        match registry.add(host, add.workspace, &add.region).await {
                            Ok(d) => json(200, serde_json::to_value(d).expect("serializes")),
                            Err(e) => registry_error(e),
                        }
                    }
                    Method::DELETE => match registry.remove(host).await {
                        Ok(()) => json(200, serde_json::json!({ "removed": host })),
                        Err(e) => registry_error(e),
                    },
                    _ => error(405, "use GET, PUT or DELETE"),
                }
            }
            _ => error(404, "no such admin endpoint; see /v1/domains"),
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let a = match path.as_str() {
            "/metrics" => Answer {
                status: 200,
                ctype: "text/plain; version=0.0.4",
                body: crate::metrics::render(),
            },
            "/health" => json(200, serde_json::json!({})),
            p if p.starts_with("/v1/") => self.api(session, p).await,
            _ => Answer {
                status: 404,
                ctype: "text/plain",
                body: b"Not Found\n".to_vec(),
            },
        };
        Response::builder()
            .status(a.status)
            .header("Content-Type", a.ctype)
            .header("Content-Length", a.body.len())
            .body(a.body)
            .expect("static response parts are valid")
    }
}
