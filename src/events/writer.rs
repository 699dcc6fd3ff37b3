//! The background writer: drains the event queue into a Redis stream with pipelined `XADD`, sends
//! batches to the spool while Redis is slow or down, and replays the spool in order when it is
//! back.

use super::spool::Chunk;
use super::{Event, Recorder};
use crate::metrics;
use crate::store::{Conn, Db};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the writer writes.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// The Redis of the stream (its own connection: a pipeline of thousands of events must not
    /// sit in front of a handshake's certificate read).
    pub db: Db,
    /// Stream key.
    pub stream: String,
    /// `MAXLEN ~` cap; 0 for none.
    pub maxlen: u64,
    /// Most events per pipeline.
    pub batch_max: usize,
    /// Longest time an event is held only in memory (`events.memory_window`).
    pub memory_window: Duration,
    /// Replicas that must hold a batch before it counts as written (`events.min_replicas`);
    /// 0 trusts the master's acknowledgement.
    pub min_replicas: u32,
    /// How long each `WAIT` for them may take (`events.replica_timeout`).
    pub replica_timeout: Duration,
    /// A key in the stream's hash slot, written when replay must confirm replication of
    /// events it found already in the stream and has nothing to write
    /// ([`crate::store::keys::replication_marker`]).
    pub marker: String,
}

/// Why a batch is not known written: Redis failed or gave no answer, or it answered but fewer
/// than `events.min_replicas` replicas confirmed within `events.replica_timeout`. Either way the
/// batch may be in the stream or not: it is spooled as uncertain.
#[derive(Debug)]
enum WriteError {
    Redis(redis::RedisError),
    Unreplicated { confirmed: i64, wanted: u32 },
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Redis(e) => e.fmt(f),
            WriteError::Unreplicated { confirmed, wanted } => write!(
                f,
                "{confirmed} of {wanted} replica(s) confirmed within events.replica_timeout"
            ),
        }
    }
}

impl From<redis::RedisError> for WriteError {
    fn from(e: redis::RedisError) -> Self {
        WriteError::Redis(e)
    }
}

/// The writer, run as a Pingora background service.
pub struct Writer {
    recorder: Arc<Recorder>,
    cfg: WriterConfig,
}

/// Longest idle wait between queue checks.
const IDLE_TICK: Duration = Duration::from_millis(50);
/// Wait between replay attempts while the spool holds events Redis did not take.
const BACKLOG_TICK: Duration = Duration::from_millis(20);
/// While events keep coming, the writer waits this long between batches so each pipeline carries
/// many events; it bounds how late an event reaches the stream under load.
const LINGER: Duration = Duration::from_millis(1);
/// The same while events go to the spool (Redis away): longer, so each compressed frame holds
/// enough events to compress well (about 25 bytes an event at 100 or more, 48 at 16). It bounds
/// how long an event waits in memory during an outage: what a `kill -9` then can lose.
pub const SPOOL_LINGER: Duration = Duration::from_millis(10);
/// How often the spool directory is checked for events an exited process left (after an
/// upgrade, the old process spools what it could not write when it stops).
const ADOPT_EVERY: Duration = Duration::from_secs(1);

impl Writer {
    /// A writer draining `recorder`.
    pub fn new(recorder: Arc<Recorder>, cfg: WriterConfig) -> Writer {
        Writer { recorder, cfg }
    }
}

/// The writer's view of Redis: whether the last attempt worked (to log changes once), and
/// what it knows for de-duplicating replays. Reconnecting and backing off are the
/// [`Db`]'s: while it backs off, `conn()` fails at once and batches go to the spool.
struct StreamState {
    healthy: bool,
    /// When the last "unavailable" warning was logged.
    warned_at: Instant,
    /// Bumped whenever a batch is spooled as uncertain (sent, outcome unknown).
    uncertain_gen: u64,
    /// The stream's recent ids, fetched after the latest uncertain batch (with its generation),
    /// so replaying many chunks costs one look-up per failure, not one per chunk.
    recent: Option<(u64, HashMap<String, String>)>,
    /// Batches spilled to the spool while Redis was slow, whose fate this process learned
    /// afterwards: `true` written (replay skips them), `false` never sent (replay writes them).
    /// Replay of those needs no look-up in the stream; only a restart loses this knowledge.
    settled: std::collections::HashMap<super::EventId, bool>,
    /// Events of the spool's current chunk that a replay sent without learning their fate (no
    /// answer, or too few replicas): they may be in the stream, so the next replay of the
    /// chunk looks them up like uncertain events instead of writing them twice. At most one
    /// chunk's worth: replay retries the same chunk until it commits.
    sent: HashSet<super::EventId>,
}

/// While writes keep failing, the warning is repeated this often.
const STILL_FAILING_EVERY: Duration = Duration::from_secs(30);

/// Most events whose fate [`StreamState::settled`] remembers; past it, replay asks the stream.
const SETTLED_MAX: usize = 1 << 20;

impl StreamState {
    fn settle(&mut self, batch: &[Event], written: bool) {
        if self.settled.len() + batch.len() > SETTLED_MAX {
            self.settled.clear();
        }
        self.settled.extend(batch.iter().map(|e| (e.id, written)));
    }

    fn failed(&mut self, err: &dyn std::fmt::Display) {
        // Said when it starts, and again every half minute while it lasts: a failure that
        // repeats is never silent.
        if self.healthy || self.warned_at.elapsed() >= STILL_FAILING_EVERY {
            tracing::warn!(error = %err, "events not confirmed written (redis unavailable, or its replicas behind); events go to the spool");
            self.warned_at = Instant::now();
        }
        self.healthy = false;
    }

    fn succeeded(&mut self) {
        if !self.healthy {
            tracing::info!("redis reachable again; events go to the stream");
        }
        self.healthy = true;
    }
}

async fn xadd(
    conn: &mut Conn,
    cfg: &WriterConfig,
    events: &[&Event],
    recorder_metrics: &metrics::SinkMetrics,
) -> Result<(), WriteError> {
    let mut pipe = redis::pipe();
    let mut maxlen = itoa::Buffer::new();
    let maxlen = maxlen.format(cfg.maxlen).as_bytes();
    for (i, e) in events.iter().enumerate() {
        // Sized up front: no reallocation while the arguments are appended.
        let mut cmd = redis::Cmd::with_capacity(
            super::XADD_ARGS,
            cfg.stream.len() + maxlen.len() + e.size_hint(),
        );
        cmd.arg("XADD").arg(&cfg.stream);
        // The batch's last entry trims the stream for all of them (`~` trims whole nodes of
        // about a hundred entries anyway): four arguments fewer to encode per event.
        if cfg.maxlen > 0 && i + 1 == events.len() {
            cmd.arg("MAXLEN").arg("~").arg(maxlen);
        }
        cmd.arg("*");
        e.write_fields(&mut cmd);
        // Not `.ignore()`d: that keeps a hash set of indices (a hash per event); the replies
        // are dropped anyway, and a server error in any of them still fails the batch.
        pipe.add_command(cmd);
    }
    let start = Instant::now();
    let r = if cfg.min_replicas == 0 {
        pipe.query_async::<()>(conn).await.map_err(WriteError::from)
    } else {
        recorder_metrics.awaiting_replicas.add(events.len() as i64);
        let r = replicated(conn, cfg, pipe, recorder_metrics).await;
        recorder_metrics.awaiting_replicas.sub(events.len() as i64);
        r
    };
    recorder_metrics
        .write_seconds
        .observe(start.elapsed().as_secs_f64());
    r
}

/// Sends `pipe` followed by `WAIT min_replicas replica_timeout` on the same connection (in a
/// cluster, the same shard: a keyless command goes where the pipeline's keys go), so the
/// answer says how many replicas hold every write of this connection so far.
async fn replicated(
    conn: &mut Conn,
    cfg: &WriterConfig,
    mut pipe: redis::Pipeline,
    recorder_metrics: &metrics::SinkMetrics,
) -> Result<(), WriteError> {
    pipe.cmd("WAIT")
        .arg(cfg.min_replicas)
        .arg(cfg.replica_timeout.as_millis().max(1) as u64);
    let replies: Vec<redis::Value> = pipe.query_async(conn).await?;
    let confirmed = match replies.last() {
        Some(redis::Value::Int(n)) => *n,
        other => {
            return Err(WriteError::Redis(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "WAIT answered with no count",
                format!("{other:?}"),
            ))));
        }
    };
    if confirmed >= i64::from(cfg.min_replicas) {
        recorder_metrics.replica_waits("confirmed").inc();
        Ok(())
    } else {
        recorder_metrics.replica_waits("short").inc();
        Err(WriteError::Unreplicated {
            confirmed,
            wanted: cfg.min_replicas,
        })
    }
}

/// With `events.min_replicas`, makes sure what replay found already in the stream is on
/// enough replicas before the spool lets go of it: a write in the stream's slot (so `WAIT`
/// covers everything this connection's master took before it) and a `WAIT`.
async fn confirm_replicated(
    conn: &mut Conn,
    cfg: &WriterConfig,
    recorder_metrics: &metrics::SinkMetrics,
) -> Result<(), WriteError> {
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(&cfg.marker)
        .arg(1)
        .arg("PX")
        .arg(60_000)
        .ignore();
    replicated(conn, cfg, pipe, recorder_metrics).await
}

/// A stream entry id (`ms-seq`) as numbers, for ordering.
fn entry_order(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Whether every stream entry in `entries` is still in the stream, or older than its first
/// entry (trimmed by `MAXLEN`: it was written). One pipeline of exact `XRANGE`s.
async fn still_there(
    conn: &mut Conn,
    cfg: &WriterConfig,
    entries: &[String],
) -> redis::RedisResult<bool> {
    let mut pipe = redis::pipe();
    pipe.cmd("XRANGE")
        .arg(&cfg.stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1);
    for id in entries {
        pipe.cmd("XRANGE")
            .arg(&cfg.stream)
            .arg(id)
            .arg(id)
            .arg("COUNT")
            .arg(1);
    }
    let replies: Vec<redis::streams::StreamRangeReply> = pipe.query_async(conn).await?;
    let first = replies
        .first()
        .and_then(|r| r.ids.first())
        .and_then(|e| entry_order(&e.id));
    Ok(entries.iter().zip(&replies[1..]).all(|(id, r)| {
        !r.ids.is_empty()
            || matches!((entry_order(id), first), (Some(mine), Some(first)) if mine < first)
    }))
}

/// Whether spooled `e` may already be in the stream: spooled as uncertain, or sent by a replay
/// that failed.
fn uncertain(link: &StreamState, e: &super::spool::Spooled) -> bool {
    e.uncertain || link.sent.contains(&e.event.id)
}

/// Entries read per `XREVRANGE` when looking for ids already written: each read stays small
/// enough to answer well within `redis.timeout`, however long the look-back.
const RECENT_PAGE: usize = 1024;

/// Event ids among the stream's last `count` entries, each with its entry's id, to skip
/// replaying events already written. Read in pages of [`RECENT_PAGE`], newest first.
async fn recent_ids(
    conn: &mut Conn,
    cfg: &WriterConfig,
    count: usize,
) -> redis::RedisResult<HashMap<String, String>> {
    let mut ids = HashMap::with_capacity(count);
    let mut end = "+".to_string();
    let mut read = 0;
    while read < count {
        let page = RECENT_PAGE.min(count - read);
        let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&cfg.stream)
            .arg(&end)
            .arg("-")
            .arg("COUNT")
            .arg(page)
            .query_async(conn)
            .await?;
        let n = reply.ids.len();
        read += n;
        if let Some(last) = reply.ids.last() {
            end = format!("({}", last.id);
        }
        ids.extend(
            reply
                .ids
                .into_iter()
                .filter_map(|e| Some((e.get::<String>("id")?, e.id))),
        );
        if n < page {
            break;
        }
    }
    Ok(ids)
}

impl Writer {
    /// Sends one batch from the queue: to Redis, or to the spool when a backlog exists (to keep
    /// order) or Redis fails.
    async fn write_batch(&self, link: &mut StreamState, batch: Vec<Event>) {
        let spool_backlog = self.recorder.lock_spool().has_backlog();
        if spool_backlog {
            self.recorder.lock_spool().append(&batch, false);
            return;
        }
        let batch = Arc::new(batch);
        *self.recorder.lock_inflight() = Some(batch.clone());
        let write = async {
            match self.cfg.db.conn().await {
                Ok(mut conn) => {
                    let r: Vec<&Event> = batch.iter().collect();
                    match xadd(&mut conn, &self.cfg, &r, self.recorder.metrics()).await {
                        Ok(()) => Ok(()),
                        // Sent but unanswered, or not on enough replicas: it may be in the
                        // stream, or lost with the master.
                        Err(e) => Err((e, true)),
                    }
                }
                Err(e) => Err((WriteError::Redis(e), false)),
            }
        };
        // No event waits in memory alone past the window: while Redis keeps the writer waiting,
        // the batch (uncertain: it may still land) and whatever queues behind it go to the spool.
        let mut spilled = false;
        let result = self
            .spilling(write, || {
                spilled = true;
                self.recorder.lock_spool().append(&batch, true);
                self.recorder
                    .metrics()
                    .outcome("spilled")
                    .inc_by(batch.len() as u64);
                self.recorder.lock_inflight().take();
            })
            .await;
        self.recorder.lock_inflight().take();
        match result {
            Ok(()) => {
                link.succeeded();
                self.recorder
                    .metrics()
                    .outcome("written")
                    .inc_by(batch.len() as u64);
                if spilled {
                    // Also in the spool: replay skips it without asking the stream.
                    link.settle(&batch, true);
                }
            }
            Err((e, uncertain)) => {
                link.failed(&e);
                if uncertain {
                    link.uncertain_gen += 1;
                } else if spilled {
                    // Never sent: replay writes it without asking the stream.
                    link.settle(&batch, false);
                }
                if !spilled {
                    self.recorder.lock_spool().append(&batch, uncertain);
                }
            }
        }
    }

    /// Runs `io` (a Redis call); if it takes longer than `events.memory_window`, calls
    /// `first` once, then moves whatever is queued to the spool every quarter window until
    /// `io` ends. No event waits in memory alone past the window, however long Redis hangs.
    async fn spilling<T>(&self, io: impl Future<Output = T>, first: impl FnOnce()) -> T {
        tokio::pin!(io);
        let window = self.cfg.memory_window;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + window, window / 4);
        let mut first = Some(first);
        loop {
            tokio::select! {
                r = &mut io => return r,
                _ = tick.tick() => {
                    if let Some(f) = first.take() {
                        f();
                    }
                    let mut spool = self.recorder.lock_spool();
                    loop {
                        let queued = self.recorder.take_batch(self.cfg.batch_max);
                        if queued.is_empty() {
                            break;
                        }
                        spool.append(&queued, false);
                    }
                }
            }
        }
    }

    /// `todo` was sent but the chunk is not committed: those events may be in the stream, so
    /// the next replay looks them up (with a fresh look-up) instead of writing them twice.
    fn sent_unsettled(&self, link: &mut StreamState, todo: &[&Event]) {
        if todo.is_empty() {
            return;
        }
        for e in todo {
            link.settled.remove(&e.id);
            link.sent.insert(e.id);
        }
        link.uncertain_gen += 1;
    }

    /// Replays one chunk of the spool if Redis is reachable. Returns true if it wrote something.
    async fn replay_some(&self, link: &mut StreamState) -> bool {
        let chunk: Option<Chunk> = match self.recorder.lock_spool().next_chunk(self.cfg.batch_max) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the spool");
                return false;
            }
        };
        let Some(chunk) = chunk else { return false };
        let mut conn = match self.spilling(self.cfg.db.conn(), || {}).await {
            Ok(c) => c,
            Err(e) => {
                link.failed(&e);
                return false;
            }
        };
        // Uncertain events whose fate is known here need no look-up in the stream.
        let has_uncertain = chunk
            .events
            .iter()
            .any(|e| uncertain(link, e) && !link.settled.contains_key(&e.event.id));
        if has_uncertain
            && link
                .recent
                .as_ref()
                .is_none_or(|(g, _)| *g != link.uncertain_gen)
        {
            let read = recent_ids(&mut conn, &self.cfg, self.cfg.batch_max * 8);
            match self.spilling(read, || {}).await {
                Ok(ids) => link.recent = Some((link.uncertain_gen, ids)),
                Err(e) => {
                    link.failed(&e);
                    return false;
                }
            }
        }
        let empty = HashMap::new();
        let skip = match &link.recent {
            Some((_, ids)) if has_uncertain => ids,
            _ => &empty,
        };
        // Stream entries of events skipped because the look-up found them (not because this
        // process knows).
        let mut found: Vec<String> = Vec::new();
        let mut todo: Vec<&Event> = Vec::with_capacity(chunk.events.len());
        for e in &chunk.events {
            if !uncertain(link, e) {
                todo.push(&e.event);
                continue;
            }
            match link.settled.get(&e.event.id) {
                Some(true) => {}
                Some(false) => todo.push(&e.event),
                None => match skip.get(&e.event.id.to_string()) {
                    Some(entry) => found.push(entry.clone()),
                    None => todo.push(&e.event),
                },
            }
        }
        let already = chunk.events.len() - todo.len();
        // A chunk whose events are all in the stream already is done without an XADD (Redis
        // refuses an empty pipeline, and the chunk would be retried forever); with
        // `min_replicas`, once enough replicas are known to hold them.
        let m = self.recorder.metrics();
        let r = if !todo.is_empty() {
            self.spilling(xadd(&mut conn, &self.cfg, &todo, m), || {})
                .await
        } else if self.cfg.min_replicas > 0 && already > 0 {
            self.spilling(confirm_replicated(&mut conn, &self.cfg, m), || {})
                .await
        } else {
            Ok(())
        };
        if let Err(e) = r {
            link.failed(&e);
            self.sent_unsettled(link, &todo);
            if matches!(e, WriteError::Redis(_)) {
                // The connection, and perhaps the master, changed: what the stream holds is
                // read again from whichever master answers next.
                link.recent = None;
            }
            return false;
        }
        // What the look-up found must still be there now that the write or the confirmation
        // was answered: between the two, a failover (or, in a cluster, the client's own
        // re-routing) may have moved the stream to a replica that never had them.
        if !found.is_empty() {
            let check = still_there(&mut conn, &self.cfg, &found);
            match self.spilling(check, || {}).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        "events found in the stream before a write are gone after it (a failover); replaying them"
                    );
                    self.sent_unsettled(link, &todo);
                    link.recent = None;
                    return false;
                }
                Err(e) => {
                    link.failed(&e);
                    self.sent_unsettled(link, &todo);
                    link.recent = None;
                    return false;
                }
            }
        }
        link.succeeded();
        for e in &chunk.events {
            link.sent.remove(&e.event.id);
        }
        if let Err(e) = self.recorder.lock_spool().commit(&chunk) {
            tracing::error!(error = %e, "cannot record spool progress");
        }
        for e in chunk.events.iter().filter(|e| e.uncertain) {
            link.settled.remove(&e.event.id);
        }
        self.recorder
            .metrics()
            .outcome("replayed")
            .inc_by(todo.len() as u64);
        self.recorder
            .metrics()
            .outcome("already_written")
            .inc_by(already as u64);
        true
    }

    /// The loop: batch, write, replay, until shutdown; then one last flush.
    pub async fn run(&self, mut shutdown: ShutdownWatch) {
        let mut link = StreamState {
            healthy: true,
            warned_at: Instant::now(),
            uncertain_gen: 0,
            recent: None,
            settled: std::collections::HashMap::new(),
            sent: HashSet::new(),
        };
        let mut adopted_at = Instant::now();
        loop {
            if adopted_at.elapsed() >= ADOPT_EVERY {
                adopted_at = Instant::now();
                let mut spool = self.recorder.lock_spool();
                match spool.adopt() {
                    // What the stream held before the exited process's last writes is no
                    // guide to its chunks: look again.
                    Ok(n) if n > 0 => link.recent = None,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot check the spool for an exited process's events")
                    }
                }
                spool.sync_if_due();
            }
            let batch = self.recorder.take_batch(self.cfg.batch_max);
            let had_batch = !batch.is_empty();
            if had_batch {
                self.write_batch(&mut link, batch).await;
            }
            if self.replay_some(&mut link).await {
                continue;
            }
            if *shutdown.borrow() {
                // Stopping: keep draining what requests still in flight produce. Whatever is
                // left when the runtime stops is spooled by `Recorder::flush_to_spool`.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            // Once the spool is empty nothing is left to replay: what the writer learned of
            // spilled batches (up to SETTLED_MAX ids, tens of MiB after a long slowdown) and of
            // the stream's recent ids is no longer needed.
            if (!link.settled.is_empty() || link.recent.is_some())
                && !self.recorder.lock_spool().has_backlog()
            {
                link.settled = std::collections::HashMap::new();
                link.recent = None;
            }
            let queued = self.recorder.queue_len();
            if queued >= self.cfg.batch_max {
                continue;
            }
            if queued >= self.cfg.batch_max / 8 {
                // Plenty waiting: write it now.
                continue;
            }
            if queued > 0 || had_batch {
                // Busy: let a batch gather rather than pay a round trip (and a wake-up) per event.
                let linger = if link.healthy && !self.recorder.lock_spool().has_backlog() {
                    LINGER
                } else {
                    SPOOL_LINGER
                };
                tokio::select! {
                    _ = tokio::time::sleep(linger) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            // With a backlog, replay is retried soon (the Db paces the connection attempts).
            let wait = if self.recorder.lock_spool().has_backlog() {
                BACKLOG_TICK
            } else {
                IDLE_TICK
            };
            tokio::select! {
                _ = self.recorder.wait_idle(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Writer {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.run(shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_entry_ids_order_by_time_then_sequence() {
        assert_eq!(entry_order("1700000000000-3"), Some((1_700_000_000_000, 3)));
        assert!(entry_order("1-9") < entry_order("2-0"));
        assert!(
            entry_order("5-1") < entry_order("5-10"),
            "numbers, not text"
        );
        assert_eq!(entry_order("nonsense"), None);
        assert_eq!(entry_order("1-x"), None);
    }
}
