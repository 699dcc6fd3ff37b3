//! No click lost: Redis killed under load, and linkedge restarted with events in its spool.

mod common;

use common::*;
use reqwest::StatusCode;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Sends one click per link id in `ids`, `conc` at a time; returns the link ids answered 302.
async fn burst(le: &Linkedge, ids: std::ops::Range<u64>, conc: usize) -> BTreeSet<u64> {
    let client = client();
    let base = le.http_url("/c/");
    let ids: Arc<Vec<u64>> = Arc::new(ids.collect());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (client, base, ids, next) = (client.clone(), base.clone(), ids.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&id) = ids.get(i) else { break };
                let t = click(LOCAL, "https://example.com/burst", id);
                let r = client.get(format!("{base}{t}")).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::FOUND, "link {id}");
                ok.push(id);
            }
            ok
        }));
    }
    let mut served = BTreeSet::new();
    for t in tasks {
        served.extend(t.await.unwrap());
    }
    served
}

/// Asserts the stream holds exactly one entry per served link id (and no duplicate event id).
fn assert_exactly_once(redis: &Redis, le: &Linkedge, served: &BTreeSet<u64>) {
    let n = served.len();
    let done = eventually(Duration::from_secs(30), || redis.xlen(STREAM) >= n);
    let entries = redis.entries(STREAM);
    assert!(
        done,
        "stream holds {} of {n} events\n{}",
        entries.len(),
        le.log()
    );
    // Give a late duplicate a moment to show up.
    std::thread::sleep(Duration::from_millis(300));
    let entries = redis.entries(STREAM);
    let ids: HashSet<&str> = entries.iter().map(|e| e["id"].as_str()).collect();
    assert_eq!(
        ids.len(),
        entries.len(),
        "duplicate event ids in the stream"
    );
    let links: BTreeSet<u64> = entries.iter().map(|e| e["link"].parse().unwrap()).collect();
    assert_eq!(entries.len(), n, "one entry per request served");
    assert_eq!(&links, served);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_mid_burst_loses_no_click() {
    let mut redis = Redis::start();
    let le = Linkedge::start(&Options::new(redis.url()));

    let mut served = burst(&le, 0..400, 8).await;
    redis.kill();
    let started = std::time::Instant::now();
    served.extend(burst(&le, 400..1200, 8).await);
    // Redirects keep coming while Redis is gone (the timeout is 500 ms; none waited on it).
    let down_for = started.elapsed();
    redis.restart();
    served.extend(burst(&le, 1200..1500, 8).await);
    assert_eq!(served.len(), 1500);
    assert_exactly_once(&redis, &le, &served);
    assert!(le.metric("linkedge_events_total{outcome=\"spooled\",sink=\"default\"}") > 0.0);
    assert!(le.metric("linkedge_events_total{outcome=\"replayed\",sink=\"default\"}") > 0.0);
    assert_eq!(
        le.metric("linkedge_events_dropped_total{reason=\"spool_full\",sink=\"default\"}"),
        0.0
    );
    eprintln!("800 redirects with Redis down took {down_for:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn spool_survives_a_linkedge_restart() {
    let mut redis = Redis::start();
    let mut le = Linkedge::start(&Options::new(redis.url()));
    redis.kill();
    let served = burst(&le, 0..500, 4).await;
    // SIGTERM: the queue goes to the spool, nothing is lost.
    assert!(le.stop(), "linkedge exited with an error:\n{}", le.log());
    assert!(
        spooled_segments(&le.spool_dir) > 0,
        "nothing in the spool after shutdown"
    );

    redis.restart();
    assert_eq!(
        redis.xlen(STREAM),
        0,
        "nothing reached Redis before the restart"
    );
    le.restart();
    assert_exactly_once(&redis, &le, &served);
    assert!(
        eventually(Duration::from_secs(10), || spooled_segments(&le.spool_dir)
            == 0),
        "spool not emptied after replay"
    );
}

/// A zero-downtime upgrade while Redis is down: the old process spools what it could not write
/// and exits after the new one has started; the new one adopts those events and writes each
/// exactly once, although it never spooled anything itself.
#[tokio::test(flavor = "multi_thread")]
async fn upgrade_hands_spooled_events_to_the_new_process() {
    let mut redis = Redis::start();
    let mut le = Linkedge::start(&Options::new(redis.url()));
    le.begin_upgrade();
    // The old process still serves; Redis goes away, so its events go to its spool.
    redis.kill();
    let mut served = burst(&le, 0..400, 4).await;
    le.finish_upgrade();
    redis.restart();
    served.extend(burst(&le, 400..800, 4).await);
    assert_eq!(served.len(), 800);
    assert_exactly_once(&redis, &le, &served);
    assert!(
        eventually(Duration::from_secs(10), || spooled_segments(&le.spool_dir)
            == 0),
        "spool not emptied after replay:\n{}",
        le.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn full_spool_drops_are_counted_not_silent() {
    let mut redis = Redis::start();
    let mut opts = Options::new(redis.url());
    opts.spool_max = "1KiB".into();
    let le = Linkedge::start(&opts);
    redis.kill();
    let served = burst(&le, 0..200, 4).await;
    assert_eq!(served.len(), 200, "redirects continue with the spool full");
    let accounted = || {
        let spooled = le.metric("linkedge_events_total{outcome=\"spooled\",sink=\"default\"}");
        let dropped =
            le.metric("linkedge_events_dropped_total{reason=\"spool_full\",sink=\"default\"}");
        let queued = le.metric("linkedge_event_queue_depth{sink=\"default\"}");
        (spooled, dropped, queued)
    };
    let settled = eventually(Duration::from_secs(10), || {
        let (s, d, q) = accounted();
        d > 0.0 && s + d + q == 200.0
    });
    assert!(
        settled,
        "every event written, spooled or counted dropped: {:?}",
        accounted()
    );
    // Said loudly: one ERROR line at the first drop (at most one a minute after it), and the
    // rest at shutdown; the counts in the log add up to the metric.
    let dropped = accounted().1;
    let mut le = le;
    assert!(le.stop());
    let log = le.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("spool full"))
        .collect();
    assert!(!lines.is_empty() && lines.len() <= 2, "{lines:#?}");
    assert!(lines[0].contains("are being dropped"), "{}", lines[0]);
    let logged: f64 = lines
        .iter()
        .filter_map(|l| {
            let rest = l.split("dropped=").nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<f64>()
                .ok()
        })
        .sum();
    assert_eq!(logged, dropped, "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_redis_neither_slows_redirects_nor_duplicates_events() {
    let redis = Redis::start();
    let le = Linkedge::start(&Options::new(redis.url()));
    let mut served = burst(&le, 0..100, 4).await;
    // Redis stops executing writes for 3 s: batches time out (500 ms) after being sent, so they
    // may or may not land; replay must not write them twice.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("WRITE")
        .query(&mut redis.conn())
        .unwrap();
    let started = std::time::Instant::now();
    served.extend(burst(&le, 100..600, 4).await);
    let slow_for = started.elapsed();
    assert!(
        slow_for < Duration::from_secs(3),
        "500 redirects took {slow_for:?} while Redis was paused"
    );
    assert_exactly_once(&redis, &le, &served);
}

/// What one spooled click costs on disk, from real requests while Redis is down: the figure
/// behind `events.spool.max_bytes` (2 GiB must hold an hour at 10,000 clicks/s: 36,000,000
/// events, so at most 59 bytes each). Then every spooled click reaches the stream once.
#[tokio::test(flavor = "multi_thread")]
async fn spooled_clicks_are_compact_and_all_replayed() {
    let mut redis = Redis::start();
    let le = Linkedge::start(&Options::new(redis.url()));
    redis.kill();
    let n = 4000u64;
    let uas: Vec<String> = (0..40)
        .map(|i| format!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{}.0.0.0 Safari/537.36", 100 + i))
        .collect();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, base, uas, next) = (client(), le.http_url("/c/"), uas.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if id >= n {
                    break;
                }
                let t = click(
                    LOCAL,
                    &format!("https://shop.example.com/p/{}?utm_source=email", id % 25),
                    id,
                );
                let r = c
                    .get(format!("{base}{t}"))
                    .header("User-Agent", &uas[(id * 7 % 40) as usize])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::FOUND);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(10), || le.metric(
            "linkedge_events_total{outcome=\"spooled\",sink=\"default\"}"
        ) == n as f64),
        "not all spooled:\n{}",
        le.log()
    );
    let bytes = le.metric("linkedge_event_spool_bytes{sink=\"default\"}");
    let per_event = bytes / n as f64;
    eprintln!("spooled {n} clicks in {bytes} bytes: {per_event:.1} bytes per event");
    assert!(per_event <= 59.0, "{per_event:.1} bytes per spooled event");
    redis.restart();
    assert!(
        eventually(Duration::from_secs(20), || redis.xlen(STREAM) == n as usize),
        "{} of {n} in the stream after Redis returned",
        redis.xlen(STREAM)
    );
}

/// `kill -9` while Redis hangs (SIGSTOP): what is lost is what the README says can be, the
/// clicks of the last `events.memory_window` (100 ms), and nothing is written twice.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_redis_hang_loses_at_most_the_memory_window() {
    let redis = Redis::start();
    let mut le = Linkedge::start(&Options::new(redis.url()));
    assert_eq!(burst(&le, 0..10, 2).await.len(), 10);
    assert!(eventually(Duration::from_secs(5), || redis.xlen(STREAM) == 10));
    redis.pause();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(1000));
    let served = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (c, base, next, served) = (client(), le.http_url("/c/"), next.clone(), served.clone());
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < Duration::from_secs(3) {
                let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let t = click(LOCAL, "https://example.com/hang", id);
                match c.get(format!("{base}{t}")).send().await {
                    Ok(r) if r.status() == StatusCode::FOUND => {
                        served.lock().unwrap().insert(id);
                    }
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = started.elapsed();
    le.crash();
    for t in tasks {
        let _ = t.await;
    }
    redis.resume();
    le.start_again();
    let served = served.lock().unwrap().clone();
    let mut ids = Vec::new();
    // Settled when the stream stops growing (the spool replays after the restart).
    let mut last = usize::MAX;
    let settled = eventually(Duration::from_secs(30), || {
        let n = redis.xlen(STREAM);
        let stable = n == last;
        last = n;
        if stable {
            std::thread::sleep(Duration::from_millis(500));
        }
        stable && redis.xlen(STREAM) == n
    });
    assert!(settled, "the stream never settled:\n{}", le.log());
    for e in redis.entries(STREAM) {
        ids.push(e["link"].parse::<u64>().unwrap());
    }
    let distinct: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "an event was written twice");
    let lost: Vec<u64> = served.difference(&distinct).copied().collect();
    let rate = served.len() as f64 / killed_at.as_secs_f64();
    let window_ms = lost.len() as f64 / rate * 1000.0;
    eprintln!(
        "kill -9 during a Redis hang: {} clicks answered in {:.2} s ({rate:.0}/s), {} lost = {window_ms:.0} ms of clicks",
        served.len(),
        killed_at.as_secs_f64(),
        lost.len()
    );
    assert!(
        served.len() > 100,
        "too little load to measure: {}",
        served.len()
    );
    // The documented window is events.memory_window (100 ms) plus the quarter-window between
    // spills of what queues behind a waiting batch.
    assert!(
        window_ms <= 125.0,
        "lost {} clicks: {window_ms:.0} ms",
        lost.len()
    );
}

/// A batch that waited past `events.memory_window` is spilled to the spool, then lands: the
/// spool holds only events already in the stream. Replay must finish it without a write (an
/// empty pipeline, which Redis refuses) and let the next clicks through, not stall behind it.
#[tokio::test(flavor = "multi_thread")]
async fn a_spilled_batch_that_landed_does_not_stall_the_spool() {
    let redis = Redis::start();
    let le = Linkedge::start(&Options::new(redis.url()));
    assert_eq!(burst(&le, 0..5, 1).await.len(), 5);
    assert!(eventually(Duration::from_secs(5), || redis.xlen(STREAM) == 5));
    // Writes wait 400 ms (past the 100 ms window, inside the 500 ms timeout), then land.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(400)
        .arg("WRITE")
        .query(&mut redis.conn())
        .unwrap();
    // One click: one batch, so the spool holds that batch alone.
    assert_eq!(burst(&le, 5..6, 1).await.len(), 1);
    assert!(eventually(Duration::from_secs(5), || redis.xlen(STREAM) == 6));
    assert!(
        eventually(Duration::from_secs(5), || le.metric(
            "linkedge_events_total{outcome=\"spilled\",sink=\"default\"}"
        ) > 0.0),
        "no batch was spilled: the pause did not hold a write long enough"
    );
    // The spool empties, and later clicks reach the stream.
    assert!(
        eventually(Duration::from_secs(5), || spooled_segments(&le.spool_dir)
            == 0),
        "the spool never drained:\n{}",
        le.log()
    );
    let more = burst(&le, 6..60, 4).await;
    assert_eq!(more.len(), 54);
    assert!(
        eventually(Duration::from_secs(5), || redis.xlen(STREAM) == 60),
        "{} of 60 in the stream:\n{}",
        redis.xlen(STREAM),
        le.log()
    );
    let entries = redis.entries(STREAM);
    let ids: HashSet<&str> = entries.iter().map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), 60, "an event written twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_is_capped_at_maxlen() {
    let redis = Redis::start();
    let mut o = Options::new(redis.url());
    o.events_extra = "  maxlen: 500\n".into();
    let le = Linkedge::start(&o);
    let served = burst(&le, 0..3000, 16).await;
    assert_eq!(served.len(), 3000);
    assert!(
        eventually(Duration::from_secs(30), || redis.entries_added(STREAM)
            >= 3000),
        "{} of 3000 events written\n{}",
        redis.entries_added(STREAM),
        le.log()
    );
    // `MAXLEN ~` trims whole stream nodes (100 entries by default): after the last batch the
    // stream holds at least the cap and less than a node more.
    let len = redis.xlen(STREAM);
    assert!((500..600).contains(&len), "XLEN {len} with maxlen 500");
    assert_eq!(
        redis.entries_added(STREAM),
        3000,
        "every click written once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_refusing_the_writes_loses_no_click() {
    // The stream key holds a string: every XADD is answered WRONGTYPE, as writes are under
    // `maxmemory` (OOM) or a missing ACL permission. Those clicks must wait in the spool, not be
    // taken as written.
    let redis = Redis::start();
    let le = Linkedge::start(&Options::new(redis.url()));
    let _: () = redis::cmd("SET")
        .arg(STREAM)
        .arg("not a stream")
        .query(&mut redis.conn())
        .unwrap();
    let served = burst(&le, 0..300, 8).await;
    std::thread::sleep(Duration::from_secs(1));
    let spooled = le.metric("linkedge_events_total{outcome=\"spooled\",sink=\"default\"}");
    assert!(
        spooled >= 1.0,
        "nothing spooled while Redis refused the writes\n{}",
        le.log()
    );
    let _: () = redis::cmd("DEL")
        .arg(STREAM)
        .query(&mut redis.conn())
        .unwrap();
    assert_exactly_once(&redis, &le, &served);
}
