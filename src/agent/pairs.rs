//! What each (client address, message) pair did recently, for the two signals that look back:
//! - `burst`: the address followed many distinct links of the message within a short time, as
//!   a scanner opening every link of an email does;
//! - `honeypot`: the address followed the message's trap link (a hidden link no person
//!   clicks) a short time ago.
//!
//! Kept per node, in bounded memory: a fixed table of `capacity` 64-byte slots, allocated at
//! start, each pair hashed to one slot. A pair landing on a slot held by another pair takes it
//! over: the older pair is forgotten, so a signal can be missed, never invented. No allocation
//! and one short lock (of 16 shards) per click.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// The `burst` signal's definition.
#[derive(Debug, Clone)]
pub struct BurstSettings {
    /// Distinct links of one message that make a burst (2 to [`MAX_LINKS`]).
    pub links: usize,
    /// Within how long.
    pub window: Duration,
}

/// What the table remembers, and for how long.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `None`: no `burst` signal.
    pub burst: Option<BurstSettings>,
    /// How long after a trap click the same address's clicks on the message are `honeypot`;
    /// `None`: only the trap click itself is flagged.
    pub honeypot_window: Option<Duration>,
    /// (address, message) pairs remembered at most, over all shards.
    pub capacity: usize,
}

/// Most links a burst can be defined by (`bots.burst.links`).
pub const MAX_LINKS: usize = 16;

/// Bytes per remembered pair (the table's whole cost is `capacity` times this).
pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// One (address, message) pair: its hash, when its burst window started and the links seen in
/// it (as 16-bit hashes: two links hashing alike count once, which can miss a burst, never
/// invent one), and when it last followed the trap link (0: never).
#[derive(Clone, Copy)]
#[repr(align(64))]
struct Slot {
    key: u64,
    start_ms: u64,
    trap_ms: u64,
    seen: u8,
    links: [u16; MAX_LINKS],
}

const EMPTY: Slot = Slot {
    key: 0,
    start_ms: 0,
    trap_ms: 0,
    seen: 0,
    links: [0; MAX_LINKS],
};

/// Shards keep the request threads from queueing on one lock.
const SHARDS: usize = 16;

/// What a click showed about its pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    /// This click makes `links` distinct links of the message within the burst window.
    pub burst: bool,
    /// The pair followed the trap link within the honeypot window before this click.
    pub honeypot: bool,
}

/// The table.
pub struct Pairs {
    settings: Settings,
    hasher: foldhash::fast::RandomState,
    shards: Vec<Mutex<Vec<Slot>>>,
}

impl Pairs {
    /// A table with `settings`; `capacity` slots of [`SLOT_BYTES`], allocated now.
    pub fn new(settings: Settings) -> Pairs {
        let per = (settings.capacity / SHARDS).max(1);
        Pairs {
            shards: (0..SHARDS).map(|_| Mutex::new(vec![EMPTY; per])).collect(),
            hasher: foldhash::fast::RandomState::default(),
            settings,
        }
    }

    /// Records that `ip` followed `link` of (`workspace`, `message`) at `now_ms` (`trap`: the
    /// message's trap link), and answers what that shows.
    pub fn follows(
        &self,
        ip: IpAddr,
        workspace: u64,
        message: u64,
        link: u64,
        trap: bool,
        now_ms: u64,
    ) -> Seen {
        let key = self.hasher.hash_one((ip, workspace, message)) | 1; // 0 marks an empty slot
        let mut shard = self.shards[(key as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let n_slots = shard.len();
        let s = &mut shard[((key >> 8) as usize) % n_slots];
        if s.key != key {
            *s = Slot { key, ..EMPTY };
        }
        let mut seen = Seen::default();
        if let Some(w) = self.settings.honeypot_window
            && s.trap_ms != 0
            && now_ms.saturating_sub(s.trap_ms) <= w.as_millis() as u64
        {
            seen.honeypot = true;
        }
        if trap {
            s.trap_ms = now_ms.max(1);
        }
        if let Some(b) = &self.settings.burst {
            if s.seen == 0 || now_ms.saturating_sub(s.start_ms) > b.window.as_millis() as u64 {
                s.start_ms = now_ms;
                s.seen = 0;
            }
            let want = b.links.clamp(2, MAX_LINKS);
            let link = self.hasher.hash_one(link) as u16;
            let n = s.seen as usize;
            if !s.links[..n].contains(&link) && n < want {
                s.links[n] = link;
                s.seen += 1;
            }
            seen.burst = s.seen as usize >= want;
        }
        seen
    }

    /// Slots in use (tests, bounds).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|p| p.into_inner());
                s.iter().filter(|e| e.key != 0).count()
            })
            .sum()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the table holds (fixed at start).
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len() * SLOT_BYTES)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(capacity: usize) -> Pairs {
        Pairs::new(Settings {
            burst: Some(BurstSettings {
                links: 3,
                window: Duration::from_secs(10),
            }),
            honeypot_window: Some(Duration::from_secs(60)),
            capacity,
        })
    }

    #[test]
    fn three_distinct_links_of_a_message_within_the_window() {
        let d = pairs(1_000_000);
        let burst = |ip: &str, message, link, at| {
            d.follows(ip.parse().unwrap(), 1, message, link, false, at)
                .burst
        };
        let ip = "198.51.100.7";
        assert!(!burst(ip, 9, 1, 1));
        assert!(
            !burst(ip, 9, 1, 100),
            "the same link again is not another link"
        );
        assert!(!burst(ip, 9, 2, 200));
        // Another message, or another address, counts apart.
        assert!(!burst(ip, 8, 3, 250));
        assert!(!burst("198.51.100.8", 9, 3, 250));
        assert!(burst(ip, 9, 3, 300));
        assert!(burst(ip, 9, 4, 400));
        // The window passed: counting starts again.
        assert!(!burst(ip, 9, 5, 20_000));
    }

    #[test]
    fn after_a_trap_click_within_the_window_only() {
        // Room enough that the other pairs below never share the trap pair's slot (the table
        // is direct-mapped under a per-process random hash: with 62 slots a shard, they did
        // about once in 30 runs).
        let d = pairs(1 << 20);
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let honeypot = |ip, message, trap, at| d.follows(ip, 1, message, 1, trap, at).honeypot;
        assert!(!honeypot(ip, 9, false, 1_000), "nothing before the trap");
        assert!(
            !honeypot(ip, 9, true, 2_000),
            "the trap click is judged by the caller"
        );
        assert!(honeypot(ip, 9, false, 3_000));
        assert!(!honeypot(ip, 8, false, 3_000), "another message");
        assert!(
            !honeypot("198.51.100.8".parse().unwrap(), 9, false, 3_000),
            "another address"
        );
        assert!(honeypot(ip, 9, false, 62_000), "60 s after the trap");
        assert!(!honeypot(ip, 9, false, 62_001), "past the window");
        let off = Pairs::new(Settings {
            honeypot_window: None,
            ..d.settings.clone()
        });
        off.follows(ip, 1, 9, 1, true, 1_000);
        assert!(!off.follows(ip, 1, 9, 2, false, 2_000).honeypot);
    }

    #[test]
    fn memory_is_bounded() {
        assert_eq!(SLOT_BYTES, 64);
        let d = pairs(1600);
        assert_eq!(d.bytes(), 1600 * 64);
        for i in 0..100_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            d.follows(ip, 1, u64::from(i), 1, i % 2 == 0, 0);
        }
        assert!(d.len() <= 1600, "{} entries", d.len());
        assert_eq!(d.bytes(), 1600 * 64);
    }
}
