//! The configuration file as written: serde types with `deny_unknown_fields`, every default
//! written once, every field documented. Nothing here is validated beyond its type; see
//! [`super::Settings`] for the checked, typed settings the server runs on.

use super::units::{de_duration, de_size};
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The configuration file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Where linkedge listens.
    pub listen: Listen,
    /// The certificate served on the HTTPS listener.
    pub tls: Tls,
    /// The Redis that receives click and open events.
    #[serde(default)]
    pub redis: Redis,
    /// The keys that sign and verify tracked links.
    pub links: Links,
    /// Who the client is when proxies sit in front.
    #[serde(default)]
    pub clients: Clients,
    /// The event queue, writer and spool.
    #[serde(default)]
    pub events: Events,
    /// Process settings handed to Pingora.
    #[serde(default)]
    pub server: Server,
    /// Deadlines and connection caps on the public listeners.
    #[serde(default)]
    pub limits: Limits,
    /// Regional track backends: every request the edge does not answer itself (anything but
    /// links, pixels and `/health`) is proxied to the region of its Host. Empty: answered 404.
    #[serde(default)]
    pub regions: BTreeMap<String, RegionConfig>,
    /// Which region serves which Host, besides the domain registry.
    #[serde(default)]
    pub routing: Routing,
    /// The domain registry's in-memory mirror on each node.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// The block list: rules that stop bad links on every node.
    #[serde(default)]
    pub blocks: BlocksConfig,
    /// How machine clicks and opens are recognised (the events' `agent` and `agent_reasons`).
    #[serde(default)]
    pub bots: Bots,
    /// One JSON line per request (off by default).
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// The admin API on the metrics listener.
    #[serde(default)]
    pub admin: Admin,
    /// Per-domain certificates from Redis, chosen by SNI. Unset: every HTTPS handshake gets
    /// `tls.cert`.
    #[serde(default)]
    pub certs: Option<Certs>,
    /// Certificates from an ACME CA for verified domains (needs `certs`). Unset: none are
    /// ordered.
    #[serde(default)]
    pub acme: Option<Acme>,
    /// How `linkedge domain verify` checks a customer's DNS and proxy setup.
    #[serde(default)]
    pub verify: Verify,
}

/// The ACME client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    /// Directory URL: Let's Encrypt production
    /// `https://acme-v02.api.letsencrypt.org/directory`, staging
    /// `https://acme-staging-v02.api.letsencrypt.org/directory`, or a test CA.
    pub directory: String,
    /// PEM file of a root trusted for the directory's HTTPS, on top of the system roots (a test
    /// CA such as pebble). Relative to the config file's directory. Default: none.
    #[serde(default)]
    pub extra_root: Option<PathBuf>,
    /// Contact URIs for the account, such as `mailto:ops@example.com`. Default: none.
    #[serde(default)]
    pub contact: Vec<String>,
    /// Time between passes over the registry for domains to issue or renew. Default `30s`.
    #[serde(default = "default_scan", deserialize_with = "de_duration")]
    pub scan_interval: Duration,
    /// Longest wait for the CA to validate and issue one order. Default `90s`.
    #[serde(default = "default_order_timeout", deserialize_with = "de_duration")]
    pub order_timeout: Duration,
    /// Longest time a handshake waits for an on-demand order of its name (the order itself
    /// goes on in the background, up to `order_timeout`); after it the handshake gets the
    /// fallback, if any. Must be below `limits.handshake_timeout`. Default `5s`.
    #[serde(default = "default_on_demand_wait", deserialize_with = "de_duration")]
    pub on_demand_wait: Duration,
    /// First wait after a failed order for a domain; doubles per failure. Default `60s`.
    #[serde(default = "default_backoff_base", deserialize_with = "de_duration")]
    pub backoff_base: Duration,
    /// Longest wait between attempts for a domain. Default `6h` written as `360m`.
    #[serde(default = "default_backoff_max", deserialize_with = "de_duration")]
    pub backoff_max: Duration,
    /// Failed first issuances in a row after which a domain is marked `failed`. Default 5.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// Limits the issuer keeps to, counted in Redis across the fleet, so the CA never refuses
    /// us. Defaults: Let's Encrypt's published limits.
    #[serde(default)]
    pub limits: AcmeLimits,
    /// Also order an RSA-2048 certificate per domain, served to clients that cannot do ECDSA
    /// (each domain then costs two orders). Default false: ECDSA P-256 only.
    #[serde(default)]
    pub rsa: bool,
}

/// Issuance limits, per the CA's published rate limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeLimits {
    /// New orders per account in any 3 hours. Default 300.
    pub orders_per_3h: u32,
    /// Failed validations per host name in any hour. Default 5.
    pub failed_validations_per_hour: u32,
    /// New certificates per registered domain (by the Public Suffix List: `link.shop.co.uk`
    /// counts against `shop.co.uk`) in any 7 days; renewals count but are never held back.
    /// Default 50.
    pub certs_per_domain_per_week: u32,
}

impl Default for AcmeLimits {
    fn default() -> Self {
        AcmeLimits {
            orders_per_3h: 300,
            failed_validations_per_hour: 5,
            certs_per_domain_per_week: 50,
        }
    }
}

fn default_scan() -> Duration {
    Duration::from_secs(30)
}
fn default_order_timeout() -> Duration {
    Duration::from_secs(90)
}
fn default_on_demand_wait() -> Duration {
    Duration::from_secs(5)
}
fn default_backoff_base() -> Duration {
    Duration::from_secs(60)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(6 * 3600)
}
fn default_max_failures() -> u32 {
    5
}

/// Domain verification.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Verify {
    /// The name customers point their CNAME at, such as `track.linkedge.example`.
    pub target: Option<String>,
    /// The addresses the target resolves to (the edge's); a domain whose A/AAAA records land
    /// on one of these passes the DNS check.
    pub target_addrs: Vec<std::net::IpAddr>,
    /// DNS servers (`ip:port`) for verification look-ups. Default: the system's resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// Port of the HTTP check to the domain. Default 80.
    pub http_port: Option<u16>,
    /// Port of the HTTPS check to a domain fronted by the customer's own proxy, which is tried
    /// before the HTTP check. Default 443.
    pub https_port: Option<u16>,
    /// PEM file of CA certificates trusted by the HTTPS check, on top of the system roots (a
    /// test CA). Relative to the config file's directory. Default: the system roots only.
    pub ca_file: Option<PathBuf>,
    /// The page named in the User-Agent of every request `domain verify` makes,
    /// `linkedge-verify/<version> (+<this URL>)`: what customers allow through their firewall
    /// (a Cloudflare WAF exception on `http.user_agent`), and where whoever reads their logs
    /// learns what the requests are. An `http://` or `https://` URL of printable ASCII without
    /// spaces or parentheses. Default [`DEFAULT_USER_AGENT_URL`].
    pub user_agent_url: Option<String>,
}

/// The page the verifier's User-Agent names when `verify.user_agent_url` is not set.
pub const DEFAULT_USER_AGENT_URL: &str = "https://linkedge.example/verify";

impl Verify {
    /// The User-Agent of every request `domain verify` makes:
    /// `linkedge-verify/<version> (+<verify.user_agent_url>)`.
    pub fn user_agent(&self) -> String {
        let url = self
            .user_agent_url
            .as_deref()
            .unwrap_or(DEFAULT_USER_AGENT_URL);
        format!("linkedge-verify/{} (+{url})", env!("CARGO_PKG_VERSION"))
    }
}

/// What is wrong with `url` as `verify.user_agent_url`, if anything: it is sent inside the
/// User-Agent header's comment, so control characters, spaces, non-ASCII and parentheses would
/// break the header or the comment.
pub fn user_agent_url_problem(url: &str) -> Option<&'static str> {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    if url.chars().any(char::is_control) {
        Some("must not contain control characters (it is sent in the User-Agent header)")
    } else if !url
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'(' && b != b')')
    {
        Some(
            "expected printable ASCII without spaces or parentheses (it is sent in the User-Agent header)",
        )
    } else if rest.is_none_or(str::is_empty) {
        Some("expected an http:// or https:// URL")
    } else if url.len() > 512 {
        Some("must be at most 512 characters")
    } else {
        None
    }
}

/// The certificate store: per-domain certificates in Redis (private keys encrypted with
/// AES-256-GCM), cached in memory and chosen per SNI during the handshake.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certs {
    /// Id of the master key that encrypts newly stored private keys; must be listed.
    pub master_key: u32,
    /// Every master key that can decrypt stored keys: `{id, secret_env}` or `{id, secret_file}`,
    /// each secret 64 hex characters (32 bytes). Keep a retired key listed until every
    /// certificate it encrypted has been renewed.
    pub master_keys: Vec<LinkKey>,
    /// Certificates held in memory (each about 7 KiB); the least recently used is evicted. As
    /// many names without a certificate are remembered, apart. Default 10000.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    /// How long a name with no certificate is remembered, so a scanner's random SNI does not
    /// reach Redis on every handshake. Default `60s`.
    #[serde(default = "default_negative_ttl", deserialize_with = "de_duration")]
    pub negative_ttl: Duration,
    /// Serve `tls.cert` when the SNI has no certificate; otherwise such handshakes fail.
    /// Handshakes without SNI, or for a name `tls.cert` covers (the edge's own names), get
    /// `tls.cert` either way. Default false.
    #[serde(default)]
    pub fallback: bool,
}

fn default_cache_size() -> usize {
    10_000
}

fn default_negative_ttl() -> Duration {
    Duration::from_secs(60)
}

/// The admin API (`/v1/...` on `listen.metrics`), which manages the domain registry. It answers
/// only requests with `Authorization: Bearer <token>`; with no token configured it is off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Environment variable holding the bearer token (at least 32 bytes).
    pub token_env: Option<String>,
    /// File holding the bearer token (at least 32 bytes; trailing newline ignored). Relative
    /// paths are relative to the config file's directory.
    pub token_file: Option<PathBuf>,
    /// The older name of `redis.prefix`, still read; set only one of the two.
    #[serde(default)]
    pub redis_prefix: Option<String>,
}

/// One region's track backends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// The backends; at least one.
    pub backends: Vec<Backend>,
    /// `round_robin` (default) or `ketama` (consistent hashing on the Host, so one customer
    /// domain keeps to one backend while the set is stable).
    #[serde(default)]
    pub selection: Selection,
    /// How backends are checked.
    #[serde(default)]
    pub health_check: HealthCheck,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Region whose backends take this region's traffic when none of its own is healthy. Leave
    /// unset to keep traffic in the region (data residency); `eu` traffic reaches `us` only if
    /// the `eu` region names `us` here. Default: none.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Further backends tried after a connection failure (each a different backend). Default 2.
    #[serde(default = "default_retries")]
    pub retries: usize,
    /// PEM file of CA certificates trusted for TLS backends, on top of the system roots.
    /// Relative paths are relative to the config file's directory. Default: system roots only.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How often backend host names are resolved again (a load balancer's addresses change);
    /// every address a name resolves to becomes a backend. A look-up that fails keeps the
    /// addresses from the one before. Default `30s`.
    #[serde(default = "default_resolve_interval", deserialize_with = "de_duration")]
    pub resolve_interval: Duration,
    /// DNS servers (`ip:port`) for backend host names. Default: the system's resolv.conf.
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
}

fn default_retries() -> usize {
    2
}

fn default_resolve_interval() -> Duration {
    Duration::from_secs(30)
}

/// How backends of a region are chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Each backend in turn, by weight.
    #[default]
    RoundRobin,
    /// Consistent hashing (Ketama) on the request's Host.
    Ketama,
}

/// One track backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// `host:port` or `ip:port`; a host name is resolved at start and every
    /// `resolve_interval`.
    pub addr: String,
    /// Speak TLS to it. Default false.
    #[serde(default)]
    pub tls: bool,
    /// Server name sent in SNI and verified in its certificate (TLS only). Default: the host part
    /// of `addr`.
    #[serde(default)]
    pub sni: Option<String>,
    /// Relative share of the region's traffic. Default 1.
    #[serde(default = "default_weight")]
    pub weight: usize,
}

fn default_weight() -> usize {
    1
}

/// The active HTTP health check of a region's backends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// Path requested with GET. Default `/health`.
    pub path: String,
    /// Status a healthy backend answers. Default 200.
    pub expect_status: u16,
    /// Body a healthy backend answers, exactly; unset to accept any. Default `{}` (what the
    /// track backends answer on `/health`).
    pub expect_body: Option<String>,
    /// Time between checks. Default `5s`.
    #[serde(deserialize_with = "de_duration")]
    pub interval: Duration,
    /// Longest wait for a check's connection and answer. Default `1s`.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Consecutive passes that bring a backend back into rotation. Default 1.
    pub successes: usize,
    /// Consecutive failures that take a backend out of rotation. Default 2.
    pub failures: usize,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/health".into(),
            expect_status: 200,
            expect_body: Some("{}".into()),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            successes: 1,
            failures: 2,
        }
    }
}

/// Upstream timeouts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Longest wait for a TCP (and TLS) connection. Default `2s`.
    #[serde(deserialize_with = "de_duration")]
    pub connect: Duration,
    /// Longest wait for each read from the backend; the request fails with 504 after it.
    /// Default `30s`.
    #[serde(deserialize_with = "de_duration")]
    pub read: Duration,
    /// Longest wait for each write to the backend. Default `30s`.
    #[serde(deserialize_with = "de_duration")]
    pub write: Duration,
    /// How long an idle pooled connection is kept for reuse. Default `60s`.
    #[serde(deserialize_with = "de_duration")]
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(30),
            write: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}

/// Machine clicks and opens: the signals beside `head`, `ua` and `no_ua`, which are always on.
/// A verdict never refuses or delays a redirect; it labels the event (README, "Machine clicks").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bots {
    /// `prefetch`: a click or open within this time of the link's minting (the token carries
    /// when). `0s`: off. Default `0s`.
    #[serde(deserialize_with = "de_duration")]
    pub prefetch_window: Duration,
    /// `scanner_net`: a file of `CIDR name` lines (security gateways, privacy proxies), checked
    /// for changes every 5 s and reloaded. Relative to the config file. Default: none.
    pub scanner_networks: Option<PathBuf>,
    /// `burst`: one client address following many links of one message quickly.
    pub burst: BurstConfig,
    /// `honeypot`: for this long after an address follows a message's trap link (`link mint
    /// --trap`), its clicks and opens of the message are `suspect`. The trap click itself is
    /// always `machine`. `0s`: only the trap click is flagged. Default `10m`.
    #[serde(deserialize_with = "de_duration")]
    pub honeypot_window: Duration,
    /// (client address, message) pairs each node remembers for `burst` and `honeypot`: a
    /// fixed table of this many 64-byte slots, allocated at start (a pair hashed onto a busy
    /// slot takes it over, forgetting the older pair). Default 100000 (6.1 MiB).
    pub pairs: usize,
}

impl Default for Bots {
    fn default() -> Self {
        Bots {
            prefetch_window: Duration::ZERO,
            scanner_networks: None,
            burst: BurstConfig::default(),
            honeypot_window: Duration::from_secs(600),
            pairs: 100_000,
        }
    }
}

/// The access log: one JSON line per request (README, "Access log").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// `off`, `stdout`, or a file path (relative to the config file), appended to and reopened
    /// on SIGUSR1 (after logrotate moves it). Default `off`.
    pub to: String,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig { to: "off".into() }
    }
}

/// The `burst` signal, judged per node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BurstConfig {
    /// Distinct links of one message from one address that make a burst, 2 to 16; 0: off.
    /// Default 4.
    pub links: usize,
    /// Within how long. Default `5s`.
    #[serde(deserialize_with = "de_duration")]
    pub window: Duration,
}

impl Default for BurstConfig {
    fn default() -> Self {
        BurstConfig {
            links: 4,
            window: Duration::from_secs(5),
        }
    }
}

/// The registry mirror: every registered domain held in memory on each node, kept current by
/// the registry's change feed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// How often the whole registry is loaded again, so a change whose announcement was lost
    /// still arrives. Each load reads every domain (about 1,000 per round trip). Default `5m`.
    #[serde(deserialize_with = "de_duration")]
    pub resync_interval: Duration,
    /// How often each node writes, to Redis, when the retired domains clicked meanwhile last
    /// saw a click (`domain show`'s `last_click_ms`); noted in memory until then. Default `1m`.
    #[serde(deserialize_with = "de_duration")]
    pub last_click_interval: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            resync_interval: Duration::from_secs(300),
            last_click_interval: Duration::from_secs(60),
        }
    }
}

/// The block list ([`crate::blocks`]): every rule in memory on each node, kept current by its
/// change feed; the pages a blocked or warned click gets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlocksConfig {
    /// How often every rule is loaded again, so a change whose announcement was lost still
    /// arrives. Default `1m`.
    #[serde(deserialize_with = "de_duration")]
    pub resync_interval: Duration,
    /// An HTML file replacing the "link disabled" page (410); `{{request_id}}` is filled in.
    pub blocked_page: Option<PathBuf>,
    /// An HTML file replacing the warning page; `{{destination}}`, `{{continue_url}}` (which
    /// it must hold) and `{{request_id}}` are filled in, HTML-escaped.
    pub warned_page: Option<PathBuf>,
}

impl Default for BlocksConfig {
    fn default() -> Self {
        BlocksConfig {
            resync_interval: Duration::from_secs(60),
            blocked_page: None,
            warned_page: None,
        }
    }
}

/// Region choice per Host, besides the registry: the registry names each registered domain's
/// region; `domains` overrides it, and `default_region` serves hosts it does not know.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Routing {
    /// Region for Hosts neither listed in `domains` nor registered. Unset: such Hosts get
    /// `421 Misdirected Request`. Default: unset.
    pub default_region: Option<String>,
    /// Host → region, overriding the registry (for hosts it does not know, or an operator's
    /// exception). Default: none.
    pub domains: BTreeMap<String, String>,
}

/// Listening addresses (`host:port`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Plain HTTP listener (links, `/health`). Overridden by `LINKEDGE_HTTP_LISTEN`.
    pub http: Option<SocketAddr>,
    /// HTTPS listener, HTTP/1.1 and HTTP/2 by ALPN. Overridden by `LINKEDGE_HTTPS_LISTEN`.
    pub https: Option<SocketAddr>,
    /// Metrics and admin listener serving `/metrics`; keep it off the internet.
    /// Overridden by `LINKEDGE_METRICS_LISTEN`.
    pub metrics: Option<SocketAddr>,
}

/// The certificate and key files for the HTTPS listener (PEM). Relative paths are relative to
/// the directory of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate chain, leaf first: the edge's own certificate, for its own names (such as
    /// `verify.target`). With `certs`, served to handshakes without SNI and to the names it
    /// covers; without, to every handshake.
    pub cert: PathBuf,
    /// Private key of the leaf.
    pub key: PathBuf,
    /// How often the session-ticket keys change. With `certs`, every node shares them
    /// through Redis (sealed with `certs.master_keys`), so a client resumes its TLS session on
    /// any node; the previous key still opens tickets, so a ticket is refused after two
    /// rotations, and a ticket lives at most one rotation (and 2 hours). Without `certs`, each
    /// node keeps its own. At least `1s`. Default `12h`.
    #[serde(default = "default_ticket_rotation", deserialize_with = "de_duration")]
    pub ticket_rotation: Duration,
}

fn default_ticket_rotation() -> Duration {
    Duration::from_secs(12 * 3600)
}

/// Where linkedge keeps its shared state (events, domains, certificates, ACME state) and how it
/// reaches it: one standalone server (`url`), a Sentinel-managed master (`sentinel`), or a
/// Cluster (`cluster`); at most one of `sentinel` and `cluster`. Every connection is opened
/// lazily and opened again after any failure, so a Redis restart or failover heals by itself.
/// Credentials never appear here: they come from the environment or a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redis {
    /// Standalone server: `redis://host:port/db`, or `rediss://` for TLS. No user or password
    /// in it (use `username_*`/`password_*`). Overridden by `LINKEDGE_REDIS_URL`. Default
    /// `redis://127.0.0.1:6379/` when neither `sentinel` nor `cluster` is set.
    pub url: Option<String>,
    /// A master found through Redis Sentinel, followed after a failover.
    pub sentinel: Option<RedisSentinel>,
    /// A Redis Cluster, found from seed nodes.
    pub cluster: Option<RedisCluster>,
    /// TLS to the Redis nodes of `sentinel` or `cluster` (`url` says it with `rediss://`).
    /// Default false.
    pub tls: bool,
    /// PEM file of CA certificates trusted for Redis TLS instead of the system roots. Relative
    /// to the config file's directory. Default: the system roots.
    pub ca_file: Option<PathBuf>,
    /// Environment variable holding the ACL user name. Default: none (the `default` user).
    pub username_env: Option<String>,
    /// File holding the ACL user name (trailing newline ignored). Relative to the config file.
    pub username_file: Option<PathBuf>,
    /// Environment variable holding the password. Default: none.
    pub password_env: Option<String>,
    /// File holding the password (trailing newline ignored). Relative to the config file.
    pub password_file: Option<PathBuf>,
    /// Bound on every command (a batch of events not acknowledged within it goes to the
    /// spool); a connection attempt, which with Sentinel is a look-up and a connect, gets
    /// twice it. Default `1s`.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Prefix of every Redis key and channel linkedge keeps state under (domains,
    /// certificates, ACME state; not the event stream, named in full by `events.stream`).
    /// Default `linkedge:`.
    pub prefix: Option<String>,
}

impl Default for Redis {
    fn default() -> Self {
        Redis {
            url: None,
            sentinel: None,
            cluster: None,
            tls: false,
            ca_file: None,
            username_env: None,
            username_file: None,
            password_env: None,
            password_file: None,
            timeout: Duration::from_secs(1),
            prefix: None,
        }
    }
}

/// Redis Sentinel: the sentinels to ask and the master they watch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSentinel {
    /// The master's name in the sentinels' configuration (`sentinel monitor <name> ...`).
    pub master: String,
    /// The sentinels, `host:port` each (usually port 26379); at least one.
    pub nodes: Vec<String>,
    /// Database number on the master. Default 0.
    #[serde(default)]
    pub db: i64,
    /// Environment variable holding the sentinels' own password (`requirepass` of the
    /// sentinels), when they have one. Default: none.
    #[serde(default)]
    pub sentinel_password_env: Option<String>,
}

/// Redis Cluster: seed nodes; the rest of the cluster is discovered from them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisCluster {
    /// Seed nodes, `host:port` each; at least one, ideally one per shard.
    pub nodes: Vec<String>,
}

/// The keyring.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Links {
    /// Id of the key that signs new links; must be listed in `keys`.
    pub mint_key: u32,
    /// Every key that verifies links. Keep a retired key listed as long as links signed with it
    /// may still be clicked.
    pub keys: Vec<LinkKey>,
    /// Scheme of the URLs `linkedge link mint` prints. Default `https`.
    #[serde(default = "default_scheme")]
    pub scheme: String,
}

fn default_scheme() -> String {
    "https".into()
}

/// One link key. Exactly one of `secret_env` and `secret_file` is set; the secret itself never
/// appears in the config file or in logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkKey {
    /// Key id written into each token (a small number; 1, 2, 3 as keys rotate).
    pub id: u32,
    /// Name of an environment variable holding the secret (at least 32 bytes).
    pub secret_env: Option<String>,
    /// File holding the secret (at least 32 bytes; a trailing newline is ignored). Relative paths
    /// are relative to the config file's directory.
    pub secret_file: Option<PathBuf>,
}

/// Client address handling.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Clients {
    /// Networks (CIDR) of proxies whose `X-Forwarded-For` is believed, such as a CDN or a load
    /// balancer in front. From anyone else the TCP peer address is the client. Default: none.
    pub trusted_proxies: Vec<IpNet>,
}

/// Event recording.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    /// Redis stream key. Default `linkedge:events`.
    pub stream: String,
    /// Approximate cap on the stream length (`XADD MAXLEN ~`); 0 means no cap. Default 10000000.
    pub maxlen: u64,
    /// Most events held in memory between the request path and the writer (about 240 bytes
    /// each, allocated as they arrive, freed as they are written); past it, new events go
    /// straight to the spool. Default 65536.
    pub queue_capacity: usize,
    /// Most events per pipelined write. Default 4096.
    pub batch_max: usize,
    /// Longest time a recorded click or open is held only in memory. A batch Redis has not
    /// acknowledged within it is written to the spool too (marked uncertain, so replay checks
    /// the stream before writing it again), and so is what queued behind it, every quarter of
    /// it, for as long as Redis keeps the writer waiting. This is the window a `kill -9` or a
    /// crash can lose (README, "What can be lost"). Default `100ms`.
    #[serde(deserialize_with = "de_duration")]
    pub memory_window: Duration,
    /// Replicas that must hold a batch before it counts as written. After each batch the
    /// writer sends `WAIT min_replicas replica_timeout` on the connection that wrote it; a batch
    /// fewer replicas confirm stays uncertain (spooled, checked against the stream by event id
    /// on replay), so a master that dies before replicating loses no click. 0 trusts the
    /// master's acknowledgement (a failover can then lose what it had not replicated).
    /// `check --online` refuses a Redis with fewer replicas. Region sinks may override it.
    /// Default 0.
    pub min_replicas: u32,
    /// Longest a batch's `WAIT` for `min_replicas` may take; must be below `redis.timeout`
    /// (and the region sinks' `redis.timeout`). Default `250ms`.
    #[serde(deserialize_with = "de_duration")]
    pub replica_timeout: Duration,
    /// Local spool for events Redis could not take.
    pub spool: Spool,
    /// Regions whose events go to a Redis and stream of their own (region name → sink), so a
    /// region's click data stays where its Redis is. Events of Hosts in other regions, or in
    /// none, go to the top-level `redis` and `stream` (the default sink). Each sink has its own
    /// queue, writer and spool (`<spool.dir>/region-<name>`): one region's Redis outage does not
    /// hold back another's events. Default: none.
    pub regions: BTreeMap<String, EventSinkConfig>,
    /// How much of the client address each event keeps: `full`, `truncated` (`/24` of IPv4,
    /// `/48` of IPv6), `hashed` (HMAC-SHA256 under `client_ip_key`, written `k<id>:<hex>`) or
    /// `none`. The machine-click verdict always sees the full address. Default `full`.
    pub client_ip: ClientIp,
    /// Keys of `hashed`: `{id, secret_env}` or `{id, secret_file}`, secrets of at least 32
    /// bytes. Keep a retired key listed while its hashes still need matching. Default: none.
    pub client_ip_keys: Vec<LinkKey>,
    /// Id of the key that hashes new events (one of `client_ip_keys`); required by `hashed`.
    pub client_ip_key: Option<u32>,
}

/// How much of the client address an event keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientIp {
    /// The address as seen.
    #[default]
    Full,
    /// Its network: `/24` of IPv4, `/48` of IPv6.
    Truncated,
    /// A keyed hash.
    Hashed,
    /// Nothing.
    None,
}

/// One region's event sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSinkConfig {
    /// The region's Redis, in the form of the top-level `redis` section (any topology, TLS,
    /// credentials from env or file; its `prefix` is not used).
    pub redis: Redis,
    /// The region's stream. Default: `events.stream`.
    #[serde(default)]
    pub stream: Option<String>,
    /// `XADD MAXLEN ~` cap of the region's stream (0: none). Default: `events.maxlen`.
    #[serde(default)]
    pub maxlen: Option<u64>,
    /// Replicas of the region's Redis that must hold a batch (see `events.min_replicas`).
    /// Default: `events.min_replicas`.
    #[serde(default)]
    pub min_replicas: Option<u32>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            stream: "linkedge:events".into(),
            maxlen: 10_000_000,
            queue_capacity: 65_536,
            batch_max: 4096,
            memory_window: Duration::from_millis(100),
            min_replicas: 0,
            replica_timeout: Duration::from_millis(250),
            spool: Spool::default(),
            regions: BTreeMap::new(),
            client_ip: ClientIp::Full,
            client_ip_keys: Vec::new(),
            client_ip_key: None,
        }
    }
}

/// The on-disk spool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Spool {
    /// Directory for spool segments; created if missing. Relative paths are relative to the
    /// config file's directory. Default `/var/lib/linkedge/spool`.
    pub dir: PathBuf,
    /// Most bytes the spool may hold; events beyond are dropped, counted in
    /// `linkedge_events_dropped_total{reason="spool_full"}` and logged at ERROR. A size like
    /// `512MiB`. Spooled events take about 25 to 50 bytes each (compressed frames), so the
    /// default `2GiB` holds at least an hour of Redis outage at 10,000 clicks/s.
    #[serde(deserialize_with = "de_size")]
    pub max_bytes: u64,
    /// Longest time spooled events stay in the page cache before an fsync puts them on disk:
    /// what a power loss during a Redis outage could cost. `0s` syncs after every write.
    /// Default `1s`.
    #[serde(deserialize_with = "de_duration")]
    pub sync_interval: Duration,
}

impl Default for Spool {
    fn default() -> Self {
        Spool {
            dir: PathBuf::from("/var/lib/linkedge/spool"),
            max_bytes: 2 << 30,
            sync_interval: Duration::from_secs(1),
        }
    }
}

/// Process settings passed to Pingora's `ServerConf`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Worker threads for the public listeners. Default: the number of CPUs.
    pub threads: Option<usize>,
    /// PID file when running with `--daemon`. Default `/tmp/linkedge.pid`.
    pub pid_file: String,
    /// Socket the old and new process use to hand over listeners on `--upgrade`.
    /// Default `/tmp/linkedge_upgrade.sock`.
    pub upgrade_sock: String,
    /// Seconds between SIGTERM and stopping the runtimes, while open connections finish.
    /// Default 5.
    pub grace_period_seconds: u64,
    /// Seconds the runtimes get to stop after the grace period. Default 5.
    pub graceful_shutdown_timeout_seconds: u64,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            threads: None,
            pid_file: "/tmp/linkedge.pid".into(),
            upgrade_sock: "/tmp/linkedge_upgrade.sock".into(),
            grace_period_seconds: 5,
            graceful_shutdown_timeout_seconds: 5,
        }
    }
}

/// Deadlines and caps that keep one client (or a scanner, or a slowloris) from holding the
/// public listeners. Each is counted in `linkedge_connections_closed_total` or
/// `linkedge_connections_refused_total` with its reason.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest time to receive a whole HTTP/1 request head, however slowly its bytes arrive:
    /// from the connection's accept for the first request, from the first byte for the next
    /// ones. The connection is closed when it passes. Default `10s`.
    #[serde(deserialize_with = "de_duration")]
    pub header_timeout: Duration,
    /// Longest time a TLS handshake may take from the accept; the connection is closed when
    /// it passes. Default `10s`.
    #[serde(deserialize_with = "de_duration")]
    pub handshake_timeout: Duration,
    /// Longest idle time between requests on a kept-alive connection (HTTP/1, and HTTP/2 with
    /// no stream open) before it is closed. Default `60s`.
    #[serde(deserialize_with = "de_duration")]
    pub keepalive_timeout: Duration,
    /// Longest time a response write may make no progress (a client that stopped reading, or
    /// an HTTP/2 stream whose flow-control window stays closed): the HTTP/2 stream is reset,
    /// and an HTTP/1 connection (or an HTTP/2 connection whose socket is blocked) closed.
    /// Default `30s`.
    #[serde(deserialize_with = "de_duration")]
    pub send_timeout: Duration,
    /// Longest time a request body may make no progress while it is being received (HTTP/1,
    /// and each HTTP/2 stream): the connection is closed. Default `60s`.
    #[serde(deserialize_with = "de_duration")]
    pub body_timeout: Duration,
    /// Header fields one request may carry, over HTTP/1 and HTTP/2; more are answered `431`.
    /// At most 256 (Pingora's HTTP/1 parser stops there). Default 256.
    pub max_headers: usize,
    /// Size of one request's header: the bytes of an HTTP/1 head, or the decoded HTTP/2 header
    /// list as HTTP/2 counts it (each field's name and value plus 32), advertised to HTTP/2
    /// clients as `SETTINGS_MAX_HEADER_LIST_SIZE`; larger is answered `431`. Default `64KiB`.
    #[serde(deserialize_with = "de_size")]
    pub max_header_bytes: u64,
    /// Requests served on one HTTP/1 connection before it is closed (the client reconnects);
    /// frees per-connection memory on long-lived connections. Default 10000.
    pub keepalive_requests: u32,
    /// Concurrent streams a client may open on one HTTP/2 connection. Default 128.
    pub h2_max_streams: u32,
    /// Open connections on the public listeners in all. Default: the open-file limit (raised
    /// to its hard maximum at start) minus 1024 kept for upstream, Redis and spool files.
    pub max_connections: Option<usize>,
    /// Open connections from one client address (IPv6 counted per /64). Default 1000.
    pub max_connections_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            max_headers: 256,
            max_header_bytes: 64 * 1024,
            keepalive_requests: 10_000,
            h2_max_streams: 128,
            max_connections: None,
            max_connections_per_ip: 1000,
        }
    }
}
