//! The Redis layer: the one way linkedge reaches Redis, whatever the topology.
//!
//! A [`Db`] is a handle (cheap to clone) on one logical connection to the configured Redis: a
//! standalone server (`redis://`, `rediss://`), the master that Redis Sentinel names, or a
//! Redis Cluster. It connects lazily, on the first command. Any failure that may mean the
//! connection is dead (an I/O error, a command that outlived `redis.timeout`, or `READONLY`
//! from a master demoted by a failover) drops the connection, so the next command opens a new
//! one, asking the sentinels again for the master. Failed attempts back off (capped,
//! jittered), and while they do, commands fail at once instead of queueing behind a dead
//! server. Every command, including each connection attempt, is bounded by `redis.timeout`.
//!
//! Callers hold a [`Db`], never a connection: they take a [`Conn`] per operation with
//! [`Db::conn`], and a [`Conn`] reports its own failures back here.
//!
//! A connection that sat idle across a Redis restart or a failover only learns it is dead from
//! its next command. So a read (a command that changes nothing, [`is_read`]) that fails with a
//! connection error on a connection opened before that error is sent again, at once, once, on
//! a new connection: the first certificate look-up or admin read after Redis is back succeeds
//! instead of failing the handshake or the request (such a read may then take up to about four
//! times `redis.timeout`: the failed send, a reconnect, the read again). Writes are never
//! re-sent here: whether a write that got no answer took effect is the caller's to decide (the
//! event writer's uncertain batches). Topology handling itself
//! (following a Sentinel master, Cluster slots and redirections) is the `redis` crate's.
//!
//! Why not the crate's `ConnectionManager`? It reconnects to one fixed address, so it cannot
//! follow a Sentinel master; one mechanism for all three topologies is one thing to test.

pub mod follow;
pub mod keys;

pub use keys::Keys;

use crate::metrics;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind,
    IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind,
    TlsCertificates, Value,
};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// First wait after a failed connection attempt; doubles per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// While pub/sub attempts time out (a partition), another starts this often ([`Db::pubsub`]).
const RACE_EVERY: Duration = Duration::from_millis(200);
/// Most pub/sub attempts at once.
const RACE_MAX: usize = 4;
/// How long [`Db::pubsub`] keeps starting attempts before it returns the timeout (the caller
/// logs it and calls again).
const RACE_FOR: Duration = Duration::from_secs(10);

/// Where Redis is and how to reach it: the validated `redis` section, which
/// [`crate::config`] builds. One `Spec` serves every [`Db`] of a process.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Standalone, Sentinel or Cluster.
    pub topology: Topology,
    /// TLS to the data nodes of a Sentinel or Cluster topology (a standalone URL says it with
    /// `rediss://`).
    pub tls: bool,
    /// PEM CA certificates trusted for TLS instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// ACL credentials.
    pub auth: Auth,
    /// Prefix of every key and channel ([`Keys`]).
    pub prefix: String,
    /// Bound on every command and connection attempt.
    pub timeout: Duration,
}

/// Which Redis deployment linkedge talks to.
#[derive(Clone, Debug)]
pub enum Topology {
    /// One server, by URL (`redis://host:port/db`, `rediss://` for TLS).
    Standalone {
        /// The server's URL; may carry a password when it came from the environment.
        url: String,
    },
    /// The master that Redis Sentinel names, followed after a failover.
    Sentinel {
        /// The master's name in the sentinels' configuration.
        master: String,
        /// The sentinels, `(host, port)`.
        nodes: Vec<(String, u16)>,
        /// Database number on the master.
        db: i64,
    },
    /// A Redis Cluster, found from seed nodes.
    Cluster {
        /// Seed nodes, `(host, port)`.
        nodes: Vec<(String, u16)>,
    },
}

/// Redis ACL credentials and the sentinels' password. `Debug` never shows them.
#[derive(Clone, Default)]
pub struct Auth {
    /// ACL user name.
    pub username: Option<String>,
    /// Password of the user (or `requirepass`).
    pub password: Option<String>,
    /// Password of the sentinels themselves.
    pub sentinel_password: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |o: &Option<String>| if o.is_some() { "set" } else { "none" };
        write!(
            f,
            "Auth(username {}, password {}, sentinel password {})",
            set(&self.username),
            set(&self.password),
            set(&self.sentinel_password)
        )
    }
}

/// A handle on one logical Redis connection; see the module documentation.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Db({}, {})",
            self.inner.name,
            self.inner.target.describe()
        )
    }
}

struct Inner {
    /// What this connection is for (`events`, `state`, ...), in logs and metrics.
    name: &'static str,
    target: Target,
    timeout: Duration,
    keys: Keys,
    state: Mutex<State>,
    /// Held while connecting, so one task connects and the others use its result.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// The live connection and its generation.
    conn: Option<(u64, Raw)>,
    generation: u64,
    /// Connection attempts failed in a row.
    failures: u32,
    /// No attempt before this instant.
    retry_at: Option<Instant>,
    /// The last attempt's error, returned while backing off.
    last_error: Option<String>,
}

/// How to reach Redis. One per [`Db`], built once: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Target {
    Single(Client),
    Sentinel {
        client: tokio::sync::Mutex<SentinelClient>,
        /// One client per concurrent pub/sub attempt ([`Db::pubsub`]): a client asking a
        /// black-holed sentinel holds its lock until the attempt's bound.
        racers: Vec<tokio::sync::Mutex<SentinelClient>>,
        master: String,
    },
    Cluster {
        client: redis::cluster::ClusterClient,
        /// Seed nodes, for pub/sub (a PUBLISH reaches every node of a cluster).
        seeds: Vec<ConnectionInfo>,
        node: NodeSettings,
    },
}

/// What every data-node connection shares: TLS roots and credentials.
#[derive(Clone)]
struct NodeSettings {
    tls: bool,
    root_cert: Option<Vec<u8>>,
    auth: Auth,
    db: i64,
}

impl NodeSettings {
    /// A client for one node, with TLS and credentials applied.
    fn client(&self, host: &str, port: u16) -> RedisResult<Client> {
        let addr = if self.tls {
            ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.to_string(), port)
        };
        let base = format!("redis://{host}:{port}/").into_connection_info()?;
        let info = self.apply(base.set_addr(addr));
        self.open(info)
    }

    fn apply(&self, info: ConnectionInfo) -> ConnectionInfo {
        let mut r = info.redis_settings().clone().set_db(self.db);
        if let Some(u) = &self.auth.username {
            r = r.set_username(u);
        }
        if let Some(p) = &self.auth.password {
            r = r.set_password(p);
        }
        info.set_redis_settings(r)
    }

    fn open(&self, info: ConnectionInfo) -> RedisResult<Client> {
        match (
            self.certificates(),
            matches!(info.addr(), ConnectionAddr::TcpTls { .. }),
        ) {
            (Some(certs), true) => Client::build_with_tls(info, certs),
            _ => Client::open(info),
        }
    }

    /// The configured roots (`redis.ca_file`), in the form the crate's builders take.
    fn certificates(&self) -> Option<TlsCertificates> {
        self.root_cert.as_ref().map(|root| TlsCertificates {
            client_tls: None,
            root_cert: Some(root.clone()),
        })
    }
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Single(c) => {
                let addr = c.get_connection_info().addr();
                let scheme = match addr {
                    ConnectionAddr::TcpTls { .. } => "rediss",
                    _ => "redis",
                };
                format!("{scheme}://{addr}")
            }
            Target::Sentinel { master, .. } => format!("sentinel master {master}"),
            Target::Cluster { seeds, .. } => format!("cluster of {} seed node(s)", seeds.len()),
        }
    }
}

/// An open connection, of whichever topology.
#[derive(Clone)]
enum Raw {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// One connection taken from a [`Db`] for an operation; runs commands like any `redis`
/// connection (`AsyncCommands`, pipelines, scripts), bounded by `redis.timeout`. Do not keep
/// it: take a new one from the [`Db`] for the next operation.
pub struct Conn {
    raw: Raw,
    generation: u64,
    inner: Arc<Inner>,
    /// Opened for this operation (or already re-opened once): a connection error on it is not
    /// staleness, and no read is sent again.
    fresh: bool,
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer within redis.timeout",
    ))
}

/// Whether `e` may mean the connection is dead or points at the wrong node.
fn fatal(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

/// Whether `e` says the connection itself is gone (reset, closed, refused), as a connection
/// that sat idle across a restart reports on its first command. Not a timeout: a slow server
/// is not made faster by asking twice.
fn stale(e: &RedisError) -> bool {
    e.is_connection_dropped() || (e.is_io_error() && !e.is_timeout())
}

/// Commands that change nothing, whatever their arguments: the ones linkedge sends that may be
/// sent again after a connection error.
const READS: &[&[u8]] = &[
    b"DBSIZE",
    b"EXISTS",
    b"GET",
    b"HEXISTS",
    b"HGET",
    b"HGETALL",
    b"HKEYS",
    b"HLEN",
    b"HMGET",
    b"HSCAN",
    b"HVALS",
    b"INFO",
    b"LLEN",
    b"LRANGE",
    b"MGET",
    b"PING",
    b"PTTL",
    b"SCAN",
    b"SCARD",
    b"SISMEMBER",
    b"SMEMBERS",
    b"STRLEN",
    b"TIME",
    b"TTL",
    b"TYPE",
    b"XINFO",
    b"XLEN",
    b"XRANGE",
    b"XREVRANGE",
    b"ZCARD",
    b"ZCOUNT",
    b"ZRANGE",
    b"ZRANGEBYSCORE",
    b"ZSCORE",
];

/// Whether `cmd` is one of [`READS`] (the name compared without regard to case).
pub fn is_read(cmd: &Cmd) -> bool {
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) => READS.iter().any(|r| r.eq_ignore_ascii_case(name)),
        _ => false,
    }
}

impl Conn {
    /// After `e` on this connection: a new connection to send a read on again, if `e` says this
    /// one was stale and it was not opened for this operation.
    async fn reopened_for_read(&self, e: &RedisError, read: bool) -> Option<Conn> {
        if self.fresh || !read || !stale(e) {
            return None;
        }
        let db = Db {
            inner: self.inner.clone(),
        };
        let mut c = db.conn().await.ok()?;
        c.fresh = true;
        metrics::redis_stale_reads(self.inner.name).inc();
        tracing::info!(redis = self.inner.name, error = %e, "redis connection was stale; sending the read again on a new connection");
        Some(c)
    }

    async fn bounded<T>(&self, f: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
        let r = tokio::time::timeout(self.inner.timeout, f)
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        if let Err(e) = &r
            && fatal(e)
        {
            self.inner.broken(self.generation, e);
        }
        r
    }
}

impl Conn {
    async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let mut raw = self.raw.clone();
        let f = async move {
            match &mut raw {
                Raw::Single(c) => c.req_packed_command(cmd).await,
                Raw::Cluster(c) => c.req_packed_command(cmd).await,
            }
        };
        self.bounded(f).await
    }

    async fn commands(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let mut raw = self.raw.clone();
        let f = async move {
            match &mut raw {
                Raw::Single(c) => c.req_packed_commands(pipeline, offset, count).await,
                Raw::Cluster(c) => c.req_packed_commands(pipeline, offset, count).await,
            }
        };
        self.bounded(f).await
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self.command(cmd).await {
                Err(e) => match self.reopened_for_read(&e, is_read(cmd)).await {
                    Some(again) => {
                        *self = again;
                        self.command(cmd).await
                    }
                    None => Err(e),
                },
                ok => ok,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match self.commands(pipeline, offset, count).await {
                Err(e) => {
                    let read = !pipeline.is_transaction() && pipeline.cmd_iter().all(is_read);
                    match self.reopened_for_read(&e, read).await {
                        Some(again) => {
                            *self = again;
                            self.commands(pipeline, offset, count).await
                        }
                        None => Err(e),
                    }
                }
                ok => ok,
            }
        })
    }

    fn get_db(&self) -> i64 {
        match &self.raw {
            Raw::Single(c) => c.get_db(),
            Raw::Cluster(c) => c.get_db(),
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops connection `generation` (if still current) after `e`.
    fn broken(&self, generation: u64, e: &RedisError) {
        let mut s = self.lock();
        if s.conn.as_ref().is_some_and(|(g, _)| *g == generation) {
            s.conn = None;
            metrics::redis_up(self.name).set(0);
            metrics::redis_reconnects(self.name).inc();
            tracing::warn!(redis = self.name, error = %e, "redis connection lost; reconnecting");
        }
    }

    fn current(self: &Arc<Self>) -> Option<Conn> {
        let s = self.lock();
        s.conn.as_ref().map(|(g, raw)| Conn {
            raw: raw.clone(),
            generation: *g,
            inner: self.clone(),
            fresh: false,
        })
    }
}

/// The wait before attempt `failures + 1`: doubling from [`MIN_BACKOFF`], capped at
/// [`MAX_BACKOFF`], then jittered into its upper half so a fleet does not retry in step.
fn backoff(failures: u32, unit_random: f64) -> Duration {
    let full = MIN_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    full.mul_f64(0.5 + 0.5 * unit_random.clamp(0.0, 1.0))
}

impl Db {
    /// A handle on the Redis that `spec` describes; `name` says what it is for in logs and
    /// metrics. Connects nothing yet; fails only on a malformed address or an unreadable
    /// `ca_file`.
    pub fn new(spec: &Spec, name: &'static str) -> anyhow::Result<Db> {
        let (cfg, auth) = (spec, &spec.auth);
        let root_cert =
            match &cfg.ca_file {
                Some(p) => Some(std::fs::read(p).map_err(|e| {
                    anyhow::anyhow!("redis.ca_file: cannot read {}: {e}", p.display())
                })?),
                None => None,
            };
        let node = NodeSettings {
            tls: cfg.tls,
            root_cert,
            auth: auth.clone(),
            db: match cfg.topology {
                Topology::Sentinel { db, .. } => db,
                _ => 0,
            },
        };
        let target = match &cfg.topology {
            Topology::Sentinel { master, nodes, db } => {
                let client = || -> RedisResult<SentinelClient> {
                    let sentinels = nodes
                        .iter()
                        .map(|(h, p)| ConnectionAddr::Tcp(h.clone(), *p))
                        .collect::<Vec<_>>();
                    let mut b =
                        SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)?
                            .set_client_to_redis_db(*db);
                    if let Some(u) = &auth.username {
                        b = b.set_client_to_redis_username(u);
                    }
                    if let Some(p) = &auth.password {
                        b = b.set_client_to_redis_password(p);
                    }
                    if let Some(p) = &auth.sentinel_password {
                        b = b.set_client_to_sentinel_password(p);
                    }
                    if cfg.tls {
                        b = b.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
                        if let Some(certs) = node.certificates() {
                            b = b.set_client_to_redis_certificates(certs);
                        }
                    }
                    b.build()
                };
                Target::Sentinel {
                    client: tokio::sync::Mutex::new(client()?),
                    racers: (0..RACE_MAX)
                        .map(|_| client().map(tokio::sync::Mutex::new))
                        .collect::<RedisResult<_>>()?,
                    master: master.clone(),
                }
            }
            Topology::Cluster { nodes } => {
                let seeds = nodes
                    .iter()
                    .map(|(h, p)| Ok(node.client(h, *p)?.get_connection_info().clone()))
                    .collect::<RedisResult<Vec<_>>>()?;
                let mut b = redis::cluster::ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(cfg.timeout)
                    .response_timeout(cfg.timeout);
                if cfg.tls {
                    b = b.tls(redis::TlsMode::Secure);
                    if let Some(certs) = node.certificates() {
                        b = b.certs(certs);
                    }
                }
                Target::Cluster {
                    client: b.build()?,
                    seeds,
                    node,
                }
            }
            Topology::Standalone { url } => {
                let info = node.apply(url.as_str().into_connection_info()?);
                Target::Single(node.open(info)?)
            }
        };
        Ok(Db {
            inner: Arc::new(Inner {
                name,
                target,
                timeout: cfg.timeout,
                keys: Keys::new(&spec.prefix),
                state: Mutex::new(State::default()),
                connecting: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Where it connects, for messages: `redis://host:port`, `sentinel master NAME`, or
    /// `cluster of N seed node(s)`. Never credentials.
    pub fn target(&self) -> String {
        self.inner.target.describe()
    }

    /// The key schema.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The bound on every command.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// A connection for one operation: the live one, or a new one. Fails at once while
    /// backing off after failed attempts, with the last attempt's error.
    pub async fn conn(&self) -> RedisResult<Conn> {
        if let Some(c) = self.inner.current() {
            return Ok(c);
        }
        let _connecting = self.inner.connecting.lock().await;
        if let Some(c) = self.inner.current() {
            return Ok(c);
        }
        {
            let s = self.inner.lock();
            if let Some(at) = s.retry_at
                && Instant::now() < at
            {
                return Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    format!(
                        "redis unavailable, next attempt in {} ms: {}",
                        at.saturating_duration_since(Instant::now()).as_millis(),
                        s.last_error.as_deref().unwrap_or("")
                    ),
                )));
            }
        }
        // Sentinel asks a sentinel, then connects to the master: two round trips.
        let bound = self.inner.timeout * 2;
        let opened = tokio::time::timeout(bound, self.open())
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        let mut s = self.inner.lock();
        match opened {
            Ok(raw) => {
                s.generation += 1;
                let g = s.generation;
                s.conn = Some((g, raw.clone()));
                if s.failures > 0 || g > 1 {
                    tracing::info!(redis = self.inner.name, target = %self.inner.target.describe(), "redis connected again");
                }
                s.failures = 0;
                s.retry_at = None;
                s.last_error = None;
                metrics::redis_up(self.inner.name).set(1);
                Ok(Conn {
                    raw,
                    generation: g,
                    inner: self.inner.clone(),
                    fresh: true,
                })
            }
            Err(e) => {
                s.failures += 1;
                s.retry_at = Some(Instant::now() + backoff(s.failures, rand::random::<f64>()));
                s.last_error = Some(e.to_string());
                metrics::redis_up(self.inner.name).set(0);
                if s.failures == 1 || s.failures.is_multiple_of(50) {
                    tracing::warn!(redis = self.inner.name, target = %self.inner.target.describe(), failures = s.failures, error = %e, "cannot connect to redis; retrying with backoff");
                }
                Err(e)
            }
        }
    }

    async fn open(&self) -> RedisResult<Raw> {
        let t = self.inner.timeout;
        let conf = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t));
        match &self.inner.target {
            Target::Single(c) => Ok(Raw::Single(
                c.get_multiplexed_async_connection_with_config(&conf)
                    .await?,
            )),
            Target::Sentinel { client, .. } => {
                let master = client.lock().await.async_get_client().await?;
                Ok(Raw::Single(
                    master
                        .get_multiplexed_async_connection_with_config(&conf)
                        .await?,
                ))
            }
            Target::Cluster { client, .. } => {
                Ok(Raw::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// A pub/sub connection subscribed to nothing yet, on the master (standalone, Sentinel) or
    /// on the first seed node that answers (Cluster: a PUBLISH reaches every node); the caller
    /// reconnects when its message stream ends.
    ///
    /// Each attempt is bounded by twice `redis.timeout`. Across a partition an attempt hangs
    /// until that bound (the SYN is dropped), and the first attempt after the heal would wait
    /// behind it: so while attempts time out, another starts every [`RACE_EVERY`] (at most
    /// [`RACE_MAX`] at once) and the first to connect wins, for up to [`RACE_FOR`]. An attempt
    /// that fails outright (refused, bad credentials) ends the call at once with its error.
    pub async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        use futures_util::StreamExt;
        let mut attempts = futures_util::stream::FuturesUnordered::new();
        attempts.push(Box::pin(self.pubsub_once()));
        let start = tokio::time::Instant::now();
        let mut next = start + RACE_EVERY;
        loop {
            tokio::select! {
                r = attempts.next() => match r {
                    Some(Ok(p)) => return Ok(p),
                    Some(Err(e)) if !e.is_timeout() || start.elapsed() >= RACE_FOR => return Err(e),
                    Some(Err(_)) | None => {
                        if attempts.is_empty() {
                            attempts.push(Box::pin(self.pubsub_once()));
                            next = tokio::time::Instant::now() + RACE_EVERY;
                        }
                    }
                },
                _ = tokio::time::sleep_until(next), if attempts.len() < RACE_MAX
                    && start.elapsed() < RACE_FOR => {
                    attempts.push(Box::pin(self.pubsub_once()));
                    next += RACE_EVERY;
                }
            }
        }
    }

    /// One [`Db::pubsub`] attempt, bounded by twice `redis.timeout`.
    async fn pubsub_once(&self) -> RedisResult<redis::aio::PubSub> {
        let t = self.inner.timeout * 2;
        let f = async {
            match &self.inner.target {
                Target::Single(c) => c.get_async_pubsub().await,
                Target::Sentinel { client, racers, .. } => {
                    // A free client, or the main one when every racer is busy.
                    let mut sentinel = match racers.iter().find_map(|r| r.try_lock().ok()) {
                        Some(g) => g,
                        None => client.lock().await,
                    };
                    // The crate's master client carries the TLS roots and credentials already.
                    let master = sentinel.async_get_client().await?;
                    drop(sentinel);
                    master.get_async_pubsub().await
                }
                Target::Cluster { seeds, node, .. } => {
                    let mut last = None;
                    for seed in seeds {
                        match node.open(seed.clone())?.get_async_pubsub().await {
                            Ok(p) => return Ok(p),
                            Err(e) => last = Some(e),
                        }
                    }
                    Err(last.unwrap_or_else(timed_out))
                }
            }
        };
        tokio::time::timeout(t, f)
            .await
            .unwrap_or_else(|_| Err(timed_out()))
    }

    /// The fewest replicas connected to a master (`connected_slaves` of `INFO replication`):
    /// the master's (standalone, Sentinel), or of every master of a cluster (a stream lives on
    /// one shard, any of them). For `check --online` against `events.min_replicas`.
    pub async fn replicas(&self) -> RedisResult<i64> {
        let mut c = self.conn().await?;
        let v: Value = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut c)
            .await?;
        let texts: Vec<String> = match v {
            Value::Map(m) => m
                .into_iter()
                .map(|(_, v)| redis::from_redis_value::<String>(v))
                .collect::<Result<_, _>>()?,
            other => vec![redis::from_redis_value(other)?],
        };
        let field = |text: &str, k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        Ok(texts
            .iter()
            .filter(|t| field(t, "role").as_deref() == Some("master"))
            .filter_map(|t| field(t, "connected_slaves")?.parse::<i64>().ok())
            .min()
            .unwrap_or(0))
    }

    /// Which node answers and what it runs, for `linkedge check --online`: one line such as
    /// `redis 7.0.15 (standalone, master) at 127.0.0.1:6379 via redis://127.0.0.1:6379`; a
    /// cluster lists every node that answered with its role.
    pub async fn describe(&self) -> RedisResult<String> {
        let mut c = self.conn().await?;
        // A cluster routes INFO to every node and answers a map of node → text.
        let per_node = |v: Value| -> RedisResult<Vec<(String, String)>> {
            match v {
                Value::Map(m) => m
                    .into_iter()
                    .map(|(k, v)| {
                        Ok((
                            redis::from_redis_value::<String>(k)?,
                            redis::from_redis_value::<String>(v)?,
                        ))
                    })
                    .collect(),
                other => Ok(vec![(String::new(), redis::from_redis_value(other)?)]),
            }
        };
        let server = per_node(redis::cmd("INFO").arg("server").query_async(&mut c).await?)?;
        let repl = per_node(
            redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut c)
                .await?,
        )?;
        let field = |text: &str, k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| "?".into())
        };
        let (_, first) = &server[0];
        let version = field(first, "redis_version");
        let mode = field(first, "redis_mode");
        let at = match &self.inner.target {
            Target::Sentinel { client, .. } => {
                let m = client.lock().await.async_get_client().await?;
                format!(
                    "{} ({})",
                    m.get_connection_info().addr(),
                    field(&repl[0].1, "role")
                )
            }
            Target::Single(_) => format!(
                "port {} ({})",
                field(first, "tcp_port"),
                field(&repl[0].1, "role")
            ),
            Target::Cluster { .. } => {
                let mut nodes: Vec<String> = repl
                    .iter()
                    .map(|(n, text)| format!("{n} ({})", field(text, "role")))
                    .collect();
                nodes.sort();
                format!("{} node(s): {}", nodes.len(), nodes.join(", "))
            }
        };
        Ok(format!(
            "redis {version} ({mode}) at {at} via {}",
            self.inner.target.describe()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered_into_its_upper_half() {
        assert_eq!(backoff(1, 1.0), MIN_BACKOFF);
        assert_eq!(backoff(2, 1.0), MIN_BACKOFF * 2);
        assert_eq!(backoff(3, 1.0), MIN_BACKOFF * 4);
        assert_eq!(backoff(30, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(30, 0.0), MAX_BACKOFF / 2);
        for f in 1..40 {
            let b = backoff(f, 0.37);
            assert!(b >= MIN_BACKOFF / 2 && b <= MAX_BACKOFF, "{f}: {b:?}");
        }
    }

    #[test]
    fn dead_connection_errors_are_fatal_and_answers_are_not() {
        assert!(fatal(&timed_out()));
        let reset = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert!(fatal(&reset));
        let wrongtype = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "WRONGTYPE",
        ));
        assert!(!fatal(&wrongtype));
    }

    #[test]
    fn only_commands_that_change_nothing_are_reads() {
        for c in ["HGETALL", "hget", "XRevRange", "PING"] {
            assert!(is_read(&redis::cmd(c)), "{c}");
        }
        for c in ["SET", "HSET", "XADD", "EVALSHA", "DEL", "WAIT", "EXPIRE"] {
            assert!(!is_read(&redis::cmd(c)), "{c}");
        }
        assert!(!is_read(&Cmd::new()), "no command name");
        let reset = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "broken pipe",
        ));
        assert!(stale(&reset));
        assert!(!stale(&timed_out()), "a timeout is not sent again");
    }

    #[test]
    fn no_credentials_in_a_debug_print() {
        let spec = Spec {
            topology: Topology::Standalone {
                url: "redis://127.0.0.1:6379/".into(),
            },
            tls: false,
            ca_file: None,
            auth: Auth {
                username: Some("edge".into()),
                password: Some("hunter2-not-a-secret".into()),
                sentinel_password: None,
            },
            prefix: "linkedge:".into(),
            timeout: Duration::from_secs(1),
        };
        let db = Db::new(&spec, "state").unwrap();
        let shown = format!("{db:?} {spec:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redis://127.0.0.1:6379"), "{shown}");
    }
}
