//! `BlockList::check` for a click no rule matches, with none and with 100,000 rules loaded
//! (benches/blocks/seed.py's mix): `cargo bench --bench blocks`.

use criterion::{Criterion, criterion_group, criterion_main};
use linkedge::blocks::{Action, BlockList, NewRule, Target};
use std::hint::black_box;

fn rules(n: u64) -> Vec<linkedge::blocks::Rule> {
    (0..n)
        .map(|i| {
            let target = match i % 20 {
                0..8 => Target::Host {
                    host: format!("h{i}.bad{}.example", i % 997),
                },
                8..12 => Target::Subdomains {
                    host: format!("s{i}.bad{}.example", i % 991),
                },
                12..16 => Target::Url {
                    url: format!("https://u{}.bad.example/p/{i}?x=1", i % 5003),
                },
                16..18 => Target::Prefix {
                    prefix: format!("https://p{}.bad.example/share/{i}/", i % 1009),
                },
                18 => Target::Workspace {
                    workspace: 1_000_000 + i,
                },
                _ => Target::Message {
                    workspace: 7,
                    message: 1_000_000 + i,
                },
            };
            NewRule {
                target,
                action: if i % 3 == 0 {
                    Action::Warn
                } else {
                    Action::Block
                },
                reason: "bench".into(),
                added_by: "bench".into(),
                expires_ms: None,
            }
            .checked(format!("b{i:016x}"), 1)
            .unwrap()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let url = "https://shop.example.com/collections/winter-sale/products/merino-wool-scarf?\
               utm_source=newsletter&utm_medium=email&utm_campaign=2026-12-winter";
    let empty = BlockList::new();
    c.bench_function("block_check_no_rules", |b| {
        b.iter(|| empty.check(black_box("127.0.0.1"), 4242, 123_456, black_box(url)))
    });
    let list = BlockList::new();
    list.replace(rules(100_000));
    assert!(list.check("127.0.0.1", 4242, 123_456, url).is_none());
    c.bench_function("block_check_100k_rules_no_match", |b| {
        b.iter(|| list.check(black_box("127.0.0.1"), 4242, 123_456, black_box(url)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
