//! Token mint and verify cost, and minting a whole tracked URL through the library's one mint
//! call (registry mirror look-up, URL check, token, URL text): `cargo bench --bench token`.

use criterion::{Criterion, criterion_group, criterion_main};
use linkedge::mint::{LinkKind, Minter, Request, Unregistered};
use linkedge::registry::{Domain, Mirror, State};
use linkedge::token::{Keyring, Kind, Link, Secret};
use std::hint::black_box;

fn ring() -> Keyring {
    Keyring::new(
        vec![
            (
                1,
                Secret::new(b"bench-key-1-not-a-secret-0123456789".to_vec()).unwrap(),
            ),
            (
                2,
                Secret::new(b"bench-key-2-not-a-secret-0123456789".to_vec()).unwrap(),
            ),
        ],
        2,
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let r = ring();
    let host = "link.example.com";
    // A 60-character destination, as in the size target.
    let url = format!("https://www.example.com/{}", "a".repeat(36));
    let link = Link {
        kind: Kind::Click,
        key_id: 2,
        workspace: 4242,
        message: 123_456_789_012,
        link: 17,
        issued: 1_790_000_000,
        url,
        trap: false,
    };
    let token = r.mint(host, &link).unwrap();
    c.bench_function("token_mint", |b| {
        b.iter(|| r.mint(black_box(host), black_box(&link)))
    });
    c.bench_function("token_verify", |b| {
        b.iter(|| r.verify(black_box(host), black_box(&token)).unwrap())
    });
    c.bench_function("token_verify_wrong_host", |b| {
        b.iter(|| {
            r.verify(black_box("other.example.com"), black_box(&token))
                .unwrap_err()
        })
    });
}

/// [`Minter::mint_into`] with the registry mirror, as `POST /v1/links` calls it per link.
fn bench_minter(c: &mut Criterion) {
    let mirror = Mirror::new(vec!["us".into()]);
    // A registry of 10,000 domains, the one minted on among them.
    for i in 0..10_000u64 {
        let host = if i == 0 {
            "link.example.com".to_string()
        } else {
            format!("link{i}.example.net")
        };
        let d = Domain {
            host: host.clone(),
            workspace: i,
            region: "us".into(),
            state: State::Issued,
            error: String::new(),
            created_ms: 0,
            updated_ms: 0,
            verified_ms: None,
            fronted: false,
            moved_to: None,
        };
        mirror.apply(&host, Some((&d, true)));
    }
    let minter = Minter::new(ring(), "https", Unregistered::Refuse);
    let url = format!("https://www.example.com/{}", "a".repeat(36));
    let req = Request {
        host: "link.example.com".into(),
        url: Some(url.as_str().into()),
        workspace: 4242,
        message: 123_456_789_012,
        link: 17,
        kind: LinkKind::Click,
    };
    let mut out = String::with_capacity(256);
    c.bench_function("mint_link", |b| {
        b.iter(|| {
            out.clear();
            minter
                .mint_into(&mirror, black_box(&req), 1_790_000_000, &mut out)
                .unwrap();
            black_box(out.len())
        })
    });
}

criterion_group!(benches, bench, bench_minter);
criterion_main!(benches);
