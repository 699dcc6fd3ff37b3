//! Configuration, in three steps kept apart: the YAML file format ([`file`], serde types that
//! reject unknown keys), its checks ([`checked`]: environment overrides, paths, every field, the
//! failing one named by its dotted path, nothing read), and the [`Settings`] the server runs on
//! (typed, secrets read, built once by [`Settings::load`]). Sizes and durations: [`units`].

pub mod file;
pub mod units;

pub use file::{
    Acme, AcmeLimits, Admin, Backend, Bots, BurstConfig, Certs, ClientIp, Clients, EventSinkConfig,
    Events, File, HealthCheck, Limits, LinkKey, Links, Listen, Redis, RedisCluster, RedisSentinel,
    RegionConfig, RegistryConfig, Routing, Selection, Server, Spool, Timeouts, Tls, Verify,
};
pub use units::{parse_duration, parse_size};

use crate::host::{normalize_host, split_host_port};
use crate::privacy::Privacy;
use crate::store;
use crate::tls::Sealer;
use crate::token::{Keyring, Secret};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Most header fields `limits.max_headers` may allow: Pingora's HTTP/1 parser refuses a request
/// with more (`400`) before linkedge sees it.
pub const MAX_HEADERS_CEILING: usize = 256;
/// Largest `limits.max_header_bytes`: Pingora's HTTP/1 parser refuses a larger head (`400`).
pub const MAX_HEADER_BYTES_CEILING: u64 = 1_048_575;
use std::time::Duration;

/// The Redis key prefix when the config names none.
pub const DEFAULT_PREFIX: &str = "linkedge:";
/// The standalone Redis when the config names none.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/";

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

/// The settings the server runs on: every field checked, environment overrides applied, paths
/// absolute, secrets read and turned into what uses them (the keyring, the sealer, the Redis
/// credentials). Built once, by [`Settings::load`] or [`Settings::from_yaml`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where linkedge listens.
    pub listen: Listen,
    /// The HTTPS listener's certificate files (absolute paths).
    pub tls: Tls,
    /// How to reach Redis: topology, TLS, credentials, key prefix and the bound on commands.
    pub redis: store::Spec,
    /// Verifies and mints tracked links (`links.keys`).
    pub keyring: Keyring,
    /// Scheme of minted links (`links.scheme`).
    pub link_scheme: String,
    /// Which peers may name the client in `X-Forwarded-For`.
    pub clients: Clients,
    /// The event queue, writer and spool (spool directory absolute); its Redis is `redis` and
    /// its stream `events.stream`: the default sink.
    pub events: Events,
    /// The regions whose events go to a Redis and stream of their own (`events.regions`).
    pub event_sinks: Vec<EventSink>,
    /// What events keep of the client address (`events.client_ip`, keys read).
    pub client_ip: crate::privacy::Privacy,
    /// Process settings.
    pub server: Server,
    /// Connection caps and timeouts.
    pub limits: Limits,
    /// The regional track backends (CA files absolute).
    pub regions: BTreeMap<String, RegionConfig>,
    /// Which region serves which Host besides the registry (host names normalised).
    pub routing: Routing,
    /// The registry mirror.
    pub registry: RegistryConfig,
    /// The block list: its resync interval and pages (read from their files).
    pub blocks: BlockSettings,
    /// Machine-click detection (`scanner_networks` absolute).
    pub bots: Bots,
    /// How `domain verify` checks a domain.
    pub verify: Verify,
    /// The certificate store, when per-domain certificates are on.
    pub certs: Option<CertSettings>,
    /// ACME issuance, when on (`extra_root` absolute).
    pub acme: Option<Acme>,
    /// The admin API bearer token, when configured.
    pub admin_token: Option<AdminToken>,
    /// Where the access log goes; `None`: off.
    pub access_log: Option<AccessLogTo>,
}

/// Where the access log goes (`access_log.to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTo {
    /// Standard output.
    Stdout,
    /// A file (absolute).
    File(PathBuf),
}

/// A region's own event sink: its clicks and opens go there, never to the default sink.
#[derive(Debug, Clone)]
pub struct EventSink {
    /// The region (a key of `regions`).
    pub region: String,
    /// Its Redis.
    pub redis: store::Spec,
    /// Its stream.
    pub stream: String,
    /// Its `XADD MAXLEN ~` cap (0: none).
    pub maxlen: u64,
    /// Replicas that must hold a batch (`events.min_replicas`, or the sink's own).
    pub min_replicas: u32,
}

/// The certificate store's settings, with the master keys read into a [`Sealer`].
#[derive(Debug, Clone)]
pub struct CertSettings {
    /// Seals and opens stored private keys (`certs.master_keys`, sealing with `master_key`).
    pub sealer: Sealer,
    /// Certificates (and, apart, names without one) held in memory.
    pub cache_size: usize,
    /// How long a name without a certificate is remembered.
    pub negative_ttl: Duration,
    /// Serve `tls.cert` to every name without a certificate, not only the edge's own.
    pub fallback: bool,
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

/// Reads `path`; `base` is the directory relative paths in it are relative to.
fn read(path: &Path) -> Result<(String, &Path), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok((text, path.parent().unwrap_or(Path::new("."))))
}

impl Settings {
    /// Reads, parses and validates `path`, applying the `LINKEDGE_*` environment overrides and
    /// reading every secret it names.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let (text, base) = read(path)?;
        Settings::from_yaml(&text, base, &|k| std::env::var(k).ok())
    }

    /// Parses and validates YAML text; `base` resolves relative paths; `env` looks up
    /// environment variables (a parameter so tests need not touch the process environment).
    pub fn from_yaml(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        Settings::from_file(checked(text, base, env)?, env)
    }

    /// Turns a checked file into settings, reading the secrets it names.
    fn from_file(
        file: File,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
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
        let prefix = redis_prefix(&file)?;
        let redis = redis_spec(&file.redis, prefix.clone(), env, "redis")?;
        let mut event_sinks = Vec::new();
        for (name, sink) in &file.events.regions {
            let at = format!("events.regions.{name}");
            event_sinks.push(EventSink {
                region: name.clone(),
                redis: redis_spec(&sink.redis, prefix.clone(), env, &format!("{at}.redis"))?,
                stream: sink
                    .stream
                    .clone()
                    .unwrap_or_else(|| file.events.stream.clone()),
                maxlen: sink.maxlen.unwrap_or(file.events.maxlen),
                min_replicas: sink.min_replicas.unwrap_or(file.events.min_replicas),
            });
        }
        let certs = match file.certs {
            None => None,
            Some(c) => {
                let mut keys = Vec::new();
                for (i, k) in c.master_keys.iter().enumerate() {
                    let field = format!("certs.master_keys[{i}]");
                    let raw = read_secret(
                        &field,
                        k.secret_env.as_deref(),
                        k.secret_file.as_deref(),
                        env,
                    )?;
                    let key = parse_master_key(&raw).ok_or_else(|| {
                        invalid(&field, "expected 64 hex characters (a 32-byte key)")
                    })?;
                    keys.push((k.id, key));
                }
                Some(CertSettings {
                    sealer: Sealer::new(keys, c.master_key),
                    cache_size: c.cache_size,
                    negative_ttl: c.negative_ttl,
                    fallback: c.fallback,
                })
            }
        };
        let client_ip = match file.events.client_ip {
            ClientIp::Full => Privacy::Full,
            ClientIp::Truncated => Privacy::Truncated,
            ClientIp::None => Privacy::None,
            ClientIp::Hashed => {
                let current = file.events.client_ip_key.unwrap_or_default();
                let (i, k) = file
                    .events
                    .client_ip_keys
                    .iter()
                    .enumerate()
                    .find(|(_, k)| k.id == current)
                    .expect("validate checked the current key is listed");
                let field = format!("events.client_ip_keys[{i}]");
                let secret = read_secret(
                    &field,
                    k.secret_env.as_deref(),
                    k.secret_file.as_deref(),
                    env,
                )?;
                if secret.len() < 32 {
                    return Err(invalid(
                        field,
                        format!("secret is {} bytes; at least 32 are required", secret.len()),
                    ));
                }
                Privacy::hashed(current, &secret)
            }
        };
        let mut routing = file.routing;
        routing.domains = routing
            .domains
            .into_iter()
            .filter_map(|(h, r)| Some((normalize_host(&h)?, r)))
            .collect();
        Ok(Settings {
            listen: file.listen,
            tls: file.tls,
            redis,
            keyring,
            link_scheme: file.links.scheme,
            clients: file.clients,
            events: file.events,
            event_sinks,
            client_ip,
            server: file.server,
            limits: file.limits,
            regions: file.regions,
            routing,
            registry: file.registry,
            blocks: block_settings(&file.blocks)?,
            bots: file.bots,
            verify: file.verify,
            certs,
            acme: file.acme,
            admin_token,
            access_log: match file.access_log.to.as_str() {
                "off" => None,
                "stdout" => Some(AccessLogTo::Stdout),
                path => Some(AccessLogTo::File(PathBuf::from(path))),
            },
        })
    }

    /// The region names the registry accepts.
    pub fn region_names(&self) -> Vec<String> {
        self.regions.keys().cloned().collect()
    }

    /// A handle on this config's Redis, labelled `name` (what it is for) in logs and metrics.
    pub fn db(&self, name: &'static str) -> anyhow::Result<store::Db> {
        store::Db::new(&self.redis, name)
    }
}

/// Parses `text` and checks every field, with the environment overrides applied and relative
/// paths resolved against `base`, without reading secrets or other files: what `linkedge check
/// --offline` validates away from the machine the config is for.
pub fn checked(
    text: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<File, ConfigError> {
    let file: File = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
    let file = resolve_paths(with_env(file, env)?, base);
    validate(&file)?;
    Ok(file)
}

/// [`checked`] on the file at `path`.
pub fn checked_file(path: &Path) -> Result<File, ConfigError> {
    let (text, base) = read(path)?;
    checked(&text, base, &|k| std::env::var(k).ok())
}

/// The block list's settings: the pages read and checked.
#[derive(Debug, Clone)]
pub struct BlockSettings {
    /// How often every rule is loaded again.
    pub resync_interval: Duration,
    /// The "link disabled" page.
    pub blocked_page: std::sync::Arc<str>,
    /// The warning page.
    pub warned_page: std::sync::Arc<str>,
}

fn block_settings(b: &file::BlocksConfig) -> Result<BlockSettings, ConfigError> {
    let read = |field: &str, path: &Option<PathBuf>, default: &str, needs: &[&str]| {
        let Some(path) = path else {
            return Ok(std::sync::Arc::<str>::from(default));
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(field, format!("cannot read {}: {e}", path.display())))?;
        for n in needs {
            if !text.contains(n) {
                return Err(invalid(field, format!("{} has no {n}", path.display())));
            }
        }
        Ok(text.into())
    };
    Ok(BlockSettings {
        resync_interval: b.resync_interval,
        blocked_page: read(
            "blocks.blocked_page",
            &b.blocked_page,
            crate::blocks::BLOCKED_PAGE,
            &[],
        )?,
        warned_page: read(
            "blocks.warned_page",
            &b.warned_page,
            crate::blocks::WARNED_PAGE,
            &["{{continue_url}}"],
        )?,
    })
}

/// Every relative path in `file` made relative to `base`.
fn resolve_paths(mut file: File, base: &Path) -> File {
    let resolve = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    resolve(&mut file.tls.cert);
    resolve(&mut file.tls.key);
    resolve(&mut file.events.spool.dir);
    let keys = file.links.keys.iter_mut();
    let master = file.certs.iter_mut().flat_map(|c| c.master_keys.iter_mut());
    let ip_keys = file.events.client_ip_keys.iter_mut();
    for k in keys.chain(master).chain(ip_keys) {
        k.secret_file.as_mut().map(resolve);
    }
    if let Some(a) = &mut file.acme {
        a.extra_root.as_mut().map(resolve);
    }
    file.verify.ca_file.as_mut().map(resolve);
    file.admin.token_file.as_mut().map(resolve);
    file.bots.scanner_networks.as_mut().map(resolve);
    file.blocks.blocked_page.as_mut().map(resolve);
    file.blocks.warned_page.as_mut().map(resolve);
    if !matches!(file.access_log.to.as_str(), "off" | "stdout") {
        let mut p = PathBuf::from(&file.access_log.to);
        resolve(&mut p);
        file.access_log.to = p.to_string_lossy().into_owned();
    }
    for r in file.regions.values_mut() {
        r.ca_file.as_mut().map(resolve);
    }
    let sinks = file.events.regions.values_mut().map(|s| &mut s.redis);
    for r in std::iter::once(&mut file.redis).chain(sinks) {
        for p in [&mut r.ca_file, &mut r.username_file, &mut r.password_file]
            .into_iter()
            .flatten()
        {
            resolve(p);
        }
    }
    file
}

/// `min_replicas` of the sink at `at` (`events`, or `events.regions.NAME`) writing `stream` to
/// `redis`: a `WAIT` must end before `redis.timeout` drops the connection, and the stream's
/// name must let the replication marker share its hash slot.
fn check_replicas(
    replicas: u32,
    prefix: &str,
    stream: &str,
    events: &file::Events,
    redis: &file::Redis,
    at: &str,
) -> Result<(), ConfigError> {
    if replicas == 0 {
        return Ok(());
    }
    if replicas > 64 {
        return Err(invalid(format!("{at}.min_replicas"), "expected 0 to 64"));
    }
    let t = events.replica_timeout;
    if t < Duration::from_millis(1) || t >= redis.timeout {
        return Err(invalid(
            "events.replica_timeout",
            format!(
                "must be at least 1ms and below the redis.timeout of {at} ({}ms) with min_replicas",
                redis.timeout.as_millis()
            ),
        ));
    }
    if store::keys::replication_marker(prefix, stream).is_none() {
        return Err(invalid(
            format!("{at}.stream"),
            "with min_replicas, a stream name with braces needs a hash tag ({tag}...), and \
             redis.prefix must have no braces",
        ));
    }
    Ok(())
}

/// Checks every field of `file`; names the first one at fault. Reads nothing.
pub fn validate(file: &File) -> Result<(), ConfigError> {
    if file.listen.http.is_none() && file.listen.https.is_none() {
        return Err(invalid("listen", "set at least one of http and https"));
    }
    check_redis(&file.redis, "redis")?;
    let prefix = redis_prefix(file)?;
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
    if file.events.client_ip == ClientIp::Hashed {
        let current = file.events.client_ip_key.ok_or_else(|| {
            invalid(
                "events.client_ip_key",
                "client_ip: hashed needs the id of the key that hashes",
            )
        })?;
        check_key_list(
            "events.client_ip_keys",
            &file.events.client_ip_keys,
            current,
            "events.client_ip_key",
        )?;
    }
    for (name, sink) in &file.events.regions {
        let at = format!("events.regions.{name}");
        if !file.regions.contains_key(name) {
            return Err(invalid(&at, format!("{name:?} is not a configured region")));
        }
        check_redis(&sink.redis, &format!("{at}.redis"))?;
        if sink.stream.as_deref() == Some("") {
            return Err(invalid(format!("{at}.stream"), "must not be empty"));
        }
        let stream = sink.stream.as_deref().unwrap_or(&file.events.stream);
        let replicas = sink.min_replicas.unwrap_or(file.events.min_replicas);
        check_replicas(replicas, &prefix, stream, &file.events, &sink.redis, &at)?;
    }
    check_replicas(
        file.events.min_replicas,
        &prefix,
        &file.events.stream,
        &file.events,
        &file.redis,
        "events",
    )?;
    let l = &file.limits;
    for (field, d) in [
        ("limits.header_timeout", l.header_timeout),
        ("limits.handshake_timeout", l.handshake_timeout),
        ("limits.keepalive_timeout", l.keepalive_timeout),
        ("limits.send_timeout", l.send_timeout),
        ("limits.body_timeout", l.body_timeout),
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
    if l.max_headers == 0 || l.max_headers > MAX_HEADERS_CEILING {
        return Err(invalid(
            "limits.max_headers",
            format!(
                "expected 1 to {} (Pingora's HTTP/1 parser refuses more with its own 400)",
                MAX_HEADERS_CEILING
            ),
        ));
    }
    if !(1024..=MAX_HEADER_BYTES_CEILING).contains(&l.max_header_bytes) {
        return Err(invalid(
            "limits.max_header_bytes",
            format!(
                "expected 1KiB to {} bytes (Pingora's HTTP/1 parser refuses more with its own 400)",
                MAX_HEADER_BYTES_CEILING
            ),
        ));
    }
    if l.max_connections == Some(0) {
        return Err(invalid("limits.max_connections", "must be at least 1"));
    }
    let b = &file.bots.burst;
    if b.links == 1 || b.links > crate::agent::pairs::MAX_LINKS {
        return Err(invalid(
            "bots.burst.links",
            "expected 2 to 16 links (0: off)",
        ));
    }
    if b.links > 0 && b.window.is_zero() {
        return Err(invalid("bots.burst.window", "must be above 0"));
    }
    if file.bots.pairs == 0 || file.bots.pairs > 100_000_000 {
        return Err(invalid(
            "bots.pairs",
            "expected 1 to 100000000 pairs (64 bytes each)",
        ));
    }
    if file.access_log.to.trim().is_empty() {
        return Err(invalid(
            "access_log.to",
            "expected off, stdout or a file path",
        ));
    }
    if file.tls.ticket_rotation < Duration::from_secs(1) {
        return Err(invalid("tls.ticket_rotation", "must be at least 1s"));
    }
    if file.blocks.resync_interval < Duration::from_secs(1) {
        return Err(invalid("blocks.resync_interval", "must be at least 1s"));
    }
    if file.registry.resync_interval < Duration::from_secs(1) {
        return Err(invalid("registry.resync_interval", "must be at least 1s"));
    }
    if file.registry.last_click_interval < Duration::from_secs(1) {
        return Err(invalid(
            "registry.last_click_interval",
            "must be at least 1s",
        ));
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
    check_regions(file)?;
    if let Some(u) = &file.verify.user_agent_url
        && let Some(problem) = file::user_agent_url_problem(u)
    {
        return Err(invalid("verify.user_agent_url", problem));
    }
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
        if a.on_demand_wait.is_zero() {
            return Err(invalid("acme.on_demand_wait", "must be above 0"));
        }
        // A handshake closed by its own deadline first would never get the fallback.
        if a.on_demand_wait >= l.handshake_timeout {
            return Err(invalid(
                "acme.on_demand_wait",
                format!(
                    "must be below limits.handshake_timeout ({:?})",
                    l.handshake_timeout
                ),
            ));
        }
    }
    if let Some(c) = &file.certs {
        if c.cache_size == 0 {
            return Err(invalid("certs.cache_size", "must be at least 1"));
        }
        check_key_list(
            "certs.master_keys",
            &c.master_keys,
            c.master_key,
            "certs.master_key",
        )?;
    }
    Ok(())
}

/// The prefix of every Redis key: `redis.prefix`, or the older `admin.redis_prefix`, or
/// `linkedge:`. Both set to different values is an error (which one did the operator mean?).
fn redis_prefix(file: &File) -> Result<String, ConfigError> {
    match (&file.redis.prefix, &file.admin.redis_prefix) {
        (Some(a), Some(b)) if a != b => Err(invalid(
            "admin.redis_prefix",
            format!(
                "{b:?} differs from redis.prefix {a:?}; admin.redis_prefix is the older name of redis.prefix, keep only redis.prefix"
            ),
        )),
        (Some(p), _) | (None, Some(p)) => Ok(p.clone()),
        (None, None) => Ok(DEFAULT_PREFIX.to_string()),
    }
}

/// Regions: backends well-formed, fallbacks and routes name regions that exist, hosts normalised.
fn check_regions(file: &File) -> Result<(), ConfigError> {
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
    for (host, region) in &file.routing.domains {
        let at = format!("routing.domains.{host}");
        normalize_host(host).ok_or_else(|| invalid(&at, "not a host name"))?;
        if !exists(region) {
            return Err(invalid(
                &at,
                format!("{region:?} is not a configured region"),
            ));
        }
    }
    Ok(())
}

/// `host:port` with a non-empty host and a port above 0.
fn host_port(s: &str) -> bool {
    split_host_port(s).is_some()
}

/// The Redis section: one topology, well-formed node lists, no credentials in the text.
fn check_redis(r: &Redis, at: &str) -> Result<(), ConfigError> {
    if r.sentinel.is_some() && r.cluster.is_some() {
        return Err(invalid(at, "set at most one of sentinel and cluster"));
    }
    if let Some(url) = &r.url {
        if r.sentinel.is_some() || r.cluster.is_some() {
            return Err(invalid(
                format!("{at}.url"),
                "a standalone URL next to sentinel or cluster; keep one of them",
            ));
        }
        let Some(rest) = url
            .strip_prefix("redis://")
            .or_else(|| url.strip_prefix("rediss://"))
        else {
            return Err(invalid(
                format!("{at}.url"),
                "expected a URL like redis://127.0.0.1:6379/ (rediss:// for TLS)",
            ));
        };
        let authority = rest.split('/').next().unwrap_or("");
        if authority.contains('@') {
            return Err(invalid(
                format!("{at}.url"),
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
            return Err(invalid(
                format!("{at}.sentinel.master"),
                "must not be empty",
            ));
        }
        nodes(&format!("{at}.sentinel.nodes"), &s.nodes)?;
    }
    if let Some(c) = &r.cluster {
        nodes(&format!("{at}.cluster.nodes"), &c.nodes)?;
    }
    if r.username_env.is_some() && r.username_file.is_some() {
        return Err(invalid(
            at,
            "set at most one of username_env and username_file",
        ));
    }
    if r.password_env.is_some() && r.password_file.is_some() {
        return Err(invalid(
            at,
            "set at most one of password_env and password_file",
        ));
    }
    if r.timeout.is_zero() {
        return Err(invalid(format!("{at}.timeout"), "must be above 0"));
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

/// `file` with the `LINKEDGE_*` environment overrides applied.
fn with_env(mut file: File, env: &dyn Fn(&str) -> Option<String>) -> Result<File, ConfigError> {
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
    Ok(file)
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

/// The Redis layer's settings from a `redis` section alone, checked and with its credentials
/// read, keys under `prefix` ([`Settings::from_yaml`] does this as part of a whole file).
pub fn redis_section(
    r: &Redis,
    prefix: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<store::Spec, ConfigError> {
    check_redis(r, "redis")?;
    redis_spec(r, prefix.to_string(), env, "redis")
}

/// The Redis section as the Redis layer takes it, credentials read now so a missing variable or
/// file stops the start. `r` has been checked by [`validate`].
fn redis_spec(
    r: &Redis,
    prefix: String,
    env: &dyn Fn(&str) -> Option<String>,
    at: &str,
) -> Result<store::Spec, ConfigError> {
    let text = |field: &str, var: Option<&str>, path: Option<&Path>| {
        if var.is_none() && path.is_none() {
            return Ok(None);
        }
        let raw = read_secret(field, var, path, env)?;
        String::from_utf8(raw)
            .map(Some)
            .map_err(|_| invalid(field, "is not UTF-8 text"))
    };
    let auth = store::Auth {
        username: text(
            &format!("{at}.username"),
            r.username_env.as_deref(),
            r.username_file.as_deref(),
        )?,
        password: text(
            &format!("{at}.password"),
            r.password_env.as_deref(),
            r.password_file.as_deref(),
        )?,
        sentinel_password: text(
            &format!("{at}.sentinel.sentinel_password_env"),
            r.sentinel
                .as_ref()
                .and_then(|s| s.sentinel_password_env.as_deref()),
            None,
        )?,
    };
    let nodes = |list: &[String]| {
        list.iter()
            .filter_map(|n| split_host_port(n).map(|(h, p)| (h.to_string(), p)))
            .collect()
    };
    let topology = match (&r.sentinel, &r.cluster) {
        (Some(s), _) => store::Topology::Sentinel {
            master: s.master.clone(),
            nodes: nodes(&s.nodes),
            db: s.db,
        },
        (None, Some(c)) => store::Topology::Cluster {
            nodes: nodes(&c.nodes),
        },
        (None, None) => store::Topology::Standalone {
            url: r
                .url
                .clone()
                .unwrap_or_else(|| DEFAULT_REDIS_URL.to_string()),
        },
    };
    Ok(store::Spec {
        topology,
        tls: r.tls,
        ca_file: r.ca_file.clone(),
        auth,
        prefix,
        timeout: r.timeout,
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
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("1d"), None);
        assert_eq!(parse_duration("2"), None);
    }

    #[test]
    fn min_replicas_needs_a_wait_shorter_than_the_redis_timeout_and_a_hash_slot_marker() {
        let err = |y: &str| {
            Settings::from_yaml(&minimal(y), Path::new("/etc"), &env)
                .unwrap_err()
                .to_string()
        };
        let ok = |y: &str| Settings::from_yaml(&minimal(y), Path::new("/etc"), &env).unwrap();
        let s = ok("events:\n  min_replicas: 1\n");
        assert_eq!(s.events.min_replicas, 1);
        assert_eq!(s.events.replica_timeout, Duration::from_millis(250));
        let e = err("redis: { timeout: 200ms }\nevents:\n  min_replicas: 1\n");
        assert!(
            e.starts_with("events.replica_timeout: must be at least 1ms and below the redis.timeout of events (200ms)"),
            "{e}"
        );
        // Without min_replicas the timeout is not used, so not checked.
        ok("redis: { timeout: 200ms }\n");
        let e = err("events:\n  min_replicas: 1\n  stream: \"a{}b\"\n");
        assert!(e.starts_with("events.stream: with min_replicas"), "{e}");
        let e = err("events:\n  min_replicas: 65\n");
        assert!(
            e.starts_with("events.min_replicas: expected 0 to 64"),
            "{e}"
        );
        // A region sink inherits min_replicas, or sets its own, checked against its own Redis.
        let region = "regions:\n  eu: { backends: [{ addr: \"127.0.0.1:9\" }] }\n";
        let s = ok(&format!(
            "{region}events:\n  min_replicas: 1\n  regions:\n    eu:\n      redis: {{ url: \"redis://10.0.0.9:6379/\" }}\n"
        ));
        assert_eq!(s.event_sinks[0].min_replicas, 1);
        let s = ok(&format!(
            "{region}events:\n  min_replicas: 1\n  regions:\n    eu:\n      redis: {{ url: \"redis://10.0.0.9:6379/\" }}\n      min_replicas: 0\n"
        ));
        assert_eq!(s.event_sinks[0].min_replicas, 0);
        let e = err(&format!(
            "{region}events:\n  regions:\n    eu:\n      redis: {{ url: \"redis://10.0.0.9:6379/\", timeout: 100ms }}\n      min_replicas: 2\n"
        ));
        assert!(
            e.starts_with("events.replica_timeout: must be at least 1ms and below the redis.timeout of events.regions.eu (100ms)"),
            "{e}"
        );
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
        assert_eq!(s.events.spool.sync_interval, Duration::ZERO);
        let s = Settings::from_yaml(&minimal(""), Path::new("/etc"), &env).unwrap();
        assert_eq!(s.events.spool.sync_interval, Duration::from_secs(1));
    }

    #[test]
    fn the_verifier_user_agent_names_its_page_or_the_field_at_fault() {
        let s = Settings::from_yaml(&minimal(""), Path::new("/etc"), &env).unwrap();
        assert_eq!(
            s.verify.user_agent(),
            format!(
                "linkedge-verify/{} (+https://linkedge.example/verify)",
                env!("CARGO_PKG_VERSION")
            )
        );
        let y = minimal("verify:\n  user_agent_url: https://track.example.net/about-verify\n");
        let s = Settings::from_yaml(&y, Path::new("/etc"), &env).unwrap();
        assert!(
            s.verify
                .user_agent()
                .ends_with(" (+https://track.example.net/about-verify)"),
            "{}",
            s.verify.user_agent()
        );
        for bad in [
            "\"https://a.example/\\r\\nX-Evil: 1\"",
            "\"https://a.example/\\u0007\"",
            "\"https://a.example/x y\"",
            "\"https://a.example/(x)\"",
            "ftp://a.example/",
            "https://",
        ] {
            let y = minimal(&format!("verify:\n  user_agent_url: {bad}\n"));
            let e = Settings::from_yaml(&y, Path::new("/etc"), &env)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("verify.user_agent_url: "), "{bad}: {e}");
        }
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
        let env = |k: &str| match k {
            "K1" | "T" => Some(KEY.into()),
            _ => None,
        };
        for extra in ["", "admin: {}\n", "admin:\n  token_env: T\n"] {
            let s = Settings::from_yaml(&minimal(extra), Path::new("/etc"), &env).unwrap();
            assert_eq!(s.redis.prefix, "linkedge:", "with {extra:?}");
        }
        // The new name, the older name, both alike; both different is refused by name.
        for extra in [
            "redis:\n  prefix: \"t1:\"\n",
            "admin:\n  redis_prefix: \"t1:\"\n",
            "redis:\n  prefix: \"t1:\"\nadmin:\n  redis_prefix: \"t1:\"\n",
        ] {
            let s = Settings::from_yaml(&minimal(extra), Path::new("/etc"), &env).unwrap();
            assert_eq!(s.redis.prefix, "t1:", "with {extra:?}");
        }
        let both = "redis:\n  prefix: \"a:\"\nadmin:\n  redis_prefix: \"b:\"\n";
        let e = Settings::from_yaml(&minimal(both), Path::new("/etc"), &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("admin.redis_prefix: \"b:\" differs from redis.prefix"),
            "{e}"
        );
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
        assert_eq!(s.listen.http, Some("127.0.0.1:9999".parse().unwrap()));
        assert!(
            matches!(&s.redis.topology, store::Topology::Standalone { url } if url == "redis://10.0.0.1:6380/")
        );
        assert_eq!(s.tls.cert, Path::new("/etc/c.pem"));
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
    fn event_sinks_name_configured_regions_and_their_own_redis() {
        let region = "regions:\n  eu: { backends: [{ addr: \"10.0.0.1:443\" }] }\n";
        let sink =
            |redis: &str| format!("{region}events:\n  regions:\n    eu:\n      redis: {redis}\n");
        let s = Settings::from_yaml(
            &minimal(&sink("{ url: \"redis://10.9.0.1:6379/\" }")),
            Path::new("/etc"),
            &env,
        )
        .unwrap();
        assert_eq!(s.event_sinks.len(), 1);
        assert_eq!(s.event_sinks[0].region, "eu");
        assert_eq!(s.event_sinks[0].stream, "linkedge:events");
        let e = |y: &str| {
            Settings::from_yaml(&minimal(y), Path::new("/etc"), &env)
                .unwrap_err()
                .to_string()
        };
        // A region that is not configured; a sink's Redis checked like the top-level one, the
        // field named in full.
        assert!(
            e("events:\n  regions:\n    ap:\n      redis: {}\n")
                .starts_with("events.regions.ap: \"ap\" is not a configured region"),
        );
        assert!(
            e(&sink("{ url: \"redis://u:pw@10.9.0.1/\" }"))
                .starts_with("events.regions.eu.redis.url: holds credentials"),
        );
        assert!(
            e(&sink("{ password_env: NOPE }"))
                .starts_with("events.regions.eu.redis.password: environment variable NOPE"),
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
    fn on_demand_wait_is_above_zero_and_below_the_handshake_timeout() {
        let acme = |extra: &str| {
            minimal(&format!(
                "certs:\n  master_key: 1\n  master_keys: [{{ id: 1, secret_env: M1 }}]\nacme:\n  directory: https://ca.test/dir\n{extra}"
            ))
        };
        let file = checked(&acme(""), Path::new("/etc"), &env).unwrap();
        assert_eq!(file.acme.unwrap().on_demand_wait, Duration::from_secs(5));
        let e = |y: &str| checked(y, Path::new("/etc"), &env).unwrap_err().to_string();
        assert_eq!(
            e(&acme("  on_demand_wait: 0s\n")),
            "acme.on_demand_wait: must be above 0"
        );
        assert_eq!(
            e(&acme("  on_demand_wait: 10s\n")),
            "acme.on_demand_wait: must be below limits.handshake_timeout (10s)"
        );
        assert_eq!(
            e(&format!(
                "{}limits:\n  handshake_timeout: 2s\n",
                acme("  on_demand_wait: 3s\n")
            )),
            "acme.on_demand_wait: must be below limits.handshake_timeout (2s)"
        );
        checked(
            &format!(
                "{}limits:\n  handshake_timeout: 2s\n",
                acme("  on_demand_wait: 1s\n")
            ),
            Path::new("/etc"),
            &env,
        )
        .unwrap();
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
