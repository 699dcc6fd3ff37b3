//! The link-token test vectors, `tests/vectors/tokens.json`: the reference for every other
//! implementation of the README's "Link format" (the clients in `clients/` run the same file).
//!
//! The committed file is checked against the codec: each valid case mints to exactly its token
//! and verifies back to its fields; each invalid case is refused with exactly its reason. The
//! file is written by this test's generator (`LINKEDGE_WRITE_VECTORS=1 cargo test --test
//! vectors`), and the test fails when the committed file differs from what it writes, so a
//! change to the format cannot pass unnoticed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use linkedge::token::{Keyring, Kind, Link, MAX_URL_LEN, Secret};
use serde_json::{Value, json};
use sha2::Sha256;

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/tokens.json");

/// The two keys of the vectors: test keys, not secrets.
const KEYS: [(u32, &str); 2] = [
    (1, "linkedge-test-vector-key-1-not-a-secret"),
    (
        4_294_967_295,
        "linkedge-test-vector-key-2-not-a-secret-either",
    ),
];
/// A key no vector keyring holds.
const OTHER_KEY: (u32, &str) = (3, "linkedge-test-vector-key-3-unknown-to-the-keyring");

const MAX: u64 = u64::MAX;

fn ring(mint_id: u32) -> Keyring {
    Keyring::new(
        KEYS.iter()
            .map(|(id, s)| (*id, Secret::new(s.as_bytes().to_vec()).unwrap()))
            .collect(),
        mint_id,
    )
    .unwrap()
}

fn secret(id: u32) -> &'static str {
    KEYS.iter()
        .chain([&OTHER_KEY])
        .find(|(k, _)| *k == id)
        .unwrap()
        .1
}

struct Case {
    name: String,
    key: u32,
    host: &'static str,
    kind: &'static str,
    ids: [u64; 4],
    url: String,
}

fn case(
    name: &str,
    key: u32,
    host: &'static str,
    kind: &'static str,
    ids: [u64; 4],
    url: &str,
) -> Case {
    Case {
        name: name.into(),
        key,
        host,
        kind,
        ids,
        url: url.into(),
    }
}

const H: &str = "link.example.com";
const T: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn valid_cases() -> Vec<Case> {
    let k1 = KEYS[0].0;
    let k2 = KEYS[1].0;
    let long = |n: usize| {
        let head = "https://example.com/long?pad=";
        format!("{head}{}", "x".repeat(n - head.len()))
    };
    vec![
        case(
            "click",
            k1,
            H,
            "click",
            [7, 9, 3, T],
            "https://example.com/",
        ),
        case(
            "click, every id 0",
            k1,
            H,
            "click",
            [0, 0, 0, 0],
            "https://example.com/",
        ),
        case(
            "click, every id at its largest",
            k1,
            H,
            "click",
            [MAX; 4],
            "https://example.com/",
        ),
        case("open", k1, H, "open", [7, 9, 0, T], ""),
        case("open, every id 0", k1, H, "open", [0, 0, 0, 0], ""),
        case("open, every id at its largest", k1, H, "open", [MAX; 4], ""),
        case(
            "trap",
            k1,
            H,
            "trap",
            [7, 9, 99, T],
            "https://example.com/hidden",
        ),
        case(
            "trap, every id 0",
            k1,
            H,
            "trap",
            [0, 0, 0, 0],
            "https://example.com/",
        ),
        case(
            "trap, every id at its largest",
            k1,
            H,
            "trap",
            [MAX; 4],
            "https://example.com/",
        ),
        case(
            "click, second key (id 4294967295)",
            k2,
            H,
            "click",
            [7, 9, 3, T],
            "https://example.com/",
        ),
        case("open, second key", k2, H, "open", [7, 9, 0, T], ""),
        case(
            "trap, second key",
            k2,
            H,
            "trap",
            [7, 9, 4, T],
            "https://example.com/t",
        ),
        case(
            "query string",
            k1,
            H,
            "click",
            [7, 9, 5, T],
            "https://shop.example.com/p?id=42&utm_source=email&utm_medium=link",
        ),
        case(
            "fragment",
            k1,
            H,
            "click",
            [7, 9, 6, T],
            "https://example.com/docs#section-2",
        ),
        case(
            "query and fragment",
            k1,
            H,
            "click",
            [7, 9, 7, T],
            "https://example.com/a/b?x=1&y=2#top",
        ),
        case(
            "percent-encoding",
            k1,
            H,
            "click",
            [7, 9, 8, T],
            "https://example.com/search?q=caf%C3%A9%20cr%C3%A8me&next=%2Fhome%3Fa%3D1",
        ),
        case(
            "IDNA destination, punycode",
            k1,
            H,
            "click",
            [7, 9, 9, T],
            "https://xn--bcher-kva.example/",
        ),
        case(
            "IDNA destination, Unicode (UTF-8 bytes)",
            k1,
            H,
            "click",
            [7, 9, 10, T],
            "https://bücher.example/straße?ä=ö",
        ),
        case(
            "http destination",
            k1,
            H,
            "click",
            [7, 9, 11, T],
            "http://example.com/plain",
        ),
        case(
            "upper-case scheme and host, port",
            k1,
            H,
            "click",
            [7, 9, 12, T],
            "HTTPS://Example.COM:8443/Path",
        ),
        case(
            "user info",
            k1,
            H,
            "click",
            [7, 9, 13, T],
            "https://user@example.com/",
        ),
        case(
            "IPv6 destination",
            k1,
            H,
            "click",
            [7, 9, 14, T],
            "https://[2001:db8::1]:8443/x",
        ),
        case(
            "punctuation in the query",
            k1,
            H,
            "click",
            [7, 9, 15, T],
            "https://example.com/?q=a|b{c}[d]'e'\"f\"<g>",
        ),
        case(
            "destination of 200 bytes",
            k1,
            H,
            "click",
            [7, 9, 16, T],
            &long(200),
        ),
        case(
            "destination of 201 bytes",
            k1,
            H,
            "click",
            [7, 9, 17, T],
            &long(201),
        ),
        case(
            "destination of 2048 bytes (the largest)",
            k1,
            H,
            "click",
            [7, 9, 18, T],
            &long(MAX_URL_LEN),
        ),
        case(
            "varints at 1 and 2 bytes: 127, 128, 16383",
            k1,
            H,
            "click",
            [127, 128, 16_383, T],
            "https://example.com/",
        ),
        case(
            "varints at 3 to 5 bytes: 16384, 2^32, 2^35-1",
            k1,
            H,
            "click",
            [16_384, 1 << 32, (1 << 35) - 1, T],
            "https://example.com/",
        ),
        case(
            "varints at 9 and 10 bytes: 2^63-1, 2^63",
            k1,
            H,
            "click",
            [(1 << 63) - 1, 1 << 63, 1 << 56, T],
            "https://example.com/",
        ),
        case(
            "link host in punycode",
            k1,
            "xn--bcher-kva.example",
            "click",
            [7, 9, 19, T],
            "https://example.com/",
        ),
        case(
            "link host with digits, hyphens and an underscore",
            k1,
            "t1.links-eu_2.example.net",
            "click",
            [7, 9, 20, T],
            "https://example.com/",
        ),
        case(
            "link host localhost",
            k1,
            "localhost",
            "open",
            [7, 9, 0, T],
            "",
        ),
        case(
            "link host an IPv4 literal",
            k1,
            "127.0.0.1",
            "click",
            [7, 9, 21, T],
            "https://example.com/",
        ),
        case(
            "link host an IPv6 literal",
            k1,
            "[2001:db8::1]",
            "click",
            [7, 9, 22, T],
            "https://example.com/",
        ),
        case(
            "the largest token: key 2^32-1, every id 2^64-1, a 2048-byte destination",
            k2,
            H,
            "trap",
            [MAX; 4],
            &long(MAX_URL_LEN),
        ),
    ]
}

/// `payload` signed with `key` for `host`: check and mac appended, base64url.
fn sign(key: u32, host: &str, payload: &[u8]) -> String {
    let mac = |parts: &[&[u8]]| {
        let mut m = Hmac::<Sha256>::new_from_slice(secret(key).as_bytes()).unwrap();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes()
    };
    let mut bytes = payload.to_vec();
    let check = mac(&[&[1], payload]);
    bytes.extend_from_slice(&check[..4]);
    let tag = mac(&[&[2], host.as_bytes(), &[0], &bytes]);
    bytes.extend_from_slice(&tag[..16]);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A payload (no check, no mac) from raw parts: version, kind, then each varint as given.
fn payload(version: u8, kind: u8, varints: &[&[u8]], url: &[u8]) -> Vec<u8> {
    let mut p = vec![version, kind];
    for v in varints {
        p.extend_from_slice(v);
    }
    p.extend_from_slice(url);
    p
}

fn v(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(&mut out, n);
    out
}

/// A well-formed click payload with key `key` and destination `url`, its length as given.
fn click_payload(key: u32, url: &[u8], url_len: u64) -> Vec<u8> {
    payload(
        1,
        1,
        &[&v(key as u64), &v(7), &v(9), &v(3), &v(T), &v(url_len)],
        url,
    )
}

/// `token` with the lowest bit of its decoded byte `i` flipped.
fn flip(token: &str, i: usize) -> String {
    let mut b = URL_SAFE_NO_PAD.decode(token).unwrap();
    b[i] ^= 0x01;
    URL_SAFE_NO_PAD.encode(b)
}

/// (name, host verified on, token).
fn invalid_cases() -> Vec<(String, &'static str, String)> {
    let k1 = KEYS[0].0;
    let url = b"https://example.com/";
    let good = sign(k1, H, &click_payload(k1, url, url.len() as u64));
    let good_len = URL_SAFE_NO_PAD.decode(&good).unwrap().len();
    let c: Vec<(&str, &'static str, String)> = vec![
        (
            "tampered payload (a bit of the destination flipped)",
            H,
            flip(&good, 20),
        ),
        (
            "tampered payload (a bit of the workspace flipped)",
            H,
            flip(&good, 3),
        ),
        ("tampered check", H, flip(&good, good_len - 17)),
        (
            "tampered mac (the check still holds: answered as minted for another host)",
            H,
            flip(&good, good_len - 1),
        ),
        (
            "genuine, verified on another host",
            "link.other.example",
            good.clone(),
        ),
        ("signed with a key the keyring does not hold", H, {
            let k = OTHER_KEY.0;
            sign(k, H, &click_payload(k, url, url.len() as u64))
        }),
        (
            "overlong varint: the workspace 0 written in two bytes",
            H,
            sign(
                k1,
                H,
                &payload(
                    1,
                    1,
                    &[
                        &v(1),
                        &[0x80, 0x00],
                        &v(9),
                        &v(3),
                        &v(T),
                        &v(url.len() as u64),
                    ],
                    url,
                ),
            ),
        ),
        (
            "overlong varint: eleven bytes",
            H,
            sign(
                k1,
                H,
                &payload(
                    1,
                    1,
                    &[
                        &v(1),
                        &[0xff; 10],
                        &[0x01],
                        &v(9),
                        &v(3),
                        &v(T),
                        &v(url.len() as u64),
                    ],
                    url,
                ),
            ),
        ),
        (
            "varint above 2^64-1",
            H,
            sign(
                k1,
                H,
                &payload(
                    1,
                    1,
                    &[
                        &v(1),
                        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                        &v(9),
                        &v(3),
                        &v(T),
                        &v(url.len() as u64),
                    ],
                    url,
                ),
            ),
        ),
        (
            "key id above 2^32-1",
            H,
            sign(
                k1,
                H,
                &payload(
                    1,
                    1,
                    &[
                        &v(1 << 32),
                        &v(7),
                        &v(9),
                        &v(3),
                        &v(T),
                        &v(url.len() as u64),
                    ],
                    url,
                ),
            ),
        ),
        (
            "bad URL: javascript:",
            H,
            sign(k1, H, &click_payload(k1, b"javascript:alert(1)", 19)),
        ),
        (
            "bad URL: relative",
            H,
            sign(k1, H, &click_payload(k1, b"/relative/path", 14)),
        ),
        (
            "bad URL: a space",
            H,
            sign(k1, H, &click_payload(k1, b"https://example.com/a b", 23)),
        ),
        (
            "bad URL: a line break (header splitting)",
            H,
            sign(
                k1,
                H,
                &click_payload(k1, b"https://example.com/\r\nSet-Cookie: a=1", 37),
            ),
        ),
        (
            "bad URL: no host",
            H,
            sign(k1, H, &click_payload(k1, b"https:///path", 13)),
        ),
        (
            "bad URL: not UTF-8",
            H,
            sign(k1, H, &click_payload(k1, b"https://example.com/\xff", 21)),
        ),
        (
            "an open pixel with a destination",
            H,
            sign(
                k1,
                H,
                &payload(
                    1,
                    2,
                    &[&v(1), &v(7), &v(9), &v(0), &v(T), &v(url.len() as u64)],
                    url,
                ),
            ),
        ),
        ("destination of 2049 bytes", H, {
            let u = format!("https://example.com/{}", "x".repeat(MAX_URL_LEN + 1 - 20));
            sign(k1, H, &click_payload(k1, u.as_bytes(), u.len() as u64))
        }),
        (
            "URL length past the end of the token",
            H,
            sign(k1, H, &click_payload(k1, url, url.len() as u64 + 1)),
        ),
        (
            "bytes left after the URL",
            H,
            sign(k1, H, &click_payload(k1, url, url.len() as u64 - 1)),
        ),
        (
            "unknown version (2)",
            H,
            sign(
                k1,
                H,
                &payload(
                    2,
                    1,
                    &[&v(1), &v(7), &v(9), &v(3), &v(T), &v(url.len() as u64)],
                    url,
                ),
            ),
        ),
        (
            "unknown kind (0)",
            H,
            sign(
                k1,
                H,
                &payload(
                    1,
                    0,
                    &[&v(1), &v(7), &v(9), &v(3), &v(T), &v(url.len() as u64)],
                    url,
                ),
            ),
        ),
        (
            "unknown kind (4)",
            H,
            sign(
                k1,
                H,
                &payload(
                    1,
                    4,
                    &[&v(1), &v(7), &v(9), &v(3), &v(T), &v(url.len() as u64)],
                    url,
                ),
            ),
        ),
        ("too short", H, URL_SAFE_NO_PAD.encode([1u8, 1, 1, 0])),
        (
            "not base64url: '+'",
            H,
            good.replacen(|c: char| c.is_ascii_alphabetic(), "+", 1),
        ),
        ("not base64url: padding", H, format!("{good}=")),
        (
            "longer than any token",
            H,
            "A".repeat(linkedge::token::MAX_TOKEN_LEN + 1),
        ),
    ];
    c.into_iter()
        .map(|(n, h, t)| (n.to_string(), h, t))
        .collect()
}

fn generate() -> Value {
    let valid: Vec<Value> = valid_cases()
        .iter()
        .map(|c| {
            let (kind, trap) = match c.kind {
                "click" => (Kind::Click, false),
                "open" => (Kind::Open, false),
                _ => (Kind::Click, true),
            };
            let link = Link {
                kind,
                key_id: c.key,
                workspace: c.ids[0],
                message: c.ids[1],
                link: c.ids[2],
                issued: c.ids[3],
                url: c.url.clone(),
                trap,
            };
            let token = ring(c.key).mint(c.host, &link).unwrap();
            // The codec's token is the format's, built here byte by byte without it.
            let kind_byte = match c.kind {
                "click" => 1,
                "open" => 2,
                _ => 3,
            };
            let p = payload(
                1,
                kind_byte,
                &[
                    &v(c.key as u64),
                    &v(c.ids[0]),
                    &v(c.ids[1]),
                    &v(c.ids[2]),
                    &v(c.ids[3]),
                    &v(c.url.len() as u64),
                ],
                c.url.as_bytes(),
            );
            assert_eq!(token, sign(c.key, c.host, &p), "{}", c.name);
            json!({
                "name": c.name,
                "key_id": c.key,
                "host": c.host,
                "kind": c.kind,
                "workspace": c.ids[0],
                "message": c.ids[1],
                "link": c.ids[2],
                "issued": c.ids[3],
                "url": c.url,
                "token": token,
                "tracked_url": format!("https://{}/{}/{token}", c.host, kind.path_segment()),
            })
        })
        .collect();
    let invalid: Vec<Value> = invalid_cases()
        .into_iter()
        .map(|(name, host, token)| {
            let e = ring(KEYS[0].0).verify(host, &token).unwrap_err();
            json!({ "name": name, "host": host, "token": token, "error": e.reason(), "message": e.to_string() })
        })
        .collect();
    json!({
        "about": "linkedge link-token test vectors (README, \"Link format\"). Secrets are the UTF-8 bytes of each key's string: test keys, not secrets. Valid cases: minting the fields with key_id's secret for host gives exactly token (issued is given, not the clock); tracked_url is https://<host>/<c|o>/<token>. Invalid cases: a keyring holding both keys refuses token on host with error (linkedge's metric label) and message.",
        "keys": KEYS.iter().map(|(id, s)| json!({ "id": id, "secret": s })).collect::<Vec<_>>(),
        "valid": valid,
        "invalid": invalid,
    })
}

fn render(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap() + "\n"
}

/// The committed file (written first, once, with `LINKEDGE_WRITE_VECTORS` set).
fn committed() -> String {
    static WRITE: std::sync::Once = std::sync::Once::new();
    WRITE.call_once(|| {
        if std::env::var_os("LINKEDGE_WRITE_VECTORS").is_some() {
            std::fs::write(FILE, render(&generate())).unwrap();
        }
    });
    std::fs::read_to_string(FILE).expect("tests/vectors/tokens.json")
}

#[test]
fn the_committed_vectors_are_what_the_codec_produces() {
    let generated = render(&generate());
    let committed = committed();
    assert!(
        committed == generated,
        "tests/vectors/tokens.json differs from what the codec produces; if the format changed \
         on purpose, regenerate it with LINKEDGE_WRITE_VECTORS=1 cargo test --test vectors"
    );
}

/// The file on its own terms, as another implementation reads it.
#[test]
fn every_vector_mints_and_verifies_as_the_file_says() {
    let file: Value = serde_json::from_str(&committed()).unwrap();
    let keys: Vec<(u32, Secret)> = file["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_u64().unwrap() as u32,
                Secret::new(k["secret"].as_str().unwrap().as_bytes().to_vec()).unwrap(),
            )
        })
        .collect();
    let valid = file["valid"].as_array().unwrap();
    let invalid = file["invalid"].as_array().unwrap();
    assert!(
        valid.len() >= 30 && invalid.len() >= 20,
        "{} valid, {} invalid",
        valid.len(),
        invalid.len()
    );
    let mut kinds = std::collections::HashSet::new();
    for c in valid {
        let name = c["name"].as_str().unwrap();
        let key_id = c["key_id"].as_u64().unwrap() as u32;
        let ring = Keyring::new(keys.clone(), key_id).unwrap();
        let host = c["host"].as_str().unwrap();
        let kind = c["kind"].as_str().unwrap();
        kinds.insert(kind);
        let link = Link {
            kind: if kind == "open" {
                Kind::Open
            } else {
                Kind::Click
            },
            key_id,
            workspace: c["workspace"].as_u64().unwrap(),
            message: c["message"].as_u64().unwrap(),
            link: c["link"].as_u64().unwrap(),
            issued: c["issued"].as_u64().unwrap(),
            url: c["url"].as_str().unwrap().to_string(),
            trap: kind == "trap",
        };
        let token = c["token"].as_str().unwrap();
        assert_eq!(ring.mint(host, &link).unwrap(), token, "{name}");
        assert_eq!(ring.verify(host, token).unwrap(), link, "{name}");
        let seg = link.kind.path_segment();
        assert_eq!(
            c["tracked_url"],
            format!("https://{host}/{seg}/{token}"),
            "{name}"
        );
    }
    assert_eq!(kinds.len(), 3, "click, open and trap");
    let ring = Keyring::new(keys.clone(), keys[0].0).unwrap();
    let mut reasons = std::collections::HashSet::new();
    for c in invalid {
        let name = c["name"].as_str().unwrap();
        let e = ring
            .verify(c["host"].as_str().unwrap(), c["token"].as_str().unwrap())
            .expect_err(name);
        assert_eq!(e.reason(), c["error"], "{name}");
        assert_eq!(e.to_string(), c["message"], "{name}");
        reasons.insert(e.reason());
    }
    for r in [
        "bad_signature",
        "wrong_host",
        "unknown_key",
        "overlong",
        "bad_url",
        "length",
        "version",
        "kind",
        "base64",
    ] {
        assert!(reasons.contains(r), "no invalid vector is refused with {r}");
    }
}
