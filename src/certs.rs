//! Per-domain certificates: stored in Redis with the private key sealed (AES-256-GCM), cached in
//! memory, and chosen per SNI during the TLS handshake.
//!
//! Redis layout, under the configured prefix: `cert:<host>` is a hash with `chain` (PEM, leaf
//! first), `key` (base64 of nonce ‖ ciphertext ‖ tag of the PKCS#8 PEM key, the host as
//! associated data), `key_id` (the master key that sealed it), `not_before` and `not_after`
//! (Unix seconds). A change is announced on the channel `certs` so every node drops its copy.
//! Key names come from [`crate::db::Keys`].

use crate::db::Db;
use crate::metrics;
use crate::token::normalize_host;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::asn1::Asn1Time;
use openssl::pkey::{PKey, Private};
use openssl::ssl::NameType;
use openssl::symm::{Cipher, decrypt_aead, encrypt_aead};
use openssl::x509::X509;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use redis::AsyncCommands;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A certificate store operation that failed, said plainly.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The PEM could not be read.
    #[error("{0}")]
    Invalid(String),
    /// The certificate does not cover the host.
    #[error("the certificate does not cover {0}")]
    WrongName(String),
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// Sealed with a master key this node does not have.
    #[error("sealed with master key {0}, which is not configured")]
    UnknownMasterKey(u32),
    /// The sealed key does not open (wrong key, or tampered).
    #[error("the stored private key does not decrypt")]
    Unseal,
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Seals and opens private keys with the master keys (AES-256-GCM).
#[derive(Clone)]
pub struct Sealer {
    keys: HashMap<u32, [u8; 32]>,
    current: u32,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sealer(current {}, {} keys)",
            self.current,
            self.keys.len()
        )
    }
}

impl Sealer {
    /// A sealer sealing with `current` and opening with any of `keys`.
    pub fn new(keys: Vec<(u32, [u8; 32])>, current: u32) -> Sealer {
        Sealer {
            keys: keys.into_iter().collect(),
            current,
        }
    }

    /// Seals `plain` for `host`; returns the key id and the base64 text.
    pub fn seal(&self, host: &str, plain: &[u8]) -> (u32, String) {
        let key = &self.keys[&self.current];
        let mut nonce = [0u8; 12];
        openssl::rand::rand_bytes(&mut nonce).expect("the OS has randomness");
        let mut tag = [0u8; 16];
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            key,
            Some(&nonce),
            host.as_bytes(),
            plain,
            &mut tag,
        )
        .expect("AES-256-GCM encrypts");
        let mut out = Vec::with_capacity(12 + ct.len() + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out.extend_from_slice(&tag);
        (self.current, STANDARD.encode(out))
    }

    /// Opens what [`Sealer::seal`] sealed for `host` with key `key_id`.
    pub fn open(&self, host: &str, key_id: u32, sealed: &str) -> Result<Vec<u8>, CertError> {
        let key = self
            .keys
            .get(&key_id)
            .ok_or(CertError::UnknownMasterKey(key_id))?;
        let raw = STANDARD.decode(sealed).map_err(|_| CertError::Unseal)?;
        if raw.len() < 28 {
            return Err(CertError::Unseal);
        }
        let (nonce, rest) = raw.split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        decrypt_aead(
            Cipher::aes_256_gcm(),
            key,
            Some(nonce),
            host.as_bytes(),
            ct,
            tag,
        )
        .map_err(|_| CertError::Unseal)
    }
}

/// A certificate ready for handshakes.
pub struct Loaded {
    /// Leaf first.
    pub chain: Vec<X509>,
    /// The leaf's key.
    pub key: PKey<Private>,
    /// Unix seconds.
    pub not_after: i64,
    /// An RSA certificate next to the ECDSA one, for clients that cannot do ECDSA; OpenSSL
    /// picks between the two per ClientHello.
    pub rsa: Option<Box<Loaded>>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Loaded(chain of {}, not_after {})",
            self.chain.len(),
            self.not_after
        )
    }
}

fn unix(t: &openssl::asn1::Asn1TimeRef) -> i64 {
    let epoch = Asn1Time::from_unix(0).expect("epoch");
    let d = epoch.diff(t).expect("times compare");
    d.days as i64 * 86_400 + d.secs as i64
}

/// Whether `leaf` covers `host` (exact or single-label wildcard SAN, or CN without SANs).
fn covers(leaf: &X509, host: &str) -> bool {
    let matches = |name: &str| {
        let name = name.to_ascii_lowercase();
        if let Some(suffix) = name.strip_prefix("*.") {
            host.split_once('.').is_some_and(|(_, rest)| rest == suffix)
        } else {
            name == host
        }
    };
    if let Some(sans) = leaf.subject_alt_names() {
        return sans.iter().filter_map(|n| n.dnsname()).any(matches);
    }
    leaf.subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .filter_map(|e| e.data().to_string().ok())
        .any(|cn| matches(&cn))
}

/// Parses and checks a chain and key for `host`.
pub fn parse_pair(host: &str, chain_pem: &[u8], key_pem: &[u8]) -> Result<Loaded, CertError> {
    let chain = X509::stack_from_pem(chain_pem)
        .map_err(|e| CertError::Invalid(format!("not a PEM certificate chain: {e}")))?;
    let leaf = chain
        .first()
        .ok_or_else(|| CertError::Invalid("the chain holds no certificate".into()))?;
    let key = PKey::private_key_from_pem(key_pem)
        .map_err(|e| CertError::Invalid(format!("not a PEM private key: {e}")))?;
    let public = leaf
        .public_key()
        .map_err(|e| CertError::Invalid(format!("unreadable certificate key: {e}")))?;
    if !public.public_eq(&key) {
        return Err(CertError::KeyMismatch);
    }
    if !covers(leaf, host) {
        return Err(CertError::WrongName(host.to_string()));
    }
    let not_after = unix(leaf.not_after());
    Ok(Loaded {
        chain,
        key,
        not_after,
        rsa: None,
    })
}

/// Facts about a stored certificate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Info {
    /// The host.
    pub host: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// The master key that sealed the private key.
    pub key_id: u32,
}

/// The Redis-backed store.
#[derive(Clone)]
pub struct Store {
    db: Db,
    sealer: Sealer,
}

impl Store {
    /// A store in `db`, sealing keys with `sealer`.
    pub fn new(db: Db, sealer: Sealer) -> Store {
        Store { db, sealer }
    }

    /// Tells every node that `host`'s certificate changed. The write before it has landed, so
    /// a node that misses the message (not subscribed at that moment) clears its whole cache
    /// when it subscribes again.
    async fn announce(&self, host: &str) -> Result<(), CertError> {
        let mut conn = self.db.conn().await?;
        let _: i64 = conn.publish(self.db.keys().cert_channel(), host).await?;
        Ok(())
    }

    /// Checks and stores a chain and key for `host`, sealing the key, and tells every node.
    pub async fn put(
        &self,
        host: &str,
        chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Info, CertError> {
        let host =
            normalize_host(host).ok_or_else(|| CertError::Invalid("not a host name".into()))?;
        let loaded = parse_pair(&host, chain_pem, key_pem)?;
        // An RSA key goes to the RSA slot, anything else (ECDSA by default) to the main one.
        let slot = if loaded.key.id() == openssl::pkey::Id::RSA {
            "_rsa"
        } else {
            ""
        };
        let f = |name: &str| format!("{name}{slot}");
        let not_before = unix(loaded.chain[0].not_before());
        // Store the key as PKCS#8 PEM whatever form it came in.
        let pkcs8 = loaded
            .key
            .private_key_to_pem_pkcs8()
            .map_err(|e| CertError::Invalid(e.to_string()))?;
        let (key_id, sealed) = self.sealer.seal(&host, &pkcs8);
        let chain: Vec<u8> = loaded
            .chain
            .iter()
            .map(|c| c.to_pem().expect("certificates encode"))
            .collect::<Vec<_>>()
            .concat();
        let mut conn = self.db.conn().await?;
        let _: () = conn
            .hset_multiple(
                self.db.keys().cert(&host),
                &[
                    (f("chain"), String::from_utf8_lossy(&chain).into_owned()),
                    (f("key"), sealed),
                    (f("key_id"), key_id.to_string()),
                    (f("not_before"), not_before.to_string()),
                    (f("not_after"), loaded.not_after.to_string()),
                ],
            )
            .await?;
        self.announce(&host).await?;
        Ok(Info {
            host,
            not_before,
            not_after: loaded.not_after,
            key_id,
        })
    }

    /// The certificate for `host`, opened, or `None`.
    pub async fn load(&self, host: &str) -> Result<Option<Loaded>, CertError> {
        let mut conn = self.db.conn().await?;
        let m: HashMap<String, String> = conn.hgetall(self.db.keys().cert(host)).await?;
        if m.is_empty() {
            return Ok(None);
        }
        let slot = |suffix: &str| -> Result<Option<Loaded>, CertError> {
            let Some(chain) = m.get(&format!("chain{suffix}")) else {
                return Ok(None);
            };
            let field = |k: &str| {
                m.get(&format!("{k}{suffix}"))
                    .ok_or_else(|| CertError::Invalid(format!("stored record lacks {k}{suffix}")))
            };
            let key_id: u32 = field("key_id")?
                .parse()
                .map_err(|_| CertError::Invalid("bad key_id".into()))?;
            let key_pem = self.sealer.open(host, key_id, field("key")?)?;
            parse_pair(host, chain.as_bytes(), &key_pem).map(Some)
        };
        match (slot("")?, slot("_rsa")?) {
            (Some(mut main), rsa) => {
                main.rsa = rsa.map(Box::new);
                Ok(Some(main))
            }
            (None, rsa) => Ok(rsa),
        }
    }

    /// Facts about the stored certificate for `host`, without opening the key.
    pub async fn info(&self, host: &str) -> Result<Option<Info>, CertError> {
        let mut conn = self.db.conn().await?;
        let m: HashMap<String, String> = conn.hgetall(self.db.keys().cert(host)).await?;
        if m.is_empty() {
            return Ok(None);
        }
        // The main (ECDSA) certificate's facts, or the RSA one's when it is the only one.
        let num = |k: &str| {
            m.get(k)
                .or_else(|| m.get(&format!("{k}_rsa")))
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        Ok(Some(Info {
            host: host.to_string(),
            not_before: num("not_before"),
            not_after: num("not_after"),
            key_id: num("key_id") as u32,
        }))
    }

    /// Removes the certificate for `host` and tells every node.
    pub async fn remove(&self, host: &str) -> Result<bool, CertError> {
        let mut conn = self.db.conn().await?;
        let n: u64 = conn.del(self.db.keys().cert(host)).await?;
        self.announce(host).await?;
        Ok(n > 0)
    }
}

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
    fn found(&self, host: &str, cert: Arc<Loaded>) {
        let mut m = self.lock();
        m.found(host, cert);
        metrics::CERT_CACHE_ENTRIES.set(m.found.len() as i64);
    }

    /// Remembers for `ttl` that `host` has no certificate.
    fn missing(&self, host: &str, ttl: Duration) {
        let mut m = self.lock();
        m.missing(host, Instant::now() + ttl);
        metrics::CERT_CACHE_ENTRIES.set(m.found.len() as i64);
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

/// Chooses the certificate for each handshake by SNI: memory, else Redis, else the fallback.
pub struct Selector {
    cache: Arc<Cache>,
    /// `None`: no store, every handshake gets the fallback.
    store: Option<Store>,
    fallback: Option<Arc<Loaded>>,
    /// Orders a certificate during a handshake (on-demand issuance), when configured.
    on_demand: Option<crate::acme::Acme>,
}

/// The SNI name a TLS connection asked for, carried into the HTTP phase.
#[derive(Debug, Clone)]
pub struct Sni(pub String);

impl Selector {
    /// A selector reading `store` on a cache miss (none: always the fallback).
    pub fn new(cache: Arc<Cache>, store: Option<Store>, fallback: Option<Arc<Loaded>>) -> Selector {
        Selector {
            cache,
            store,
            fallback,
            on_demand: None,
        }
    }

    /// Orders a certificate during the first handshake of a registered, verified domain that
    /// has none yet (the handshake waits for it, up to `acme.order_timeout`).
    pub fn with_on_demand(mut self, acme: crate::acme::Acme) -> Selector {
        self.on_demand = Some(acme);
        self
    }

    /// The certificate for `host`: from memory, else from Redis (then cached), else `None`
    /// (remembered for the negative TTL).
    pub async fn lookup(&self, host: &str) -> Option<Arc<Loaded>> {
        let hit = self.cache.lock().get(host, Instant::now());
        match hit {
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
        let store = self.store.as_ref()?;
        let (found, source) = match (store.load(host).await, &self.on_demand) {
            (Ok(Some(l)), _) => (Some(l), "redis"),
            (Ok(None), Some(acme)) => (crate::acme::on_demand(acme, host).await, "issued"),
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
                self.cache.missing(host, self.cache.negative_ttl);
                None
            }
        }
    }
}

/// Sets the certificate (and the RSA one, if any) on the connection. OpenSSL keeps one
/// certificate per key type and picks the one the ClientHello's signature algorithms allow; a
/// chain certificate attaches to the certificate set just before it.
fn use_cert(ssl: &mut TlsRef, c: &Loaded) -> Result<(), openssl::error::ErrorStack> {
    use pingora::tls::ext;
    ext::ssl_use_certificate(ssl, &c.chain[0])?;
    ext::ssl_use_private_key(ssl, &c.key)?;
    for extra in &c.chain[1..] {
        ext::ssl_add_chain_cert(ssl, extra)?;
    }
    if let Some(rsa) = &c.rsa {
        use_cert(ssl, rsa)?;
    }
    Ok(())
}

#[async_trait]
impl TlsAccept for Selector {
    /// Sets the certificate for the ClientHello's SNI; sets none (the handshake fails) when the
    /// name has none and no fallback is configured.
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let sni = ssl.servername(NameType::HOST_NAME).and_then(normalize_host);
        let found = match (&sni, &self.store) {
            (Some(name), Some(_)) => self.lookup(name).await,
            _ => None,
        };
        let chosen = found.or_else(|| {
            if self.fallback.is_some() && self.store.is_some() {
                metrics::cert_lookup("fallback").inc();
            }
            self.fallback.clone()
        });
        if let Some(c) = chosen
            && let Err(e) = use_cert(ssl, &c)
        {
            tracing::error!(error = %e, "cannot use certificate");
        }
    }

    /// Carries the SNI name into the HTTP phase (see [`Sni`]).
    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        metrics::tls_handshake(ssl.session_reused());
        let sni = ssl
            .servername(NameType::HOST_NAME)
            .and_then(normalize_host)?;
        Some(Arc::new(Sni(sni)))
    }
}

/// Drops cached certificates when any node announces a change, as a background service.
pub struct Invalidator {
    cache: Arc<Cache>,
    db: Db,
}

impl Invalidator {
    /// Listens on `db`'s certificate channel and clears entries of `cache`.
    pub fn new(cache: Arc<Cache>, db: Db) -> Invalidator {
        Invalidator { cache, db }
    }

    async fn listen(&self) -> redis::RedisResult<()> {
        use futures_util::StreamExt;
        let bound = self.db.timeout();
        let timed_out = || {
            redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer within redis.timeout",
            ))
        };
        let mut pubsub = self.db.pubsub().await?;
        tokio::time::timeout(bound, pubsub.subscribe(self.db.keys().cert_channel()))
            .await
            .map_err(|_| timed_out())??;
        // Messages sent while not subscribed are lost: start from a clean cache.
        self.cache.clear();
        tracing::info!("certificate invalidation channel subscribed");
        let (mut sink, mut stream) = pubsub.split();
        // A server that hangs (or a network that drops packets) never ends the stream: ping it.
        let mut check = tokio::time::interval(PUBSUB_PING_EVERY);
        check.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => {
                        if let Ok(host) = msg.get_payload::<String>() {
                            self.cache.invalidate(&host);
                        }
                    }
                    None => {
                        return Err(redis::RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "the subscription ended",
                        )));
                    }
                },
                _ = check.tick() => {
                    tokio::time::timeout(bound, sink.ping::<redis::Value>())
                        .await
                        .map_err(|_| timed_out())??;
                }
            }
        }
    }
}

/// How often the invalidation channel's connection is checked with a PING.
const PUBSUB_PING_EVERY: Duration = Duration::from_secs(5);

#[async_trait]
impl pingora::services::background::BackgroundService for Invalidator {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        loop {
            tokio::select! {
                r = self.listen() => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "certificate invalidation channel lost; retrying");
                    }
                }
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_binds_the_host() {
        let s = Sealer::new(vec![(1, [7; 32]), (2, [9; 32])], 2);
        let (id, sealed) = s.seal("a.example.com", b"secret key");
        assert_eq!(id, 2);
        assert!(!sealed.contains("secret"));
        assert_eq!(s.open("a.example.com", 2, &sealed).unwrap(), b"secret key");
        assert!(matches!(
            s.open("b.example.com", 2, &sealed),
            Err(CertError::Unseal)
        ));
        assert!(matches!(
            s.open("a.example.com", 1, &sealed),
            Err(CertError::Unseal)
        ));
        assert!(matches!(
            s.open("a.example.com", 3, &sealed),
            Err(CertError::UnknownMasterKey(3))
        ));
    }

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
