//! On-demand issuance: a certificate ordered during the first handshake of a registered,
//! verified domain that has none yet (never for one fronted by the customer's own proxy). The
//! ACME client implements the certificate selector's [`OnDemand`] trait, so the TLS layer does
//! not depend on ACME.

use super::{Acme, AcmeError};
use crate::metrics;
use crate::registry::{Registry, State};
use crate::tls::{Loaded, OnDemand};
use async_trait::async_trait;
use std::time::Duration;

#[async_trait]
impl OnDemand for Acme {
    /// Issues only for a registered domain in state `verified`, not fronted by the customer's
    /// own proxy, and not backing off. Waits for another node's order when that node holds the
    /// lock (up to `order_timeout`). Returns the new certificate, opened. Runs in the
    /// selector's background task, not in the handshake, so it is never dropped halfway and
    /// the lock is always released.
    async fn issue(&self, host: &str) -> Option<Loaded> {
        let registry = Registry::new(self.db.clone(), Vec::new());
        let d = registry.get(host).await.ok()??;
        if d.state != State::Verified || d.fronted {
            return None;
        }
        if self.backoff(host).await.ok()?.waiting() {
            return None;
        }
        match Acme::issue(self, host, false).await {
            Ok(_) => {
                metrics::acme_attempt("on_demand", "ok");
                let _ = registry.set_state(host, State::Issued, "").await;
            }
            Err(AcmeError::Locked(_)) => {
                // Another node is ordering: wait for its certificate.
                let deadline = tokio::time::Instant::now() + self.cfg.order_timeout;
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let Ok(Some(l)) = self.store().load(host).await {
                        return Some(l);
                    }
                }
                return None;
            }
            Err(e) => {
                metrics::acme_attempt("on_demand", "failed");
                tracing::warn!(host = %host, error = %e, "on-demand issuance failed; the background issuer retries");
                return None;
            }
        }
        self.store().load(host).await.ok().flatten()
    }
}
