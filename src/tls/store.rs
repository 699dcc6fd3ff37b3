//! The certificate store: per-domain certificates in Redis, the private key sealed
//! ([`super::seal`]); parsing and checking a chain and key for a host.
//!
//! Redis layout, under the configured prefix: `cert:<host>` is a hash with `chain` (PEM, leaf
//! first), `key` (base64 of nonce ‖ ciphertext ‖ tag of the PKCS#8 PEM key, the host as
//! associated data), `key_id` (the master key that sealed it), `not_before` and `not_after`
//! (Unix seconds). A change is announced on the channel `certs` so every node drops its copy.
//! Key names come from [`crate::store::Keys`].

use super::seal::{SealError, Sealer};
use crate::host::normalize_host;
use crate::store::Db;
use openssl::asn1::Asn1Time;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use redis::AsyncCommands;
use std::collections::HashMap;

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
    /// The sealed private key does not open here.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
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

/// The Redis-backed certificate store.
#[derive(Clone)]
pub struct CertStore {
    db: Db,
    sealer: Sealer,
}

impl CertStore {
    /// A store in `db`, sealing keys with `sealer`.
    pub fn new(db: Db, sealer: Sealer) -> CertStore {
        CertStore { db, sealer }
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
