//! Configuration: the YAML file format ([`File`]) and the validated settings the server runs on
//! ([`Settings`]). Parsing rejects unknown keys and names the failing field; [`Settings::load`]
//! applies the `LINKEDGE_*` environment overrides, reads the link-key secrets and checks the rest.

use crate::token::{Keyring, Secret};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variable overriding `redis.url`.
pub const ENV_REDIS_URL: &str = "LINKEDGE_REDIS_URL";
/// Environment variable overriding `listen.http`.
pub const ENV_HTTP_LISTEN: &str = "LINKEDGE_HTTP_LISTEN";
/// Environment variable overriding `listen.https`.
pub const ENV_HTTPS_LISTEN: &str = "LINKEDGE_HTTPS_LISTEN";
/// Environment variable overriding `listen.metrics`.
pub const ENV_METRICS_LISTEN: &str = "LINKEDGE_METRICS_LISTEN";

/// A configuration problem, with the dotted path of the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The YAML does not match the format (the message starts with the field path).
    #[error("{0}")]
    Parse(String),
    /// A field has a value that parses but is not acceptable.
    #[error("{field}: {message}")]
    Invalid {
        /// Dotted path of the field (or the environment variable) at fault.
        field: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

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
    pub regions: BTreeMap<String, Region>,
    /// Which region serves which Host.
    #[serde(default)]
    pub routing: Routing,
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
    /// Serve `tls.cert` when the SNI has no certificate (or there is no SNI); otherwise such
    /// handshakes fail. Default false.
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Environment variable holding the bearer token (at least 32 bytes).
    pub token_env: Option<String>,
    /// File holding the bearer token (at least 32 bytes; trailing newline ignored). Relative
    /// paths are relative to the config file's directory.
    pub token_file: Option<PathBuf>,
    /// Prefix of every Redis key linkedge keeps state under. Default `linkedge:`.
    #[serde(default = "default_prefix")]
    pub redis_prefix: String,
}

fn default_prefix() -> String {
    "linkedge:".into()
}

// Written out, not derived: a derived Default would give an empty prefix when the `admin`
// section is absent, and `linkedge:` when it is present, so adding the section would move every
// key (certificates, domains, ACME state).
impl Default for Admin {
    fn default() -> Self {
        Admin {
            token_env: None,
            token_file: None,
            redis_prefix: default_prefix(),
        }
    }
}

/// One region's track backends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
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

/// Region choice per Host.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Routing {
    /// Region for Hosts not listed in `domains`. Unset: such Hosts get
    /// `421 Misdirected Request`. Default: unset.
    pub default_region: Option<String>,
    /// Host → region, for domains served before the domain registry knows them.
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
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf.
    pub key: PathBuf,
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
}

/// The default standalone Redis.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/";

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
    /// Events held in memory between the request path and the writer. Default 65536.
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
    /// Local spool for events Redis could not take.
    pub spool: Spool,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            stream: "linkedge:events".into(),
            maxlen: 10_000_000,
            queue_capacity: 65_536,
            batch_max: 4096,
            memory_window: Duration::from_millis(100),
            spool: Spool::default(),
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
    /// Longest idle time between requests on a kept-alive connection (HTTP/1 and HTTP/2)
    /// before it is closed. Default `60s`.
    #[serde(deserialize_with = "de_duration")]
    pub keepalive_timeout: Duration,
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
            keepalive_requests: 10_000,
            h2_max_streams: 128,
            max_connections: None,
            max_connections_per_ip: 1000,
        }
    }
}

/// Validated settings, with secrets read and paths resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file as parsed, with environment overrides applied and paths made absolute.
    pub file: File,
    /// The keyring built from `links.keys`.
    pub keyring: Keyring,
    /// The admin API bearer token, when configured.
    pub admin_token: Option<AdminToken>,
    /// The certificate store's master keys (id → 32-byte key), when `certs` is configured.
    pub master_keys: Vec<(u32, [u8; 32])>,
    /// Redis credentials, read from the environment or files named in `redis`.
    pub redis_auth: RedisAuth,
}

/// Redis ACL credentials and the sentinels' password. `Debug` never shows them.
#[derive(Clone, Default)]
pub struct RedisAuth {
    /// ACL user name.
    pub username: Option<String>,
    /// Password of the user (or `requirepass`).
    pub password: Option<String>,
    /// Password of the sentinels themselves.
    pub sentinel_password: Option<String>,
}

impl std::fmt::Debug for RedisAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |o: &Option<String>| if o.is_some() { "set" } else { "none" };
        write!(
            f,
            "RedisAuth(username {}, password {}, sentinel password {})",
            set(&self.username),
            set(&self.password),
            set(&self.sentinel_password)
        )
    }
}

/// The admin bearer token. Its `Debug` never shows it.
#[derive(Clone)]
pub struct AdminToken(Vec<u8>);

impl AdminToken {
    /// True when `presented` equals the token, compared in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        openssl::memcmp::eq(&sha2_digest(&self.0), &sha2_digest(presented))
    }
}

fn sha2_digest(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl Settings {
    /// Reads, parses and validates `path`, applying the `LINKEDGE_*` environment overrides.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Settings::from_yaml(&text, base, &|k| std::env::var(k).ok())
    }

    /// Parses and validates YAML text; `base` resolves relative paths; `env` looks up
    /// environment variables (a parameter so tests need not touch the process environment).
    pub fn from_yaml(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let file = File::from_yaml(text, base, env)?;
        let keyring = build_keyring(&file.links, env)?;
        let admin_token = match (&file.admin.token_env, &file.admin.token_file) {
            (None, None) => None,
            (env_var, path) => {
                let bytes = read_secret("admin", env_var.as_deref(), path.as_deref(), env)?;
                if bytes.len() < 32 {
                    return Err(invalid(
                        "admin",
                        format!("token is {} bytes; at least 32 are required", bytes.len()),
                    ));
                }
                Some(AdminToken(bytes))
            }
        };
        let mut master_keys = Vec::new();
        if let Some(c) = &file.certs {
            for (i, k) in c.master_keys.iter().enumerate() {
                let field = format!("certs.master_keys[{i}]");
                let raw = read_secret(
                    &field,
                    k.secret_env.as_deref(),
                    k.secret_file.as_deref(),
                    env,
                )?;
                let key = parse_master_key(&raw)
                    .ok_or_else(|| invalid(&field, "expected 64 hex characters (a 32-byte key)"))?;
                master_keys.push((k.id, key));
            }
        }
        let redis_auth = read_redis_auth(&file.redis, env)?;
        Ok(Settings {
            file,
            keyring,
            admin_token,
            master_keys,
            redis_auth,
        })
    }
}

impl File {
    /// Parses and checks every field, without reading secrets or other files: what
    /// `linkedge check --offline` validates away from the machine the config is for.
    pub fn from_yaml(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<File, ConfigError> {
        let mut file: File =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        apply_env(&mut file, env)?;
        let resolve = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        file.tls.cert = resolve(&file.tls.cert);
        file.tls.key = resolve(&file.tls.key);
        file.events.spool.dir = resolve(&file.events.spool.dir);
        for k in &mut file.links.keys {
            if let Some(p) = &k.secret_file {
                k.secret_file = Some(resolve(p));
            }
        }
        if let Some(a) = &mut file.acme
            && let Some(p) = &a.extra_root
        {
            a.extra_root = Some(resolve(p));
        }
        if let Some(p) = &file.admin.token_file {
            file.admin.token_file = Some(resolve(p));
        }
        for r in file.regions.values_mut() {
            if let Some(p) = &r.ca_file {
                r.ca_file = Some(resolve(p));
            }
        }

        if file.listen.http.is_none() && file.listen.https.is_none() {
            return Err(invalid("listen", "set at least one of http and https"));
        }
        check_redis(&mut file.redis, &resolve)?;
        if file.links.scheme != "https" && file.links.scheme != "http" {
            return Err(invalid("links.scheme", "expected http or https"));
        }
        if file.events.stream.is_empty() {
            return Err(invalid("events.stream", "must not be empty"));
        }
        if file.events.queue_capacity == 0 {
            return Err(invalid("events.queue_capacity", "must be at least 1"));
        }
        if file.events.memory_window < Duration::from_millis(10) {
            return Err(invalid("events.memory_window", "must be at least 10ms"));
        }
        if file.events.batch_max == 0 || file.events.batch_max > 100_000 {
            return Err(invalid("events.batch_max", "expected 1 to 100000"));
        }
        let l = &file.limits;
        for (field, d) in [
            ("limits.header_timeout", l.header_timeout),
            ("limits.handshake_timeout", l.handshake_timeout),
            ("limits.keepalive_timeout", l.keepalive_timeout),
        ] {
            if d < Duration::from_secs(1) {
                return Err(invalid(field, "must be at least 1s"));
            }
        }
        if l.keepalive_requests == 0 || l.h2_max_streams == 0 || l.max_connections_per_ip == 0 {
            return Err(invalid(
                "limits",
                "keepalive_requests, h2_max_streams and max_connections_per_ip must be at least 1",
            ));
        }
        if l.max_connections == Some(0) {
            return Err(invalid("limits.max_connections", "must be at least 1"));
        }
        if file.server.threads == Some(0) {
            return Err(invalid("server.threads", "must be at least 1"));
        }
        check_key_list(
            "links.keys",
            &file.links.keys,
            file.links.mint_key,
            "links.mint_key",
        )?;
        check_regions(&mut file)?;
        if let Some(a) = &file.acme {
            if file.certs.is_none() {
                return Err(invalid(
                    "acme",
                    "needs a certs section to store what it orders",
                ));
            }
            if !a.directory.starts_with("https://") {
                return Err(invalid(
                    "acme.directory",
                    "expected an https:// directory URL",
                ));
            }
        }
        if let Some(c) = &mut file.certs {
            if c.cache_size == 0 {
                return Err(invalid("certs.cache_size", "must be at least 1"));
            }
            for k in c.master_keys.iter_mut() {
                if let Some(p) = &k.secret_file {
                    k.secret_file = Some(resolve(p));
                }
            }
            check_key_list(
                "certs.master_keys",
                &c.master_keys,
                c.master_key,
                "certs.master_key",
            )?;
        }
        Ok(file)
    }

    /// Reads and checks `path` like [`File::from_yaml`].
    pub fn load(path: &Path) -> Result<File, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        File::from_yaml(&text, base, &|k| std::env::var(k).ok())
    }
}

/// Regions: backends well-formed, fallbacks and routes name regions that exist, hosts normalised.
fn check_regions(file: &mut File) -> Result<(), ConfigError> {
    let names: Vec<String> = file.regions.keys().cloned().collect();
    let exists = |n: &str| names.iter().any(|x| x == n);
    for (name, r) in &file.regions {
        let at = format!("regions.{name}");
        if r.backends.is_empty() {
            return Err(invalid(
                format!("{at}.backends"),
                "list at least one backend",
            ));
        }
        for (i, b) in r.backends.iter().enumerate() {
            if !host_port(&b.addr) {
                return Err(invalid(
                    format!("{at}.backends[{i}].addr"),
                    format!(
                        "expected host:port such as track.example.com:443, got {:?}",
                        b.addr
                    ),
                ));
            }
            if b.weight == 0 {
                return Err(invalid(
                    format!("{at}.backends[{i}].weight"),
                    "must be at least 1",
                ));
            }
        }
        if let Some(fb) = &r.fallback
            && (fb == name || !exists(fb))
        {
            return Err(invalid(
                format!("{at}.fallback"),
                format!("{fb:?} is not another configured region"),
            ));
        }
        let hc = &r.health_check;
        if hc.successes == 0 || hc.failures == 0 {
            return Err(invalid(
                format!("{at}.health_check"),
                "successes and failures must be at least 1",
            ));
        }
        if !hc.path.starts_with('/') {
            return Err(invalid(
                format!("{at}.health_check.path"),
                "must start with /",
            ));
        }
        if hc.interval.is_zero() {
            return Err(invalid(
                format!("{at}.health_check.interval"),
                "must be above 0",
            ));
        }
    }
    if let Some(d) = &file.routing.default_region
        && !exists(d)
    {
        return Err(invalid(
            "routing.default_region",
            format!("{d:?} is not a configured region"),
        ));
    }
    let mut domains = BTreeMap::new();
    for (host, region) in &file.routing.domains {
        let at = format!("routing.domains.{host}");
        let norm =
            crate::token::normalize_host(host).ok_or_else(|| invalid(&at, "not a host name"))?;
        if !exists(region) {
            return Err(invalid(
                &at,
                format!("{region:?} is not a configured region"),
            ));
        }
        domains.insert(norm, region.clone());
    }
    file.routing.domains = domains;
    Ok(())
}

/// `host:port` with a non-empty host and a port above 0.
fn host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// The Redis section: one topology, well-formed node lists, no credentials in the text.
fn check_redis(r: &mut Redis, resolve: &dyn Fn(&Path) -> PathBuf) -> Result<(), ConfigError> {
    if r.sentinel.is_some() && r.cluster.is_some() {
        return Err(invalid("redis", "set at most one of sentinel and cluster"));
    }
    if let Some(url) = &r.url {
        if r.sentinel.is_some() || r.cluster.is_some() {
            return Err(invalid(
                "redis.url",
                "a standalone URL next to sentinel or cluster; keep one of them",
            ));
        }
        let Some(rest) = url
            .strip_prefix("redis://")
            .or_else(|| url.strip_prefix("rediss://"))
        else {
            return Err(invalid(
                "redis.url",
                "expected a URL like redis://127.0.0.1:6379/ (rediss:// for TLS)",
            ));
        };
        let authority = rest.split('/').next().unwrap_or("");
        if authority.contains('@') {
            return Err(invalid(
                "redis.url",
                "holds credentials; put them in redis.username_env/_file and redis.password_env/_file",
            ));
        }
    }
    let nodes = |field: &str, list: &[String]| -> Result<(), ConfigError> {
        if list.is_empty() {
            return Err(invalid(field, "list at least one host:port"));
        }
        for (i, n) in list.iter().enumerate() {
            if !host_port(n) {
                return Err(invalid(
                    format!("{field}[{i}]"),
                    format!("expected host:port such as 10.0.0.1:26379, got {n:?}"),
                ));
            }
        }
        Ok(())
    };
    if let Some(s) = &r.sentinel {
        if s.master.is_empty() {
            return Err(invalid("redis.sentinel.master", "must not be empty"));
        }
        nodes("redis.sentinel.nodes", &s.nodes)?;
    }
    if let Some(c) = &r.cluster {
        nodes("redis.cluster.nodes", &c.nodes)?;
    }
    if r.username_env.is_some() && r.username_file.is_some() {
        return Err(invalid(
            "redis",
            "set at most one of username_env and username_file",
        ));
    }
    if r.password_env.is_some() && r.password_file.is_some() {
        return Err(invalid(
            "redis",
            "set at most one of password_env and password_file",
        ));
    }
    for path in [&mut r.ca_file, &mut r.username_file, &mut r.password_file]
        .into_iter()
        .flatten()
    {
        *path = resolve(path);
    }
    if r.timeout.is_zero() {
        return Err(invalid("redis.timeout", "must be above 0"));
    }
    Ok(())
}

/// A key list's shape: at least one key, one secret source each, ids unique, the current key
/// listed. `list` and `current` name the fields in errors.
fn check_key_list(
    list: &str,
    keys: &[LinkKey],
    current: u32,
    current_field: &str,
) -> Result<(), ConfigError> {
    if keys.is_empty() {
        return Err(invalid(list, "list at least one key"));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, k) in keys.iter().enumerate() {
        if k.secret_env.is_some() == k.secret_file.is_some() {
            return Err(invalid(
                format!("{list}[{i}]"),
                "set exactly one of secret_env and secret_file",
            ));
        }
        if !seen.insert(k.id) {
            return Err(invalid(
                format!("{list}[{i}].id"),
                format!("key id {} is listed twice", k.id),
            ));
        }
    }
    if !seen.contains(&current) {
        return Err(invalid(
            current_field,
            format!("key id {current} is not in {list}"),
        ));
    }
    Ok(())
}

fn apply_env(file: &mut File, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    if let Some(url) = env(ENV_REDIS_URL) {
        if file.redis.sentinel.is_some() || file.redis.cluster.is_some() {
            return Err(invalid(
                ENV_REDIS_URL,
                "the config names a sentinel or cluster Redis; unset the variable or the section",
            ));
        }
        // The environment may carry a password (it is not config text).
        file.redis.url = Some(url);
    }
    let addr = |name: &str| -> Result<Option<SocketAddr>, ConfigError> {
        match env(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                invalid(
                    name,
                    format!("expected host:port such as 0.0.0.0:8080, got {v:?}"),
                )
            }),
        }
    };
    if let Some(a) = addr(ENV_HTTP_LISTEN)? {
        file.listen.http = Some(a);
    }
    if let Some(a) = addr(ENV_HTTPS_LISTEN)? {
        file.listen.https = Some(a);
    }
    if let Some(a) = addr(ENV_METRICS_LISTEN)? {
        file.listen.metrics = Some(a);
    }
    Ok(())
}

fn build_keyring(
    links: &Links,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Keyring, ConfigError> {
    let mut keys = Vec::new();
    for (i, k) in links.keys.iter().enumerate() {
        let field = format!("links.keys[{i}]");
        let bytes = read_secret(
            &field,
            k.secret_env.as_deref(),
            k.secret_file.as_deref(),
            env,
        )?;
        let secret = Secret::new(bytes).map_err(|m| invalid(&field, m))?;
        keys.push((k.id, secret));
    }
    Keyring::new(keys, links.mint_key).map_err(|m| invalid("links.mint_key", m))
}

/// The Redis credentials `redis` names, read now so a missing variable or file stops the start.
fn read_redis_auth(
    r: &Redis,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RedisAuth, ConfigError> {
    let text = |field: &str, var: Option<&str>, path: Option<&Path>| {
        if var.is_none() && path.is_none() {
            return Ok(None);
        }
        let raw = read_secret(field, var, path, env)?;
        String::from_utf8(raw)
            .map(Some)
            .map_err(|_| invalid(field, "is not UTF-8 text"))
    };
    Ok(RedisAuth {
        username: text(
            "redis.username",
            r.username_env.as_deref(),
            r.username_file.as_deref(),
        )?,
        password: text(
            "redis.password",
            r.password_env.as_deref(),
            r.password_file.as_deref(),
        )?,
        sentinel_password: text(
            "redis.sentinel.sentinel_password_env",
            r.sentinel
                .as_ref()
                .and_then(|s| s.sentinel_password_env.as_deref()),
            None,
        )?,
    })
}

/// A 32-byte key written as 64 hex characters.
fn parse_master_key(raw: &[u8]) -> Option<[u8; 32]> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    if text.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// Reads a secret from exactly one of an environment variable and a file (trailing newline
/// ignored); `field` names the config entry in errors.
fn read_secret(
    field: &str,
    var: Option<&str>,
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<u8>, ConfigError> {
    match (var, path) {
        (Some(var), None) => env(var)
            .map(String::into_bytes)
            .ok_or_else(|| invalid(field, format!("environment variable {var} is not set"))),
        (None, Some(path)) => {
            let mut b = std::fs::read(path)
                .map_err(|e| invalid(field, format!("cannot read {}: {e}", path.display())))?;
            while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                b.pop();
            }
            Ok(b)
        }
        _ => Err(invalid(
            field,
            "set exactly one of the environment variable and the file",
        )),
    }
}

/// Parses a size such as `512MiB`, `64KiB`, `1GB` or a plain number of bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Parses a duration such as `250ms`, `5s`, `2m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
}

struct SizeVisitor;

impl serde::de::Visitor<'_> for SizeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a size like 512MiB")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
        parse_size(v).ok_or_else(|| E::custom("expected a size like 512MiB"))
    }
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(SizeVisitor)
}

struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a duration like 250ms or 2s")
    }

    // Parsed inside the visitor, not after it returned, so the error names the field
    // (`redis.timeout: ...`), not the section holding it.
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).ok_or_else(|| E::custom("expected a duration like 250ms or 2s"))
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn env(k: &str) -> Option<String> {
        (k == "K1").then(|| KEY.to_string())
    }

    fn minimal(extra: &str) -> String {
        format!(
            "listen: {{ http: 127.0.0.1:8080 }}\ntls: {{ cert: c.pem, key: k.pem }}\nlinks:\n  mint_key: 1\n  keys: [{{ id: 1, secret_env: K1 }}]\n{extra}"
        )
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("1GB"), Some(1_000_000_000));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), None);
    }

    #[test]
    fn bad_size_or_duration_names_the_field() {
        let y = minimal("events:\n  spool:\n    max_bytes: lots\n");
        let e = Settings::from_yaml(&y, Path::new("/etc"), &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("events.spool.max_bytes: expected a size like 512MiB"),
            "{e}"
        );
        let y = minimal("events:\n  spool:\n    sync_interval: soon\n");
        let e = Settings::from_yaml(&y, Path::new("/etc"), &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("events.spool.sync_interval: expected a duration like 250ms or 2s"),
            "{e}"
        );
        let y = minimal("redis:\n  timeout: 5\n");
        let e = Settings::from_yaml(&y, Path::new("/etc"), &env)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("redis.timeout: "), "{e}");
        let y = minimal("events:\n  spool:\n    sync_interval: 0s\n");
        let s = Settings::from_yaml(&y, Path::new("/etc"), &env).unwrap();
        assert_eq!(s.file.events.spool.sync_interval, Duration::ZERO);
        let s = Settings::from_yaml(&minimal(""), Path::new("/etc"), &env).unwrap();
        assert_eq!(s.file.events.spool.sync_interval, Duration::from_secs(1));
    }

    #[test]
    fn unknown_key_rejected() {
        let y = minimal("evnts: {}\n");
        let e = Settings::from_yaml(&y, Path::new("/etc"), &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `evnts`"), "{e}");
    }

    #[test]
    fn redis_prefix_is_the_same_with_or_without_an_admin_section() {
        for extra in ["", "admin: {}\n", "admin:\n  token_env: T\n"] {
            let s = Settings::from_yaml(&minimal(extra), Path::new("/etc"), &|k| match k {
                "K1" => Some(KEY.into()),
                "T" => Some(KEY.into()),
                _ => None,
            })
            .unwrap();
            assert_eq!(s.file.admin.redis_prefix, "linkedge:", "with {extra:?}");
        }
    }

    #[test]
    fn env_overrides_and_names_bad_values() {
        let y = minimal("");
        let s = Settings::from_yaml(&y, Path::new("/etc"), &|k| match k {
            "K1" => Some(KEY.into()),
            ENV_HTTP_LISTEN => Some("127.0.0.1:9999".into()),
            ENV_REDIS_URL => Some("redis://10.0.0.1:6380/".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.file.listen.http, Some("127.0.0.1:9999".parse().unwrap()));
        assert_eq!(s.file.redis.url.as_deref(), Some("redis://10.0.0.1:6380/"));
        assert_eq!(s.file.tls.cert, Path::new("/etc/c.pem"));
        let e = Settings::from_yaml(&y, Path::new("/etc"), &|k| match k {
            "K1" => Some(KEY.into()),
            ENV_METRICS_LISTEN => Some("nine".into()),
            _ => None,
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("LINKEDGE_METRICS_LISTEN: expected host:port"),
            "{e}"
        );
    }

    #[test]
    fn redis_topologies_and_credentials_are_checked_by_field() {
        let err = |redis: &str, env: &dyn Fn(&str) -> Option<String>| {
            Settings::from_yaml(&minimal(redis), Path::new("/etc"), env)
                .unwrap_err()
                .to_string()
        };
        let k1 = |k: &str| (k == "K1").then(|| KEY.to_string());
        assert!(
            err("redis:\n  url: redis://:pw@10.0.0.1:6379/\n", &k1)
                .starts_with("redis.url: holds credentials"),
        );
        assert!(err("redis:\n  url: http://x/\n", &k1).starts_with("redis.url: expected a URL"));
        assert_eq!(
            err(
                "redis:\n  sentinel: { master: m, nodes: [\"a:1\"] }\n  cluster: { nodes: [\"b:1\"] }\n",
                &k1
            ),
            "redis: set at most one of sentinel and cluster"
        );
        assert_eq!(
            err(
                "redis:\n  sentinel: { master: m, nodes: [\"a:1\", \"b\"] }\n",
                &k1
            ),
            "redis.sentinel.nodes[1]: expected host:port such as 10.0.0.1:26379, got \"b\""
        );
        assert_eq!(
            err("redis:\n  cluster: { nodes: [] }\n", &k1),
            "redis.cluster.nodes: list at least one host:port"
        );
        assert_eq!(
            err("redis:\n  password_env: RP\n", &k1),
            "redis.password: environment variable RP is not set"
        );
        // The environment may not turn a sentinel config into a standalone one.
        let e = err(
            "redis:\n  sentinel: { master: m, nodes: [\"a:1\"] }\n",
            &|k| match k {
                "K1" => Some(KEY.into()),
                ENV_REDIS_URL => Some("redis://x:1/".into()),
                _ => None,
            },
        );
        assert!(e.starts_with("LINKEDGE_REDIS_URL: "), "{e}");
        let s = Settings::from_yaml(
            &minimal(
                "redis:\n  cluster: { nodes: [\"10.0.0.1:6379\"] }\n  username_env: RU\n  password_file: pw\n  ca_file: ca.pem\n",
            ),
            Path::new("/nonexistent"),
            &|k| match k {
                "K1" => Some(KEY.into()),
                "RU" => Some("edge".into()),
                _ => None,
            },
        );
        // The password file is read at load (relative to the config's directory), so its
        // absence names the field and the resolved path.
        let e = s.unwrap_err().to_string();
        assert!(
            e.starts_with("redis.password: cannot read /nonexistent/pw"),
            "{e}"
        );
    }

    #[test]
    fn short_or_missing_secret_named() {
        let y = minimal("");
        let e = Settings::from_yaml(&y, Path::new("/etc"), &|k| {
            (k == "K1").then(|| "short".into())
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "links.keys[0]: secret is 5 bytes; at least 32 are required"
        );
        let e = Settings::from_yaml(&y, Path::new("/etc"), &|_| None)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "links.keys[0]: environment variable K1 is not set");
    }
}
