//! `linkedge rewrite` on a corpus of emails (`tests/emails/`: each document with its expected
//! report, `<name>.report.json`), a property test over generated documents, and the command
//! line and `POST /v1/rewrite` against a real Redis and a running linkedge.
//!
//! Expected reports are written by `LINKEDGE_WRITE_EMAILS=1 cargo test --test rewrite` and
//! reviewed by hand; the test fails when a rewrite's report differs from the committed one.

mod common;

use common::*;
use linkedge::mint::{Minter, Standing, Unregistered};
use linkedge::rewrite::{LeftAlone, Options, RewriteError, rewrite};
use linkedge::token::Kind;
use proptest::prelude::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const HOST: &str = "link.example.com";
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/emails");
const ISSUED: u64 = 1_790_000_000;

fn minter() -> Minter {
    Minter::new(keyring(2), "https", Unregistered::Refuse)
}

fn opts(text: bool) -> Options {
    Options {
        host: HOST.into(),
        workspace: 7,
        message: 9,
        text,
        pixel: !text,
        issued: ISSUED,
    }
}

/// `doc` with its `LINKEDGE_TRACKED_URL` placeholder replaced by a link linkedge already minted.
fn prepared(doc: &[u8]) -> Vec<u8> {
    let tracked = format!(
        "https://{HOST}/c/{}",
        click(HOST, "https://shop.example.com/orders/1", 5)
    );
    let text = String::from_utf8_lossy(doc);
    if text.contains("LINKEDGE_TRACKED_URL") {
        text.replace("LINKEDGE_TRACKED_URL", &tracked).into_bytes()
    } else {
        doc.to_vec()
    }
}

/// Every byte of `out` outside the tracked links and the pixel is `doc`'s (opted-out
/// attributes excepted), and every tracked link verifies to its destination and link id.
fn check_preserved(doc: &[u8], out: &[u8], done: &linkedge::rewrite::Rewritten) {
    let ring = keyring(2);
    let mut rebuilt = Vec::new();
    let mut pos = 0;
    for e in &done.report {
        let Some(url) = &e.url else { continue };
        let token = url.strip_prefix(&format!("https://{HOST}/c/")).expect(url);
        let link = ring.verify(HOST, token).unwrap();
        assert_eq!(
            (link.kind, link.url.as_str()),
            (Kind::Click, e.destination.as_str())
        );
        assert_eq!(Some(link.link), e.link);
        assert_eq!((link.workspace, link.message, link.issued), (7, 9, ISSUED));
        // The range the report names is the link as written: the href's value (right after
        // its quote or `=`), or the URL in a text part.
        let written = &doc[e.source.clone()];
        if let Ok(written) = std::str::from_utf8(written) {
            let decoded: String = htmlize::unescape_attribute(written)
                .trim_matches(|c: char| c <= ' ')
                .chars()
                .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
                .collect();
            assert_eq!(decoded, e.destination, "link {}", e.index);
        }
        assert!(
            e.source.start == 0
                || matches!(
                    doc[e.source.start - 1],
                    b'"' | b'\'' | b'=' | b' ' | b'\n' | b'(' | b'<'
                ),
            "link {} does not start at a value: {:?}",
            e.index,
            String::from_utf8_lossy(&doc[e.source.start.saturating_sub(10)..e.source.end])
        );
        let found = memchr::memmem::find(&out[pos..], url.as_bytes())
            .expect("the tracked URL is in the output")
            + pos;
        rebuilt.extend_from_slice(&out[pos..found]);
        rebuilt.extend_from_slice(&doc[e.source.clone()]);
        pos = found + url.len();
    }
    rebuilt.extend_from_slice(&out[pos..]);
    if let Some(p) = &done.pixel {
        let img = format!(
            "<img src=\"{p}\" width=\"1\" height=\"1\" alt=\"\" border=\"0\" style=\"border:0;width:1px;height:1px\" />"
        );
        assert_eq!(
            memchr::memmem::find_iter(&rebuilt, img.as_bytes()).count(),
            1,
            "one pixel"
        );
        let at = memchr::memmem::find(&rebuilt, img.as_bytes()).unwrap();
        rebuilt.drain(at..at + img.len());
    }
    let opted_out = done
        .report
        .iter()
        .any(|e| e.left_alone == Some(LeftAlone::OptedOut));
    let mut expected = doc.to_vec();
    if opted_out {
        let attr = b" data-linkedge=\"off\"";
        while let Some(at) = memchr::memmem::find(&expected, attr) {
            expected.drain(at..at + attr.len());
        }
    }
    assert!(
        rebuilt == expected,
        "only the links, the pixel and data-linkedge changed:\n{}",
        String::from_utf8_lossy(out)
    );
}

#[test]
fn the_corpus_is_rewritten_as_its_reports_say() {
    let mut names: Vec<_> = std::fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("html" | "txt")))
        .collect();
    names.sort();
    assert!(names.len() >= 4, "{names:?}");
    let mut totals = std::collections::BTreeMap::<String, usize>::new();
    for path in names {
        let text = path.extension().unwrap() == "txt";
        let doc = prepared(&std::fs::read(&path).unwrap());
        let done = rewrite(&minter(), &Standing::Active, &opts(text), &doc).unwrap();
        check_preserved(&doc, &done.document, &done);
        let report: Vec<Value> = done
            .report
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(e).unwrap();
                v.as_object_mut().unwrap().remove("url");
                *totals
                    .entry(match e.left_alone {
                        None => "tracked".into(),
                        Some(r) => format!(
                            "left alone: {}",
                            serde_json::to_value(r).unwrap().as_str().unwrap()
                        ),
                    })
                    .or_default() += 1;
                v
            })
            .collect();
        let expected_path = path.with_extension(format!(
            "{}.report.json",
            path.extension().unwrap().to_str().unwrap()
        ));
        let rendered = serde_json::to_string_pretty(&report).unwrap() + "\n";
        if std::env::var_os("LINKEDGE_WRITE_EMAILS").is_some() {
            std::fs::write(&expected_path, &rendered).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "{} (LINKEDGE_WRITE_EMAILS=1 writes it)",
                expected_path.display()
            )
        });
        assert_eq!(rendered, expected, "{}", path.display());
        if !text {
            assert!(done.pixel.is_some());
        }
    }
    println!("corpus links: {totals:?}");
}

#[test]
fn rules_in_detail() {
    let m = minter();
    let run = |doc: &str| rewrite(&m, &Standing::Active, &opts(false), doc.as_bytes()).unwrap();
    // A VML button and its HTML fallback to the same URL share one link id; the next link is 2.
    let done = run(
        "<body><!--[if mso]><v:roundrect href=\"https://e.com/buy\"></v:roundrect><![endif]-->\
         <a href=\"https://e.com/buy\">Buy</a><a href=\"https://e.com/other\">Other</a></body>",
    );
    let links: Vec<_> = done.report.iter().map(|e| e.link).collect();
    assert_eq!(links, [Some(1), Some(1), Some(2)]);
    // The pixel is the body's last child; without a body it ends the document.
    let out = String::from_utf8(done.document).unwrap();
    assert!(
        out.ends_with("style=\"border:0;width:1px;height:1px\" /></body>"),
        "{out}"
    );
    let out = String::from_utf8(run("<p>hi</p>").document).unwrap();
    assert!(
        out.starts_with("<p>hi</p><img src=\"https://link.example.com/o/"),
        "{out}"
    );
    // Entities decoded for the destination, written back escaped; &copy= in a query kept.
    let done = run("<a href=\"https://e.com/?a=1&amp;b=2&copy=3\">x</a>");
    assert_eq!(done.report[0].destination, "https://e.com/?a=1&b=2&copy=3");
    // Text: trailing punctuation and brackets stay outside the URL.
    let t = rewrite(
        &m,
        &Standing::Active,
        &opts(true),
        "See https://e.com/a. Or (https://e.com/b), <https://e.com/c>, https://e.com/d?x=1,"
            .as_bytes(),
    )
    .unwrap();
    let dests: Vec<_> = t.report.iter().map(|e| e.destination.as_str()).collect();
    assert_eq!(
        dests,
        [
            "https://e.com/a",
            "https://e.com/b",
            "https://e.com/c",
            "https://e.com/d?x=1"
        ]
    );
    let out = String::from_utf8(t.document.clone()).unwrap();
    assert!(
        out.starts_with("See https://link.example.com/c/") && out.contains(". Or (https://"),
        "{out}"
    );
    assert!(out.ends_with(',') && t.pixel.is_none(), "{out}");
    // data-linkedge="off" removed without joining its neighbours; the first href counts;
    // tabs and line breaks in a URL are dropped as a browser does; template in a text URL.
    let done = run(
        "<a data-linkedge=\"off\"href=\"https://e.com/a\">x</a><a href href=\"https://e.com/b\">y</a><a href=\"https://e.com/\n\tc\">z</a>",
    );
    let out = String::from_utf8(done.document.clone()).unwrap();
    assert!(
        out.starts_with("<a href=\"https://e.com/a\">x</a><a href href=\"https://e.com/b\">"),
        "{out}"
    );
    assert_eq!(done.report.len(), 2, "{:?}", done.report);
    assert_eq!(done.report[1].destination, "https://e.com/c");
    let t = rewrite(
        &m,
        &Standing::Active,
        &opts(true),
        b"Go https://e.com/?e=*|EMAIL|* now",
    )
    .unwrap();
    assert_eq!(t.report[0].left_alone, Some(LeftAlone::Template));
    assert_eq!(t.document, b"Go https://e.com/?e=*|EMAIL|* now");
    // A conditional comment nested in itself a thousand times is scanned once, not recursed.
    let deep = format!(
        "<body>{}<a href=\"https://e.com/\">x</a>{}</body>",
        "<!--[if mso]>".repeat(1000),
        "-->"
    );
    assert!(rewrite(&m, &Standing::Active, &opts(false), deep.as_bytes()).is_ok());
    // --no-pixel.
    let mut o = opts(false);
    o.pixel = false;
    let done = rewrite(&m, &Standing::Active, &o, b"<body></body>").unwrap();
    assert_eq!(done.document, b"<body></body>");
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    let m = minter();
    let refuse = |standing: Standing, text: bool, doc: &[u8]| {
        rewrite(&m, &standing, &opts(text), doc).unwrap_err()
    };
    assert_eq!(
        refuse(
            Standing::Unregistered,
            false,
            b"<a href=\"https://e.com/\">x</a>"
        )
        .to_string(),
        "link.example.com is not registered: add it with `linkedge domain add` (the registry decides its region and its certificate)"
    );
    assert!(
        refuse(
            Standing::Retired {
                to: Some("l.example.net".into())
            },
            false,
            b""
        )
        .to_string()
        .contains("retired")
    );
    assert!(matches!(
        refuse(Standing::Active, false, b"<p>caf\xe9</p>"),
        RewriteError::NotUtf8(6)
    ));
    assert!(matches!(
        refuse(Standing::Active, true, b"caf\xe9"),
        RewriteError::NotUtf8(3)
    ));
    let e = refuse(
        Standing::Active,
        false,
        b"<meta charset=\"utf-16\"><p>x</p>",
    );
    assert!(
        e.to_string().contains("utf-16") && e.to_string().contains("does not support"),
        "{e}"
    );
    let e = refuse(
        Standing::Active,
        false,
        b"<meta charset=\"klingon\"><p>x</p>",
    );
    assert!(e.to_string().contains("klingon"), "{e}");
    let big = vec![b'a'; linkedge::rewrite::MAX_DOCUMENT + 1];
    assert!(matches!(
        refuse(Standing::Active, false, &big),
        RewriteError::TooLarge(_)
    ));
    let many = "<a href=\"https://e.com/\">x</a>".repeat(linkedge::rewrite::MAX_LINKS + 1);
    assert_eq!(
        refuse(Standing::Active, false, many.as_bytes()),
        RewriteError::TooManyLinks
    );
    // A hostile document: one unterminated 9 MB tag.
    let mut hostile = b"<a href=\"https://e.com/\" x=\"".to_vec();
    hostile.extend(std::iter::repeat_n(b'y', 9 << 20));
    let e = refuse(Standing::Active, false, &hostile);
    assert!(matches!(e, RewriteError::Html(_)), "{e}");
}

/// Pieces of generated documents: text, links of every kind, comments.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 .,;:!?()éü€-]{0,30}",
        "[a-z0-9/?=_.-]{0,20}".prop_map(|p| format!("<a href=\"https://shop.example.com/{p}\">x</a>")),
        "[a-z0-9]{1,8}".prop_map(|p| format!("<a href=\"https://e.com/?a={p}&amp;b=2\">y</a>")),
        "[a-z0-9]{1,8}".prop_map(|p| format!("<a class=c href='http://e.com/{p}' >z</a>")),
        Just("<a href=\"mailto:x@example.com\">m</a>".to_string()),
        Just("<a href=\"{{unsubscribe}}\">u</a>".to_string()),
        Just("<a href=\"#top\">t</a>".to_string()),
        "[a-z]{1,8}".prop_map(|p| format!("<!--[if mso]><v:rect href=\"https://e.com/{p}\"></v:rect><![endif]--><a href=\"https://e.com/{p}\">b</a>")),
        Just("<!-- a comment with https://e.com/ -->".to_string()),
        Just("<table><tr><td>cell</td></tr></table>".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn only_links_change_and_each_decodes_to_its_destination(pieces in prop::collection::vec(piece(), 0..40), body in any::<bool>()) {
        let mut doc = pieces.concat();
        if body {
            doc = format!("<html><body>{doc}</body></html>");
        }
        let done = rewrite(&minter(), &Standing::Active, &opts(false), doc.as_bytes()).unwrap();
        check_preserved(doc.as_bytes(), &done.document, &done);
    }

    #[test]
    fn text_links_decode_to_what_a_reader_sees(words in prop::collection::vec(prop_oneof![
        "[a-z]{1,8}".prop_map(|w| w),
        "[a-z0-9/]{0,12}".prop_map(|p| format!("https://e.com/{p}")),
        "[a-z0-9]{1,6}".prop_map(|p| format!("(https://e.com/{p})")),
        "[a-z0-9]{1,6}".prop_map(|p| format!("https://e.com/{p}.")),
    ], 0..30)) {
        let doc = words.join(" ");
        let done = rewrite(&minter(), &Standing::Active, &opts(true), doc.as_bytes()).unwrap();
        for e in &done.report {
            prop_assert!(!e.destination.ends_with('.') && !e.destination.ends_with(')'), "{}", e.destination);
        }
        check_preserved(doc.as_bytes(), &done.document, &done);
    }
}

fn started() -> (Redis, Linkedge) {
    let redis = Redis::start();
    let mut o = common::Options::new(redis.url());
    o.extra_yaml = "regions:\n  us: { backends: [{ addr: \"127.0.0.1:9\" }] }\n".into();
    let le = Linkedge::start(&o);
    (redis, le)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_line_and_the_api_track_an_email_whose_links_work() {
    let (redis, le) = started();
    add_domain(&le, HOST, &[]);
    let doc = std::fs::read(Path::new(DIR).join("marketing.html")).unwrap();
    let report = le.dir.path().join("report.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_linkedge"))
        .args([
            "rewrite",
            "--config",
            le.config.to_str().unwrap(),
            "--host",
            HOST,
            "--workspace",
            "7",
            "--message",
            "9",
            "--report",
        ])
        .arg(&report)
        .stdin(std::fs::File::open(Path::new(DIR).join("marketing.html")).unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("link(s) tracked") && stderr.contains("open pixel added"),
        "{stderr}"
    );
    let entries: Vec<Value> = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let tracked: Vec<&Value> = entries.iter().filter(|e| e["url"].is_string()).collect();
    assert!(tracked.len() >= 8, "{entries:?}");
    // A tracked link from the output, followed on the edge: 302 to its destination, recorded.
    let first = tracked[0];
    let path = first["url"]
        .as_str()
        .unwrap()
        .strip_prefix(&format!("https://{HOST}"))
        .unwrap()
        .to_string();
    let r = client()
        .get(le.http_url(&path))
        .header("Host", HOST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        first["destination"].as_str().unwrap()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(first["url"].as_str().unwrap()));
    assert!(eventually(Duration::from_secs(5), || redis.xlen(STREAM) == 1));

    // The API: the same document, the report with it.
    let url = format!(
        "http://{}/v1/rewrite?host={HOST}&workspace=7&message=9&report=1",
        le.metrics
    );
    let r = client()
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .body(doc.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["tracked"].as_u64().unwrap() as usize,
        tracked.len(),
        "{v}"
    );
    assert!(v["document"].as_str().unwrap().contains("/o/"), "the pixel");
    // Without report=1, the document itself.
    let url = format!(
        "http://{}/v1/rewrite?host={HOST}&workspace=7&message=9",
        le.metrics
    );
    let r = client()
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .body(doc.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html");
    assert!(r.text().await.unwrap().starts_with("<!DOCTYPE html"));

    // Refusals change nothing and say why.
    for (query, body, status, want) in [
        (
            "host=unknown.example&workspace=7&message=9",
            doc.clone(),
            422,
            "is not registered",
        ),
        (
            "host=link.example.com&workspace=7",
            doc.clone(),
            400,
            "missing message",
        ),
        (
            "host=link.example.com&workspace=-1&message=9",
            doc.clone(),
            400,
            "workspace: expected a number",
        ),
        (
            "host=link.example.com&workspace=7&message=9&color=red",
            doc.clone(),
            400,
            "unknown parameter",
        ),
        (
            "host=link.example.com&workspace=7&message=9",
            b"<p>caf\xe9</p>".to_vec(),
            422,
            "not valid UTF-8",
        ),
        (
            "host=link.example.com&workspace=7&message=9",
            b"<meta charset=utf-16>".to_vec(),
            422,
            "does not support",
        ),
    ] {
        let url = format!("http://{}/v1/rewrite?{query}", le.metrics);
        let r = client()
            .post(&url)
            .bearer_auth(ADMIN_TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{query}");
        let text = r.text().await.unwrap();
        assert!(text.contains(want), "{query}: {text}");
    }
    let big = vec![b' '; linkedge::rewrite::MAX_DOCUMENT + 1];
    let url = format!(
        "http://{}/v1/rewrite?host={HOST}&workspace=7&message=9",
        le.metrics
    );
    let r = client()
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = client().post(&url).body("<p>").send().await.unwrap();
    assert_eq!(r.status(), 401);

    // The command line refuses an unregistered host.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_linkedge"))
        .args([
            "rewrite",
            "--config",
            le.config.to_str().unwrap(),
            "--host",
            "unknown.example",
            "--workspace",
            "7",
            "--message",
            "9",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown.example is not registered"));
    assert!(out.stdout.is_empty());
}
