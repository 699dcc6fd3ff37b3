//! Tracking a whole email: every link of an HTML part (or a plain-text part) becomes a click
//! link minted through [`Minter`], and an open pixel is added; `linkedge rewrite` and
//! `POST /v1/rewrite` call [`rewrite`].
//!
//! The document is parsed, never re-serialised: `lol_html` (Cloudflare's streaming rewriter,
//! with a memory limit) finds each `href` and its byte range in the original, and the output is
//! the original bytes with exactly those ranges replaced (plus the pixel, and any
//! `data-linkedge="off"` removed). Everything else, in whatever ASCII-compatible encoding the
//! document declares, is byte-for-byte unchanged. The rules are in the README, "Rewriting
//! emails".

use crate::mint::{Hosts, LinkKind, Minter, Refused, Request};
use crate::token::{MAX_URL_LEN, TokenError, valid_destination};
use lol_html::html_content::{Comment, Element};
use lol_html::{AsciiCompatibleEncoding, HtmlRewriter, MemorySettings, Settings};
use serde::Serialize;
use std::cell::RefCell;
use std::ops::Range;
use std::rc::Rc;

/// Largest document rewritten, in bytes.
pub const MAX_DOCUMENT: usize = 10 << 20;
/// Most links (tracked or left alone) in one document.
pub const MAX_LINKS: usize = 5_000;
/// The HTML parser's own buffers (a tag or comment split oddly, a huge attribute) beyond this
/// stop the rewrite with an error.
const PARSER_MEMORY: usize = 4 << 20;

/// What to rewrite and for whom.
#[derive(Debug, Clone)]
pub struct Options {
    /// The branded tracking domain.
    pub host: String,
    /// Workspace id.
    pub workspace: u64,
    /// Message (delivery) id.
    pub message: u64,
    /// A plain-text part instead of HTML.
    pub text: bool,
    /// Add the open pixel (HTML only).
    pub pixel: bool,
    /// Unix seconds stamped in every token.
    pub issued: u64,
}

/// Why a link was left as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftAlone {
    /// Not `http(s)`: `mailto:`, `tel:`, `sms:`, `#anchor`, `javascript:`, a relative path.
    Scheme,
    /// Holds template syntax (`{{…}}`, `{%…%}`, `*|…|*`, `%%…%%`, `[[…]]`), filled in later.
    Template,
    /// Already a linkedge link (its token verifies for its host).
    AlreadyTracked,
    /// Marked `data-linkedge="off"`.
    OptedOut,
    /// Longer than 2,048 bytes.
    TooLong,
    /// `http(s)` but not a destination the edge redirects to (a space, no host...).
    BadUrl,
}

/// One link of the document, as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Its position among the document's links, from 1.
    pub index: usize,
    /// The destination as a browser would follow it (entities decoded, spaces trimmed).
    pub destination: String,
    /// The tracked link's `link` id (clicks are numbered 1, 2, ... in document order; a VML
    /// button and its HTML fallback to the same URL share one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<u64>,
    /// The tracked URL that replaced it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Why it was left alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_alone: Option<LeftAlone>,
    /// Its bytes in the original document (for a check that nothing else changed).
    #[serde(skip)]
    pub source: Range<usize>,
}

/// A rewritten document and its report.
#[derive(Debug)]
pub struct Rewritten {
    /// The document, in its own encoding.
    pub document: Vec<u8>,
    /// One entry per link found, in document order.
    pub report: Vec<Entry>,
    /// The open pixel's URL, when one was added.
    pub pixel: Option<String>,
}

impl Rewritten {
    /// How many links were tracked.
    pub fn tracked(&self) -> usize {
        self.report.iter().filter(|e| e.url.is_some()).count()
    }
}

/// Why a document was not rewritten; nothing is output then.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// Over [`MAX_DOCUMENT`].
    #[error("the document is {0} bytes; at most {MAX_DOCUMENT} are rewritten")]
    TooLarge(usize),
    /// Over [`MAX_LINKS`].
    #[error("the document has more than {MAX_LINKS} links")]
    TooManyLinks,
    /// Declared in an encoding that is not rewritten.
    #[error("{0}")]
    Encoding(String),
    /// UTF-8 required (declared, or nothing declared, or a text part) but not given.
    #[error(
        "the document is not valid UTF-8 (byte {0}): declare its charset in a <meta> tag, or convert it"
    )]
    NotUtf8(usize),
    /// The host or the ids cannot be minted on.
    #[error("{0}")]
    Mint(#[from] Refused),
    /// The HTML parser gave up (its memory limit, for a hostile document).
    #[error("the HTML cannot be rewritten: {0}")]
    Html(String),
}

/// A span of the original replaced by new bytes.
struct Edit {
    range: Range<usize>,
    with: Vec<u8>,
}

/// An `href` found by the parser.
struct Found {
    /// Its value's bytes in the document.
    value: Range<usize>,
    /// The value as written (entities not decoded).
    raw: String,
    /// On a VML element (`v:roundrect`...).
    vml: bool,
    /// `data-linkedge="off"`: the attribute's span (with the spaces before it) to replace, and
    /// what replaces it (a space when the next attribute would otherwise join the previous).
    off: Option<(Range<usize>, &'static [u8])>,
}

/// Rewrites `doc`: see the module documentation and the README's rules. The host is checked
/// with `hosts` before anything else.
pub fn rewrite(
    minter: &Minter,
    hosts: &impl Hosts,
    opts: &Options,
    doc: &[u8],
) -> Result<Rewritten, RewriteError> {
    if doc.len() > MAX_DOCUMENT {
        return Err(RewriteError::TooLarge(doc.len()));
    }
    // The host first: a refused host changes nothing, whatever the document holds.
    let probe = Request {
        host: opts.host.as_str().into(),
        url: Some("https://example.com/".into()),
        workspace: opts.workspace,
        message: opts.message,
        link: 0,
        kind: LinkKind::Click,
    };
    minter.mint(hosts, &probe, opts.issued)?;
    let mut r = Run {
        minter,
        hosts,
        opts,
        report: Vec::new(),
        edits: Vec::new(),
        next_link: 0,
        vml_pending: None,
    };
    if opts.text {
        let text = std::str::from_utf8(doc).map_err(|e| RewriteError::NotUtf8(e.valid_up_to()))?;
        r.text(text)?;
        return Ok(r.finish(doc, None));
    }
    let encoding = declared_encoding(doc)?;
    if encoding == encoding_rs::UTF_8
        && let Err(e) = std::str::from_utf8(doc)
    {
        return Err(RewriteError::NotUtf8(e.valid_up_to()));
    }
    let (found, body_end) = scan(doc, encoding, 0, false)?;
    for f in found {
        r.link(f)?;
    }
    let pixel = if opts.pixel {
        let req = Request {
            host: opts.host.as_str().into(),
            url: None,
            workspace: opts.workspace,
            message: opts.message,
            link: 0,
            kind: LinkKind::Open,
        };
        let url = minter.mint(hosts, &req, opts.issued)?;
        let at = body_end.unwrap_or(doc.len());
        r.edits.push(Edit {
            range: at..at,
            with: format!(
                "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" border=\"0\" style=\"border:0;width:1px;height:1px\" />",
                htmlize::escape_attribute(&url)
            )
            .into_bytes(),
        });
        Some(url)
    } else {
        None
    };
    Ok(r.finish(doc, pixel))
}

/// The encoding a `<meta>` in the first 4 KiB declares (UTF-8 when none does); an encoding
/// the parser cannot read byte for byte (UTF-16, ISO-2022-JP) or an unknown label is refused.
fn declared_encoding(doc: &[u8]) -> Result<&'static encoding_rs::Encoding, RewriteError> {
    // A byte-order mark wins over any declaration, as in a browser.
    if doc.starts_with(b"\xEF\xBB\xBF") {
        return Ok(encoding_rs::UTF_8);
    }
    let head = &doc[..doc.len().min(4096)];
    let lower = head.to_ascii_lowercase();
    let mut at = 0;
    while at < lower.len() {
        let Some(i) = memchr::memchr(b'<', &lower[at..]) else {
            break;
        };
        let start = at + i;
        let rest = &lower[start..];
        // Comments (Outlook's conditional ones included) declare nothing.
        if rest.starts_with(b"<!--") {
            at =
                memchr::memmem::find(&rest[4..], b"-->").map_or(lower.len(), |e| start + 4 + e + 3);
            continue;
        }
        let end = memchr::memchr(b'>', rest).map_or(lower.len(), |e| start + e);
        at = end.max(start + 1);
        let is_meta = rest.starts_with(b"<meta")
            && rest
                .get(5)
                .is_some_and(|b| b.is_ascii_whitespace() || *b == b'/');
        if !is_meta {
            continue;
        }
        let tag = &lower[start..end];
        let Some(label) = charset_in(tag) else {
            continue;
        };
        let name = String::from_utf8_lossy(label).into_owned();
        let enc = encoding_rs::Encoding::for_label(label).ok_or_else(|| {
            RewriteError::Encoding(format!(
                "the document declares charset {name:?}, which is not an encoding"
            ))
        })?;
        // HTML reads x-user-defined as windows-1252.
        let enc = if enc == encoding_rs::X_USER_DEFINED {
            encoding_rs::WINDOWS_1252
        } else {
            enc
        };
        // A UTF-16 declaration in an ASCII-readable document means UTF-8 (HTML's rule), but a
        // document really in UTF-16 would not be readable here: refuse either way.
        if AsciiCompatibleEncoding::new(enc).is_none() {
            return Err(RewriteError::Encoding(format!(
                "the document declares charset {name:?} ({}), which the rewriter does not support: it reads only ASCII-compatible encodings (UTF-8, ISO-8859-x, windows-125x, Shift_JIS, EUC-JP, GBK, Big5...)",
                enc.name()
            )));
        }
        return Ok(enc);
    }
    Ok(encoding_rs::UTF_8)
}

/// The label of the first `charset=` in a lowercased `<meta ...` tag (as an attribute or inside
/// `content="text/html; charset=..."`).
fn charset_in(tag: &[u8]) -> Option<&[u8]> {
    let mut from = 0;
    while let Some(c) = memchr::memmem::find(&tag[from..], b"charset") {
        let c = from + c;
        from = c + 7;
        let before = if c == 0 { b' ' } else { tag[c - 1] };
        if !(before.is_ascii_whitespace() || matches!(before, b';' | b'"' | b'\'')) {
            continue;
        }
        let Some(rest) = tag[c + 7..].trim_ascii_start().strip_prefix(b"=") else {
            continue;
        };
        let rest = rest.trim_ascii_start();
        let rest = rest
            .strip_prefix(b"\"")
            .or_else(|| rest.strip_prefix(b"'"))
            .unwrap_or(rest)
            .trim_ascii_start();
        let len = rest
            .iter()
            .position(|b| matches!(b, b'"' | b'\'' | b';' | b'/' | b'>') || b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        return Some(&rest[..len]);
    }
    None
}

/// Every link `href` in `doc` (offsets plus `base`), conditional comments included, and where
/// `</body>` starts.
fn scan(
    doc: &[u8],
    encoding: &'static encoding_rs::Encoding,
    base: usize,
    nested: bool,
) -> Result<(Vec<Found>, Option<usize>), RewriteError> {
    let found: RefCell<Vec<Found>> = RefCell::default();
    let body_end: Rc<RefCell<Option<usize>>> = Rc::default();
    let failed: RefCell<Option<RewriteError>> = RefCell::new(None);
    let fail = |e: RewriteError| -> lol_html::HandlerResult {
        let why = e.to_string();
        *failed.borrow_mut() = Some(e);
        Err(why.into())
    };
    let on_element = |el: &mut Element<'_, '_>| {
        let tag = el.tag_name();
        if !(tag == "a" || tag == "area" || tag.starts_with("v:")) {
            return Ok(());
        }
        let mut href = None;
        let mut seen_href = false;
        let mut off = None;
        for a in el.attributes() {
            let name = a.name();
            if name == "href" && !seen_href {
                // The first `href` is the one a browser follows, even when it has no value.
                seen_href = true;
                if let Some(loc) = a.value_source_location() {
                    href = Some((loc.bytes(), a.value()));
                }
            } else if name == "data-linkedge"
                && a.value().eq_ignore_ascii_case("off")
                && let (Some(n), Some(v)) = (a.name_source_location(), a.value_source_location())
            {
                let (n, v) = (n.bytes(), v.bytes());
                // The attribute to its closing quote, if any, with the spaces before it; a
                // space is put back when the next attribute followed without one.
                let mut start = n.start;
                while start > 0 && doc[start - 1].is_ascii_whitespace() {
                    start -= 1;
                }
                let mut end = v.end;
                if v.start > 0
                    && matches!(doc[v.start - 1], b'"' | b'\'')
                    && doc.get(end) == Some(&doc[v.start - 1])
                {
                    end += 1;
                }
                let joins = doc
                    .get(end)
                    .is_some_and(|b| !b.is_ascii_whitespace() && !matches!(b, b'>' | b'/'));
                let with: &'static [u8] = if joins { b" " } else { b"" };
                off = Some((start + base..end + base, with));
            }
        }
        if let Some((value, raw)) = href {
            let mut f = found.borrow_mut();
            if f.len() >= MAX_LINKS {
                return fail(RewriteError::TooManyLinks);
            }
            f.push(Found {
                value: value.start + base..value.end + base,
                raw,
                vml: tag.starts_with("v:"),
                off,
            });
        }
        Ok(())
    };
    let on_body = |el: &mut Element<'_, '_>| {
        let at = body_end.clone();
        if let Some(handlers) = el.end_tag_handlers() {
            handlers.push(Box::new(
                move |end: &mut lol_html::html_content::EndTag<'_>| {
                    *at.borrow_mut() = Some(end.source_location().bytes().start + base);
                    Ok(())
                },
            ));
        }
        Ok(())
    };
    let on_comment = |c: &mut Comment<'_>| {
        // Only `<!--[if ...]> ... <![endif]-->` holds markup (Outlook's VML buttons). Its content
        // is scanned once, without comments: a conditional comment cannot nest (it ends at the
        // first `-->`), and a comment left open at the end of the document is not markup.
        if nested {
            return Ok(());
        }
        let loc = c.source_location().bytes();
        let raw = &doc[loc.clone()];
        let tail = if raw.ends_with(b"--!>") { 4 } else { 3 };
        let closed = raw.ends_with(b"-->") || raw.ends_with(b"--!>");
        if !raw.starts_with(b"<!--") || !closed || raw.len() < 4 + tail {
            return Ok(());
        }
        let (start, end) = (loc.start + 4, loc.end - tail);
        if !c.text().trim_start().starts_with("[if") {
            return Ok(());
        }
        let inner = &doc[start..end];
        if memchr::memmem::find(inner, b"href").is_none() {
            return Ok(());
        }
        match scan(inner, encoding, start + base, true) {
            Ok((mut more, _)) => {
                let mut f = found.borrow_mut();
                if f.len() + more.len() > MAX_LINKS {
                    return fail(RewriteError::TooManyLinks);
                }
                f.append(&mut more);
                Ok(())
            }
            Err(e) => fail(e),
        }
    };
    let settings = Settings::new()
        .append_element_content_handler(lol_html::element!("*[href]", on_element))
        .append_element_content_handler(lol_html::element!("body", on_body))
        .append_document_content_handler(lol_html::doc_comments!(on_comment))
        .with_encoding(AsciiCompatibleEncoding::new(encoding).expect("checked ASCII-compatible"))
        .with_memory_settings(MemorySettings::new().with_max_allowed_memory_usage(PARSER_MEMORY))
        .with_strict(false);
    let mut rewriter = HtmlRewriter::new(settings, |_: &[u8]| {});
    let result = rewriter.write(doc).and_then(|()| rewriter.end());
    if let Some(e) = failed.into_inner() {
        return Err(e);
    }
    result.map_err(|e| RewriteError::Html(e.to_string()))?;
    let body_end = *body_end.borrow();
    Ok((found.into_inner(), body_end))
}

/// The state of one rewrite.
struct Run<'a, H: Hosts> {
    minter: &'a Minter,
    hosts: &'a H,
    opts: &'a Options,
    report: Vec<Entry>,
    edits: Vec<Edit>,
    next_link: u64,
    /// The last tracked link when it was a VML button: (destination, its number).
    vml_pending: Option<(String, u64)>,
}

/// Template syntax a sender's platform fills in after the rewrite.
const TEMPLATE_MARKS: [(&str, &str); 5] = [
    ("{{", "}}"),
    ("{%", "%}"),
    ("*|", "|*"),
    ("%%", "%%"),
    ("[[", "]]"),
];

fn has_template(s: &str) -> bool {
    TEMPLATE_MARKS.iter().any(|(open, close)| {
        s.find(open)
            .is_some_and(|i| s[i + open.len()..].contains(close))
    })
}

fn is_http(s: &str) -> bool {
    let b = s.as_bytes();
    (b.len() >= 7 && b[..7].eq_ignore_ascii_case(b"http://"))
        || (b.len() >= 8 && b[..8].eq_ignore_ascii_case(b"https://"))
}

impl<H: Hosts> Run<'_, H> {
    /// Decides what becomes of one link and records it; `Some(url)` when tracked.
    fn decide(
        &mut self,
        destination: &str,
        vml: bool,
        source: Range<usize>,
    ) -> Result<Option<String>, RewriteError> {
        if self.report.len() >= MAX_LINKS {
            return Err(RewriteError::TooManyLinks);
        }
        let left = if has_template(destination) {
            Some(LeftAlone::Template)
        } else if !is_http(destination) {
            Some(LeftAlone::Scheme)
        } else if self.already_tracked(destination) {
            Some(LeftAlone::AlreadyTracked)
        } else if destination.len() > MAX_URL_LEN {
            Some(LeftAlone::TooLong)
        } else if !valid_destination(destination) {
            Some(LeftAlone::BadUrl)
        } else {
            None
        };
        let index = self.report.len() + 1;
        if let Some(reason) = left {
            self.vml_pending = None;
            self.report.push(Entry {
                index,
                destination: destination.to_owned(),
                link: None,
                url: None,
                left_alone: Some(reason),
                source,
            });
            return Ok(None);
        }
        let link = match self.vml_pending.take() {
            // The HTML fallback of the VML button before it: the same link.
            Some((d, n)) if !vml && d == destination => n,
            _ => {
                self.next_link += 1;
                self.next_link
            }
        };
        if vml {
            self.vml_pending = Some((destination.to_owned(), link));
        }
        let req = Request {
            host: self.opts.host.as_str().into(),
            url: Some(destination.into()),
            workspace: self.opts.workspace,
            message: self.opts.message,
            link,
            kind: LinkKind::Click,
        };
        let url = self.minter.mint(self.hosts, &req, self.opts.issued)?;
        self.report.push(Entry {
            index,
            destination: destination.to_owned(),
            link: Some(link),
            url: Some(url.clone()),
            left_alone: None,
            source,
        });
        Ok(Some(url))
    }

    /// Whether `url` is a linkedge link already: `/c/` or `/o/` and a token that verifies for
    /// its own host with this keyring.
    fn already_tracked(&self, url: &str) -> bool {
        let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let Some(host) = crate::host::normalize_host(authority.rsplit('@').next().unwrap_or(""))
        else {
            return false;
        };
        let path = path.split(['?', '#']).next().unwrap_or("");
        let Some(token) = path
            .strip_prefix("/c/")
            .or_else(|| path.strip_prefix("/o/"))
        else {
            return false;
        };
        matches!(
            self.minter.keyring().verify(&host, token),
            Ok(_) | Err(TokenError::WrongHost)
        )
    }

    fn link(&mut self, f: Found) -> Result<(), RewriteError> {
        if let Some((off, with)) = f.off.clone() {
            self.edits.push(Edit {
                range: off,
                with: with.to_vec(),
            });
            self.vml_pending = None;
            self.report.push(Entry {
                index: self.report.len() + 1,
                destination: decode(&f.raw),
                link: None,
                url: None,
                left_alone: Some(LeftAlone::OptedOut),
                source: f.value,
            });
            return Ok(());
        }
        let destination = decode(&f.raw);
        if let Some(url) = self.decide(&destination, f.vml, f.value.clone())? {
            self.edits.push(Edit {
                range: f.value,
                with: htmlize::escape_attribute(&url).into_owned().into_bytes(),
            });
        }
        Ok(())
    }

    fn text(&mut self, text: &str) -> Result<(), RewriteError> {
        let mut finder = linkify::LinkFinder::new();
        finder.kinds(&[linkify::LinkKind::Url]);
        for l in finder.links(text) {
            let s = l.as_str();
            if !is_http(s) {
                continue;
            }
            let range = l.start()..l.end();
            // The URL as written up to the next space: linkify stops before `|`, `{`, `%`...,
            // so a template tag inside it would be cut off and then corrupt the token.
            let word_end = text[l.start()..]
                .find(char::is_whitespace)
                .map_or(text.len(), |i| l.start() + i);
            if has_template(&text[l.start()..word_end]) {
                self.vml_pending = None;
                self.report.push(Entry {
                    index: self.report.len() + 1,
                    destination: text[l.start()..word_end].to_owned(),
                    link: None,
                    url: None,
                    left_alone: Some(LeftAlone::Template),
                    source: l.start()..word_end,
                });
                continue;
            }
            if let Some(url) = self.decide(s, false, range.clone())? {
                self.edits.push(Edit {
                    range,
                    with: url.into_bytes(),
                });
            }
        }
        Ok(())
    }

    fn finish(mut self, doc: &[u8], pixel: Option<String>) -> Rewritten {
        self.edits.sort_by_key(|e| (e.range.start, e.range.end));
        let grow: usize = self.edits.iter().map(|e| e.with.len()).sum();
        let mut out = Vec::with_capacity(doc.len() + grow);
        let mut at = 0;
        for e in &self.edits {
            out.extend_from_slice(&doc[at..e.range.start]);
            out.extend_from_slice(&e.with);
            at = e.range.end;
        }
        out.extend_from_slice(&doc[at..]);
        Rewritten {
            document: out,
            report: self.report,
            pixel,
        }
    }
}

/// An `href` as a browser follows it: character references decoded (HTML's attribute rules:
/// `&copy=` in a query string stays as written), then as its URL parser does.
fn decode(raw: &str) -> String {
    let decoded = htmlize::unescape_attribute(raw);
    // As a browser's URL parser: C0 controls and spaces trimmed at both ends, tabs and line
    // breaks removed anywhere.
    decoded
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect()
}
