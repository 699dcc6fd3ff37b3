//! The certificate for each handshake by SNI, for the certificate store's listener: names the
//! registry mirror does not know (or knows without a certificate) are decided from memory;
//! the others from the cache, else Redis (then cached), else issued on demand, else the
//! fallback.
//!
//! How certificates are obtained is not this module's business: on-demand issuance comes in
//! through the [`OnDemand`] trait, which the ACME client implements.

use super::cache::Cache;
use super::store::{CertStore, Loaded};
use crate::metrics;
use crate::registry::{Mirror, State};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Issues a certificate during a name's first handshake (on-demand issuance).
#[async_trait]
pub trait OnDemand: Send + Sync {
    /// A new certificate for `host`, or `None` when it may not be, or could not be, issued now
    /// (the handshake then continues with the fallback, if any).
    async fn issue(&self, host: &str) -> Option<Loaded>;
}

/// Chooses the certificate for each handshake by SNI; see the module documentation.
pub struct Selector {
    cache: Arc<Cache>,
    store: CertStore,
    fallback: Option<Arc<Loaded>>,
    on_demand: Option<Box<dyn OnDemand>>,
    registry: Option<Arc<Mirror>>,
}

impl Selector {
    /// A selector reading `store` on a cache miss, and serving `fallback` (when set) to names
    /// without a certificate.
    pub fn new(cache: Arc<Cache>, store: CertStore, fallback: Option<Arc<Loaded>>) -> Selector {
        Selector {
            cache,
            store,
            fallback,
            on_demand: None,
            registry: None,
        }
    }

    /// Decides from the registry mirror, without Redis, the handshakes of names it does not
    /// know and of registered names without a certificate (unless on-demand issuance may order
    /// one): both get the fallback, or no certificate. Until the mirror has loaded once, every
    /// name is looked up as without it.
    pub fn with_registry(mut self, mirror: Arc<Mirror>) -> Selector {
        self.registry = Some(mirror);
        self
    }

    /// Orders a certificate during the first handshake of a name that has none yet (the
    /// handshake waits for it, up to the issuer's own bound).
    pub fn with_on_demand(mut self, issuer: Box<dyn OnDemand>) -> Selector {
        self.on_demand = Some(issuer);
        self
    }

    /// The certificate for `host`: from memory, else from Redis (then cached), else `None`
    /// (remembered for the negative TTL).
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
        let (found, source) = match (self.store.load(host).await, &self.on_demand) {
            (Ok(Some(l)), _) => (Some(l), "redis"),
            (Ok(None), Some(issuer)) => (issuer.issue(host).await, "issued"),
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

    /// The certificate to present for the ClientHello's SNI (`None` when it sent none): the
    /// name's own, else the fallback, else none (the handshake fails).
    pub async fn choose(&self, sni: Option<&str>) -> Option<Arc<Loaded>> {
        let found = match sni {
            Some(name) if self.stored(name) => self.lookup(name).await,
            _ => None,
        };
        found.or_else(|| {
            if self.fallback.is_some() {
                metrics::cert_lookup("fallback").inc();
            }
            self.fallback.clone()
        })
    }
}
