//! Configuration: the YAML file format ([`File`]) and the validated settings the server runs on
//! ([`Settings`]). Parsing rejects unknown keys and names the failing field; [`Settings::load`]
//! applies the `LINKEDGE_*` environment overrides, reads the link-key secrets and checks the rest.

use crate::token::{Keyring, Secret};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
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

/// Redis connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redis {
    /// `redis://host:port/db` (or `rediss://`); overridden by `LINKEDGE_REDIS_URL`.
    /// Default `redis://127.0.0.1:6379/`.
    pub url: String,
    /// Longest wait for a connection or a batch write before events go to the spool. Default `1s`.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
}

impl Default for Redis {
    fn default() -> Self {
        Redis {
            url: "redis://127.0.0.1:6379/".into(),
            timeout: Duration::from_secs(1),
        }
    }
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
    /// Most events per pipelined write. Default 512.
    pub batch_max: usize,
    /// Local spool for events Redis could not take.
    pub spool: Spool,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            stream: "linkedge:events".into(),
            maxlen: 10_000_000,
            queue_capacity: 65_536,
            batch_max: 512,
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
    /// Most bytes the spool may hold; events beyond are dropped and counted in
    /// `linkedge_events_dropped_total{reason="spool_full"}`. A size like `512MiB`. Default 1GiB.
    #[serde(deserialize_with = "de_size")]
    pub max_bytes: u64,
}

impl Default for Spool {
    fn default() -> Self {
        Spool {
            dir: PathBuf::from("/var/lib/linkedge/spool"),
            max_bytes: 1 << 30,
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

/// Validated settings, with secrets read and paths resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file as parsed, with environment overrides applied and paths made absolute.
    pub file: File,
    /// The keyring built from `links.keys`.
    pub keyring: Keyring,
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
        Ok(Settings { file, keyring })
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

        if file.listen.http.is_none() && file.listen.https.is_none() {
            return Err(invalid("listen", "set at least one of http and https"));
        }
        if !(file.redis.url.starts_with("redis://") || file.redis.url.starts_with("rediss://")) {
            return Err(invalid(
                "redis.url",
                "expected a URL like redis://127.0.0.1:6379/",
            ));
        }
        if file.links.scheme != "https" && file.links.scheme != "http" {
            return Err(invalid("links.scheme", "expected http or https"));
        }
        if file.events.stream.is_empty() {
            return Err(invalid("events.stream", "must not be empty"));
        }
        if file.events.queue_capacity == 0 {
            return Err(invalid("events.queue_capacity", "must be at least 1"));
        }
        if file.events.batch_max == 0 || file.events.batch_max > 100_000 {
            return Err(invalid("events.batch_max", "expected 1 to 100000"));
        }
        if file.server.threads == Some(0) {
            return Err(invalid("server.threads", "must be at least 1"));
        }
        check_keys(&file.links)?;
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

/// The keyring's shape: at least one key, one secret source each, ids unique, mint key listed.
fn check_keys(links: &Links) -> Result<(), ConfigError> {
    if links.keys.is_empty() {
        return Err(invalid("links.keys", "list at least one key"));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, k) in links.keys.iter().enumerate() {
        if k.secret_env.is_some() == k.secret_file.is_some() {
            return Err(invalid(
                format!("links.keys[{i}]"),
                "set exactly one of secret_env and secret_file",
            ));
        }
        if !seen.insert(k.id) {
            return Err(invalid(
                format!("links.keys[{i}].id"),
                format!("key id {} is listed twice", k.id),
            ));
        }
    }
    if !seen.contains(&links.mint_key) {
        return Err(invalid(
            "links.mint_key",
            format!("key id {} is not in links.keys", links.mint_key),
        ));
    }
    Ok(())
}

fn apply_env(file: &mut File, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    if let Some(url) = env(ENV_REDIS_URL) {
        file.redis.url = url;
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
        let bytes = match (&k.secret_env, &k.secret_file) {
            (Some(var), None) => env(var)
                .ok_or_else(|| invalid(&field, format!("environment variable {var} is not set")))?
                .into_bytes(),
            (None, Some(path)) => {
                let mut b = std::fs::read(path).map_err(|e| {
                    invalid(
                        &field,
                        format!("cannot read secret_file {}: {e}", path.display()),
                    )
                })?;
                while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                    b.pop();
                }
                b
            }
            _ => {
                return Err(invalid(
                    &field,
                    "set exactly one of secret_env and secret_file",
                ));
            }
        };
        let secret = Secret::new(bytes).map_err(|m| invalid(&field, m))?;
        keys.push((k.id, secret));
    }
    Keyring::new(keys, links.mint_key).map_err(|m| invalid("links.mint_key", m))
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

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a duration like 250ms or 2s"))?;
    parse_duration(&s)
        .ok_or_else(|| serde::de::Error::custom("expected a duration like 250ms or 2s"))
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
    fn bad_size_names_the_field() {
        let y = minimal("events:\n  spool:\n    max_bytes: lots\n");
        let e = Settings::from_yaml(&y, Path::new("/etc"), &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("events.spool.max_bytes: expected a size like 512MiB"),
            "{e}"
        );
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
        assert_eq!(s.file.redis.url, "redis://10.0.0.1:6380/");
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
