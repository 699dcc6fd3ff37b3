//! Machine clicks and opens: a verdict with reasons on every event, from signals available on
//! the request path without any I/O. A verdict never refuses or delays a redirect (the person
//! behind a scanner must still reach the destination); it labels the event, and the stream's
//! consumers decide.
//!
//! | reason | signal | verdict |
//! |---|---|---|
//! | `head` | a `HEAD` request (it still gets the 302) | machine |
//! | `ua` | the user agent matches the crawler, previewer and scanner list (`isbot` crate) | machine |
//! | `no_ua` | no user agent at all | suspect |
//! | `scanner_net` | the client address is in `bots.scanner_networks` (security gateways, privacy proxies) | suspect |
//! | `prefetch` | the click came within `bots.prefetch_window` of the link's minting | suspect |
//! | `burst` | the client followed `bots.burst.links` distinct links of one message within `bots.burst.window` (per node) | suspect |
//! | `honeypot` | the link is a trap (`link mint --trap`): hidden in the email, no person follows it | machine |
//! | `honeypot` | the client followed the message's trap link within `bots.honeypot_window` before (per node) | suspect |
//!
//! `machine` when any certain signal fires (`head`, `ua`, or `honeypot` on the trap link
//! itself); else `suspect` when any other does; else `human`, with no reasons.

pub mod networks;
pub mod pairs;

use crate::metrics;
use crate::token::Kind;
use networks::Networks;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Who is behind a click or open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Agent {
    /// No signal fired.
    #[default]
    Human,
    /// An uncertain signal fired.
    Suspect,
    /// A certain signal fired.
    Machine,
}

impl Agent {
    /// The value written in the event's `agent` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Agent::Human => "human",
            Agent::Suspect => "suspect",
            Agent::Machine => "machine",
        }
    }

    /// The wire byte of the spool's frames.
    pub fn to_byte(self) -> u8 {
        self as u8
    }

    /// From [`Agent::to_byte`].
    pub fn from_byte(b: u8) -> Option<Agent> {
        [Agent::Human, Agent::Suspect, Agent::Machine]
            .get(b as usize)
            .copied()
    }
}

/// The reasons of a verdict: a small set of fixed codes, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reasons(u8);

/// Every reason, in the order their codes are written, and whether it alone makes the event
/// `machine` (`honeypot` does on the trap link itself: [`Request::trap`]).
pub const REASONS: [(Reasons, &str, bool); 7] = [
    (Reasons::HEAD, "head", true),
    (Reasons::UA, "ua", true),
    (Reasons::NO_UA, "no_ua", false),
    (Reasons::SCANNER_NET, "scanner_net", false),
    (Reasons::PREFETCH, "prefetch", false),
    (Reasons::BURST, "burst", false),
    (Reasons::HONEYPOT, "honeypot", false),
];

impl Reasons {
    /// A `HEAD` request.
    pub const HEAD: Reasons = Reasons(1);
    /// A known crawler, previewer or scanner user agent.
    pub const UA: Reasons = Reasons(2);
    /// No user agent.
    pub const NO_UA: Reasons = Reasons(4);
    /// A client address in a configured scanner network.
    pub const SCANNER_NET: Reasons = Reasons(8);
    /// Too soon after the link was minted.
    pub const PREFETCH: Reasons = Reasons(16);
    /// Many links of one message in a short time.
    pub const BURST: Reasons = Reasons(32);
    /// The trap link, or another link of its message from the address that followed the trap.
    pub const HONEYPOT: Reasons = Reasons(64);

    /// True when no reason is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether `r` is set.
    pub fn contains(self, r: Reasons) -> bool {
        self.0 & r.0 == r.0 && r.0 != 0
    }

    /// Adds `r`.
    pub fn insert(&mut self, r: Reasons) {
        self.0 |= r.0;
    }

    /// The bits (the spool's wire form).
    pub fn bits(self) -> u8 {
        self.0
    }

    /// From [`Reasons::bits`]; unknown bits are dropped.
    pub fn from_bits(b: u8) -> Reasons {
        Reasons(b & 0x7f)
    }

    /// The verdict these reasons make on a link that is not a trap (a trap is always
    /// `machine`).
    pub fn verdict(self) -> Agent {
        if REASONS
            .iter()
            .any(|(r, _, certain)| *certain && self.contains(*r))
        {
            Agent::Machine
        } else if self.is_empty() {
            Agent::Human
        } else {
            Agent::Suspect
        }
    }

    /// The codes, comma-separated, in the documented order (empty for none). Written without
    /// allocating into `out`.
    pub fn write_codes(self, out: &mut Vec<u8>) {
        for (r, code, _) in REASONS {
            if self.contains(r) {
                if !out.is_empty() {
                    out.push(b',');
                }
                out.extend_from_slice(code.as_bytes());
            }
        }
    }

    /// The codes as a string (tests, logs).
    pub fn codes(self) -> String {
        let mut out = Vec::new();
        self.write_codes(&mut out);
        String::from_utf8(out).expect("codes are ASCII")
    }
}

/// What the detector looks at, all known on the request path.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The request was `HEAD`.
    pub head: bool,
    /// The `User-Agent` bytes (empty when absent).
    pub ua: &'a [u8],
    /// The client address.
    pub ip: Option<IpAddr>,
    /// Click or open.
    pub kind: Kind,
    /// Workspace and message the link belongs to.
    pub workspace: u64,
    /// Message (delivery) id.
    pub message: u64,
    /// The link within the message.
    pub link: u64,
    /// The link is the message's trap (a hidden honeypot link no person follows).
    pub trap: bool,
    /// When the link was minted, Unix seconds (from the token).
    pub issued_s: u64,
    /// Now, Unix milliseconds.
    pub now_ms: u64,
}

/// The settings of the detector (`bots` in the config).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Clicks within this time of minting are `prefetch`; `None`: off.
    pub prefetch_window: Option<Duration>,
    /// What is remembered per (address, message) for `burst` and `honeypot`.
    pub pairs: pairs::Settings,
}

/// Judges requests; shared by every request.
pub struct Detector {
    bots: isbot::Bots,
    /// Keyed per process, for the user-agent answers each thread remembers.
    hasher: foldhash::quality::RandomState,
    counters: Counters,
    /// `None` without `bots.scanner_networks`: no lock taken per request.
    networks: Option<Arc<RwLock<Networks>>>,
    prefetch_window: Option<Duration>,
    /// `None` when neither `burst` nor the honeypot window is on.
    pairs: Option<pairs::Pairs>,
}

/// User-agent answers remembered per request thread.
const UA_CACHE: usize = 1024;

/// `linkedge_agent_verdicts_total` handles for every (kind, agent, reason), resolved once so
/// the request path does no label look-up.
struct Counters {
    /// `[kind][agent][reason]`; reason index `REASONS.len()` is `none`.
    by: Vec<prometheus::IntCounter>,
}

impl Counters {
    const PER_KIND: usize = 3 * (REASONS.len() + 1);

    fn new() -> Counters {
        let mut by = Vec::new();
        for kind in [Kind::Click, Kind::Open] {
            for agent in [Agent::Human, Agent::Suspect, Agent::Machine] {
                for reason in REASONS.iter().map(|r| r.1).chain(["none"]) {
                    by.push(metrics::agent_verdict(
                        kind.event_type(),
                        agent.as_str(),
                        reason,
                    ));
                }
            }
        }
        Counters { by }
    }

    fn count(&self, kind: Kind, agent: Agent, why: Reasons) {
        let base = usize::from(kind == Kind::Open) * Self::PER_KIND
            + agent.to_byte() as usize * (REASONS.len() + 1);
        if why.is_empty() {
            self.by[base + REASONS.len()].inc();
        }
        for (i, (r, _, _)) in REASONS.iter().enumerate() {
            if why.contains(*r) {
                self.by[base + i].inc();
            }
        }
    }
}

/// The version of the `isbot` crate whose user-agent list is compiled in (logged at start;
/// a unit test keeps it equal to `Cargo.lock`'s).
pub const ISBOT_VERSION: &str = "0.1.3";

impl Detector {
    /// A detector with `settings`, matching addresses against `networks` (replaced in place
    /// when its file is reloaded), if any.
    pub fn new(settings: Settings, networks: Option<Arc<RwLock<Networks>>>) -> Detector {
        Detector {
            bots: isbot::Bots::default(),
            hasher: foldhash::quality::RandomState::default(),
            counters: Counters::new(),
            pairs: (settings.pairs.burst.is_some() || settings.pairs.honeypot_window.is_some())
                .then(|| pairs::Pairs::new(settings.pairs)),
            networks,
            prefetch_window: settings.prefetch_window,
        }
    }

    /// The verdict on `r` and its reasons, counted in
    /// `linkedge_agent_verdicts_total{kind,agent,reason}`.
    pub fn judge(&self, r: &Request<'_>) -> (Agent, Reasons) {
        let mut why = Reasons::default();
        if r.head {
            why.insert(Reasons::HEAD);
        }
        if r.ua.is_empty() {
            why.insert(Reasons::NO_UA);
        } else if self.is_bot(r.ua) {
            why.insert(Reasons::UA);
        }
        if let (Some(ip), Some(networks)) = (r.ip, &self.networks)
            && networks
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .lookup(ip)
                .is_some()
        {
            why.insert(Reasons::SCANNER_NET);
        }
        if let Some(w) = self.prefetch_window
            && r.now_ms
                < r.issued_s
                    .saturating_mul(1000)
                    .saturating_add(w.as_millis() as u64)
        {
            why.insert(Reasons::PREFETCH);
        }
        if let (Some(p), Some(ip)) = (&self.pairs, r.ip) {
            let seen = p.follows(ip, r.workspace, r.message, r.link, r.trap, r.now_ms);
            if seen.burst {
                why.insert(Reasons::BURST);
            }
            if seen.honeypot {
                why.insert(Reasons::HONEYPOT);
            }
        }
        if r.trap {
            why.insert(Reasons::HONEYPOT);
        }
        let agent = if r.trap {
            Agent::Machine
        } else {
            why.verdict()
        };
        self.counters.count(r.kind, agent, why);
        (agent, why)
    }

    /// Whether `ua` is on the list. The list is one large regular expression (a few hundred
    /// nanoseconds a browser's user agent), and the same user agents come back again and again:
    /// each request thread remembers the answers for the last 1,024 distinct ones it saw
    /// (direct-mapped by a 64-bit hash: 16 KiB per thread, no lock).
    fn is_bot(&self, ua: &[u8]) -> bool {
        use std::hash::BuildHasher;
        thread_local! {
            static SEEN: std::cell::RefCell<Vec<(u64, bool)>> =
                std::cell::RefCell::new(vec![(0, false); UA_CACHE]);
        }
        let h = self.hasher.hash_one(ua) | 1; // 0 marks an empty slot
        let slot = (h as usize) % UA_CACHE;
        if let Some(hit) = SEEN.with(|s| {
            let s = s.borrow();
            (s[slot].0 == h).then_some(s[slot].1)
        }) {
            return hit;
        }
        let bot = std::str::from_utf8(ua).is_ok_and(|ua| self.bots.is_bot(ua));
        SEEN.with(|s| s.borrow_mut()[slot] = (h, bot));
        bot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROWSER: &[u8] = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";

    fn req(ua: &'static [u8]) -> Request<'static> {
        Request {
            head: false,
            ua,
            ip: Some("198.51.100.7".parse().unwrap()),
            kind: Kind::Click,
            workspace: 1,
            message: 2,
            link: 3,
            trap: false,
            issued_s: 1_000,
            now_ms: 2_000_000,
        }
    }

    fn detector(settings: Settings, nets: &str) -> Detector {
        let n = Networks::parse(nets).unwrap();
        Detector::new(settings, Some(Arc::new(RwLock::new(n))))
    }

    #[test]
    fn the_verdict_table() {
        let d = detector(
            Settings {
                prefetch_window: Some(Duration::from_secs(10)),
                pairs: pairs::Settings::default(),
            },
            "198.51.100.0/24 example-gateway\n",
        );
        let outside = Some("203.0.113.9".parse().unwrap());
        let cases: Vec<(Request, Agent, &str)> = vec![
            (
                Request {
                    ip: outside,
                    ..req(BROWSER)
                },
                Agent::Human,
                "",
            ),
            (
                Request {
                    head: true,
                    ip: outside,
                    ..req(BROWSER)
                },
                Agent::Machine,
                "head",
            ),
            (
                Request {
                    ip: outside,
                    ..req(
                        b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                    )
                },
                Agent::Machine,
                "ua",
            ),
            (
                Request {
                    ip: outside,
                    ..req(b"")
                },
                Agent::Suspect,
                "no_ua",
            ),
            (req(BROWSER), Agent::Suspect, "scanner_net"),
            (
                Request {
                    ip: outside,
                    now_ms: 1_005_000,
                    ..req(BROWSER)
                },
                Agent::Suspect,
                "prefetch",
            ),
            (
                Request {
                    head: true,
                    now_ms: 1_005_000,
                    ..req(b"")
                },
                Agent::Machine,
                "head,no_ua,scanner_net,prefetch",
            ),
        ];
        for (r, agent, codes) in cases {
            let (a, why) = d.judge(&r);
            assert_eq!((a, why.codes().as_str()), (agent, codes), "{r:?}");
        }
    }

    #[test]
    fn prefetch_only_with_a_window_and_burst_at_the_configured_count() {
        // A link followed 5 s after minting: prefetch with a 10 s window, nothing without one.
        let fresh = Request {
            ip: Some("203.0.113.9".parse().unwrap()),
            issued_s: 1_000,
            now_ms: 1_005_000,
            ..req(BROWSER)
        };
        let off = detector(Settings::default(), "");
        assert_eq!(off.judge(&fresh), (Agent::Human, Reasons::default()));
        // Five links of one message in one second from one address, with the default burst
        // (4 links in 5 s): the 4th and 5th are suspect.
        let d = detector(
            Settings {
                prefetch_window: None,
                pairs: pairs::Settings {
                    burst: Some(pairs::BurstSettings {
                        links: 4,
                        window: Duration::from_secs(5),
                    }),
                    honeypot_window: None,
                    capacity: 100_000,
                },
            },
            "",
        );
        let verdicts: Vec<String> = (0..5u64)
            .map(|i| {
                let r = Request {
                    link: i,
                    now_ms: 2_000_000 + i * 200,
                    ..fresh
                };
                d.judge(&r).1.codes()
            })
            .collect();
        assert_eq!(verdicts, ["", "", "", "burst", "burst"]);
    }

    #[test]
    fn a_trap_is_machine_and_marks_its_message_for_that_address() {
        let d = detector(
            Settings {
                prefetch_window: None,
                pairs: pairs::Settings {
                    burst: None,
                    honeypot_window: Some(Duration::from_secs(600)),
                    capacity: 1_000,
                },
            },
            "",
        );
        let scanner = Request {
            ip: Some("203.0.113.9".parse().unwrap()),
            ..req(BROWSER)
        };
        let codes = |r: Request| {
            let (a, why) = d.judge(&r);
            (a, why.codes())
        };
        let trap = Request {
            trap: true,
            link: 99,
            ..scanner
        };
        assert_eq!(codes(trap), (Agent::Machine, "honeypot".into()));
        assert_eq!(codes(scanner), (Agent::Suspect, "honeypot".into()));
        let person = Request {
            ip: Some("192.0.2.1".parse().unwrap()),
            ..scanner
        };
        assert_eq!(codes(person), (Agent::Human, String::new()));
        let later = Request {
            now_ms: scanner.now_ms + 601_000,
            ..scanner
        };
        assert_eq!(codes(later), (Agent::Human, String::new()));
        // With the window off, the trap click alone is flagged.
        let off = detector(Settings::default(), "");
        assert_eq!(off.judge(&trap).0, Agent::Machine);
        assert_eq!(off.judge(&scanner).0, Agent::Human);
    }

    #[test]
    fn reasons_round_trip_and_order() {
        let mut r = Reasons::default();
        r.insert(Reasons::BURST);
        r.insert(Reasons::HEAD);
        assert_eq!(r.codes(), "head,burst");
        assert_eq!(Reasons::from_bits(r.bits()), r);
        assert_eq!(r.verdict(), Agent::Machine);
        for a in [Agent::Human, Agent::Suspect, Agent::Machine] {
            assert_eq!(Agent::from_byte(a.to_byte()), Some(a));
        }
    }

    #[test]
    fn isbot_version_is_the_one_in_cargo_lock() {
        let lock = include_str!("../../Cargo.lock");
        let at = lock
            .find("name = \"isbot\"")
            .expect("isbot is a dependency");
        assert!(
            lock[at..].lines().nth(1).unwrap().contains(ISBOT_VERSION),
            "update ISBOT_VERSION"
        );
    }
}
