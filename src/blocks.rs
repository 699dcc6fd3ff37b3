//! The block list: rules an abuse team adds to stop bad links on every node within a second,
//! without a deploy. A rule names a destination (an exact URL, a URL prefix, a host, or a host
//! and all its subdomains), a message, a whole workspace, or a branded domain; its action is
//! `block` (the click gets a "link disabled" page, 410) or `warn` (a page naming the
//! destination, with a link to continue).
//!
//! Rules live in Redis (`<prefix>blocks`, one JSON record per id); every change is announced on
//! `<prefix>blocks:changed` and written to the audit stream `<prefix>blocks:audit`. Every node
//! holds all rules in memory ([`BlockList`]), followed like the registry mirror
//! ([`crate::store::follow`]): loaded at start, kept current by the change feed, re-synced
//! periodically, kept as they were while Redis is away. A click is checked in memory only: hash
//! look-ups for the link's domain, workspace, message, the destination's exact URL and host, one
//! per label for host suffixes, and one per distinct prefix length for prefixes under the
//! destination's host; with no rule loaded, one atomic load.

use crate::store::Db;
use crate::store::follow::Followed;
use async_trait::async_trait;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// What a rule does to a click it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A page saying the link was disabled, status 410; no redirect.
    Block,
    /// A page naming the destination, with a link the person must click to continue.
    Warn,
}

impl Action {
    /// The action's name, as stored and in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Warn => "warn",
        }
    }
}

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "match", rename_all = "snake_case")]
pub enum Target {
    /// Exactly this destination.
    Url {
        /// The absolute http(s) URL.
        url: String,
    },
    /// Every destination starting with this (scheme and host included).
    Prefix {
        /// `http(s)://host/...`.
        prefix: String,
    },
    /// Every destination on exactly this host.
    Host {
        /// The destination's host.
        host: String,
    },
    /// Every destination on this host and its subdomains.
    Subdomains {
        /// The parent host.
        host: String,
    },
    /// Every link of one message.
    Message {
        /// Its workspace.
        workspace: u64,
        /// The message (delivery) id.
        message: u64,
    },
    /// Every link of a workspace.
    Workspace {
        /// The workspace id.
        workspace: u64,
    },
    /// Every link on one branded tracking domain.
    Domain {
        /// The tracking domain.
        domain: String,
    },
}

/// A rule as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Its id (`b` and 16 hex digits).
    pub id: String,
    /// What it matches.
    #[serde(flatten)]
    pub target: Target,
    /// What it does.
    pub action: Action,
    /// Why, in words.
    pub reason: String,
    /// Who added it.
    pub added_by: String,
    /// Unix milliseconds when added.
    pub created_ms: u64,
    /// Unix milliseconds after which it no longer applies; none: until removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

impl Rule {
    fn live(&self, now_ms: u64) -> bool {
        self.expires_ms.is_none_or(|e| e > now_ms)
    }
}

/// A rule to add, as the command line and `POST /v1/blocks` take it.
#[derive(Debug, Clone, Deserialize)]
pub struct NewRule {
    /// What it matches.
    #[serde(flatten)]
    pub target: Target,
    /// What it does.
    pub action: Action,
    /// Why, in words (required).
    pub reason: String,
    /// Who adds it (required).
    pub added_by: String,
    /// Unix milliseconds after which it no longer applies.
    #[serde(default)]
    pub expires_ms: Option<u64>,
}

/// Why a rule was refused or a change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Bad input; nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// No such rule.
    #[error("no block rule {0}")]
    NotFound(String),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

fn invalid(why: impl Into<String>) -> BlockError {
    BlockError::Invalid(why.into())
}

/// True when `host` is already canonical as written, by one scan: lowercase ASCII letters,
/// digits, `-` and `_` in labels that are not empty and do not start `xn--` (punycode, which
/// the parser checks), at most 253 bytes, and not a number the URL standard would read as an
/// IPv4 address unless written as one.
fn fast_host(host: &[u8]) -> bool {
    if host.len() > 253 {
        return false;
    }
    let mut label_start = 0;
    for (i, &b) in host.iter().enumerate() {
        if b == b'.' {
            if i == label_start {
                return false;
            }
            label_start = i + 1;
        } else if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            || (i == label_start + 3 && b == b'-' && host[label_start..i] == *b"xn-")
        {
            return false;
        }
    }
    // Not empty, no empty last label (a trailing dot), and a last label starting with a
    // letter (the usual case) or an IPv4 address as the standard writes it.
    label_start < host.len()
        && (!host[label_start].is_ascii_digit()
            || std::str::from_utf8(host).is_ok_and(|h| !ends_in_number(h) || dotted_quad(h)))
}

/// True when `host` (lowercase ASCII letters, digits, `.`, `-`, `_`) is one the URL standard
/// would read as an IPv4 address: its last label is a number (decimal, octal or hex).
fn ends_in_number(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or("");
    last.bytes().all(|b| b.is_ascii_digit())
        || (last.starts_with("0x") && last[2..].bytes().all(|b| b.is_ascii_hexdigit()))
}

/// True when `host` is an IPv4 address written as the URL standard writes it: four decimal
/// numbers up to 255, no leading zeros.
fn dotted_quad(host: &str) -> bool {
    let mut parts = 0;
    for p in host.split('.') {
        parts += 1;
        if p.is_empty()
            || p.len() > 3
            || (p.len() > 1 && p.starts_with('0'))
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.parse::<u16>().map_or(true, |v| v > 255)
        {
            return false;
        }
    }
    parts == 4
}

/// A host as the URL standard parses it (what a browser connects to), without a trailing
/// dot; IPv6 in brackets.
fn parsed_host(url: &url::Url) -> Option<String> {
    Some(match url.host()? {
        // An empty label (`a..b`, `a..`) is no name DNS resolves.
        url::Host::Domain(d) => {
            let d = d.strip_suffix('.').unwrap_or(d);
            if d.split('.').any(str::is_empty) {
                return None;
            }
            d.to_string()
        }
        url::Host::Ipv4(a) => a.to_string(),
        // An IPv4 address written as IPv6 (`[::ffff:1.2.3.4]`) reaches that IPv4 address.
        url::Host::Ipv6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("[{a}]"),
        },
    })
    .filter(|h| !h.is_empty())
}

/// `host` as matching compares it: what a browser would connect to (the URL standard's host
/// parser: lowercase, percent-decoded, internationalised names in punycode, IPv4 written any
/// way as four decimal numbers, IPv6 compressed), without a trailing dot. Borrowed (one scan)
/// for the usual lowercase ASCII name. `None` when it is not a host.
fn canonical_host(host: &str) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    if host.is_empty() || host.len() > 254 {
        return None;
    }
    if fast_host(host.as_bytes()) {
        return Some(Cow::Borrowed(host));
    }
    if host.contains(['/', '?', '#', '@', '\\']) {
        return None;
    }
    let parsed = url::Url::parse(&format!("http://{host}/")).ok()?;
    parsed_host(&parsed)
        .filter(|h| h.len() <= 253)
        .map(Cow::Owned)
}

/// Whether `b` may stand as it is in a canonical path (`query` false) or query: printable
/// ASCII the URL standard's serialisation leaves alone there, and not `%` (see
/// [`canonical_tail`]) or, in a path, `\\` (read as `/`).
const fn plain(b: u8, query: bool) -> bool {
    b > 0x20
        && b < 0x7f
        && !matches!(b, b'"' | b'#' | b'<' | b'>' | b'%')
        && if query {
            b != b'\''
        } else {
            !matches!(b, b'`' | b'{' | b'}' | b'\\')
        }
}

/// [`plain`] as tables: path, query.
static PLAIN: [[bool; 256]; 2] = {
    let mut t = [[false; 256]; 2];
    let mut i = 0;
    while i < 256 {
        t[0][i] = plain(i as u8, false);
        t[1][i] = plain(i as u8, true);
        i += 1;
    }
    t
};

/// Whether the byte `%XX` stands for is one URLs need not encode (RFC 3986's unreserved).
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// True when `tail` (path and query, no fragment) is already canonical: only [`plain`] bytes,
/// `%XX` escapes with upper-case digits of bytes that need them, and no dot segment in the
/// path.
fn canonical_tail(tail: &[u8]) -> bool {
    let mut part = 0; // 0: the path, 1: the query
    let mut i = 0;
    while i < tail.len() {
        let b = tail[i];
        if part == 0 && b == b'?' {
            part = 1;
            i += 1;
        } else if PLAIN[part][b as usize] {
            if part == 0 && b == b'/' {
                // A `.` or `..` segment.
                let seg = &tail[i + 1..];
                let dots = seg.iter().take_while(|&&c| c == b'.').count();
                if (dots == 1 || dots == 2) && matches!(seg.get(dots), None | Some(b'/' | b'?')) {
                    return false;
                }
            }
            i += 1;
        } else if b == b'%' {
            match tail.get(i + 1..i + 3) {
                Some(&[h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                    let upper = |d: u8| !d.is_ascii_lowercase();
                    let v = (h as char).to_digit(16).unwrap_or(0) * 16
                        + (l as char).to_digit(16).unwrap_or(0);
                    if !upper(h) || !upper(l) || unreserved(v as u8) {
                        return false;
                    }
                    i += 3;
                }
                // A `%` that starts no escape: canonical as `%25`.
                _ => return false,
            }
        } else {
            return false;
        }
    }
    true
}

/// `s` with each `%XX` of an unreserved byte decoded, every other escape's digits in upper
/// case, and a `%` that starts no escape as `%25`: the same resource to any server, written
/// one way.
fn normalize_escapes(s: &str, out: &mut String) {
    let b = s.as_bytes();
    let mut i = 0;
    let mut plain_from = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push_str(&s[plain_from..i]);
            if unreserved(v) {
                out.push(v as char);
            } else {
                out.push('%');
                out.push_str(&s[i + 1..i + 3].to_ascii_uppercase());
            }
            i += 3;
            plain_from = i;
        } else if b[i] == b'%' {
            // A `%` that starts no escape stands for itself: written as its escape, so that
            // what follows cannot form one once decoded.
            out.push_str(&s[plain_from..i]);
            out.push_str("%25");
            i += 1;
            plain_from = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[plain_from..]);
}

/// A destination split as matching compares it: its canonical host ([`canonical_host`]),
/// and the URL as a browser would request it (the URL standard's serialisation: scheme and
/// host lowercased, user info, a default port, a trailing dot and the fragment dropped, an
/// empty path as `/`, dot segments resolved, characters a browser escapes escaped), with
/// escapes of unreserved characters decoded and the rest in upper case. Borrowed, after one
/// scan, when the URL is already so written, as minted links almost always are.
fn canonical_url(url: &str) -> Option<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> {
    use std::borrow::Cow;
    if let Some((host, end)) = canonical_authority(url)
        && canonical_tail(&url.as_bytes()[end..])
    {
        return Some((Cow::Borrowed(host), Cow::Borrowed(url)));
    }
    canonical_url_parsed(url)
}

/// When `url`'s scheme and authority are already canonical (a lowercase `http://` or
/// `https://`, a [`fast_host`], no user info, no default or malformed port, and a path next):
/// its host, and where its path starts. The host is then the canonical one whatever the path
/// and query hold, so a click checks host rules without reading them.
fn canonical_authority(url: &str) -> Option<(&str, usize)> {
    // Byte searches only: this runs on every click while rules exist.
    let b = url.as_bytes();
    let after = if b.starts_with(b"https://") {
        8
    } else if b.starts_with(b"http://") {
        7
    } else {
        return None;
    };
    let end = memchr::memchr3(b'/', b'?', b'#', &b[after..]).map_or(b.len(), |i| after + i);
    let authority = &url[after..end];
    // Hosts are short: a plain loop beats a vectorised search's set-up.
    let (host, port) = match authority.bytes().rposition(|c| c == b':') {
        Some(i) => (&authority[..i], Some(&authority[i + 1..])),
        None => (authority, None),
    };
    let default = if after == 8 { "443" } else { "80" };
    let fast = b.get(end) == Some(&b'/')
        && port.is_none_or(|p| {
            !p.is_empty()
                && p != default
                && (!p.starts_with('0') || p == "0")
                && p.len() <= 5
                && p.bytes().all(|d| d.is_ascii_digit())
                && p.parse::<u16>().is_ok()
        })
        && fast_host(host.as_bytes());
    fast.then_some((host, end))
}

/// [`canonical_url`] by the URL standard's parser: URLs not already canonical.
fn canonical_url_parsed(
    url: &str,
) -> Option<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> {
    use std::borrow::Cow;
    let parsed = url::Url::parse(url).ok()?;
    let scheme = parsed.scheme();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = parsed_host(&parsed)?;
    let mut out = String::with_capacity(url.len() + 8);
    out.push_str(scheme);
    out.push_str("://");
    out.push_str(&host);
    if let Some(p) = parsed.port() {
        out.push(':');
        out.push_str(&p.to_string());
    }
    normalize_escapes(parsed.path(), &mut out);
    if let Some(q) = parsed.query() {
        out.push('?');
        normalize_escapes(q, &mut out);
    }
    Some((Cow::Owned(host), Cow::Owned(out)))
}

/// What URL and prefix rules are indexed and looked up by: a canonical URL without its
/// scheme (`//host/path?query`), so that a rule written for `https://` also stops the same
/// destination over `http://` (which the site usually redirects to `https://`).
fn url_key(canonical: &str) -> &str {
    canonical
        .strip_prefix("https:")
        .or_else(|| canonical.strip_prefix("http:"))
        .unwrap_or(canonical)
}

/// `url`'s canonical form ([`canonical_url`]), owned; `None` when it is not `http(s)://` with
/// a host.
fn normal_url(url: &str) -> Option<String> {
    canonical_url(url).map(|(_, u)| u.into_owned())
}

/// The canonical host of a destination ([`canonical_url`]).
fn dest_host(url: &str) -> Option<std::borrow::Cow<'_, str>> {
    canonical_url(url).map(|(h, _)| h)
}

fn host_name(field: &str, host: &str) -> Result<String, BlockError> {
    let h = host.trim();
    if h.is_empty() || h.contains('*') {
        return Err(invalid(format!(
            "{field}: {host:?} is not a host name (for a host and all its subdomains, use the subdomains rule)"
        )));
    }
    let bad = || invalid(format!("{field}: {host:?} is not a host name"));
    let canon = canonical_host(h).ok_or_else(bad)?;
    crate::host::normalize_host(&canon).ok_or_else(bad)
}

impl NewRule {
    /// A rule from the admin API's JSON; a field its kind of rule does not have is refused
    /// (serde cannot deny unknown fields beside a flattened enum).
    pub fn from_json(body: &[u8]) -> Result<NewRule, String> {
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let obj = v.as_object().ok_or("expected a JSON object")?;
        let own: &[&str] = match obj.get("match").and_then(|m| m.as_str()) {
            Some("url") => &["url"],
            Some("prefix") => &["prefix"],
            Some("host" | "subdomains") => &["host"],
            Some("message") => &["workspace", "message"],
            Some("workspace") => &["workspace"],
            Some("domain") => &["domain"],
            _ => &[],
        };
        let common = ["match", "action", "reason", "added_by", "expires_ms"];
        if let Some(k) = obj
            .keys()
            .find(|k| !common.contains(&k.as_str()) && !own.contains(&k.as_str()))
        {
            return Err(format!("unknown field {k:?} for this kind of rule"));
        }
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    /// The rule, checked and normalised, with `id` and `now_ms`; bad input is refused with
    /// the reason.
    pub fn checked(self, id: String, now_ms: u64) -> Result<Rule, BlockError> {
        let target = match self.target {
            Target::Url { url } => {
                if !crate::token::valid_destination(&url) {
                    return Err(invalid(format!(
                        "url: {url:?} is not an absolute http:// or https:// URL without spaces"
                    )));
                }
                Target::Url {
                    url: normal_url(&url).ok_or_else(|| {
                        invalid(format!("url: {url:?} has no host a browser could reach"))
                    })?,
                }
            }
            Target::Prefix { prefix } => {
                let refused = || {
                    invalid(format!(
                        "prefix: {prefix:?} must start with http:// or https:// and a host (a prefix without them would match far more than one site)"
                    ))
                };
                if !crate::token::valid_destination(&prefix) {
                    return Err(refused());
                }
                let (host, p) = canonical_url(&prefix).ok_or_else(refused)?;
                host_name("prefix", &host).map_err(|_| refused())?;
                Target::Prefix {
                    prefix: p.into_owned(),
                }
            }
            Target::Host { host } => Target::Host {
                host: host_name("host", &host)?,
            },
            Target::Subdomains { host } => {
                let h = host_name("host", &host)?;
                if !h.contains('.') || psl::suffix_str(&h) == Some(h.as_str()) {
                    return Err(invalid(format!(
                        "host: {h:?} is a public suffix: the rule would match every site under it"
                    )));
                }
                Target::Subdomains { host: h }
            }
            Target::Domain { domain } => Target::Domain {
                domain: host_name("domain", &domain)?,
            },
            t @ (Target::Message { .. } | Target::Workspace { .. }) => t,
        };
        if self.reason.trim().is_empty() {
            return Err(invalid("reason: say why the rule is added"));
        }
        if self.added_by.trim().is_empty() {
            return Err(invalid("added_by: say who adds the rule"));
        }
        if let Some(e) = self.expires_ms
            && e <= now_ms
        {
            return Err(invalid(format!(
                "expires_ms: {e} is in the past (now {now_ms})"
            )));
        }
        Ok(Rule {
            id,
            target,
            action: self.action,
            reason: self.reason.trim().to_string(),
            added_by: self.added_by.trim().to_string(),
            created_ms: now_ms,
            expires_ms: self.expires_ms,
        })
    }
}

type Rules = Vec<Arc<Rule>>;
type Map<K> = HashMap<K, Rules, foldhash::fast::RandomState>;

/// Prefix rules under one destination host: by prefix, and the distinct prefix lengths.
#[derive(Default)]
struct Prefixes {
    lens: Vec<usize>,
    rules: Map<Box<str>>,
}

/// A Bloom filter over every key the rules are indexed by, two bits per key in one 64-bit word
/// (one cache line per look-up): small enough to stay in cache (16 bits per rule), so a click
/// that matches nothing is answered without touching the large maps, whose look-ups would each
/// miss the cache. Never a false "no": removals leave their bits until the next full load
/// rebuilds it.
struct Bloom {
    words: Vec<u64>,
    mask: u64,
}

impl Bloom {
    fn with_capacity(keys: usize) -> Bloom {
        let words = (keys.max(1024) * 16 / 64).next_power_of_two();
        Bloom {
            words: vec![0; words],
            mask: words as u64 - 1,
        }
    }

    /// The word `key` falls in, and its two bits there.
    fn slot(&self, tag: u8, key: &[u8]) -> (usize, u64) {
        use std::hash::BuildHasher;
        let h = foldhash::fast::FixedState::with_seed(0x6c69_6e6b_6564_6765).hash_one((tag, key));
        let bits = (1u64 << (h >> 58)) | (1u64 << ((h >> 52) & 63));
        ((h & self.mask) as usize, bits)
    }

    fn add(&mut self, tag: u8, key: &[u8]) {
        let (w, bits) = self.slot(tag, key);
        self.words[w] |= bits;
    }

    fn may(&self, tag: u8, key: &[u8]) -> bool {
        let (w, bits) = self.slot(tag, key);
        self.words[w] & bits == bits
    }
}

impl Default for Bloom {
    fn default() -> Bloom {
        Bloom::with_capacity(0)
    }
}

/// The Bloom filter's key kinds.
const B_URL: u8 = 1;
const B_PREFIX: u8 = 2;
const B_HOST: u8 = 3;
const B_SUB: u8 = 4;
const B_MESSAGE: u8 = 5;
const B_WORKSPACE: u8 = 6;
const B_DOMAIN: u8 = 7;
const B_PREFIX_HOST: u8 = 8;
/// The host of a URL rule's destination: a click reads its path and query only when some URL
/// rule (or prefix rule) may name its host.
const B_URL_HOST: u8 = 9;

fn message_key(workspace: u64, message: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&workspace.to_le_bytes());
    k[8..].copy_from_slice(&message.to_le_bytes());
    k
}

/// The rules, indexed for a click's look-ups.
#[derive(Default)]
struct Index {
    bloom: Bloom,
    urls: Map<Box<str>>,
    prefixes: HashMap<Box<str>, Prefixes, foldhash::fast::RandomState>,
    hosts: Map<Box<str>>,
    subdomains: Map<Box<str>>,
    /// How many subdomain rules have each number of labels (index: labels): a click looks up
    /// only the suffixes of its host with a number of labels some rule has.
    subdomain_depths: Vec<usize>,
    messages: Map<(u64, u64)>,
    workspaces: Map<u64>,
    domains: Map<Box<str>>,
    by_id: HashMap<Box<str>, Arc<Rule>, foldhash::fast::RandomState>,
}

fn push<K: std::hash::Hash + Eq>(m: &mut Map<K>, k: K, r: &Arc<Rule>) {
    m.entry(k).or_default().push(r.clone());
}

fn pull<K: std::hash::Hash + Eq>(m: &mut Map<K>, k: &K, id: &str) {
    if let Some(v) = m.get_mut(k) {
        v.retain(|r| r.id != id);
        if v.is_empty() {
            m.remove(k);
        }
    }
}

impl Index {
    fn insert(&mut self, mut rule: Rule) {
        self.remove(&rule.id);
        // Indexed by the canonical form of this build, whatever the build that stored it did.
        rule.target = match rule.target {
            Target::Url { url } => Target::Url {
                url: normal_url(&url).unwrap_or(url),
            },
            Target::Prefix { prefix } => Target::Prefix {
                prefix: normal_url(&prefix).unwrap_or(prefix),
            },
            Target::Host { host } => Target::Host {
                host: canonical_host(&host).map_or(host.clone(), |h| h.into_owned()),
            },
            Target::Subdomains { host } => Target::Subdomains {
                host: canonical_host(&host).map_or(host.clone(), |h| h.into_owned()),
            },
            Target::Domain { domain } => Target::Domain {
                domain: canonical_host(&domain).map_or(domain.clone(), |h| h.into_owned()),
            },
            t => t,
        };
        let r = Arc::new(rule);
        let (tag, key): (u8, Vec<u8>) = match &r.target {
            Target::Url { url } => (B_URL, url_key(url).as_bytes().to_vec()),
            Target::Prefix { prefix } => (B_PREFIX, url_key(prefix).as_bytes().to_vec()),
            Target::Host { host } => (B_HOST, host.as_bytes().to_vec()),
            Target::Subdomains { host } => (B_SUB, host.as_bytes().to_vec()),
            Target::Message { workspace, message } => {
                (B_MESSAGE, message_key(*workspace, *message).to_vec())
            }
            Target::Workspace { workspace } => (B_WORKSPACE, workspace.to_le_bytes().to_vec()),
            Target::Domain { domain } => (B_DOMAIN, domain.as_bytes().to_vec()),
        };
        self.bloom.add(tag, &key);
        if let Target::Prefix { prefix } = &r.target
            && let Some(h) = dest_host(prefix)
        {
            self.bloom.add(B_PREFIX_HOST, h.as_bytes());
        }
        if let Target::Url { url } = &r.target
            && let Some(h) = dest_host(url)
        {
            self.bloom.add(B_URL_HOST, h.as_bytes());
        }
        match &r.target {
            Target::Url { url } => push(&mut self.urls, url_key(url).into(), &r),
            Target::Prefix { prefix } => {
                let host = dest_host(prefix)
                    .map(|h| h.into_owned())
                    .unwrap_or_default();
                let p = self.prefixes.entry(host.into()).or_default();
                let key = url_key(prefix);
                push(&mut p.rules, key.into(), &r);
                if let Err(at) = p.lens.binary_search(&key.len()) {
                    p.lens.insert(at, key.len());
                }
            }
            Target::Host { host } => push(&mut self.hosts, host.as_str().into(), &r),
            Target::Subdomains { host } => {
                push(&mut self.subdomains, host.as_str().into(), &r);
                let depth = host.split('.').count();
                if self.subdomain_depths.len() <= depth {
                    self.subdomain_depths.resize(depth + 1, 0);
                }
                self.subdomain_depths[depth] += 1;
            }
            Target::Message { workspace, message } => {
                push(&mut self.messages, (*workspace, *message), &r)
            }
            Target::Workspace { workspace } => push(&mut self.workspaces, *workspace, &r),
            Target::Domain { domain } => push(&mut self.domains, domain.as_str().into(), &r),
        }
        self.by_id.insert(r.id.as_str().into(), r);
    }

    fn remove(&mut self, id: &str) {
        let Some(r) = self.by_id.remove(id) else {
            return;
        };
        match &r.target {
            Target::Url { url } => pull(&mut self.urls, &url_key(url).into(), id),
            Target::Prefix { prefix } => {
                let host: Box<str> = dest_host(prefix)
                    .map(|h| h.into_owned())
                    .unwrap_or_default()
                    .into();
                if let Some(p) = self.prefixes.get_mut(&host) {
                    let key = url_key(prefix);
                    pull(&mut p.rules, &key.into(), id);
                    if !p.rules.keys().any(|k| k.len() == key.len()) {
                        p.lens.retain(|l| *l != key.len());
                    }
                    if p.rules.is_empty() {
                        self.prefixes.remove(&host);
                    }
                }
            }
            Target::Host { host } => pull(&mut self.hosts, &host.as_str().into(), id),
            Target::Subdomains { host } => {
                pull(&mut self.subdomains, &host.as_str().into(), id);
                let depth = host.split('.').count();
                if let Some(n) = self.subdomain_depths.get_mut(depth) {
                    *n = n.saturating_sub(1);
                }
            }
            Target::Message { workspace, message } => {
                pull(&mut self.messages, &(*workspace, *message), id)
            }
            Target::Workspace { workspace } => pull(&mut self.workspaces, workspace, id),
            Target::Domain { domain } => pull(&mut self.domains, &domain.as_str().into(), id),
        }
    }
}

/// The strongest live rule of `rules` into `best` (block beats warn, then the oldest). The
/// clock is read (into `now_ms`, 0 until then) only when a rule is found.
fn consider(best: &mut Option<Arc<Rule>>, rules: Option<&Rules>, now_ms: &mut u64) {
    for r in rules.into_iter().flatten() {
        if *now_ms == 0 {
            *now_ms = crate::time::unix_ms();
        }
        if !r.live(*now_ms) {
            continue;
        }
        let better = match best {
            None => true,
            Some(b) => {
                (r.action == Action::Block && b.action == Action::Warn)
                    || (r.action == b.action && r.created_ms < b.created_ms)
            }
        };
        if better {
            *best = Some(r.clone());
        }
    }
}

/// Every rule, in memory; see the module documentation.
#[derive(Default)]
pub struct BlockList {
    index: RwLock<Index>,
    count: AtomicUsize,
}

impl BlockList {
    /// An empty block list.
    pub fn new() -> BlockList {
        BlockList::default()
    }

    /// How many rules are loaded (expired ones included until removed).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// True when no rule is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rule a click on `domain` (the link's host) of `workspace`'s `message` to `url`
    /// meets, if any: memory only.
    pub fn check(
        &self,
        domain: &str,
        workspace: u64,
        message: u64,
        url: &str,
    ) -> Option<Arc<Rule>> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut now = 0;
        let now = &mut now;
        let ix = self.index.read().unwrap_or_else(|p| p.into_inner());
        let mut best = None;
        let bloom = &ix.bloom;
        // Each kind's maps only when some rule of that kind exists.
        if !ix.domains.is_empty() && bloom.may(B_DOMAIN, domain.as_bytes()) {
            consider(&mut best, ix.domains.get(domain), now);
        }
        if !ix.workspaces.is_empty() && bloom.may(B_WORKSPACE, &workspace.to_le_bytes()) {
            consider(&mut best, ix.workspaces.get(&workspace), now);
        }
        if !ix.messages.is_empty() && bloom.may(B_MESSAGE, &message_key(workspace, message)) {
            consider(&mut best, ix.messages.get(&(workspace, message)), now);
        }
        if ix.urls.is_empty()
            && ix.prefixes.is_empty()
            && ix.hosts.is_empty()
            && ix.subdomains.is_empty()
        {
            return best;
        }
        // The host first: when the scheme and authority are canonical as written (as minted
        // links' almost always are), the path and query are read only if some URL or prefix
        // rule names this host.
        let (host, mut normal) = match canonical_authority(url) {
            Some((h, _)) => (std::borrow::Cow::Borrowed(h), None),
            None => match canonical_url_parsed(url) {
                Some((h, n)) => (h, Some(n)),
                None => return best,
            },
        };
        if !ix.hosts.is_empty() && bloom.may(B_HOST, host.as_bytes()) {
            consider(&mut best, ix.hosts.get(&*host), now);
        }
        if !ix.subdomains.is_empty() {
            // The host and each parent with as many labels as some rule has (a host is at most
            // 253 bytes): usually one or two look-ups.
            let mut h: &str = &host;
            let mut labels = host.bytes().filter(|&c| c == b'.').count() + 1;
            loop {
                if ix.subdomain_depths.get(labels).is_some_and(|n| *n > 0)
                    && bloom.may(B_SUB, h.as_bytes())
                {
                    consider(&mut best, ix.subdomains.get(h), now);
                }
                match h.bytes().position(|c| c == b'.') {
                    Some(i) if i + 1 < h.len() => {
                        h = &h[i + 1..];
                        labels -= 1;
                    }
                    _ => break,
                }
            }
        }
        let urls = !ix.urls.is_empty() && bloom.may(B_URL_HOST, host.as_bytes());
        let prefixes = (!ix.prefixes.is_empty() && bloom.may(B_PREFIX_HOST, host.as_bytes()))
            .then(|| ix.prefixes.get(&*host))
            .flatten();
        if !urls && prefixes.is_none() {
            return best;
        }
        if normal.is_none() {
            normal = canonical_url(url).map(|(_, n)| n);
        }
        let Some(normal) = normal else {
            return best;
        };
        let normal = url_key(&normal);
        if urls && bloom.may(B_URL, normal.as_bytes()) {
            consider(&mut best, ix.urls.get(normal), now);
        }
        if let Some(p) = prefixes {
            for &len in &p.lens {
                if len > normal.len() {
                    break;
                }
                if let Some(head) = normal.get(..len)
                    && bloom.may(B_PREFIX, head.as_bytes())
                {
                    consider(&mut best, p.rules.get(head), now);
                }
            }
        }
        best
    }

    /// Every rule, by id.
    pub fn rules(&self) -> Vec<Arc<Rule>> {
        let ix = self.index.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = ix.by_id.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Replaces every rule.
    pub fn replace(&self, rules: Vec<Rule>) {
        let mut fresh = Index {
            bloom: Bloom::with_capacity(rules.len()),
            ..Index::default()
        };
        for r in rules {
            fresh.insert(r);
        }
        let n = fresh.by_id.len();
        let mut ix = self.index.write().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::replace(&mut *ix, fresh);
        drop(ix);
        // Freed outside the lock: a million rules take a while, and clicks wait on the lock.
        drop(old);
        self.count.store(n, Ordering::Relaxed);
        crate::metrics::BLOCK_RULES.set(n as i64);
    }

    /// Adds or replaces one rule (`Some`), or removes rule `id` (`None`).
    pub fn apply(&self, id: &str, rule: Option<Rule>) {
        let mut ix = self.index.write().unwrap_or_else(|p| p.into_inner());
        match rule {
            Some(r) => ix.insert(r),
            None => ix.remove(id),
        }
        let n = ix.by_id.len();
        drop(ix);
        self.count.store(n, Ordering::Relaxed);
        crate::metrics::BLOCK_RULES.set(n as i64);
    }
}

fn parse(id: &str, raw: &str) -> Option<Rule> {
    match serde_json::from_str::<Rule>(raw) {
        // The field names the rule, whatever the record says (a record copied by hand under
        // another field must not replace the rule it was copied from).
        Ok(mut r) => {
            r.id = id.to_string();
            Some(r)
        }
        Err(_) => {
            tracing::warn!(id, "block list: stored rule is damaged; skipped");
            None
        }
    }
}

/// The block rules in Redis: what the command line and the admin API change.
#[derive(Clone)]
pub struct Blocks {
    db: Db,
}

impl Blocks {
    /// The block rules of `db`.
    pub fn new(db: Db) -> Blocks {
        Blocks { db }
    }

    /// Checks and stores `new`, announces it, and writes it to the audit stream.
    pub async fn add(&self, new: NewRule) -> Result<Rule, BlockError> {
        let id = format!("b{:016x}", rand::random::<u64>());
        let rule = new.checked(id, crate::time::unix_ms())?;
        let json = serde_json::to_string(&rule).expect("rules serialize");
        self.write(&rule.id, Some(&json), "add", &rule.added_by, &json)
            .await?;
        Ok(rule)
    }

    /// Removes rule `id`; who removes it goes to the audit stream.
    pub async fn remove(&self, id: &str, by: &str) -> Result<Rule, BlockError> {
        if by.trim().is_empty() {
            return Err(invalid("removed_by: say who removes the rule"));
        }
        let raw: Option<String> = self
            .db
            .conn()
            .await?
            .hget(self.db.keys().blocks(), id)
            .await?;
        // A damaged record is removed too; the audit keeps what it held.
        let raw = raw.ok_or_else(|| BlockError::NotFound(id.to_string()))?;
        self.write(id, None, "remove", by.trim(), &raw).await?;
        Ok(parse(id, &raw).unwrap_or_else(|| Rule {
            id: id.to_string(),
            target: Target::Workspace { workspace: 0 },
            action: Action::Block,
            reason: "damaged record".into(),
            added_by: String::new(),
            created_ms: 0,
            expires_ms: None,
        }))
    }

    /// Stores (`Some`) or deletes rule `id`, writes the audit entry (`rule`: what it is or was)
    /// and announces it, in one transaction.
    async fn write(
        &self,
        id: &str,
        json: Option<&str>,
        op: &str,
        by: &str,
        rule: &str,
    ) -> Result<(), BlockError> {
        let keys = self.db.keys();
        let mut pipe = redis::pipe();
        pipe.atomic();
        match json {
            Some(j) => pipe.hset(keys.blocks(), id, j).ignore(),
            None => pipe.hdel(keys.blocks(), id).ignore(),
        };
        pipe.incr(keys.blocks_version(), 1).ignore();
        pipe.publish(keys.blocks_channel(), id).ignore();
        pipe.cmd("XADD")
            .arg(keys.blocks_audit())
            .arg("*")
            .arg("op")
            .arg(op)
            .arg("id")
            .arg(id)
            .arg("by")
            .arg(by)
            .arg("at_ms")
            .arg(crate::time::unix_ms())
            .arg("rule")
            .arg(rule)
            .ignore();
        let mut conn = self.db.conn().await?;
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// Rule `id`.
    pub async fn get(&self, id: &str) -> Result<Rule, BlockError> {
        let raw: Option<String> = self
            .db
            .conn()
            .await?
            .hget(self.db.keys().blocks(), id)
            .await?;
        raw.as_deref()
            .and_then(|r| parse(id, r))
            .ok_or_else(|| BlockError::NotFound(id.to_string()))
    }

    /// Every rule, sorted by id.
    pub async fn list(&self) -> Result<Vec<Rule>, BlockError> {
        let mut all = load_all(&self.db).await?;
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }
}

/// Every stored rule (HSCAN pages of 1,000).
async fn load_all(db: &Db) -> redis::RedisResult<Vec<Rule>> {
    let key = db.keys().blocks();
    let mut all = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
            .arg(&key)
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut db.conn().await?)
            .await?;
        all.extend(page.iter().filter_map(|(id, raw)| parse(id, raw)));
        cursor = next;
        if cursor == 0 {
            return Ok(all);
        }
    }
}

/// Reads the rules from Redis into a [`BlockList`]; run it with
/// [`crate::store::follow::Following`].
pub struct BlockFollower {
    list: Arc<BlockList>,
    db: Db,
    /// The version counter (`Keys::blocks_version`) read before the last full load; `-1`
    /// before the first.
    loaded_version: std::sync::atomic::AtomicI64,
    /// Re-syncs skipped since the last full load because the version had not moved.
    skipped: AtomicUsize,
}

/// A full load at least every this many re-syncs, even when the version has not moved: heals
/// a change written to Redis by hand, without raising the version.
const FULL_LOAD_EVERY: usize = 10;

impl BlockFollower {
    /// The rules in `db`, into `list`.
    pub fn new(list: Arc<BlockList>, db: Db) -> BlockFollower {
        BlockFollower {
            list,
            db,
            loaded_version: std::sync::atomic::AtomicI64::new(-1),
            skipped: AtomicUsize::new(0),
        }
    }

    /// The version counter; -1 (unknown: never equal to a loaded one) when it is not a number.
    async fn version(&self) -> redis::RedisResult<i64> {
        let v: Option<String> = self
            .db
            .conn()
            .await?
            .get(self.db.keys().blocks_version())
            .await?;
        Ok(v.map_or(0, |v| v.parse().unwrap_or(-1)))
    }
}

#[async_trait]
impl Followed for BlockFollower {
    fn name(&self) -> &'static str {
        "block list"
    }

    fn channels(&self) -> Vec<String> {
        vec![self.db.keys().blocks_channel()]
    }

    async fn load(&self) -> redis::RedisResult<usize> {
        let started = std::time::Instant::now();
        // Read before the rules: a change during the load moves it past what is recorded, so
        // the next re-sync loads again.
        let version = self.version().await?;
        let all = load_all(&self.db).await?;
        let n = all.len();
        self.list.replace(all);
        self.loaded_version.store(version, Ordering::Relaxed);
        self.skipped.store(0, Ordering::Relaxed);
        crate::metrics::BLOCKS_SYNCED.set(crate::time::unix_s());
        tracing::info!(
            rules = n,
            seconds = started.elapsed().as_secs_f64(),
            "block list loaded"
        );
        Ok(n)
    }

    async fn resync(&self) -> redis::RedisResult<()> {
        let v = self.version().await?;
        if v >= 0
            && v == self.loaded_version.load(Ordering::Relaxed)
            && self.skipped.fetch_add(1, Ordering::Relaxed) + 1 < FULL_LOAD_EVERY
        {
            crate::metrics::BLOCKS_SYNCED.set(crate::time::unix_s());
            return Ok(());
        }
        self.load().await.map(|_| ())
    }

    async fn changed(&self, _channel: &str, id: &str) -> redis::RedisResult<()> {
        let raw: Option<String> = self
            .db
            .conn()
            .await?
            .hget(self.db.keys().blocks(), id)
            .await?;
        self.list
            .apply(id, raw.as_deref().and_then(|r| parse(id, r)));
        Ok(())
    }
}

/// The page of a blocked click (410); `{{request_id}}` is replaced.
pub const BLOCKED_PAGE: &str = "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>Link disabled</title>\
<style>body{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;color:#222}\
small{color:#777}</style></head><body><h1>This link has been disabled</h1>\
<p>The link you followed was reported as unsafe and has been turned off.</p>\
<p><small>Request id: {{request_id}}</small></p></body></html>\n";

/// The page of a warned click (200); `{{destination}}`, `{{continue_url}}` and
/// `{{request_id}}` are replaced (HTML-escaped).
pub const WARNED_PAGE: &str = "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>Check this link</title>\
<style>body{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;color:#222}\
code{word-break:break-all}small{color:#777}</style></head><body><h1>Check this link before you go on</h1>\
<p>This link may be unsafe. It leads to:</p><p><code>{{destination}}</code></p>\
<p><a href=\"{{continue_url}}\" rel=\"noreferrer\">Continue to the site</a></p>\
<p><small>Request id: {{request_id}}</small></p></body></html>\n";

/// `template` with its placeholders filled, each value HTML-escaped.
pub fn page(template: &str, request_id: &str, destination: &str, continue_url: &str) -> String {
    template
        .replace("{{request_id}}", &htmlize::escape_all_quotes(request_id))
        .replace("{{destination}}", &htmlize::escape_all_quotes(destination))
        .replace(
            "{{continue_url}}",
            &htmlize::escape_all_quotes(continue_url),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(target: Target, action: Action) -> Rule {
        NewRule {
            target,
            action,
            reason: "phishing".into(),
            added_by: "abuse@example.com".into(),
            expires_ms: None,
        }
        .checked(format!("b{:016x}", rand::random::<u64>()), 1)
        .unwrap()
    }

    #[test]
    fn the_bloom_filter_never_says_no_to_a_key_and_rarely_yes_to_another() {
        let n = 100_000u64;
        let mut bloom = Bloom::with_capacity(n as usize);
        let tags = [B_HOST, B_SUB, B_URL_HOST, B_PREFIX_HOST, B_MESSAGE];
        let key = |i: u64| format!("host-{i}.example").into_bytes();
        for i in 0..n {
            bloom.add(tags[(i % 5) as usize], &key(i));
        }
        for i in 0..n {
            assert!(bloom.may(tags[(i % 5) as usize], &key(i)), "key {i} lost");
        }
        // The same keys under another kind, and keys never added: 16 bits per key keep the
        // false "maybe" near 1.4% (a look-up in the maps it leads to still finds nothing).
        let other_kind = (0..n)
            .filter(|&i| bloom.may(tags[((i + 1) % 5) as usize], &key(i)))
            .count();
        let absent = (n..2 * n)
            .filter(|&i| bloom.may(tags[(i % 5) as usize], &key(i)))
            .count();
        for (what, hits) in [("another kind", other_kind), ("absent keys", absent)] {
            let rate = hits as f64 / n as f64;
            assert!(rate < 0.025, "{what}: {:.2}% false positives", rate * 100.0);
        }
    }

    #[test]
    fn each_rule_matches_exactly_what_it_names() {
        let list = BlockList::new();
        assert!(
            list.check("l.example.com", 1, 2, "https://bad.example/x")
                .is_none()
        );
        let url = rule(
            Target::Url {
                url: "https://Bad.example/login?a=1".into(),
            },
            Action::Block,
        );
        let prefix = rule(
            Target::Prefix {
                prefix: "https://files.example/share/".into(),
            },
            Action::Block,
        );
        let host = rule(
            Target::Host {
                host: "evil.example".into(),
            },
            Action::Warn,
        );
        let subs = rule(
            Target::Subdomains {
                host: "phish.example".into(),
            },
            Action::Block,
        );
        let msg = rule(
            Target::Message {
                workspace: 7,
                message: 9,
            },
            Action::Block,
        );
        let ws = rule(Target::Workspace { workspace: 66 }, Action::Warn);
        let dom = rule(
            Target::Domain {
                domain: "link.bad-customer.example".into(),
            },
            Action::Block,
        );
        let all = [&url, &prefix, &host, &subs, &msg, &ws, &dom];
        list.replace(all.iter().map(|r| (*r).clone()).collect());
        let hit = |d: &str, w: u64, m: u64, u: &str| list.check(d, w, m, u).map(|r| r.id.clone());
        let ok = "https://shop.example/";
        assert_eq!(
            hit("l.example.com", 1, 2, "https://bad.example/login?a=1"),
            Some(url.id.clone())
        );
        assert_eq!(
            hit("l.example.com", 1, 2, "HTTPS://BAD.EXAMPLE/login?a=1"),
            Some(url.id.clone())
        );
        assert_eq!(
            hit("l.example.com", 1, 2, "https://bad.example/login?a=2"),
            None
        );
        assert_eq!(
            hit("l.example.com", 1, 2, "https://files.example/share/abc"),
            Some(prefix.id.clone())
        );
        assert_eq!(
            hit("l.example.com", 1, 2, "https://files.example/other"),
            None
        );
        assert_eq!(
            hit("l.example.com", 1, 2, "https://evil.example/a"),
            Some(host.id.clone())
        );
        assert_eq!(
            hit("l.example.com", 1, 2, "https://www.evil.example/a"),
            None
        );
        assert_eq!(
            hit("l.example.com", 1, 2, "https://a.b.phish.example:8443/"),
            Some(subs.id.clone())
        );
        assert_eq!(
            hit("l.example.com", 1, 2, "https://phish.example/"),
            Some(subs.id.clone())
        );
        assert_eq!(
            hit("l.example.com", 1, 2, "https://notphish.example/"),
            None
        );
        assert_eq!(hit("l.example.com", 7, 9, ok), Some(msg.id.clone()));
        assert_eq!(hit("l.example.com", 7, 10, ok), None);
        assert_eq!(hit("l.example.com", 8, 9, ok), None);
        assert_eq!(hit("l.example.com", 66, 1, ok), Some(ws.id.clone()));
        assert_eq!(
            hit("link.bad-customer.example", 1, 2, ok),
            Some(dom.id.clone())
        );
        assert_eq!(hit("l.example.com", 1, 2, ok), None);
        // Block beats warn; removing a rule lifts it.
        assert_eq!(
            hit("l.example.com", 66, 1, "https://files.example/share/x"),
            Some(prefix.id.clone())
        );
        list.apply(&prefix.id, None);
        assert_eq!(
            hit("l.example.com", 1, 2, "https://files.example/share/abc"),
            None
        );
        assert_eq!(list.len(), 6);
    }

    #[test]
    fn a_url_written_another_way_still_matches() {
        let list = BlockList::new();
        let url = rule(
            Target::Url {
                url: "https://bad.example/login".into(),
            },
            Action::Block,
        );
        let prefix = rule(
            Target::Prefix {
                prefix: "https://files.example/share/".into(),
            },
            Action::Block,
        );
        let same_len = rule(
            Target::Prefix {
                prefix: "https://files.example/other/".into(),
            },
            Action::Block,
        );
        let host = rule(
            Target::Host {
                host: "bücher.example".into(),
            },
            Action::Block,
        );
        list.replace(vec![
            url.clone(),
            prefix.clone(),
            same_len.clone(),
            host.clone(),
        ]);
        let hit = |u: &str| list.check("l.example.com", 1, 2, u).map(|r| r.id.clone());
        for u in [
            "https://bad.example/login",
            "https://bad.example:443/login",
            "https://user@bad.example/login",
            "https://bad.example./login",
            "https://BAD.example/login#x",
            "https://%62ad.example/login",
        ] {
            assert_eq!(hit(u), Some(url.id.clone()), "{u}");
        }
        assert_eq!(hit("https://bad.example:8443/login"), None);
        // The same destination over http:// (the site would redirect it to https://).
        assert_eq!(hit("http://bad.example/login"), Some(url.id.clone()));
        assert_eq!(
            hit("http://bad.example:443/login"),
            None,
            "not the same port"
        );
        for u in [
            "https://files.example:443/share/x",
            "https://u@files.example/share/x",
            "https://files.example./share/x",
        ] {
            assert_eq!(hit(u), Some(prefix.id.clone()), "{u}");
        }
        // IDN: the rule in Unicode, the click in punycode or Unicode.
        assert_eq!(hit("https://xn--bcher-kva.example/"), Some(host.id.clone()));
        assert_eq!(hit("https://bücher.example/"), Some(host.id.clone()));
        // Two prefixes of one length: removing one keeps the other.
        list.apply(&prefix.id, None);
        assert_eq!(hit("https://files.example/share/x"), None);
        assert_eq!(
            hit("https://files.example/other/x"),
            Some(same_len.id.clone())
        );
    }

    #[test]
    fn a_url_a_browser_reads_the_same_way_matches() {
        let list = BlockList::new();
        let url = rule(
            Target::Url {
                url: "https://bad.example/login?next=a%2Fb".into(),
            },
            Action::Block,
        );
        let quoted = rule(
            Target::Url {
                url: "https://bad.example/a\"b".into(),
            },
            Action::Block,
        );
        let ip = rule(
            Target::Host {
                host: "1.2.3.4".into(),
            },
            Action::Block,
        );
        let v6 = rule(
            Target::Host {
                host: "[2001:db8:0:0::1]".into(),
            },
            Action::Block,
        );
        list.replace(vec![url.clone(), quoted.clone(), ip.clone(), v6.clone()]);
        let hit = |u: &str| list.check("l.example.com", 1, 2, u).map(|r| r.id.clone());
        for u in [
            "https://bad.example/login?next=a%2Fb",
            "HTTPS://bad.example/login?next=a%2fb",
            "https://bad.example/x/../login?next=a%2Fb",
            "https://bad.example/./login?next=a%2Fb",
            "https://bad.example/x/%2e%2E/login?next=a%2Fb",
            "https://bad.example/%6Cogin?next=a%2Fb",
            "https://bad.example/%6cogin?next=%61%2Fb",
            "https://bad.example\\login?next=a%2Fb",
        ] {
            assert_eq!(hit(u), Some(url.id.clone()), "{u}");
        }
        assert_eq!(
            hit("https://bad.example/login?next=a/b"),
            None,
            "%2F is not /"
        );
        assert_eq!(hit("https://bad.example/a%22b"), Some(quoted.id.clone()));
        // IPv4 written as the URL standard reads it: one number, hex, octal, fewer parts.
        for u in [
            "http://1.2.3.4/",
            "http://16909060/x",
            "http://0x01020304/",
            "http://01.2.3.4/",
            "http://1.2.0x3.4/",
            "http://1.2.772/",
            "http://1.2.3.4./",
        ] {
            assert_eq!(hit(u), Some(ip.id.clone()), "{u}");
        }
        assert_eq!(hit("http://1.2.3.5/"), None);
        // Written as IPv6, it still reaches 1.2.3.4.
        assert_eq!(hit("http://[::ffff:1.2.3.4]/"), Some(ip.id.clone()));
        assert_eq!(hit("http://[::ffff:102:304]/"), Some(ip.id.clone()));
        assert_eq!(hit("http://[2001:db8::1]/"), Some(v6.id.clone()));
        assert_eq!(hit("http://[2001:DB8:0::1]:80/"), Some(v6.id.clone()));
    }

    #[test]
    fn the_fast_path_leaves_odd_hosts_to_the_parser() {
        let long = format!("https://{}.example/", "a".repeat(250));
        for u in [
            "https://.evil.example/",
            "HTTPS://.evil.example/",
            "https://a..evil.example/",
            "https://xn--.evil.example/",
            "https://xn--bcher-kva.example/",
            "https://evil.example../x",
            "https://a.1/",
            "https://e.example/a%+5",
            long.as_str(),
        ] {
            let fast = canonical_url(u).map(|(h, n)| (h.into_owned(), n.into_owned()));
            let slow = canonical_url_parsed(u).map(|(h, n)| (h.into_owned(), n.into_owned()));
            assert_eq!(fast, slow, "{u}");
        }
        assert_eq!(
            normal_url("https://e.example/a%+5").as_deref(),
            Some("https://e.example/a%25+5")
        );
    }

    proptest::proptest! {
        /// The borrowed fast path gives exactly what the URL standard's parser gives, and the
        /// canonical form is its own canonical form.
        #[test]
        fn the_fast_canonical_form_is_the_parsed_one(
            scheme in proptest::sample::select(vec!["http://", "https://", "HTTP://"]),
            host in "(([a-z0-9_-]{1,6}|0x[0-9a-f]{1,3}|[0-9]{1,4})\\.){0,3}([a-z0-9-]{1,6}|[0-9]{1,4}|0x[0-9a-f]{1,3})\\.?",
            port in proptest::option::of("(0|[0-9]{1,6})"),
            tail in "(/|\\?)?([a-zA-Z0-9./?&=%\"'<>^`{}|~_-]|%[0-9a-fA-F]{2}){0,24}",
        ) {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let u = format!("{scheme}{host}{port}{tail}");
            let slow = canonical_url_parsed(&u).map(|(h, n)| (h.into_owned(), n.into_owned()));
            let fast = canonical_url(&u).map(|(h, n)| (h.into_owned(), n.into_owned()));
            proptest::prop_assert_eq!(&fast, &slow, "{}", u);
            if let Some((h, n)) = fast {
                let again = canonical_url(&n).map(|(h, n)| (h.into_owned(), n.into_owned()));
                proptest::prop_assert_eq!(again, Some((h.clone(), n.clone())), "{}", u);
                // Taking the fast path itself (for a host of the usual characters).
                let usual = h.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
                    && !h.starts_with("xn--")
                    && !h.contains(".xn--");
                proptest::prop_assert!(
                    !usual || matches!(canonical_url(&n), Some((_, std::borrow::Cow::Borrowed(_)))),
                    "the canonical form {} takes the fast path", n
                );
                proptest::prop_assert_eq!(canonical_host(&h).map(|c| c.into_owned()), Some(h.clone()));
            }
        }
    }

    #[test]
    fn expired_rules_no_longer_apply() {
        let list = BlockList::new();
        let mut r = rule(Target::Workspace { workspace: 1 }, Action::Block);
        r.expires_ms = Some(crate::time::unix_ms() - 1);
        list.replace(vec![r]);
        assert!(
            list.check("l.example.com", 1, 1, "https://e.com/")
                .is_none()
        );
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let new = |target: Target, expires_ms: Option<u64>| NewRule {
            target,
            action: Action::Block,
            reason: "x".into(),
            added_by: "me".into(),
            expires_ms,
        };
        for (n, want) in [
            (
                new(
                    Target::Url {
                        url: "not a url".into(),
                    },
                    None,
                ),
                "url:",
            ),
            (new(Target::Prefix { prefix: "".into() }, None), "prefix:"),
            (
                new(
                    Target::Prefix {
                        prefix: "example.com/".into(),
                    },
                    None,
                ),
                "must start with http",
            ),
            (
                new(
                    Target::Prefix {
                        prefix: "https://".into(),
                    },
                    None,
                ),
                "must start with http",
            ),
            (
                new(Target::Host { host: "*".into() }, None),
                "not a host name",
            ),
            (
                new(Target::Subdomains { host: "com".into() }, None),
                "public suffix",
            ),
            (
                new(
                    Target::Subdomains {
                        host: "co.uk".into(),
                    },
                    None,
                ),
                "public suffix",
            ),
            (
                new(
                    Target::Prefix {
                        prefix: "https://*/x".into(),
                    },
                    None,
                ),
                "must start with http",
            ),
            (
                new(
                    Target::Prefix {
                        prefix: "https://a.example/ x".into(),
                    },
                    None,
                ),
                "must start with http",
            ),
            (
                new(Target::Workspace { workspace: 1 }, Some(5)),
                "in the past",
            ),
        ] {
            let e = n.checked("b1".into(), 10).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let e: Result<NewRule, _> = serde_json::from_str(
            r#"{"match":"workspace","workspace":1,"action":"delete","reason":"x","added_by":"me"}"#,
        );
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("unknown variant `delete`")
        );
    }
}
