//! Fuzzes both host-name normalisers with arbitrary text (a `Host` header, an SNI name, a domain
//! typed by a customer): they never panic, what they accept is lowercase, bounded and stable
//! (normalising it again changes nothing), and a registry domain is also a valid Host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkedge::host::{normalize_domain, normalize_host, split_host_port};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(h) = normalize_host(text) {
        assert!(!h.is_empty() && h.len() <= 253, "{h:?}");
        assert_eq!(h, h.to_ascii_lowercase());
        assert_eq!(normalize_host(&h).as_deref(), Some(h.as_str()), "not stable: {text:?}");
    }
    if let Ok(d) = normalize_domain(text) {
        assert!(d.len() <= 253 && d.is_ascii(), "{d:?}");
        assert_eq!(normalize_domain(&d).as_deref(), Ok(d.as_str()), "not stable: {text:?}");
        assert_eq!(normalize_host(&d).as_deref(), Some(d.as_str()), "{d:?} is no Host");
    }
    if let Some((h, port)) = split_host_port(text) {
        assert!(!h.is_empty() && port > 0);
    }
});
