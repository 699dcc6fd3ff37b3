//! Domain verification: checks what the customer was asked to set up, and says exactly what is
//! wrong when it is not.
//!
//! For a domain served with its own certificate:
//!
//! 1. DNS: the domain is a CNAME to `verify.target`, or its A/AAAA records land on
//!    `verify.target_addrs`. Addresses in Cloudflare's ranges mean the record is "Proxied".
//! 2. HTTP: a request to the domain for `/.well-known/linkedge/verify/<nonce>` reaches a
//!    linkedge node (which knows the one-time nonce from Redis) with the Host header intact; a
//!    proxy that rewrites Host (Fastly's "Override default host") is named as such.
//!
//! For a domain fronted by the customer's own proxy, the name may resolve anywhere (to that
//! proxy): the same nonce request goes through the proxy over HTTPS (`verify.https_port`, the
//! proxy's certificate verified for the name against the system roots and `verify.ca_file`),
//! and over HTTP if HTTPS does not pass.
//!
//! Every request carries the User-Agent `linkedge-verify/<version> (+<verify.user_agent_url>)`,
//! which a failed verify prints so the customer can let it through a firewall. What stands
//! between the request and linkedge is named when it is recognised (see [`obstacle`]): a
//! redirect to another host (a redirect rule, such as Cloudflare Bulk Redirects with "include
//! subdomains"), and a `403`/`503` or challenge page that linkedge did not write (a firewall).

use super::ControlError;
use crate::acme::Acme;
use crate::config;
use crate::edge::reply::{HOST_MISMATCH_BODY, UNAVAILABLE_BODY};
use crate::registry::{Registry, State};
use crate::store::Db;
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RecordType;
use ipnet::IpNet;
use openssl::ssl::{SslConnector, SslMethod};
use openssl::x509::{X509, X509VerifyResult};
use redis::AsyncCommands;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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

/// How the nonce request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP, on `verify.http_port`.
    Http,
    /// HTTPS, on `verify.https_port`, the certificate verified for the domain.
    Https,
}

impl Scheme {
    /// `http` or `https`, as in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The name the customer reads in a message.
    fn check(self) -> &'static str {
        match self {
            Scheme::Http => "HTTP check",
            Scheme::Https => "HTTPS check",
        }
    }
}

/// How a fronted domain passed: over which scheme, and why HTTPS did not when HTTP did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThroughProxy {
    /// The scheme the nonce came back over.
    pub over: Scheme,
    /// Why the HTTPS check did not pass, when the HTTP one did.
    pub https_error: Option<String>,
}

/// Checks domains.
pub struct Verifier {
    resolver: TokioResolver,
    cfg: config::Verify,
    db: Db,
    tls: SslConnector,
    /// The User-Agent of every request: [`config::Verify::user_agent`].
    user_agent: String,
}

fn list(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What to say when a CDN is found in front of a domain registered to get its own certificate:
/// both ways out.
fn proxied(host: &str, found: &str) -> String {
    format!(
        "{host} {found}, so linkedge cannot issue its certificate: either set its DNS record's Proxy status to \"DNS only\", or keep the proxy (which then serves {host}'s certificate) and register the domain as fronted: linkedge domain add {host} --workspace <id> --region <region> --fronted (admin API: PUT /v1/domains/{host} with \"fronted\": true)"
    )
}

/// The TLS client of the HTTPS check: the system's CA certificates, found where the system keeps
/// them (the OpenSSL linkedge is built with is vendored, and its default paths are not the
/// system's), and those of `verify.ca_file`. Errors name the field.
pub fn connector(cfg: &config::Verify) -> anyhow::Result<SslConnector> {
    let mut b = SslConnector::builder(SslMethod::tls_client())
        .map_err(|e| anyhow::anyhow!("verify: cannot set up TLS: {e}"))?;
    let system = openssl_probe::probe();
    if system.cert_file.is_some() || system.cert_dir.is_some() {
        b.load_verify_locations(system.cert_file.as_deref(), system.cert_dir.as_deref())
            .map_err(|e| {
                anyhow::anyhow!("verify: cannot load the system's CA certificates: {e}")
            })?;
    }
    if let Some(p) = &cfg.ca_file {
        let pem = std::fs::read(p)
            .map_err(|e| anyhow::anyhow!("verify.ca_file: cannot read {}: {e}", p.display()))?;
        let roots = X509::stack_from_pem(&pem).map_err(|e| {
            anyhow::anyhow!("verify.ca_file: {}: not PEM certificates: {e}", p.display())
        })?;
        anyhow::ensure!(
            !roots.is_empty(),
            "verify.ca_file: {} holds no certificate",
            p.display()
        );
        for root in roots {
            b.cert_store_mut()
                .add_cert(root)
                .map_err(|e| anyhow::anyhow!("verify.ca_file: {}: {e}", p.display()))?;
        }
    }
    Ok(b.build())
}

impl Verifier {
    /// A verifier using `cfg.nameservers` (or the system's) and Redis for nonces.
    pub fn new(cfg: config::Verify, db: Db) -> anyhow::Result<Verifier> {
        let resolver = crate::dns::resolver(&cfg.nameservers)?;
        let tls = connector(&cfg)?;
        Ok(Verifier {
            resolver,
            user_agent: cfg.user_agent(),
            cfg,
            db,
            tls,
        })
    }

    /// Runs both checks on a domain served with its own certificate; `Unprocessable` says what
    /// is wrong, in words for the customer; `Unavailable` when linkedge's own state (Redis)
    /// failed.
    pub async fn verify(&self, host: &str) -> Result<(), ControlError> {
        let addrs = self.dns(host).await.map_err(ControlError::Unprocessable)?;
        self.nonce(host, addrs[0], &[Scheme::Http], false)
            .await
            .map(|_| ())
    }

    /// Checks a domain fronted by the customer's own proxy: it resolves (anywhere), and the
    /// nonce comes back through it over HTTPS, else over HTTP. Errors as [`Verifier::verify`].
    pub async fn verify_fronted(&self, host: &str) -> Result<ThroughProxy, ControlError> {
        let addrs = self.resolve(host).await;
        let Some(addr) = addrs.first() else {
            return Err(ControlError::Unprocessable(format!(
                "{host} does not resolve: point it at the proxy or CDN in front of linkedge (a CNAME or A record)"
            )));
        };
        let (over, mut failed) = self
            .nonce(host, *addr, &[Scheme::Https, Scheme::Http], true)
            .await?;
        Ok(ThroughProxy {
            over,
            https_error: failed.pop(),
        })
    }

    /// The addresses `host` resolves to (none when it does not).
    async fn resolve(&self, host: &str) -> Vec<IpAddr> {
        match self.resolver.lookup_ip(format!("{host}.").as_str()).await {
            Ok(l) => l.iter().collect(),
            Err(_) => Vec::new(),
        }
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
        let addrs = self.resolve(host).await;
        let want = target
            .clone()
            .unwrap_or_else(|| list(&self.cfg.target_addrs));
        if addrs.is_empty() {
            return Err(format!(
                "{host} does not resolve: add a CNAME record pointing to {want}"
            ));
        }
        if addrs.iter().any(cloudflare) {
            return Err(proxied(
                host,
                &format!(
                    "resolves to Cloudflare ({}): its DNS record is Proxied",
                    list(&addrs)
                ),
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

    /// Stores a one-time nonce and requests it from `host` at `addr` over each of `schemes` in
    /// turn until one brings it back intact: that scheme, and why the ones before it did not
    /// pass. `Unprocessable` with every reason when none did.
    async fn nonce(
        &self,
        host: &str,
        addr: IpAddr,
        schemes: &[Scheme],
        fronted: bool,
    ) -> Result<(Scheme, Vec<String>), ControlError> {
        let nonce = format!("{:032x}", rand::random::<u128>());
        let key = self.db.keys().verify_nonce(&nonce);
        let stored: redis::RedisResult<()> = match self.db.conn().await {
            Ok(mut conn) => conn.set_ex(&key, host, 300).await,
            Err(e) => Err(e),
        };
        stored.map_err(|e| {
            ControlError::Unavailable(format!("cannot store the verification nonce: {e}"))
        })?;
        let path = format!("/.well-known/linkedge/verify/{nonce}");
        let mut failed = Vec::new();
        let mut passed = None;
        for &scheme in schemes {
            match self.request(scheme, addr, host, &path, fronted).await {
                Ok(()) => {
                    passed = Some(scheme);
                    break;
                }
                Err(why) => failed.push(why),
            }
        }
        if let Ok(mut conn) = self.db.conn().await {
            let _: redis::RedisResult<()> = conn.del(&key).await;
        }
        match passed {
            Some(scheme) => Ok((scheme, failed)),
            None => Err(ControlError::Unprocessable(failed.join("; "))),
        }
    }

    /// One nonce request over `scheme`: `Ok` when a linkedge node answered it with the Host
    /// intact, else what is wrong, in words for the customer.
    async fn request(
        &self,
        scheme: Scheme,
        addr: IpAddr,
        host: &str,
        path: &str,
        fronted: bool,
    ) -> Result<(), String> {
        let (check, sc) = (scheme.check(), scheme.as_str());
        let (status, headers, body) = tokio::time::timeout(
            Duration::from_secs(10),
            self.fetch(scheme, addr, host, path),
        )
        .await
        .map_err(|_| format!("{check}: {sc}://{host}{path} did not answer within 10 s"))??;
        let header = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.as_str())
        };
        // A fronted domain has a proxy in front by design.
        if !fronted
            && (header("cf-ray").is_some()
                || header("server").is_some_and(|s| s.eq_ignore_ascii_case("cloudflare")))
        {
            return Err(proxied(host, "is proxied by Cloudflare"));
        }
        if let Some(why) = obstacle(status, &headers, &body, host, &self.user_agent) {
            return Err(format!("{check}: {why}"));
        }
        if status == 503 && body == UNAVAILABLE_BODY.as_bytes() {
            return Err(format!(
                "{check}: linkedge answered {sc}://{host}{path} with 503: its shared state (Redis) was unavailable; try again"
            ));
        }
        if status != 200 {
            let check_what = if fronted {
                "that the proxy in front forwards it to linkedge"
            } else {
                "the CNAME and any proxy in front"
            };
            let to = match header("location") {
                Some(l) if REDIRECTS.contains(&status) => format!(" (to {})", printable(l)),
                _ => String::new(),
            };
            return Err(format!(
                "{check}: {sc}://{host}{path} answered {status}{to}, so the request did not reach linkedge: check {check_what}"
            ));
        }
        let seen = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["host"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if seen != host {
            return Err(format!(
                "a proxy in front of {host} rewrites the Host header to {seen:?}: tracked links would fail with \"Invalid link security token\"; keep the Host unchanged (in Fastly, disable \"Override default host\")"
            ));
        }
        Ok(())
    }

    /// The nonce request's answer from `host` at `addr` over `scheme`, or what went wrong
    /// before one came.
    async fn fetch(
        &self,
        scheme: Scheme,
        addr: IpAddr,
        host: &str,
        path: &str,
    ) -> Result<Response, String> {
        let (check, sc) = (scheme.check(), scheme.as_str());
        let port = match scheme {
            Scheme::Http => self.cfg.http_port.unwrap_or(80),
            Scheme::Https => self.cfg.https_port.unwrap_or(443),
        };
        let tcp = tokio::net::TcpStream::connect(SocketAddr::new(addr, port))
            .await
            .map_err(|e| format!("{check}: cannot reach {sc}://{host}:{port}/ ({e})"))?;
        let got = match scheme {
            Scheme::Http => exchange(tcp, host, path, &self.user_agent).await,
            Scheme::Https => {
                let tls = self.handshake(tcp, host).await.map_err(|why| {
                    format!("{check}: the TLS handshake with {sc}://{host}:{port}/ failed: {why}")
                })?;
                exchange(tls, host, path, &self.user_agent).await
            }
        };
        got.map_err(|e| format!("{check}: no HTTP answer from {sc}://{host}:{port}/ ({e})"))
    }

    /// The TLS handshake of the HTTPS check: SNI `host`, the certificate verified for `host`.
    /// `Err` says why it failed, naming the certificate problem when there is one.
    async fn handshake(
        &self,
        tcp: tokio::net::TcpStream,
        host: &str,
    ) -> Result<tokio_openssl::SslStream<tokio::net::TcpStream>, String> {
        let ssl = self
            .tls
            .configure()
            .and_then(|c| c.into_ssl(host))
            .map_err(|e| e.to_string())?;
        let mut s = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
        let connected = std::pin::Pin::new(&mut s).connect().await;
        if let Err(e) = connected {
            let v = s.ssl().verify_result();
            return Err(if v == X509VerifyResult::OK {
                e.to_string()
            } else {
                format!(
                    "the certificate it presented is not valid for {host} ({})",
                    v.error_string()
                )
            });
        }
        Ok(s)
    }
}

/// What `domain verify` did.
#[derive(Debug)]
pub enum Verified {
    /// Verified; no ACME configured, or nothing else done.
    Verified,
    /// Verified, and its certificate issued.
    Issued(crate::tls::Info),
    /// Verified through the customer's own proxy (a fronted domain): no certificate is ordered,
    /// the proxy serves its own.
    Fronted(ThroughProxy),
}

/// Verifies `host` (registered in `reg`), records the outcome in the registry, and with `acme`
/// orders its certificate at once, unless the domain is fronted by the customer's own proxy
/// (then it stays `verified`). `Err` says what is wrong: for the customer (`Unprocessable`), or
/// that linkedge could not decide (`Unavailable`).
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
        .map_err(|e| ControlError::Unavailable(format!("cannot set up the verifier: {e:#}")))?;
    let checked = if d.fronted {
        verifier.verify_fronted(&d.host).await.map(Some)
    } else {
        verifier.verify(&d.host).await.map(|()| None)
    };
    let through = match checked {
        Ok(through) => through,
        Err(ControlError::Unprocessable(why)) => {
            reg.set_state(&d.host, State::Pending, &why).await?;
            // Whatever failed, a firewall may be part of it: name what it must let through.
            let ua = cfg.user_agent();
            let allow = if why.contains(&ua) {
                String::new()
            } else {
                format!(" (verify's requests carry the User-Agent '{ua}')")
            };
            return Err(ControlError::Unprocessable(format!(
                "{} is not verified: {why}{allow}",
                d.host
            )));
        }
        Err(e) => return Err(e),
    };
    reg.set_state(&d.host, State::Verified, "").await?;
    if let Some(through) = through {
        return Ok(Verified::Fronted(through));
    }
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

/// A plain HTTP/1.1 GET of `path` with `Host: host` and `User-Agent: user_agent` over `s` (TCP,
/// or TLS on it): (status, headers, body).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    host: &str,
    path: &str,
    user_agent: &str,
) -> std::io::Result<Response> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while buf.len() < MAX_RESPONSE {
        match s.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n.min(MAX_RESPONSE - buf.len())]),
            // A server that closes TLS without close_notify, or resets after answering: what
            // came is the answer.
            Err(_) if !buf.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    parse_response(&buf)
}

/// The statuses of a redirect.
const REDIRECTS: [u16; 5] = [301, 302, 303, 307, 308];

/// Words of the pages firewalls and bot protections answer with instead of the site (Cloudflare's
/// "Attention Required!" and "Just a moment...", challenge and CAPTCHA pages), lowercase.
const CHALLENGE_WORDS: [&str; 4] = [
    "attention required",
    "just a moment",
    "challenge",
    "captcha",
];

/// What stands between the nonce request for `host` and linkedge, judged from the answer (status,
/// headers, body) when it is not linkedge's, in words for the customer; `None` when nothing is
/// recognised (linkedge's own answers, and whatever the caller judges). Pure:
///
/// - a redirect to another host: a redirect rule sends the requests away;
/// - a `403` or `503` linkedge did not write (its bodies are exact), or a challenge page (the
///   header `cf-mitigated: challenge`, or a 403/429/503 page with a challenge's words): a firewall,
///   and `user_agent` is what it must allow.
pub fn obstacle(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    host: &str,
    user_agent: &str,
) -> Option<String> {
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    };
    if REDIRECTS.contains(&status) {
        let to = header("location").unwrap_or("");
        return location_host(to)
            .filter(|h| !h.eq_ignore_ascii_case(host))
            .map(|_| {
                format!(
                    "requests to {host} are redirected to {}: a redirect rule (for example Cloudflare Bulk Redirects with 'include subdomains') sends them away from linkedge; exclude {host} from it",
                    printable(to)
                )
            });
    }
    // linkedge's own 403 and 503 have exact bodies; any other is someone else's.
    let refused = match status {
        403 => body != HOST_MISMATCH_BODY.as_bytes(),
        503 => body != UNAVAILABLE_BODY.as_bytes(),
        _ => false,
    };
    let text = String::from_utf8_lossy(&body[..body.len().min(16 << 10)]).to_ascii_lowercase();
    let challenge = header("cf-mitigated").is_some_and(|v| v.eq_ignore_ascii_case("challenge"))
        || (matches!(status, 403 | 429 | 503) && CHALLENGE_WORDS.iter().any(|w| text.contains(w)));
    if !refused && !challenge {
        return None;
    }
    let page = if challenge {
        " with a challenge page"
    } else {
        ""
    };
    Some(format!(
        "a firewall in front of linkedge answered {status}{page} to requests for {host}: allow the User-Agent '{user_agent}' (for example a Cloudflare WAF exception on http.user_agent)"
    ))
}

/// The host a `Location` value points at (lowercase, without port or user), `None` for a
/// relative one (the same host).
fn location_host(location: &str) -> Option<String> {
    let l = location.trim();
    let lower = l.to_ascii_lowercase();
    let rest = if let Some(r) = l.strip_prefix("//") {
        r
    } else {
        let colon = lower.find("://")?;
        // A scheme is letters, digits, "+", "-" and "."; anything else before "://" is a path.
        if colon == 0
            || !lower[..colon]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return None;
        }
        &l[colon + 3..]
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        hostport.split(':').next().unwrap_or("")
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

/// `s`, from a server the customer points at, fit for a message: control characters replaced,
/// at most 200 characters.
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().nth(200).is_some() {
        out.push_str("...");
    }
    out
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
    fn the_https_check_trusts_verify_ca_file_or_names_it() {
        let dev = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-dev/dev-ca.pem");
        let with = |p: std::path::PathBuf| {
            connector(&config::Verify {
                ca_file: Some(p),
                ..Default::default()
            })
        };
        with(dev).unwrap();
        let e = with("/nonexistent/ca.pem".into()).unwrap_err().to_string();
        assert!(
            e.starts_with("verify.ca_file: cannot read /nonexistent/ca.pem"),
            "{e}"
        );
        let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-dev/leaf.key");
        let e = with(key).unwrap_err().to_string();
        assert!(e.starts_with("verify.ca_file: "), "{e}");
    }

    #[test]
    fn obstacles_are_named_and_linkedge_answers_are_not() {
        const UA: &str = "linkedge-verify/0.1.0 (+https://linkedge.example/verify)";
        let h = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let host = "link.example.com";
        let away = obstacle(
            301,
            &h("Location", "https://www.example.com/"),
            b"",
            host,
            UA,
        )
        .unwrap();
        assert_eq!(
            away,
            "requests to link.example.com are redirected to https://www.example.com/: a redirect rule (for example Cloudflare Bulk Redirects with 'include subdomains') sends them away from linkedge; exclude link.example.com from it"
        );
        for to in [
            "/elsewhere",
            "https://LINK.example.com:8443/x",
            "http://link.example.com.",
        ] {
            assert_eq!(
                obstacle(308, &h("location", to), b"", host, UA),
                None,
                "{to}"
            );
        }
        assert!(
            obstacle(
                302,
                &h("location", "//www.example.com/\x1b[2J"),
                b"",
                host,
                UA
            )
            .unwrap()
            .contains("redirected to //www.example.com/?[2J:")
        );
        let wall = obstacle(
            403,
            &h("Server", "nginx"),
            b"<html>403 Forbidden</html>",
            host,
            UA,
        );
        assert_eq!(
            wall.unwrap(),
            format!(
                "a firewall in front of linkedge answered 403 to requests for link.example.com: allow the User-Agent '{UA}' (for example a Cloudflare WAF exception on http.user_agent)"
            )
        );
        assert!(
            obstacle(503, &[], b"<title>Just a moment...</title>", host, UA)
                .unwrap()
                .contains("answered 503 with a challenge page")
        );
        assert!(obstacle(200, &h("cf-mitigated", "challenge"), b"", host, UA).is_some());
        assert!(obstacle(429, &[], b"Attention Required! | Cloudflare", host, UA).is_some());
        // linkedge's own answers are judged elsewhere.
        assert_eq!(
            obstacle(403, &[], b"Invalid link security token", host, UA),
            None
        );
        assert_eq!(obstacle(503, &[], b"Service Unavailable\n", host, UA), None);
        assert_eq!(obstacle(404, &[], b"Not Found\n", host, UA), None);
        assert_eq!(obstacle(200, &[], b"{\"host\":\"x\"}", host, UA), None);
    }

    #[test]
    fn location_hosts() {
        assert_eq!(location_host("/a"), None);
        assert_eq!(location_host("a/b://c"), None);
        assert_eq!(
            location_host("HTTPS://u:p@Www.Example.com:8443/x?y").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(
            location_host("http://[2001:db8::1]:80/").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            location_host("//cdn.example.net").as_deref(),
            Some("cdn.example.net")
        );
    }

    #[test]
    fn cloudflare_ranges() {
        assert!(cloudflare(&"104.16.1.1".parse().unwrap()));
        assert!(cloudflare(&"2606:4700::1".parse().unwrap()));
        assert!(!cloudflare(&"127.0.0.1".parse().unwrap()));
    }
}
