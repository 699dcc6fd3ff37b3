//! The background issuer: one pass over the registry every `acme.scan_interval`, ordering
//! certificates for verified domains, renewing, and backing off per domain after failures.
//! Domains fronted by the customer's own proxy are skipped: never ordered, never renewed (a
//! certificate imported for one by hand is left to expire), and not counted in the earliest
//! expiry, so they raise no renewal alarm.
//!
//! A retired domain (`domain move`) keeps its certificate renewed while it still resolves to
//! the edge (checked with `verify`'s resolver settings when a renewal is due): its old links
//! still arrive over HTTPS. Once it no longer does, renewal stops quietly: no order is placed
//! (so nothing counts as a failed attempt), the domain's error says so, it leaves the earliest
//! expiry, and `linkedge_retired_renewals_stopped` counts it. If it resolves to the edge again,
//! renewal resumes.

use super::{Acme, AcmeError};
use crate::config;
use crate::dns::Reach;
use crate::metrics;
use crate::registry::{Domain, Registry, State};
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
    /// Where the edge is (`verify.target`, `verify.target_addrs`) and which DNS servers to ask.
    verify: config::Verify,
}

/// What the issuer does with a domain this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renew {
    /// Order (or renew) now.
    Go,
    /// Not due, or a retired domain whose DNS did not answer: nothing now.
    Wait,
    /// A retired domain no longer resolving to the edge: left to expire, without alarm.
    Stopped,
}

/// A retired domain's error once it no longer resolves to the edge.
pub const RENEWAL_STOPPED: &str = "no longer points at the edge; renewal stopped";

impl Issuer {
    /// An issuer for the domains registered in `db` (accepting `regions`), checking that
    /// retired domains still lead to the edge as `verify` describes it.
    pub fn new(
        db: Db,
        regions: Vec<String>,
        cfg: config::Acme,
        sealer: Sealer,
        verify: config::Verify,
    ) -> Issuer {
        Issuer {
            acme: Acme::new(db.clone(), cfg.clone(), sealer),
            registry: Registry::new(db, regions),
            cfg,
            verify,
        }
    }

    /// For a retired domain due for renewal: [`Renew::Go`] while it still resolves to the edge.
    /// Once it does not, records [`RENEWAL_STOPPED`] (once) and says [`Renew::Stopped`]; when DNS
    /// does not answer, [`Renew::Wait`] without recording anything (the next pass asks again).
    async fn retired_renewal(&self, d: &Domain) -> Result<Renew, AcmeError> {
        let resolver = match crate::dns::resolver(&self.verify.nameservers) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(host = %d.host, error = %e, "retired domain: no DNS resolver; renewal waits");
                return Ok(Renew::Wait);
            }
        };
        let v = &self.verify;
        match crate::dns::reach(&resolver, &d.host, v.target.as_deref(), &v.target_addrs).await {
            Reach::Edge => Ok(Renew::Go),
            Reach::Unknown(why) => {
                tracing::warn!(host = %d.host, error = %why, "retired domain: DNS did not answer; renewal waits");
                Ok(Renew::Wait)
            }
            Reach::Elsewhere(why) => {
                if d.error != RENEWAL_STOPPED {
                    tracing::info!(host = %d.host, reason = %why, "retired domain {RENEWAL_STOPPED}");
                    self.registry
                        .set_state(&d.host, State::Retired, RENEWAL_STOPPED)
                        .await?;
                }
                Ok(Renew::Stopped)
            }
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
            State::Retired,
        ] {
            metrics::domains(st.as_str())
                .set(domains.iter().filter(|d| d.state == st).count() as i64);
        }
        let mut stopped = 0;
        for d in domains.iter().filter(|d| !d.fronted) {
            let info = acme.store().info(&d.host).await?;
            let due = match (d.state, &info) {
                (State::Verified, None) => true,
                (State::Verified | State::Issued | State::Retired, Some(i)) => {
                    unix_s() >= acme.renew_at(&d.host, i).await
                }
                _ => false,
            };
            // A retired domain that no longer leads here is left to expire: no alarm for it.
            let renew = match (due, d.state) {
                (true, State::Retired) => self.retired_renewal(d).await?,
                (true, _) => Renew::Go,
                (false, _) => Renew::Wait,
            };
            if renew == Renew::Stopped {
                stopped += 1;
            } else if let Some(i) = &info {
                earliest = Some(earliest.map_or(i.not_after, |e| e.min(i.not_after)));
            }
            if renew != Renew::Go {
                continue;
            }
            self.attempt(acme, registry, &d.host, info.is_some())
                .await?;
        }
        metrics::CERT_EARLIEST_EXPIRY_SECONDS.set(earliest.map_or(0, |e| e - unix_s()));
        metrics::RETIRED_RENEWALS_STOPPED.set(stopped);
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
