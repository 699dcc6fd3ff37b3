//! Wiring: builds the Pingora server from validated settings, runs it, and spools whatever
//! events are left when it stops.

use crate::acme::{Acme, Issuer};
use crate::agent::{self, Detector, networks::Reloader};
use crate::blocks::{BlockFollower, BlockList};
use crate::config::Settings;
use crate::control::Control;
use crate::control::admin::Admin;
use crate::edge::{Edge, WellKnown, access};
use crate::events::spool::Spool;
use crate::events::writer::{Writer, WriterConfig};
use crate::events::{Recorder, Sinks};
use crate::host::normalize_host;
use crate::limits::{self, Conns, Guarded};
use crate::mint::{Minter, Unregistered};
use crate::registry::{Follower, LastClicks, Mirror};
use crate::store::Db;
use crate::store::follow::Following;
use crate::store::keys::replication_marker;
use crate::tls::{Cache, CertStore, Certificates, Invalidator, Own, Selector, Terminator};
use crate::{metrics, tls, upstream};
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
    tls: Option<(std::net::SocketAddr, Terminator)>,
) -> Service<Guarded<pingora::proxy::HttpProxy<Edge>>> {
    let mut proxy = pingora::proxy::http_proxy(conf, edge);
    let mut opts = pingora::apps::HttpServerOptions::default();
    opts.keepalive_request_limit = Some(limits.keepalive_requests);
    // HTTP/2's idle deadline is linkedge's own, with HTTP/1's (crate::limits).
    proxy.server_options = Some(opts);
    // From Pingora's bounded defaults: a builder made from scratch would drop them.
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_concurrent_streams(limits.h2_max_streams);
    h2.max_header_list_size(limits.max_header_bytes as u32);
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
    // Drain within the grace period, leaving Pingora a moment to stop the rest.
    let grace = Duration::from_secs(conf.grace_period_seconds.unwrap_or(0));
    let drain = grace.saturating_sub(Duration::from_millis(250));
    Service::new(
        "public".to_string(),
        Guarded::new(proxy, conns, tls).drain_within(drain),
    )
}

/// The HTTPS listener's certificates as `settings` configure them: the `tls` files for every
/// name, or per SNI from the store (with ACME issuing on demand, when configured) and the `tls`
/// files for the edge's own names, plus the service that keeps every node's cache current.
/// `state` is the store's Redis.
fn certificates(
    settings: &Settings,
    state: &Db,
    registry: Option<Arc<Mirror>>,
) -> anyhow::Result<(Certificates, Option<Invalidator>)> {
    let own = Own::new(tls::load_pair(&settings.tls.cert, &settings.tls.key)?);
    let names: Vec<String> = own.names().collect();
    tracing::info!(names = ?names, "tls.cert: the edge's own names");
    // Customers CNAME to verify.target, and their proxies in front connect to it by that name.
    if let Some(target) = settings.verify.target.as_deref().and_then(normalize_host)
        && own.covers(&target).is_none()
    {
        tracing::warn!(verify_target = %target, names = ?names, "tls.cert does not cover verify.target: customers' own proxies connecting to it by name will be refused");
    }
    let Some(c) = &settings.certs else {
        return Ok((Certificates::Static(own), None));
    };
    let cache = Arc::new(Cache::new(c.cache_size, c.negative_ttl));
    let store = CertStore::new(state.clone(), c.sealer.clone());
    let mut selector = Selector::new(cache.clone(), store, own, c.fallback);
    if let Some(m) = registry {
        selector = selector.with_registry(m);
    }
    if let Some(a) = &settings.acme {
        let acme = Acme::new(settings.db("acme")?, a.clone(), c.sealer.clone());
        selector = selector.with_on_demand(Arc::new(acme), a.on_demand_wait);
    }
    let invalidator = Invalidator::new(cache, settings.db("pubsub")?);
    Ok((Certificates::Store(selector), Some(invalidator)))
}

/// Loads everything `run` loads before it serves, through the same functions, without binding,
/// connecting or starting anything: certificate files, Redis settings, backend names (resolved)
/// and CA files (`domain verify`'s too). What `linkedge check` runs.
pub fn check(settings: &Settings) -> anyhow::Result<()> {
    let state = settings.db("state")?;
    if settings.listen.https.is_some() {
        let (certs, _) = certificates(settings, &state, None)?;
        Terminator::new(certs, tls::TicketKeys::new(), settings.tls.ticket_rotation)?;
    }
    upstream::build(&settings.regions, &settings.routing, None)?;
    crate::control::verify::connector(&settings.verify)?;
    Ok(())
}

/// Builds and runs the server until SIGTERM (graceful) or SIGINT (fast); returns once it stopped
/// and the remaining events are in the spool.
pub fn run(settings: Settings, process: ProcessOptions) -> anyhow::Result<()> {
    let s = &settings;
    metrics::init();
    let ev = &s.events;
    // The default sink, then one per region with its own (`events.regions`): each its own
    // queue, spool and writer, so one Redis outage holds back only its own events.
    let default = recorder(s, "default", ev.spool.dir.clone())?;
    let mut writers = vec![(
        default.clone(),
        WriterConfig {
            db: s.db("events")?,
            stream: ev.stream.clone(),
            maxlen: ev.maxlen,
            batch_max: ev.batch_max,
            memory_window: ev.memory_window,
            min_replicas: ev.min_replicas,
            replica_timeout: ev.replica_timeout,
            marker: replication_marker(&s.redis.prefix, &ev.stream).unwrap_or_default(),
        },
    )];
    let mut sinks = Sinks::new(default);
    for sink in &s.event_sinks {
        let name: &'static str = Box::leak(sink.region.clone().into_boxed_str());
        let rec = recorder(s, name, ev.spool.dir.join(format!("region-{name}")))?;
        let db_name: &'static str = Box::leak(format!("events-{name}").into_boxed_str());
        writers.push((
            rec.clone(),
            WriterConfig {
                db: Db::new(&sink.redis, db_name)?,
                stream: sink.stream.clone(),
                maxlen: sink.maxlen,
                batch_max: ev.batch_max,
                memory_window: ev.memory_window,
                min_replicas: sink.min_replicas,
                replica_timeout: ev.replica_timeout,
                marker: replication_marker(&sink.redis.prefix, &sink.stream).unwrap_or_default(),
            },
        ));
        sinks = sinks.with_region(name, rec);
    }
    let sinks = Arc::new(sinks);

    let threads = s
        .server
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let conf = ServerConf {
        daemon: process.daemon,
        pid_file: s.server.pid_file.clone(),
        upgrade_sock: s.server.upgrade_sock.clone(),
        grace_period_seconds: Some(s.server.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(s.server.graceful_shutdown_timeout_seconds),
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
    let state = s.db("state")?;
    // Every registered domain in memory, followed through the registry's change feed.
    let mirror = Arc::new(Mirror::new(s.region_names()));
    let follower = Following::new(
        Follower::new(mirror.clone(), s.db("registry")?),
        s.db("registry")?,
        s.registry.resync_interval,
    );
    server.add_service(background_service("registry mirror", follower));
    // Every block rule in memory, followed through the block list's change feed.
    let block_list = Arc::new(BlockList::new());
    let blocks = Following::new(
        BlockFollower::new(block_list.clone(), s.db("blocks")?),
        s.db("blocks")?,
        s.blocks.resync_interval,
    );
    server.add_service(background_service("block list", blocks));
    let last_clicks = LastClicks::new(
        mirror.clone(),
        s.db("registry")?,
        s.registry.last_click_interval,
    );
    server.add_service(background_service(
        "retired domains' last clicks",
        last_clicks,
    ));
    let regions = upstream::build(&s.regions, &s.routing, Some(mirror.clone()))?;
    let networks = match &s.bots.scanner_networks {
        Some(path) => {
            let (reloader, n) = Reloader::load(path.clone(), Duration::from_secs(5))?;
            server.add_service(background_service("scanner networks", reloader));
            Some(n)
        }
        None => None,
    };
    let b = &s.bots;
    let agents = Detector::new(
        agent::Settings {
            prefetch_window: (!b.prefetch_window.is_zero()).then_some(b.prefetch_window),
            pairs: agent::pairs::Settings {
                burst: (b.burst.links > 0).then_some(agent::pairs::BurstSettings {
                    links: b.burst.links,
                    window: b.burst.window,
                }),
                honeypot_window: (!b.honeypot_window.is_zero()).then_some(b.honeypot_window),
                capacity: b.pairs,
            },
        },
        networks,
    );
    tracing::info!(
        isbot = %agent::ISBOT_VERSION,
        "machine-click detection: user agents matched against the isbot crate's list"
    );
    let edge = Edge::new(
        s.keyring.clone(),
        sinks.clone(),
        s.clients.trusted_proxies.clone(),
        regions.regions.clone(),
        WellKnown::new(state.clone()),
        Arc::new(agents),
        s.client_ip.clone(),
    )
    .with_limits(s.limits.clone())
    .with_registry(mirror.clone())
    .with_blocks(block_list.clone(), s.blocks.clone());
    let edge = match &s.access_log {
        None => edge,
        Some(to) => {
            let target = match to {
                crate::config::AccessLogTo::Stdout => access::Target::Stdout,
                crate::config::AccessLogTo::File(p) => access::Target::File(p.clone()),
            };
            tracing::info!(?target, "access log on");
            edge.with_access_log(
                access::AccessLog::start(target)
                    .map_err(|e| anyhow::anyhow!("access_log.to: {e}"))?,
            )
        }
    };
    let mut terminator = None;
    if let Some(addr) = s.listen.https {
        let (certs, invalidator) = certificates(s, &state, Some(mirror.clone()))?;
        let tickets = tls::TicketKeys::new();
        terminator = Some((
            addr,
            Terminator::new(certs, tickets.clone(), s.tls.ticket_rotation)?,
        ));
        // The node's own keys, rotated on the same schedule until (or unless) it reads the
        // fleet's.
        server.add_service(background_service(
            "own session ticket keys",
            tls::tickets::OwnRotation::new(tickets.clone(), s.tls.ticket_rotation),
        ));
        match &s.certs {
            Some(c) => {
                let follower = Following::new(
                    tls::TicketFollower::new(
                        tickets,
                        s.db("tickets")?,
                        c.sealer.clone(),
                        s.tls.ticket_rotation,
                    ),
                    s.db("tickets")?,
                    tls::tickets::resync_every(s.tls.ticket_rotation),
                );
                server.add_service(background_service("session ticket keys", follower));
            }
            None => {
                tracing::info!(
                    "no certs section: session ticket keys are this node's own (a client resumes only on the node that made its ticket)"
                );
            }
        }
        if let Some(inv) = invalidator {
            server.add_service(background_service("certificate invalidation", inv));
        }
    }
    let mut public = public_service(&server.configuration, edge, &s.limits, terminator);
    // Both listeners are plain TCP to Pingora: linkedge terminates TLS itself (crate::tls).
    for addr in [s.listen.http, s.listen.https].into_iter().flatten() {
        public.add_tcp(&addr.to_string());
    }
    server.add_service(public);
    if let (Some(acme), Some(certs)) = (&s.acme, &s.certs) {
        let issuer = Issuer::new(
            s.db("acme")?,
            s.region_names(),
            acme.clone(),
            certs.sealer.clone(),
            s.verify.clone(),
        );
        server.add_service(background_service("certificate issuer", issuer));
    }
    for svc in regions.services {
        server.add_boxed_service(svc);
    }

    if let Some(addr) = s.listen.metrics {
        let minter = Minter::new(s.keyring.clone(), &s.link_scheme, Unregistered::Refuse);
        let admin = Admin::new(s.admin_token.clone(), Control::new(s, s.db("admin")?))
            .with_links(minter, mirror.clone());
        let mut admin = Service::new("admin".into(), admin);
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }

    for (rec, cfg) in writers {
        let name = format!("event writer {}", rec.metrics().sink);
        server.add_service(background_service(&name, Writer::new(rec, cfg)));
    }

    tracing::info!(
        http = ?s.listen.http,
        https = ?s.listen.https,
        metrics = ?s.listen.metrics,
        stream = %ev.stream,
        "linkedge starting"
    );
    // With --test, bootstrap exits here, after everything above (certificates included) loaded.
    // With --upgrade, it returns once the running process handed its listeners over.
    server.bootstrap();
    // `linkedge reload` finds the running process here (Pingora writes it only with --daemon).
    // Under systemd (`Type=notify`), this process serves and is the unit's main process (after a
    // reload, the new process takes that role from the one about to exit).
    let pid_file = (!process.daemon).then(|| {
        let written = PidFile::write(&s.server.pid_file);
        crate::systemd::notify(&crate::systemd::ready_message(std::process::id()));
        written
    });
    server.run(RunArgs::default());
    drop(pid_file);
    let left: usize = sinks.all().map(|r| r.flush_to_spool()).sum();
    tracing::info!(spooled = left, "linkedge stopped");
    Ok(())
}

/// The queue and spool of the event sink `sink`, its spool in `dir`.
fn recorder(
    s: &Settings,
    sink: &'static str,
    dir: std::path::PathBuf,
) -> anyhow::Result<Arc<Recorder>> {
    let ev = &s.events;
    let metrics = crate::metrics::SinkMetrics::new(sink);
    let mut spool = Spool::open_for(&dir, ev.spool.max_bytes, metrics)
        .map_err(|e| anyhow::anyhow!("events.spool.dir: cannot open {}: {e}", dir.display()))?;
    spool.set_sync_interval(ev.spool.sync_interval);
    if spool.has_backlog() {
        tracing::info!(
            sink,
            bytes = spool.bytes(),
            "spool holds events from an earlier run; replaying"
        );
    }
    Ok(Arc::new(Recorder::new(ev.queue_capacity, spool)))
}

/// This process's id in `server.pid_file`, written once it serves (an upgrade's new process
/// overwrites its predecessor's) and removed at exit if it still names this process.
struct PidFile(std::path::PathBuf);

impl PidFile {
    fn write(path: &str) -> PidFile {
        let path = std::path::PathBuf::from(path);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::write(&tmp, format!("{}\n", std::process::id()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the pid file; linkedge reload will not find this process");
        }
        PidFile(path)
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.0)
            .is_ok_and(|s| s.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
