//! The machine-click verdict on the request path: `cargo bench --bench agent`. The common path
//! is a browser's click from an address outside every scanner network; the others show what a
//! bot's user agent or a full signal set costs.

use criterion::{Criterion, criterion_group, criterion_main};
use linkedge::agent::networks::Networks;
use linkedge::agent::{Detector, Request, Settings, pairs};
use linkedge::token::Kind;
use std::hint::black_box;
use std::sync::{Arc, RwLock};
use std::time::Duration;

const BROWSER: &[u8] = b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const BOT: &[u8] = b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

fn detector() -> Detector {
    detector_with(true)
}

/// The defaults (burst 4 in 5 s, honeypot 10 m, 100,000 pairs), or with both off.
fn detector_with(pairs: bool) -> Detector {
    // 2,000 disjoint /24s, as a realistic gateway list is a few thousand ranges.
    let text: String = (0..2000u32)
        .map(|i| format!("10.{}.{}.0/24 net{}\n", i / 256, i % 256, i % 7))
        .collect();
    let nets = Networks::parse(&text).unwrap();
    Detector::new(
        Settings {
            prefetch_window: Some(Duration::from_secs(60)),
            pairs: pairs::Settings {
                burst: pairs.then_some(pairs::BurstSettings {
                    links: 4,
                    window: Duration::from_secs(5),
                }),
                honeypot_window: pairs.then_some(Duration::from_secs(600)),
                capacity: 100_000,
            },
        },
        Some(Arc::new(RwLock::new(nets))),
    )
}

fn bench(c: &mut Criterion) {
    let d = detector();
    let mut n = 0u64;
    let mut req = |ua: &'static [u8]| {
        n += 1;
        Request {
            head: false,
            ua,
            // Many clients and messages, as in production: the burst table sees new keys.
            ip: Some(std::net::IpAddr::from(
                (n as u32 | 0xc000_0000).to_be_bytes(),
            )),
            kind: Kind::Click,
            workspace: 7,
            message: n / 3,
            link: n % 5,
            trap: false,
            issued_s: 1_790_000_000,
            now_ms: 1_795_000_000_000,
        }
    };
    c.bench_function("verdict: browser click (common path)", |b| {
        b.iter(|| black_box(d.judge(black_box(&req(BROWSER)))))
    });
    c.bench_function("verdict: crawler user agent", |b| {
        b.iter(|| black_box(d.judge(black_box(&req(BOT)))))
    });
    // 20,000 distinct browser user agents: each thread remembers 1,024, so nearly every one is
    // matched against the list again (the worst case; production repeats a few hundred).
    let many: Vec<Vec<u8>> = (0..20_000)
        .map(|i| format!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.{i}.0 Safari/537.36").into_bytes())
        .collect();
    let mut i = 0usize;
    c.bench_function("verdict: browser click, user agent not remembered", |b| {
        b.iter(|| {
            i = (i + 1) % many.len();
            let ua: &[u8] = &many[i];
            let r = Request { ua, ..req(BROWSER) };
            black_box(d.judge(black_box(&r)))
        })
    });
    let without = detector_with(false);
    c.bench_function("verdict: browser click, burst and honeypot off", |b| {
        b.iter(|| black_box(without.judge(black_box(&req(BROWSER)))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
