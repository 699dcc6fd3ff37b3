//! Backend discovery: a region's configured backends, host names resolved again at every update
//! (Pingora runs it every `resolve_interval`), keeping a name's last addresses when it fails to
//! resolve.

use super::{Dial, backend_label};
use crate::config;
use crate::host::split_host_port;
use crate::metrics;
use async_trait::async_trait;
use pingora::lb::Backend;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

/// One configured backend, as discovery sees it.
struct Entry {
    /// `addr` as configured (`host:port`).
    configured: String,
    /// The address itself when `addr` is an IP address: never resolved.
    literal: Option<SocketAddr>,
    host: String,
    port: u16,
    weight: usize,
    dial: Dial,
}

/// A region's backends from its config, host names resolved again at every `discover` (which
/// Pingora runs every `resolve_interval`). A name that fails to resolve keeps the addresses it
/// had; at start, when there are none yet, it is an error.
pub(super) struct Discovery {
    region: String,
    entries: Vec<Entry>,
    nameservers: Vec<SocketAddr>,
    /// Addresses each entry resolved to last time.
    last: Mutex<Vec<Vec<SocketAddr>>>,
    /// Backends seen so far (by label), to start each one's health gauge once.
    known: Mutex<std::collections::HashSet<String>>,
}

/// Longest wait for one backend name's addresses.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

impl Discovery {
    pub(super) fn new(name: &str, r: &config::RegionConfig) -> anyhow::Result<Discovery> {
        let mut entries = Vec::new();
        for (i, b) in r.backends.iter().enumerate() {
            let at = format!("regions.{name}.backends[{i}].addr");
            let (host, port) = split_host_port(&b.addr)
                .ok_or_else(|| anyhow::anyhow!("{at}: expected host:port, got {:?}", b.addr))?;
            let sni = if b.tls {
                b.sni.clone().unwrap_or_else(|| host.to_string())
            } else {
                String::new()
            };
            entries.push(Entry {
                configured: b.addr.clone(),
                literal: b.addr.parse().ok(),
                host: host.to_string(),
                port,
                weight: b.weight,
                dial: Dial {
                    tls: b.tls,
                    sni,
                    label: b.addr.clone(),
                },
            });
        }
        Ok(Discovery {
            region: name.to_string(),
            last: Mutex::new(vec![Vec::new(); entries.len()]),
            known: Mutex::new(std::collections::HashSet::new()),
            entries,
            nameservers: r.nameservers.clone(),
        })
    }

    async fn resolve(&self, e: &Entry) -> anyhow::Result<Vec<SocketAddr>> {
        let resolver = crate::dns::resolver(&self.nameservers)?;
        let ips = tokio::time::timeout(RESOLVE_TIMEOUT, resolver.lookup_ip(e.host.as_str()))
            .await
            .map_err(|_| anyhow::anyhow!("timed out after {RESOLVE_TIMEOUT:?}"))??;
        let mut addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(ip, e.port)).collect();
        addrs.sort_unstable();
        addrs.dedup();
        if addrs.is_empty() {
            anyhow::bail!("no address");
        }
        Ok(addrs)
    }
}

#[async_trait]
impl ServiceDiscovery for Discovery {
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut set = BTreeSet::new();
        for (i, e) in self.entries.iter().enumerate() {
            let addrs = match e.literal {
                Some(a) => vec![a],
                None => match self.resolve(e).await {
                    Ok(addrs) => {
                        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
                        if !last[i].is_empty() && last[i] != addrs {
                            tracing::info!(region = %self.region, backend = %e.configured, addrs = ?addrs, "backend name resolves to new addresses");
                        }
                        last[i] = addrs.clone();
                        addrs
                    }
                    Err(err) => {
                        let last = self.last.lock().unwrap_or_else(|p| p.into_inner())[i].clone();
                        if last.is_empty() {
                            return Error::e_explain(
                                ErrorType::ConnectNoRoute,
                                format!(
                                    "regions.{}: cannot resolve {}: {err}",
                                    self.region, e.configured
                                ),
                            );
                        }
                        tracing::warn!(region = %self.region, backend = %e.configured, error = %err, "cannot resolve backend name: keeping its previous addresses");
                        last
                    }
                },
            };
            for addr in addrs {
                let mut dial = e.dial.clone();
                if e.literal.is_none() {
                    dial.label = format!("{} ({})", e.configured, addr.ip());
                }
                let mut backend = Backend::new_with_weight(&addr.to_string(), e.weight)?;
                backend.ext.insert(dial);
                set.insert(backend);
            }
        }
        // New backends start in rotation (until a check says otherwise); gone ones lose their
        // gauge, so no stale series claims an address that is no longer used.
        let now: std::collections::HashSet<String> = set.iter().map(backend_label).collect();
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        for gone in known.difference(&now) {
            metrics::backend_gone(&self.region, gone);
        }
        for label in now.difference(&known) {
            metrics::backend_healthy(&self.region, label).set(1);
        }
        *known = now;
        Ok((set, HashMap::new()))
    }
}
