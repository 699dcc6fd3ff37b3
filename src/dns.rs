//! The DNS resolver shared by backend discovery ([`crate::upstream`]) and domain verification
//! ([`crate::control::verify`]).

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use std::net::SocketAddr;

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
