//! Fuzzes `linkedge rewrite` with arbitrary documents, HTML and text: it never panics; a
//! document it refuses gets an error; a rewritten one keeps every byte outside the links it
//! tracked (each tracked link verifies and carries its destination), and grows by at most the
//! tracked URLs and the pixel.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkedge::mint::{Minter, Standing, Unregistered};
use linkedge::rewrite::{Options, rewrite};
use linkedge::token::{Keyring, Secret};
use std::sync::LazyLock;

static MINTER: LazyLock<Minter> = LazyLock::new(|| {
    let key = Secret::new(b"fuzz-key-not-a-secret-0123456789abcdef".to_vec()).unwrap();
    Minter::new(Keyring::new(vec![(1, key)], 1).unwrap(), "https", Unregistered::Refuse)
});

fuzz_target!(|data: &[u8]| {
    let Some((&first, doc)) = data.split_first() else {
        return;
    };
    let opts = Options {
        host: "link.example.com".into(),
        workspace: 7,
        message: 9,
        text: first & 1 == 1,
        pixel: first & 2 == 2,
        issued: 1_790_000_000,
    };
    let Ok(done) = rewrite(&MINTER, &Standing::Active, &opts, doc) else {
        return;
    };
    // `data-linkedge="off"` removes bytes and the pixel adds some anywhere: the byte-for-byte
    // check is for documents without either.
    let exact = done.pixel.is_none()
        && !done
            .report
            .iter()
            .any(|e| e.left_alone == Some(linkedge::rewrite::LeftAlone::OptedOut));
    let mut grown = done.pixel.as_ref().map_or(0, |p| p.len() + 120);
    let (out, mut at, mut pos) = (&done.document, 0, 0);
    for e in done.report.iter().filter(|e| e.url.is_some()) {
        let url = e.url.as_ref().unwrap();
        let token = url.rsplit('/').next().unwrap();
        let link = MINTER.keyring().verify("link.example.com", token).expect("verifies");
        assert_eq!(link.url, e.destination);
        grown += url.len();
        if !exact {
            continue;
        }
        // The bytes before this link are the input's.
        let before = &doc[at..e.source.start];
        assert_eq!(&out[pos..pos + before.len()], before, "bytes changed before link {}", e.index);
        pos += before.len();
        let escaped = htmlize::escape_attribute(url.as_str());
        let written = if opts.text { url.as_str() } else { &escaped };
        assert_eq!(&out[pos..pos + written.len()], written.as_bytes());
        pos += written.len();
        at = e.source.end;
    }
    if exact {
        assert_eq!(&out[pos..], &doc[at..], "bytes changed after the last link");
    }
    assert!(out.len() <= doc.len() + grown, "grew by more than its links and pixel");
});
