//! The spool's compact form of events: a binary record per event, many records per
//! zstd-compressed frame. Pure functions, no I/O.
//!
//! A frame, as stored: `len: u32 LE` then `len` bytes of one zstd frame (with its content
//! checksum, so a torn or damaged frame is refused, never misread). Decompressed, it holds
//! `flags: u8` (bit 0: the events may already be in the stream; bit 1: records carry the
//! region; bit 2: they carry the agent verdict; bit 3: the hashed client address; bit 4: the
//! block rule met), `count:
//! varint`, then `count` records:
//!
//! ```text
//! node u64 LE | seq u64 LE | kind u8 (1 click, 2 open) | ts varint | host bytes |
//! workspace varint | message varint | link varint | url bytes | ip (u8 0, 4 or 6, then the
//! address) | ua bytes | referer bytes | region bytes (empty: none; only with flag bit 1) |
//! agent u8 (0 human, 1 suspect, 2 machine) | reasons u8 (bits)      (both only with bit 2) |
//! ip hash (u8 0, or 1 then key varint and 16 bytes; only with bit 3) |
//! block (u8 0, or the action 1 block, 2 warn, 3 continue, then the rule id bytes; bit 4)
//!                                                 where bytes = len varint, then the bytes
//! ```
//!
//! Frames written before regions (flag bit 1 clear) still decode, with no region.
//!
//! Events of one batch share most of their text (host, destination, user agents), so a frame
//! of a few thousand events compresses to a few tens of bytes per event; see the test
//! `realistic_batches_fit_an_hour_at_10k_per_second_in_the_default` for the measured figure.

use super::{Blocked, BlockedAction, Event, EventId};
use crate::agent::{Agent, Reasons};
use crate::privacy::IpHash;
use crate::token::Kind;
use bytes::Bytes;
use std::net::IpAddr;

/// Why stored bytes are not a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// The frame's length prefix runs past the end (a write cut short).
    #[error("frame cut short")]
    Torn,
    /// zstd refused the frame (damaged, or its checksum does not match).
    #[error("frame does not decompress")]
    Damaged,
    /// The decompressed records are malformed.
    #[error("malformed record: {0}")]
    Record(&'static str),
}

/// zstd level: fast, and within a few percent of higher levels' size on these batches.
const LEVEL: i32 = 3;
/// Largest decompressed frame accepted (a frame holds at most a few thousand events).
const MAX_FRAME: usize = 64 << 20;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends `e`'s record to `out`.
pub fn encode_event(e: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(&e.id.node.to_le_bytes());
    out.extend_from_slice(&e.id.seq.to_le_bytes());
    out.push(match e.kind {
        Kind::Click => 1,
        Kind::Open => 2,
    });
    put_varint(out, e.ts);
    put_bytes(out, e.host.as_bytes());
    put_varint(out, e.workspace);
    put_varint(out, e.message);
    put_varint(out, e.link);
    put_bytes(out, &e.url);
    match e.ip {
        None => out.push(0),
        Some(IpAddr::V4(a)) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
    put_bytes(out, &e.ua);
    put_bytes(out, &e.referer);
    put_bytes(out, e.region.as_deref().unwrap_or("").as_bytes());
    out.push(e.agent.to_byte());
    out.push(e.agent_reasons.bits());
    match e.ip_hash {
        None => out.push(0),
        Some(h) => {
            out.push(1);
            put_varint(out, u64::from(h.key));
            out.extend_from_slice(&h.digest);
        }
    }
    match &e.blocked {
        None => out.push(0),
        Some(b) => {
            out.push(b.action.to_byte());
            put_bytes(out, b.rule.as_bytes());
        }
    }
}

/// Flag bit: the events may already be in the stream.
const UNCERTAIN: u8 = 1;
/// Flag bit: each record ends with the region.
const WITH_REGION: u8 = 2;
/// Flag bit: each record ends, after the region, with the agent verdict and its reasons.
const WITH_AGENT: u8 = 4;
/// Flag bit: each record ends, after those, with the hashed client address (`0`, or `1`, the
/// key id as a varint and 16 bytes).
const WITH_IP_HASH: u8 = 8;
/// Flag bit: each record ends, after those, with the block rule met (`0`, or the action and
/// the rule id).
const WITH_BLOCK: u8 = 16;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::Record(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.take(1, what)?[0])
    }

    fn u64_le(&mut self, what: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Record(what))
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], CodecError> {
        let n = self.varint(what)?;
        let n = usize::try_from(n).map_err(|_| CodecError::Record(what))?;
        self.take(n, what)
    }
}

fn decode_event(r: &mut Reader<'_>, flags: u8) -> Result<Event, CodecError> {
    let with_region = flags & WITH_REGION != 0;
    let id = EventId {
        node: r.u64_le("id")?,
        seq: r.u64_le("id")?,
    };
    let kind = match r.u8("kind")? {
        1 => Kind::Click,
        2 => Kind::Open,
        _ => return Err(CodecError::Record("kind")),
    };
    let ts = r.varint("ts")?;
    let host = std::str::from_utf8(r.bytes("host")?)
        .map_err(|_| CodecError::Record("host"))?
        .to_string();
    let workspace = r.varint("workspace")?;
    let message = r.varint("message")?;
    let link = r.varint("link")?;
    let url = Bytes::copy_from_slice(r.bytes("url")?);
    let ip = match r.u8("ip")? {
        0 => None,
        4 => Some(IpAddr::from(
            <[u8; 4]>::try_from(r.take(4, "ip")?).expect("4"),
        )),
        6 => Some(IpAddr::from(
            <[u8; 16]>::try_from(r.take(16, "ip")?).expect("16"),
        )),
        _ => return Err(CodecError::Record("ip")),
    };
    let ua = Bytes::copy_from_slice(r.bytes("ua")?);
    let referer = Bytes::copy_from_slice(r.bytes("referer")?);
    let region = match with_region {
        true => {
            std::str::from_utf8(r.bytes("region")?).map_err(|_| CodecError::Record("region"))?
        }
        false => "",
    };
    let (agent, agent_reasons) = if flags & WITH_AGENT != 0 {
        let a = Agent::from_byte(r.u8("agent")?).ok_or(CodecError::Record("agent"))?;
        (a, Reasons::from_bits(r.u8("agent_reasons")?))
    } else {
        (Agent::Human, Reasons::default())
    };
    let ip_hash = if flags & WITH_IP_HASH != 0 && r.u8("ip_hash")? == 1 {
        let key = u32::try_from(r.varint("ip_hash")?).map_err(|_| CodecError::Record("ip_hash"))?;
        let digest = r.take(16, "ip_hash")?.try_into().expect("16 bytes");
        Some(IpHash { key, digest })
    } else {
        None
    };
    let blocked = match flags & WITH_BLOCK != 0 {
        true => match r.u8("blocked")? {
            0 => None,
            b => {
                let action = BlockedAction::from_byte(b).ok_or(CodecError::Record("blocked"))?;
                let rule = std::str::from_utf8(r.bytes("blocked")?)
                    .map_err(|_| CodecError::Record("blocked"))?;
                Some(Blocked {
                    rule: rule.into(),
                    action,
                })
            }
        },
        false => None,
    };
    Ok(Event {
        blocked,
        ip_hash,
        agent,
        agent_reasons,
        region: (!region.is_empty()).then(|| region.into()),
        id,
        kind,
        ts,
        host,
        workspace,
        message,
        link,
        url,
        ip,
        ua,
        referer,
    })
}

/// One stored frame (length prefix included) holding `events`.
pub fn encode_frame(events: &[Event], uncertain: bool) -> Vec<u8> {
    let mut plain = Vec::with_capacity(events.len() * 256 + 16);
    plain.push(
        if uncertain { UNCERTAIN } else { 0 }
            | WITH_REGION
            | WITH_AGENT
            | WITH_IP_HASH
            | WITH_BLOCK,
    );
    put_varint(&mut plain, events.len() as u64);
    for e in events {
        encode_event(e, &mut plain);
    }
    let mut z = zstd::bulk::Compressor::new(LEVEL).expect("zstd level is valid");
    z.include_checksum(true)
        .expect("zstd accepts a checksum flag");
    let body = z
        .compress(&plain)
        .expect("compressing to memory cannot fail");
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The frame at the start of `data`: (its stored length, whether its events are uncertain,
/// the events).
pub fn decode_frame(data: &[u8]) -> Result<(usize, bool, Vec<Event>), CodecError> {
    let len = data
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or(CodecError::Torn)?;
    let body = data.get(4..4 + len).ok_or(CodecError::Torn)?;
    let plain = zstd::bulk::decompress(body, MAX_FRAME).map_err(|_| CodecError::Damaged)?;
    let mut r = Reader(&plain);
    let flags = r.u8("flags")?;
    let uncertain = flags & UNCERTAIN != 0;
    let count = r.varint("count")?;
    let mut events = Vec::with_capacity(count.min(65_536) as usize);
    for _ in 0..count {
        events.push(decode_event(&mut r, flags)?);
    }
    if !r.0.is_empty() {
        return Err(CodecError::Record("trailing bytes"));
    }
    Ok((4 + len, uncertain, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, ua: &str, url: &str, ip: Option<IpAddr>) -> Event {
        Event {
            id: EventId {
                node: 0x1234_5678_9abc_def0,
                seq,
            },
            kind: if seq.is_multiple_of(7) {
                Kind::Open
            } else {
                Kind::Click
            },
            ts: 1_790_000_000_000 + seq * 3,
            host: "link.shop.example".into(),
            workspace: 42,
            message: 1_000_000 + seq / 3,
            link: seq % 12,
            url: Bytes::copy_from_slice(url.as_bytes()),
            ip,
            ua: Bytes::copy_from_slice(ua.as_bytes()),
            referer: Bytes::new(),
            region: seq.is_multiple_of(2).then(|| "eu".into()),
            agent: if seq.is_multiple_of(5) {
                Agent::Suspect
            } else {
                Agent::Human
            },
            agent_reasons: if seq.is_multiple_of(5) {
                Reasons::NO_UA
            } else {
                Reasons::default()
            },
            ip_hash: seq.is_multiple_of(3).then_some(IpHash {
                key: 2,
                digest: [seq as u8; 16],
            }),
            blocked: seq.is_multiple_of(2).then(|| Blocked {
                rule: format!("b{seq:016x}").into(),
                action: BlockedAction::Warn,
            }),
        }
    }

    #[test]
    fn frames_from_before_regions_still_decode() {
        // An event without a region, as versions before regions wrote it: the same record
        // without the trailing region, and flags without bit 1.
        let mut e = ev(3, "Mozilla/5.0", "https://shop.example/p", None);
        e.region = None;
        e.agent = Agent::Human;
        e.agent_reasons = Reasons::default();
        e.ip_hash = None;
        e.blocked = None;
        let mut record = Vec::new();
        encode_event(&e, &mut record);
        // Drop the absent block and hash, the agent and its reasons, then the empty region (one
        // zero byte).
        record.truncate(record.len() - 4);
        assert_eq!(record.pop(), Some(0), "an empty region is one zero byte");
        let mut plain = vec![UNCERTAIN, 1];
        plain.extend_from_slice(&record);
        let body = zstd::bulk::compress(&plain, LEVEL).unwrap();
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        let (len, uncertain, events) = decode_frame(&frame).unwrap();
        assert_eq!((len, uncertain), (frame.len(), true));
        assert_eq!(events, vec![e]);
    }

    #[test]
    fn frames_round_trip_every_field() {
        let events = vec![
            ev(1, "Mozilla/5.0 (X11)", "https://example.com/a?x=1", None),
            ev(2, "", "", Some("192.0.2.9".parse().unwrap())),
            ev(
                7,
                "ua \"quoted\"\n\u{7f}",
                "https://e.example/é",
                Some("2001:db8::7".parse().unwrap()),
            ),
        ];
        let f = encode_frame(&events, true);
        let (len, uncertain, back) = decode_frame(&f).unwrap();
        assert_eq!((len, uncertain), (f.len(), true));
        assert_eq!(back, events);
        let (_, uncertain, _) = decode_frame(&encode_frame(&events, false)).unwrap();
        assert!(!uncertain);
    }

    #[test]
    fn torn_or_damaged_frames_are_refused_not_misread() {
        let f = encode_frame(&[ev(1, "a", "https://x.example/", None)], false);
        for cut in [0, 3, 4, f.len() - 1] {
            assert_eq!(
                decode_frame(&f[..cut]).unwrap_err(),
                CodecError::Torn,
                "cut at {cut}"
            );
        }
        let mut bad = f.clone();
        let mid = bad.len() / 2 + 2;
        bad[mid] ^= 0x55;
        assert!(decode_frame(&bad).is_err());
        // A frame followed by another: only the first is read.
        let mut two = f.clone();
        two.extend_from_slice(&f);
        assert_eq!(decode_frame(&two).unwrap().0, f.len());
    }

    /// The figure behind the default spool size: one hour of a 10,000 clicks/s Redis outage
    /// is 36,000,000 events; the default `events.spool.max_bytes` (2 GiB) holds it at up to
    /// 59 bytes per event. Events with the variety of a real campaign (200 user agents, 50
    /// destinations, random client addresses), in frames of 1 to 4,096 events (the writer
    /// spools what gathered in `SPOOL_LINGER`: about 100 events at 10,000 clicks/s).
    #[test]
    fn realistic_batches_fit_an_hour_at_10k_per_second_in_the_default() {
        let uas: Vec<String> = (0..200)
            .map(|i| format!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{}.0.{}.{} Safari/537.36", 100 + i % 40, i * 7, i * 13))
            .collect();
        let urls: Vec<String> = (0..50)
            .map(|i| format!("https://shop.example.com/collections/autumn-{i}?utm_source=email&utm_medium=newsletter&utm_campaign=c{}", i * 31))
            .collect();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let events: Vec<Event> = (0..40_960u64)
            .map(|i| {
                let r = next();
                ev(
                    i,
                    &uas[(r % 200) as usize],
                    &urls[((r >> 8) % 50) as usize],
                    Some(IpAddr::from(((r >> 16) as u32).to_be_bytes())),
                )
            })
            .collect();
        let per_event = |size: usize| {
            let bytes: usize = events
                .chunks(size)
                .map(|b| encode_frame(b, false).len())
                .sum();
            bytes as f64 / events.len() as f64
        };
        let json = events
            .iter()
            .map(|e| serde_json::to_vec(e).unwrap().len() + 8)
            .sum::<usize>() as f64
            / events.len() as f64;
        for size in [1, 16, 64, 256, 1024, 4096] {
            println!(
                "spooled in frames of {size}: {:.1} bytes per event (JSON lines: {json:.1})",
                per_event(size)
            );
        }
        // What the writer's 10 ms of gathering makes at 10,000 clicks/s.
        let per_event = per_event(100);
        let hour = 36_000_000f64 * per_event;
        assert!(
            hour <= (2u64 << 30) as f64,
            "{per_event:.1} bytes/event: an hour at 10k/s needs {:.2} GiB",
            hour / (1u64 << 30) as f64
        );
    }
}
