//! Who the client is: the TCP peer, unless the peer is a trusted proxy that says otherwise in
//! `X-Forwarded-For`.

use ipnet::IpNet;
use std::net::IpAddr;

/// The client address for a request from `peer` carrying `xff` (the raw `X-Forwarded-For`).
///
/// `X-Forwarded-For` is believed only when the peer is in `trusted`; then the chain is read from
/// the right, skipping trusted proxies, and the first address not in `trusted` is the client (an
/// attacker can prepend anything, but cannot forge what the trusted proxies appended). Garbage in
/// the header stops the walk at the last address that could be read.
pub fn resolve(peer: Option<IpAddr>, xff: Option<&[u8]>, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer.map(canonical);
    let is_trusted = |ip: &IpAddr| is_trusted(*ip, trusted);
    let (Some(p), Some(xff)) = (peer, xff) else {
        return peer;
    };
    if !is_trusted(&p) {
        return Some(p);
    }
    let Ok(xff) = std::str::from_utf8(xff) else {
        return Some(p);
    };
    let mut client = p;
    for part in xff.rsplit(',') {
        let Some(ip) = parse_entry(part.trim()) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(client)
}

/// Whether `ip` is in `trusted` (an IPv4-mapped IPv6 address, as a dual-stack listener sees an
/// IPv4 peer, counts as the IPv4 address). The one trusted-proxy check: the click path and the
/// proxy path must agree on who is trusted.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|n| n.contains(&ip))
}

/// An IPv4-mapped IPv6 address as plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: an address, optionally `[v6]:port` or `v4:port`.
fn parse_entry(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok().map(canonical);
    }
    s.rsplit_once(':')?
        .0
        .parse::<std::net::Ipv4Addr>()
        .ok()
        .map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let t: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            resolve(Some(ip("203.0.113.9")), Some(b"1.2.3.4"), &t),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn trusted_chain_read_from_the_right() {
        let t: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let got = resolve(
            Some(ip("10.0.0.1")),
            Some(b"6.6.6.6, 198.51.100.7, 10.1.1.1"),
            &t,
        );
        assert_eq!(got, Some(ip("198.51.100.7")));
        let got = resolve(Some(ip("10.0.0.1")), Some(b"[2001:db8::1]:443"), &t);
        assert_eq!(got, Some(ip("2001:db8::1")));
        let got = resolve(Some(ip("10.0.0.1")), Some(b"junk, 198.51.100.7"), &t);
        assert_eq!(got, Some(ip("198.51.100.7")));
        let got = resolve(Some(ip("::ffff:10.0.0.1")), Some(b"192.0.2.5:1234"), &t);
        assert_eq!(got, Some(ip("192.0.2.5")));
    }

    #[test]
    fn a_mapped_ipv4_peer_is_trusted_like_its_ipv4() {
        let t: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(is_trusted(ip("::ffff:10.0.0.1"), &t));
        assert!(is_trusted(ip("10.0.0.1"), &t));
        assert!(!is_trusted(ip("::ffff:11.0.0.1"), &t));
        assert_eq!(canonical(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }
}
