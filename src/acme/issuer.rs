//! The background issuer: one pass over the registry every `acme.scan_interval`, ordering
//! certificates for verified domains, renewing, and backing off per domain after failures.
//! Domains fronted by the customer's own proxy are skipped: never ordered, never renewed (a
//! certificate imported for one by hand is left to expire), and not counted in the earliest
//! expiry, so they raise no renewal alarm.

use super::{Acme, AcmeError};
use crate::config;
use crate::metrics;
use crate::registry::{Registry, State};
use crate::store::Db;
use crate::time::unix_s;
use crate::tls::Sealer;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

/// A domain's failure record, kept in Redis so every node backs off alike.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Backoff {
    failures: u32,
    next_s: i64,
}

impl Backoff {
    /// True while no attempt may be made.
    pub(super) fn waiting(&self) -> bool {
        self.next_s > unix_s()
    }
}

impl Acme {
    /// `host`'s failure record (none yet: no failures). A damaged record counts as none.
    pub(super) async fn backoff(&self, host: &str) -> Result<Backoff, AcmeError> {
        let raw: Option<String> = self
            .db
            .conn()
            .await?
            .hget(self.db.keys().acme_backoff(), host)
            .await?;
        Ok(raw
            .and_then(|r| serde_json::from_str(&r).ok())
            .unwrap_or_default())
    }

    /// Records `host`'s failure record.
    async fn set_backoff(&self, host: &str, b: &Backoff) -> Result<(), AcmeError> {
        let json = serde_json::to_string(b).expect("a backoff record serializes");
        let _: () = self
            .db
            .conn()
            .await?
            .hset(self.db.keys().acme_backoff(), host, json)
            .await?;
        Ok(())
    }

    /// Forgets `host`'s failures (it succeeded).
    async fn clear_backoff(&self, host: &str) -> Result<(), AcmeError> {
        let _: () = self
            .db
            .conn()
            .await?
            .hdel(self.db.keys().acme_backoff(), host)
            .await?;
        Ok(())
    }
}

/// The background issuer: orders for verified domains, renews, backs off.
pub struct Issuer {
    acme: Acme,
    registry: Registry,
    cfg: config::Acme,
}

impl Issuer {
    /// An issuer for the domains registered in `db` (accepting `regions`).
    pub fn new(db: Db, regions: Vec<String>, cfg: config::Acme, sealer: Sealer) -> Issuer {
        Issuer {
            acme: Acme::new(db.clone(), cfg.clone(), sealer),
            registry: Registry::new(db, regions),
            cfg,
        }
    }

    /// One pass over the registry.
    pub async fn scan(&self) -> Result<(), AcmeError> {
        let (acme, registry) = (&self.acme, &self.registry);
        let domains = registry.list().await?;
        let mut earliest: Option<i64> = None;
        for st in [
            State::Pending,
            State::Verified,
            State::Issued,
            State::Failed,
        ] {
            metrics::domains(st.as_str())
                .set(domains.iter().filter(|d| d.state == st).count() as i64);
        }
        for d in domains.iter().filter(|d| !d.fronted) {
            let info = acme.store().info(&d.host).await?;
            if let Some(i) = &info {
                earliest = Some(earliest.map_or(i.not_after, |e| e.min(i.not_after)));
            }
            let due = match (d.state, &info) {
                (State::Verified, None) => true,
                (State::Verified | State::Issued, Some(i)) => {
                    unix_s() >= acme.renew_at(&d.host, i).await
                }
                _ => false,
            };
            if !due {
                continue;
            }
            self.attempt(acme, registry, &d.host, info.is_some())
                .await?;
        }
        metrics::CERT_EARLIEST_EXPIRY_SECONDS.set(earliest.map_or(0, |e| e - unix_s()));
        Ok(())
    }

    async fn attempt(
        &self,
        acme: &Acme,
        registry: &Registry,
        host: &str,
        renewal: bool,
    ) -> Result<(), AcmeError> {
        let mut b = acme.backoff(host).await?;
        if b.waiting() {
            return Ok(());
        }
        let kind = if renewal { "renewal" } else { "issuance" };
        match acme.issue(host, renewal).await {
            Ok(info) => {
                tracing::info!(host = %host, not_after = info.not_after, "{kind}: certificate stored");
                acme.clear_backoff(host).await?;
                metrics::acme_attempt(kind, "ok");
                registry.set_state(host, State::Issued, "").await?;
            }
            Err(AcmeError::Locked(_)) => {}
            // linkedge's own state failed, not the CA or the domain: no failure is counted (a
            // Redis outage must never mark domains failed); the next pass tries again.
            Err(
                e @ (AcmeError::Redis(_)
                | AcmeError::Registry(_)
                | AcmeError::Store(crate::tls::CertError::Redis(_))),
            ) => return Err(e),
            Err(AcmeError::RateLimited(why)) => {
                // Not the domain's fault: try again later without counting a failure.
                b.next_s = unix_s() + self.cfg.backoff_base.as_secs() as i64;
                tracing::warn!(host = %host, reason = %why, "{kind} held back by rate limits");
                acme.set_backoff(host, &b).await?;
                let state = if renewal {
                    State::Issued
                } else {
                    State::Verified
                };
                registry
                    .set_state(host, state, &AcmeError::RateLimited(why).to_string())
                    .await?;
            }
            Err(e) => {
                b.failures += 1;
                let wait = self
                    .cfg
                    .backoff_base
                    .saturating_mul(1 << b.failures.min(16))
                    .min(self.cfg.backoff_max);
                b.next_s = unix_s() + wait.as_secs() as i64;
                tracing::warn!(host = %host, error = %e, failures = b.failures, retry_in_s = wait.as_secs(), "{kind} failed");
                metrics::acme_attempt(kind, "failed");
                acme.set_backoff(host, &b).await?;
                // A renewal failure keeps the old certificate serving; a domain that keeps failing
                // its first issuance is marked failed with the CA's words.
                let state = if !renewal && b.failures >= self.cfg.max_failures {
                    State::Failed
                } else if renewal {
                    State::Issued
                } else {
                    State::Verified
                };
                registry.set_state(host, state, &e.to_string()).await?;
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Issuer {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        loop {
            if let Err(e) = self.scan().await {
                tracing::warn!(error = %e, "certificate issuer pass failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.scan_interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
