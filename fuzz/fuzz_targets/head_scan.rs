//! Fuzzes the HTTP/1 head counter that refuses heads over `limits.max_headers` and
//! `limits.max_header_bytes` before Pingora parses them: it never panics, its verdict does not
//! depend on how the bytes were split across reads, and where it finds the head's end is where
//! a plain reading of the bytes finds it (the first empty line after a non-empty one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkedge::limits::{HeadScan, Scan};

/// The head's length by a plain reading: up to and including the first blank line (`\n` or
/// `\r\n`) that follows a non-blank one.
fn reference_end(data: &[u8]) -> Option<usize> {
    let mut seen_line = false;
    let mut start = 0;
    for (i, b) in data.iter().enumerate() {
        if *b != b'\n' {
            continue;
        }
        let line = &data[start..i];
        let blank = line.is_empty() || line == b"\r";
        if blank && seen_line {
            return Some(i + 1);
        }
        seen_line |= !blank;
        start = i + 1;
    }
    None
}

/// Ok, Done or Over, without which limit (that can depend on where a read ended).
fn kind(s: &Scan) -> u8 {
    match s {
        Scan::Ok => 0,
        Scan::Done => 1,
        Scan::Over(_) => 2,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let (fields, bytes) = (usize::from(knobs & 0x1f), 64 + u64::from(knobs >> 5) * 512);
    let mut whole = HeadScan::default();
    let one = whole.feed(rest, fields, bytes);
    // The same bytes in reads of 1 to 7 bytes, stopping at the first verdict that is not Ok.
    let mut split = HeadScan::default();
    let mut verdict = Scan::Ok;
    let mut at = 0;
    let mut step = 1;
    while at < rest.len() && verdict == Scan::Ok {
        let end = (at + step).min(rest.len());
        verdict = split.feed(&rest[at..end], fields, bytes);
        at = end;
        step = step % 7 + 1;
    }
    assert_eq!(kind(&one), kind(&verdict), "{one:?} whole, {verdict:?} split");
    if one == Scan::Done {
        let end = reference_end(rest).expect("the head ended where a plain reading finds no end");
        assert_eq!(whole.consumed(), end as u64);
        assert_eq!(split.consumed(), end as u64);
    } else if one == Scan::Ok {
        assert_eq!(reference_end(rest), None, "a head's end was missed");
    }
});
