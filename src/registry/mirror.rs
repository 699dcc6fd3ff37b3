//! The registry mirror: every registered domain in memory on every node (region, state, whether
//! a certificate is stored, whether it is fronted by the customer's own proxy), so routing and
//! the TLS handshake decide from memory, and a name the registry does not know costs no Redis
//! command.
//!
//! Kept current three ways: a full load when the node starts and whenever its change-feed
//! subscription is (re)established (messages sent meanwhile are lost), the change feed itself
//! (the registry announces each changed host on `<prefix>domains:changed`, the certificate store
//! on `<prefix>certs`; the mirror reads that one host again), and a full re-sync every
//! `registry.resync_interval`, so a message lost any other way heals. While Redis is away the
//! mirror keeps serving the last state it knew.
//!
//! It also notes when each retired domain last saw a click on this node (in memory; written to
//! Redis at most once per `registry.last_click_interval` by [`super::LastClicks`]).
//!
//! Memory: one entry per domain, its host as a boxed string and 16 bytes of facts (the region as
//! an index into the configured region names). Figures in the README (Domains).

use super::{Domain, State};
use crate::metrics;
use crate::store::Db;
use crate::store::follow::Followed;
use async_trait::async_trait;
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// Host → entry. Hashed with foldhash (keyed per process): looked up on every handshake and
/// proxied request; its keys come from the registry, not from clients.
type Map = HashMap<Box<str>, Entry, foldhash::fast::RandomState>;

/// Retired host → Unix milliseconds of its last click on this node not yet written to Redis
/// (0: none). Only retired domains are here, so a click on any other costs a check that the map
/// is empty, or one look-up in a map of the few retired domains.
type Clicks = HashMap<Box<str>, AtomicU64, foldhash::fast::RandomState>;

/// What the mirror knows of one registered domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Index of the domain's region in [`Mirror::regions`]; `u16::MAX` when the registry names
    /// a region this node does not have configured.
    region: u16,
    /// Where the domain stands.
    pub state: State,
    /// A certificate is stored for it.
    pub has_cert: bool,
    /// Fronted by the customer's own proxy or CDN ([`Domain::fronted`]): its handshakes get
    /// `tls.cert`, and no certificate is ordered for it.
    pub fronted: bool,
}

/// The in-memory registry; see the module documentation.
pub struct Mirror {
    regions: Vec<String>,
    map: RwLock<Map>,
    /// A full load has completed at least once.
    ready: AtomicBool,
    /// Unix seconds of the last completed full load.
    synced_at: AtomicI64,
    /// The retired domains' last clicks, not yet written.
    clicks: RwLock<Clicks>,
    /// Whether `clicks` has any domain: a click takes no lock while no domain is retired.
    any_retired: AtomicBool,
}

/// Hosts read per HSCAN page and per pipeline of certificate checks.
const PAGE: usize = 1000;

impl Mirror {
    /// An empty mirror for a node with `regions` configured.
    pub fn new(regions: Vec<String>) -> Mirror {
        Mirror {
            regions,
            map: RwLock::new(Map::default()),
            ready: AtomicBool::new(false),
            synced_at: AtomicI64::new(0),
            clicks: RwLock::new(Clicks::default()),
            any_retired: AtomicBool::new(false),
        }
    }

    /// Notes a click on `host` (normalised) now, if it is a retired domain; memory only.
    pub fn clicked(&self, host: &str) {
        if !self.any_retired.load(Ordering::Relaxed) {
            return;
        }
        let clicks = self.clicks.read().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = clicks.get(host) {
            at.store(crate::time::unix_ms(), Ordering::Relaxed);
        }
    }

    /// The retired domains clicked since the last call, with when they last were; forgets them.
    pub fn take_clicks(&self) -> Vec<(String, u64)> {
        let clicks = self.clicks.read().unwrap_or_else(|p| p.into_inner());
        clicks
            .iter()
            .filter_map(|(h, at)| match at.swap(0, Ordering::Relaxed) {
                0 => None,
                ms => Some((h.to_string(), ms)),
            })
            .collect()
    }

    /// Puts back a click [`Mirror::take_clicks`] returned that could not be written (a later
    /// click wins).
    pub fn restore_click(&self, host: &str, ms: u64) {
        let clicks = self.clicks.read().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = clicks.get(host) {
            at.fetch_max(ms, Ordering::Relaxed);
        }
    }

    /// Keeps the click map to exactly the retired domains of `map`, keeping what is noted for
    /// those that stay.
    fn track_retired(&self, map: &Map) {
        // Built beside the old one, so clicks are not held up while the registry is walked.
        let hosts: Vec<&Box<str>> = map
            .iter()
            .filter(|(_, e)| e.state == State::Retired)
            .map(|(h, _)| h)
            .collect();
        let mut clicks = self.clicks.write().unwrap_or_else(|p| p.into_inner());
        clicks.retain(|h, _| map.get(h).is_some_and(|e| e.state == State::Retired));
        for h in hosts {
            if !clicks.contains_key(&**h) {
                clicks.insert(h.clone(), AtomicU64::new(0));
            }
        }
        self.any_retired
            .store(!clicks.is_empty(), Ordering::Relaxed);
    }

    /// True once the whole registry has been loaded (before that, callers fall back to
    /// asking Redis, as without a mirror).
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// What is known of `host` (normalised), if it is registered.
    pub fn get(&self, host: &str) -> Option<Entry> {
        self.read().get(host).copied()
    }

    /// `None` when `host` is not registered; else its region, `None` inside when the registry
    /// names a region this node does not have.
    pub fn registered_region(&self, host: &str) -> Option<Option<&str>> {
        let e = self.get(host)?;
        Some(self.regions.get(e.region as usize).map(String::as_str))
    }

    /// How many domains are registered.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when no domain is registered (or nothing is loaded yet).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Map> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Map> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, d: &Domain, has_cert: bool) -> Entry {
        let region = self
            .regions
            .iter()
            .position(|r| *r == d.region)
            .map_or(u16::MAX, |i| i as u16);
        Entry {
            region,
            state: d.state,
            has_cert,
            fronted: d.fronted,
        }
    }

    /// Records `host` as `d` (or as gone), with whether it has a certificate: one change from
    /// the feed.
    pub fn apply(&self, host: &str, d: Option<(&Domain, bool)>) {
        let mut map = self.write();
        match d {
            Some((d, has_cert)) => {
                let e = self.entry(d, has_cert);
                match map.get_mut(host) {
                    Some(old) => *old = e,
                    None => {
                        map.insert(host.into(), e);
                    }
                }
            }
            None => {
                map.remove(host);
            }
        }
        metrics::REGISTRY_DOMAINS.set(map.len() as i64);
        let retired = map.get(host).is_some_and(|e| e.state == State::Retired);
        drop(map);
        let known = self
            .clicks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(host);
        if retired == known {
            return;
        }
        let mut clicks = self.clicks.write().unwrap_or_else(|p| p.into_inner());
        if retired {
            clicks
                .entry(host.into())
                .or_insert_with(|| AtomicU64::new(0));
        } else {
            clicks.remove(host);
        }
        self.any_retired
            .store(!clicks.is_empty(), Ordering::Relaxed);
    }

    fn replace(&self, all: Map) {
        self.track_retired(&all);
        let mut map = self.write();
        *map = all;
        metrics::REGISTRY_DOMAINS.set(map.len() as i64);
        drop(map);
        let now = crate::time::unix_s();
        self.synced_at.store(now, Ordering::Release);
        metrics::REGISTRY_SYNCED.set(now);
        metrics::REGISTRY_LOADS.inc();
        self.ready.store(true, Ordering::Release);
    }
}

/// Reads the registry from Redis into a [`Mirror`]; followed by [`crate::store::follow::Following`].
pub struct Follower {
    mirror: Arc<Mirror>,
    db: Db,
}

fn parse(host: &str, raw: &str) -> Option<Domain> {
    match serde_json::from_str(raw) {
        Ok(d) => Some(d),
        Err(_) => {
            tracing::warn!(host = %host, "registry: stored record is damaged; skipped");
            None
        }
    }
}

impl Follower {
    /// The registry in `db`, into `mirror`; run it with [`crate::store::follow::Following::new`] and
    /// `registry.resync_interval`.
    pub fn new(mirror: Arc<Mirror>, db: Db) -> Follower {
        Follower { mirror, db }
    }

    /// Which of `hosts` have a certificate stored (one pipelined EXISTS per host).
    async fn with_cert(&self, hosts: &[String]) -> redis::RedisResult<Vec<bool>> {
        // Redis refuses an empty pipeline (an empty registry, or an empty HSCAN page).
        if hosts.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for h in hosts {
            pipe.exists(self.db.keys().cert(h));
        }
        let mut conn = self.db.conn().await?;
        pipe.query_async(&mut conn).await
    }

    /// Loads the whole registry and replaces the mirror with it.
    pub async fn load(&self) -> redis::RedisResult<usize> {
        let started = Instant::now();
        let key = self.db.keys().domains();
        let mut all = Map::default();
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut self.db.conn().await?)
                .await?;
            let domains: Vec<Domain> = page.iter().filter_map(|(h, r)| parse(h, r)).collect();
            let hosts: Vec<String> = domains.iter().map(|d| d.host.clone()).collect();
            let certs = self.with_cert(&hosts).await?;
            for (d, has_cert) in domains.iter().zip(certs) {
                all.insert(d.host.as_str().into(), self.mirror.entry(d, has_cert));
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let n = all.len();
        self.mirror.replace(all);
        tracing::info!(
            domains = n,
            seconds = started.elapsed().as_secs_f64(),
            "registry mirror loaded"
        );
        Ok(n)
    }

    /// Reads `host` again (its record and whether it has a certificate).
    async fn refresh(&self, host: &str) -> redis::RedisResult<()> {
        let raw: Option<String> = self
            .db
            .conn()
            .await?
            .hget(self.db.keys().domains(), host)
            .await?;
        match raw.as_deref().and_then(|r| parse(host, r)) {
            Some(d) => {
                let has_cert = self.with_cert(std::slice::from_ref(&d.host)).await?[0];
                self.mirror.apply(host, Some((&d, has_cert)));
            }
            None => self.mirror.apply(host, None),
        }
        metrics::REGISTRY_CHANGES.inc();
        Ok(())
    }
}

#[async_trait]
impl Followed for Follower {
    fn name(&self) -> &'static str {
        "registry"
    }

    fn channels(&self) -> Vec<String> {
        let keys = self.db.keys();
        vec![keys.domains_channel(), keys.cert_channel()]
    }

    async fn load(&self) -> redis::RedisResult<usize> {
        Follower::load(self).await
    }

    async fn changed(&self, _channel: &str, host: &str) -> redis::RedisResult<()> {
        self.refresh(host).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(host: &str, region: &str, state: State) -> Domain {
        Domain {
            host: host.into(),
            workspace: 1,
            region: region.into(),
            state,
            error: String::new(),
            created_ms: 0,
            updated_ms: 0,
            verified_ms: None,
            fronted: false,
            moved_to: None,
        }
    }

    #[test]
    fn answers_from_memory_and_follows_changes() {
        let m = Mirror::new(vec!["us".into(), "eu".into()]);
        assert!(!m.ready());
        let eu = domain("link.eu.example", "eu", State::Issued);
        let mut all = Map::default();
        all.insert("link.eu.example".into(), m.entry(&eu, true));
        m.replace(all);
        assert!(m.ready());
        assert_eq!(m.registered_region("link.eu.example").flatten(), Some("eu"));
        assert!(m.get("link.eu.example").unwrap().has_cert);
        assert_eq!(m.get("unknown.example"), None);
        // Moved to us, certificate removed; then removed from the registry.
        let us = domain("link.eu.example", "us", State::Verified);
        m.apply("link.eu.example", Some((&us, false)));
        assert_eq!(m.registered_region("link.eu.example").flatten(), Some("us"));
        assert_eq!(m.get("link.eu.example").unwrap().state, State::Verified);
        m.apply("link.eu.example", None);
        assert_eq!(m.registered_region("link.eu.example").flatten(), None);
        assert!(m.is_empty());
        // A region this node does not have: known, but no region to route to.
        let ap = domain("link.ap.example", "ap", State::Pending);
        m.apply("link.ap.example", Some((&ap, false)));
        assert!(m.get("link.ap.example").is_some());
        assert_eq!(m.registered_region("link.ap.example").flatten(), None);
        // Fronted by the customer's own proxy, then not.
        let mut fronted = domain("link.cdn.example", "us", State::Verified);
        fronted.fronted = true;
        m.apply("link.cdn.example", Some((&fronted, false)));
        assert!(m.get("link.cdn.example").unwrap().fronted);
        fronted.fronted = false;
        m.apply("link.cdn.example", Some((&fronted, false)));
        assert!(!m.get("link.cdn.example").unwrap().fronted);
    }

    #[test]
    fn notes_clicks_on_retired_domains_only() {
        let m = Mirror::new(vec!["us".into()]);
        let mut all = Map::default();
        let old = domain("link.old.example", "us", State::Retired);
        let new = domain("link.new.example", "us", State::Pending);
        all.insert("link.old.example".into(), m.entry(&old, true));
        all.insert("link.new.example".into(), m.entry(&new, false));
        m.replace(all);
        m.clicked("link.new.example");
        assert!(m.take_clicks().is_empty());
        m.clicked("link.old.example");
        let taken = m.take_clicks();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].0, "link.old.example");
        assert!(m.take_clicks().is_empty(), "taken once");
        m.restore_click("link.old.example", taken[0].1);
        assert_eq!(m.take_clicks(), taken);
        // Removed from the registry: nothing noted any more.
        m.apply("link.old.example", None);
        m.clicked("link.old.example");
        assert!(m.take_clicks().is_empty());
        // Retired through the change feed.
        m.apply(
            "link.new.example",
            Some((&domain("link.new.example", "us", State::Retired), false)),
        );
        m.clicked("link.new.example");
        assert_eq!(m.take_clicks().len(), 1);
    }
}
