//! Certificates from an ACME CA (RFC 8555) over HTTP-01, for registered, verified domains only.
//!
//! - One account per directory URL, created once and kept in Redis (`acme:account:<url>`).
//! - HTTP-01 key authorizations live in Redis (`acme:http01:<token>`), so whichever node the CA
//!   reaches answers `/.well-known/acme-challenge/<token>`.
//! - A per-domain lock (`acme:lock:<host>`, with expiry) makes a fleet place one order per domain.
//! - The [`Issuer`] background service orders certificates for verified domains, renews at two
//!   thirds of the lifetime, and backs off per domain after failures (exponential, capped),
//!   marking a domain `failed` with the CA's words after `max_failures` attempts in a row.

use crate::config;
use crate::metrics;
use crate::store::Db;
use crate::time::unix_s;
use crate::tls::{CertStore, Info, Sealer};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::stack::Stack;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509ReqBuilder};
use redis::AsyncCommands;
use std::time::Duration;

/// Why an order did not produce a certificate.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// Another node holds the domain's lock.
    #[error("another node is ordering a certificate for {0}")]
    Locked(String),
    /// The CA refused or validation failed; the CA's words.
    #[error("{0}")]
    Ca(String),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Storing the certificate failed.
    #[error("{0}")]
    Store(#[from] crate::tls::CertError),
    /// Ordering now would break the CA's rate limits; not sent.
    #[error("held back to stay inside the CA's limits: {0}")]
    RateLimited(String),
    /// The domain registry could not be read or updated (not Redis itself).
    #[error("domain registry: {0}")]
    Registry(String),
}

impl From<crate::registry::RegistryError> for AcmeError {
    fn from(e: crate::registry::RegistryError) -> Self {
        match e {
            crate::registry::RegistryError::Redis(r) => AcmeError::Redis(r),
            other => AcmeError::Registry(other.to_string()),
        }
    }
}

/// The registered domain a certificate counts against, by the Public Suffix List (compiled in):
/// `link.example.co.uk` counts against `example.co.uk`, not against every customer under
/// `co.uk`. A name that is itself a public suffix counts against itself.
fn registered_domain(host: &str) -> &str {
    psl::domain_str(host).unwrap_or(host)
}

impl From<instant_acme::Error> for AcmeError {
    fn from(e: instant_acme::Error) -> Self {
        AcmeError::Ca(match e {
            instant_acme::Error::Api(p) => p.to_string(),
            other => other.to_string(),
        })
    }
}

/// Orders certificates.
pub struct Acme {
    db: Db,
    cfg: config::Acme,
    store: CertStore,
    account: tokio::sync::Mutex<Option<Account>>,
    node: String,
}

/// A key (EC P-256, or RSA-2048 with `rsa`) and a CSR for `host`, as (PKCS#8 PEM key, DER CSR).
fn key_and_csr(host: &str, rsa: bool) -> Result<(Vec<u8>, Vec<u8>), openssl::error::ErrorStack> {
    let key = if rsa {
        PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?
    } else {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        PKey::from_ec_key(EcKey::generate(&group)?)?
    };
    let mut req = X509ReqBuilder::new()?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", host)?;
    req.set_subject_name(&name.build())?;
    req.set_pubkey(&key)?;
    let mut exts = Stack::new()?;
    exts.push(
        SubjectAlternativeName::new()
            .dns(host)
            .build(&req.x509v3_context(None))?,
    )?;
    req.add_extensions(&exts)?;
    req.sign(&key, MessageDigest::sha256())?;
    Ok((key.private_key_to_pem_pkcs8()?, req.build().to_der()?))
}

impl Acme {
    /// An ACME client keeping its state in `db` and storing certificates there, sealed with
    /// `sealer`. Connects nothing until it is used.
    pub fn new(db: Db, cfg: config::Acme, sealer: Sealer) -> Acme {
        Acme {
            store: CertStore::new(db.clone(), sealer),
            db,
            cfg,
            account: tokio::sync::Mutex::new(None),
            node: format!("{:016x}", rand::random::<u64>()),
        }
    }

    /// The certificate store this client fills.
    pub fn store(&self) -> &CertStore {
        &self.store
    }

    fn account_key(&self) -> String {
        self.db.keys().acme_account(&self.cfg.directory)
    }

    /// Forgets the account (the CA no longer knows it), so the next order creates one.
    async fn forget_account(&self) {
        *self.account.lock().await = None;
        if let Ok(mut conn) = self.db.conn().await {
            let _: redis::RedisResult<()> = conn.del(self.account_key()).await;
        }
    }

    async fn account(&self) -> Result<Account, AcmeError> {
        let mut slot = self.account.lock().await;
        if let Some(a) = &*slot {
            return Ok(a.clone());
        }
        let a = self.load_or_create_account().await?;
        *slot = Some(a.clone());
        Ok(a)
    }

    async fn load_or_create_account(&self) -> Result<Account, AcmeError> {
        {
            {
                let builder = || -> Result<_, AcmeError> {
                    Ok(match &self.cfg.extra_root {
                        Some(p) => Account::builder_with_root(p)?,
                        None => Account::builder()?,
                    })
                };
                let key = self.account_key();
                let stored: Option<String> = self.db.conn().await?.get(&key).await?;
                if let Some(json) = stored {
                    let creds: AccountCredentials = serde_json::from_str(&json).map_err(|e| {
                        AcmeError::Ca(format!("stored ACME account unreadable: {e}"))
                    })?;
                    return Ok(builder()?.from_credentials(creds).await?);
                }
                let contact: Vec<&str> = self.cfg.contact.iter().map(String::as_str).collect();
                let (account, creds) = builder()?
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.cfg.directory.clone(),
                        None,
                    )
                    .await?;
                let json = serde_json::to_string(&creds).expect("credentials serialize");
                // Another node may have created one meanwhile: keep the first, use it.
                let mut conn = self.db.conn().await?;
                let set: bool = conn.set_nx(&key, &json).await?;
                if !set {
                    let json: String = conn.get(&key).await?;
                    let creds: AccountCredentials = serde_json::from_str(&json).map_err(|e| {
                        AcmeError::Ca(format!("stored ACME account unreadable: {e}"))
                    })?;
                    return Ok(builder()?.from_credentials(creds).await?);
                }
                tracing::info!(directory = %self.cfg.directory, "ACME account created");
                Ok(account)
            }
        }
    }

    /// Orders a certificate for `host` over HTTP-01 and stores it. Holds the domain's lock for
    /// the duration, so a fleet places one order per domain. A `renewal` (a certificate for the
    /// same name is stored) is not held back by the per-registered-domain weekly limit, which
    /// the CA does not apply to renewals; it still counts towards it.
    pub async fn issue(&self, host: &str, renewal: bool) -> Result<Info, AcmeError> {
        let lock = self.db.keys().acme_lock(host);
        let mut conn = self.db.conn().await?;
        let got: Option<String> = redis::cmd("SET")
            .arg(&lock)
            .arg(&self.node)
            .arg("NX")
            .arg("EX")
            .arg(self.lock_expiry().as_secs())
            .query_async(&mut conn)
            .await?;
        if got.is_none() {
            return Err(AcmeError::Locked(host.to_string()));
        }
        // The whole order ends before the lock expires, so no other node orders meanwhile
        // (an order waits up to order_timeout for validation and again for the certificate).
        let bound = self.lock_expiry().saturating_sub(Duration::from_secs(15));
        let ordered = tokio::time::timeout(bound, async {
            let mut result = self.order(host, renewal).await;
            if let Err(AcmeError::Ca(why)) = &result
                && why.contains("accountDoesNotExist")
            {
                tracing::warn!(directory = %self.cfg.directory, "the CA no longer knows our account; creating a new one");
                self.forget_account().await;
                result = self.order(host, renewal).await;
            }
            result
        })
        .await;
        let result = ordered.unwrap_or_else(|_| {
            Err(AcmeError::Ca(format!(
                "the order did not complete within {bound:?} (acme.order_timeout)"
            )))
        });
        // Release only our own lock, on a fresh connection: the order took a while.
        if let Ok(mut conn) = self.db.conn().await {
            let _: redis::RedisResult<i64> = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
        )
            .key(&lock)
            .arg(&self.node)
            .invoke_async(&mut conn)
            .await;
        }
        metrics::acme_order(if result.is_ok() { "issued" } else { "failed" });
        result
    }

    /// How long a domain's lock outlives a node that dies holding it: the order's own bound
    /// (`order_timeout`, twice with `rsa`: two orders in a row) and a margin for the requests
    /// around it, so the name is free again about when the order would have ended.
    fn lock_expiry(&self) -> Duration {
        let orders = if self.cfg.rsa { 2 } else { 1 };
        self.cfg.order_timeout * orders + Duration::from_secs(30)
    }

    /// Events in the sliding window `key` of `window_s` seconds, after dropping older ones.
    async fn window_count(&self, key: &str, window_s: i64) -> Result<u64, AcmeError> {
        let mut conn = self.db.conn().await?;
        let _: () = conn.zrembyscore(key, "-inf", unix_s() - window_s).await?;
        Ok(conn.zcard(key).await?)
    }

    async fn window_add(&self, key: &str, window_s: i64) -> Result<(), AcmeError> {
        let mut conn = self.db.conn().await?;
        let member = format!("{}-{:016x}", unix_s(), rand::random::<u64>());
        let _: () = conn.zadd(key, member, unix_s()).await?;
        let _: () = conn.expire(key, window_s).await?;
        Ok(())
    }

    fn limit_keys(&self, host: &str) -> [(String, i64, u32, &'static str); 3] {
        let l = &self.cfg.limits;
        let k = self.db.keys();
        [
            (
                k.acme_limit_orders(&self.cfg.directory),
                3 * 3600,
                l.orders_per_3h,
                "new orders per account in 3 hours",
            ),
            (
                k.acme_limit_failed(host),
                3600,
                l.failed_validations_per_hour,
                "failed validations of this name in an hour",
            ),
            (
                k.acme_limit_certs(registered_domain(host)),
                7 * 86_400,
                l.certs_per_domain_per_week,
                "certificates for this registered domain in a week",
            ),
        ]
    }

    async fn order(&self, host: &str, renewal: bool) -> Result<Info, AcmeError> {
        let [orders, failed, certs] = self.limit_keys(host);
        let checked: &[&(String, i64, u32, &str)] = if renewal {
            &[&orders, &failed]
        } else {
            &[&orders, &failed, &certs]
        };
        for (key, window, limit, what) in checked.iter().copied() {
            if self.window_count(key, *window).await? >= *limit as u64 {
                metrics::acme_order("rate_limited");
                return Err(AcmeError::RateLimited(format!("{limit} {what} reached")));
            }
        }
        let result = self.order_unchecked(host).await;
        match &result {
            Ok(_) => self.window_add(&certs.0, certs.1).await?,
            Err(AcmeError::Ca(_)) => self.window_add(&failed.0, failed.1).await?,
            Err(_) => {}
        }
        result
    }

    async fn order_unchecked(&self, host: &str) -> Result<Info, AcmeError> {
        let info = self.order_one(host, false).await?;
        if self.cfg.rsa {
            self.order_one(host, true).await?;
        }
        Ok(info)
    }

    async fn order_one(&self, host: &str, rsa: bool) -> Result<Info, AcmeError> {
        let account = self.account().await?;
        let [orders, _, _] = self.limit_keys(host);
        self.window_add(&orders.0, orders.1).await?;
        metrics::acme_order("placed");
        let ids = [Identifier::Dns(host.to_string())];
        let mut order = account.new_order(&NewOrder::new(&ids)).await?;
        let mut tokens = Vec::new();
        {
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                let mut authz = authz?;
                if authz.status == AuthorizationStatus::Valid {
                    continue;
                }
                let mut ch = authz
                    .challenge(ChallengeType::Http01)
                    .ok_or_else(|| AcmeError::Ca("the CA offered no HTTP-01 challenge".into()))?;
                let key = self.db.keys().acme_http01(&ch.token);
                let _: () = self
                    .db
                    .conn()
                    .await?
                    .set_ex(&key, ch.key_authorization().as_str(), 3600)
                    .await?;
                tokens.push(key);
                ch.set_ready().await?;
            }
        }
        // A CA often validates within tens of milliseconds: poll early, then back off.
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(25))
            .backoff(1.5)
            .timeout(self.cfg.order_timeout);
        let status = order.poll_ready(&retry).await;
        if let Ok(mut conn) = self.db.conn().await {
            for k in &tokens {
                let _: redis::RedisResult<()> = conn.del(k).await;
            }
        }
        let status = status?;
        if status != OrderStatus::Ready {
            // Say why, in the CA's words.
            let mut why = format!("order {status:?}");
            let mut authzs = order.authorizations();
            while let Some(Ok(a)) = authzs.next().await {
                for c in &a.challenges {
                    if let Some(e) = &c.error {
                        why = e.to_string();
                    }
                }
            }
            return Err(AcmeError::Ca(why));
        }
        let (key_pem, csr) = key_and_csr(host, rsa).map_err(|e| AcmeError::Ca(e.to_string()))?;
        order.finalize_csr(&csr).await?;
        let chain = order.poll_certificate(&retry).await?;
        let info = self.store.put(host, chain.as_bytes(), &key_pem).await?;
        if let Ok(mut conn) = self.db.conn().await {
            let _: redis::RedisResult<()> = conn.del(self.db.keys().acme_ari(host)).await;
        }
        Ok(info)
    }
}

/// A stable fraction in [0, 1) per host, to spread renewals of certificates issued together.
fn jitter(host: &str) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    host.hash(&mut h);
    (h.finish() % 10_000) as f64 / 10_000.0
}

impl Acme {
    /// When to renew: inside the window the CA suggests through ACME Renewal Information
    /// (RFC 9773) where it offers one (asked at most once per the CA's Retry-After, at least an
    /// hour apart), else at two thirds of the lifetime; jittered per host either way.
    pub async fn renew_at(&self, host: &str, info: &Info) -> i64 {
        let life = info.not_after - info.not_before;
        let fallback = info.not_before + life * 2 / 3 - (jitter(host) * life as f64 / 20.0) as i64;
        match self.ari_window(host).await {
            Some((start, end)) if end > start => {
                start + (jitter(host) * (end - start) as f64) as i64
            }
            _ => fallback,
        }
    }

    /// The CA's suggested renewal window for `host`'s stored certificate, cached in Redis.
    async fn ari_window(&self, host: &str) -> Option<(i64, i64)> {
        let key = self.db.keys().acme_ari(host);
        let mut conn = self.db.conn().await.ok()?;
        if let Ok(Some(cached)) = conn.get::<_, Option<String>>(&key).await {
            let (a, b) = cached.split_once(' ')?;
            return match (a.parse().ok()?, b.parse().ok()?) {
                (0, 0) => None,
                w => Some(w),
            };
        }
        let loaded = self.store.load(host).await.ok()??;
        let der = rustls_pki_types::CertificateDer::from(loaded.chain[0].to_der().ok()?);
        let id = instant_acme::CertificateIdentifier::try_from(&der).ok()?;
        let account = self.account().await.ok()?;
        let (window, retry) = match account.renewal_info(&id).await {
            Ok((info, retry)) => (
                Some((
                    info.suggested_window.start.unix_timestamp(),
                    info.suggested_window.end.unix_timestamp(),
                )),
                retry,
            ),
            // No ARI at this CA (or it failed): use the lifetime rule, and ask again later.
            Err(_) => (None, Duration::from_secs(6 * 3600)),
        };
        let (a, b) = window.unwrap_or((0, 0));
        let ttl = retry.as_secs().max(3600);
        if let Ok(mut conn) = self.db.conn().await {
            let _: redis::RedisResult<()> = conn.set_ex(&key, format!("{a} {b}"), ttl).await;
        }
        window
    }
}

pub mod issuer;
pub mod on_demand;

pub use issuer::Issuer;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_domains_follow_the_public_suffix_list() {
        assert_eq!(registered_domain("link.example.com"), "example.com");
        assert_eq!(registered_domain("a.b.example.com"), "example.com");
        assert_eq!(registered_domain("example.com"), "example.com");
        // Two customers under a multi-label suffix get a bucket each.
        assert_eq!(registered_domain("link.shop.co.uk"), "shop.co.uk");
        assert_eq!(registered_domain("link.store.co.uk"), "store.co.uk");
        assert_eq!(registered_domain("t.brand.com.au"), "brand.com.au");
        // Private suffixes too: each github.io site is its own registered domain.
        assert_eq!(
            registered_domain("links.alice.github.io"),
            "alice.github.io"
        );
        assert_eq!(registered_domain("co.uk"), "co.uk");
    }

    #[test]
    fn csr_names_the_host() {
        let (key, der) = key_and_csr("link.example.com", false).unwrap();
        assert!(
            String::from_utf8(key)
                .unwrap()
                .contains("BEGIN PRIVATE KEY")
        );
        let req = openssl::x509::X509Req::from_der(&der).unwrap();
        assert!(req.verify(&req.public_key().unwrap()).unwrap());
        let (_, der) = key_and_csr("link.example.com", true).unwrap();
        let req = openssl::x509::X509Req::from_der(&der).unwrap();
        assert_eq!(req.public_key().unwrap().bits(), 2048);
    }
}
