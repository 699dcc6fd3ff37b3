//! The DNS resolver shared by backend discovery ([`crate::upstream`]), domain verification
//! ([`crate::control::verify`]) and the certificate issuer's check that a retired domain still
//! points at the edge ([`reach`]).

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use std::net::{IpAddr, SocketAddr};

/// A DNS resolver asking `nameservers` (`ip:port`, over UDP then TCP), or the system's
/// resolv.conf when there are none. Build it on the runtime that will use it.
pub fn resolver(nameservers: &[SocketAddr]) -> anyhow::Result<TokioResolver> {
    if nameservers.is_empty() {
        return Ok(TokioResolver::builder_tokio()?.build()?);
    }
    let servers = nameservers
        .iter()
        .map(|ns| {
            let mut udp = ConnectionConfig::udp();
            udp.port = ns.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = ns.port();
            NameServerConfig::new(ns.ip(), true, vec![udp, tcp])
        })
        .collect();
    Ok(TokioResolver::builder_with_config(
        ResolverConfig::from_parts(None, vec![], servers),
        TokioRuntimeProvider::default(),
    )
    .build()?)
}

/// Where a name leads, as [`reach`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// To the edge (or the edge's name is not configured, so it cannot be told otherwise).
    Edge,
    /// Elsewhere, or nowhere: says where.
    Elsewhere(String),
    /// The resolver did not answer: nothing can be decided.
    Unknown(String),
}

/// Whether `host` leads to the edge: a CNAME to `target`, or an address among `target_addrs`
/// (or, without those, among `target`'s own addresses). With neither configured the answer is
/// [`Reach::Edge`]: nothing says otherwise.
pub async fn reach(
    resolver: &TokioResolver,
    host: &str,
    target: Option<&str>,
    target_addrs: &[IpAddr],
) -> Reach {
    let target = target.map(|t| t.trim_end_matches('.').to_ascii_lowercase());
    if target.is_none() && target_addrs.is_empty() {
        return Reach::Edge;
    }
    let fqdn = format!("{host}.");
    if let Some(t) = &target
        && let Ok(l) = resolver.lookup(fqdn.as_str(), RecordType::CNAME).await
        && l.answers().iter().any(|r| match &r.data {
            RData::CNAME(c) => c.0.to_ascii().trim_end_matches('.').eq_ignore_ascii_case(t),
            _ => false,
        })
    {
        return Reach::Edge;
    }
    let addrs: Vec<IpAddr> = match resolver.lookup_ip(fqdn.as_str()).await {
        Ok(l) => l.iter().collect(),
        Err(e) if e.is_no_records_found() => {
            return Reach::Elsewhere(format!("{host} does not resolve"));
        }
        Err(e) => return Reach::Unknown(e.to_string()),
    };
    let edge: Vec<IpAddr> = match (&target, target_addrs.is_empty()) {
        (Some(t), true) => match resolver.lookup_ip(format!("{t}.").as_str()).await {
            Ok(l) => l.iter().collect(),
            Err(e) => return Reach::Unknown(format!("{t}: {e}")),
        },
        _ => target_addrs.to_vec(),
    };
    if addrs.iter().any(|a| edge.contains(a)) {
        return Reach::Edge;
    }
    let shown: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
    Reach::Elsewhere(format!("{host} resolves to {}", shown.join(", ")))
}
