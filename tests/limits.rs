//! One client cannot make the edge unreachable: request-head and idle deadlines, per-address
//! and global connection caps, pipelined requests answered in order. Real linkedge, real
//! sockets from several loopback source addresses (127.0.0.2, 127.0.0.3, ...).

mod common;

use common::upstream::Upstream;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn start(limits: &str, extra: &str) -> (Redis, Linkedge) {
    start_with_limits(limits, extra)
}

/// A connection to `to` from source address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    s.connect(to).await.unwrap()
}

/// Reads until the peer closes (or `limit` passes); returns what came and when it closed.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, Some(start.elapsed())),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, None),
        }
    }
}

/// One keep-alive GET on `s`; returns the status line's code.
async fn get_on(s: &mut TcpStream, path: &str) -> u16 {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {LOCAL}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A click from `from` on a fresh connection; (status, how long it took).
async fn click_from(le: &Linkedge, from: &str) -> (u16, Duration) {
    let start = Instant::now();
    let mut s = connect_from(from, le.http).await;
    let path = format!("/c/{}", click(LOCAL, "https://example.com/", 1));
    (get_on(&mut s, &path).await, start.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_dripped_byte_by_byte_is_closed_at_the_header_deadline() {
    let (_redis, le) = start("  header_timeout: 2s\n", "");
    let mut s = connect_from("127.0.0.2", le.http).await;
    let head =
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let start = Instant::now();
    let mut closed = None;
    for b in head {
        if s.write_all(&[*b]).await.is_err() {
            closed = Some(start.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await
        {
            closed = Some(start.elapsed());
            break;
        }
        // Meanwhile another client's click is answered at once.
        if closed.is_none()
            && start.elapsed() > Duration::from_secs(1)
            && start.elapsed() < Duration::from_millis(1300)
        {
            let (status, took) = click_from(&le, "127.0.0.3").await;
            assert_eq!(status, 302);
            assert!(took < Duration::from_millis(500), "{took:?}");
        }
    }
    let closed = closed.expect("the dripping connection was never closed");
    assert!(
        closed >= Duration::from_millis(1800) && closed < Duration::from_secs(4),
        "closed after {closed:?}, deadline 2 s"
    );
    assert!(le.metric("linkedge_connections_closed_total{reason=\"header_timeout\"}") >= 1.0);
    // A connection that sends nothing at all gets the same deadline.
    let mut silent = connect_from("127.0.0.2", le.http).await;
    let (_, at) = read_to_close(&mut silent, Duration::from_secs(6)).await;
    let at = at.expect("a silent connection stays open");
    assert!(
        at >= Duration::from_millis(1800) && at < Duration::from_secs(4),
        "{at:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keepalive_connection_is_closed_after_the_idle_timeout() {
    let (_redis, le) = start("  keepalive_timeout: 2s\n", "");
    let mut s = connect_from("127.0.0.2", le.http).await;
    assert_eq!(get_on(&mut s, "/health").await, 200);
    // Kept alive: a second request on the same connection after 1 s is answered.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(get_on(&mut s, "/health").await, 200);
    let (_, at) = read_to_close(&mut s, Duration::from_secs(6)).await;
    let at = at.expect("an idle keep-alive connection stays open");
    assert!(
        at >= Duration::from_millis(1800) && at < Duration::from_secs(4),
        "{at:?}"
    );
    assert!(le.metric("linkedge_connections_closed_total{reason=\"idle_timeout\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_at_its_cap_leaves_room_for_another() {
    let (_redis, le) = start("  max_connections_per_ip: 5\n", "");
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut s = connect_from("127.0.0.2", le.http).await;
        assert_eq!(get_on(&mut s, "/health").await, 200);
        held.push(s);
    }
    // A sixth from the same address: refused with a 503 and closed.
    let mut sixth = connect_from("127.0.0.2", le.http).await;
    let (answer, closed) = read_to_close(&mut sixth, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "the sixth connection stayed open");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(
        le.metric("linkedge_connections_refused_total{reason=\"per_ip\"}"),
        1.0
    );
    // Another address still gets its redirect promptly.
    let (status, took) = click_from(&le, "127.0.0.3").await;
    assert_eq!(status, 302);
    assert!(took < Duration::from_millis(500), "{took:?}");
    // A held connection that closes gives its place back.
    held.pop();
    assert!(eventually(Duration::from_secs(2), || futures_block(
        click_from(&le, "127.0.0.2")
    )
    .0 == 302));
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_global_cap_new_clients_are_still_answered() {
    let (_redis, le) = start("  max_connections: 12\n  max_connections_per_ip: 4\n", "");
    // Twelve idle keep-alive connections from three addresses fill the edge.
    let mut held = Vec::new();
    for i in 0..12 {
        let mut s = connect_from(&format!("127.0.0.{}", 2 + i / 4), le.http).await;
        assert_eq!(get_on(&mut s, "/health").await, 200);
        held.push(s);
    }
    // New clients are served, and stay connected: the longest-idle connection is closed to
    // make room each time.
    let link = format!("/c/{}", click(LOCAL, "https://example.com/", 1));
    for i in 0..5 {
        let start = Instant::now();
        let mut s = connect_from(&format!("127.0.0.{}", 10 + i), le.http).await;
        assert_eq!(get_on(&mut s, &link).await, 302, "new client {i}");
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        held.push(s);
    }
    assert!(eventually(Duration::from_secs(2), || le.metric(
        "linkedge_connections_closed_total{reason=\"evicted\"}"
    ) >= 5.0));
    // The evicted are the oldest: the first five held are closed, the sixth is not.
    for (i, s) in held[..5].iter_mut().enumerate() {
        // Marked and woken at once; on a loaded machine the close itself can take a moment.
        let (_, closed) = read_to_close(s, Duration::from_secs(3)).await;
        assert!(closed.is_some(), "held connection {i} is still open");
    }
    assert_eq!(get_on(&mut held[5], "/health").await, 200);
}

/// Three requests written at once; the answers' status codes in order.
async fn pipelined(le: &Linkedge, paths: &[&str], host: &str) -> Vec<u16> {
    let mut s = connect_from("127.0.0.2", le.http).await;
    let mut all = String::new();
    for p in paths {
        all.push_str(&format!("GET {p} HTTP/1.1\r\nHost: {host}\r\n\r\n"));
    }
    s.write_all(all.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        let text = String::from_utf8_lossy(&got).to_string();
        if text.matches("HTTP/1.1 ").count() >= paths.len() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&got)
        .split("HTTP/1.1 ")
        .skip(1)
        .filter_map(|r| r.get(..3)?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order_local_and_proxied() {
    let us = Upstream::start("us-1", false).await;
    let (_redis, le) = start(
        "  header_timeout: 10s\n",
        &format!(
            "regions:\n  us:\n    backends: [{{ addr: \"{}\" }}]\n    health_check: {{ interval: 200ms, timeout: 500ms, failures: 1, successes: 1 }}\nrouting:\n  default_region: us\n",
            us.addr
        ),
    );
    let link = format!("/c/{}", click(LOCAL, "https://example.com/", 1));
    // Answered by the edge, by the edge, then proxied: still in order.
    assert_eq!(
        pipelined(&le, &["/health", &link, "/unsubscribe/x"], LOCAL).await,
        vec![200, 302, 200]
    );
    // Proxied: the backend echoes each request in turn.
    assert_eq!(
        pipelined(&le, &["/a", "/b", "/c-not-a-link"], "link.example.com").await,
        vec![200, 200, 200]
    );
    assert!(us.hits.load(std::sync::atomic::Ordering::Relaxed) >= 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_tls_handshake_is_closed_and_counted_against_its_address() {
    let (_redis, le) = start("  handshake_timeout: 2s\n  max_connections_per_ip: 3\n", "");
    // Three TCP connections to the HTTPS listener that never send a ClientHello.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(connect_from("127.0.0.2", le.https).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // They hold the address's places: a fourth is closed at once.
    let mut fourth = connect_from("127.0.0.2", le.https).await;
    let (_, closed) = read_to_close(&mut fourth, Duration::from_secs(1)).await;
    assert!(
        closed.is_some(),
        "a fourth connection from a capped address stayed open"
    );
    // Another address completes its handshake and gets its answer.
    let root = std::fs::read(dev_ca()).unwrap();
    assert!(tls_serial(&le, "localhost", &root).await.is_ok());
    // The stalled ones are closed at the handshake deadline.
    let start = Instant::now();
    for s in &mut stalled {
        let (_, at) = read_to_close(s, Duration::from_secs(5)).await;
        assert!(at.is_some(), "a stalled handshake stayed open");
    }
    let waited = start.elapsed() + Duration::from_millis(300);
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(4),
        "{waited:?}, deadline 2 s"
    );
    assert_eq!(
        le.metric("linkedge_connections_closed_total{reason=\"handshake_timeout\"}"),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_connections_get_the_stream_cap_and_the_idle_timeout() {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let (_redis, le) = start("  keepalive_timeout: 2s\n  h2_max_streams: 8\n", "");
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.set_alpn_protos(b"\x02h2").unwrap();
    let ssl = b
        .build()
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap();
    let tcp = TcpStream::connect(le.https).await.unwrap();
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    std::pin::Pin::new(&mut tls).connect().await.unwrap();
    assert_eq!(tls.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
    let (send, mut conn) = h2::client::handshake(tls).await.unwrap();
    let mut send = send.ready().await.unwrap();
    let req = http::Request::get(format!("https://localhost:{}/health", le.https.port()))
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    // Drive the connection while the answer comes (it also reads the server's SETTINGS).
    let status = tokio::select! {
        r = resp => r.unwrap().status(),
        r = &mut conn => panic!("connection ended first: {r:?}"),
    };
    assert_eq!(status, 200);
    assert_eq!(
        conn.max_concurrent_send_streams(),
        8,
        "the server's stream cap"
    );
    // Idle for longer than keepalive_timeout: the server ends the connection.
    let start = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(6), conn).await;
    assert!(
        ended.is_ok(),
        "an idle HTTP/2 connection stayed open for 6 s"
    );
    let at = start.elapsed();
    assert!(
        at >= Duration::from_millis(1500) && at < Duration::from_secs(4),
        "{at:?}"
    );
    drop(send);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keepalive_timeout_above_pingoras_60s_is_honoured() {
    let (_redis, le) = start("  keepalive_timeout: 75s\n", "");
    let mut s = connect_from("127.0.0.2", le.http).await;
    assert_eq!(get_on(&mut s, "/health").await, 200);
    // Pingora on its own closes a keep-alive connection idle for 60 s.
    tokio::time::sleep(Duration::from_secs(64)).await;
    assert_eq!(
        get_on(&mut s, "/health").await,
        200,
        "the connection was closed before keepalive_timeout"
    );
}
