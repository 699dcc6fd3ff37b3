//! HTTP/2 held to the same limits as HTTP/1, with a real HTTP/2 client (the `h2` crate) over
//! real TLS: the preface and first request within `header_timeout`, streams that cannot be
//! written reset by `send_timeout`, the same `431` for too many header fields or too large a
//! header on both protocols (HPACK references included), silent HTTP/2 connections evicted at
//! the global cap before busy ones, and an HTTP/1 client that stops reading closed.

mod common;

use bytes::Bytes;
use common::upstream::Upstream;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

type Tls = tokio_openssl::SslStream<TcpStream>;

fn start(limits: &str, extra: &str) -> (Redis, Linkedge) {
    start_with_limits(limits, extra)
}

/// A TLS connection from `from` to `to` that negotiated `h2`.
async fn tls_h2(from: &str, to: SocketAddr) -> Tls {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.set_alpn_protos(b"\x02h2").unwrap();
    let ssl = b
        .build()
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap();
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let tcp = s.connect(to).await.unwrap();
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    std::pin::Pin::new(&mut tls).connect().await.unwrap();
    assert_eq!(tls.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
    tls
}

/// Reads until the peer closes (or `limit` passes); returns when it closed.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

/// An HTTP/2 client on `tls` whose connection is driven in the background; its end is sent on
/// the returned channel.
async fn h2_client(
    tls: Tls,
    builder: &h2::client::Builder,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::sync::oneshot::Receiver<Instant>,
) {
    let (send, conn) = builder.handshake(tls).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = conn.await;
        let _ = tx.send(Instant::now());
    });
    (send, rx)
}

fn get(le: &Linkedge, path: &str) -> http::Request<()> {
    http::Request::get(format!("https://localhost:{}{path}", le.https.port()))
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_h2_connection_is_closed_at_the_header_deadline() {
    let (_redis, le) = start("  header_timeout: 2s\n  keepalive_timeout: 30s\n", "");
    // TLS done, h2 negotiated, then not a byte: not even the preface.
    let mut silent = tls_h2("127.0.0.2", le.https).await;
    let at = closed_within(&mut silent, Duration::from_secs(8))
        .await
        .expect("a silent h2 connection stayed open for 8 s");
    assert!(
        at >= Duration::from_millis(1800) && at < Duration::from_secs(4),
        "closed after {at:?}, header_timeout 2 s"
    );
    // The preface and SETTINGS, but never a request: the same deadline.
    let start = Instant::now();
    let (_send, ended) = h2_client(
        tls_h2("127.0.0.2", le.https).await,
        &h2::client::Builder::new(),
    )
    .await;
    let ended = tokio::time::timeout(Duration::from_secs(8), ended)
        .await
        .expect("an h2 connection without a request stayed open for 8 s")
        .unwrap();
    let at = ended - start;
    assert!(
        at >= Duration::from_millis(1700) && at < Duration::from_secs(4),
        "{at:?}"
    );
    assert!(le.metric("linkedge_connections_closed_total{reason=\"header_timeout\"}") >= 2.0);
    // A request in time keeps the connection, which then idles to keepalive_timeout.
    let (send, ended) = h2_client(
        tls_h2("127.0.0.2", le.https).await,
        &h2::client::Builder::new(),
    )
    .await;
    let mut send = send.ready().await.unwrap();
    let (resp, _) = send.send_request(get(&le, "/health"), true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut ended = ended;
    assert!(
        ended.try_recv().is_err(),
        "a served connection was closed as silent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_a_client_will_not_take_are_reset_at_the_send_timeout() {
    let (_redis, le) = start(
        "  send_timeout: 2s\n  keepalive_timeout: 3s\n  h2_max_streams: 128\n",
        "",
    );
    let before = le.metric("linkedge_streams_reset_total{reason=\"send_timeout\"}");
    // A window of zero: no response body can be sent.
    let mut b = h2::client::Builder::new();
    b.initial_window_size(0);
    let (send, ended) = h2_client(tls_h2("127.0.0.2", le.https).await, &b).await;
    let start = Instant::now();
    let mut bodies = Vec::new();
    for _ in 0..128 {
        let mut s = send.clone().ready().await.unwrap();
        let (resp, _) = s.send_request(get(&le, "/health"), true).unwrap();
        bodies.push(tokio::spawn(async move {
            let resp = resp.await.map_err(|e| e.to_string())?;
            let mut body = resp.into_body();
            // The body never comes: the stream ends with a reset.
            match body.data().await {
                Some(Ok(d)) => Err(format!(
                    "{} body bytes arrived through a zero window",
                    d.len()
                )),
                Some(Err(e)) => Ok((Instant::now(), e.reason())),
                None => Err("the body ended cleanly".to_string()),
            }
        }));
    }
    let mut resets = 0;
    for b in bodies {
        let (at, reason) = tokio::time::timeout(Duration::from_secs(10), b)
            .await
            .expect("a stream stayed open 10 s")
            .unwrap()
            .unwrap();
        let after = at - start;
        assert!(
            after >= Duration::from_millis(1800) && after < Duration::from_secs(5),
            "reset after {after:?}, send_timeout 2 s"
        );
        assert!(reason.is_some(), "ended without a reset reason");
        resets += 1;
    }
    assert_eq!(resets, 128);
    assert!(eventually(Duration::from_secs(3), || le.metric(
        "linkedge_streams_reset_total{reason=\"send_timeout\"}"
    ) - before
        >= 128.0));
    // With no stream left, the connection idles out.
    let ended = tokio::time::timeout(Duration::from_secs(8), ended)
        .await
        .expect("the connection outlived its idle deadline")
        .unwrap();
    let idle = ended - start;
    assert!(idle < Duration::from_secs(8), "{idle:?}");
    drop(send);
}

/// One HTTP/1.1 request with `fields` extra header fields of `value_len` bytes each, on a new
/// connection; the status, or 0 when the connection ended without one.
async fn h1_status(le: &Linkedge, fields: usize, value_len: usize) -> u16 {
    let mut s = TcpStream::connect(le.http).await.unwrap();
    let mut head = format!("GET /health HTTP/1.1\r\nHost: {LOCAL}\r\n");
    let value = "v".repeat(value_len);
    for i in 0..fields {
        head.push_str(&format!("x-f{i}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes()).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&got)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The same request over HTTP/2 (headers in one block, HPACK as the `h2` crate encodes it).
async fn h2_status(
    send: &h2::client::SendRequest<Bytes>,
    le: &Linkedge,
    fields: usize,
    value_len: usize,
) -> u16 {
    let mut req = get(le, "/health");
    let value = http::HeaderValue::from_str(&"v".repeat(value_len)).unwrap();
    for i in 0..fields {
        let name = http::HeaderName::from_bytes(format!("x-f{i}").as_bytes()).unwrap();
        req.headers_mut().append(name, value.clone());
    }
    let mut s = send.clone().ready().await.unwrap();
    let (resp, _) = s.send_request(req, true).unwrap();
    match tokio::time::timeout(Duration::from_secs(5), resp).await {
        Ok(Ok(r)) => r.status().as_u16(),
        Ok(Err(e)) => panic!("the stream failed without a status: {e}"),
        Err(_) => panic!("no answer in 5 s"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_header_fields_or_too_large_a_header_get_431_on_both_protocols() {
    let (_redis, le) = start("", "");
    let (send, _ended) = h2_client(
        tls_h2("127.0.0.2", le.https).await,
        &h2::client::Builder::new(),
    )
    .await;
    // (extra fields, bytes per value, expected): within the defaults (256 fields, 64 KiB),
    // 2,000 fields, 300 small fields (under the byte limit: the field count refuses it), and
    // a 100 KiB header in ten fields.
    let cases = [
        (100, 10, 200),
        (2000, 1, 431),
        (300, 1, 431),
        (10, 10 * 1024, 431),
    ];
    for (fields, len, want) in cases {
        assert_eq!(
            h1_status(&le, fields, len).await,
            want,
            "HTTP/1.1, {fields} fields of {len} bytes"
        );
        assert_eq!(
            h2_status(&send, &le, fields, len).await,
            want,
            "HTTP/2, {fields} fields of {len} bytes"
        );
    }
    assert!(
        le.metric("linkedge_requests_header_refused_total{limit=\"fields\",protocol=\"http1\"}")
            >= 2.0
    );
    assert!(
        le.metric("linkedge_requests_header_refused_total{limit=\"bytes\",protocol=\"http1\"}")
            >= 1.0
    );
    assert!(
        le.metric("linkedge_requests_header_refused_total{limit=\"fields\",protocol=\"http2\"}")
            >= 1.0
    );
    // The HTTP/1 connection refused before Pingora parsed it is counted as such.
    assert!(le.metric("linkedge_connections_closed_total{reason=\"header_too_large\"}") >= 3.0);
    // Configured lower, the same answers.
    let (_redis2, low) = start("  max_headers: 20\n  max_header_bytes: 4KiB\n", "");
    let (send, _ended) = h2_client(
        tls_h2("127.0.0.2", low.https).await,
        &h2::client::Builder::new(),
    )
    .await;
    for (fields, len, want) in [(10, 10, 200), (30, 1, 431), (4, 2000, 431)] {
        assert_eq!(
            h1_status(&low, fields, len).await,
            want,
            "HTTP/1.1 {fields}x{len}"
        );
        assert_eq!(
            h2_status(&send, &low, fields, len).await,
            want,
            "HTTP/2 {fields}x{len}"
        );
    }
}

/// `count` streams at once on `send`, each a request carrying the 100-byte field `x-repeat`
/// `reps` times (after the first, each is an HPACK index of a byte or two on the wire); their
/// answers.
async fn repeated(
    send: &h2::client::SendRequest<Bytes>,
    le: &Linkedge,
    count: usize,
    reps: usize,
) -> Vec<Result<u16, h2::Error>> {
    let value = http::HeaderValue::from_str(&"v".repeat(100)).unwrap();
    let mut waits = Vec::new();
    for _ in 0..count {
        let mut req = get(le, "/health");
        for _ in 0..reps {
            req.headers_mut().append("x-repeat", value.clone());
        }
        let Ok(mut s) = send.clone().ready().await else {
            break;
        };
        match s.send_request(req, true) {
            Ok((resp, _)) => waits.push(resp),
            Err(_) => break,
        }
    }
    let mut out = Vec::new();
    for r in waits {
        let r = tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .expect("no answer in 10 s");
        out.push(r.map(|r| r.status().as_u16()));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_hpack_indexed_header_repeated_past_the_list_size_is_refused_without_holding_it() {
    let (_redis, le) = start(
        "  h2_max_streams: 128
",
        "",
    );
    let rss_before = le.proc_kb("VmRSS");
    // 109 KiB of decoded header per request, under 2 KiB on the wire: 431 each. Eight
    // connections of 128 such streams at once would hold 109 MiB if the lists were kept.
    for c in 0..8 {
        let (send, _ended) = h2_client(
            tls_h2("127.0.0.2", le.https).await,
            &h2::client::Builder::new(),
        )
        .await;
        let answers = repeated(&send, &le, 128, 800).await;
        assert_eq!(answers.len(), 128, "connection {c}");
        for a in answers {
            assert_eq!(a.expect("a stream failed without a status"), 431);
        }
        // The connection is still usable for a normal request.
        assert_eq!(h2_status(&send, &le, 1, 10).await, 200);
    }
    let grew_kb = le.proc_kb("VmRSS").saturating_sub(rss_before);
    println!("RSS grew {grew_kb} KiB over 1,024 requests of 109 KiB decoded header each");
    assert!(
        grew_kb < 32 * 1024,
        "RSS grew {grew_kb} KiB: the decoded lists were held"
    );
    // An HPACK bomb (5.6 MB decoded from 80 KB) ends the whole connection once its list
    // passes four times the limit (the h2 codec's GOAWAY ENHANCE_YOUR_CALM), decoding no more.
    let (send, ended) = h2_client(
        tls_h2("127.0.0.2", le.https).await,
        &h2::client::Builder::new(),
    )
    .await;
    let answers = repeated(&send, &le, 1, 40_000).await;
    let e = answers[0].as_ref().expect_err("the bomb was answered");
    assert_eq!(e.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{e}");
    tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .expect("the bomb's connection stayed open")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_global_cap_silent_h2_connections_go_before_busy_ones() {
    let (_redis, le) = start(
        "  max_connections: 4\n  header_timeout: 30s\n  keepalive_timeout: 60s\n  send_timeout: 60s\n",
        "",
    );
    // Two busy connections: a stream each whose body the zero window holds back.
    let mut zero = h2::client::Builder::new();
    zero.initial_window_size(0);
    let mut busy = Vec::new();
    for _ in 0..2 {
        let (send, ended) = h2_client(tls_h2("127.0.0.2", le.https).await, &zero).await;
        let mut s = send.clone().ready().await.unwrap();
        let (resp, _) = s.send_request(get(&le, "/health"), true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        busy.push((send, ended, resp));
    }
    // Two silent ones (TLS and h2 negotiated, nothing sent), opened after the busy ones.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(tls_h2("127.0.0.3", le.https).await);
    }
    // Two newcomers at the cap: each makes room by closing a silent connection.
    let mut newcomers = Vec::new();
    for i in 0..2 {
        let (send, ended) = h2_client(
            tls_h2("127.0.0.4", le.https).await,
            &h2::client::Builder::new(),
        )
        .await;
        assert_eq!(h2_status(&send, &le, 0, 0).await, 200, "newcomer {i}");
        // Kept open: each newcomer holds its place.
        newcomers.push((send, ended));
    }
    for (i, s) in silent.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(3)).await.is_some(),
            "silent connection {i} is still open"
        );
    }
    assert!(le.metric("linkedge_connections_closed_total{reason=\"evicted\"}") >= 2.0);
    // The busy connections were left alone: their streams are still open.
    for (i, (_, ended, _)) in busy.iter_mut().enumerate() {
        assert!(ended.try_recv().is_err(), "busy connection {i} was closed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http1_client_that_stops_reading_is_closed_at_the_send_timeout() {
    let us = Upstream::start("us-1", false).await;
    let (_redis, le) = start(
        "  send_timeout: 2s\n",
        &format!(
            "regions:\n  us:\n    backends: [{{ addr: \"{}\" }}]\n    health_check: {{ interval: 200ms, timeout: 500ms, failures: 1, successes: 1 }}\nrouting:\n  default_region: us\n",
            us.addr
        ),
    );
    let mut s = TcpStream::connect(le.http).await.unwrap();
    // Far more than loopback's socket buffers hold; never read.
    s.write_all(b"GET /download?bytes=1000000000 HTTP/1.1\r\nHost: link.example.com\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    assert!(
        eventually(Duration::from_secs(30), || le.metric(
            "linkedge_connections_closed_total{reason=\"send_timeout\"}"
        ) >= 1.0),
        "a client not reading was never closed"
    );
    println!("closed {:?} after the request", start.elapsed());
    // Reading now finds the connection closed (what was buffered, then the end).
    let mut sink = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => total += n as u64,
            Err(_) => panic!("the connection is still open after the send timeout"),
        }
    }
    assert!(total < 1_000_000_000, "the whole response arrived");
}

fn proxied(limits: &str, us: &Upstream) -> (Redis, Linkedge) {
    start(
        limits,
        &format!(
            "regions:\n  us:\n    backends: [{{ addr: \"{}\" }}]\n    health_check: {{ interval: 200ms, timeout: 500ms, failures: 1, successes: 1 }}\nrouting:\n  default_region: us\n",
            us.addr
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_body_that_stalls_closes_its_connection_at_the_body_timeout() {
    let us = Upstream::start("us-1", false).await;
    let (_redis, le) = proxied("  body_timeout: 2s\n", &us);
    // HTTP/2: 128 proxied streams whose bodies never come.
    let (send, ended) = h2_client(
        tls_h2("127.0.0.2", le.https).await,
        &h2::client::Builder::new(),
    )
    .await;
    let start = Instant::now();
    let mut held = Vec::new();
    for _ in 0..128 {
        let mut s = send.clone().ready().await.unwrap();
        let req = http::Request::post(format!(
            "https://link.example.com:{}/upload",
            le.https.port()
        ))
        .body(())
        .unwrap();
        let (resp, body) = s.send_request(req, false).unwrap();
        held.push((resp, body));
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("stalled request bodies held the connection 10 s")
        .unwrap();
    let at = ended - start;
    assert!(
        at >= Duration::from_millis(1700) && at < Duration::from_secs(5),
        "closed after {at:?}, body_timeout 2 s"
    );
    // HTTP/1: ten bytes of a hundred, then nothing.
    let mut s = TcpStream::connect(le.http).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: link.example.com\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let at = closed_within(&mut s, Duration::from_secs(10))
        .await
        .expect("a stalled HTTP/1 body held its connection 10 s");
    assert!(at < Duration::from_secs(5), "{at:?}");
    assert!(le.metric("linkedge_connections_closed_total{reason=\"body_timeout\"}") >= 2.0);
    // A body that keeps coming, slower than the deadline in all but never stalling, is served.
    let mut s = TcpStream::connect(le.http).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: link.example.com\r\nContent-Length: 4\r\n\r\n")
        .await
        .unwrap();
    for b in b"abcd" {
        tokio::time::sleep(Duration::from_millis(900)).await;
        s.write_all(&[*b]).await.unwrap();
    }
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_the_edge_does_not_read_is_never_counted_as_a_head() {
    let (_redis, le) = start("  header_timeout: 2s\n", "");
    // A POST to /health (405) with a 200 KiB body of short lines, then a request: the edge
    // answers without reading the body and closes (Pingora does not reuse a connection whose
    // body is unread); the body's lines are never counted as a head.
    let body = "x\r\n".repeat(70_000);
    let mut s = TcpStream::connect(le.http).await.unwrap();
    let req = format!(
        "POST /health HTTP/1.1\r\nHost: {LOCAL}\r\nContent-Length: {}\r\n\r\n{body}GET /health HTTP/1.1\r\nHost: {LOCAL}\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&got);
    assert!(closed, "{text}");
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    assert!(!text.contains("431"), "{text}");
    let counted = |r: &str| {
        le.metric(&format!(
            "linkedge_connections_closed_total{{reason=\"{r}\"}}"
        ))
    };
    assert_eq!(counted("header_too_large"), 0.0);
    // A head over the limits sent in one write (its end in the same read) is refused at once,
    // not left to the header deadline.
    let mut s = TcpStream::connect(le.http).await.unwrap();
    let mut head = format!("GET /health HTTP/1.1\r\nHost: {LOCAL}\r\n");
    for i in 0..300 {
        head.push_str(&format!("x-{i}: y\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let at = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("a refused head's connection stayed open");
    assert!(
        at < Duration::from_secs(1),
        "closed after {at:?}, not at once"
    );
    assert_eq!(counted("header_timeout"), 0.0);
    assert_eq!(counted("header_too_large"), 1.0);
}
