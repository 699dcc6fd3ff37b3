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
/// Batches and rewrites worked on at once.
const MINT_JOBS: usize = 2;
/// Longest error text per refused link: a hostile item's echoed input is cut here.
const MAX_ITEM_ERROR: usize = 240;

/// The admin application.
pub struct Admin {
    token: Option<AdminToken>,
    control: Control,
    /// Minting for `POST /v1/links` and `/v1/rewrite`, hosts checked against the registry
    /// mirror.
    links: Option<(Arc<Minter>, Arc<Mirror>)>,
    /// Batches and rewrites minting at once (each on a blocking thread, not the runtime that
    /// answers `/health` and `/metrics`); more wait.
    jobs: Arc<tokio::sync::Semaphore>,
}

impl Admin {
    /// An admin app; with `token` `None` the `/v1/` API is off.
    pub fn new(token: Option<AdminToken>, control: Control) -> Admin {
        Admin {
            token,
            control,
            links: None,
            jobs: Arc::new(tokio::sync::Semaphore::new(MINT_JOBS)),
        }
    }

    /// Serves `POST /v1/links` with `minter`, hosts checked against `mirror` (no Redis command
    /// per link).
    pub fn with_links(mut self, minter: Minter, mirror: Arc<Mirror>) -> Admin {
        self.links = Some((Arc::new(minter), mirror));
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
    // curl sends `Expect: 100-continue` before a large body and waits for the go-ahead.
    let expects = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects && let Err(e) = session.write_continue_response().await {
        return Err(Reply::json_error(
            400,
            format!("cannot answer 100-continue: {e}"),
        ));
    }
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
        if let Some(rest) = path.strip_prefix("/v1/blocks") {
            return self.blocks(session, rest).await;
        }
        if path == "/v1/rewrite" {
            if method != Method::POST {
                return Reply::json_error(405, "use POST with the email part as the body");
            }
            return self.rewrite(session).await;
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
        // The permit first: at most MINT_JOBS bodies are held at once, each read within
        // BODY_DEADLINE.
        let Ok(_permit) = self.jobs.acquire().await else {
            return Reply::json_error(503, "shutting down; nothing was minted");
        };
        let body = match read_job_body(session, MAX_LINKS_BODY).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let issued = crate::time::unix_s() as u64;
        let (minter, mirror) = (minter.clone(), mirror.clone());
        let answer = tokio::task::spawn_blocking(move || {
            if ndjson {
                mint_ndjson(&minter, &*mirror, &body, issued)
            } else {
                mint_array(&minter, &*mirror, &body, issued)
            }
        })
        .await
        .unwrap_or_else(|e| Err(Reply::json_error(500, format!("minting failed: {e}"))));
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

/// The body of `DELETE /v1/blocks/<id>`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveBlock {
    /// Who removes it.
    removed_by: String,
}

fn block_failed(e: crate::blocks::BlockError) -> Reply {
    match e {
        crate::blocks::BlockError::Invalid(why) => Reply::json_error(400, why),
        crate::blocks::BlockError::NotFound(_) => Reply::json_error(404, e),
        crate::blocks::BlockError::Redis(detail) => {
            tracing::error!(error = %detail, "admin API: block list unavailable");
            Reply::json_error(
                503,
                "linkedge's shared state is unavailable; a change may or may not have been applied (list the rules to see); see the linkedge log",
            )
        }
    }
}

impl Admin {
    /// `/v1/blocks`: `GET` lists, `POST` adds; `/v1/blocks/<id>`: `GET` shows, `DELETE` (body
    /// `{"removed_by": ...}`) removes.
    async fn blocks(&self, session: &mut ServerSession, rest: &str) -> Reply {
        let method = session.req_header().method.clone();
        let b = self.control.blocks();
        let id = rest.strip_prefix('/').filter(|i| !i.is_empty());
        match (method, id) {
            (Method::GET, None) if rest.is_empty() || rest == "/" => match b.list().await {
                Ok(all) => ok(serde_json::json!({ "blocks": all })),
                Err(e) => block_failed(e),
            },
            (Method::POST, None) if rest.is_empty() || rest == "/" => {
                let body = match read_body(session).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                match crate::blocks::NewRule::from_json(&body) {
                    Ok(new) => b.add(new).await.map(ok).unwrap_or_else(block_failed),
                    Err(e) => Reply::json_error(
                        400,
                        format!(
                            "expected {{\"match\": \"url|prefix|host|subdomains|message|workspace|domain\", <its fields>, \"action\": \"block|warn\", \"reason\", \"added_by\", \"expires_ms\" (optional)}}: {e}; nothing changed"
                        ),
                    ),
                }
            }
            (Method::GET, Some(id)) => b.get(id).await.map(ok).unwrap_or_else(block_failed),
            (Method::DELETE, Some(id)) => {
                let body = match read_body(session).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                match serde_json::from_slice::<RemoveBlock>(&body) {
                    Ok(r) => b
                        .remove(id, &r.removed_by)
                        .await
                        .map(|rule| ok(serde_json::json!({ "removed": rule.id })))
                        .unwrap_or_else(block_failed),
                    Err(e) => Reply::json_error(
                        400,
                        format!("expected {{\"removed_by\": \"<who>\"}}: {e}; nothing changed"),
                    ),
                }
            }
            _ => Reply::json_error(
                405,
                "use GET or POST on /v1/blocks, GET or DELETE on /v1/blocks/<id>",
            ),
        }
    }
}

/// The query of `POST /v1/rewrite`: `host`, `workspace`, `message`, optional `text`, `pixel`
/// and `report` (`1`/`true` or `0`/`false`).
struct RewriteQuery {
    opts: crate::rewrite::Options,
    report: bool,
}

/// `v` with its `%XX` escapes (and `+` as a space) decoded; `None` when they are not UTF-8.
fn percent_decoded(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'%' => return None,
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn rewrite_query(query: &str) -> Result<RewriteQuery, String> {
    let (mut host, mut workspace, mut message) = (None, None, None);
    let (mut text, mut pixel, mut report) = (false, true, false);
    let flag = |k: &str, v: &str| match v {
        "1" | "true" | "" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(format!("{k}: expected 1 or 0, not {v:?}")),
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let id = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{k}: expected a number from 0 to 2^64-1, not {v:?}"))
        };
        match k {
            "host" => {
                host = Some(
                    percent_decoded(v)
                        .ok_or_else(|| format!("host: {v:?} is not valid percent-encoded UTF-8"))?,
                )
            }
            "workspace" => workspace = Some(id(v)?),
            "message" => message = Some(id(v)?),
            "text" => text = flag(k, v)?,
            "pixel" => pixel = flag(k, v)?,
            "report" => report = flag(k, v)?,
            _ => {
                return Err(format!(
                    "unknown parameter {k:?}: expected host, workspace, message, text, pixel, report"
                ));
            }
        }
    }
    let missing = |n: &str| {
        format!("missing {n}: POST /v1/rewrite?host=<domain>&workspace=<id>&message=<id>")
    };
    Ok(RewriteQuery {
        opts: crate::rewrite::Options {
            host: host.ok_or_else(|| missing("host"))?,
            workspace: workspace.ok_or_else(|| missing("workspace"))?,
            message: message.ok_or_else(|| missing("message"))?,
            pixel: pixel && !text,
            text,
            issued: crate::time::unix_s() as u64,
        },
        report,
    })
}

impl Admin {
    /// `POST /v1/rewrite`: the email part tracked; see [`crate::rewrite`].
    async fn rewrite(&self, session: &mut ServerSession) -> Reply {
        let Some((minter, mirror)) = &self.links else {
            return Reply::json_error(404, "rewriting is not served by this process");
        };
        let q = match rewrite_query(session.req_header().uri.query().unwrap_or("")) {
            Ok(q) => q,
            Err(e) => return Reply::json_error(400, e),
        };
        if !mirror.ready() {
            return Reply::json_error(
                503,
                "the domain registry has not been loaded from Redis yet; nothing was rewritten",
            );
        }
        let Ok(_permit) = self.jobs.acquire().await else {
            return Reply::json_error(503, "shutting down; nothing was rewritten");
        };
        let body = match read_job_body(session, crate::rewrite::MAX_DOCUMENT).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let (minter, mirror, opts) = (minter.clone(), mirror.clone(), q.opts.clone());
        let done = tokio::task::spawn_blocking(move || {
            crate::rewrite::rewrite(&minter, &*mirror, &opts, &body)
        })
        .await;
        let done = match done {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Reply::json_error(422, format!("{e}; nothing was rewritten")),
            Err(e) => return Reply::json_error(500, format!("rewriting failed: {e}")),
        };
        crate::metrics::links_minted(done.tracked() as u64, 0);
        if q.report {
            let mut v = serde_json::json!({
                "tracked": done.tracked(),
                "left_alone": done.report.len() - done.tracked(),
                "pixel": done.pixel,
                "report": done.report,
            });
            // Control characters would grow six-fold as JSON escapes: such a document, or one
            // not in UTF-8, comes base64-encoded instead.
            let plain = !done
                .document
                .iter()
                .any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'));
            match String::from_utf8(done.document) {
                Ok(doc) if plain => v["document"] = doc.into(),
                Ok(doc) => v["document_base64"] = base64_of(doc.as_bytes()).into(),
                Err(e) => v["document_base64"] = base64_of(e.as_bytes()).into(),
            }
            return Reply::json(200, &v);
        }
        Reply {
            content_type: Some(if q.opts.text {
                "text/plain; charset=utf-8"
            } else {
                "text/html"
            }),
            ..Reply::text(200, done.document)
        }
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// How long a batch or a document may take to arrive once its turn has come.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// A `POST /v1/links` or `/v1/rewrite` body: at most `max` bytes, within [`BODY_DEADLINE`].
async fn read_job_body(session: &mut ServerSession, max: usize) -> Result<Vec<u8>, Reply> {
    match tokio::time::timeout(BODY_DEADLINE, read_body_up_to(session, max)).await {
        Ok(r) => r,
        Err(_) => Err(Reply::json_error(
            408,
            format!(
                "the body did not arrive within {} s",
                BODY_DEADLINE.as_secs()
            ),
        )),
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
    let mut message = refused.1;
    if message.len() > MAX_ITEM_ERROR {
        let mut cut = MAX_ITEM_ERROR;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    let refused = (refused.0, message);
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

/// A JSON array of at most [`MAX_LINKS`] items, each left unparsed; `None` past that (the rest
/// not read: a long array of zeros costs no memory).
struct Bounded<'a>(Option<Vec<&'a serde_json::value::RawValue>>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Bounded<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Items;
        impl<'de> serde::de::Visitor<'de> for Items {
            type Value = Bounded<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<&'de serde_json::value::RawValue>()? {
                    if items.len() == MAX_LINKS {
                        // Stopping here ends the parse with an error the caller never sees.
                        return Err(serde::de::Error::custom(TOO_MANY));
                    }
                    items.push(item);
                }
                Ok(Bounded(Some(items)))
            }
        }
        match d.deserialize_seq(Items) {
            Err(e) if e.to_string().starts_with(TOO_MANY) => Ok(Bounded(None)),
            r => r,
        }
    }
}

/// The marker of an array cut at [`MAX_LINKS`].
const TOO_MANY: &str = "linkedge: too many links";

/// A JSON array of links: `{"minted":N,"refused":M,"links":[...]}`. A body that is not a JSON
/// array is refused whole; an item that is not a link is refused alone.
fn mint_array(
    minter: &Minter,
    hosts: &impl Hosts,
    body: &[u8],
    issued: u64,
) -> Result<Minted, Reply> {
    let bad = |e: serde_json::Error| {
        Reply::json_error(
            400,
            format!(
                "expected a JSON array of links ({{\"host\", \"url\", \"workspace\", \"message\", \"link\", \"kind\"}}), or NDJSON with Content-Type: application/x-ndjson: {e}; nothing was minted"
            ),
        )
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let items = match serde::Deserialize::deserialize(&mut de).map_err(bad)? {
        Bounded(Some(items)) => items,
        Bounded(None) => return Err(too_many()),
    };
    de.end().map_err(bad)?;
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
