//! The local, append-only, size-bounded spool for events Redis could not take.
//!
//! Each process writes only to its own subdirectory of the spool directory (`<pid>-<nanos>/`),
//! which it holds with an exclusive `flock` on `<sub>/lock` for as long as it runs. That matters
//! during a zero-downtime upgrade (`serve --upgrade`), when the old and the new process run side
//! by side on the same configuration: neither writes into, nor replays, the other's files. A
//! subdirectory whose lock is free belongs to a process that has exited (cleanly or not): the
//! first live process to notice adopts its segments (renames them into its own subdirectory,
//! progress files with them) and replays them; see [`Spool::adopt`]. The kernel releases a
//! `flock` when its process dies, so a crash needs no clean-up to be adopted.
//!
//! Segments are files `NNNNNNNNNNNNNNNNNNNN.evz`, numbered in the order they were written, each
//! a run of zstd-compressed frames of binary event records, one frame per append (see
//! [`super::codec`]; about 25 bytes per event against about 400 as JSON). Replay reads the
//! oldest segment, and records its progress in `NNNN.done` (`<byte offset of the frame>
//! <events of it replayed>`) so a restart neither loses nor repeats what was already replayed.
//! A segment is deleted once fully replayed. A frame cut short by a crash, or damaged, is
//! skipped and counted as dropped (`reason="spool_corrupt"`, once per frame). Segments of
//! earlier versions (`.jsonl`, a JSON record per line) are still read, so an upgrade replays
//! what the old process spooled. Segments directly in the spool directory (the layout before
//! per-process subdirectories) are adopted like an exited process's.

use super::{Event, codec};
use crate::metrics::SinkMetrics;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// A segment is closed for appending once it is this large.
const SEGMENT_MAX: u64 = 4 << 20;
/// Most events in one compressed frame (a replay chunk reads at most a few frames).
const FRAME_EVENTS: usize = 4096;

/// How a segment's events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Compressed binary frames (what this version writes).
    Frames,
    /// A JSON record per line (what earlier versions wrote; read only).
    Jsonl,
}

impl Format {
    fn ext(self) -> &'static str {
        match self {
            Format::Frames => "evz",
            Format::Jsonl => "jsonl",
        }
    }

    fn of(name: &str) -> Option<(u64, Format)> {
        let (seq, ext) = name.split_once('.')?;
        let format = match ext {
            "evz" => Format::Frames,
            "jsonl" => Format::Jsonl,
            _ => return None,
        };
        Some((seq.parse().ok()?, format))
    }
}

#[derive(Serialize, Deserialize)]
struct Record {
    /// True when the event may already be in the stream (its write failed after being sent).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    u: bool,
    e: Event,
}

/// A spooled event handed back for replay.
#[derive(Debug, Clone)]
pub struct Spooled {
    /// The event.
    pub event: Event,
    /// It may already be in the stream; check before writing it again.
    pub uncertain: bool,
}

/// Where replay of a segment stands: the byte offset of the next frame (or line), and how
/// many events of that frame were already replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    offset: usize,
    index: usize,
}

/// A run of spooled events read for replay; pass it back to [`Spool::commit`] once written.
#[derive(Debug)]
pub struct Chunk {
    seq: u64,
    end: Progress,
    /// The events, oldest first.
    pub events: Vec<Spooled>,
}

struct Replaying {
    seq: u64,
    format: Format,
    data: Vec<u8>,
    at: Progress,
    /// The last frame decoded: (its offset, its stored length, uncertain, events).
    frame: Option<(usize, usize, bool, Vec<Event>)>,
}

/// The spool. Not thread-safe by itself; the recorder keeps it behind a mutex.
pub struct Spool {
    /// The configured spool directory, shared by every process on this configuration.
    root: PathBuf,
    /// This process's own subdirectory of `root`.
    dir: PathBuf,
    /// Held open with an exclusive lock for the life of the process: the lock says "alive".
    lock: Option<File>,
    max_bytes: u64,
    /// The event sink's metrics.
    metrics: SinkMetrics,
    /// Closed and open segments, oldest first, with their sizes and formats.
    segments: VecDeque<(u64, u64, Format)>,
    current: Option<(u64, BufWriter<File>)>,
    replaying: Option<Replaying>,
    next_seq: u64,
    total_bytes: u64,
    /// Appends not yet fsynced, and when the last fsync was.
    dirty: bool,
    synced_at: std::time::Instant,
    sync_every: std::time::Duration,
    /// Events dropped (spool full) since the last ERROR line, and when that line was.
    drops_unlogged: u64,
    drop_logged_at: Option<std::time::Instant>,
    /// Segments taken over from an exited process whose first chunk replay has not yet
    /// committed: that chunk may have been sent before the exit, so its events are uncertain.
    inherited: std::collections::HashSet<u64>,
    /// Subdirectories this process may not take over (another user's, such as one left by
    /// `linkedge serve` run once as root), with their ctime when found: reported once, then
    /// skipped until a chown or chmod changes that ctime.
    stranded: std::collections::HashMap<PathBuf, i64>,
}

/// At most one "spool full" ERROR line per this interval while events are dropped.
const DROP_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The lock file in each process's subdirectory.
const LOCK: &str = "lock";
/// Serialises adoption between live processes (in the spool directory itself).
const ADOPT_LOCK: &str = "adopt.lock";

/// Whether `name` is a process's spool subdirectory: `<pid>-<nanos>`.
fn process_dir(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .and_then(|n| n.split_once('-'))
        .is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        })
}

/// The segments in `dir`, oldest first, with their sizes and formats.
fn list_segments(dir: &Path) -> io::Result<Vec<(u64, u64, Format)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some((seq, format)) = entry.file_name().to_str().and_then(Format::of) {
            segments.push((seq, entry.metadata()?.len(), format));
        }
    }
    segments.sort_unstable_by_key(|s| s.0);
    Ok(segments)
}

/// The adoption lock file in `root`, created if missing; opened read-only when it exists but
/// belongs to another user (a lock needs no write access).
fn adopt_lock(root: &Path) -> io::Result<File> {
    let path = root.join(ADOPT_LOCK);
    match File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
    {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => File::open(&path),
        r => r,
    }
    .map_err(|e| with_path(e, &path))
}

/// `e`, naming `path`.
fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Takes `file`'s exclusive lock without waiting; `Ok(false)` when another process holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

impl Spool {
    /// Opens the spool in `dir` (creating it if needed) with a fresh subdirectory of its own,
    /// and adopts what exited processes left there.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        Spool::open_for(dir, max_bytes, SinkMetrics::new("default"))
    }

    /// [`Spool::open`] for the event sink whose metrics are `metrics`.
    pub fn open_for(dir: &Path, max_bytes: u64, metrics: SinkMetrics) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let nanos = crate::time::unix_ns();
        let name = format!("{}-{nanos}", std::process::id());
        // Locked before it gets a visible name, so no one can mistake it for an orphan.
        let staging = dir.join(format!(".{name}.new"));
        fs::create_dir(&staging)?;
        let lock = File::create(staging.join(LOCK))?;
        if !try_lock(&lock)? {
            return Err(io::Error::other(
                "a fresh spool lock is held by someone else",
            ));
        }
        let own = dir.join(&name);
        fs::rename(&staging, &own)?;
        let mut spool = Spool {
            root: dir.to_owned(),
            dir: own,
            lock: Some(lock),
            max_bytes,
            metrics,
            segments: VecDeque::new(),
            current: None,
            replaying: None,
            next_seq: 0,
            total_bytes: 0,
            dirty: false,
            synced_at: std::time::Instant::now(),
            sync_every: std::time::Duration::from_secs(1),
            drops_unlogged: 0,
            drop_logged_at: None,
            inherited: std::collections::HashSet::new(),
            stranded: std::collections::HashMap::new(),
        };
        spool.adopt()?;
        spool.publish();
        Ok(spool)
    }

    /// Adopts the segments of processes that have exited (their subdirectory's lock is free),
    /// and segments left directly in the spool directory: renames them into this process's
    /// subdirectory, after its own, and removes the emptied subdirectories. Subdirectories of
    /// running processes (during an upgrade, the other process) are left alone. Returns how many
    /// segments were adopted. Cheap when there is nothing to adopt (one directory listing).
    pub fn adopt(&mut self) -> io::Result<usize> {
        let mut orphans = Vec::new();
        let mut loose = false;
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let path = entry.path();
            if path == self.dir {
                continue;
            }
            // Only a process's own subdirectory (`<pid>-<nanos>`) can be an orphan: another
            // event sink's spool may live beside it and must never be taken over.
            if entry.file_type()?.is_dir() {
                if process_dir(&entry.file_name()) {
                    orphans.push(path);
                }
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(Format::of)
                .is_some()
            {
                loose = true;
            }
        }
        if !self.stranded.is_empty() {
            // Another process took it over, or someone removed it.
            self.stranded.retain(|p, _| orphans.contains(p));
            self.metrics.spool_stranded.set(self.stranded.len() as i64);
        }
        if orphans.is_empty() && !loose {
            return Ok(0);
        }
        let guard = adopt_lock(&self.root)?;
        guard.lock()?;
        let mut adopted = 0;
        if loose {
            adopted += self.take_segments(&self.root.clone())?;
        }
        for sub in orphans {
            if let Some(&ctime) = self.stranded.get(&sub) {
                use std::os::unix::fs::MetadataExt;
                if fs::metadata(&sub).map_or(true, |m| m.ctime() == ctime) {
                    continue;
                }
            }
            let lock = match File::open(sub.join(LOCK)) {
                Ok(f) => Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    self.strand(sub, e);
                    continue;
                }
                Err(e) => return Err(with_path(e, &sub)),
            };
            if let Some(l) = &lock
                && !try_lock(l)?
            {
                continue; // a running process: not ours
            }
            match self.take_segments(&sub) {
                Ok(n) => adopted += n,
                // Adopted and removed by another process between the listing and the lock.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                // Another user's: its events stay on disk, named in the log, and this
                // process serves on (refusing to start would lose every click instead).
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    self.strand(sub, e);
                    continue;
                }
                Err(e) => return Err(with_path(e, &sub)),
            }
            let _ = fs::remove_file(sub.join(LOCK));
            // A progress record its process was writing when it died (the rename never came).
            for tmp in fs::read_dir(&sub).into_iter().flatten().flatten() {
                if tmp.file_name().to_string_lossy().ends_with(".done.tmp") {
                    let _ = fs::remove_file(tmp.path());
                }
            }
            let _ = fs::remove_dir(&sub);
            if self.stranded.remove(&sub).is_some() {
                self.metrics.spool_stranded.set(self.stranded.len() as i64);
            }
        }
        drop(guard);
        if adopted > 0 {
            tracing::info!(
                segments = adopted,
                bytes = self.total_bytes,
                "adopted spooled events left by an exited process; replaying"
            );
            self.publish();
        }
        Ok(adopted)
    }

    /// Reports that the subdirectory `sub` cannot be taken over: logged once, then skipped
    /// until its ctime changes (a chown), counted in `linkedge_event_spool_stranded_dirs`.
    fn strand(&mut self, sub: PathBuf, e: io::Error) {
        use std::os::unix::fs::MetadataExt;
        let ctime = fs::metadata(&sub).map_or(0, |m| m.ctime());
        if self.stranded.insert(sub.clone(), ctime).is_some() {
            return;
        }
        self.metrics.spool_stranded.set(self.stranded.len() as i64);
        let segments =
            list_segments(&sub).map_or_else(|_| "unknown".to_string(), |s| s.len().to_string());
        tracing::error!(
            dir = %sub.display(),
            segments,
            error = %e,
            "spool: a directory of another user (linkedge run as that user, now exited or still \
             running) cannot be taken over; its events stay there, replayed once it is given to \
             this process's user (chown -R)"
        );
    }

    /// Moves the segments in `from` (and their progress files) into this process's directory.
    fn take_segments(&mut self, from: &Path) -> io::Result<usize> {
        let found = list_segments(from)?;
        for &(seq, size, format) in &found {
            let to = self.next_seq;
            self.next_seq += 1;
            let done = from.join(format!("{seq:020}.done"));
            if done.exists() {
                fs::rename(&done, self.done_path(to))?;
            }
            fs::rename(
                from.join(format!("{seq:020}.{}", format.ext())),
                self.seg_path(to, format),
            )?;
            self.segments.push_back((to, size, format));
            self.inherited.insert(to);
            self.total_bytes += size;
        }
        Ok(found.len())
    }

    /// At a clean exit: removes this process's subdirectory if nothing is left in it, and
    /// releases its lock either way (whatever is left is adopted by the next process).
    pub fn close(&mut self) {
        if self.drops_unlogged > 0 {
            tracing::error!(
                dropped = self.drops_unlogged,
                "spool full: events dropped since the last report, at shutdown"
            );
            self.drops_unlogged = 0;
        }
        self.sync();
        self.current = None;
        if self.segments.is_empty() {
            let _ = fs::remove_file(self.dir.join(LOCK));
            let _ = fs::remove_dir(&self.dir);
        }
        self.lock = None;
    }

    /// Sets how long appended events may wait for an fsync (`events.spool.sync_interval`).
    pub fn set_sync_interval(&mut self, every: std::time::Duration) {
        self.sync_every = every;
    }

    /// Fsyncs the open segment if appends have waited `sync_interval` or longer. The writer
    /// calls it every second too, so the last appends before a quiet spell are not left out.
    pub fn sync_if_due(&mut self) {
        if self.dirty && self.synced_at.elapsed() >= self.sync_every {
            self.sync();
        }
    }

    /// True while any event waits in the spool.
    pub fn has_backlog(&self) -> bool {
        !self.segments.is_empty()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    fn seg_path(&self, seq: u64, format: Format) -> PathBuf {
        self.dir.join(format!("{seq:020}.{}", format.ext()))
    }

    fn done_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.done"))
    }

    /// Appends events, in compressed frames of at most [`FRAME_EVENTS`]; a frame that does
    /// not fit under `max_bytes` (or cannot be written) is dropped and counted.
    pub fn append(&mut self, events: &[Event], uncertain: bool) {
        if events.is_empty() {
            return;
        }
        let (mut spooled, mut dropped) = (0u64, 0u64);
        for part in events.chunks(FRAME_EVENTS) {
            let frame = codec::encode_frame(part, uncertain);
            let n = part.len() as u64;
            if self.total_bytes + frame.len() as u64 > self.max_bytes {
                self.metrics.dropped("spool_full").inc_by(n);
                dropped += n;
                continue;
            }
            match self.write_frame(&frame) {
                Ok(()) => spooled += n,
                Err(err) => {
                    tracing::error!(error = %err, dir = %self.dir.display(), "spool write failed");
                    self.metrics.dropped("spool_io").inc_by(n);
                }
            }
        }
        if let Some((_, w)) = &mut self.current
            && let Err(err) = w.flush()
        {
            tracing::error!(error = %err, "spool flush failed");
        }
        self.dirty |= spooled > 0;
        self.sync_if_due();
        self.metrics.outcome("spooled").inc_by(spooled);
        if dropped > 0 {
            self.dropped(dropped);
        }
        self.publish();
    }

    /// Sets the spool gauges (bytes held, fill ratio).
    /// The event sink's metrics.
    pub fn metrics(&self) -> &SinkMetrics {
        &self.metrics
    }

    fn publish(&self) {
        self.metrics.spool_bytes.set(self.total_bytes as i64);
        self.metrics
            .spool_fill
            .set(self.total_bytes as f64 / self.max_bytes.max(1) as f64);
    }

    /// Says loudly that the spool is full: the first drop at once, then at most one line a
    /// minute with the count since the last one.
    fn dropped(&mut self, n: u64) {
        self.drops_unlogged += n;
        let due = self
            .drop_logged_at
            .is_none_or(|at| at.elapsed() >= DROP_LOG_EVERY);
        if due {
            tracing::error!(
                dropped = self.drops_unlogged,
                spool_bytes = self.total_bytes,
                max_bytes = self.max_bytes,
                dir = %self.dir.display(),
                "spool full: click and open events are being dropped (Redis has been unreachable \
                 for longer than events.spool.max_bytes holds); see linkedge_events_dropped_total"
            );
            self.drops_unlogged = 0;
            self.drop_logged_at = Some(std::time::Instant::now());
        }
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let need_new = match (&self.current, self.segments.back()) {
            (Some((seq, _)), Some((last, size, _))) => *seq != *last || *size >= SEGMENT_MAX,
            _ => true,
        };
        if need_new {
            if let Some((_, mut w)) = self.current.take() {
                w.flush()?;
                if self.dirty {
                    w.get_ref().sync_data()?;
                }
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.seg_path(seq, Format::Frames))?;
            self.current = Some((seq, BufWriter::with_capacity(64 << 10, f)));
            self.segments.push_back((seq, 0, Format::Frames));
        }
        let (_, w) = self.current.as_mut().expect("segment open");
        w.write_all(frame)?;
        let back = self.segments.back_mut().expect("segment listed");
        back.1 += frame.len() as u64;
        self.total_bytes += frame.len() as u64;
        Ok(())
    }

    /// Flushes and fsyncs the open segment (segments closed earlier were synced when the next
    /// one was opened).
    pub fn sync(&mut self) {
        if let Some((_, w)) = &mut self.current {
            let r = w.flush().and_then(|_| w.get_ref().sync_data());
            if let Err(err) = r {
                tracing::error!(error = %err, "spool sync failed");
            }
        }
        self.dirty = false;
        self.synced_at = std::time::Instant::now();
    }

    /// Reads up to `max` of the oldest events for replay, or `None` when the spool is empty.
    pub fn next_chunk(&mut self, max: usize) -> io::Result<Option<Chunk>> {
        loop {
            let Some(&(seq, _, format)) = self.segments.front() else {
                return Ok(None);
            };
            if self.current.as_ref().is_some_and(|(s, _)| *s == seq) {
                // Close the segment being appended so replay sees a stable file.
                let (_, mut w) = self.current.take().expect("checked");
                w.flush()?;
            }
            if self.replaying.as_ref().is_none_or(|r| r.seq != seq) {
                let data = fs::read(self.seg_path(seq, format))?;
                let saved = fs::read_to_string(self.done_path(seq)).unwrap_or_default();
                let mut nums = saved.split_whitespace().map(|n| n.parse::<usize>().ok());
                let at = Progress {
                    offset: nums.next().flatten().unwrap_or(0).min(data.len()),
                    index: nums.next().flatten().unwrap_or(0),
                };
                self.replaying = Some(Replaying {
                    seq,
                    format,
                    data,
                    at,
                    frame: None,
                });
            }
            let r = self.replaying.as_mut().expect("set above");
            let (events, end) = match r.format {
                Format::Jsonl => read_lines(r, max, &self.metrics),
                Format::Frames => read_frames(r, max, &self.metrics),
            };
            if events.is_empty() {
                self.finish_segment(seq)?;
                continue;
            }
            let mut events = events;
            if self.inherited.contains(&seq) {
                // The exited process may have sent this chunk (replay sends one chunk at a
                // time and records progress after the stream took it): look each event up.
                for e in &mut events {
                    e.uncertain = true;
                }
            }
            return Ok(Some(Chunk { seq, end, events }));
        }
    }

    /// Marks a chunk from [`Spool::next_chunk`] as written to the stream.
    pub fn commit(&mut self, chunk: &Chunk) -> io::Result<()> {
        let Some(r) = self.replaying.as_mut().filter(|r| r.seq == chunk.seq) else {
            return Ok(());
        };
        self.inherited.remove(&chunk.seq);
        r.at = chunk.end;
        let (at, len) = (r.at, r.data.len());
        if at.offset >= len {
            self.finish_segment(chunk.seq)
        } else {
            // Written aside and renamed over: a crash mid-write never leaves a torn record
            // (which would replay the segment from its start).
            let done = self.done_path(chunk.seq);
            let tmp = done.with_extension("done.tmp");
            fs::write(&tmp, format!("{} {}", at.offset, at.index))?;
            fs::rename(&tmp, &done)
        }
    }

    fn finish_segment(&mut self, seq: u64) -> io::Result<()> {
        let format = self
            .segments
            .iter()
            .find(|s| s.0 == seq)
            .map_or(Format::Frames, |s| s.2);
        fs::remove_file(self.seg_path(seq, format))?;
        let _ = fs::remove_file(self.done_path(seq));
        if let Some(pos) = self.segments.iter().position(|s| s.0 == seq) {
            let (_, size, _) = self.segments.remove(pos).expect("position valid");
            self.total_bytes -= size.min(self.total_bytes);
        }
        self.replaying = None;
        self.publish();
        Ok(())
    }
}

/// Up to `max` events from a JSON-lines segment (earlier versions), after `r.at`.
fn read_lines(r: &Replaying, max: usize, metrics: &SinkMetrics) -> (Vec<Spooled>, Progress) {
    let mut events = Vec::new();
    let mut pos = r.at.offset;
    while events.len() < max && pos < r.data.len() {
        let rest = &r.data[pos..];
        let (line, next) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], pos + i + 1),
            None => (rest, r.data.len()),
        };
        pos = next;
        match serde_json::from_slice::<Record>(line) {
            Ok(rec) => events.push(Spooled {
                event: rec.e,
                uncertain: rec.u,
            }),
            Err(_) => {
                tracing::warn!(segment = r.seq, "skipping a damaged spool record");
                metrics.dropped("spool_corrupt").inc();
            }
        }
    }
    (
        events,
        Progress {
            offset: pos,
            index: 0,
        },
    )
}

/// Up to `max` events from a frames segment, after `r.at` (decoding each frame once).
fn read_frames(r: &mut Replaying, max: usize, metrics: &SinkMetrics) -> (Vec<Spooled>, Progress) {
    let mut events = Vec::new();
    let mut at = r.at;
    while events.len() < max && at.offset < r.data.len() {
        if r.frame.as_ref().is_none_or(|f| f.0 != at.offset) {
            match codec::decode_frame(&r.data[at.offset..]) {
                Ok((len, uncertain, events)) => r.frame = Some((at.offset, len, uncertain, events)),
                Err(e) => {
                    tracing::warn!(segment = r.seq, offset = at.offset, error = %e, "skipping a damaged spool frame");
                    metrics.dropped("spool_corrupt").inc();
                    // A damaged body with a sound length is skipped; a torn tail ends it.
                    let len = r.data[at.offset..]
                        .get(..4)
                        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
                    at = Progress {
                        offset: match (e, len) {
                            (codec::CodecError::Torn, _) | (_, None) => r.data.len(),
                            (_, Some(l)) => (at.offset + 4 + l).min(r.data.len()),
                        },
                        index: 0,
                    };
                    continue;
                }
            }
        }
        let (_, len, uncertain, frame) = r.frame.as_ref().expect("decoded above");
        let take = (max - events.len()).min(frame.len().saturating_sub(at.index));
        events.extend(frame[at.index..at.index + take].iter().map(|e| Spooled {
            event: e.clone(),
            uncertain: *uncertain,
        }));
        at.index += take;
        if at.index >= frame.len() {
            at = Progress {
                offset: at.offset + len,
                index: 0,
            };
        }
    }
    (events, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> Event {
        Event {
            id: super::super::EventId { node: 1, seq: n },
            kind: crate::token::Kind::Click,
            ts: n,
            host: "link.example.com".into(),
            workspace: 1,
            message: 2,
            link: 3,
            url: "https://example.com/".into(),
            ip: Some("192.0.2.1".parse().unwrap()),
            ua: "ua \"quoted\"\n".into(),
            referer: bytes::Bytes::new(),
            region: None,
            agent: Default::default(),
            agent_reasons: Default::default(),
            ip_hash: None,
            blocked: None,
        }
    }

    /// Every segment file under the spool directory, in any process's subdirectory.
    fn segment_files(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(root).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(segment_files(&p));
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(Format::of)
                .is_some()
            {
                out.push(p);
            }
        }
        out
    }

    fn drain(s: &mut Spool, max: usize) -> Vec<(u64, bool)> {
        let mut seen = Vec::new();
        while let Some(c) = s.next_chunk(max).unwrap() {
            seen.extend(c.events.iter().map(|e| (e.event.ts, e.uncertain)));
            s.commit(&c).unwrap();
        }
        seen
    }

    #[test]
    fn replays_in_order_across_reopen_and_respects_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 10_000).unwrap();
        let events: Vec<_> = (0..10).map(ev).collect();
        s.append(&events[..5], false);
        s.append(&events[5..], true);
        let c = s.next_chunk(3).unwrap().unwrap();
        assert_eq!(
            c.events.iter().map(|e| e.event.ts).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        s.commit(&c).unwrap();
        // Dropped without close(), as in a crash: the lock goes with the process.
        drop(s);

        // A restart adopts the exited process's segments and resumes after what was committed;
        // the first chunk it replays from them (3 to 6, which the exited process may have sent
        // before it stopped) is uncertain, then each event as it was spooled.
        let mut s = Spool::open(dir.path(), 10_000).unwrap();
        let want: Vec<_> = (3..10).map(|n| (n, n >= 3)).collect();
        assert_eq!(drain(&mut s, 4), want);
        assert!(!s.has_backlog());
        assert_eq!(s.bytes(), 0);
        s.close();
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, [ADOPT_LOCK], "only the adoption lock file remains");

        // Past max_bytes, events are dropped rather than written.
        let mut s = Spool::open(dir.path(), 600).unwrap();
        let dropped = || SinkMetrics::new("default").dropped("spool_full").get();
        let before = dropped();
        for _ in 0..50 {
            s.append(&(0..10).map(ev).collect::<Vec<_>>(), false);
        }
        assert!(s.bytes() <= 600 && s.bytes() > 0);
        assert!(dropped() > before);
    }

    #[test]
    fn a_running_process_spool_is_left_alone_until_it_exits() {
        let dir = tempfile::tempdir().unwrap();
        // The old process during an upgrade, still spooling.
        let mut old = Spool::open(dir.path(), 1 << 20).unwrap();
        old.append(&[ev(0), ev(1), ev(2)], false);
        // The new process starts beside it: it must neither see nor replay the old one's files.
        let mut new = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(!new.has_backlog());
        new.append(&[ev(10), ev(11)], false);
        assert_eq!(new.adopt().unwrap(), 0);
        // The old process appends again, then exits.
        old.append(&[ev(3)], true);
        old.close();
        assert_eq!(new.adopt().unwrap(), 1);
        let seen = drain(&mut new, 2);
        assert_eq!(
            seen,
            // The adopted segment's first chunk (0, 1) is uncertain: its process may have
            // sent it.
            [
                (10, false),
                (11, false),
                (0, true),
                (1, true),
                (2, false),
                (3, true)
            ]
        );
        assert!(segment_files(dir.path()).is_empty());
        // The old process's emptied subdirectory went with its segments.
        let dirs = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_dir())
            .count();
        assert_eq!(
            dirs, 1,
            "only the running process's own subdirectory is left"
        );
    }

    #[test]
    fn segments_in_the_old_flat_layout_are_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(&[ev(7), ev(8)], false);
        let seg = segment_files(dir.path()).pop().unwrap();
        fs::rename(&seg, dir.path().join(format!("{:020}.evz", 41))).unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        // Adopted: the first chunk is uncertain.
        assert_eq!(drain(&mut s, 10), [(7, true), (8, true)]);
        assert!(segment_files(dir.path()).is_empty());
    }

    #[test]
    fn torn_last_frame_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(&[ev(1), ev(2)], false);
        s.append(&[ev(3)], false);
        drop(s);
        let path = segment_files(dir.path()).pop().unwrap();
        let mut data = fs::read(&path).unwrap();
        // The last frame cut short, as by a crash mid-write.
        data.truncate(data.len() - 5);
        fs::write(&path, data).unwrap();
        let corrupt = || SinkMetrics::new("default").dropped("spool_corrupt").get();
        let before = corrupt();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(drain(&mut s, 10), [(1, true), (2, true)]);
        assert_eq!(corrupt(), before + 1);
        assert!(s.next_chunk(10).unwrap().is_none());
    }

    #[test]
    fn an_earlier_versions_json_lines_segment_is_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let lines: String = [(5, false), (6, true)]
            .iter()
            .map(|&(n, u)| {
                let rec = Record { u, e: ev(n) };
                format!("{}\n", serde_json::to_string(&rec).unwrap())
            })
            .collect();
        fs::write(dir.path().join(format!("{:020}.jsonl", 3)), lines).unwrap();
        // Progress as the earlier version wrote it: a byte offset alone (none here).
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(&[ev(7)], false);
        // The adopted segment's first chunk (5) is uncertain.
        assert_eq!(drain(&mut s, 1), [(5, true), (6, true), (7, false)]);
        assert!(segment_files(dir.path()).is_empty());
    }

    #[test]
    fn a_frame_larger_than_a_chunk_resumes_mid_frame_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(&(0..10).map(ev).collect::<Vec<_>>(), true);
        let c = s.next_chunk(4).unwrap().unwrap();
        s.commit(&c).unwrap();
        // Read but not committed: replayed again after the restart.
        let _ = s.next_chunk(4).unwrap().unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let want: Vec<_> = (4..10).map(|n| (n, true)).collect();
        assert_eq!(drain(&mut s, 4), want);
    }
}
