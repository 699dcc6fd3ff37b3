//! The `burst` signal: one client address following many distinct links of one message within
//! a short time, as a scanner opening every link of an email does. Kept per node, in bounded
//! memory: a fixed table of `capacity` slots, each (address, message) pair hashed to one slot;
//! a pair landing on a slot held by another pair takes it over (the older pair starts counting
//! again: a burst can be missed, never invented). No allocation and one short lock per click.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// When a burst is declared, and how much the detector may remember.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Distinct links of one message that make a burst (2 to [`MAX_LINKS`]).
    pub links: usize,
    /// Within how long.
    pub window: Duration,
    /// (address, message) pairs remembered at most, over all shards.
    pub capacity: usize,
}

/// Most links a burst can be defined by (`bots.burst.links`).
pub const MAX_LINKS: usize = 16;

/// One (address, message) pair: its hash, when its window started, the links seen in it.
#[derive(Clone, Copy)]
struct Slot {
    key: u64,
    start_ms: u64,
    seen: u8,
    links: [u32; MAX_LINKS],
}

const EMPTY: Slot = Slot {
    key: 0,
    start_ms: 0,
    seen: 0,
    links: [0; MAX_LINKS],
};

/// Shards keep the request threads from queueing on one lock.
const SHARDS: usize = 16;

/// The burst detector.
pub struct Burst {
    settings: Settings,
    hasher: foldhash::fast::RandomState,
    shards: Vec<Mutex<Vec<Slot>>>,
}

impl Burst {
    /// A detector with `settings`; `capacity` slots of 88 bytes, allocated now.
    pub fn new(settings: Settings) -> Burst {
        let per = (settings.capacity / SHARDS).max(1);
        Burst {
            shards: (0..SHARDS).map(|_| Mutex::new(vec![EMPTY; per])).collect(),
            hasher: foldhash::fast::RandomState::default(),
            settings,
        }
    }

    /// Records that `ip` followed `link` of (`workspace`, `message`) at `now_ms`; true when that
    /// makes `links` distinct links of the message within `window`.
    pub fn follows(
        &self,
        ip: IpAddr,
        workspace: u64,
        message: u64,
        link: u64,
        now_ms: u64,
    ) -> bool {
        let key = self.hasher.hash_one((ip, workspace, message)) | 1; // 0 marks an empty slot
        let link = self.hasher.hash_one(link) as u32;
        let window = self.settings.window.as_millis() as u64;
        let want = self.settings.links.clamp(2, MAX_LINKS);
        let mut shard = self.shards[(key as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let n_slots = shard.len();
        let s = &mut shard[((key >> 8) as usize) % n_slots];
        if s.key != key || now_ms.saturating_sub(s.start_ms) > window {
            *s = Slot {
                key,
                start_ms: now_ms,
                ..EMPTY
            };
        }
        let n = s.seen as usize;
        if !s.links[..n].contains(&link) && n < want {
            s.links[n] = link;
            s.seen += 1;
        }
        s.seen as usize >= want
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(capacity: usize) -> Burst {
        Burst::new(Settings {
            links: 3,
            window: Duration::from_secs(10),
            capacity,
        })
    }

    #[test]
    fn three_distinct_links_of_a_message_within_the_window() {
        let d = b(1_000_000);
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(!d.follows(ip, 1, 9, 1, 0));
        assert!(
            !d.follows(ip, 1, 9, 1, 100),
            "the same link again is not another link"
        );
        assert!(!d.follows(ip, 1, 9, 2, 200));
        // Another message, or another address, counts apart.
        assert!(!d.follows(ip, 1, 8, 3, 250));
        assert!(!d.follows("198.51.100.8".parse().unwrap(), 1, 9, 3, 250));
        assert!(d.follows(ip, 1, 9, 3, 300));
        assert!(d.follows(ip, 1, 9, 4, 400));
        // The window passed: counting starts again.
        assert!(!d.follows(ip, 1, 9, 5, 20_000));
    }

    #[test]
    fn memory_is_bounded() {
        let d = b(1600);
        for i in 0..100_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            d.follows(ip, 1, u64::from(i), 1, 0);
        }
        assert!(d.len() <= 1600, "{} entries", d.len());
    }
}
