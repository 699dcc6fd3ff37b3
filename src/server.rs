//! Wiring: builds the Pingora server from validated settings, runs it, and spools whatever
//! events are left when it stops.

use crate::acme::{Acme, Issuer};
use crate::admin::{Admin, RegistryConfig};
use crate::certs::{Cache, Invalidator, Sealer, Selector, Store};
use crate::config::Settings;
use crate::db::Db;
use crate::domains::Registry;
use crate::edge::{Edge, WellKnown};
use crate::events::Recorder;
use crate::events::spool::Spool;
use crate::events::writer::{Writer, WriterConfig};
use crate::limits::{self, Conns, Guarded};
use crate::{metrics, tls};
use pingora::prelude::*;
use pingora::server::RunArgs;
use pingora::server::configuration::ServerConf;
use pingora::services::listening::Service;
use std::sync::Arc;
use std::time::Duration;

/// Pingora's process options that `linkedge serve` passes through.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessOptions {
    /// Run in the background (`--daemon`).
    pub daemon: bool,
    /// Take the listening sockets over from a running linkedge (`--upgrade`).
    pub upgrade: bool,
    /// Check that everything loads, then exit (`--test`).
    pub test: bool,
}

/// The public listeners' service: the edge behind the connection caps and deadlines
/// ([`crate::limits`]), with Pingora's keep-alive, HTTP/2 and pipelining options from `limits`.
fn public_service(
    conf: &Arc<ServerConf>,
    edge: Edge,
    limits: &crate::config::Limits,
    tls: Option<(std::net::SocketAddr, tls::Terminator)>,
) -> Service<Guarded<pingora::proxy::HttpProxy<Edge>>> {
    let mut proxy = pingora::proxy::http_proxy(conf, edge);
    let mut opts = pingora::apps::HttpServerOptions::default();
    opts.keepalive_request_limit = Some(limits.keepalive_requests);
    opts.h2_idle_timeout = Some(limits.keepalive_timeout);
    proxy.server_options = Some(opts);
    let mut h2 = pingora::protocols::http::v2::server::H2Options::new();
    h2.max_concurrent_streams(limits.h2_max_streams);
    proxy.h2_options = Some(h2);
    let nofile = limits::raise_nofile_limit();
    let max = limits
        .max_connections
        .unwrap_or_else(|| nofile.saturating_sub(limits::FD_HEADROOM).max(64) as usize);
    tracing::info!(
        open_file_limit = nofile,
        max_connections = max,
        max_connections_per_ip = limits.max_connections_per_ip,
        "connection capacity"
    );
    if max as u64 + limits::FD_HEADROOM > nofile {
        tracing::warn!(
            open_file_limit = nofile,
            max_connections = max,
            "limits.max_connections leaves fewer than 1024 descriptors for upstreams, Redis and the spool"
        );
    }
    let conns = Arc::new(Conns::new(limits.clone(), max));
    Service::new("public".to_string(), Guarded::new(proxy, conns, tls))
}

/// Builds and runs the server until SIGTERM (graceful) or SIGINT (fast); returns once it stopped
/// and the remaining events are in the spool.
pub fn run(settings: Settings, process: ProcessOptions) -> anyhow::Result<()> {
    let f = &settings.file;
    metrics::init();
    let mut spool = Spool::open(&f.events.spool.dir, f.events.spool.max_bytes).map_err(|e| {
        anyhow::anyhow!(
            "events.spool.dir: cannot open {}: {e}",
            f.events.spool.dir.display()
        )
    })?;
    spool.set_sync_interval(f.events.spool.sync_interval);
    if spool.has_backlog() {
        tracing::info!(
            bytes = spool.bytes(),
            "spool holds events from an earlier run; replaying"
        );
    }
    let recorder = Arc::new(Recorder::new(f.events.queue_capacity, spool));

    let threads = f
        .server
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let conf = ServerConf {
        daemon: process.daemon,
        pid_file: f.server.pid_file.clone(),
        upgrade_sock: f.server.upgrade_sock.clone(),
        grace_period_seconds: Some(f.server.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(f.server.graceful_shutdown_timeout_seconds),
        threads,
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: process.upgrade,
        daemon: process.daemon,
        test: process.test,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);

    // One connection per concern, each through the Redis layer: nothing is connected until
    // first use (the server may still fork), and each reconnects by itself.
    let state = Db::from_settings(&settings, "state")?;
    let regions = crate::regions::build(f)?;
    let edge = Edge::new(
        settings.keyring.clone(),
        recorder.clone(),
        f.clients.trusted_proxies.clone(),
        regions.regions.clone(),
    )
    .with_well_known(WellKnown::new(state.clone()));
    let sealer = f
        .certs
        .as_ref()
        .map(|c| Sealer::new(settings.master_keys.clone(), c.master_key));
    let mut invalidator = None;
    let mut terminator = None;
    if let Some(addr) = f.listen.https {
        let selector = match &f.certs {
            None => Selector::new(
                Arc::new(Cache::new(1, Duration::ZERO)),
                None,
                Some(tls::load_pair(&f.tls.cert, &f.tls.key)?),
            ),
            Some(c) => {
                let cache = Arc::new(Cache::new(c.cache_size, c.negative_ttl));
                let sealer = sealer.clone().expect("certs is configured");
                let fallback = if c.fallback {
                    Some(tls::load_pair(&f.tls.cert, &f.tls.key)?)
                } else {
                    None
                };
                let store = Store::new(state.clone(), sealer.clone());
                let selector = Selector::new(cache.clone(), Some(store), fallback);
                invalidator = Some(Invalidator::new(
                    cache,
                    Db::from_settings(&settings, "pubsub")?,
                ));
                match &f.acme {
                    Some(a) => selector.with_on_demand(Acme::new(
                        Db::from_settings(&settings, "acme")?,
                        a.clone(),
                        sealer,
                    )),
                    None => selector,
                }
            }
        };
        terminator = Some((addr, tls::Terminator::new(selector)?));
    }
    let mut public = public_service(&server.configuration, edge, &f.limits, terminator);
    // Both listeners are plain TCP to Pingora: linkedge terminates TLS itself (crate::tls).
    for addr in [f.listen.http, f.listen.https].into_iter().flatten() {
        public.add_tcp(&addr.to_string());
    }
    server.add_service(public);
    if let Some(inv) = invalidator {
        server.add_service(background_service("certificate invalidation", inv));
    }
    if let (Some(acme), Some(sealer)) = (&f.acme, &sealer) {
        let issuer = Issuer::new(
            Db::from_settings(&settings, "acme")?,
            f.regions.keys().cloned().collect(),
            acme.clone(),
            sealer.clone(),
        );
        server.add_service(background_service("certificate issuer", issuer));
    }
    for svc in regions.services {
        server.add_boxed_service(svc);
    }

    if let Some(addr) = f.listen.metrics {
        let admin = Admin::new(
            settings.admin_token.clone(),
            RegistryConfig {
                registry: Registry::new(
                    Db::from_settings(&settings, "admin")?,
                    f.regions.keys().cloned().collect(),
                ),
                verify: f.verify.clone(),
                acme: f.acme.clone().zip(sealer.clone()),
            },
        );
        let mut admin = Service::new("admin".into(), admin);
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }

    let writer = Writer::new(
        recorder.clone(),
        WriterConfig {
            db: Db::from_settings(&settings, "events")?,
            stream: f.events.stream.clone(),
            maxlen: f.events.maxlen,
            batch_max: f.events.batch_max,
            memory_window: f.events.memory_window,
        },
    );
    server.add_service(background_service("event writer", writer));

    tracing::info!(
        http = ?f.listen.http,
        https = ?f.listen.https,
        metrics = ?f.listen.metrics,
        stream = %f.events.stream,
        "linkedge starting"
    );
    // With --test, bootstrap exits here, after everything above (certificates included) loaded.
    server.bootstrap();
    server.run(RunArgs::default());
    let left = recorder.flush_to_spool();
    tracing::info!(spooled = left, "linkedge stopped");
    Ok(())
}
