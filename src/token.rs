//! Signed tracked-link tokens: a pure codec with no I/O.
//!
//! A tracked URL is `https://<host>/c/<token>` for a click and `https://<host>/o/<token>` for an
//! open pixel. The token is URL-safe base64 without padding of this byte layout:
//!
//! ```text
//! version   u8        = 1
//! kind      u8        1 = click, 2 = open, 3 = trap (a click no person makes, see below)
//! key_id    varint    which keyring entry signed it
//! workspace varint    u64
//! message   varint    u64 (the delivery id)
//! link      varint    u64
//! issued    varint    Unix seconds at minting
//! url_len   varint    click: length of the destination; open: 0
//! url       bytes     click: the absolute http(s) destination
//! check     4 bytes   HMAC-SHA256(key, 0x01 || payload)[..4]
//! mac       16 bytes  HMAC-SHA256(key, 0x02 || host || 0x00 || payload || check)[..16]
//! ```
//!
//! `payload` is every byte before `check`; `mac` covers `payload` and `check`, so no bit of a token
//! can change without failing verification. The 128-bit `mac` binds the token to the Host it was
//! minted for and is what authorises a redirect. The 32-bit `check` does not involve the Host: when
//! `mac` fails but `check` holds, the token is genuine but arrived on another Host (a proxy in
//! front rewrote the Host header), which the edge answers with "Invalid link security token"
//! instead of a plain 404. Forging `check` gains nothing but a different error page.
//!
//! A click link to a 60-character destination on `link.example.com` is about 160 characters.
//!
//! A trap is a click link (served under `/c/`, redirecting like any other) that the sender hides
//! in the email, where no person sees or follows it: a security scanner following every link
//! does. Only its kind byte tells it apart, and only to the holder of the key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// The only token format this edge mints and decodes.
pub const VERSION: u8 = 1;
/// Longest destination URL a token may carry, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// Shortest secret a keyring accepts, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// Longest token (base64 text) the decoder looks at; anything longer is rejected before decoding.
/// The largest token minted (version, kind, a 5-byte key id, four 10-byte ids, a 2-byte URL
/// length, a [`MAX_URL_LEN`]-byte URL, check and mac: 2,117 bytes) is 2,823 characters.
pub const MAX_TOKEN_LEN: usize =
    (2 + 5 + 4 * 10 + 2 + MAX_URL_LEN + CHECK_LEN + MAC_LEN) * 4 / 3 + 4;
/// Room for any token of at most [`MAX_TOKEN_LEN`] characters, decoded.
const MAX_DECODED: usize = MAX_TOKEN_LEN * 3 / 4 + 3;
/// Tokens up to this long (a destination of up to about 200 characters) decode into a buffer of
/// [`SMALL_DECODED`] bytes.
const SMALL_TOKEN_LEN: usize = 340;
/// Room for any token of at most [`SMALL_TOKEN_LEN`] characters, decoded.
const SMALL_DECODED: usize = SMALL_TOKEN_LEN * 3 / 4 + 3;

const CHECK_LEN: usize = 4;
const MAC_LEN: usize = 16;
const TAG_CHECK: u8 = 0x01;
const TAG_MAC: u8 = 0x02;
const TAG_SEAL: u8 = 0x03;

/// What a link does when followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A click: redirect to the destination.
    Click,
    /// An open pixel: answer a transparent GIF.
    Open,
}

impl Kind {
    /// The path segment this kind is served under (`c` or `o`).
    pub fn path_segment(self) -> &'static str {
        match self {
            Kind::Click => "c",
            Kind::Open => "o",
        }
    }

    /// The event type name recorded in the stream.
    pub fn event_type(self) -> &'static str {
        match self {
            Kind::Click => "click",
            Kind::Open => "open",
        }
    }
}

/// Everything a token carries, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Click or open.
    pub kind: Kind,
    /// The keyring entry that signed it.
    pub key_id: u32,
    /// Workspace id.
    pub workspace: u64,
    /// Message (delivery) id.
    pub message: u64,
    /// Link id within the message.
    pub link: u64,
    /// Unix seconds when minted.
    pub issued: u64,
    /// Destination (clicks only; empty for opens).
    pub url: String,
    /// A trap: a click link hidden in the email, which no person follows (token kind 3).
    pub trap: bool,
}

/// A link to mint, its destination borrowed: what [`Keyring::mint_into`] encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draft<'a> {
    /// Click or open.
    pub kind: Kind,
    /// A trap (clicks only).
    pub trap: bool,
    /// Workspace id.
    pub workspace: u64,
    /// Message (delivery) id.
    pub message: u64,
    /// Link id within the message.
    pub link: u64,
    /// Unix seconds when minted.
    pub issued: u64,
    /// Destination (clicks); empty for opens.
    pub url: &'a str,
}

impl Link {
    /// This link's fields as a [`Draft`] (the key id is the minting keyring's).
    pub fn draft(&self) -> Draft<'_> {
        Draft {
            kind: self.kind,
            trap: self.trap,
            workspace: self.workspace,
            message: self.message,
            link: self.link,
            issued: self.issued,
            url: &self.url,
        }
    }
}

/// Why a token was refused. Every variant is a clean refusal; none of them panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not URL-safe base64 without padding, or too long to be a token.
    #[error("token is not valid base64")]
    Base64,
    /// Too short, a field runs past the end, or bytes are left over.
    #[error("token has the wrong length")]
    Length,
    /// A format version this edge does not decode.
    #[error("unknown token version")]
    Version,
    /// The kind byte is none of click, open and trap.
    #[error("unknown link kind")]
    Kind,
    /// The key id is not in the keyring.
    #[error("unknown key id")]
    UnknownKey,
    /// A number or the URL is longer than the format allows.
    #[error("token field is too long")]
    Overlong,
    /// The destination is not an absolute http(s) URL without control characters.
    #[error("destination is not an absolute http(s) URL")]
    BadUrl,
    /// The signature does not verify for any Host.
    #[error("bad signature")]
    BadSignature,
    /// The signature is genuine but for another Host than the one the request arrived on.
    #[error("token was minted for another host")]
    WrongHost,
}

impl TokenError {
    /// A short fixed label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Base64 => "base64",
            TokenError::Length => "length",
            TokenError::Version => "version",
            TokenError::Kind => "kind",
            TokenError::UnknownKey => "unknown_key",
            TokenError::Overlong => "overlong",
            TokenError::BadUrl => "bad_url",
            TokenError::BadSignature => "bad_signature",
            TokenError::WrongHost => "wrong_host",
        }
    }
}

/// Why a link could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// The destination is refused.
    #[error(
        "destination must be an absolute http:// or https:// URL without spaces or control characters, at most {MAX_URL_LEN} bytes"
    )]
    BadUrl,
    /// The host is empty or not a plain host name.
    #[error("host must be a host name such as link.example.com")]
    BadHost,
    /// Only a click link can be a trap.
    #[error("only a click link can be a trap")]
    TrapNotClick,
}

/// A secret shared by the nodes that mint and verify links. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps secret bytes; at least [`MIN_SECRET_LEN`] are required.
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(format!(
                "secret is {} bytes; at least {MIN_SECRET_LEN} are required",
                bytes.len()
            ));
        }
        Ok(Secret(bytes))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// The keys that verify links, and the one that mints new ones.
///
/// Several keys verify at once, so a key can be rotated out of minting while links already sent
/// with it keep working until it is removed from the keyring.
#[derive(Clone)]
pub struct Keyring {
    /// (id, key), a handful at most: a scan beats hashing the id on every click.
    keys: Vec<(u32, HmacSha256)>,
    mint_id: u32,
}

impl Keyring {
    /// Builds a keyring; `mint_id` must be one of the keys.
    pub fn new(keys: Vec<(u32, Secret)>, mint_id: u32) -> Result<Self, String> {
        let mut ring = Keyring {
            keys: Vec::with_capacity(keys.len()),
            mint_id,
        };
        for (id, secret) in keys {
            let mac = HmacSha256::new_from_slice(&secret.0).map_err(|e| e.to_string())?;
            if ring.key(id).is_some() {
                return Err(format!("key id {id} is listed twice"));
            }
            ring.keys.push((id, mac));
        }
        if ring.key(mint_id).is_none() {
            return Err(format!("mint key id {mint_id} is not in the keyring"));
        }
        Ok(ring)
    }

    /// The key with id `id`.
    fn key(&self, id: u32) -> Option<&HmacSha256> {
        self.keys.iter().find(|(k, _)| *k == id).map(|(_, mac)| mac)
    }

    /// The key id new links are signed with.
    pub fn mint_id(&self) -> u32 {
        self.mint_id
    }

    /// How many keys verify.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true: a keyring holds at least its minting key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Mints a token for `host` (already normalised, see [`crate::host::normalize_host`]).
    pub fn mint(&self, host: &str, link: &Link) -> Result<String, MintError> {
        let mut out = String::new();
        self.mint_into(host, &link.draft(), &mut out)?;
        Ok(out)
    }

    /// Mints a token for `host` (already normalised) with the minting key, appended to `out`;
    /// nothing is appended when it is refused. No allocation beyond `out`'s growth for
    /// destinations up to 200 bytes.
    pub fn mint_into(&self, host: &str, d: &Draft<'_>, out: &mut String) -> Result<(), MintError> {
        if !crate::host::is_normalized(host) {
            return Err(MintError::BadHost);
        }
        let kind = match (d.kind, d.trap) {
            (Kind::Click, trap) => {
                if !valid_destination(d.url) {
                    return Err(MintError::BadUrl);
                }
                if trap { 3 } else { 1 }
            }
            (Kind::Open, true) => return Err(MintError::TrapNotClick),
            (Kind::Open, false) if !d.url.is_empty() => return Err(MintError::BadUrl),
            (Kind::Open, false) => 2,
        };
        let key_id = self.mint_id;
        let key = self.key(key_id).expect("the mint key is in the keyring");
        // Version, kind, six varints of at most 10 bytes, the URL, check and mac.
        let mut small = [0u8; 2 + 6 * 10 + 200 + CHECK_LEN + MAC_LEN];
        let mut large = Vec::new();
        let need = 2 + 6 * 10 + d.url.len() + CHECK_LEN + MAC_LEN;
        let buf: &mut [u8] = if need <= small.len() {
            &mut small
        } else {
            large.resize(need, 0);
            &mut large
        };
        buf[0] = VERSION;
        buf[1] = kind;
        let mut n = 2;
        for v in [
            key_id as u64,
            d.workspace,
            d.message,
            d.link,
            d.issued,
            d.url.len() as u64,
        ] {
            n += write_varint(&mut buf[n..], v);
        }
        buf[n..n + d.url.len()].copy_from_slice(d.url.as_bytes());
        n += d.url.len();
        let mut c = key.clone();
        c.update(&[TAG_CHECK]);
        c.update(&buf[..n]);
        buf[n..n + CHECK_LEN].copy_from_slice(&c.finalize().into_bytes()[..CHECK_LEN]);
        n += CHECK_LEN;
        let mut m = key.clone();
        m.update(&[TAG_MAC]);
        m.update(host.as_bytes());
        m.update(&[0]);
        m.update(&buf[..n]);
        buf[n..n + MAC_LEN].copy_from_slice(&m.finalize().into_bytes()[..MAC_LEN]);
        n += MAC_LEN;
        URL_SAFE_NO_PAD.encode_string(&buf[..n], out);
        Ok(())
    }

    /// A tag binding `parts` under the minting key (kept apart from link MACs by its own
    /// leading byte), for a short-lived value the edge hands out and checks back, such as a
    /// warning page's continue link. URL-safe base64, 22 characters.
    pub fn seal(&self, parts: &[&[u8]]) -> String {
        URL_SAFE_NO_PAD.encode(&self.seal_mac(parts).finalize().into_bytes()[..MAC_LEN])
    }

    /// Whether `tag` is [`Keyring::seal`]'s for `parts` (compared in constant time).
    pub fn unseal(&self, parts: &[&[u8]], tag: &str) -> bool {
        let mut raw = [0u8; MAC_LEN + 2];
        let Ok(MAC_LEN) = URL_SAFE_NO_PAD.decode_slice(tag.as_bytes(), &mut raw) else {
            return false;
        };
        self.seal_mac(parts)
            .verify_truncated_left(&raw[..MAC_LEN])
            .is_ok()
    }

    /// The minting key's MAC over [`Keyring::seal`]'s input: its tag byte, then each part with
    /// its length.
    fn seal_mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let key = self
            .key(self.mint_id)
            .expect("the mint key is in the keyring");
        let mut m = key.clone();
        m.update(&[TAG_SEAL]);
        for p in parts {
            m.update(&(p.len() as u32).to_le_bytes());
            m.update(p);
        }
        m
    }

    /// Decodes and verifies `token` for the Host the request arrived on (normalised).
    ///
    /// Verification is constant-time in the MAC comparison. Returns [`TokenError::WrongHost`]
    /// when the token is genuine but minted for another Host.
    pub fn verify(&self, host: &str, token: &str) -> Result<Link, TokenError> {
        // Most tokens are short: decode into a small buffer, so the request path zeroes a few
        // hundred bytes of stack instead of 2 KiB.
        if token.len() <= SMALL_TOKEN_LEN {
            let mut buf = [0u8; SMALL_DECODED];
            self.verify_in(host, token, &mut buf)
        } else {
            let mut buf = [0u8; MAX_DECODED];
            self.verify_in(host, token, &mut buf)
        }
    }

    fn verify_in(&self, host: &str, token: &str, buf: &mut [u8]) -> Result<Link, TokenError> {
        let (bytes, link) = self.parse(token, buf)?;
        let key = self.key(link.key_id).ok_or(TokenError::UnknownKey)?;
        let (signed, mac) = bytes.split_at(bytes.len() - MAC_LEN);
        let (payload, check) = signed.split_at(signed.len() - CHECK_LEN);

        let mut m = key.clone();
        m.update(&[TAG_MAC]);
        m.update(host.as_bytes());
        m.update(&[0]);
        m.update(signed);
        if m.verify_truncated_left(mac).is_ok() {
            return Ok(link);
        }
        let mut c = key.clone();
        c.update(&[TAG_CHECK]);
        c.update(payload);
        if c.verify_truncated_left(check).is_ok() {
            Err(TokenError::WrongHost)
        } else {
            Err(TokenError::BadSignature)
        }
    }

    /// Decodes the fields of `token` without checking its signature (for `link decode`).
    /// The key must still be in the keyring.
    pub fn inspect(&self, token: &str) -> Result<Link, TokenError> {
        let mut buf = [0u8; MAX_DECODED];
        self.parse(token, &mut buf).map(|(_, link)| link)
    }

    /// Decodes into `buf` (on the caller's stack: no allocation but the URL's) and reads the
    /// fields; the signature is not checked here.
    fn parse<'b>(&self, token: &str, buf: &'b mut [u8]) -> Result<(&'b [u8], Link), TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Overlong);
        }
        let n = URL_SAFE_NO_PAD
            .decode_slice(token.as_bytes(), &mut buf[..])
            .map_err(|_| TokenError::Base64)?;
        let bytes: &'b [u8] = &buf[..n];
        if bytes.len() < 2 + CHECK_LEN + MAC_LEN {
            return Err(TokenError::Length);
        }
        let payload_len = bytes.len() - CHECK_LEN - MAC_LEN;
        let mut r = Reader {
            buf: &bytes[..payload_len],
            pos: 0,
        };
        if r.byte()? != VERSION {
            return Err(TokenError::Version);
        }
        let (kind, trap) = match r.byte()? {
            1 => (Kind::Click, false),
            2 => (Kind::Open, false),
            3 => (Kind::Click, true),
            _ => return Err(TokenError::Kind),
        };
        let key_id = u32::try_from(r.varint()?).map_err(|_| TokenError::Overlong)?;
        if self.key(key_id).is_none() {
            return Err(TokenError::UnknownKey);
        }
        let workspace = r.varint()?;
        let message = r.varint()?;
        let link = r.varint()?;
        let issued = r.varint()?;
        let url_len = r.varint()?;
        if url_len > MAX_URL_LEN as u64 {
            return Err(TokenError::Overlong);
        }
        let url_bytes = r.take(url_len as usize)?;
        if r.pos != r.buf.len() {
            return Err(TokenError::Length);
        }
        let url = std::str::from_utf8(url_bytes).map_err(|_| TokenError::BadUrl)?;
        match kind {
            Kind::Click if !valid_destination(url) => return Err(TokenError::BadUrl),
            Kind::Open if !url.is_empty() => return Err(TokenError::BadUrl),
            _ => {}
        }
        let url = url.to_owned();
        Ok((
            bytes,
            Link {
                kind,
                key_id,
                workspace,
                message,
                link,
                issued,
                url,
                trap,
            },
        ))
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<_> = self.keys.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        f.debug_struct("Keyring")
            .field("key_ids", &ids)
            .field("mint_id", &self.mint_id)
            .finish()
    }
}

/// True when `url` is an absolute `http`/`https` URL with a host, at most [`MAX_URL_LEN`] bytes,
/// and free of spaces and control characters (which could split a `Location` header).
pub fn valid_destination(url: &str) -> bool {
    if url.len() > MAX_URL_LEN || url.bytes().any(|b| b <= 0x20 || b == 0x7f) {
        return false;
    }
    let rest = if let Some(r) = strip_prefix_ci(url, "https://") {
        r
    } else if let Some(r) = strip_prefix_ci(url, "http://") {
        r
    } else {
        return false;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host = authority.rsplit('@').next().unwrap_or("");
    !host.is_empty() && !host.starts_with(':') && !authority.contains('\\')
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len()
        && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// Writes `v` as LEB128 at the start of `buf` (room for 10 bytes); returns how many it took.
fn write_varint(buf: &mut [u8], mut v: u64) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        buf[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    buf[i] = v as u8;
    i + 1
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, TokenError> {
        let b = *self.buf.get(self.pos).ok_or(TokenError::Length)?;
        self.pos += 1;
        Ok(b)
    }

    /// LEB128, canonical only: at most 10 bytes, no value above u64, no trailing zero groups.
    fn varint(&mut self) -> Result<u64, TokenError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?;
            let low = (b & 0x7f) as u64;
            if i == 9 && b > 1 {
                return Err(TokenError::Overlong);
            }
            v |= low << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(TokenError::Overlong);
                }
                return Ok(v);
            }
        }
        Err(TokenError::Overlong)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        let end = self.pos.checked_add(n).ok_or(TokenError::Length)?;
        let s = self.buf.get(self.pos..end).ok_or(TokenError::Length)?;
        self.pos = end;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::new(
            vec![
                (1, Secret::new(vec![1; 32]).unwrap()),
                (2, Secret::new(vec![2; 32]).unwrap()),
            ],
            2,
        )
        .unwrap()
    }

    fn click(url: &str) -> Link {
        Link {
            kind: Kind::Click,
            key_id: 2,
            workspace: 42,
            message: 123_456_789,
            link: 7,
            issued: 1_790_000_000,
            url: url.into(),
            trap: false,
        }
    }

    #[test]
    fn round_trip_and_size() {
        let r = ring();
        let url = format!("https://www.example.com/{}", "a".repeat(36));
        assert_eq!(url.len(), 60);
        let t = r.mint("link.example.com", &click(&url)).unwrap();
        let full = format!("https://link.example.com/c/{t}");
        assert!(full.len() < 200, "{} chars: {full}", full.len());
        assert_eq!(r.verify("link.example.com", &t).unwrap(), click(&url));
    }

    #[test]
    fn a_trap_is_a_click_told_apart_by_its_kind_byte_only() {
        let r = ring();
        let trap = Link {
            trap: true,
            ..click("https://x.test/")
        };
        let t = r.mint("link.example.com", &trap).unwrap();
        assert_eq!(r.verify("link.example.com", &t).unwrap(), trap);
        let plain = r
            .mint("link.example.com", &click("https://x.test/"))
            .unwrap();
        assert_eq!(t.len(), plain.len());
        let open = Link {
            kind: Kind::Open,
            url: String::new(),
            ..trap
        };
        assert_eq!(
            r.mint("link.example.com", &open),
            Err(MintError::TrapNotClick)
        );
    }

    #[test]
    fn short_and_long_tokens_decode_alike() {
        // Destinations around the small buffer's limit and up to the longest allowed.
        let r = ring();
        for n in (150..=330).chain([1000, MAX_URL_LEN - 24]) {
            let link = click(&format!("https://www.example.com/{}", "a".repeat(n)));
            let t = r.mint("link.example.com", &link).unwrap();
            assert_eq!(r.verify("link.example.com", &t), Ok(link.clone()), "{n}");
            assert_eq!(r.inspect(&t), Ok(link), "{n}");
        }
    }

    #[test]
    fn other_host_is_wrong_host_not_bad_signature() {
        let r = ring();
        let t = r
            .mint("link.example.com", &click("https://x.test/"))
            .unwrap();
        assert_eq!(
            r.verify("track.example.net", &t),
            Err(TokenError::WrongHost)
        );
    }

    #[test]
    fn destinations() {
        assert!(valid_destination("https://example.com"));
        assert!(valid_destination("HTTP://example.com/a?b#c"));
        assert!(!valid_destination("javascript:alert(1)"));
        assert!(!valid_destination("//example.com/"));
        assert!(!valid_destination("https://"));
        assert!(!valid_destination("https:///path"));
        assert!(!valid_destination("https://exa mple.com/"));
        assert!(!valid_destination("https://example.com/\r\nSet-Cookie: a"));
        assert!(!valid_destination("ftp://example.com/"));
    }

    #[test]
    fn non_canonical_varint_rejected() {
        let mut r = Reader {
            buf: &[0x80, 0x00],
            pos: 0,
        };
        assert_eq!(r.varint(), Err(TokenError::Overlong));
        let mut r = Reader {
            buf: &[0xff; 11],
            pos: 0,
        };
        assert_eq!(r.varint(), Err(TokenError::Overlong));
        let mut r = Reader {
            buf: &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            pos: 0,
        };
        assert_eq!(r.varint(), Ok(u64::MAX));
    }
}
