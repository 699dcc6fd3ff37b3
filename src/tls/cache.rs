//! The in-memory certificate cache in front of the store: bounded, least recently used first out,
//! with negative entries (names without a certificate) kept apart from certificates.

use super::store::Loaded;
use crate::metrics;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Two least-recently-used maps: certificates, and names that have none (until a deadline).
/// Kept apart so a flood of unknown SNI values (scanners) cannot push certificates out.
struct Bounded<V> {
    found: lru::LruCache<String, V>,
    missing: lru::LruCache<String, Instant>,
}

impl<V: Clone> Bounded<V> {
    fn new(cap: usize) -> Bounded<V> {
        let cap = std::num::NonZeroUsize::new(cap.max(1)).expect("at least 1");
        Bounded {
            found: lru::LruCache::new(cap),
            missing: lru::LruCache::new(cap),
        }
    }

    /// A hit marks the entry most recently used; an expired negative entry is dropped.
    fn get(&mut self, host: &str, now: Instant) -> Option<Result<V, ()>> {
        if let Some(v) = self.found.get(host) {
            return Some(Ok(v.clone()));
        }
        match self.missing.get(host) {
            Some(until) if *until > now => Some(Err(())),
            Some(_) => {
                self.missing.pop(host);
                None
            }
            None => None,
        }
    }

    /// Inserts, evicting the least recently used entry of the same kind when full.
    fn found(&mut self, host: &str, v: V) {
        self.missing.pop(host);
        self.found.put(host.to_string(), v);
    }

    fn missing(&mut self, host: &str, until: Instant) {
        self.found.pop(host);
        self.missing.put(host.to_string(), until);
    }

    fn remove(&mut self, host: &str) {
        self.found.pop(host);
        self.missing.pop(host);
    }
}

/// The in-memory cache in front of the store: at most `cap` certificates and `cap` negative
/// entries (names without one), each evicting its least recently used entry when full, in O(1).
pub struct Cache {
    map: Mutex<Bounded<Arc<Loaded>>>,
    negative_ttl: Duration,
}

impl Cache {
    /// A cache of at most `cap` certificates (and `cap` names known to have none).
    pub fn new(cap: usize, negative_ttl: Duration) -> Cache {
        Cache {
            map: Mutex::new(Bounded::new(cap)),
            negative_ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bounded<Arc<Loaded>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Caches `host`'s certificate.
    pub(super) fn found(&self, host: &str, cert: Arc<Loaded>) {
        let mut m = self.lock();
        m.found(host, cert);
        metrics::CERT_CACHE_ENTRIES.set(m.found.len() as i64);
    }

    /// Remembers for `ttl` that `host` has no certificate.
    pub(super) fn missing(&self, host: &str, ttl: Duration) {
        let mut m = self.lock();
        m.missing(host, Instant::now() + ttl);
        metrics::CERT_CACHE_ENTRIES.set(m.found.len() as i64);
    }

    /// The certificate (`Ok`) or a remembered absence (`Err`) for `host`; `None` when unknown.
    pub(super) fn get(&self, host: &str) -> Option<Result<Arc<Loaded>, ()>> {
        self.lock().get(host, Instant::now())
    }

    /// How long an absence is remembered.
    pub(super) fn negative_ttl(&self) -> Duration {
        self.negative_ttl
    }

    /// Forgets `host` (its certificate changed).
    pub fn invalidate(&self, host: &str) {
        let mut m = self.lock();
        m.remove(host);
        metrics::CERT_CACHE_ENTRIES.set(m.found.len() as i64);
    }

    /// Forgets everything (invalidations may have been missed).
    pub fn clear(&self) {
        let mut m = self.lock();
        m.found.clear();
        m.missing.clear();
        metrics::CERT_CACHE_ENTRIES.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_bounded_and_evicts_the_least_recently_used() {
        let now = Instant::now();
        let mut b = Bounded::<u32>::new(3);
        for i in 0..3 {
            b.found(&format!("h{i}"), i);
        }
        // h0 is used, so h1 is the least recently used when h3 arrives.
        assert_eq!(b.get("h0", now), Some(Ok(0)));
        b.found("h3", 3);
        assert_eq!(b.found.len(), 3);
        assert_eq!(b.get("h1", now), None);
        assert_eq!(b.get("h0", now), Some(Ok(0)));
        assert_eq!(b.get("h3", now), Some(Ok(3)));
    }

    #[test]
    fn unknown_names_never_push_certificates_out() {
        let now = Instant::now();
        let mut b = Bounded::<u32>::new(3);
        for i in 0..3 {
            b.found(&format!("h{i}"), i);
        }
        for i in 0..1000 {
            b.missing(&format!("scan{i}.example"), now + Duration::from_secs(60));
        }
        assert_eq!(b.missing.len(), 3);
        for i in 0..3 {
            assert_eq!(b.get(&format!("h{i}"), now), Some(Ok(i)));
        }
        assert_eq!(b.get("scan999.example", now), Some(Err(())));
        // Expired: gone, so the next handshake asks the store again.
        assert_eq!(
            b.get("scan999.example", now + Duration::from_secs(61)),
            None
        );
        // A name that gets a certificate stops being a miss, and the other way round.
        b.found("scan998.example", 9);
        assert_eq!(b.get("scan998.example", now), Some(Ok(9)));
        b.missing("h0", now + Duration::from_secs(60));
        assert_eq!(b.get("h0", now), Some(Err(())));
    }
}
