//! Fuzzes the domain verifier's HTTP response reader with arbitrary bytes, as a customer's
//! server (or whatever their DNS points at) could send: it never panics, and what it accepts
//! has a body that is a suffix of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkedge::control::verify::{MAX_RESPONSE, parse_response};

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(MAX_RESPONSE)];
    if let Ok((_, headers, body)) = parse_response(data) {
        assert!(data.ends_with(&body));
        assert!(headers.len() <= data.len());
    }
});
