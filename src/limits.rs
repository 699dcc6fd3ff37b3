//! Connection limits on the public listeners: what keeps one client from making the edge
//! unreachable for everyone else.
//!
//! - Caps: every accepted connection takes a place in the global count and in its client
//!   address's count (IPv6 grouped by /64, counted with `pingora-limits`' `Inflight`). Over the
//!   per-address cap the connection gets a `503` (HTTP/1) and is closed at once. At the global
//!   cap the HTTP/1 connection idle for longest (between requests, or dripping a head) is
//!   closed to make room, so new clients are still served; only when none is idle is the new
//!   one refused.
//! - Deadlines: each HTTP/1 connection is wrapped in a [`Conn`] that is closed when a request
//!   head has not fully arrived within `limits.header_timeout` (from the accept for the first
//!   request, from its first byte for the next ones, however slowly the bytes come), or when it
//!   sits idle between requests for `limits.keepalive_timeout`. Pingora's own timeouts apply
//!   per read, so a client dripping a byte at a time would otherwise hold a connection forever.
//!   One reaper task checks every connection's deadline every 250 ms, so no request pays for a
//!   timer of its own.
//! - The edge's request hooks tell the connection when a head is complete
//!   ([`request_started`]) and when the response is done ([`request_finished`]).
//!
//! HTTP/2 connections are counted against the caps; their idle time and stream count are
//! bounded by Pingora's HTTP/2 options (`h2_idle_timeout`, `max_concurrent_streams`).

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
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
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
    /// Every HTTP/1 connection's deadline state, for the reaper and to find the one idle for
    /// longest at the cap.
    live: Mutex<HashMap<u64, Weak<Shared>>>,
    next_id: AtomicU64,
    reaper: std::sync::Once,
}

/// How often deadlines are checked: a connection is closed at most this long after its deadline.
const REAP_EVERY: Duration = Duration::from_millis(250);

/// While the process stops, a keep-alive connection idle this long is closed: its client is
/// taken not to be sending a request at that moment. (Closing an idle connection always races
/// with a request its client may be sending; Pingora on its own closes every idle connection at
/// once, which loses the requests in flight on a busy edge.)
const DRAIN_IDLE: Duration = Duration::from_millis(200);

impl Conns {
    /// A table enforcing `limits`, with `max_connections` open in all.
    pub fn new(limits: config::Limits, max_connections: usize) -> Conns {
        Conns {
            limits,
            max_connections,
            open: AtomicUsize::new(0),
            per_ip: pingora_limits::inflight::Inflight::new(),
            epoch: Instant::now(),
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            reaper: std::sync::Once::new(),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<Shared>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the HTTP/1 connection that has waited longest without a request in progress;
    /// returns whether there was one.
    fn evict_idle(&self) -> bool {
        // Oldest first; connections idle since the same microsecond go in accept order.
        let victim = self
            .live()
            .iter()
            .filter_map(|(id, w)| Some((*id, w.upgrade()?)))
            .filter(|(_, s)| {
                s.phase.load(Ordering::Relaxed) != BUSY && s.kill.load(Ordering::Relaxed) == ALIVE
            })
            .min_by_key(|(id, s)| (s.since.load(Ordering::Relaxed), *id));
        match victim {
            Some((_, s)) => {
                s.close(EVICTED);
                true
            }
            None => false,
        }
    }

    /// Every [`REAP_EVERY`], closes the connections whose deadline has passed: one task for
    /// all of them, so a request costs no timer of its own.
    async fn reap(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REAP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = self.now_us();
            let header = self.limits.header_timeout.as_micros() as u64;
            let idle = self.limits.keepalive_timeout.as_micros() as u64;
            for s in self.live().values().filter_map(Weak::upgrade) {
                let waited = now.saturating_sub(s.since.load(Ordering::Relaxed));
                match s.phase.load(Ordering::Relaxed) {
                    HEAD if waited >= header => s.close(HEADER_TIMEOUT),
                    IDLE if waited >= idle => s.close(IDLE_TIMEOUT),
                    _ => {}
                }
            }
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// When the process stops (reload, upgrade or SIGTERM), before Pingora closes every idle
    /// keep-alive connection at once: connections in use finish their request (whose response
    /// then says `Connection: close`); connections idle for [`DRAIN_IDLE`] are closed. Returns
    /// when no HTTP/1 connection is left, or after `within`.
    async fn drain(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let idle = DRAIN_IDLE.as_micros() as u64;
        loop {
            let now = self.now_us();
            let mut left = 0;
            for s in self.live().values().filter_map(Weak::upgrade) {
                if s.kill.load(Ordering::Relaxed) != ALIVE {
                    continue;
                }
                left += 1;
                if s.phase.load(Ordering::Relaxed) == IDLE
                    && now.saturating_sub(s.since.load(Ordering::Relaxed)) >= idle
                {
                    s.close(SHUTDOWN);
                }
            }
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

/// Between requests, no byte of the next head yet.
const IDLE: u8 = 0;
/// A request head is arriving.
const HEAD: u8 = 1;
/// A request is being served.
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

/// What the deadlines of one connection need, shared with the table (reaper, eviction) and
/// with the request hooks.
struct Shared {
    phase: AtomicU8,
    /// When the phase began, in µs since `conns.epoch`.
    since: AtomicU64,
    /// Why the connection is to be closed at its next read ([`ALIVE`]: it is not).
    kill: AtomicU8,
    waker: AtomicWaker,
}

impl Shared {
    fn close(&self, why: u8) {
        if self
            .kill
            .compare_exchange(ALIVE, why, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.waker.wake();
        }
    }
}

/// An HTTP/1 connection under the deadlines (see the module documentation).
pub struct Conn {
    inner: Stream,
    conns: Arc<Conns>,
    id: u64,
    shared: Arc<Shared>,
    _places: Places,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.conns.live().remove(&self.id);
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("inner", &self.inner).finish()
    }
}

impl Conn {
    fn enter(&self, phase: u8) {
        self.shared
            .since
            .store(self.conns.now_us(), Ordering::Relaxed);
        self.shared.phase.store(phase, Ordering::Relaxed);
    }
}

fn conn_of(session: &pingora::protocols::http::ServerSession) -> Option<&Conn> {
    session.stream()?.as_any().downcast_ref::<Conn>()
}

/// A request head arrived whole: the header deadline stops. No clock is read: a busy
/// connection has no deadline and is never evicted, so when it became busy does not matter.
pub fn request_started(session: &pingora::protocols::http::ServerSession) {
    if let Some(c) = conn_of(session) {
        c.shared.phase.store(BUSY, Ordering::Relaxed);
    }
}

/// The response is done: the idle deadline starts.
pub fn request_finished(session: &pingora::protocols::http::ServerSession) {
    if let Some(c) = conn_of(session) {
        c.enter(IDLE);
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.shared.phase.load(Ordering::Relaxed) == IDLE
                {
                    this.enter(HEAD);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                this.shared.waker.register(cx.waker());
                let why = this.shared.kill.load(Ordering::Relaxed);
                if why == ALIVE {
                    return Poll::Pending;
                }
                if this.shared.phase.load(Ordering::Relaxed) == BUSY {
                    // A request began after the decision: it is served.
                    this.shared.kill.store(ALIVE, Ordering::Relaxed);
                    return Poll::Pending;
                }
                let (reason, kind) = match why {
                    EVICTED => ("evicted", std::io::ErrorKind::ConnectionAborted),
                    HEADER_TIMEOUT => ("header_timeout", std::io::ErrorKind::TimedOut),
                    SHUTDOWN => ("shutdown", std::io::ErrorKind::ConnectionAborted),
                    _ => ("idle_timeout", std::io::ErrorKind::TimedOut),
                };
                metrics::connection_closed(reason).inc();
                Poll::Ready(Err(std::io::Error::new(kind, reason)))
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
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
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
/// terminates TLS on the HTTPS address within `limits.handshake_timeout`, wraps HTTP/1
/// connections in a [`Conn`], and hands them to `inner`.
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
        if stream.selected_alpn_proto() == Some(ALPN::H2) {
            // HTTP/2's own idle timeout and stream cap apply; the places are held until the
            // connection ends.
            let r = self.inner.process_new(stream, shutdown).await;
            drop(places);
            return r;
        }
        self.conns
            .reaper
            .call_once(|| drop(tokio::spawn(self.conns.clone().reap())));
        let shared = Arc::new(Shared {
            phase: AtomicU8::new(HEAD),
            since: AtomicU64::new(self.conns.now_us()),
            kill: AtomicU8::new(ALIVE),
            waker: AtomicWaker::new(),
        });
        let id = self.conns.next_id.fetch_add(1, Ordering::Relaxed);
        self.conns.live().insert(id, Arc::downgrade(&shared));
        let conn = Conn {
            inner: stream,
            conns: self.conns.clone(),
            id,
            shared,
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
