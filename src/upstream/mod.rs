//! Regional track backends: one health-checked load balancer per region, region choice per Host,
//! and failover to a fallback region only where the operator allowed it (data residency).
//!
//! - [`discovery`]: backend addresses, names resolved again periodically;
//! - [`health`]: the active health checks;
//! - here: the routing table ([`Regions::region_for`]) and the backend choice
//!   ([`Regions::choose`], whose rule is the pure [`rule`]).

pub mod discovery;
pub mod health;

use crate::config::{self, Routing, Selection};
use crate::metrics;
use crate::registry::Mirror;
use discovery::Discovery;
use health::{health_check, load_ca};
use pingora::lb::selection::{Consistent, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::prelude::*;
use pingora::protocols::tls::CaType;
use pingora::services::background::background_service;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// How to reach one backend, stored in its `Backend::ext`.
#[derive(Clone)]
pub(crate) struct Dial {
    pub(crate) tls: bool,
    pub(crate) sni: String,
    pub(crate) label: String,
}

enum Balancer {
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
    Ketama(Arc<LoadBalancer<Consistent>>),
}

/// A region at run time.
pub struct Region {
    /// Its name from the config (`us`, `eu`, ...), shared with the events of its hosts.
    pub name: Arc<str>,
    balancer: Balancer,
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
        match &self.balancer {
            Balancer::RoundRobin(lb) => lb.select_with(key, MAX_SEARCH, accept),
            Balancer::Ketama(lb) => lb.select_with(key, MAX_SEARCH, accept),
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

/// Looked up on every click and proxied request; keys come from the config.
type FastMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Every region, and the Host → region routing.
pub struct Regions {
    regions: FastMap<Arc<Region>>,
    default_region: Option<Arc<Region>>,
    domains: FastMap<Arc<Region>>,
    registry: Option<Arc<Mirror>>,
}

/// Where a host belongs.
enum Home {
    /// A region configured here.
    Region(Arc<Region>),
    /// A region this node does not have.
    Elsewhere,
    /// Neither overridden nor registered.
    Unknown,
}

/// What [`Regions::choose`] decided for a request.
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
    ///
    /// In order: `routing.domains` (the operator's override), then the registry (a registered
    /// domain goes to its own region, or nowhere when that region is not configured on this
    /// node: never to another), then `routing.default_region` for hosts the registry does not
    /// know.
    pub fn region_for(&self, host: &str) -> Option<Arc<Region>> {
        match self.home(host) {
            Home::Region(r) => Some(r),
            Home::Elsewhere => None,
            Home::Unknown => self.default_region.clone(),
        }
    }

    /// The region `host` belongs to, by `routing.domains` or the registry (not
    /// `default_region`, which only serves hosts without one): where its click data goes.
    pub fn home_region(&self, host: &str) -> Option<Arc<Region>> {
        match self.home(host) {
            Home::Region(r) => Some(r),
            Home::Elsewhere | Home::Unknown => None,
        }
    }

    fn home(&self, host: &str) -> Home {
        if let Some(r) = self.domains.get(host) {
            return Home::Region(r.clone());
        }
        match self
            .registry
            .as_ref()
            .and_then(|m| m.registered_region(host))
        {
            Some(Some(name)) => match self.regions.get(name) {
                Some(r) => Home::Region(r.clone()),
                None => Home::Elsewhere,
            },
            Some(None) => Home::Elsewhere,
            None => Home::Unknown,
        }
    }

    /// Picks a backend for a request to `region`, by [`rule`]: a healthy untried one of
    /// `region`, else of its fallback region if the operator allowed one, else (fail open) an
    /// untried one of `region` whatever its health (health checks can be wrong; a backend that
    /// is really down just refuses the connection, and the request ends 502 as it would have).
    pub fn choose(
        &self,
        region: &Arc<Region>,
        key: &[u8],
        tried: &[std::net::SocketAddr],
    ) -> Option<Choice> {
        let fallback = region.fallback.as_deref().and_then(|f| self.regions.get(f));
        let (r, backend, step) = rule(region, fallback, |r, any_health| {
            r.select(key, tried, any_health)
        })?;
        if step == Step::FailOpen {
            metrics::upstream_event(&region.name, "fail_open");
        }
        Some(Choice {
            peer: r.peer(&backend),
            region: r.clone(),
            backend,
            failover: step == Step::Failover,
        })
    }
}

/// How [`rule`] found its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A healthy backend of the region itself.
    Healthy,
    /// A healthy backend of the fallback region.
    Failover,
    /// No healthy backend anywhere allowed: an untried one of the region, whatever its health.
    FailOpen,
}

/// The backend choice, as a pure rule over `select(region, any_health)` (which returns an
/// untried backend of that region, only a healthy one unless `any_health`). A region without a
/// fallback never yields another region's backend: that is how residency holds.
pub fn rule<'r, R, B>(
    region: &'r R,
    fallback: Option<&'r R>,
    select: impl Fn(&R, bool) -> Option<B>,
) -> Option<(&'r R, B, Step)> {
    if let Some(b) = select(region, false) {
        return Some((region, b, Step::Healthy));
    }
    if let Some(fb) = fallback
        && let Some(b) = select(fb, false)
    {
        return Some((fb, b, Step::Failover));
    }
    select(region, true).map(|b| (region, b, Step::FailOpen))
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
pub fn build(
    config: &BTreeMap<String, config::RegionConfig>,
    routing: &Routing,
    registry: Option<Arc<Mirror>>,
) -> anyhow::Result<Built> {
    let mut regions = FastMap::default();
    let mut services: Vec<Box<dyn pingora::services::ServiceWithDependents>> = Vec::new();
    for (name, r) in config {
        let ca = r.ca_file.as_deref().map(|p| load_ca(p, name)).transpose()?;
        let check = health_check(name, r, &ca)?;
        let mut backends = Backends::new(Box::new(Discovery::new(name, r)?));
        backends.set_health_check(Box::new(check));
        let (interval, every) = (r.health_check.interval, r.resolve_interval);
        let balancer = match r.selection {
            Selection::RoundRobin => {
                Balancer::RoundRobin(balancer(name, backends, interval, every, &mut services)?)
            }
            Selection::Ketama => {
                Balancer::Ketama(balancer(name, backends, interval, every, &mut services)?)
            }
        };
        regions.insert(
            name.clone(),
            Arc::new(Region {
                name: name.as_str().into(),
                balancer,
                fallback: r.fallback.clone(),
                retries: r.retries,
                timeouts: r.timeouts.clone(),
                ca,
            }),
        );
    }
    let get = |n: &String| regions.get(n).cloned();
    let default_region = routing.default_region.as_ref().and_then(get);
    let domains = routing
        .domains
        .iter()
        .filter_map(|(h, n)| Some((h.clone(), get(n)?)))
        .collect();
    Ok(Built {
        regions: Arc::new(Regions {
            regions,
            default_region,
            domains,
            registry,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A region as the rule sees it: its backends, and which of them are healthy.
    struct Fake {
        name: &'static str,
        healthy: Vec<&'static str>,
        all: Vec<&'static str>,
    }

    fn region(name: &'static str, healthy: &[&'static str], down: &[&'static str]) -> Fake {
        Fake {
            name,
            healthy: healthy.to_vec(),
            all: healthy.iter().chain(down).copied().collect(),
        }
    }

    /// `rule` over fakes, with `tried` already used: (region name, backend, step).
    fn pick(
        r: &Fake,
        fallback: Option<&Fake>,
        tried: &[&str],
    ) -> Option<(&'static str, &'static str, Step)> {
        rule(r, fallback, |r, any| {
            let pool = if any { &r.all } else { &r.healthy };
            pool.iter().copied().find(|b| !tried.contains(b))
        })
        .map(|(r, b, s)| (r.name, b, s))
    }

    #[test]
    fn healthy_backend_of_the_region_first() {
        let eu = region("eu", &["eu1", "eu2"], &[]);
        let us = region("us", &["us1"], &[]);
        assert_eq!(
            pick(&eu, Some(&us), &[]),
            Some(("eu", "eu1", Step::Healthy))
        );
        // A retry after a failed connection takes another backend of the same region.
        assert_eq!(
            pick(&eu, Some(&us), &["eu1"]),
            Some(("eu", "eu2", Step::Healthy))
        );
    }

    #[test]
    fn failover_only_where_the_operator_allowed_it() {
        let eu = region("eu", &[], &["eu1"]);
        let us = region("us", &["us1"], &[]);
        assert_eq!(
            pick(&eu, Some(&us), &[]),
            Some(("us", "us1", Step::Failover))
        );
        // Tried everything healthy in both: fail open within the region.
        assert_eq!(
            pick(&eu, Some(&us), &["us1"]),
            Some(("eu", "eu1", Step::FailOpen))
        );
    }

    #[test]
    fn residency_without_a_fallback_never_leaves_the_region() {
        let eu = region("eu", &[], &["eu1", "eu2"]);
        // Every EU backend down and no fallback: fail open inside the EU, never elsewhere.
        assert_eq!(pick(&eu, None, &[]), Some(("eu", "eu1", Step::FailOpen)));
        assert_eq!(
            pick(&eu, None, &["eu1"]),
            Some(("eu", "eu2", Step::FailOpen))
        );
        // Everything tried: nothing (the request ends 502).
        assert_eq!(pick(&eu, None, &["eu1", "eu2"]), None);
    }

    #[test]
    fn a_region_with_nothing_left_fails_over_before_failing_open() {
        let us = region("us", &["us1"], &["us2"]);
        let eu = region("eu", &["eu1"], &[]);
        assert_eq!(
            pick(&us, Some(&eu), &["us1"]),
            Some(("eu", "eu1", Step::Failover))
        );
        assert_eq!(
            pick(&us, Some(&eu), &["us1", "eu1"]),
            Some(("us", "us2", Step::FailOpen))
        );
    }

    fn regions(yaml: &str) -> Arc<Regions> {
        #[derive(serde::Deserialize)]
        struct C {
            regions: BTreeMap<String, config::RegionConfig>,
            #[serde(default)]
            routing: Routing,
        }
        let c: C = serde_yaml::from_str(yaml).unwrap();
        build(&c.regions, &c.routing, None).unwrap().regions
    }

    #[test]
    fn hosts_route_by_override_then_default_region() {
        let two = "regions:\n  us: { backends: [{ addr: '127.0.0.1:9' }] }\n  eu: { backends: [{ addr: '127.0.0.2:9' }] }\n";
        let r = regions(&format!(
            "{two}routing:\n  default_region: us\n  domains: {{ link.eu.example: eu }}\n"
        ));
        assert_eq!(r.region_for("link.eu.example").unwrap().name.as_ref(), "eu");
        assert_eq!(
            r.region_for("link.other.example").unwrap().name.as_ref(),
            "us"
        );
        // Without a default region, a Host nobody routes is not served here (421).
        let r = regions(&format!(
            "{two}routing:\n  domains: {{ link.eu.example: eu }}\n"
        ));
        assert!(r.region_for("link.other.example").is_none());
        assert_eq!(r.region_for("link.eu.example").unwrap().name.as_ref(), "eu");
    }

    #[test]
    fn the_registry_routes_between_the_override_and_the_default() {
        use crate::registry::{Domain, State};
        let yaml = "regions:\n  us: { backends: [{ addr: '127.0.0.1:9' }] }\n  eu: { backends: [{ addr: '127.0.0.2:9' }] }\nrouting:\n  default_region: us\n  domains: { link.pinned.example: us }\n";
        #[derive(serde::Deserialize)]
        struct C {
            regions: BTreeMap<String, config::RegionConfig>,
            routing: Routing,
        }
        let c: C = serde_yaml::from_str(yaml).unwrap();
        let m = Arc::new(Mirror::new(vec!["eu".into(), "us".into()]));
        let d = |host: &str, region: &str| Domain {
            host: host.into(),
            workspace: 1,
            region: region.into(),
            state: State::Issued,
            error: String::new(),
            created_ms: 0,
            updated_ms: 0,
            verified_ms: None,
            fronted: false,
            moved_to: None,
        };
        for (host, region) in [
            ("link.eu.example", "eu"),
            ("link.pinned.example", "eu"),
            ("link.ap.example", "ap"),
        ] {
            m.apply(host, Some((&d(host, region), false)));
        }
        let r = build(&c.regions, &c.routing, Some(m.clone()))
            .unwrap()
            .regions;
        // Registered in eu: eu, not the default.
        assert_eq!(r.region_for("link.eu.example").unwrap().name.as_ref(), "eu");
        // The operator's override wins over the registry.
        assert_eq!(
            r.region_for("link.pinned.example").unwrap().name.as_ref(),
            "us"
        );
        // Registered in a region this node lacks: not served here, never the default region.
        assert!(r.region_for("link.ap.example").is_none());
        // Unknown to the registry: the default region serves it, but it belongs to no region
        // (its events go to the default sink).
        assert_eq!(
            r.region_for("link.other.example").unwrap().name.as_ref(),
            "us"
        );
        assert!(r.home_region("link.other.example").is_none());
        assert_eq!(
            r.home_region("link.eu.example").unwrap().name.as_ref(),
            "eu"
        );
        assert!(r.home_region("link.ap.example").is_none());
        // Moved to us: followed at once.
        m.apply(
            "link.eu.example",
            Some((&d("link.eu.example", "us"), false)),
        );
        assert_eq!(r.region_for("link.eu.example").unwrap().name.as_ref(), "us");
    }
}
