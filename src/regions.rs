//! Regional track backends: one health-checked load balancer per region, region choice per Host,
//! and failover to a fallback region only where the operator allowed it (data residency).

use crate::config::{self, Selection};
use crate::metrics;
use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::selection::{Consistent, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::prelude::*;
use pingora::protocols::tls::CaType;
use pingora::services::background::background_service;
use pingora::tls::x509::X509;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How to reach one backend, stored in its `Backend::ext`.
#[derive(Clone)]
struct Dial {
    tls: bool,
    sni: String,
    label: String,
}

enum Selector {
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
    Ketama(Arc<LoadBalancer<Consistent>>),
}

/// A region at run time.
pub struct Region {
    /// Its name from the config (`us`, `eu`, ...).
    pub name: String,
    selector: Selector,
    fallback: Option<String>,
    /// Further backends tried after a connection failure.
    pub retries: usize,
    timeouts: config::Timeouts,
    ca: Option<Arc<CaType>>,
}

/// Backends are searched at most this far for a healthy, untried one.
const MAX_SEARCH: usize = 256;

impl Region {
    /// A backend not in `tried`, by the region's selection (keyed on `key`); only a healthy one
    /// unless `any_health`.
    fn select(
        &self,
        key: &[u8],
        tried: &[std::net::SocketAddr],
        any_health: bool,
    ) -> Option<Backend> {
        let accept = |b: &Backend, healthy: bool| {
            (healthy || any_health) && !b.addr.as_inet().is_some_and(|a| tried.contains(a))
        };
        match &self.selector {
            Selector::RoundRobin(lb) => lb.select_with(key, MAX_SEARCH, accept),
            Selector::Ketama(lb) => lb.select_with(key, MAX_SEARCH, accept),
        }
    }

    /// The peer to connect to for `backend`, with the region's timeouts and trust.
    fn peer(&self, backend: &Backend) -> Box<HttpPeer> {
        let dial = backend.ext.get::<Dial>().cloned().unwrap_or(Dial {
            tls: false,
            sni: String::new(),
            label: backend.addr.to_string(),
        });
        let mut peer = HttpPeer::new(backend.addr.clone(), dial.tls, dial.sni);
        let o = &mut peer.options;
        o.connection_timeout = Some(self.timeouts.connect);
        o.total_connection_timeout = Some(self.timeouts.connect);
        o.read_timeout = Some(self.timeouts.read);
        o.write_timeout = Some(self.timeouts.write);
        o.idle_timeout = Some(self.timeouts.idle);
        o.ca = self.ca.clone();
        Box::new(peer)
    }
}

/// The backend's label for metrics and logs (`addr` as configured).
pub fn backend_label(backend: &Backend) -> String {
    backend
        .ext
        .get::<Dial>()
        .map_or_else(|| backend.addr.to_string(), |d| d.label.clone())
}

/// Every region, and the Host → region routing.
pub struct Regions {
    regions: HashMap<String, Arc<Region>>,
    default_region: Option<Arc<Region>>,
    domains: HashMap<String, Arc<Region>>,
}

/// What [`Regions::route`] decided for a request.
pub struct Choice {
    /// The region that served it in the end.
    pub region: Arc<Region>,
    /// The backend.
    pub backend: Backend,
    /// The peer to connect to.
    pub peer: Box<HttpPeer>,
    /// True when the fallback region took the request.
    pub failover: bool,
}

impl Regions {
    /// True when no region is configured (the edge answers 404 to what it does not serve).
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// The region serving `host` (normalised), or `None` for a Host we do not serve (421).
    pub fn region_for(&self, host: &str) -> Option<Arc<Region>> {
        self.domains
            .get(host)
            .or(self.default_region.as_ref())
            .cloned()
    }

    /// Picks a healthy, untried backend in `region`, else in its fallback region if allowed.
    /// When no backend anywhere allowed is healthy, it fails open: an untried backend of
    /// `region` is tried anyway (health checks can be wrong; a backend that is really down just
    /// refuses the connection, and the request ends 502 as it would have).
    pub fn choose(
        &self,
        region: &Arc<Region>,
        key: &[u8],
        tried: &[std::net::SocketAddr],
    ) -> Option<Choice> {
        let pick = |r: &Arc<Region>, any_health: bool, failover: bool| {
            r.select(key, tried, any_health).map(|b| Choice {
                peer: r.peer(&b),
                region: r.clone(),
                backend: b,
                failover,
            })
        };
        let fallback = region.fallback.as_deref().and_then(|f| self.regions.get(f));
        pick(region, false, false)
            .or_else(|| fallback.and_then(|fb| pick(fb, false, true)))
            .or_else(|| {
                let c = pick(region, true, false);
                if c.is_some() {
                    metrics::upstream_event(&region.name, "fail_open");
                }
                c
            })
    }
}

/// The active check of a region's backends: GET the configured path with each backend's own
/// TLS settings, and expect the configured status and (exact) body.
struct RegionCheck {
    ca: Option<Arc<CaType>>,
    req: RequestHeader,
    connector: pingora::connectors::http::Connector,
    timeout: Duration,
    expect_status: u16,
    expect_body: Option<Vec<u8>>,
    successes: usize,
    failures: usize,
    region: String,
}

/// Longest health-check body read.
const MAX_CHECK_BODY: usize = 64 << 10;

#[async_trait]
impl HealthCheck for RegionCheck {
    async fn check(&self, target: &Backend) -> Result<()> {
        let addr = target
            .addr
            .as_inet()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "backend without address"))?;
        let dial = target
            .ext
            .get::<Dial>()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "backend without dial"))?;
        let mut peer = HttpPeer::new(*addr, dial.tls, dial.sni.clone());
        peer.options.connection_timeout = Some(self.timeout);
        peer.options.total_connection_timeout = Some(self.timeout);
        peer.options.ca = self.ca.clone();
        let (mut session, _) = self.connector.get_http_session(&peer).await?;
        session.set_write_timeout(Some(self.timeout));
        session.set_read_timeout(Some(self.timeout));
        session
            .write_request_header(Box::new(self.req.clone()))
            .await?;
        session.finish_request_body().await?;
        session.read_response_header().await?;
        let status = session.response_header().map_or(0, |h| h.status.as_u16());
        if status != self.expect_status {
            return Error::e_explain(
                ErrorType::CustomCode("unexpected health check status", status),
                format!("expected {}", self.expect_status),
            );
        }
        let mut body = Vec::new();
        while let Some(chunk) = session.read_response_body().await? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_CHECK_BODY {
                return Error::e_explain(
                    ErrorType::InvalidHTTPHeader,
                    "health check body too long",
                );
            }
        }
        if let Some(want) = &self.expect_body
            && &body != want
        {
            return Error::e_explain(
                ErrorType::CustomCode("unexpected health check body", status),
                "body differs from health_check.expect_body",
            );
        }
        Ok(())
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        let label = backend_label(target);
        if healthy {
            tracing::info!(region = %self.region, backend = %label, "backend healthy: back in rotation");
        } else {
            tracing::warn!(region = %self.region, backend = %label, "backend unhealthy: out of rotation");
        }
        metrics::backend_healthy(&self.region, &label).set(healthy as i64);
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.successes
        } else {
            self.failures
        }
    }
}

fn load_ca(path: &std::path::Path, region: &str) -> anyhow::Result<Arc<CaType>> {
    let pem = std::fs::read(path).map_err(|e| {
        anyhow::anyhow!(
            "regions.{region}.ca_file: cannot read {}: {e}",
            path.display()
        )
    })?;
    let certs = X509::stack_from_pem(&pem)
        .map_err(|e| anyhow::anyhow!("regions.{region}.ca_file: not PEM certificates: {e}"))?;
    Ok(Arc::new(certs.into_boxed_slice()))
}

fn health_check(
    name: &str,
    r: &config::Region,
    ca: &Option<Arc<CaType>>,
) -> anyhow::Result<RegionCheck> {
    let hc = &r.health_check;
    let mut req = RequestHeader::build("GET", hc.path.as_bytes(), None)
        .map_err(|e| anyhow::anyhow!("regions.{name}.health_check.path: {e}"))?;
    // The first backend's SNI, else the host part of its address (a name or an IP).
    let host = r
        .backends
        .first()
        .map(|b| match &b.sni {
            Some(sni) if b.tls => sni.clone(),
            _ => split_host_port(&b.addr).map_or("", |(h, _)| h).to_string(),
        })
        .unwrap_or_default();
    req.insert_header("Host", host)?;
    req.insert_header("User-Agent", "linkedge-health-check")?;
    Ok(RegionCheck {
        ca: ca.clone(),
        req,
        connector: pingora::connectors::http::Connector::new(None),
        timeout: hc.timeout,
        expect_status: hc.expect_status,
        expect_body: hc.expect_body.clone().map(String::into_bytes),
        successes: hc.successes,
        failures: hc.failures,
        region: name.to_string(),
    })
}

/// `(host, port)` of `host:port` or `[v6]:port`.
fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (h, p) = addr.rsplit_once(':')?;
    Some((h.trim_matches(['[', ']']), p.parse().ok()?))
}

/// One configured backend, as discovery sees it.
struct Entry {
    /// `addr` as configured (`host:port`).
    configured: String,
    /// The address itself when `addr` is an IP address: never resolved.
    literal: Option<SocketAddr>,
    host: String,
    port: u16,
    weight: usize,
    dial: Dial,
}

/// A region's backends from its config, host names resolved again at every `discover` (which
/// Pingora runs every `resolve_interval`). A name that fails to resolve keeps the addresses it
/// had; at start, when there are none yet, it is an error.
struct Discovery {
    region: String,
    entries: Vec<Entry>,
    nameservers: Vec<SocketAddr>,
    /// Addresses each entry resolved to last time.
    last: Mutex<Vec<Vec<SocketAddr>>>,
    /// Backends seen so far (by label), to start each one's health gauge once.
    known: Mutex<std::collections::HashSet<String>>,
}

/// Longest wait for one backend name's addresses.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

impl Discovery {
    fn new(name: &str, r: &config::Region) -> anyhow::Result<Discovery> {
        let mut entries = Vec::new();
        for (i, b) in r.backends.iter().enumerate() {
            let at = format!("regions.{name}.backends[{i}].addr");
            let (host, port) = split_host_port(&b.addr)
                .ok_or_else(|| anyhow::anyhow!("{at}: expected host:port, got {:?}", b.addr))?;
            let sni = if b.tls {
                b.sni.clone().unwrap_or_else(|| host.to_string())
            } else {
                String::new()
            };
            entries.push(Entry {
                configured: b.addr.clone(),
                literal: b.addr.parse().ok(),
                host: host.to_string(),
                port,
                weight: b.weight,
                dial: Dial {
                    tls: b.tls,
                    sni,
                    label: b.addr.clone(),
                },
            });
        }
        Ok(Discovery {
            region: name.to_string(),
            last: Mutex::new(vec![Vec::new(); entries.len()]),
            known: Mutex::new(std::collections::HashSet::new()),
            entries,
            nameservers: r.nameservers.clone(),
        })
    }

    async fn resolve(&self, e: &Entry) -> anyhow::Result<Vec<SocketAddr>> {
        let resolver = crate::verify::resolver(&self.nameservers)?;
        let ips = tokio::time::timeout(RESOLVE_TIMEOUT, resolver.lookup_ip(e.host.as_str()))
            .await
            .map_err(|_| anyhow::anyhow!("timed out after {RESOLVE_TIMEOUT:?}"))??;
        let mut addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(ip, e.port)).collect();
        addrs.sort_unstable();
        addrs.dedup();
        if addrs.is_empty() {
            anyhow::bail!("no address");
        }
        Ok(addrs)
    }
}

#[async_trait]
impl ServiceDiscovery for Discovery {
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut set = BTreeSet::new();
        for (i, e) in self.entries.iter().enumerate() {
            let addrs = match e.literal {
                Some(a) => vec![a],
                None => match self.resolve(e).await {
                    Ok(addrs) => {
                        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
                        if !last[i].is_empty() && last[i] != addrs {
                            tracing::info!(region = %self.region, backend = %e.configured, addrs = ?addrs, "backend name resolves to new addresses");
                        }
                        last[i] = addrs.clone();
                        addrs
                    }
                    Err(err) => {
                        let last = self.last.lock().unwrap_or_else(|p| p.into_inner())[i].clone();
                        if last.is_empty() {
                            return Error::e_explain(
                                ErrorType::ConnectNoRoute,
                                format!(
                                    "regions.{}: cannot resolve {}: {err}",
                                    self.region, e.configured
                                ),
                            );
                        }
                        tracing::warn!(region = %self.region, backend = %e.configured, error = %err, "cannot resolve backend name: keeping its previous addresses");
                        last
                    }
                },
            };
            for addr in addrs {
                let mut dial = e.dial.clone();
                if e.literal.is_none() {
                    dial.label = format!("{} ({})", e.configured, addr.ip());
                }
                let mut backend = Backend::new_with_weight(&addr.to_string(), e.weight)?;
                backend.ext.insert(dial);
                set.insert(backend);
            }
        }
        // New backends start in rotation (until a check says otherwise); gone ones lose their
        // gauge, so no stale series claims an address that is no longer used.
        let now: std::collections::HashSet<String> = set.iter().map(backend_label).collect();
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        for gone in known.difference(&now) {
            metrics::backend_gone(&self.region, gone);
        }
        for label in now.difference(&known) {
            metrics::backend_healthy(&self.region, label).set(1);
        }
        *known = now;
        Ok((set, HashMap::new()))
    }
}

/// The regions plus the background services that health-check them (add those to the server).
pub struct Built {
    /// The routing table.
    pub regions: Arc<Regions>,
    /// One health-check service per region.
    pub services: Vec<Box<dyn pingora::services::ServiceWithDependents>>,
}

/// A load balancer over `backends`, primed with a first update, whose health checks run every
/// `interval` in a background service pushed onto `services`.
fn balancer<S>(
    name: &str,
    backends: Backends,
    interval: Duration,
    resolve_interval: Duration,
    services: &mut Vec<Box<dyn pingora::services::ServiceWithDependents>>,
) -> anyhow::Result<Arc<LoadBalancer<S>>>
where
    S: pingora::lb::selection::BackendSelection + Send + Sync + 'static,
    S::Iter: pingora::lb::selection::BackendIter,
{
    let mut lb = LoadBalancer::<S>::from_backends(backends);
    lb.health_check_frequency = Some(interval);
    lb.update_frequency = Some(resolve_interval);
    lb.update().first_discovery()?;
    let svc = background_service(&format!("health checks {name}"), lb);
    let lb = svc.task();
    services.push(Box::new(svc));
    Ok(lb)
}

/// Builds every region from the config; resolves backend names once now (an error if one
/// cannot be), then again every `resolve_interval` in the health-check service.
pub fn build(file: &config::File) -> anyhow::Result<Built> {
    let mut regions = HashMap::new();
    let mut services: Vec<Box<dyn pingora::services::ServiceWithDependents>> = Vec::new();
    for (name, r) in &file.regions {
        let ca = r.ca_file.as_deref().map(|p| load_ca(p, name)).transpose()?;
        let check = health_check(name, r, &ca)?;
        let mut backends = Backends::new(Box::new(Discovery::new(name, r)?));
        backends.set_health_check(Box::new(check));
        let (interval, every) = (r.health_check.interval, r.resolve_interval);
        let selector = match r.selection {
            Selection::RoundRobin => {
                Selector::RoundRobin(balancer(name, backends, interval, every, &mut services)?)
            }
            Selection::Ketama => {
                Selector::Ketama(balancer(name, backends, interval, every, &mut services)?)
            }
        };
        regions.insert(
            name.clone(),
            Arc::new(Region {
                name: name.clone(),
                selector,
                fallback: r.fallback.clone(),
                retries: r.retries,
                timeouts: r.timeouts.clone(),
                ca,
            }),
        );
    }
    let get = |n: &String| regions.get(n).cloned();
    let default_region = file.routing.default_region.as_ref().and_then(get);
    let domains = file
        .routing
        .domains
        .iter()
        .filter_map(|(h, n)| Some((h.clone(), get(n)?)))
        .collect();
    Ok(Built {
        regions: Arc::new(Regions {
            regions,
            default_region,
            domains,
        }),
        services,
    })
}

trait FirstDiscovery {
    fn first_discovery(self) -> anyhow::Result<()>;
}

impl<F: std::future::Future<Output = Result<()>>> FirstDiscovery for F {
    /// Runs the first discovery (resolving backend names) before the server starts, so a name
    /// that does not resolve stops the start with its error.
    fn first_discovery(self) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(15), self)
                .await
                .map_err(|_| anyhow::anyhow!("backend discovery timed out"))?
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
    }
}
