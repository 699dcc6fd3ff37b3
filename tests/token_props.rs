//! Property tests of the token codec (a pure module: no servers needed).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use linkedge::token::{Keyring, Kind, Link, Secret, TokenError};
use proptest::prelude::*;

fn ring() -> Keyring {
    Keyring::new(
        vec![
            (
                1,
                Secret::new(b"proptest-key-1-not-a-secret-012345".to_vec()).unwrap(),
            ),
            (
                9,
                Secret::new(b"proptest-key-9-not-a-secret-012345".to_vec()).unwrap(),
            ),
        ],
        9,
    )
    .unwrap()
}

fn host() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,12}(\\.[a-z0-9-]{1,12}){0,3}\\.[a-z]{2,6}"
}

fn link() -> impl Strategy<Value = Link> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        "https?://[a-z0-9.-]{1,30}(/[!-~]{0,80})?",
    )
        .prop_map(
            |(click, trap, workspace, message, link, issued, url)| Link {
                kind: if click { Kind::Click } else { Kind::Open },
                key_id: 9,
                workspace,
                message,
                link,
                issued,
                url: if click { url } else { String::new() },
                trap: click && trap,
            },
        )
}

proptest! {
    #[test]
    fn mint_then_verify_round_trips(h in host(), l in link()) {
        let r = ring();
        let t = r.mint(&h, &l).unwrap();
        prop_assert_eq!(r.verify(&h, &t), Ok(l));
    }

    #[test]
    fn any_single_bit_flip_fails(h in host(), l in link(), bit in any::<prop::sample::Index>()) {
        let r = ring();
        let t = r.mint(&h, &l).unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(&t).unwrap();
        let i = bit.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        let flipped = URL_SAFE_NO_PAD.encode(&bytes);
        prop_assert!(r.verify(&h, &flipped).is_err());
    }

    #[test]
    fn any_single_bit_flip_of_the_text_fails(h in host(), l in link(), bit in any::<prop::sample::Index>()) {
        let r = ring();
        let t = r.mint(&h, &l).unwrap();
        let mut text = t.clone().into_bytes();
        let i = bit.index(text.len() * 8);
        text[i / 8] ^= 1 << (i % 8);
        if let Ok(s) = String::from_utf8(text) {
            prop_assert!(r.verify(&h, &s).is_err());
        }
    }

    #[test]
    fn another_host_is_wrong_host(h in host(), other in host(), l in link()) {
        prop_assume!(h != other);
        let r = ring();
        let t = r.mint(&h, &l).unwrap();
        prop_assert_eq!(r.verify(&other, &t), Err(TokenError::WrongHost));
    }

    #[test]
    fn arbitrary_input_never_panics(s in "\\PC{0,400}") {
        let _ = ring().verify("link.example.com", &s);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = ring().verify("link.example.com", &URL_SAFE_NO_PAD.encode(&b));
    }
}

#[test]
fn rejections_are_specific() {
    let r = ring();
    let h = "link.example.com";
    assert_eq!(r.verify(h, "!!!"), Err(TokenError::Base64));
    assert_eq!(r.verify(h, "AQE"), Err(TokenError::Length));
    let mut v2 = vec![2u8, 1, 9, 0, 0, 0, 0, 0];
    v2.extend([0; 20]);
    assert_eq!(
        r.verify(h, &URL_SAFE_NO_PAD.encode(&v2)),
        Err(TokenError::Version)
    );
    let mut unknown_key = vec![1u8, 1, 5, 0, 0, 0, 0, 0];
    unknown_key.extend([0; 20]);
    assert_eq!(
        r.verify(h, &URL_SAFE_NO_PAD.encode(&unknown_key)),
        Err(TokenError::UnknownKey)
    );
    let huge = "A".repeat(10_000);
    assert_eq!(r.verify(h, &huge), Err(TokenError::Overlong));
    // An open redirect is not mintable.
    let bad = Link {
        kind: Kind::Click,
        key_id: 9,
        workspace: 0,
        message: 0,
        link: 0,
        issued: 0,
        url: "javascript:alert(1)".into(),
        trap: false,
    };
    assert!(r.mint(h, &bad).is_err());
    let crlf = Link {
        url: "https://a.example/\r\nX: y".into(),
        ..bad
    };
    assert!(r.mint(h, &crlf).is_err());
}
