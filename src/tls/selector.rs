//! The certificate for each handshake by SNI, for the certificate store's listener:
//!
//! | SNI | certificate |
//! |---|---|
//! | none, or a name `tls.cert` names exactly | `tls.cert`, from memory |
//! | a name under a `*.` name of `tls.cert` that the registry does not know | `tls.cert`, from memory |
//! | a registered name fronted by the customer's own proxy | `tls.cert`, from memory |
//! | a registered name (under a `*.` name of `tls.cert` too) | its own (below), else `tls.cert` if it covers the name, else the fallback |
//! | any other name | the fallback, if any, from memory |
//!
//! A registered name's own certificate comes from the cache, else Redis (then cached), else is
//! issued on demand; a registered name without one (that on-demand issuance may not order) is
//! decided from memory. The edge's own names come first so that a customer's proxy in front
//! (which connects by the edge's name, or without SNI) always gets through, whatever
//! `certs.fallback` says; the registry comes before `*.` names so that a customer domain under
//! one keeps its own certificate.
//!
//! A fronted domain ([`crate::registry::Domain::fronted`]) is one whose customer terminates TLS
//! in front of the edge with their own certificate; when their proxy forwards the domain as SNI
//! (CloudFront with "Headers: All", Cloudflare "Full"), it gets `tls.cert` whatever
//! `certs.fallback` says, since linkedge never orders a certificate for it. Such a proxy does not
//! need `tls.cert` to cover the customer's name (CloudFront accepts the origin's name, the
//! edge's; Cloudflare "Full" verifies nothing; "Full (strict)" needs the edge's own name as
//! SNI). Unlike the edge's own names, its requests are still judged as any customer name's:
//! their Host must be the SNI name. Until the mirror has loaded once, a fronted domain is
//! looked up as any registered name.
//!
//! How certificates are obtained is not this module's business: on-demand issuance comes in
//! through the [`OnDemand`] trait, which the ACME client implements. An order runs in a task of
//! its own, one per name at a time, so it outlives the handshake that started it; handshakes
//! wait for it only briefly (`acme.on_demand_wait`), and its certificate goes into the cache for
//! the next one.

use super::cache::Cache;
use super::own::{Cover, Own};
use super::store::{CertStore, Loaded};
use crate::metrics;
use crate::registry::{Mirror, State};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Issues a certificate during a name's first handshake (on-demand issuance).
#[async_trait]
pub trait OnDemand: Send + Sync {
    /// A new certificate for `host`, or `None` when it may not be, or could not be, issued now.
    /// Runs in a background task, not in the handshake, so it may take as long as the order
    /// does; handshakes meanwhile get the fallback, if any, after `acme.on_demand_wait`.
    async fn issue(&self, host: &str) -> Option<Loaded>;
}

/// An on-demand order running in the background: `None` until it ends, then its certificate
/// (`None` inside when it produced none).
type Pending = watch::Receiver<Option<Option<Arc<Loaded>>>>;

/// The orders running on this node, by name: at most one per name.
type InFlight = Arc<Mutex<HashMap<String, Pending>>>;

/// On-demand issuance: the issuer, how long a handshake waits for an order, and the orders
/// running.
struct Issuing {
    issuer: Arc<dyn OnDemand>,
    wait: Duration,
    in_flight: InFlight,
}

impl Issuing {
    /// The orders running (a panic while it was held does not leave it locked for good).
    fn orders(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes a name's entry from the orders running when its task ends, even by a panic, so a
/// failed task never leaves the name waiting for an order that no longer runs.
struct Running {
    in_flight: InFlight,
    host: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut m = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&self.host);
    }
}

/// Chooses the certificate for each handshake by SNI; see the module documentation.
pub struct Selector {
    cache: Arc<Cache>,
    store: CertStore,
    /// `tls.cert`, for the edge's own names.
    own: Own,
    /// `certs.fallback`: `own` also goes to every other name without a certificate.
    fallback: bool,
    on_demand: Option<Issuing>,
    registry: Option<Arc<Mirror>>,
}

impl Selector {
    /// A selector reading `store` on a cache miss, serving `own` (`tls.cert`) to the edge's own
    /// names and, when `fallback`, to every other name without a certificate.
    pub fn new(cache: Arc<Cache>, store: CertStore, own: Own, fallback: bool) -> Selector {
        Selector {
            cache,
            store,
            own,
            fallback,
            on_demand: None,
            registry: None,
        }
    }

    /// Decides from the registry mirror, without Redis, the handshakes of names it does not
    /// know and of registered names without a certificate (unless on-demand issuance may order
    /// one): both get the fallback, or no certificate; and those of fronted domains, which get
    /// `tls.cert`. Until the mirror has loaded once, every name is looked up as without it.
    pub fn with_registry(mut self, mirror: Arc<Mirror>) -> Selector {
        self.registry = Some(mirror);
        self
    }

    /// Orders a certificate during the first handshake of a name that has none yet, in a
    /// background task (one per name at a time) that runs to the issuer's own bound and puts
    /// the result in the cache. Handshakes wait for it at most `wait` (`acme.on_demand_wait`),
    /// then go on with the fallback, if any.
    pub fn with_on_demand(mut self, issuer: Arc<dyn OnDemand>, wait: Duration) -> Selector {
        self.on_demand = Some(Issuing {
            issuer,
            wait,
            in_flight: Arc::default(),
        });
        self
    }

    /// The certificate for `host`: from memory, else from Redis (then cached), else from an
    /// on-demand order (waited for briefly), else `None` (remembered for the negative TTL).
    pub async fn lookup(&self, host: &str) -> Option<Arc<Loaded>> {
        match self.cache.get(host) {
            Some(Ok(c)) => {
                metrics::cert_lookup("memory").inc();
                return Some(c);
            }
            Some(Err(())) => {
                metrics::cert_lookup("negative").inc();
                return None;
            }
            None => {}
        }
        // An order for the name is running here: Redis has nothing yet, wait for the order.
        if let Some(o) = &self.on_demand {
            // Its own statement, so the map's lock is released before the wait.
            let pending = o.orders().get(host).cloned();
            if let Some(pending) = pending {
                return Self::wait(o, pending).await;
            }
        }
        let (found, source) = match (self.store.load(host).await, &self.on_demand) {
            (Ok(Some(l)), _) => (Some(l), "redis"),
            (Ok(None), Some(o)) => return Self::wait(o, self.order(host, o)).await,
            (Ok(None), None) => (None, "miss"),
            (Err(e), _) => {
                metrics::cert_lookup("error").inc();
                tracing::warn!(host = %host, error = %e, "certificate lookup failed");
                // Remember briefly, so an outage does not turn every handshake into a wait.
                self.cache.missing(host, Duration::from_secs(1));
                return None;
            }
        };
        match found {
            Some(l) => {
                metrics::cert_lookup(source).inc();
                let l = Arc::new(l);
                self.cache.found(host, l.clone());
                Some(l)
            }
            None => {
                metrics::cert_lookup("miss").inc();
                self.cache.missing(host, self.cache.negative_ttl());
                None
            }
        }
    }

    /// The order for `host` running on this node, started here unless one is. The order runs
    /// in a task of its own, which no handshake's deadline drops (so the issuer always
    /// releases the name's fleet-wide lock), and puts its result in the cache before it ends.
    fn order(&self, host: &str, o: &Issuing) -> Pending {
        let (tx, pending) = {
            let mut m = o.orders();
            if let Some(pending) = m.get(host) {
                return pending.clone();
            }
            let (tx, rx) = watch::channel(None);
            m.insert(host.to_string(), rx.clone());
            (tx, rx)
        };
        let issuer = o.issuer.clone();
        let cache = self.cache.clone();
        let running = Running {
            in_flight: o.in_flight.clone(),
            host: host.to_string(),
        };
        tokio::spawn(async move {
            let host = &running.host;
            let found = issuer.issue(host).await.map(Arc::new);
            // Cached before the entry goes, so no handshake finds neither.
            match &found {
                Some(l) => cache.found(host, l.clone()),
                None => cache.missing(host, cache.negative_ttl()),
            }
            tx.send_replace(Some(found));
            drop(running);
        });
        pending
    }

    /// The certificate `pending` produces, if it does within `o.wait`; else `None` at once
    /// (the order goes on, and a later handshake finds its certificate in the cache).
    async fn wait(o: &Issuing, mut pending: Pending) -> Option<Arc<Loaded>> {
        let done = match tokio::time::timeout(o.wait, pending.wait_for(|r| r.is_some())).await {
            Ok(Ok(r)) => (*r).clone().flatten(),
            // The task ended without a result (it panicked): as if it found nothing.
            Ok(Err(_)) => None,
            Err(_) => {
                metrics::cert_lookup("pending").inc();
                return None;
            }
        };
        metrics::cert_lookup(if done.is_some() { "issued" } else { "miss" }).inc();
        done
    }

    /// Whether `name` may have a certificate in the store, as far as memory can tell: false for
    /// a name the registry does not know, and for a registered name without a certificate
    /// that on-demand issuance may not order (it orders only for verified domains).
    fn stored(&self, name: &str) -> bool {
        let Some(m) = self.registry.as_ref().filter(|m| m.ready()) else {
            return true;
        };
        match m.get(name) {
            None => {
                metrics::cert_lookup("unregistered").inc();
                false
            }
            Some(e) if !(e.has_cert || self.on_demand.is_some() && e.state == State::Verified) => {
                metrics::cert_lookup("no_cert").inc();
                false
            }
            Some(_) => true,
        }
    }

    /// Whether `name` is a registered domain fronted by the customer's own proxy, as the
    /// registry mirror says (false until it has loaded once). Memory only.
    fn fronted(&self, name: &str) -> bool {
        let Some(m) = self.registry.as_ref().filter(|m| m.ready()) else {
            return false;
        };
        m.get(name).is_some_and(|e| e.fronted)
    }

    /// Whether `sni` (`None`: the client sent none) is one of the edge's own names: none, a
    /// name `tls.cert` names exactly, or one under its `*.` names that no customer has proven
    /// (verified, issued, or with a certificate stored). A name merely registered, which
    /// anyone may do, does not take the edge's name away from the proxies that connect by it;
    /// nor does a mirror that has not loaded yet. Memory only.
    pub fn own_name(&self, sni: Option<&str>) -> bool {
        let Some(name) = sni else {
            return true;
        };
        match self.own.covers(name) {
            Some(Cover::Exact) => true,
            Some(Cover::Wildcard) => !self.proven(name),
            None => false,
        }
    }

    /// Whether the registry mirror knows `name` as a customer's domain that passed
    /// verification (or has a certificate); false when the mirror has not loaded.
    fn proven(&self, name: &str) -> bool {
        let Some(m) = self.registry.as_ref().filter(|m| m.ready()) else {
            return false;
        };
        m.get(name).is_some_and(|e| {
            e.has_cert || e.fronted || matches!(e.state, State::Verified | State::Issued)
        })
    }

    /// `tls.cert` when `certs.fallback` is on (for a name without a certificate that is not
    /// one of the edge's own), else none (the handshake fails).
    pub fn fallback(&self) -> Option<Arc<Loaded>> {
        self.fallback.then(|| {
            metrics::cert_lookup("fallback").inc();
            self.own.cert()
        })
    }

    /// Whether the handshake for `sni` ends without a certificate, as far as memory can tell:
    /// not one of the edge's own names, not fronted, not covered by `tls.cert`, no certificate
    /// the store may hold, and no fallback. Asked on every ClientHello, resumed ones included,
    /// so that a session resumed under another name is refused as a full handshake would be.
    pub fn refuses(&self, sni: Option<&str>) -> bool {
        let Some(name) = sni else {
            return false;
        };
        !(self.fallback
            || self.own_name(sni)
            || self.fronted(name)
            || self.own.covers(name).is_some()
            || self.stored(name))
    }

    /// Whether names without a certificate get `tls.cert` (`certs.fallback`).
    pub fn falls_back(&self) -> bool {
        self.fallback
    }

    /// The certificate to present for the ClientHello's SNI (`None` when it sent none): see
    /// the module documentation.
    pub async fn choose(&self, sni: Option<&str>) -> Option<Arc<Loaded>> {
        let name = match sni {
            Some(name) if !self.own_name(sni) => name,
            _ => return Some(self.own_cert()),
        };
        if self.fronted(name) {
            metrics::cert_lookup("fronted").inc();
            return Some(self.own.cert());
        }
        let found = if self.stored(name) {
            self.lookup(name).await
        } else {
            None
        };
        found.or_else(|| {
            // A registered name under one of tls.cert's `*.` names, without a certificate of
            // its own: tls.cert is valid for it.
            if self.own.covers(name).is_some() {
                Some(self.own_cert())
            } else {
                self.fallback()
            }
        })
    }

    /// `tls.cert`, counted as served to one of the names it covers.
    fn own_cert(&self) -> Arc<Loaded> {
        metrics::cert_lookup("own").inc();
        self.own.cert()
    }
}
