//! TLS session tickets every node can open: the ticket keys live in Redis, sealed with
//! `certs.master_keys`, so a client that comes back through the load balancer to another node
//! resumes its session (an abbreviated handshake: no certificate, no signature) instead of
//! paying for a full one.
//!
//! - The key set is a current key, which seals new tickets, and the previous one, still
//!   accepted (a ticket it opens is replaced by one under the current key). Every
//!   `tls.ticket_rotation` one node (whichever gets there first: a compare-and-set in Redis)
//!   makes a new current key; the oldest is dropped, so a ticket is refused after two rotations.
//!   A ticket lives at most one rotation (and at most 2 hours), so it opens for its whole life.
//!   Every node follows the set like the registry mirror (`store::follow`): read at start, on
//!   each change announced, and every twentieth of a rotation (at most 10 minutes), when a due
//!   rotation is made. A new key opens tickets at once but seals them only 2 s later, once
//!   every node has heard of it.
//! - A node that cannot reach Redis keeps the keys it has; one that never reached it uses a
//!   key of its own, as if it were alone.
//! - Each ticket is sealed under keys derived from the key set's secret and the SNI name the
//!   handshake asked for, so a ticket made under one name opens under no other: resumption
//!   never carries a session across names (or past the certificate choice made for a name).
//! - The stateful session cache is off: a session id resumes nothing, tickets do.

use crate::store::Db;
use crate::tls::Sealer;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use foreign_types::ForeignTypeRef;
use hmac::{Hmac, Mac};
use openssl::ssl::{SslAcceptorBuilder, SslContext, SslSessionCacheMode};
use openssl_sys as ffi;
use serde::{Deserialize, Serialize};
use std::ffi::{c_int, c_long, c_uchar};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// The longest a ticket lives, whatever the rotation (OpenSSL's default session lifetime).
const MAX_LIFETIME: Duration = Duration::from_secs(7200);

/// One ticket key: its name (sent in every ticket it seals) and its secret.
#[derive(Clone, PartialEq, Eq)]
struct TicketKey {
    name: [u8; 16],
    secret: [u8; 32],
    /// Unix milliseconds when it was made.
    created_ms: u64,
}

impl TicketKey {
    fn random(created_ms: u64) -> TicketKey {
        let mut k = TicketKey {
            name: [0; 16],
            secret: [0; 32],
            created_ms,
        };
        openssl::rand::rand_bytes(&mut k.name).expect("the OS has randomness");
        openssl::rand::rand_bytes(&mut k.secret).expect("the OS has randomness");
        k
    }

    /// The AES-256 and HMAC-SHA256 keys of tickets for SNI name `sni` (lowercase; empty
    /// without SNI).
    fn derive(&self, sni: &[u8]) -> [u8; 64] {
        let mut mac = <Hmac<sha2::Sha512> as Mac>::new_from_slice(&self.secret)
            .expect("HMAC takes any key length");
        mac.update(b"linkedge session ticket v1\0");
        mac.update(sni);
        mac.finalize().into_bytes().into()
    }
}

/// The keys in use on this node, newest first: every one opens; the newest seals once every
/// node has had time to read it (`grace_ms` after it was made), the one before until then.
pub struct TicketKeys {
    keys: RwLock<Arc<Vec<TicketKey>>>,
    /// The version of the shared set installed; 0: this node's own key.
    version: std::sync::atomic::AtomicU64,
    /// How long after a key is made every node has read it.
    grace_ms: std::sync::atomic::AtomicU64,
}

impl TicketKeys {
    /// A key of this node's own, until the shared set is read.
    pub fn new() -> Arc<TicketKeys> {
        Arc::new(TicketKeys {
            keys: RwLock::new(Arc::new(vec![TicketKey::random(0)])),
            version: 0.into(),
            grace_ms: 0.into(),
        })
    }

    /// Which of `set` seals new tickets (see [`TicketKeys`]).
    fn sealing(&self, set: &[TicketKey]) -> usize {
        let grace = self.grace_ms.load(std::sync::atomic::Ordering::Relaxed);
        match set {
            [newest, _, ..] if crate::time::unix_ms() < newest.created_ms.saturating_add(grace) => {
                1
            }
            _ => 0,
        }
    }

    fn get(&self) -> Arc<Vec<TicketKey>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn install(&self, set: &Stored) {
        let keys: Vec<TicketKey> = set.keys.iter().filter_map(StoredKey::key).collect();
        if keys.is_empty() {
            return;
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        self.version
            .store(set.version, std::sync::atomic::Ordering::Relaxed);
    }

    /// The version of the shared key set in use (0: this node's own key).
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// OpenSSL's `SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB`.
const SET_TICKET_KEY_CB: c_int = 72;

unsafe extern "C" {
    fn SSL_CTX_set_timeout(ctx: *mut ffi::SSL_CTX, t: c_long) -> c_long;
}

fn keys_index() -> openssl::ex_data::Index<SslContext, Arc<TicketKeys>> {
    static INDEX: OnceLock<openssl::ex_data::Index<SslContext, Arc<TicketKeys>>> = OnceLock::new();
    *INDEX.get_or_init(|| SslContext::new_ex_index().expect("OpenSSL has ex_data indexes"))
}

/// Makes `b`'s handshakes seal and open tickets with `keys`, tickets living at most
/// `rotation` (and 2 hours), with no stateful session cache.
pub fn attach(
    b: &mut SslAcceptorBuilder,
    keys: Arc<TicketKeys>,
    rotation: Duration,
) -> anyhow::Result<()> {
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    b.set_ex_data(keys_index(), keys);
    let lifetime = rotation.min(MAX_LIFETIME).as_secs().max(1);
    let cb: unsafe extern "C" fn(
        *mut ffi::SSL,
        *mut c_uchar,
        *mut c_uchar,
        *mut ffi::EVP_CIPHER_CTX,
        *mut ffi::HMAC_CTX,
        c_int,
    ) -> c_int = ticket_key_cb;
    // SAFETY: the builder's context is valid; the callback has the signature OpenSSL calls
    // SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB's callback with, and only reads what it is given.
    unsafe {
        SSL_CTX_set_timeout(b.as_ptr(), lifetime as c_long);
        let set = ffi::SSL_CTX_callback_ctrl__fixed_rust(
            b.as_ptr(),
            SET_TICKET_KEY_CB,
            Some(std::mem::transmute::<
                unsafe extern "C" fn(
                    *mut ffi::SSL,
                    *mut c_uchar,
                    *mut c_uchar,
                    *mut ffi::EVP_CIPHER_CTX,
                    *mut ffi::HMAC_CTX,
                    c_int,
                ) -> c_int,
                unsafe extern "C" fn(),
            >(cb)),
        );
        anyhow::ensure!(set == 1, "tls: OpenSSL refused the session ticket callback");
    }
    Ok(())
}

/// The SNI name of the ClientHello being processed, lowercased into `out` (empty without
/// one); read from the raw extension, as OpenSSL opens a TLS 1.2 ticket before it parses SNI.
///
/// SAFETY: `ssl` is a connection inside OpenSSL's processing of a ClientHello.
unsafe fn hello_sni(ssl: *mut ffi::SSL, out: &mut Vec<u8>) {
    let mut p: *const c_uchar = std::ptr::null();
    let mut len = 0usize;
    // SAFETY: as the function's contract; OpenSSL owns the returned bytes for the call.
    let ext = unsafe {
        if ffi::SSL_client_hello_get0_ext(ssl, 0, &mut p, &mut len) != 1 || p.is_null() {
            return;
        }
        std::slice::from_raw_parts(p, len)
    };
    // server_name_list: u16 length, then entries of (type u8, u16 length, name).
    if ext.len() >= 5 && ext[2] == 0 {
        let n = u16::from_be_bytes([ext[3], ext[4]]) as usize;
        if let Some(name) = ext.get(5..5 + n) {
            out.extend(name.iter().map(u8::to_ascii_lowercase));
        }
    }
}

/// The SNI name the handshake negotiated, lowercased into `out` (empty without one).
///
/// SAFETY: `ssl` is a live connection.
unsafe fn negotiated_sni(ssl: *mut ffi::SSL, out: &mut Vec<u8>) {
    // SAFETY: OpenSSL returns a NUL-terminated name it owns, or null.
    unsafe {
        let p = ffi::SSL_get_servername(ssl, ffi::TLSEXT_NAMETYPE_host_name);
        if !p.is_null() {
            out.extend(
                std::ffi::CStr::from_ptr(p)
                    .to_bytes()
                    .iter()
                    .map(u8::to_ascii_lowercase),
            );
        }
    }
}

/// OpenSSL's session ticket key callback: `enc` 1 seals a new ticket (name and IV written,
/// contexts set up; returns 1), 0 opens one named `name` (returns 0 for a key this node does
/// not hold, so a full handshake; 1 for the current key; 2 for an older one, so the ticket is
/// replaced).
unsafe extern "C" fn ticket_key_cb(
    ssl: *mut ffi::SSL,
    name: *mut c_uchar,
    iv: *mut c_uchar,
    cctx: *mut ffi::EVP_CIPHER_CTX,
    hctx: *mut ffi::HMAC_CTX,
    enc: c_int,
) -> c_int {
    // SAFETY: OpenSSL calls this with a live connection, a 16-byte name, an IV buffer of
    // EVP_MAX_IV_LENGTH (16) bytes, and contexts to set up.
    unsafe {
        let ctx = ffi::SSL_get_SSL_CTX(ssl);
        let Some(keys) = openssl::ssl::SslContextRef::from_ptr(ctx).ex_data(keys_index()) else {
            return -1;
        };
        let set = keys.get();
        let mut sni = Vec::with_capacity(64);
        let sealing = keys.sealing(&set);
        let (key, answer) = if enc == 1 {
            let key = &set[sealing];
            std::ptr::copy_nonoverlapping(key.name.as_ptr(), name, 16);
            if ffi::RAND_bytes(iv, 16) != 1 {
                return -1;
            }
            negotiated_sni(ssl, &mut sni);
            (key, 1)
        } else {
            let asked = std::slice::from_raw_parts(name, 16);
            let Some(at) = set.iter().position(|k| k.name == asked) else {
                return 0;
            };
            hello_sni(ssl, &mut sni);
            // A ticket under an older key than the sealing one is replaced.
            (&set[at], if at <= sealing { 1 } else { 2 })
        };
        let derived = key.derive(&sni);
        let (aes, mac) = derived.split_at(32);
        let ok = if enc == 1 {
            ffi::EVP_EncryptInit_ex(
                cctx,
                ffi::EVP_aes_256_cbc(),
                std::ptr::null_mut(),
                aes.as_ptr(),
                iv,
            )
        } else {
            ffi::EVP_DecryptInit_ex(
                cctx,
                ffi::EVP_aes_256_cbc(),
                std::ptr::null_mut(),
                aes.as_ptr(),
                iv,
            )
        };
        if ok != 1
            || ffi::HMAC_Init_ex(
                hctx,
                mac.as_ptr().cast(),
                32,
                ffi::EVP_sha256(),
                std::ptr::null_mut(),
            ) != 1
        {
            return -1;
        }
        answer
    }
}

/// A key as stored (base64), inside the sealed set.
#[derive(Clone, Serialize, Deserialize)]
struct StoredKey {
    name: String,
    secret: String,
    created_ms: u64,
}

impl StoredKey {
    fn key(&self) -> Option<TicketKey> {
        Some(TicketKey {
            name: STANDARD.decode(&self.name).ok()?.try_into().ok()?,
            secret: STANDARD.decode(&self.secret).ok()?.try_into().ok()?,
            created_ms: self.created_ms,
        })
    }

    fn of(k: &TicketKey) -> StoredKey {
        StoredKey {
            name: STANDARD.encode(k.name),
            secret: STANDARD.encode(k.secret),
            created_ms: k.created_ms,
        }
    }
}

/// The shared key set, before sealing: raised `version` on every rotation, current key first.
#[derive(Clone, Serialize, Deserialize)]
struct Stored {
    version: u64,
    keys: Vec<StoredKey>,
}

/// The Redis value: which master key sealed the set, and the sealed JSON.
#[derive(Serialize, Deserialize)]
struct Sealed {
    master_key: u32,
    sealed: String,
}

/// The associated data sealed keys are bound to (the sealer's "host").
const SEAL_CONTEXT: &str = "tls session ticket keys";

/// Replaces the stored value `old` (ARGV[1], `""`: none) by `new` (ARGV[2]) and announces it
/// on channel ARGV[3], only if it is still `old`.
const SWAP: &str = "local v = redis.call('GET', KEYS[1]) or '' \
    if v == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) \
    redis.call('PUBLISH', ARGV[3], '1') return 1 end return 0";

/// The stored key set (and its raw value, for the compare-and-set), `None` when there is none.
async fn read(db: &Db, sealer: &Sealer) -> anyhow::Result<(Option<String>, Option<Stored>)> {
    use redis::AsyncCommands;
    let raw: Option<String> = db.conn().await?.get(db.keys().ticket_keys()).await?;
    let stored = match &raw {
        None => None,
        Some(r) => {
            let s: Sealed = serde_json::from_str(r)
                .map_err(|e| anyhow::anyhow!("the stored ticket keys are damaged: {e}"))?;
            // A set sealed with a master key this node lacks: keep what it has, loudly, rather
            // than replace every other node's keys.
            let plain = sealer
                .open(SEAL_CONTEXT, s.master_key, &s.sealed)
                .map_err(|e| anyhow::anyhow!("the stored ticket keys do not open: {e}"))?;
            Some(
                serde_json::from_slice(&plain)
                    .map_err(|e| anyhow::anyhow!("the stored ticket keys are damaged: {e}"))?,
            )
        }
    };
    Ok((raw, stored))
}

/// Replaces `stored` (read as `raw`) by a set with a new current key and its current key as
/// the previous one; `None` when another node changed it first.
async fn rotate(
    db: &Db,
    sealer: &Sealer,
    raw: Option<&str>,
    stored: Option<&Stored>,
) -> anyhow::Result<Option<Stored>> {
    let mut keys = vec![StoredKey::of(&TicketKey::random(crate::time::unix_ms()))];
    keys.extend(stored.and_then(|s| s.keys.first().cloned()));
    let next = Stored {
        version: stored.map_or(0, |s| s.version) + 1,
        keys,
    };
    let (master_key, sealed) = sealer.seal(
        SEAL_CONTEXT,
        &serde_json::to_vec(&next).expect("the key set serialises"),
    );
    let value = serde_json::to_string(&Sealed { master_key, sealed }).expect("serialises");
    let swapped: i64 = redis::Script::new(SWAP)
        .key(db.keys().ticket_keys())
        .arg(raw.unwrap_or(""))
        .arg(value)
        .arg(db.keys().ticket_keys_channel())
        .invoke_async(&mut db.conn().await?)
        .await?;
    if swapped != 1 {
        return Ok(None);
    }
    tracing::info!(version = next.version, "session ticket keys rotated");
    crate::metrics::TICKET_ROTATIONS.inc();
    Ok(Some(next))
}

/// Rotates the fleet's key set now (what `linkedge cert rotate-tickets` does): every node
/// seals with the new key within a second, and tickets sealed two rotations ago are refused.
/// The new version.
pub async fn rotate_now(db: &Db, sealer: &Sealer) -> anyhow::Result<u64> {
    for _ in 0..5 {
        let (raw, stored) = read(db, sealer).await?;
        if let Some(next) = rotate(db, sealer, raw.as_deref(), stored.as_ref()).await? {
            return Ok(next.version);
        }
    }
    anyhow::bail!("the ticket keys kept changing under the rotation; try again")
}

/// How often a node reads the stored set besides its change feed, and so how late after its
/// due time a rotation may come: a twentieth of the rotation, between 100 ms and 10 minutes.
pub fn resync_every(rotation: Duration) -> Duration {
    (rotation / 20).clamp(Duration::from_millis(100), Duration::from_secs(600))
}

/// Keeps this node's [`TicketKeys`] to the fleet's set in Redis, and rotates the set when it
/// is due: run it with [`crate::store::follow::Following`] and [`resync_every`]. The set is
/// read at start, on every announcement of a change (from the node that rotated, or `cert
/// rotate-tickets`), and every [`resync_every`], when a due rotation is made.
pub struct TicketFollower {
    keys: Arc<TicketKeys>,
    db: Db,
    sealer: Sealer,
    rotation: Duration,
    /// Whether the last read failed to open, so it is logged once.
    unreadable: std::sync::atomic::AtomicBool,
}

impl TicketFollower {
    /// Keeps `keys` to the set in `db`, rotated every `rotation`.
    pub fn new(keys: Arc<TicketKeys>, db: Db, sealer: Sealer, rotation: Duration) -> Self {
        // Every node hears of a new key within milliseconds (the change feed): it seals with
        // it after 2 s (a quarter of a shorter rotation), so a ticket never reaches a node
        // that cannot open it yet.
        let grace = (rotation / 4).min(Duration::from_secs(2));
        keys.grace_ms.store(
            grace.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        TicketFollower {
            keys,
            db,
            sealer,
            rotation,
            unreadable: false.into(),
        }
    }

    fn install(&self, set: &Stored) {
        if set.version != self.keys.version() {
            self.keys.install(set);
            crate::metrics::TICKET_KEYS_VERSION.set(set.version as i64);
        }
    }

    /// Reads the set and installs it; rotates it first when `may_rotate` and it is due (or
    /// there is none). A set this node cannot open (sealed with a master key it lacks,
    /// damaged) is logged and the current keys kept: only Redis failures are errors.
    async fn sync(&self, may_rotate: bool) -> redis::RedisResult<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let (raw, stored) = match read(&self.db, &self.sealer).await {
            Ok(r) => r,
            Err(e) => match e.downcast::<redis::RedisError>() {
                Ok(e) => return Err(e),
                Err(e) => {
                    if !self.unreadable.swap(true, Relaxed) {
                        tracing::error!(error = %e, "session ticket keys: keeping the current keys");
                    }
                    return Ok(());
                }
            },
        };
        self.unreadable.store(false, Relaxed);
        let now = crate::time::unix_ms();
        let due = stored.as_ref().is_none_or(|s| {
            s.keys.first().is_none_or(|k| {
                now >= k
                    .created_ms
                    .saturating_add(self.rotation.as_millis() as u64)
            })
        });
        let set = match (may_rotate && due, stored) {
            (false, Some(s)) => s,
            (false, None) => return Ok(()),
            (true, stored) => {
                match rotate(&self.db, &self.sealer, raw.as_deref(), stored.as_ref()).await {
                    Ok(Some(next)) => next,
                    // Another node rotated first: its announcement brings the set.
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        return Err(e.downcast::<redis::RedisError>().unwrap_or_else(|e| {
                            redis::RedisError::from(std::io::Error::other(e.to_string()))
                        }));
                    }
                }
            }
        };
        self.install(&set);
        Ok(())
    }
}

#[async_trait]
impl crate::store::follow::Followed for TicketFollower {
    fn name(&self) -> &'static str {
        "session ticket keys"
    }

    fn channels(&self) -> Vec<String> {
        vec![self.db.keys().ticket_keys_channel()]
    }

    async fn load(&self) -> redis::RedisResult<usize> {
        self.sync(true).await?;
        Ok(1)
    }

    async fn changed(&self, _channel: &str, _payload: &str) -> redis::RedisResult<()> {
        self.sync(false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_per_name_and_per_secret() {
        let a = TicketKey::random(0);
        let b = TicketKey::random(0);
        assert_ne!(a.derive(b"a.example"), a.derive(b"b.example"));
        assert_ne!(a.derive(b"a.example"), b.derive(b"a.example"));
        assert_eq!(a.derive(b"a.example"), a.derive(b"a.example"));
        assert_ne!(a.derive(b""), a.derive(b"a.example"));
    }

    #[test]
    fn a_stored_key_round_trips_and_a_damaged_one_is_dropped() {
        let k = TicketKey::random(5);
        assert!(StoredKey::of(&k).key() == Some(k.clone()));
        let mut bad = StoredKey::of(&k);
        bad.name.pop();
        assert!(bad.key().is_none());
    }
}
