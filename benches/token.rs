//! Token mint and verify cost: `cargo bench --bench token`.

use criterion::{Criterion, criterion_group, criterion_main};
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

criterion_group!(benches, bench);
criterion_main!(benches);
