//! Minting tracked links: the one call behind `link mint`, `link pixel`, `POST /v1/links` and
//! the email rewriter. [`Minter::mint_into`] checks the host against the registry (a retired
//! domain is refused naming its successor; an unregistered one is refused where the caller
//! says so), validates the destination as the edge will when it redirects, and appends
//! `<scheme>://<host>/<c|o>/<token>`.
//!
//! Pure: the registry is whatever implements [`Hosts`] (the in-memory mirror for the batch API,
//! one domain read from Redis for the command line). Measured in `benches/token.rs`.

use crate::host::normalize_host;
use crate::registry::{Domain, Mirror, State};
use crate::token::{Draft, Keyring, Kind, MAX_URL_LEN, MintError};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// What a link is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// A click: redirects to its destination.
    #[default]
    Click,
    /// An open pixel: carries no destination.
    Open,
    /// A click hidden in the email, which no person follows (README, "Machine clicks").
    Trap,
}

/// One link to mint, as the batch API reads it (`{host, url, workspace, message, link, kind}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request<'a> {
    /// The branded tracking domain, e.g. `link.example.com`.
    #[serde(borrow)]
    pub host: Cow<'a, str>,
    /// The destination (clicks and traps); absent for an open pixel.
    #[serde(borrow, default)]
    pub url: Option<Cow<'a, str>>,
    /// Workspace id.
    pub workspace: u64,
    /// Message (delivery) id.
    pub message: u64,
    /// Link id within the message (default 0).
    #[serde(default)]
    pub link: u64,
    /// `click` (default), `open` or `trap`.
    #[serde(default)]
    pub kind: LinkKind,
}

/// What the registry says of a host, as far as minting is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Registered and taking new links.
    Active,
    /// Retired by `domain move`; new links go on the named domain (when known).
    Retired {
        /// The successor, when the registry's answer named it.
        to: Option<String>,
    },
    /// The registry does not know it.
    Unregistered,
    /// The registry could not be asked (the command line without Redis): not checked.
    Unchecked,
}

/// Where minting learns a host's [`Standing`].
pub trait Hosts {
    /// The standing of `host` (normalised).
    fn standing(&self, host: &str) -> Standing;
}

impl Hosts for Mirror {
    fn standing(&self, host: &str) -> Standing {
        match self.get(host) {
            Some(e) if e.state == State::Retired => Standing::Retired { to: None },
            Some(_) => Standing::Active,
            None => Standing::Unregistered,
        }
    }
}

/// One domain as read from the registry (`None`: not registered), for a single mint.
impl Hosts for Option<Domain> {
    fn standing(&self, _host: &str) -> Standing {
        match self {
            Some(d) if d.state == State::Retired => Standing::Retired {
                to: d.moved_to.clone(),
            },
            Some(_) => Standing::Active,
            None => Standing::Unregistered,
        }
    }
}

/// A host whose standing was not looked up.
impl Hosts for Standing {
    fn standing(&self, _host: &str) -> Standing {
        self.clone()
    }
}

/// Why a link was not minted. `code()` is stable, for programs; the text is for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not a host name.
    #[error("host {0:?} is not a host name such as link.example.com")]
    BadHost(String),
    /// Not in the registry, where the caller requires it.
    #[error(
        "{0} is not registered: add it with `linkedge domain add` (the registry decides its region and its certificate)"
    )]
    Unregistered(String),
    /// Retired by `domain move`.
    #[error("{host} is retired: new links go on {}", to.as_deref().unwrap_or("the domain it moved to (linkedge domain show)"))]
    Retired {
        /// The retired host.
        host: String,
        /// Its successor, when known.
        to: Option<String>,
    },
    /// A click without a destination.
    #[error("a click needs url, an absolute http:// or https:// URL")]
    MissingUrl,
    /// An open pixel with a destination.
    #[error("an open pixel carries no destination: leave url out")]
    UrlOnOpen,
    /// A destination the edge would not redirect to.
    #[error(
        "url: must be an absolute http:// or https:// URL with a host, without spaces or control characters, at most {MAX_URL_LEN} bytes"
    )]
    BadUrl,
}

impl Refused {
    /// A short fixed label: `bad_host`, `unregistered_host`, `retired_host`, `missing_url`,
    /// `url_on_open`, `bad_url`.
    pub fn code(&self) -> &'static str {
        match self {
            Refused::BadHost(_) => "bad_host",
            Refused::Unregistered(_) => "unregistered_host",
            Refused::Retired { .. } => "retired_host",
            Refused::MissingUrl => "missing_url",
            Refused::UrlOnOpen => "url_on_open",
            Refused::BadUrl => "bad_url",
        }
    }
}

/// `raw` as a link's host: lowercase, no trailing dot, an internationalised name in punycode;
/// a port or anything that is not a host name is refused (naming at most 64 characters of it).
fn host_of(raw: &str) -> Result<String, Refused> {
    let bad = || {
        let mut shown: String = raw.chars().take(64).collect();
        if shown.len() < raw.len() {
            shown.push('…');
        }
        Refused::BadHost(shown)
    };
    let bracketed = raw.starts_with('[');
    if (raw.contains(':') && !bracketed) || (bracketed && !raw.ends_with(']')) {
        return Err(bad());
    }
    if raw.is_ascii() {
        normalize_host(raw).ok_or_else(bad)
    } else {
        crate::host::normalize_domain(raw).map_err(|_| bad())
    }
}

/// Whether a host the registry does not know may get links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unregistered {
    /// Minted (the command line: development, the demo, names in `routing.domains`).
    Allow,
    /// Refused (the batch API: the sending pipeline's links must be servable).
    Refuse,
}

/// Mints tracked URLs with a keyring; see the module documentation.
#[derive(Debug, Clone)]
pub struct Minter {
    keyring: Keyring,
    scheme: String,
    unregistered: Unregistered,
}

impl Minter {
    /// A minter signing with `keyring`'s minting key, printing `scheme://` URLs.
    pub fn new(keyring: Keyring, scheme: &str, unregistered: Unregistered) -> Minter {
        Minter {
            keyring,
            scheme: scheme.to_owned(),
            unregistered,
        }
    }

    /// The keyring it signs with.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Mints `req` as issued at `issued` (Unix seconds) and appends its URL to `out`; nothing is
    /// appended when it is refused.
    pub fn mint_into(
        &self,
        hosts: &impl Hosts,
        req: &Request<'_>,
        issued: u64,
        out: &mut String,
    ) -> Result<(), Refused> {
        let host: Cow<'_, str> = if crate::host::is_normalized(&req.host) {
            Cow::Borrowed(&req.host)
        } else {
            Cow::Owned(host_of(&req.host)?)
        };
        match hosts.standing(&host) {
            Standing::Active | Standing::Unchecked => {}
            Standing::Unregistered if self.unregistered == Unregistered::Allow => {}
            Standing::Unregistered => return Err(Refused::Unregistered(host.into_owned())),
            Standing::Retired { to } => {
                return Err(Refused::Retired {
                    host: host.into_owned(),
                    to,
                });
            }
        }
        let (kind, trap, url) = match (req.kind, req.url.as_deref()) {
            (LinkKind::Open, None | Some("")) => (Kind::Open, false, ""),
            (LinkKind::Open, Some(_)) => return Err(Refused::UrlOnOpen),
            (_, None) => return Err(Refused::MissingUrl),
            (k, Some(url)) => (Kind::Click, k == LinkKind::Trap, url),
        };
        let draft = Draft {
            kind,
            trap,
            workspace: req.workspace,
            message: req.message,
            link: req.link,
            issued,
            url,
        };
        let start = out.len();
        out.push_str(&self.scheme);
        out.push_str("://");
        out.push_str(&host);
        out.push('/');
        out.push_str(kind.path_segment());
        out.push('/');
        match self.keyring.mint_into(&host, &draft, out) {
            Ok(()) => Ok(()),
            Err(e) => {
                out.truncate(start);
                Err(match e {
                    MintError::BadHost => Refused::BadHost(host.into_owned()),
                    MintError::BadUrl => Refused::BadUrl,
                    // Excluded above: only a click becomes a trap.
                    MintError::TrapNotClick => Refused::UrlOnOpen,
                })
            }
        }
    }

    /// [`Minter::mint_into`] into a new string.
    pub fn mint(
        &self,
        hosts: &impl Hosts,
        req: &Request<'_>,
        issued: u64,
    ) -> Result<String, Refused> {
        let mut out = String::with_capacity(64 + req.url.as_deref().map_or(0, str::len) * 4 / 3);
        self.mint_into(hosts, req, issued, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Secret;

    fn minter(unregistered: Unregistered) -> Minter {
        let ring = Keyring::new(vec![(1, Secret::new(vec![7; 32]).unwrap())], 1).unwrap();
        Minter::new(ring, "https", unregistered)
    }

    fn req<'a>(host: &'a str, kind: LinkKind, url: Option<&'a str>) -> Request<'a> {
        Request {
            host: host.into(),
            url: url.map(Cow::Borrowed),
            workspace: 7,
            message: 9,
            link: 3,
            kind,
        }
    }

    #[test]
    fn mints_each_kind_and_the_edge_verifies_it() {
        let m = minter(Unregistered::Refuse);
        for (kind, url, seg) in [
            (LinkKind::Click, Some("https://example.com/?a=1&b=2#f"), "c"),
            (LinkKind::Trap, Some("https://example.com/hidden"), "c"),
            (LinkKind::Open, None, "o"),
        ] {
            let out = m
                .mint(
                    &Standing::Active,
                    &req("Link.Example.com", kind, url),
                    1_700_000_000,
                )
                .unwrap();
            let prefix = format!("https://link.example.com/{seg}/");
            let token = out.strip_prefix(&prefix).expect(&out);
            let link = m.keyring().verify("link.example.com", token).unwrap();
            assert_eq!(link.url, url.unwrap_or(""));
            assert_eq!(link.trap, kind == LinkKind::Trap);
            assert_eq!(
                (link.workspace, link.message, link.link, link.issued),
                (7, 9, 3, 1_700_000_000)
            );
        }
    }

    #[test]
    fn refusals_name_the_problem_and_append_nothing() {
        let m = minter(Unregistered::Refuse);
        let mut out = String::from("kept");
        let cases: [(Standing, Request<'_>, &str); 7] = [
            (
                Standing::Active,
                req("not a host", LinkKind::Click, Some("https://e.com/")),
                "bad_host",
            ),
            (
                Standing::Unregistered,
                req("l.example.com", LinkKind::Click, Some("https://e.com/")),
                "unregistered_host",
            ),
            (
                Standing::Retired {
                    to: Some("l.example.net".into()),
                },
                req("l.example.com", LinkKind::Click, Some("https://e.com/")),
                "retired_host",
            ),
            (
                Standing::Active,
                req("l.example.com", LinkKind::Click, None),
                "missing_url",
            ),
            (
                Standing::Active,
                req("l.example.com", LinkKind::Open, Some("https://e.com/")),
                "url_on_open",
            ),
            (
                Standing::Active,
                req(
                    "l.example.com",
                    LinkKind::Click,
                    Some("javascript:alert(1)"),
                ),
                "bad_url",
            ),
            (
                Standing::Active,
                req("l.example.com", LinkKind::Trap, Some("https://e.com/a b")),
                "bad_url",
            ),
        ];
        for (standing, r, code) in cases {
            let e = m.mint_into(&standing, &r, 1, &mut out).unwrap_err();
            assert_eq!(e.code(), code, "{e}");
            assert_eq!(out, "kept");
        }
        let e = m
            .mint(
                &Standing::Retired {
                    to: Some("l.example.net".into()),
                },
                &req("l.example.com", LinkKind::Click, Some("https://e.com/")),
                1,
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "l.example.com is retired: new links go on l.example.net"
        );
        let long = format!("https://e.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(
            m.mint(
                &Standing::Active,
                &req("l.example.com", LinkKind::Click, Some(&long)),
                1
            ),
            Err(Refused::BadUrl)
        );
    }

    #[test]
    fn hosts_are_normalised_ports_refused_and_echoes_cut() {
        let m = minter(Unregistered::Refuse);
        let click = |h: &str| {
            m.mint(
                &Standing::Active,
                &req(h, LinkKind::Click, Some("https://e.com/")),
                1,
            )
        };
        assert!(
            click("Link.Example.COM.")
                .unwrap()
                .starts_with("https://link.example.com/c/")
        );
        assert!(
            click("bücher.example")
                .unwrap()
                .starts_with("https://xn--bcher-kva.example/c/")
        );
        assert!(
            click("[2001:db8::1]")
                .unwrap()
                .starts_with("https://[2001:db8::1]/c/")
        );
        assert_eq!(
            click("link.example.com:8443").unwrap_err().code(),
            "bad_host"
        );
        let e = click(&"\u{7f}".repeat(100_000)).unwrap_err();
        assert!(e.to_string().len() < 600, "{} bytes", e.to_string().len());
    }

    #[test]
    fn the_command_line_mints_on_unregistered_hosts() {
        let m = minter(Unregistered::Allow);
        let r = req("localhost", LinkKind::Click, Some("https://e.com/"));
        assert!(
            m.mint(&Standing::Unregistered, &r, 1)
                .unwrap()
                .starts_with("https://localhost/c/")
        );
        assert!(m.mint(&Standing::Unchecked, &r, 1).is_ok());
    }

    #[test]
    fn requests_read_from_json_borrow_and_default() {
        let r: Request<'_> = serde_json::from_str(
            r#"{"host":"l.example.com","url":"https://e.com/","workspace":1,"message":2}"#,
        )
        .unwrap();
        assert!(matches!(r.host, Cow::Borrowed(_)));
        assert_eq!((r.link, r.kind), (0, LinkKind::Click));
        for bad in [
            r#"{"host":"l.example.com","workspace":-1,"message":2}"#,
            r#"{"host":"l.example.com","workspace":18446744073709551616,"message":2}"#,
            r#"{"host":"l.example.com","workspace":1}"#,
            r#"{"host":"l.example.com","workspace":1,"message":2,"kind":"bounce"}"#,
            r#"{"host":"l.example.com","workspace":1,"message":2,"extra":1}"#,
        ] {
            assert!(serde_json::from_str::<Request<'_>>(bad).is_err(), "{bad}");
        }
    }
}
