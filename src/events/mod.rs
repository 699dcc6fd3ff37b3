//! Click and open events: what one looks like, and the hand-off from the request path.
//!
//! The request path calls [`Recorder::record`], which never waits for Redis: the event goes into a
//! bounded in-memory queue, or, when the queue is full, straight into the on-disk [`spool`]. The
//! [`writer`] drains the queue into a Redis stream in pipelined batches and replays the spool when
//! Redis is reachable. Every event ends written, spooled, or counted in
//! `linkedge_events_dropped_total` with a reason.

pub mod codec;
pub mod spool;
pub mod writer;

use crate::agent::{Agent, Reasons};
use crate::metrics;
use crate::privacy::IpHash;
use crate::token::Kind;
use bytes::Bytes;
use crossbeam_queue::SegQueue;
use serde::{Deserialize, Serialize};
use spool::Spool;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// An event's unique id: a per-process random half and a per-process counter, written as 32 hex
/// digits so consumers can drop duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventId {
    /// Random per process.
    pub node: u64,
    /// Counter within the process.
    pub seq: u64,
}

impl EventId {
    /// The 32 hex digits, without allocating.
    pub fn hex(&self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, v) in [self.node, self.seq].into_iter().enumerate() {
            for j in 0..16 {
                out[i * 16 + j] = DIGITS[((v >> (60 - 4 * j)) & 0xf) as usize];
            }
        }
        out
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.hex()).expect("hex is ASCII"))
    }
}

impl std::str::FromStr for EventId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() != 32 || !s.is_ascii() {
            return Err(());
        }
        let node = u64::from_str_radix(&s[..16], 16).map_err(|_| ())?;
        let seq = u64::from_str_radix(&s[16..], 16).map_err(|_| ())?;
        Ok(EventId { node, seq })
    }
}

/// One click or open, as written to the stream. The request path builds it without formatting
/// anything: ids, numbers and addresses become text only in the writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event, so consumers can drop duplicates.
    #[serde(with = "serde_text")]
    pub id: EventId,
    /// Click or open (`type` in the stream).
    #[serde(rename = "type", with = "serde_kind")]
    pub kind: Kind,
    /// Unix milliseconds when the request arrived.
    pub ts: u64,
    /// The Host the link was followed on.
    pub host: String,
    /// Workspace id from the token.
    pub workspace: u64,
    /// Message (delivery) id from the token.
    pub message: u64,
    /// Link id from the token.
    pub link: u64,
    /// Destination (clicks; empty for opens); shared with the `Location` header.
    #[serde(with = "serde_bytes_text")]
    pub url: Bytes,
    /// Client IP (the TCP peer, or `X-Forwarded-For` from a trusted proxy).
    #[serde(with = "serde_ip")]
    pub ip: Option<IpAddr>,
    /// `User-Agent`, possibly empty.
    #[serde(with = "serde_bytes_text")]
    pub ua: Bytes,
    /// `Referer`, possibly empty.
    #[serde(with = "serde_bytes_text")]
    pub referer: Bytes,
    /// The region of the Host (`routing.domains`, else the registry); `None` for a Host with
    /// none. Its events go to that region's sink, if it has one.
    #[serde(skip)]
    pub region: Option<Arc<str>>,
    /// Who is behind it: human, suspect or machine ([`crate::agent`]).
    #[serde(skip)]
    pub agent: Agent,
    /// Why, as reason codes (empty for human).
    #[serde(skip)]
    pub agent_reasons: Reasons,
    /// The client address as a keyed hash (`events.client_ip: hashed`), instead of `ip`.
    #[serde(skip)]
    pub ip_hash: Option<IpHash>,
    /// The block rule the click met, and what came of it ([`crate::blocks`]).
    #[serde(skip)]
    pub blocked: Option<Blocked>,
}

/// A click a block rule met: the rule's id (`blocked` in the stream) and what came of it
/// (`action`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The rule's id.
    pub rule: Arc<str>,
    /// What the click got.
    pub action: BlockedAction,
}

/// What a click a block rule met got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockedAction {
    /// The "link disabled" page.
    Block,
    /// The warning page.
    Warn,
    /// Redirected after the person chose to continue past a warning.
    Continue,
}

impl BlockedAction {
    /// Its name in the stream and the metric.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockedAction::Block => "block",
            BlockedAction::Warn => "warn",
            BlockedAction::Continue => "continue",
        }
    }

    /// Its byte in spool records (0 is none).
    pub fn to_byte(self) -> u8 {
        match self {
            BlockedAction::Block => 1,
            BlockedAction::Warn => 2,
            BlockedAction::Continue => 3,
        }
    }

    /// The action of byte `b`.
    pub fn from_byte(b: u8) -> Option<BlockedAction> {
        match b {
            1 => Some(BlockedAction::Block),
            2 => Some(BlockedAction::Warn),
            3 => Some(BlockedAction::Continue),
            _ => None,
        }
    }
}

impl Event {
    /// Bytes of the field names and values of this event's stream entry, about (for sizing).
    pub fn size_hint(&self) -> usize {
        160 + self.host.len() + self.url.len() + self.ua.len() + self.referer.len()
    }

    /// Appends the stream entry's field/value pairs to `cmd`, in a fixed order (`url` only for
    /// clicks).
    pub fn write_fields(&self, cmd: &mut redis::Cmd) {
        let mut ip = [0u8; 48];
        let ip_len = match self.ip_hash {
            Some(h) => h.write(&mut ip),
            None => match self.ip {
                Some(IpAddr::V4(v4)) => write_ipv4(v4, &mut ip),
                Some(addr) => {
                    use std::io::Write;
                    let mut c = std::io::Cursor::new(&mut ip[..]);
                    let _ = write!(c, "{addr}");
                    c.position() as usize
                }
                None => 0,
            },
        };
        cmd.arg("id")
            .arg(&self.id.hex()[..])
            .arg("type")
            .arg(self.kind.event_type())
            .arg("ts")
            .arg(self.ts)
            .arg("host")
            .arg(&self.host)
            .arg("workspace")
            .arg(self.workspace)
            .arg("message")
            .arg(self.message)
            .arg("link")
            .arg(self.link);
        if self.kind == Kind::Click {
            cmd.arg("url").arg(&self.url[..]);
        }
        cmd.arg("ip")
            .arg(&ip[..ip_len])
            .arg("ua")
            .arg(&self.ua[..])
            .arg("referer")
            .arg(&self.referer[..])
            .arg("region")
            .arg(self.region.as_deref().unwrap_or(""))
            .arg("agent")
            .arg(self.agent.as_str());
        let mut codes = Vec::new();
        self.agent_reasons.write_codes(&mut codes);
        cmd.arg("agent_reasons").arg(&codes[..]);
        if let Some(b) = &self.blocked {
            cmd.arg("blocked")
                .arg(&*b.rule)
                .arg("action")
                .arg(b.action.as_str());
        }
    }
}

/// `addr` in dotted-quad form into `out` (as `Display` writes it, without the formatting
/// machinery: most clicks come from IPv4 addresses); the length.
fn write_ipv4(addr: std::net::Ipv4Addr, out: &mut [u8; 48]) -> usize {
    let mut n = 0;
    for (i, octet) in addr.octets().into_iter().enumerate() {
        if i > 0 {
            out[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            out[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            out[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        out[n] = b'0' + octet % 10;
        n += 1;
    }
    n
}

/// Arguments of one `XADD` as the writer sends it: `XADD key MAXLEN ~ n *` and 14 field/value
/// pairs (13 for an open; 16 for a click a block rule met). Sizes a command so it is built
/// without growing.
pub const XADD_ARGS: usize = 6 + 30;

/// A `Display`/`FromStr` value as a JSON string (spool records).
mod serde_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    pub fn serialize<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
    pub fn deserialize<'de, T: std::str::FromStr, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|_| D::Error::custom("bad event id"))
    }
}

mod serde_kind {
    use crate::token::Kind;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    pub fn serialize<S: Serializer>(k: &Kind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.event_type())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        match String::deserialize(d)?.as_str() {
            "click" => Ok(Kind::Click),
            "open" => Ok(Kind::Open),
            other => Err(D::Error::custom(format!("unknown event type {other:?}"))),
        }
    }
}

mod serde_bytes_text {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        Ok(Bytes::from(String::deserialize(d)?))
    }
}

mod serde_ip {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::net::IpAddr;
    pub fn serialize<S: Serializer>(ip: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
        match ip {
            Some(ip) => s.collect_str(ip),
            None => s.serialize_str(""),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        s.parse().map(Some).map_err(|_| D::Error::custom("bad ip"))
    }
}

/// Where events go: the default sink, and each region's own sink (`events.regions`). An event
/// goes to its region's sink when that region has one, else to the default sink.
pub struct Sinks {
    default: Arc<Recorder>,
    regions: Vec<(Arc<str>, Arc<Recorder>)>,
}

impl Sinks {
    /// Only the default sink.
    pub fn new(default: Arc<Recorder>) -> Sinks {
        Sinks {
            default,
            regions: Vec::new(),
        }
    }

    /// Adds `region`'s own sink.
    pub fn with_region(mut self, region: &str, recorder: Arc<Recorder>) -> Sinks {
        self.regions.push((region.into(), recorder));
        self
    }

    /// The sink of events in `region` (a handful of regions: a linear search beats a hash).
    pub fn for_region(&self, region: Option<&str>) -> &Arc<Recorder> {
        region
            .and_then(|r| self.regions.iter().find(|(n, _)| &**n == r))
            .map_or(&self.default, |(_, rec)| rec)
    }

    /// The default sink.
    pub fn default_sink(&self) -> &Arc<Recorder> {
        &self.default
    }

    /// Every sink: the default one first.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Recorder>> {
        std::iter::once(&self.default).chain(self.regions.iter().map(|(_, r)| r))
    }
}

/// The in-memory queue, bounded by a count: it grows in blocks of 31 events as they arrive and
/// frees them as the writer takes them, so a node holds memory for the events actually waiting,
/// not for its whole capacity (a ring allocated up front held 65,536 events of 232 bytes: 15 MiB
/// of resident memory on an idle node).
struct Queue {
    events: SegQueue<Event>,
    /// Events pushed and not yet taken (a push in progress counts already).
    len: AtomicUsize,
    capacity: usize,
}

impl Queue {
    fn new(capacity: usize) -> Queue {
        Queue {
            events: SegQueue::new(),
            len: AtomicUsize::new(0),
            capacity,
        }
    }

    /// Queues `ev`; hands it back when `capacity` events are waiting.
    fn push(&self, ev: Event) -> Option<Event> {
        if self.len.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.len.fetch_sub(1, Ordering::AcqRel);
            return Some(ev);
        }
        self.events.push(ev);
        None
    }

    fn pop(&self) -> Option<Event> {
        let ev = self.events.pop()?;
        self.len.fetch_sub(1, Ordering::AcqRel);
        Some(ev)
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The request path's handle on event recording, shared with the writer.
pub struct Recorder {
    queue: Queue,
    notify: Notify,
    spool: Mutex<Spool>,
    /// The batch the writer is sending; spooled on shutdown if the send never finished.
    inflight: Mutex<Option<Arc<Vec<Event>>>>,
    node: u64,
    counter: AtomicU64,
    /// Set by the writer while it waits on an empty queue: only then does `record` wake it, so
    /// under load the request path never pays for a wake-up (or a context switch).
    writer_idle: AtomicBool,
    /// The event sink's metrics (the spool's).
    metrics: metrics::SinkMetrics,
}

impl Recorder {
    /// A recorder with a queue of `capacity` events in front of `spool`, for the spool's sink.
    pub fn new(capacity: usize, spool: Spool) -> Recorder {
        Recorder {
            metrics: spool.metrics().clone(),
            queue: Queue::new(capacity),
            notify: Notify::new(),
            spool: Mutex::new(spool),
            inflight: Mutex::new(None),
            node: rand::random(),
            counter: AtomicU64::new(0),
            writer_idle: AtomicBool::new(false),
        }
    }

    /// A fresh event id, unique across processes (random per process) and within one (a counter).
    pub fn next_id(&self) -> EventId {
        EventId {
            node: self.node,
            seq: self.counter.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Hands an event over without waiting: into the queue, or into the spool when the queue is
    /// full.
    pub fn record(&self, ev: Event) {
        match self.queue.push(ev) {
            None => {
                if self.writer_idle.load(Ordering::Relaxed)
                    && self.writer_idle.swap(false, Ordering::AcqRel)
                {
                    self.notify.notify_one();
                }
            }
            Some(ev) => {
                let mut spool = self.lock_spool();
                spool.append(std::slice::from_ref(&ev), false);
            }
        }
    }

    /// The event sink's metrics.
    pub fn metrics(&self) -> &metrics::SinkMetrics {
        &self.metrics
    }

    /// Events waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Takes up to `max` queued events, oldest first.
    pub(crate) fn take_batch(&self, max: usize) -> Vec<Event> {
        let n = self.queue.len().min(max);
        let mut batch = Vec::with_capacity(n);
        while batch.len() < max {
            match self.queue.pop() {
                Some(ev) => batch.push(ev),
                None => break,
            }
        }
        self.metrics.queue_depth.set(self.queue.len() as i64);
        batch
    }

    /// Waits (at most `limit`) for `record` to hand over an event, unless one is already queued.
    pub(crate) async fn wait_idle(&self, limit: std::time::Duration) {
        self.writer_idle.store(true, Ordering::Release);
        if self.queue.is_empty() {
            let _ = tokio::time::timeout(limit, self.notify.notified()).await;
        }
        self.writer_idle.store(false, Ordering::Release);
    }

    pub(crate) fn lock_spool(&self) -> std::sync::MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock_inflight(&self) -> std::sync::MutexGuard<'_, Option<Arc<Vec<Event>>>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After the server stopped: moves whatever is still queued or in flight to the spool, so a
    /// restart (or, during an upgrade, the new process) replays it, and closes the spool.
    /// Returns how many events were moved.
    pub fn flush_to_spool(&self) -> usize {
        let inflight = self.lock_inflight().take().unwrap_or_default();
        let mut spool = self.lock_spool();
        let mut n = inflight.len();
        // The in-flight batch may or may not have reached Redis: replay checks before writing.
        spool.append(&inflight, true);
        loop {
            let batch = self.take_batch(4096);
            if batch.is_empty() {
                break;
            }
            n += batch.len();
            spool.append(&batch, false);
        }
        spool.close();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ipv4_is_written_as_display_writes_it(a: u8, b: u8, c: u8, d: u8) {
            let addr = std::net::Ipv4Addr::new(a, b, c, d);
            let mut out = [0u8; 48];
            let n = write_ipv4(addr, &mut out);
            prop_assert_eq!(std::str::from_utf8(&out[..n]).unwrap(), addr.to_string());
        }
    }

    #[test]
    fn ipv4_edges() {
        for (addr, text) in [
            ([0, 0, 0, 0], "0.0.0.0"),
            ([255, 255, 255, 255], "255.255.255.255"),
            ([10, 100, 9, 200], "10.100.9.200"),
        ] {
            let mut out = [0u8; 48];
            let n = write_ipv4(addr.into(), &mut out);
            assert_eq!(&out[..n], text.as_bytes());
        }
    }
}
