//! Click and open events: what one looks like, and the hand-off from the request path.
//!
//! The request path calls [`Recorder::record`], which never waits for Redis: the event goes into a
//! bounded in-memory queue, or, when the queue is full, straight into the on-disk [`spool`]. The
//! [`writer`] drains the queue into a Redis stream in pipelined batches and replays the spool when
//! Redis is reachable. Every event ends written, spooled, or counted in
//! `linkedge_events_dropped_total` with a reason.

pub mod spool;
pub mod writer;

use crate::metrics;
use crossbeam_queue::ArrayQueue;
use serde::{Deserialize, Serialize};
use spool::Spool;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// One click or open, as written to the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event (32 hex digits: a per-process random half and a counter), so consumers
    /// can drop duplicates.
    pub id: String,
    /// `click` or `open`.
    #[serde(rename = "type")]
    pub kind: String,
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
    /// Destination (clicks; empty for opens).
    pub url: String,
    /// Client IP (the TCP peer, or `X-Forwarded-For` from a trusted proxy).
    pub ip: String,
    /// `User-Agent`, possibly empty.
    pub ua: String,
    /// `Referer`, possibly empty.
    pub referer: String,
}

impl Event {
    /// The stream entry's field/value pairs, in a fixed order (`url` only for clicks).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("id", self.id.clone()),
            ("type", self.kind.clone()),
            ("ts", self.ts.to_string()),
            ("host", self.host.clone()),
            ("workspace", self.workspace.to_string()),
            ("message", self.message.to_string()),
            ("link", self.link.to_string()),
        ];
        if self.kind == "click" {
            f.push(("url", self.url.clone()));
        }
        f.push(("ip", self.ip.clone()));
        f.push(("ua", self.ua.clone()));
        f.push(("referer", self.referer.clone()));
        f
    }
}

/// The request path's handle on event recording, shared with the writer.
pub struct Recorder {
    queue: ArrayQueue<Event>,
    notify: Notify,
    spool: Mutex<Spool>,
    /// The batch the writer is sending; spooled on shutdown if the send never finished.
    inflight: Mutex<Option<Arc<Vec<Event>>>>,
    node: u64,
    counter: AtomicU64,
    /// Set by the writer while it waits on an empty queue: only then does `record` wake it, so
    /// under load the request path never pays for a wake-up (or a context switch).
    writer_idle: AtomicBool,
}

impl Recorder {
    /// A recorder with a queue of `capacity` events in front of `spool`.
    pub fn new(capacity: usize, spool: Spool) -> Recorder {
        Recorder {
            queue: ArrayQueue::new(capacity),
            notify: Notify::new(),
            spool: Mutex::new(spool),
            inflight: Mutex::new(None),
            node: rand::random(),
            counter: AtomicU64::new(0),
            writer_idle: AtomicBool::new(false),
        }
    }

    /// A fresh event id, unique across processes (random per process) and within one (a counter).
    pub fn next_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{:016x}", self.node, n)
    }

    /// Hands an event over without waiting: into the queue, or into the spool when the queue is
    /// full.
    pub fn record(&self, ev: Event) {
        match self.queue.push(ev) {
            Ok(()) => {
                if self.writer_idle.load(Ordering::Relaxed)
                    && self.writer_idle.swap(false, Ordering::AcqRel)
                {
                    self.notify.notify_one();
                }
            }
            Err(ev) => {
                let mut spool = self.lock_spool();
                spool.append(std::slice::from_ref(&ev), false);
            }
        }
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
        metrics::EVENT_QUEUE_DEPTH.set(self.queue.len() as i64);
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
    /// restart replays it. Returns how many events were moved.
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
        spool.sync();
        n
    }
}
