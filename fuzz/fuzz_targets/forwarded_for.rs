//! Fuzzes the client-address choice with arbitrary `X-Forwarded-For` bytes from an arbitrary
//! peer, trusted or not: it never panics, and the address it returns is the peer itself or one
//! named in the header, and from an untrusted peer always the peer.
#![no_main]

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use linkedge::edge::client_ip::{canonical, resolve};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::LazyLock;

static TRUSTED: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    ["10.0.0.0/8", "2001:db8::/32", "127.0.0.1/32"]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect()
});

/// Whether the entry `e` (`ip`, `[v6]:port` or `v4:port`) is the address `ip`.
fn names(e: &str, ip: IpAddr) -> bool {
    let bare = e
        .strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .map(|(a, _)| a)
        .unwrap_or(e);
    let parsed = bare
        .parse::<IpAddr>()
        .ok()
        .or_else(|| e.rsplit_once(':')?.0.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4));
    parsed.is_some_and(|p| canonical(p) == ip)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    // The first byte picks the peer: trusted IPv4, trusted IPv6, IPv4-mapped trusted, untrusted.
    let peer: IpAddr = match first % 4 {
        0 => "10.1.2.3".parse().unwrap(),
        1 => "2001:db8::7".parse().unwrap(),
        2 => IpAddr::V6("10.9.9.9".parse::<std::net::Ipv4Addr>().unwrap().to_ipv6_mapped()),
        _ => IpAddr::V6(Ipv6Addr::new(0x2a00, 0, 0, 0, 0, 0, 0, u16::from(first))),
    };
    let got = resolve(Some(peer), Some(rest), &TRUSTED).expect("a peer always yields a client");
    if first % 4 == 3 {
        assert_eq!(got, canonical(peer), "an untrusted peer's header was believed");
    } else if got != canonical(peer) {
        let text = std::str::from_utf8(rest).expect("only a readable header is believed");
        assert!(
            text.split(',').any(|e| names(e.trim(), got)),
            "{got} is neither the peer nor in {text:?}"
        );
    }
});
