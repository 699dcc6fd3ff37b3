//! The routing decision for a public request, as a pure function of what arrived: method, path,
//! Host, the TLS connection's SNI name and whether it is one of the edge's own, and whether any
//! region is configured. No I/O: the link's signature is checked here (CPU only); recording,
//! shared-state look-ups and proxying are the caller's.
//!
//! | request | decision |
//! |---|---|
//! | `GET`/`HEAD /health` | 200 `{}` |
//! | `GET`/`HEAD /c/<token>` valid for the Host | record, 302 to the destination |
//! | `GET`/`HEAD /o/<token>` valid for the Host | record, 200 pixel |
//! | link over TLS without SNI, or whose SNI is one of the edge's own names | judged by its Host alone, as over plain HTTP |
//! | link over TLS whose Host is not the SNI name (a customer's) | 403 Invalid link security token |
//! | link minted for another Host | 403 Invalid link security token |
//! | link in a token format this edge does not know | proxied (the backends decode it) |
//! | link with a bad signature, or a click token on `/o/` | 404 |
//! | link or `/health` with another method | 405, `Allow: GET, HEAD` |
//! | `GET`/`HEAD /.well-known/acme-challenge/…` or `/.well-known/linkedge/verify/…` | from shared state |
//! | anything else | proxied to the Host's region; 404 when no region is configured |

use crate::host::normalize_host;
use crate::token::{Keyring, Kind, Link, TokenError};
use http::Method;

/// What the path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/health`.
    Health,
    /// `/c/<token>`: a tracked click.
    Click(&'a str),
    /// `/o/<token>`: an open pixel.
    Open(&'a str),
    /// One of the two `/.well-known/` paths answered from shared state.
    WellKnown,
    /// Anything else.
    Other,
}

/// The ACME HTTP-01 path prefix.
pub const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";
/// The prefix of `linkedge domain verify`'s Host check.
pub const VERIFY_NONCE: &str = "/.well-known/linkedge/verify/";

/// What `path` names.
pub fn target(path: &str) -> Target<'_> {
    if path == "/health" {
        Target::Health
    } else if let Some(t) = path.strip_prefix("/c/") {
        Target::Click(t)
    } else if let Some(t) = path.strip_prefix("/o/") {
        Target::Open(t)
    } else if path.starts_with(ACME_CHALLENGE) || path.starts_with(VERIFY_NONCE) {
        Target::WellKnown
    } else {
        Target::Other
    }
}

/// The facts of a request the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path, without the query.
    pub path: &'a str,
    /// The `Host` header (or HTTP/2 `:authority`) as sent.
    pub host: Option<&'a str>,
    /// The SNI name of the TLS connection, normalised; `None` on plain HTTP and without SNI.
    pub sni: Option<&'a str>,
    /// The connection's SNI is absent or one of the edge's own names (`tls.cert`'s, not a
    /// registered customer's; [`crate::tls::Handshake::own_name`]): how a proxy or CDN the
    /// customer runs in front connects, keeping the customer's Host. Such a request is judged
    /// by its Host alone, which the link's signature binds.
    pub own_name: bool,
    /// True when at least one region is configured to proxy to.
    pub proxying: bool,
}

/// Why a request is refused; [`super::reply::Reply::refusal`] turns it into the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: no Host, or not a host name.
    BadHost,
    /// 403: the link is genuine but not for this Host (or this connection's SNI name).
    HostMismatch,
    /// 404.
    NotFound,
    /// 405: only GET and HEAD.
    MethodNotAllowed,
    /// 421: no region serves this Host.
    Misdirected,
}

/// What the edge does with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// `/health`: 200 `{}`.
    Health,
    /// A valid link for `host`: record the event, then redirect (click) or send the pixel.
    Link {
        /// The normalised Host it arrived on.
        host: String,
        /// What the token carries.
        link: Link,
    },
    /// An ACME challenge or verification nonce: looked up in shared state.
    WellKnown,
    /// The Host's region answers. `failure` as for `Refuse` (a token in a format this edge
    /// does not know is counted, then proxied).
    Proxy {
        /// The token failure's metric label, if any.
        failure: Option<&'static str>,
    },
    /// Refused. `failure` is the token-failure reason, counted in metrics, when a link's token
    /// was at fault.
    Refuse {
        /// Why.
        refusal: Refusal,
        /// The token failure's metric label, if any.
        failure: Option<&'static str>,
    },
}

fn refuse(refusal: Refusal, failure: Option<&'static str>) -> Decision {
    Decision::Refuse { refusal, failure }
}

/// The decision for `req`, verifying links with `keyring`.
pub fn decide(req: &Request<'_>, keyring: &Keyring) -> Decision {
    let get_like = req.method == Method::GET || req.method == Method::HEAD;
    let fallthrough = || {
        if req.proxying {
            Decision::Proxy { failure: None }
        } else {
            refuse(Refusal::NotFound, None)
        }
    };
    let (want, token) = match target(req.path) {
        Target::Health if get_like => return Decision::Health,
        Target::Click(t) if get_like => (Kind::Click, t),
        Target::Open(t) if get_like => (Kind::Open, t),
        Target::Health | Target::Click(_) | Target::Open(_) => {
            return refuse(Refusal::MethodNotAllowed, None);
        }
        Target::WellKnown if get_like => return Decision::WellKnown,
        Target::WellKnown | Target::Other => return fallthrough(),
    };
    let Some(host) = req.host.and_then(normalize_host) else {
        return refuse(Refusal::BadHost, None);
    };
    // Over TLS, the Host must be the name the handshake was for (SNI): a request on one
    // customer's connection may not borrow another's Host. A connection to the edge's own name
    // belongs to no customer: the Host alone decides, as over plain HTTP.
    if !req.own_name && req.sni.is_some_and(|sni| sni != host) {
        return refuse(Refusal::HostMismatch, Some("sni_mismatch"));
    }
    match keyring.verify(&host, token) {
        Ok(link) if link.kind == want => Decision::Link { host, link },
        Ok(_) => refuse(Refusal::NotFound, Some(TokenError::Kind.reason())),
        Err(e @ TokenError::WrongHost) => refuse(Refusal::HostMismatch, Some(e.reason())),
        // A format this edge does not know (older or newer): the track backends decode it.
        Err(e @ TokenError::Version) if req.proxying => Decision::Proxy {
            failure: Some(e.reason()),
        },
        Err(e) => refuse(Refusal::NotFound, Some(e.reason())),
    }
}

/// A path fit for logs: a link token is replaced by its length, so logs never hold a whole
/// (replayable) token.
pub fn redact_path(path: &str) -> String {
    match target(path) {
        Target::Click(token) | Target::Open(token) => {
            format!("{}<token:{} chars>", &path[..3], token.len())
        }
        _ => path.chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Secret;

    const HOST: &str = "link.example.com";
    /// The edge's own name, as a customer's proxy in front connects to it.
    const OWN: &str = "track.linkedge.example";

    fn ring() -> Keyring {
        Keyring::new(vec![(1, Secret::new(vec![7; 32]).unwrap())], 1).unwrap()
    }

    fn mint(kind: Kind, host: &str) -> String {
        let link = Link {
            kind,
            key_id: 1,
            workspace: 3,
            message: 5,
            link: 8,
            issued: 1_700_000_000,
            url: if kind == Kind::Click {
                "https://shop.example/p?q=1".into()
            } else {
                String::new()
            },
            trap: false,
        };
        ring().mint(host, &link).unwrap()
    }

    /// (method, path, Host, SNI, proxying) → decision, for every row of the module's table.
    #[test]
    fn decision_table() {
        let click = mint(Kind::Click, HOST);
        let open = mint(Kind::Open, HOST);
        let other_host = mint(Kind::Click, "link.other.example");
        let c = format!("/c/{click}");
        let o = format!("/o/{open}");
        let c_on_o = format!("/o/{click}");
        let c_other = format!("/c/{other_host}");
        // The same token in a format version this edge does not know (its first byte).
        let future = reencoded(&click, |raw| raw[0] = 2);
        // The same token with its check (the 4 bytes before the MAC) changed: forged.
        let tampered = reencoded(&click, |raw| {
            let i = raw.len() - 17;
            raw[i] ^= 1;
        });
        let (get, head, post) = (Method::GET, Method::HEAD, Method::POST);
        let tls_other = Some("link.other.example");
        /// Method, path, Host, SNI (`OWN` is the edge's own name), proxying, the decision in
        /// words.
        type Row<'a> = (
            &'a Method,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            bool,
            &'a str,
        );
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            (&get,  "/health", None, None, false, "health"),
            (&head, "/health", Some(HOST), None, true, "health"),
            (&post, "/health", Some(HOST), None, true, "refuse MethodNotAllowed -"),
            (&get,  &c, Some(HOST), None, true, "link click"),
            (&head, &c, Some("Link.Example.COM:443"), None, false, "link click"),
            (&get,  &c, Some(HOST), Some(HOST), true, "link click"),
            (&get,  &o, Some(HOST), None, true, "link open"),
            (&post, &c, Some(HOST), None, true, "refuse MethodNotAllowed -"),
            (&get,  &c, None, None, true, "refuse BadHost -"),
            (&get,  &c, Some("a b"), None, true, "refuse BadHost -"),
            (&get,  &c, Some(HOST), tls_other, true, "refuse HostMismatch sni_mismatch"),
            (&get,  &c, Some(HOST), Some(OWN), true, "link click"),
            (&get,  &c_other, Some(HOST), Some(OWN), true, "refuse HostMismatch wrong_host"),
            (&get,  &c_other, Some(HOST), None, true, "refuse HostMismatch wrong_host"),
            (&get,  &c_on_o, Some(HOST), None, true, "refuse NotFound kind"),
            (&get,  &tampered, Some(HOST), None, true, "refuse NotFound bad_signature"),
            (&get,  &future, Some(HOST), None, true, "proxy version"),
            (&get,  &future, Some(HOST), None, false, "refuse NotFound version"),
            (&get,  "/.well-known/acme-challenge/tok", Some(HOST), None, true, "well-known"),
            (&head, "/.well-known/linkedge/verify/n", Some(HOST), None, false, "well-known"),
            (&post, "/.well-known/acme-challenge/tok", Some(HOST), None, true, "proxy -"),
            (&get,  "/.well-known/security.txt", Some(HOST), None, true, "proxy -"),
            (&get,  "/unsubscribe/x", Some(HOST), None, true, "proxy -"),
            (&post, "/webhook", None, None, true, "proxy -"),
            (&get,  "/unsubscribe/x", Some(HOST), None, false, "refuse NotFound -"),
        ];
        for (method, path, host, sni, proxying, want) in rows {
            let req = Request {
                method,
                path,
                host,
                sni,
                own_name: sni == Some(OWN),
                proxying,
            };
            let got = summary(&decide(&req, &ring()));
            assert_eq!(
                got,
                want,
                "{method} {} Host {host:?} SNI {sni:?} proxying {proxying}",
                redact_path(path)
            );
        }
    }

    /// Over TLS, a connection without SNI or to the edge's own name (a customer's proxy in
    /// front) is judged by its Host alone; one customer's connection may not carry another's
    /// Host.
    #[test]
    fn own_names_are_judged_by_host_alone() {
        let (get, path) = (Method::GET, format!("/c/{}", mint(Kind::Click, HOST)));
        let decide_for = |sni: Option<&str>, own_name: bool| {
            let req = Request {
                method: &get,
                path: &path,
                host: Some(HOST),
                sni,
                own_name,
                proxying: true,
            };
            summary(&decide(&req, &ring()))
        };
        assert_eq!(decide_for(None, true), "link click", "no SNI");
        assert_eq!(
            decide_for(Some(OWN), true),
            "link click",
            "the edge's own name"
        );
        assert_eq!(
            decide_for(Some("link.other.example"), false),
            "refuse HostMismatch sni_mismatch",
            "another customer's name"
        );
    }

    /// `/c/` and `token` with its decoded bytes changed by `f`.
    fn reencoded(token: &str, f: impl FnOnce(&mut Vec<u8>)) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut raw = b64.decode(token).unwrap();
        f(&mut raw);
        format!("/c/{}", b64.encode(raw))
    }

    /// A decision in a word or three, for the table.
    fn summary(d: &Decision) -> String {
        let f = |f: &Option<&str>| f.unwrap_or("-").to_string();
        match d {
            Decision::Health => "health".into(),
            Decision::Link { host, link } => {
                assert_eq!(host, HOST);
                format!("link {}", link.kind.event_type())
            }
            Decision::WellKnown => "well-known".into(),
            Decision::Proxy { failure } => format!("proxy {}", f(failure)),
            Decision::Refuse { refusal, failure } => format!("refuse {refusal:?} {}", f(failure)),
        }
    }

    #[test]
    fn logs_never_see_a_whole_token() {
        assert_eq!(redact_path("/c/AQEBAQEBsLuo2AYV"), "/c/<token:16 chars>");
        assert_eq!(redact_path("/o/abc"), "/o/<token:3 chars>");
        assert_eq!(redact_path("/health"), "/health");
    }
}
