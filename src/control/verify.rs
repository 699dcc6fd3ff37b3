//! Domain verification: checks what the customer was asked to set up, and says exactly what is
//! wrong when it is not.
//!
//! 1. DNS: the domain is a CNAME to `verify.target`, or its A/AAAA records land on
//!    `verify.target_addrs`. Addresses in Cloudflare's ranges mean the record is "Proxied".
//! 2. HTTP: a request to the domain for `/.well-known/linkedge/verify/<nonce>` reaches a
//!    linkedge node (which knows the one-time nonce from Redis) with the Host header intact; a
//!    proxy that rewrites Host (Fastly's "Override default host") is named as such.

use super::ControlError;
use crate::acme::Acme;
use crate::config;
use crate::registry::{Registry, State};
use crate::store::Db;
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RecordType;
use ipnet::IpNet;
use redis::AsyncCommands;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Cloudflare's published ranges: a domain resolving here is proxied by Cloudflare.
const CLOUDFLARE: &[&str] = &[
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
];

fn cloudflare(ip: &IpAddr) -> bool {
    CLOUDFLARE
        .iter()
        .filter_map(|n| n.parse::<IpNet>().ok())
        .any(|n| n.contains(ip))
}

/// Checks domains.
pub struct Verifier {
    resolver: TokioResolver,
    cfg: config::Verify,
    db: Db,
}

fn list(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Verifier {
    /// A verifier using `cfg.nameservers` (or the system's) and Redis for nonces.
    pub fn new(cfg: config::Verify, db: Db) -> anyhow::Result<Verifier> {
        let resolver = crate::dns::resolver(&cfg.nameservers)?;
        Ok(Verifier { resolver, cfg, db })
    }

    /// Runs both checks; `Unprocessable` says what is wrong, in words for the customer;
    /// `Unavailable` when linkedge's own state (Redis) failed.
    pub async fn verify(&self, host: &str) -> Result<(), ControlError> {
        let addrs = self.dns(host).await.map_err(ControlError::Unprocessable)?;
        self.http(host, &addrs).await
    }

    async fn dns(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let target = self
            .cfg
            .target
            .as_deref()
            .map(|t| t.trim_end_matches('.').to_ascii_lowercase());
        let fqdn = format!("{host}.");
        if let Ok(l) = self.resolver.lookup(fqdn.as_str(), RecordType::CNAME).await
            && let Some(cname) = l.answers().iter().find_map(|r| match &r.data {
                hickory_resolver::proto::rr::RData::CNAME(c) => Some(c.0.to_ascii()),
                _ => None,
            })
        {
            let cname = cname.trim_end_matches('.').to_ascii_lowercase();
            if let Some(t) = &target
                && cname != *t
            {
                return Err(format!(
                    "{host} is a CNAME to {cname}, not to {t}: point it at {t}"
                ));
            }
        }
        let addrs: Vec<IpAddr> = match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(l) => l.iter().collect(),
            Err(_) => Vec::new(),
        };
        let want = target
            .clone()
            .unwrap_or_else(|| list(&self.cfg.target_addrs));
        if addrs.is_empty() {
            return Err(format!(
                "{host} does not resolve: add a CNAME record pointing to {want}"
            ));
        }
        if addrs.iter().any(cloudflare) {
            return Err(format!(
                "{host} resolves to Cloudflare ({}): its DNS record is Proxied; set the Proxy status to \"DNS only\" so we can issue its certificate",
                list(&addrs)
            ));
        }
        if !self.cfg.target_addrs.is_empty()
            && !addrs.iter().any(|a| self.cfg.target_addrs.contains(a))
        {
            return Err(format!(
                "{host} resolves to {}, not to {want} ({})",
                list(&addrs),
                list(&self.cfg.target_addrs)
            ));
        }
        Ok(addrs)
    }

    async fn http(&self, host: &str, addrs: &[IpAddr]) -> Result<(), ControlError> {
        let nonce = format!("{:032x}", rand::random::<u128>());
        let key = self.db.keys().verify_nonce(&nonce);
        let stored: redis::RedisResult<()> = match self.db.conn().await {
            Ok(mut conn) => conn.set_ex(&key, host, 300).await,
            Err(e) => Err(e),
        };
        stored.map_err(|e| {
            ControlError::Unavailable(format!("cannot store the verification nonce: {e}"))
        })?;
        let port = self.cfg.http_port.unwrap_or(80);
        let path = format!("/.well-known/linkedge/verify/{nonce}");
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            get(SocketAddr::new(addrs[0], port), host, &path),
        )
        .await;
        if let Ok(mut conn) = self.db.conn().await {
            let _: redis::RedisResult<()> = conn.del(&key).await;
        }
        let (status, headers, body) = match result {
            Err(_) => {
                return Err(ControlError::Unprocessable(format!(
                    "HTTP check: http://{host}{path} did not answer within 10 s"
                )));
            }
            Ok(Err(e)) => {
                return Err(ControlError::Unprocessable(format!(
                    "HTTP check: cannot reach http://{host}:{port}/ ({e})"
                )));
            }
            Ok(Ok(r)) => r,
        };
        let header = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.as_str())
        };
        if header("cf-ray").is_some()
            || header("server").is_some_and(|s| s.eq_ignore_ascii_case("cloudflare"))
        {
            return Err(ControlError::Unprocessable(format!(
                "{host} is proxied by Cloudflare: set its DNS record's Proxy status to \"DNS only\""
            )));
        }
        if status != 200 {
            return Err(ControlError::Unprocessable(format!(
                "HTTP check: http://{host}{path} answered {status}, so the request did not reach linkedge: check the CNAME and any proxy in front"
            )));
        }
        let seen = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["host"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if seen != host {
            return Err(ControlError::Unprocessable(format!(
                "a proxy in front of {host} rewrites the Host header to {seen:?}: tracked links would fail with \"Invalid link security token\"; keep the Host unchanged (in Fastly, disable \"Override default host\")"
            )));
        }
        Ok(())
    }
}

/// What `domain verify` did.
#[derive(Debug)]
pub enum Verified {
    /// Verified; no ACME configured, or nothing else done.
    Verified,
    /// Verified, and its certificate issued.
    Issued(crate::tls::Info),
}

/// Verifies `host` (registered in `reg`), records the outcome in the registry, and with `acme`
/// orders its certificate at once. `Err` says what is wrong: for the customer
/// (`Unprocessable`), or that linkedge could not decide (`Unavailable`).
pub async fn verify_and_issue(
    reg: &Registry,
    cfg: &config::Verify,
    acme: Option<&Acme>,
    host: &str,
) -> Result<Verified, ControlError> {
    let d = reg
        .get(host)
        .await?
        .ok_or_else(|| ControlError::NotFound(format!("{host} is not registered: add it first")))?;
    let verifier = Verifier::new(cfg.clone(), reg.db().clone())
        .map_err(|e| ControlError::Unavailable(format!("cannot set up DNS look-ups: {e}")))?;
    match verifier.verify(&d.host).await {
        Ok(()) => {}
        Err(ControlError::Unprocessable(why)) => {
            reg.set_state(&d.host, State::Pending, &why).await?;
            return Err(ControlError::Unprocessable(format!(
                "{} is not verified: {why}",
                d.host
            )));
        }
        Err(e) => return Err(e),
    }
    reg.set_state(&d.host, State::Verified, "").await?;
    let Some(acme) = acme else {
        return Ok(Verified::Verified);
    };
    match acme.issue(&d.host, false).await {
        Ok(info) => {
            reg.set_state(&d.host, State::Issued, "").await?;
            Ok(Verified::Issued(info))
        }
        Err(e @ crate::acme::AcmeError::Redis(_)) => Err(ControlError::Unavailable(e.to_string())),
        Err(e) => {
            reg.set_state(&d.host, State::Verified, &e.to_string())
                .await?;
            Err(ControlError::Unprocessable(format!(
                "{} is verified but its certificate was not issued: {e} (the issuer retries in the background)",
                d.host
            )))
        }
    }
}

/// A plain HTTP/1.1 GET to `addr` with `Host: host`; (status, headers, body).
async fn get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<Response> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: linkedge-verify\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.take(MAX_RESPONSE as u64).read_to_end(&mut buf).await?;
    parse_response(&buf)
}

/// A response as the verifier reads it: status, headers in order, body.
pub type Response = (u16, Vec<(String, String)>, Vec<u8>);

/// The verifier reads at most this much of a response.
pub const MAX_RESPONSE: usize = 64 << 10;

/// An HTTP/1.x response as the verifier reads it, from whatever the domain's server sent:
/// (status, headers, body). Pure, and fuzzed (`fuzz/fuzz_targets/verify_response.rs`): the
/// bytes come from a server the customer points at.
pub fn parse_response(buf: &[u8]) -> std::io::Result<Response> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP response"))?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok((status, headers, buf[end + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_read_or_refused() {
        let (status, headers, body) =
            parse_response(b"HTTP/1.1 200 OK\r\nServer: cloudflare\r\nX: a:b\r\n\r\n{}").unwrap();
        assert_eq!(status, 200);
        assert_eq!(headers[0], ("Server".into(), "cloudflare".into()));
        assert_eq!(headers[1], ("X".into(), "a:b".into()));
        assert_eq!(body, b"{}");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 999999 Big\r\n\r\n").is_err());
    }

    #[test]
    fn cloudflare_ranges() {
        assert!(cloudflare(&"104.16.1.1".parse().unwrap()));
        assert!(cloudflare(&"2606:4700::1".parse().unwrap()));
        assert!(!cloudflare(&"127.0.0.1".parse().unwrap()));
    }
}
