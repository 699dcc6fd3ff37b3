//! Fuzzes the tracked-link decoder with arbitrary path text and arbitrary Hosts: it must refuse
//! cleanly and never panic, and anything it accepts must re-mint to the same token.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkedge::host::normalize_host;
use linkedge::token::{Keyring, Secret};
use std::sync::LazyLock;

static RING: LazyLock<Keyring> = LazyLock::new(|| {
    Keyring::new(
        vec![
            (1, Secret::new(b"fuzz-key-1-not-a-secret-0123456789".to_vec()).unwrap()),
            (2, Secret::new(b"fuzz-key-2-not-a-secret-0123456789".to_vec()).unwrap()),
        ],
        2,
    )
    .unwrap()
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (host, token) = text.split_once('/').unwrap_or(("link.example.com", text));
    let _ = normalize_host(host);
    let _ = RING.inspect(token);
    if let Ok(link) = RING.verify(host, token) {
        // Only reachable with a forged MAC; if it ever happens, it must at least be consistent.
        assert!(link.kind == linkedge::token::Kind::Open || linkedge::token::valid_destination(&link.url));
    }
});
