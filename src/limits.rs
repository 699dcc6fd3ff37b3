//! Connection limits on the public listeners: what keeps one client from making the edge
//! unreachable for everyone else, over HTTP/1 and HTTP/2 alike.
//!
//! - Caps: every accepted connection takes a place in the global count and in its client
//!   address's count (IPv6 grouped by /64, counted with `pingora-limits`' `Inflight`). Over the
//!   per-address cap the connection gets a `503` (HTTP/1) and is closed at once. At the global
//!   cap the connection idle for longest (between requests, waiting for or dripping a head;
//!   HTTP/2 with no stream open) is closed to make room, so new clients are still served; only
//!   when none is idle is the new one refused.
//! - Deadlines: each connection is wrapped in a [`Conn`] that is closed when its request head
//!   has not fully arrived within `limits.header_timeout` (from the accept, or the end of the
//!   TLS handshake, for the first request, HTTP/2's preface included; from the first byte for
//!   later HTTP/1 heads, however slowly the bytes come), when it sits idle between requests
//!   (HTTP/2: with no stream) for `limits.keepalive_timeout`, or when a write makes no
//!   progress for `limits.send_timeout`. Pingora's own timeouts apply per read, so a client
//!   dripping a byte at a time would otherwise hold a connection forever. One reaper task
//!   checks the deadlines every 250 ms, looking only at connections that are due (see
//!   [`Table`]), so no request pays for a timer of its own.
//! - Header limits: an HTTP/1 head is counted as it arrives and one over `limits.max_headers`
//!   or `limits.max_header_bytes` is answered `431` before Pingora parses it; HTTP/2 advertises
//!   the byte limit as `SETTINGS_MAX_HEADER_LIST_SIZE` (its codec answers `431` and never
//!   holds a larger list) and the edge's hook refuses more fields with the same `431`.
//! - The edge's request hooks tell the connection when a request starts ([`request_started`],
//!   whose guard ends it when dropped).

use crate::config;
use crate::metrics;
use async_trait::async_trait;
use futures_util::task::AtomicWaker;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// File descriptors kept free of client connections: upstream pools, Redis, spool files.
pub const FD_HEADROOM: u64 = 1024;

/// Raises the open-file limit to its hard maximum; returns the resulting soft limit.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
        r.rlim_cur
    }
}

/// The key a client address is counted under: an IPv4 address, or an IPv6 /64.
pub fn client_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u64::from(u32::from(v4)),
            // The top 64 bits, flagged so they never equal an IPv4 key.
            None => (u128::from(v6) >> 64) as u64 | (1 << 63),
        },
    }
}

/// The shared connection table and limits of the public listeners.
pub struct Conns {
    limits: config::Limits,
    max_connections: usize,
    open: AtomicUsize,
    per_ip: pingora_limits::inflight::Inflight,
    epoch: Instant,
    /// Every connection's phase, in lists ordered by when each entered its phase (see
    /// [`Table`]): the reaper and the eviction at the cap look only at the lists' fronts.
    table: Mutex<Table>,
    reaper: std::sync::Once,
}

/// How often deadlines are checked: a connection is closed at most this long after its deadline.
const REAP_EVERY: Duration = Duration::from_millis(250);

/// While the process stops, a keep-alive connection idle this long is closed: its client is
/// taken not to be sending a request at that moment. (Closing an idle connection always races
/// with a request its client may be sending; Pingora on its own closes every idle connection at
/// once, which loses the requests in flight on a busy edge.)
const DRAIN_IDLE: Duration = Duration::from_millis(200);

/// No node: the end of a list.
const NIL: u32 = u32::MAX;
/// The lists of [`Table`]: connections waiting for a request head, connections idle between
/// requests (both on a node's phase link), and connections whose writes are blocked (on its
/// second link, as a blocked connection is also in a phase).
const L_HEAD: usize = 0;
const L_IDLE: usize = 1;
const L_BLOCKED: usize = 2;
/// Request bodies being received, one node per request (its connection's), on the phase link.
const L_BODY: usize = 3;

/// A node's place in one list.
#[derive(Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
    /// Which list the node is on through this link (`None`: on none).
    on: Option<usize>,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
    on: None,
};

/// One connection in the table.
struct Node {
    conn: Weak<Shared>,
    /// `[0]`: the phase lists ([`L_HEAD`], [`L_IDLE`]); `[1]`: [`L_BLOCKED`].
    links: [Link; 2],
    /// When the connection entered its phase, in ms since `Conns::epoch`.
    since: u64,
    /// When its writes became blocked, in ms since `Conns::epoch`.
    blocked_since: u64,
    /// Requests in progress (HTTP/2: streams being served).
    active: u32,
    /// A request body's node (on [`L_BODY`]), not a connection's.
    body: bool,
}

/// Every connection's phase and deadlines, under one lock. Each list is in the order its
/// connections entered it, and a list's deadline is the same for all of them, so the front
/// of each list is the next due: the reaper pops due connections from the fronts and stops at
/// the first that is not due, and the eviction takes the older of the two phase lists' fronts.
/// Every change is O(1); a connection's phase and the time it began change together.
struct Table {
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// Front and back of each list.
    ends: [(u32, u32); 4],
}

fn link_of(list: usize) -> usize {
    usize::from(list == L_BLOCKED)
}

impl Table {
    fn new() -> Table {
        Table {
            nodes: Vec::new(),
            free: Vec::new(),
            ends: [(NIL, NIL); 4],
        }
    }

    fn insert(&mut self, conn: Weak<Shared>, now: u64, body: bool) -> u32 {
        let node = Node {
            conn,
            links: [UNLINKED; 2],
            since: now,
            blocked_since: 0,
            active: 0,
            body,
        };
        match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    fn remove(&mut self, i: u32) {
        self.unlink(i, 0);
        self.unlink(i, 1);
        self.nodes[i as usize].conn = Weak::new();
        self.free.push(i);
    }

    /// Appends node `i` to `list` (it must be on no list of that link).
    fn push_back(&mut self, i: u32, list: usize) {
        let l = link_of(list);
        let back = self.ends[list].1;
        self.nodes[i as usize].links[l] = Link {
            prev: back,
            next: NIL,
            on: Some(list),
        };
        if back == NIL {
            self.ends[list].0 = i;
        } else {
            self.nodes[back as usize].links[l].next = i;
        }
        self.ends[list].1 = i;
    }

    /// Takes node `i` off whatever list its link `l` is on.
    fn unlink(&mut self, i: u32, l: usize) {
        let Link { prev, next, on } = self.nodes[i as usize].links[l];
        let Some(list) = on else { return };
        if prev == NIL {
            self.ends[list].0 = next;
        } else {
            self.nodes[prev as usize].links[l].next = next;
        }
        if next == NIL {
            self.ends[list].1 = prev;
        } else {
            self.nodes[next as usize].links[l].prev = prev;
        }
        self.nodes[i as usize].links[l] = UNLINKED;
    }

    /// Moves node `i` to the back of phase list `list`, its phase beginning `now`.
    fn enter(&mut self, i: u32, list: usize, now: u64) {
        self.unlink(i, 0);
        self.nodes[i as usize].since = now;
        self.push_back(i, list);
    }

    /// The front of `list` if it has been there at least `wait` ms at `now`: taken off it.
    fn pop_due(&mut self, list: usize, now: u64, wait: u64) -> Option<u32> {
        let i = self.ends[list].0;
        if i == NIL {
            return None;
        }
        let n = &self.nodes[i as usize];
        let since = if list == L_BLOCKED {
            n.blocked_since
        } else {
            n.since
        };
        if now.saturating_sub(since) < wait {
            return None;
        }
        self.unlink(i, link_of(list));
        Some(i)
    }
}

impl Conns {
    /// A table enforcing `limits`, with `max_connections` open in all.
    pub fn new(limits: config::Limits, max_connections: usize) -> Conns {
        Conns {
            limits,
            max_connections,
            open: AtomicUsize::new(0),
            per_ip: pingora_limits::inflight::Inflight::new(),
            epoch: Instant::now(),
            table: Mutex::new(Table::new()),
            reaper: std::sync::Once::new(),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Closes the connection that has waited longest without a request in progress (idle
    /// between requests, waiting for a head or dripping one; HTTP/1 or HTTP/2); returns
    /// whether there was one.
    fn evict_idle(&self) -> bool {
        let victim = {
            let mut t = self.table();
            // The older of the two fronts (each list is in order of entry).
            let Some(i) = [t.ends[L_HEAD].0, t.ends[L_IDLE].0]
                .into_iter()
                .filter(|i| *i != NIL)
                .min_by_key(|i| t.nodes[*i as usize].since)
            else {
                return false;
            };
            t.unlink(i, 0);
            t.nodes[i as usize].conn.upgrade()
        };
        if let Some(s) = victim {
            s.close(EVICTED);
        }
        true
    }

    /// Every [`REAP_EVERY`], closes the connections whose deadline has passed: one task for
    /// all of them, so a request costs no timer of its own, and each round looks only at the
    /// connections due (the lists' fronts).
    async fn reap(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REAP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut due = Vec::new();
        loop {
            tick.tick().await;
            self.collect_due(&mut due);
            for (s, why) in due.drain(..) {
                s.close(why);
            }
        }
    }

    /// The connections past a deadline at this moment, each with why; taken off their lists.
    /// The caller drops them after the lock is released (the last reference to a connection
    /// takes the lock to leave the table).
    fn collect_due(&self, due: &mut Vec<(Arc<Shared>, u8)>) {
        let now = self.now_ms();
        let l = &self.limits;
        let mut t = self.table();
        for (list, wait, why) in [
            (L_HEAD, l.header_timeout, HEADER_TIMEOUT),
            (L_IDLE, l.keepalive_timeout, IDLE_TIMEOUT),
            (L_BLOCKED, l.send_timeout, SEND_TIMEOUT),
            (L_BODY, l.body_timeout, BODY_TIMEOUT),
        ] {
            let wait = wait.as_millis() as u64;
            while let Some(i) = t.pop_due(list, now, wait) {
                if let Some(s) = t.nodes[i as usize].conn.upgrade() {
                    due.push((s, why));
                }
            }
        }
    }

    /// When the process stops (reload, upgrade or SIGTERM), before Pingora closes every idle
    /// keep-alive connection at once: HTTP/1 connections in use finish their request (whose
    /// response then says `Connection: close`); those idle for [`DRAIN_IDLE`] are closed.
    /// Returns when no HTTP/1 connection is left, or after `within`. HTTP/2 connections get
    /// Pingora's GOAWAY instead.
    async fn drain(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let idle = DRAIN_IDLE.as_millis() as u64;
        loop {
            let now = self.now_ms();
            let mut left = 0;
            // Every connection is held until the lock is released: dropping the last
            // reference to one takes the lock to leave the table.
            let mut seen = Vec::new();
            {
                let t = self.table();
                for n in t.nodes.iter().filter(|n| !n.body) {
                    let Some(s) = n.conn.upgrade() else { continue };
                    let idle_long =
                        n.links[0].on == Some(L_IDLE) && now.saturating_sub(n.since) >= idle;
                    seen.push((s, idle_long));
                }
            }
            for (s, idle_long) in &seen {
                if s.h2 || s.kill.load(Ordering::Relaxed) != ALIVE {
                    continue;
                }
                left += 1;
                if *idle_long {
                    s.close(SHUTDOWN);
                }
            }
            drop(seen);
            if left == 0 || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes a place for a connection from `ip`, or says which cap refuses it.
    fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Places, &'static str> {
        let per_ip = match ip {
            Some(ip) => {
                let (guard, n) = self.per_ip.incr(client_key(ip), 1);
                if n as usize > self.limits.max_connections_per_ip {
                    return Err("per_ip");
                }
                Some(guard)
            }
            None => None,
        };
        let n = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let places = Places {
            conns: self.clone(),
            _per_ip: per_ip,
        };
        metrics::CONNECTIONS_OPEN.set(n as i64);
        // At the cap, room is made by closing the longest-idle connection (it goes within
        // moments, so the count runs over by at most the connections arriving meanwhile).
        if n > self.max_connections && !self.evict_idle() {
            return Err("global");
        }
        Ok(places)
    }

    /// Enters a new connection in the table, waiting for its first request head.
    fn register(self: &Arc<Self>, h2: bool) -> Arc<Shared> {
        let now = self.now_ms();
        let mut t = self.table();
        let shared = Arc::new_cyclic(|w| {
            let slot = t.insert(w.clone(), now, false);
            Shared {
                conns: self.clone(),
                slot,
                h2,
                phase: AtomicU8::new(HEAD),
                kill: AtomicU8::new(ALIVE),
                close_when_idle: std::sync::atomic::AtomicBool::new(false),
                read_waker: AtomicWaker::new(),
                write_waker: AtomicWaker::new(),
            }
        });
        t.push_back(shared.slot, L_HEAD);
        shared
    }
}

/// A connection's places in the counts, given back when it closes.
struct Places {
    conns: Arc<Conns>,
    _per_ip: Option<pingora_limits::inflight::Guard>,
}

impl Drop for Places {
    fn drop(&mut self) {
        let n = self.conns.open.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::CONNECTIONS_OPEN.set(n as i64);
    }
}

/// Between requests, no byte of the next head yet (HTTP/2: no stream open).
const IDLE: u8 = 0;
/// A request head is arriving (HTTP/2: the preface and first request are awaited).
const HEAD: u8 = 1;
/// A request is being served (HTTP/2: at least one stream).
const BUSY: u8 = 2;

/// Not to be closed.
const ALIVE: u8 = 0;
/// Closed to make room at the global cap.
const EVICTED: u8 = 1;
/// Closed: the request head took too long.
const HEADER_TIMEOUT: u8 = 2;
/// Closed: idle too long between requests.
const IDLE_TIMEOUT: u8 = 3;
/// Closed: idle while the process stops (a reload or shutdown drains it).
const SHUTDOWN: u8 = 4;
/// Closed: a write made no progress for `limits.send_timeout` (closed even while busy).
const SEND_TIMEOUT: u8 = 5;
/// Closed: a request body made no progress for `limits.body_timeout` (closed while busy).
const BODY_TIMEOUT: u8 = 6;

/// What the deadlines of one connection need, shared with the table (reaper, eviction) and
/// with the request hooks.
pub struct Shared {
    conns: Arc<Conns>,
    /// Its node in the table.
    slot: u32,
    /// An HTTP/2 connection (streams, no head-by-head reading).
    h2: bool,
    /// Its phase, as last set in the table (read without the lock by the I/O paths).
    phase: AtomicU8,
    /// Why the connection is to be closed at its next read or blocked write ([`ALIVE`]: it
    /// is not).
    kill: AtomicU8,
    /// Evicted just as a request began: closed once it has none left, so the cap holds.
    close_when_idle: std::sync::atomic::AtomicBool,
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
}

impl Shared {
    fn close(&self, why: u8) {
        // A send or body timeout closes even a busy connection: it overrides a pending
        // idle-side reason (which a request that began meanwhile would cancel).
        let hard = matches!(why, SEND_TIMEOUT | BODY_TIMEOUT);
        let set = self
            .kill
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now == ALIVE || hard && !matches!(now, SEND_TIMEOUT | BODY_TIMEOUT)).then_some(why)
            })
            .is_ok();
        if set {
            self.read_waker.wake();
            self.write_waker.wake();
        }
    }

    /// A request began: the connection is busy, on no deadline list.
    fn start(&self) {
        let mut t = self.conns.table();
        let n = &mut t.nodes[self.slot as usize];
        n.active += 1;
        if n.active == 1 {
            t.unlink(self.slot, 0);
            self.phase.store(BUSY, Ordering::Release);
        }
    }

    /// A request ended: with none left, the idle deadline starts (the clock is read under the
    /// lock, so each list stays in order of entry).
    fn finish(&self) {
        let mut t = self.conns.table();
        let now = self.conns.now_ms();
        let n = &mut t.nodes[self.slot as usize];
        n.active = n.active.saturating_sub(1);
        if n.active == 0 {
            t.enter(self.slot, L_IDLE, now);
            self.phase.store(IDLE, Ordering::Release);
            drop(t);
            if self.close_when_idle.load(Ordering::Acquire) {
                // Evicted while a request began: it was served, now it goes.
                self.close(EVICTED);
            }
        }
    }

    /// HTTP/1: the first byte of the next head arrived on an idle connection.
    fn head_begins(&self) {
        let mut t = self.conns.table();
        let now = self.conns.now_ms();
        if t.nodes[self.slot as usize].active == 0 {
            t.enter(self.slot, L_HEAD, now);
            self.phase.store(HEAD, Ordering::Release);
        }
    }

    /// A write could not proceed: the send deadline starts.
    fn blocked(&self) {
        let mut t = self.conns.table();
        let now = self.conns.now_ms();
        if t.nodes[self.slot as usize].links[1].on.is_none() {
            t.nodes[self.slot as usize].blocked_since = now;
            t.push_back(self.slot, L_BLOCKED);
        }
    }

    /// A write went through again: the send deadline stops.
    fn unblocked(&self) {
        self.conns.table().unlink(self.slot, 1);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.conns.table().remove(self.slot);
    }
}

/// A request in progress on its connection, held in the request's context: while any is held
/// the connection has no head or idle deadline and cannot be evicted; dropping the last one
/// (the request is done, however it ended) starts the idle deadline. While its body is being
/// received, the request is on the body list (`limits.body_timeout` without progress closes
/// the connection).
pub struct Busy {
    shared: Arc<Shared>,
    /// Its node on the body list, or [`NIL`].
    body: u32,
    /// When the body node was last moved, in ms since `Conns::epoch`.
    moved: u64,
}

/// Body progress moves a request's node at most this often (ms): a client sending its body a
/// byte at a time does not take the table's lock per byte, and the deadline is late by at
/// most this.
const BODY_MOVE_EVERY: u64 = 1000;

impl Busy {
    /// A piece of the request body arrived (`end`: the last): its deadline starts again, or
    /// stops.
    pub fn body_progress(&mut self, end: bool) {
        if self.body == NIL {
            return;
        }
        if end {
            self.shared.conns.table().remove(self.body);
            self.body = NIL;
            return;
        }
        let now = self.shared.conns.now_ms();
        if now.saturating_sub(self.moved) < BODY_MOVE_EVERY {
            return;
        }
        self.moved = now;
        let mut t = self.shared.conns.table();
        // Read again under the lock, so the list stays in order.
        let now = self.shared.conns.now_ms();
        t.enter(self.body, L_BODY, now);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.body != NIL {
            self.shared.conns.table().remove(self.body);
        }
        self.shared.finish();
    }
}

/// The connection a request arrived on: HTTP/1 through its stream, HTTP/2 through the TLS
/// digest its streams share.
fn shared_of(session: &pingora::protocols::http::ServerSession) -> Option<Arc<Shared>> {
    if let Some(c) = session
        .stream()
        .and_then(|s| s.as_any().downcast_ref::<Conn>())
    {
        return Some(c.shared.clone());
    }
    session
        .digest()?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<crate::tls::Handshake>()?
        .connection
        .get()?
        .clone()
        .downcast::<Shared>()
        .ok()
}

/// A request head arrived whole: the connection's header deadline stops until the returned
/// guard is dropped, and a request with a body is put under `limits.body_timeout`. `None`
/// for a connection not under the table (none on these listeners).
pub fn request_started(session: &mut pingora::protocols::http::ServerSession) -> Option<Busy> {
    let s = shared_of(session)?;
    s.start();
    let mut moved = 0;
    let body = if session.is_body_empty() {
        NIL
    } else {
        let mut t = s.conns.table();
        let now = s.conns.now_ms();
        moved = now;
        let i = t.insert(Arc::downgrade(&s), now, true);
        t.push_back(i, L_BODY);
        i
    };
    Some(Busy {
        shared: s,
        body,
        moved,
    })
}

/// Whether a request's header is over `limits.max_headers` or `limits.max_header_bytes`:
/// `Some("fields" | "bytes")` names the limit exceeded. Bytes are counted as each protocol
/// counts them: a field's name and value plus 32 over HTTP/2 (its header-list size), plus the
/// 4 bytes of `: ` and CRLF over HTTP/1.
pub fn header_excess(
    limits: &config::Limits,
    req: &pingora::http::RequestHeader,
    http2: bool,
) -> Option<&'static str> {
    if req.headers.len() > limits.max_headers {
        return Some("fields");
    }
    let overhead = if http2 { 32 } else { 4 };
    // HTTP/1 counts the request line too (`GET /path HTTP/1.1\r\n`), as the head's bytes do.
    let line = if http2 {
        0
    } else {
        req.method.as_str().len() + req.raw_path().len() + 12
    };
    let bytes: u64 = line as u64
        + req
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().len() + v.len() + overhead) as u64)
            .sum::<u64>();
    (bytes > limits.max_header_bytes).then_some("bytes")
}

/// The body of the `431` for a request header over the limits, on either protocol.
pub const HEADER_TOO_LARGE_BODY: &[u8] = b"431 Request Header Fields Too Large\n";

/// The whole HTTP/1 answer written when a head is refused before Pingora parses it.
const HEADER_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
Connection: close\r\nContent-Type: text/plain\r\nCache-Control: no-store, max-age=0\r\n\
Content-Length: 36\r\n\r\n431 Request Header Fields Too Large\n";

/// Counts an HTTP/1 head's lines and bytes as they arrive, so a head over the limits is
/// refused before Pingora parses it (Pingora's own parser refuses over 256 fields or 1 MiB
/// with a `400`, and would buffer up to that much). Public for its fuzz target.
#[derive(Debug, Default)]
pub struct HeadScan {
    /// Lines seen, the request line included (blank lines before it not counted).
    lines: usize,
    /// Bytes of the head seen.
    bytes: u64,
    /// Bytes of the current line so far.
    line: usize,
    /// The last byte seen (to tell `\r\n` from `\n` across reads).
    last: u8,
    /// The head's blank line was seen: nothing more to count until the next head.
    done: bool,
}

/// What a [`HeadScan`] concluded from the bytes it saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// Within the limits so far.
    Ok,
    /// The head ended.
    Done,
    /// Over a limit (`"fields"`, `"bytes"`).
    Over(&'static str),
}

impl HeadScan {
    /// Bytes of the head counted so far (the whole head, its blank line included, once
    /// [`Scan::Done`]).
    pub fn consumed(&self) -> u64 {
        self.bytes
    }

    /// Counts `data`, the next bytes of the connection, against at most `max_fields` header
    /// fields (after the request line) and `max_bytes`. The whole chunk is scanned even past a
    /// limit, so the head's end is found (a refused head is discarded up to it).
    pub fn feed(&mut self, data: &[u8], max_fields: usize, max_bytes: u64) -> Scan {
        if self.done {
            return Scan::Ok;
        }
        let mut start = 0;
        let mut end = data.len();
        for p in memchr::memchr_iter(b'\n', data) {
            let len = self.line + (p - start);
            let before = if p > start { data[p - 1] } else { self.last };
            let blank = len == 0 || (len == 1 && before == b'\r');
            self.line = 0;
            start = p + 1;
            if blank && self.lines > 0 {
                end = start;
                self.done = true;
                break;
            }
            if !blank {
                self.lines += 1;
            }
        }
        if !self.done {
            self.line += data.len() - start;
            self.last = *data.last().unwrap_or(&self.last);
        }
        self.bytes += end as u64;
        if self.lines > max_fields.saturating_add(1) {
            Scan::Over("fields")
        } else if self.bytes > max_bytes {
            Scan::Over("bytes")
        } else if self.done {
            Scan::Done
        } else {
            Scan::Ok
        }
    }
}

/// A connection under the deadlines and caps (see the module documentation).
pub struct Conn {
    inner: Stream,
    shared: Arc<Shared>,
    /// HTTP/1: the head now arriving, counted against the header limits.
    scan: HeadScan,
    /// HTTP/1: a head over the limits was answered `431`; the rest of it is read and
    /// discarded (so closing does not reset the answer away), then the connection closes.
    refusing: Option<&'static str>,
    /// Writes are blocked (its node is on the blocked list).
    blocked: bool,
    /// The close was counted.
    counted: bool,
    _places: Places,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("inner", &self.inner).finish()
    }
}

impl Conn {
    /// The error to end the connection with, when it is to be closed: counted once. A
    /// connection that became busy after an idle-side decision is kept (its request is served).
    fn killed(&mut self) -> Option<std::io::Error> {
        let why = self.shared.kill.load(Ordering::Acquire);
        if why == ALIVE {
            return None;
        }
        if why != SEND_TIMEOUT
            && why != BODY_TIMEOUT
            && self.shared.phase.load(Ordering::Acquire) == BUSY
        {
            // A request began after the decision: it is served (an evicted connection then
            // goes once it is idle, so the count comes back under the cap).
            if why == EVICTED {
                self.shared.close_when_idle.store(true, Ordering::Release);
            }
            let _ =
                self.shared
                    .kill
                    .compare_exchange(why, ALIVE, Ordering::AcqRel, Ordering::Acquire);
            if why == EVICTED && self.shared.phase.load(Ordering::Acquire) != BUSY {
                // It went idle meanwhile (its finish saw no flag yet): close it now.
                self.shared.close(EVICTED);
            }
            return None;
        }
        let (reason, kind) = match why {
            EVICTED => ("evicted", std::io::ErrorKind::ConnectionAborted),
            HEADER_TIMEOUT => ("header_timeout", std::io::ErrorKind::TimedOut),
            SHUTDOWN => ("shutdown", std::io::ErrorKind::ConnectionAborted),
            SEND_TIMEOUT => ("send_timeout", std::io::ErrorKind::TimedOut),
            BODY_TIMEOUT => ("body_timeout", std::io::ErrorKind::TimedOut),
            _ => ("idle_timeout", std::io::ErrorKind::TimedOut),
        };
        if !std::mem::replace(&mut self.counted, true) {
            metrics::connection_closed(reason).inc();
        }
        Some(std::io::Error::new(kind, reason))
    }

    /// Counts `data` (just read) against the header limits; on a head over them, answers
    /// `431` and starts discarding what is left of it.
    fn check_head(&mut self, cx: &mut Context<'_>, data: &[u8]) {
        let l = &self.shared.conns.limits;
        if let Scan::Over(limit) = self.scan.feed(data, l.max_headers, l.max_header_bytes) {
            metrics::header_refused("http1", limit).inc();
            // Best effort: a fresh connection's send buffer takes it whole.
            let _ = Pin::new(&mut self.inner).poll_write(cx, HEADER_TOO_LARGE);
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
            self.refusing = Some(limit);
        }
    }

    /// Discards what arrives of a refused head until its end (or the peer's), then fails.
    fn poll_refusing(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut scratch = [0u8; 4096];
        while !self.scan.done {
            let mut b = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut b) {
                Poll::Ready(Ok(())) if !b.filled().is_empty() => {
                    // Keep counting only to find the head's end; limits no longer matter.
                    let filled = b.filled().len();
                    if self.scan.feed(&scratch[..filled], usize::MAX - 1, u64::MAX) == Scan::Done {
                        break;
                    }
                }
                Poll::Ready(_) => break,
                Poll::Pending => {
                    self.shared.read_waker.register(cx.waker());
                    if let Some(e) = self.killed() {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Pending;
                }
            }
        }
        if !std::mem::replace(&mut self.counted, true) {
            metrics::connection_closed("header_too_large").inc();
        }
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "request header over limits.max_headers or limits.max_header_bytes",
        )))
    }

    /// After a write attempt: a blocked write starts the send deadline, progress stops it.
    fn wrote<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Pending => {
                self.shared.write_waker.register(cx.waker());
                if let Some(e) = self.killed() {
                    return Poll::Ready(Err(e));
                }
                if !self.blocked {
                    self.blocked = true;
                    self.shared.blocked();
                }
                Poll::Pending
            }
            ready => {
                if self.blocked {
                    self.blocked = false;
                    self.shared.unblocked();
                }
                ready
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.refusing.is_some() {
            return this.poll_refusing(cx);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                // A send or body timeout closes a client that keeps the socket readable too
                // (an idle-side reason waits for a read that waits: the data may be a request).
                if matches!(
                    this.shared.kill.load(Ordering::Acquire),
                    SEND_TIMEOUT | BODY_TIMEOUT
                ) && let Some(e) = this.killed()
                {
                    buf.set_filled(before);
                    return Poll::Ready(Err(e));
                }
                if this.shared.h2 || buf.filled().len() == before {
                    return Poll::Ready(Ok(()));
                }
                if this.shared.phase.load(Ordering::Relaxed) == IDLE {
                    this.shared.head_begins();
                    this.scan = HeadScan::default();
                }
                if this.shared.phase.load(Ordering::Relaxed) == HEAD {
                    this.check_head(cx, &buf.filled()[before..]);
                    if this.refusing.is_some() {
                        // Pingora never sees the refused head.
                        buf.set_filled(before);
                        return this.poll_refusing(cx);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                this.shared.read_waker.register(cx.waker());
                match this.killed() {
                    Some(e) => Poll::Ready(Err(e)),
                    None => Poll::Pending,
                }
            }
            other => other,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(cx, r)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.wrote(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.wrote(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Conn {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(self.inner.as_mut()).await
    }
}

impl UniqueID for Conn {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Conn {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Conn {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Conn {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Conn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Conn {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// A listener application under the caps and deadlines: admits or refuses each connection,
/// terminates TLS on the HTTPS address within `limits.handshake_timeout`, wraps every
/// connection (HTTP/1 and HTTP/2) in a [`Conn`], and hands it to `inner`.
pub struct Guarded<A> {
    inner: Arc<A>,
    conns: Arc<Conns>,
    tls: Option<(std::net::SocketAddr, crate::tls::Terminator)>,
    drain_within: Duration,
}

impl<A> Guarded<A> {
    /// `inner` behind the caps and deadlines of `conns`; connections accepted on the address of
    /// `tls` get its TLS handshake first.
    pub fn new(
        inner: A,
        conns: Arc<Conns>,
        tls: Option<(std::net::SocketAddr, crate::tls::Terminator)>,
    ) -> Guarded<A> {
        Guarded {
            inner: Arc::new(inner),
            conns,
            tls,
            drain_within: Duration::ZERO,
        }
    }

    /// At shutdown, lets the connections in use finish for up to `within` before the rest are
    /// closed (see [`Conns::drain`]); keep it under the grace period, after which Pingora stops
    /// the runtime.
    pub fn drain_within(mut self, within: Duration) -> Guarded<A> {
        self.drain_within = within;
        self
    }

    /// The TLS terminator if `stream` was accepted on the HTTPS listener.
    fn tls_for(&self, stream: &Stream) -> Option<&crate::tls::Terminator> {
        let (addr, term) = self.tls.as_ref()?;
        let local = stream
            .get_socket_digest()?
            .local_addr()?
            .as_inet()
            .copied()?;
        let ours =
            local.port() == addr.port() && (addr.ip().is_unspecified() || addr.ip() == local.ip());
        ours.then_some(term)
    }
}

/// What a refused HTTP/1 client reads before the connection closes.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
Retry-After: 1\r\nContent-Length: 0\r\n\r\n";

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let tls = self.tls_for(&stream);
        let places = match self.conns.admit(ip) {
            Ok(p) => p,
            Err(reason) => {
                metrics::connection_refused(reason).inc();
                if tls.is_none() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(REFUSED))
                        .await;
                }
                return None;
            }
        };
        if let Some(term) = tls {
            match tokio::time::timeout(self.conns.limits.handshake_timeout, term.accept(stream))
                .await
            {
                Ok(Ok(s)) => stream = s,
                Ok(Err(e)) => {
                    metrics::connection_closed("handshake_failed").inc();
                    tracing::debug!(client = ?ip, error = %e, "TLS handshake failed");
                    return None;
                }
                Err(_) => {
                    metrics::connection_closed("handshake_timeout").inc();
                    return None;
                }
            }
        }
        self.conns
            .reaper
            .call_once(|| drop(tokio::spawn(self.conns.clone().reap())));
        let h2 = stream.selected_alpn_proto() == Some(ALPN::H2);
        let shared = self.conns.register(h2);
        if h2 {
            // HTTP/2 requests find their connection through the digest their streams share.
            let handshake = stream.get_ssl_digest();
            match handshake
                .as_ref()
                .and_then(|d| d.extension.get::<crate::tls::Handshake>())
            {
                Some(h) => {
                    let _ = h.connection.set(shared.clone());
                }
                // Its streams could not mark it busy: it would be closed while serving.
                None => {
                    tracing::error!("HTTP/2 connection without handshake details: closed");
                    return None;
                }
            }
        }
        let conn = Conn {
            inner: stream,
            shared,
            scan: HeadScan::default(),
            refusing: None,
            blocked: false,
            counted: false,
            _places: places,
        };
        self.inner.process_new(Box::new(conn), shutdown).await
    }

    async fn cleanup(&self) {
        self.conns.drain(self.drain_within).await;
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_counted_per_64_and_never_meets_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(v4), client_key(mapped));
        assert_ne!(
            client_key("0.0.0.1".parse().unwrap()),
            client_key("::1".parse().unwrap())
        );
    }

    /// Node ids on `list`, front to back.
    fn order(t: &Table, list: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = t.ends[list].0;
        while i != NIL {
            out.push(i);
            i = t.nodes[i as usize].links[link_of(list)].next;
        }
        out
    }

    #[test]
    fn lists_keep_entry_order_and_pop_only_what_is_due() {
        let mut t = Table::new();
        let ids: Vec<u32> = (0..4)
            .map(|n| t.insert(Weak::new(), n * 10, false))
            .collect();
        for &i in &ids {
            t.push_back(i, L_HEAD);
        }
        // Node 1 gets a request, then idles at 50; node 2 idles at 60.
        t.unlink(ids[1], 0);
        t.enter(ids[1], L_IDLE, 50);
        t.enter(ids[2], L_IDLE, 60);
        assert_eq!(order(&t, L_HEAD), vec![ids[0], ids[3]]);
        assert_eq!(order(&t, L_IDLE), vec![ids[1], ids[2]]);
        // At 65 with a wait of 10: node 1 (idle since 50) is due, node 2 (since 60) is not.
        assert_eq!(t.pop_due(L_IDLE, 65, 10), Some(ids[1]));
        assert_eq!(t.pop_due(L_IDLE, 65, 10), None);
        assert_eq!(order(&t, L_IDLE), vec![ids[2]]);
        // Blocked writes live on their own link: a node can be in a phase and blocked.
        t.nodes[ids[3] as usize].blocked_since = 70;
        t.push_back(ids[3], L_BLOCKED);
        assert_eq!(order(&t, L_HEAD), vec![ids[0], ids[3]]);
        assert_eq!(t.pop_due(L_BLOCKED, 75, 10), None);
        assert_eq!(t.pop_due(L_BLOCKED, 80, 10), Some(ids[3]));
        // A removed node leaves every list and its slot is reused.
        t.remove(ids[0]);
        assert_eq!(order(&t, L_HEAD), vec![ids[3]]);
        assert_eq!(t.insert(Weak::new(), 90, false), ids[0]);
    }

    fn feed_all(chunks: &[&[u8]], fields: usize, bytes: u64) -> Scan {
        let mut s = HeadScan::default();
        let mut last = Scan::Ok;
        for c in chunks {
            last = s.feed(c, fields, bytes);
            if last != Scan::Ok {
                break;
            }
        }
        last
    }

    #[test]
    fn a_head_is_counted_across_reads() {
        let head: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n";
        assert_eq!(feed_all(&[head], 2, 1024), Scan::Done);
        assert_eq!(feed_all(&[head], 1, 1024), Scan::Over("fields"));
        assert_eq!(feed_all(&[head], 2, 20), Scan::Over("bytes"));
        // Split anywhere, even between \r and \n of the blank line: the same verdicts.
        for cut in 1..head.len() {
            let (a, b) = head.split_at(cut);
            assert_eq!(feed_all(&[a, b], 2, 1024), Scan::Done, "cut at {cut}");
            assert_eq!(
                feed_all(&[a, b], 1, 1024),
                Scan::Over("fields"),
                "cut at {cut}"
            );
        }
        // Bare \n line ends, and blank lines before the request line, as httparse takes them.
        assert_eq!(
            feed_all(&[b"\r\nGET / HTTP/1.1\nHost: a\n\n"], 1, 1024),
            Scan::Done
        );
        // What follows the head (a body, a pipelined request) is not counted.
        let mut s = HeadScan::default();
        assert_eq!(
            s.feed(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nA: b\r\n", 0, 1024),
            Scan::Done
        );
        assert_eq!(s.feed(b"B: c\r\n", 0, 1024), Scan::Ok);
    }

    #[tokio::test]
    async fn caps_refuse_and_give_places_back() {
        let limits = config::Limits {
            max_connections_per_ip: 2,
            ..config::Limits::default()
        };
        let conns = Arc::new(Conns::new(limits, 3));
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let a1 = conns.admit(ip("192.0.2.1")).unwrap();
        let _a2 = conns.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(conns.admit(ip("192.0.2.1")).err(), Some("per_ip"));
        let _b1 = conns.admit(ip("192.0.2.2")).unwrap();
        // No idle HTTP/1 connection to close: refused.
        assert_eq!(conns.admit(ip("192.0.2.3")).err(), Some("global"));
        drop(a1);
        assert!(conns.admit(ip("192.0.2.1")).is_ok());
    }
}
