//! The local, append-only, size-bounded spool for events Redis could not take.
//!
//! Segments are files `NNNNNNNNNNNNNNNNNNNN.jsonl` in the spool directory, one JSON record per
//! line, numbered in the order they were written. Replay reads the oldest segment, and records its
//! progress in `NNNN.done` (a byte offset) so a restart neither loses nor repeats what was already
//! replayed. A segment is deleted once fully replayed. A line cut short by a crash is skipped and
//! counted as dropped (`reason="spool_corrupt"`).

use super::Event;
use crate::metrics;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// A segment is closed for appending once it is this large.
const SEGMENT_MAX: u64 = 4 << 20;

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

/// A run of spooled events read for replay; pass it back to [`Spool::commit`] once written.
#[derive(Debug)]
pub struct Chunk {
    seq: u64,
    end: usize,
    /// The events, oldest first.
    pub events: Vec<Spooled>,
}

struct Replaying {
    seq: u64,
    data: Vec<u8>,
    offset: usize,
}

/// The spool. Not thread-safe by itself; the recorder keeps it behind a mutex.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// Closed and open segments, oldest first, with their sizes.
    segments: VecDeque<(u64, u64)>,
    current: Option<(u64, BufWriter<File>)>,
    replaying: Option<Replaying>,
    next_seq: u64,
    total_bytes: u64,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, picking up segments a previous run left.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let mut segments = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name
                .strip_suffix(".jsonl")
                .and_then(|s| s.parse::<u64>().ok())
            {
                segments.push((seq, entry.metadata()?.len()));
            }
        }
        segments.sort_unstable();
        let next_seq = segments.last().map_or(0, |s| s.0 + 1);
        let total_bytes = segments.iter().map(|s| s.1).sum();
        let spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            segments: segments.into(),
            current: None,
            replaying: None,
            next_seq,
            total_bytes,
        };
        metrics::SPOOL_BYTES.set(total_bytes as i64);
        Ok(spool)
    }

    /// True while any event waits in the spool.
    pub fn has_backlog(&self) -> bool {
        !self.segments.is_empty()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    fn seg_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.jsonl"))
    }

    fn done_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.done"))
    }

    /// Appends events; those that do not fit under `max_bytes` (or cannot be written) are
    /// dropped and counted.
    pub fn append(&mut self, events: &[Event], uncertain: bool) {
        if events.is_empty() {
            return;
        }
        let mut spooled = 0u64;
        for e in events {
            let mut line = serde_json::to_vec(&Record {
                u: uncertain,
                e: e.clone(),
            })
            .expect("events serialize");
            line.push(b'\n');
            let len = line.len() as u64;
            if self.total_bytes + len > self.max_bytes {
                metrics::events_dropped("spool_full").inc();
                continue;
            }
            match self.write_line(&line) {
                Ok(()) => spooled += 1,
                Err(err) => {
                    tracing::error!(error = %err, dir = %self.dir.display(), "spool write failed");
                    metrics::events_dropped("spool_io").inc();
                }
            }
        }
        if let Some((_, w)) = &mut self.current
            && let Err(err) = w.flush()
        {
            tracing::error!(error = %err, "spool flush failed");
        }
        metrics::events_outcome("spooled").inc_by(spooled);
        metrics::SPOOL_BYTES.set(self.total_bytes as i64);
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let need_new = match (&self.current, self.segments.back()) {
            (Some((seq, _)), Some((last, size))) => *seq != *last || *size >= SEGMENT_MAX,
            _ => true,
        };
        if need_new {
            if let Some((_, mut w)) = self.current.take() {
                w.flush()?;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.seg_path(seq))?;
            self.current = Some((seq, BufWriter::with_capacity(64 << 10, f)));
            self.segments.push_back((seq, 0));
        }
        let (_, w) = self.current.as_mut().expect("segment open");
        w.write_all(line)?;
        let back = self.segments.back_mut().expect("segment listed");
        back.1 += line.len() as u64;
        self.total_bytes += line.len() as u64;
        Ok(())
    }

    /// Flushes and fsyncs the open segment.
    pub fn sync(&mut self) {
        if let Some((_, w)) = &mut self.current {
            let r = w.flush().and_then(|_| w.get_ref().sync_all());
            if let Err(err) = r {
                tracing::error!(error = %err, "spool sync failed");
            }
        }
    }

    /// Reads up to `max` of the oldest events for replay, or `None` when the spool is empty.
    pub fn next_chunk(&mut self, max: usize) -> io::Result<Option<Chunk>> {
        loop {
            let Some(&(seq, _)) = self.segments.front() else {
                return Ok(None);
            };
            if self.current.as_ref().is_some_and(|(s, _)| *s == seq) {
                // Close the segment being appended so replay sees a stable file.
                let (_, mut w) = self.current.take().expect("checked");
                w.flush()?;
            }
            if self.replaying.as_ref().is_none_or(|r| r.seq != seq) {
                let data = fs::read(self.seg_path(seq))?;
                let offset = fs::read_to_string(self.done_path(seq))
                    .ok()
                    .and_then(|s| s.trim().parse::<usize>().ok())
                    .unwrap_or(0)
                    .min(data.len());
                self.replaying = Some(Replaying { seq, data, offset });
            }
            let r = self.replaying.as_ref().expect("set above");
            let mut events = Vec::new();
            let mut pos = r.offset;
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
                        tracing::warn!(segment = seq, "skipping a damaged spool record");
                        metrics::events_dropped("spool_corrupt").inc();
                    }
                }
            }
            if events.is_empty() {
                self.finish_segment(seq)?;
                continue;
            }
            return Ok(Some(Chunk {
                seq,
                end: pos,
                events,
            }));
        }
    }

    /// Marks a chunk from [`Spool::next_chunk`] as written to the stream.
    pub fn commit(&mut self, chunk: &Chunk) -> io::Result<()> {
        let Some(r) = self.replaying.as_mut().filter(|r| r.seq == chunk.seq) else {
            return Ok(());
        };
        r.offset = chunk.end;
        let done = r.offset >= r.data.len();
        let offset = r.offset;
        if done {
            self.finish_segment(chunk.seq)
        } else {
            fs::write(self.done_path(chunk.seq), offset.to_string())
        }
    }

    fn finish_segment(&mut self, seq: u64) -> io::Result<()> {
        fs::remove_file(self.seg_path(seq))?;
        let _ = fs::remove_file(self.done_path(seq));
        if let Some(pos) = self.segments.iter().position(|s| s.0 == seq) {
            let (_, size) = self.segments.remove(pos).expect("position valid");
            self.total_bytes -= size.min(self.total_bytes);
        }
        self.replaying = None;
        metrics::SPOOL_BYTES.set(self.total_bytes as i64);
        Ok(())
    }
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
        }
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
        drop(s);

        // A restart resumes after what was committed.
        let mut s = Spool::open(dir.path(), 10_000).unwrap();
        let mut seen = Vec::new();
        while let Some(c) = s.next_chunk(4).unwrap() {
            seen.extend(c.events.iter().map(|e| (e.event.ts, e.uncertain)));
            s.commit(&c).unwrap();
        }
        let want: Vec<_> = (3..10).map(|n| (n, n >= 5)).collect();
        assert_eq!(seen, want);
        assert!(!s.has_backlog());
        assert_eq!(s.bytes(), 0);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

        // Past max_bytes, events are dropped rather than written.
        let mut s = Spool::open(dir.path(), 600).unwrap();
        s.append(&(0..10).map(ev).collect::<Vec<_>>(), false);
        assert!(s.bytes() <= 600 && s.bytes() > 0);
    }

    #[test]
    fn torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(&[ev(1), ev(2)], false);
        drop(s);
        let path = dir.path().join(format!("{:020}.jsonl", 0));
        let mut data = fs::read(&path).unwrap();
        data.extend_from_slice(b"{\"e\":{\"id\":");
        fs::write(&path, data).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let c = s.next_chunk(10).unwrap().unwrap();
        assert_eq!(c.events.len(), 2);
        s.commit(&c).unwrap();
        assert!(s.next_chunk(10).unwrap().is_none());
    }
}
