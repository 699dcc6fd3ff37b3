//! Active health checks of a region's backends: GET the configured path with each backend's own
//! TLS settings, expecting the configured status and (exact) body; a backend's health gauge
//! follows each change.

use super::{Dial, backend_label};
use crate::config;
use crate::host::split_host_port;
use crate::metrics;
use async_trait::async_trait;
use pingora::lb::Backend;
use pingora::lb::health_check::HealthCheck;
use pingora::prelude::*;
use pingora::protocols::tls::CaType;
use pingora::tls::x509::X509;
use std::sync::Arc;
use std::time::Duration;

/// The active check of a region's backends: GET the configured path with each backend's own
/// TLS settings, and expect the configured status and (exact) body.
pub(super) struct RegionCheck {
    ca: Option<Arc<CaType>>,
    req: RequestHeader,
    connector: pingora::connectors::http::Connector,
    timeout: Duration,
    expect_status: u16,
    expect_body: Option<Vec<u8>>,
    successes: usize,
    failures: usize,
    region: String,
}

/// Longest health-check body read.
const MAX_CHECK_BODY: usize = 64 << 10;

#[async_trait]
impl HealthCheck for RegionCheck {
    async fn check(&self, target: &Backend) -> Result<()> {
        let addr = target
            .addr
            .as_inet()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "backend without address"))?;
        let dial = target
            .ext
            .get::<Dial>()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "backend without dial"))?;
        let mut peer = HttpPeer::new(*addr, dial.tls, dial.sni.clone());
        peer.options.connection_timeout = Some(self.timeout);
        peer.options.total_connection_timeout = Some(self.timeout);
        peer.options.ca = self.ca.clone();
        let (mut session, _) = self.connector.get_http_session(&peer).await?;
        session.set_write_timeout(Some(self.timeout));
        session.set_read_timeout(Some(self.timeout));
        session
            .write_request_header(Box::new(self.req.clone()))
            .await?;
        session.finish_request_body().await?;
        session.read_response_header().await?;
        let status = session.response_header().map_or(0, |h| h.status.as_u16());
        if status != self.expect_status {
            return Error::e_explain(
                ErrorType::CustomCode("unexpected health check status", status),
                format!("expected {}", self.expect_status),
            );
        }
        let mut body = Vec::new();
        while let Some(chunk) = session.read_response_body().await? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_CHECK_BODY {
                return Error::e_explain(
                    ErrorType::InvalidHTTPHeader,
                    "health check body too long",
                );
            }
        }
        if let Some(want) = &self.expect_body
            && &body != want
        {
            return Error::e_explain(
                ErrorType::CustomCode("unexpected health check body", status),
                "body differs from health_check.expect_body",
            );
        }
        Ok(())
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        let label = backend_label(target);
        if healthy {
            tracing::info!(region = %self.region, backend = %label, "backend healthy: back in rotation");
        } else {
            tracing::warn!(region = %self.region, backend = %label, "backend unhealthy: out of rotation");
        }
        metrics::backend_healthy(&self.region, &label).set(healthy as i64);
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.successes
        } else {
            self.failures
        }
    }
}

pub(super) fn load_ca(path: &std::path::Path, region: &str) -> anyhow::Result<Arc<CaType>> {
    let pem = std::fs::read(path).map_err(|e| {
        anyhow::anyhow!(
            "regions.{region}.ca_file: cannot read {}: {e}",
            path.display()
        )
    })?;
    let certs = X509::stack_from_pem(&pem)
        .map_err(|e| anyhow::anyhow!("regions.{region}.ca_file: not PEM certificates: {e}"))?;
    Ok(Arc::new(certs.into_boxed_slice()))
}

pub(super) fn health_check(
    name: &str,
    r: &config::RegionConfig,
    ca: &Option<Arc<CaType>>,
) -> anyhow::Result<RegionCheck> {
    let hc = &r.health_check;
    let mut req = RequestHeader::build("GET", hc.path.as_bytes(), None)
        .map_err(|e| anyhow::anyhow!("regions.{name}.health_check.path: {e}"))?;
    // The first backend's SNI, else the host part of its address (a name or an IP).
    let host = r
        .backends
        .first()
        .map(|b| match &b.sni {
            Some(sni) if b.tls => sni.clone(),
            _ => split_host_port(&b.addr).map_or("", |(h, _)| h).to_string(),
        })
        .unwrap_or_default();
    req.insert_header("Host", host)?;
    req.insert_header("User-Agent", "linkedge-health-check")?;
    Ok(RegionCheck {
        ca: ca.clone(),
        req,
        connector: pingora::connectors::http::Connector::new(None),
        timeout: hc.timeout,
        expect_status: hc.expect_status,
        expect_body: hc.expect_body.clone().map(String::into_bytes),
        successes: hc.successes,
        failures: hc.failures,
        region: name.to_string(),
    })
}
