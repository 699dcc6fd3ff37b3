//! TLS session tickets every node can open: the ticket keys live in Redis, sealed with
//! `certs.master_keys`, so a client that comes back through the load balancer to another node
//! resumes its session (an abbreviated handshake: no certificate, no signature) instead of
//! paying for a full one.
//!
//! - The key set is a current key, which seals new tickets, and the previous one, still
//!   accepted (a ticket it opens is replaced by one under the current key, as every resumed
//!   TLS 1.3 ticket is). Every `tls.ticket_rotation` one node (whichever gets there first: a
//!   compare-and-set in Redis, on Redis's clock) makes a new current key and announces it; the
//!   oldest is dropped, so a ticket is refused after two rotations. A ticket lives at most one
//!   rotation (and at most 2 hours).
//! - Every node follows the set like the registry mirror (`store::follow`): read at start, on
//!   each change announced, and every twentieth of a rotation (at most 10 minutes), when a due
//!   rotation is made. A node seals with a new key 2 s after it heard of it (a quarter of a
//!   shorter rotation), once every node has, so a ticket does not reach a node that cannot
//!   open it yet.
//! - A node that cannot reach Redis, or cannot open the stored set, keeps the keys it has; one
//!   that never read the set uses keys of its own, rotated on the same schedule, as a node
//!   without a `certs` section always does.
//! - Each ticket is sealed under keys derived from the key set's secret and the SNI name the
//!   handshake asked for (or its absence), so a ticket made under one name opens under no
//!   other: resumption never carries a session across names (or past the certificate choice
//!   made for a name).
//! - At most [`MAX_TICKETS_TRIED`] tickets are tried per connection (two per ClientHello),
//!   each with a name of at most 255 bytes: a ClientHello stuffed with tickets costs no more
//!   than a normal one.
//! - The stateful session cache is off: a session id resumes nothing, tickets do.

use crate::store::Db;
use crate::tls::Sealer;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use foreign_types::ForeignTypeRef;
use hmac::{Hmac, Mac};
use openssl::ssl::{Ssl, SslAcceptorBuilder, SslContext, SslRef, SslSessionCacheMode};
use openssl_sys as ffi;
use serde::{Deserialize, Serialize};
use std::ffi::{c_int, c_long, c_uchar};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// The longest a ticket lives, whatever the rotation (OpenSSL's default session lifetime).
const MAX_LIFETIME: Duration = Duration::from_secs(7200);

/// Tickets tried per connection (two per ClientHello, a HelloRetryRequest making two); the
/// rest are ignored.
pub const MAX_TICKETS_TRIED: u8 = 4;

/// One ticket key: its name (sent in every ticket it seals) and its secret.
#[derive(Clone, PartialEq, Eq)]
struct TicketKey {
    name: [u8; 16],
    secret: [u8; 32],
    /// Unix milliseconds (Redis's clock) when it was made.
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

    /// The AES-256 and HMAC-SHA256 keys of tickets for SNI name `sni` (lowercase; `None`
    /// without SNI, which is not the same as an empty name).
    fn derive(&self, sni: Option<&[u8]>) -> [u8; 64] {
        let mut mac = <Hmac<sha2::Sha512> as Mac>::new_from_slice(&self.secret)
            .expect("HMAC takes any key length");
        mac.update(b"linkedge session ticket v1\0");
        match sni {
            None => mac.update(&[0]),
            Some(n) => {
                mac.update(&[1, n.len() as u8]);
                mac.update(n);
            }
        }
        mac.finalize().into_bytes().into()
    }
}

/// A key set in use: newest first, and when (this node's monotonic clock) the newest starts
/// sealing; read as one, so a handshake never pairs one set with another's time.
struct KeySet {
    keys: Vec<TicketKey>,
    newest_seals_at: std::time::Instant,
    /// The version of the shared set; 0: this node's own keys.
    version: u64,
}

impl KeySet {
    /// Which key seals new tickets: the one before the newest during its grace period.
    fn sealing(&self) -> usize {
        if self.keys.len() > 1 && std::time::Instant::now() < self.newest_seals_at {
            1
        } else {
            0
        }
    }
}

/// The keys in use on this node (see [`KeySet`]): every one opens tickets.
pub struct TicketKeys {
    set: RwLock<Arc<KeySet>>,
    /// How long after hearing of a new key a node starts sealing with it.
    grace_ms: AtomicU64,
}

impl TicketKeys {
    /// Keys of this node's own, until the shared set is read.
    pub fn new() -> Arc<TicketKeys> {
        Arc::new(TicketKeys {
            set: RwLock::new(Arc::new(KeySet {
                keys: vec![TicketKey::random(0)],
                newest_seals_at: std::time::Instant::now(),
                version: 0,
            })),
            grace_ms: 0.into(),
        })
    }

    fn get(&self) -> Arc<KeySet> {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `keys` (newest first) in use as `version`, unless they are the ones in use, or
    /// (`own_only`) unless a shared set is in use; true when they were put.
    fn put(&self, keys: Vec<TicketKey>, version: u64, own_only: bool) -> bool {
        if keys.is_empty() {
            return false;
        }
        let mut held = self.set.write().unwrap_or_else(|p| p.into_inner());
        if own_only && held.version != 0 {
            return false;
        }
        let names = |k: &[TicketKey]| k.iter().map(|k| k.name).collect::<Vec<_>>();
        if names(&held.keys) == names(&keys) {
            return false;
        }
        let newest_seals_at = if held.keys.first().map(|k| k.name) != Some(keys[0].name) {
            std::time::Instant::now() + Duration::from_millis(self.grace_ms.load(Relaxed))
        } else {
            held.newest_seals_at
        };
        *held = Arc::new(KeySet {
            keys,
            newest_seals_at,
            version,
        });
        true
    }

    /// Makes a new key of this node's own the newest, keeping the one before: the rotation
    /// of a node with no shared set (none once a shared set is in use).
    fn rotate_own(&self) {
        let newest = self.get().keys.first().cloned();
        self.put(
            std::iter::once(TicketKey::random(crate::time::unix_ms()))
                .chain(newest)
                .collect(),
            0,
            true,
        );
    }

    /// The version of the shared key set in use (0: this node's own keys).
    pub fn version(&self) -> u64 {
        self.get().version
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

/// Tickets tried so far on a connection.
fn tried_index() -> openssl::ex_data::Index<Ssl, u8> {
    static INDEX: OnceLock<openssl::ex_data::Index<Ssl, u8>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().expect("OpenSSL has ex_data indexes"))
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
    let _ = tried_index();
    let lifetime = rotation.min(MAX_LIFETIME).as_secs().max(1);
    type Cb = unsafe extern "C" fn(
        *mut ffi::SSL,
        *mut c_uchar,
        *mut c_uchar,
        *mut ffi::EVP_CIPHER_CTX,
        *mut ffi::HMAC_CTX,
        c_int,
    ) -> c_int;
    let cb: Cb = ticket_key_cb;
    // SAFETY: the builder's context is valid; the callback has the signature OpenSSL calls
    // SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB's callback with (ssl/t1_lib.c), and only reads what
    // it is given.
    unsafe {
        SSL_CTX_set_timeout(b.as_ptr(), lifetime as c_long);
        let set = ffi::SSL_CTX_callback_ctrl__fixed_rust(
            b.as_ptr(),
            SET_TICKET_KEY_CB,
            Some(std::mem::transmute::<Cb, unsafe extern "C" fn()>(cb)),
        );
        anyhow::ensure!(set == 1, "tls: OpenSSL refused the session ticket callback");
    }
    Ok(())
}

/// An SNI name as keys are derived for it: lowercase, at most 255 bytes, on the stack.
struct Name {
    bytes: [u8; 255],
    len: usize,
}

impl Name {
    fn of(raw: &[u8]) -> Option<Name> {
        if raw.len() > 255 || raw.contains(&0) {
            return None;
        }
        let mut n = Name {
            bytes: [0; 255],
            len: raw.len(),
        };
        for (d, s) in n.bytes.iter_mut().zip(raw) {
            *d = s.to_ascii_lowercase();
        }
        Some(n)
    }

    fn get(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The SNI name of the ClientHello being processed (`Ok(None)`: none), read from the raw
/// extension, as OpenSSL opens a TLS 1.2 ticket before it parses SNI; `Err` when the
/// extension is not one name of at most 255 bytes without NUL, as OpenSSL requires.
///
/// SAFETY: `ssl` is a connection inside OpenSSL's processing of a ClientHello.
unsafe fn hello_sni(ssl: *mut ffi::SSL) -> Result<Option<Name>, ()> {
    let mut p: *const c_uchar = std::ptr::null();
    let mut len = 0usize;
    // SAFETY: as the function's contract; OpenSSL owns the returned bytes for the call.
    let ext = unsafe {
        if ffi::SSL_client_hello_get0_ext(ssl, 0, &mut p, &mut len) != 1 || p.is_null() {
            return Ok(None);
        }
        std::slice::from_raw_parts(p, len)
    };
    // server_name_list: u16 length, then exactly one entry: type 0, u16 length, the name.
    match ext {
        [l0, l1, 0, n0, n1, name @ ..]
            if usize::from(u16::from_be_bytes([*l0, *l1])) == ext.len() - 2
                && usize::from(u16::from_be_bytes([*n0, *n1])) == name.len() =>
        {
            Name::of(name).map(Some).ok_or(())
        }
        _ => Err(()),
    }
}

/// The SNI name the handshake negotiated (`None`: none).
///
/// SAFETY: `ssl` is a live connection.
unsafe fn negotiated_sni(ssl: *mut ffi::SSL) -> Result<Option<Name>, ()> {
    // SAFETY: OpenSSL returns a NUL-terminated name it owns, or null.
    unsafe {
        let p = ffi::SSL_get_servername(ssl, ffi::TLSEXT_NAMETYPE_host_name);
        if p.is_null() {
            return Ok(None);
        }
        Name::of(std::ffi::CStr::from_ptr(p).to_bytes())
            .map(Some)
            .ok_or(())
    }
}

/// OpenSSL's TLS 1.3 version number.
const TLS1_3: c_int = 0x0304;

/// OpenSSL's session ticket key callback: `enc` 1 seals a new ticket (name and IV written,
/// contexts set up; returns 1), 0 opens one named `name` (returns 0, so no resumption, for a
/// key this node does not hold or past [`MAX_TICKETS_TRIED`]; 1 to resume; 2 to resume and
/// replace the ticket: under an older key than the sealing one, and always in TLS 1.3, where
/// a ticket is meant for one use).
unsafe extern "C" fn ticket_key_cb(
    ssl: *mut ffi::SSL,
    name: *mut c_uchar,
    iv: *mut c_uchar,
    cctx: *mut ffi::EVP_CIPHER_CTX,
    hctx: *mut ffi::HMAC_CTX,
    enc: c_int,
) -> c_int {
    // SAFETY: OpenSSL calls this with a live connection, a 16-byte name, an IV buffer of
    // EVP_MAX_IV_LENGTH (16) bytes, and contexts to set up (ssl/t1_lib.c, statem_srvr.c).
    unsafe {
        let ctx = ffi::SSL_get_SSL_CTX(ssl);
        let Some(keys) = openssl::ssl::SslContextRef::from_ptr(ctx).ex_data(keys_index()) else {
            return -1;
        };
        let (key, sni, answer) = if enc == 1 {
            let Ok(sni) = negotiated_sni(ssl) else {
                return 0;
            };
            let set = keys.get();
            let key = set.keys[set.sealing()].clone();
            std::ptr::copy_nonoverlapping(key.name.as_ptr(), name, 16);
            if ffi::RAND_bytes(iv, 16) != 1 {
                return -1;
            }
            (key, sni, 1)
        } else {
            let conn = SslRef::from_ptr_mut(ssl);
            let tried = conn.ex_data(tried_index()).copied().unwrap_or(0);
            if tried >= MAX_TICKETS_TRIED {
                return 0;
            }
            conn.set_ex_data(tried_index(), tried + 1);
            let set = keys.get();
            let asked = std::slice::from_raw_parts(name, 16);
            let Some(at) = set.keys.iter().position(|k| k.name == asked) else {
                return 0;
            };
            let Ok(sni) = hello_sni(ssl) else {
                return 0;
            };
            let renew = at > set.sealing() || ffi::SSL_version(ssl) == TLS1_3;
            (set.keys[at].clone(), sni, if renew { 2 } else { 1 })
        };
        let derived = key.derive(sni.as_ref().map(Name::get));
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

/// The shared key set, before sealing: current key first, with the version and time the
/// clear wrapper repeats (a wrapper edited in Redis to force or hold back a rotation then
/// fails to open).
#[derive(Clone, Serialize, Deserialize)]
struct Stored {
    version: u64,
    created_ms: u64,
    keys: Vec<StoredKey>,
}

/// The Redis value: the set's version (raised on every rotation), when its current key was
/// made (Redis's clock), which master key sealed it, and the sealed JSON. Version and time are
/// in the clear so that a set no node can open can still be replaced (`--force`).
#[derive(Serialize, Deserialize)]
struct Sealed {
    version: u64,
    created_ms: u64,
    master_key: u32,
    sealed: String,
}

/// What Redis holds, as read.
struct Read {
    /// The raw value, for the compare-and-set (`None`: no set).
    raw: Option<String>,
    /// Its version (0: none, or unreadable in the clear).
    version: u64,
    /// Its keys, when this node could open them; else why not.
    keys: Result<Vec<TicketKey>, String>,
    /// Its current key's time.
    created_ms: u64,
}

/// The associated data sealed keys are bound to (the sealer's "host").
const SEAL_CONTEXT: &str = "tls session ticket keys";

/// Replaces the stored value `old` (ARGV[1], `""`: none) by `new` (ARGV[2]) and announces it
/// on channel ARGV[3], only if it is still `old`.
const SWAP: &str = "local v = redis.call('GET', KEYS[1]) or '' \
    if v == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) \
    redis.call('PUBLISH', ARGV[3], '1') return 1 end return 0";

/// Redis's clock, in Unix milliseconds: every node and the command line judge rotations by
/// one clock.
async fn redis_now_ms(db: &Db) -> redis::RedisResult<u64> {
    let (s, us): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut db.conn().await?)
        .await?;
    Ok(s * 1000 + us / 1000)
}

/// Reads the stored set. Errors are Redis's only; a set that does not open is a [`Read`]
/// whose `keys` say why (never with key material in it).
async fn read(db: &Db, sealer: &Sealer) -> redis::RedisResult<Read> {
    use redis::AsyncCommands;
    let raw: Option<String> = db.conn().await?.get(db.keys().ticket_keys()).await?;
    let Some(r) = &raw else {
        return Ok(Read {
            raw,
            version: 0,
            keys: Ok(Vec::new()),
            created_ms: 0,
        });
    };
    let Ok(s) = serde_json::from_str::<Sealed>(r) else {
        return Ok(Read {
            raw,
            version: 0,
            keys: Err("the stored ticket keys are damaged".into()),
            created_ms: 0,
        });
    };
    let keys = sealer
        .open(SEAL_CONTEXT, s.master_key, &s.sealed)
        .map_err(|e| format!("the stored ticket keys do not open: {e}"))
        .and_then(|plain| {
            serde_json::from_slice::<Stored>(&plain)
                .ok()
                .filter(|st| st.version == s.version && st.created_ms == s.created_ms)
                .map(|st| {
                    st.keys
                        .iter()
                        .filter_map(StoredKey::key)
                        .collect::<Vec<_>>()
                })
                .filter(|k| !k.is_empty())
                .ok_or_else(|| "the stored ticket keys are damaged".to_string())
        });
    Ok(Read {
        raw,
        version: s.version,
        keys,
        created_ms: s.created_ms,
    })
}

/// Replaces the set read as `old` by one with a new current key and `old`'s current key (if
/// it opened) as the previous one; `None` when another node changed it first.
async fn rotate(
    db: &Db,
    sealer: &Sealer,
    old: &Read,
) -> anyhow::Result<Option<(u64, Vec<TicketKey>)>> {
    let now = redis_now_ms(db).await?;
    let mut keys = vec![TicketKey::random(now)];
    keys.extend(old.keys.as_ref().ok().and_then(|k| k.first().cloned()));
    let version = old.version + 1;
    let plain = Stored {
        version,
        created_ms: now,
        keys: keys.iter().map(StoredKey::of).collect(),
    };
    let (master_key, sealed) = sealer.seal(
        SEAL_CONTEXT,
        &serde_json::to_vec(&plain).expect("the key set serialises"),
    );
    let value = serde_json::to_string(&Sealed {
        version,
        created_ms: now,
        master_key,
        sealed,
    })
    .expect("serialises");
    let swapped: i64 = redis::Script::new(SWAP)
        .key(db.keys().ticket_keys())
        .arg(old.raw.as_deref().unwrap_or(""))
        .arg(value)
        .arg(db.keys().ticket_keys_channel())
        .invoke_async(&mut db.conn().await?)
        .await?;
    if swapped != 1 {
        return Ok(None);
    }
    tracing::info!(version, "session ticket keys rotated");
    crate::metrics::TICKET_ROTATIONS.inc();
    Ok(Some((version, keys)))
}

/// Rotates the fleet's key set now (what `linkedge cert rotate-tickets` does): every node
/// hears of it at once and seals with the new key 2 s later; tickets sealed two rotations ago
/// are refused. A set no node can open (damaged, or sealed with a master key no longer
/// configured) is replaced only with `force`. The new version.
pub async fn rotate_now(db: &Db, sealer: &Sealer, force: bool) -> anyhow::Result<u64> {
    for _ in 0..5 {
        let old = read(db, sealer).await?;
        if let Err(why) = &old.keys
            && !force
        {
            anyhow::bail!("{why}; --force replaces it (every ticket sealed before is refused)");
        }
        if let Some((version, _)) = rotate(db, sealer, &old).await? {
            return Ok(version);
        }
    }
    anyhow::bail!("the ticket keys kept changing under the rotation; try again")
}

/// How often a node reads the stored set besides its change feed, and so how late after its
/// due time a rotation may come: a twentieth of the rotation, between 100 ms and 10 minutes.
pub fn resync_every(rotation: Duration) -> Duration {
    (rotation / 20).clamp(Duration::from_millis(100), Duration::from_secs(600))
}

/// How long after hearing of a new key a node seals with it: 2 s, or a quarter of a shorter
/// rotation.
fn grace(rotation: Duration) -> Duration {
    (rotation / 4).min(Duration::from_secs(2))
}

/// Keeps this node's [`TicketKeys`] to the fleet's set in Redis, and rotates the set when it
/// is due: run it with [`crate::store::follow::Following`] and [`resync_every`]. The set is
/// read at start, on every announcement of a change (from the node that rotated, or `cert
/// rotate-tickets`), and every [`resync_every`], when a due rotation is made. Until it is
/// first read, the node rotates keys of its own on the same schedule ([`OwnRotation`]).
pub struct TicketFollower {
    keys: Arc<TicketKeys>,
    db: Db,
    sealer: Sealer,
    rotation: Duration,
    /// Whether the last read did not open, so it is logged once.
    unreadable: AtomicBool,
}

impl TicketFollower {
    /// Keeps `keys` to the set in `db`, rotated every `rotation`.
    pub fn new(keys: Arc<TicketKeys>, db: Db, sealer: Sealer, rotation: Duration) -> Self {
        keys.grace_ms
            .store(grace(rotation).as_millis() as u64, Relaxed);
        TicketFollower {
            keys,
            db,
            sealer,
            rotation,
            unreadable: false.into(),
        }
    }

    fn install(&self, version: u64, keys: Vec<TicketKey>) {
        if self.keys.put(keys, version, false) {
            crate::metrics::TICKET_KEYS_VERSION.set(version as i64);
        }
    }

    /// Reads the set and installs it; rotates it first when `may_rotate` and it is due (or
    /// there is none). A set this node cannot open is logged once, counted in
    /// `linkedge_tls_ticket_keys_unreadable`, and the current keys kept (no node rotates it
    /// then: `cert rotate-tickets --force` does): only Redis failures are errors.
    async fn sync(&self, may_rotate: bool) -> redis::RedisResult<()> {
        let old = read(&self.db, &self.sealer).await?;
        let keys = match &old.keys {
            Ok(k) => k.clone(),
            Err(why) => {
                if !self.unreadable.swap(true, Relaxed) {
                    tracing::error!(error = %why, "session ticket keys: keeping the current keys");
                }
                crate::metrics::TICKET_KEYS_UNREADABLE.set(1);
                return Ok(());
            }
        };
        self.unreadable.store(false, Relaxed);
        crate::metrics::TICKET_KEYS_UNREADABLE.set(0);
        let due = keys.is_empty()
            || (may_rotate
                && redis_now_ms(&self.db).await?
                    >= old
                        .created_ms
                        .saturating_add(self.rotation.as_millis() as u64));
        if !due {
            self.install(old.version, keys);
            return Ok(());
        }
        if !may_rotate {
            return Ok(());
        }
        match rotate(&self.db, &self.sealer, &old).await {
            Ok(Some((version, keys))) => self.install(version, keys),
            // Another node rotated first: its announcement brings the set.
            Ok(None) => {}
            Err(e) => {
                return Err(e.downcast::<redis::RedisError>().unwrap_or_else(|e| {
                    redis::RedisError::from(std::io::Error::other(e.to_string()))
                }));
            }
        }
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

/// Rotates a node's own keys (those it uses with no `certs` section, or until it first reads
/// the shared set) every rotation: a background service.
pub struct OwnRotation {
    keys: Arc<TicketKeys>,
    rotation: Duration,
}

impl OwnRotation {
    /// Rotates `keys` every `rotation` while they are this node's own.
    pub fn new(keys: Arc<TicketKeys>, rotation: Duration) -> OwnRotation {
        OwnRotation { keys, rotation }
    }
}

#[async_trait]
impl pingora::services::background::BackgroundService for OwnRotation {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.rotation) => {}
                _ = shutdown.changed() => return,
            }
            if self.keys.version() == 0 {
                self.keys.rotate_own();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_per_name_and_per_secret() {
        let a = TicketKey::random(0);
        let b = TicketKey::random(0);
        let n = |s: &'static str| Some(s.as_bytes());
        assert_ne!(a.derive(n("a.example")), a.derive(n("b.example")));
        assert_ne!(a.derive(n("a.example")), b.derive(n("a.example")));
        assert_eq!(a.derive(n("a.example")), a.derive(n("a.example")));
        assert_ne!(
            a.derive(n("")),
            a.derive(None),
            "no SNI is not an empty SNI"
        );
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
