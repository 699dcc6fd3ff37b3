//! `linkedge link mint|pixel|decode` and `linkedge rewrite`: tracked URLs and whole emails from
//! the command line, with the config's keyring.

use super::{Outcome, block_on, control, load};
use crate::control::ControlError;
use crate::host::normalize_host;
use crate::mint::{LinkKind, Minter, Request, Standing, Unregistered};
use crate::token::{Kind, TokenError};
use std::path::Path;

/// The ids a minted link carries.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    /// Workspace id.
    pub workspace: u64,
    /// Message (delivery) id.
    pub message: u64,
    /// Link id within the message.
    pub link: u64,
}

/// Prints a tracked URL of `kind` for `host` (a click to `url`, a trap click when `trap`, or an
/// open pixel), through the same [`Minter`] call as the batch API. A retired domain is refused,
/// naming its successor. A host the registry does not know is minted (development, the demo,
/// names routed by `routing.domains`); when the registry cannot be reached the link is minted
/// anyway, with a warning on stderr: minting needs only the keys.
pub fn mint(
    config: &Path,
    host: &str,
    (kind, trap): (Kind, bool),
    url: String,
    ids: Ids,
) -> Outcome {
    let (s, c) = control(config)?;
    let host = normalize_host(host).ok_or_else(|| format!("--host {host:?}: not a host name"))?;
    let standing = standing(&c, &host)?;
    let minter = Minter::new(s.keyring.clone(), &s.link_scheme, Unregistered::Allow);
    let req = Request {
        host: host.into(),
        url: (kind == Kind::Click).then_some(url.into()),
        workspace: ids.workspace,
        message: ids.message,
        link: ids.link,
        kind: match (kind, trap) {
            (Kind::Open, _) => LinkKind::Open,
            (Kind::Click, false) => LinkKind::Click,
            (Kind::Click, true) => LinkKind::Trap,
        },
    };
    let url = minter
        .mint(&standing, &req, crate::time::unix_s() as u64)
        .map_err(|e| e.to_string())?;
    println!("{url}");
    Ok(true)
}

/// What the registry says of `host` for minting, or `Unchecked` with a warning when it cannot
/// be asked.
fn standing(c: &crate::control::Control, host: &str) -> Result<Standing, String> {
    match block_on(c.standing(host))? {
        Ok(standing) => Ok(standing),
        Err(ControlError::Unavailable(why)) => {
            eprintln!(
                "warning: minted without checking that {host} is registered and not retired: {why}"
            );
            Ok(Standing::Unchecked)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// `linkedge rewrite`: stdin's HTML (or, with `text`, plain-text) part tracked for `host`
/// to stdout, the report to `report_to`; a summary on stderr. A host the registry does not
/// know is refused (its links would fail their TLS handshake).
pub fn rewrite(
    config: &Path,
    host: &str,
    (workspace, message): (u64, u64),
    (text, pixel): (bool, bool),
    report_to: Option<&Path>,
) -> Outcome {
    use std::io::{Read, Write};
    let (s, c) = control(config)?;
    let host = normalize_host(host).ok_or_else(|| format!("--host {host:?}: not a host name"))?;
    let mut doc = Vec::new();
    std::io::stdin()
        .take(crate::rewrite::MAX_DOCUMENT as u64 + 1)
        .read_to_end(&mut doc)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    let standing = standing(&c, &host)?;
    let minter = Minter::new(s.keyring.clone(), &s.link_scheme, Unregistered::Refuse);
    let opts = crate::rewrite::Options {
        host,
        workspace,
        message,
        text,
        pixel,
        issued: crate::time::unix_s() as u64,
    };
    let done =
        crate::rewrite::rewrite(&minter, &standing, &opts, &doc).map_err(|e| e.to_string())?;
    if let Some(path) = report_to {
        let json = serde_json::to_vec_pretty(&done.report).expect("reports serialize");
        std::fs::write(path, json).map_err(|e| format!("--report {}: {e}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&done.document)
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write stdout: {e}"))?;
    let left = done.report.len() - done.tracked();
    eprintln!(
        "{} link(s) tracked, {left} left alone{}",
        done.tracked(),
        if done.pixel.is_some() {
            ", open pixel added"
        } else {
            ""
        }
    );
    Ok(true)
}

/// Prints what a tracked URL carries and whether it verifies for its host (`Ok(false)` when
/// it does not).
pub fn decode(config: &Path, url: &str) -> Outcome {
    let s = load(config)?;
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("expected a URL starting with http:// or https://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = normalize_host(authority).ok_or("the URL has no valid host")?;
    let path = path.split(['?', '#']).next().unwrap_or("");
    let token = path
        .strip_prefix("/c/")
        .or_else(|| path.strip_prefix("/o/"))
        .ok_or("not a tracked link: the path must be /c/<token> or /o/<token>")?;
    let link = s
        .keyring
        .inspect(token)
        .map_err(|e| format!("cannot decode: {e}"))?;
    println!("host:      {host}");
    let kind = if link.trap {
        "click (trap: hide it in the email; its clicks are recorded as machine)"
    } else {
        link.kind.event_type()
    };
    println!("kind:      {kind}");
    println!("key id:    {}", link.key_id);
    println!("workspace: {}", link.workspace);
    println!("message:   {}", link.message);
    println!("link:      {}", link.link);
    println!("issued:    {} (Unix seconds)", link.issued);
    if link.kind == Kind::Click {
        println!("url:       {}", link.url);
    }
    let (valid, verdict) = match s.keyring.verify(&host, token) {
        Ok(_) => (true, "valid for this host".to_string()),
        Err(TokenError::WrongHost) => (
            false,
            "INVALID: genuine, but minted for another host (answered 403 Invalid link security token)"
                .to_string(),
        ),
        Err(e) => (false, format!("INVALID: {e}")),
    };
    println!("signature: {verdict}");
    Ok(valid)
}
