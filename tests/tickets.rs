//! TLS session resumption across the fleet: session-ticket keys shared through a real Redis by
//! two linkedge nodes, over real TLS handshakes. A ticket one node issues resumes on the other;
//! after two rotations a ticket is refused; a ticket made for one SNI name does not resume
//! under another.

mod common;

use common::*;
use openssl::ssl::{SslConnector, SslMethod, SslSession, SslVersion};
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

fn node(redis: &Redis, rotation: &str) -> Linkedge {
    let mut o = Options::new(redis.url());
    o.extra_yaml = "regions:\n  us: { backends: [{ addr: \"127.0.0.1:9\" }] }\n\
certs:\n  master_key: 1\n  master_keys: [{ id: 1, secret_file: master-key }]\n"
        .into();
    o.tls_extra = format!("  ticket_rotation: {rotation}\n");
    Linkedge::start(&o)
}

/// A TLS connection to `le` with SNI `sni` (a name of the development certificate), offering
/// `session` when given, limited to `version`; `GET /health` over it, read to the end so that
/// TLS 1.3's tickets have arrived. Whether it resumed, and the session to offer next.
async fn visit(
    le: &Linkedge,
    sni: &str,
    session: Option<&SslSession>,
    version: SslVersion,
) -> (bool, SslSession) {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(dev_ca()).unwrap();
    b.set_min_proto_version(Some(version)).unwrap();
    b.set_max_proto_version(Some(version)).unwrap();
    let mut ssl = b.build().configure().unwrap().into_ssl(sni).unwrap();
    if let Some(s) = session {
        // SAFETY: every session comes from a connection with these same settings.
        unsafe { ssl.set_session(s).unwrap() };
    }
    let tcp = TcpStream::connect(le.https).await.unwrap();
    let mut s = SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut s).connect().await.unwrap();
    s.write_all(
        format!("GET /health HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let resumed = s.ssl().session_reused();
    let session = s.ssl().session().expect("a session").to_owned();
    // Closed cleanly, as a browser does: OpenSSL will not offer a session again whose
    // connection ended without its close_notify.
    let _ = s.shutdown().await;
    (resumed, session)
}

/// Both nodes seal with the same shared keys.
fn shared(a: &Linkedge, b: &Linkedge) -> bool {
    let (va, vb) = (
        a.metric("linkedge_tls_ticket_keys_version"),
        b.metric("linkedge_tls_ticket_keys_version"),
    );
    va >= 1.0 && va == vb
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ticket_from_one_node_resumes_on_the_other_and_never_under_another_name() {
    let redis = Redis::start();
    let a = node(&redis, "12h");
    let b = node(&redis, "12h");
    assert!(eventually(Duration::from_secs(10), || shared(&a, &b)));
    // One rotation made the set, by one node.
    assert_eq!(
        a.metric("linkedge_tls_ticket_rotations_total")
            + b.metric("linkedge_tls_ticket_rotations_total"),
        1.0
    );
    // The key set in Redis is sealed (encrypted, not merely encoded): no key in the clear.
    let stored: String = redis::cmd("GET")
        .arg("linkedge:tls:ticket_keys")
        .query(&mut redis.conn())
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
    use base64::Engine;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(v["sealed"].as_str().unwrap())
        .unwrap();
    let text = String::from_utf8_lossy(&sealed);
    assert!(
        !stored.contains("secret") && !text.contains("secret") && !text.contains("keys"),
        "{stored}"
    );

    for version in [SslVersion::TLS1_3, SslVersion::TLS1_2] {
        // A client alternating between the nodes: every handshake but the first resumes.
        let sni = "app.linkedge.test";
        let (first, mut session) = visit(&a, sni, None, version).await;
        assert!(!first);
        let mut resumed = 0;
        let mut tickets = std::collections::HashSet::new();
        tickets.insert(session.id().to_vec());
        for i in 0..10 {
            let le = if i % 2 == 0 { &b } else { &a };
            let (r, next) = visit(le, sni, Some(&session), version).await;
            resumed += r as usize;
            tickets.insert(next.id().to_vec());
            session = next;
        }
        if version == SslVersion::TLS1_3 {
            // Each resumed TLS 1.3 connection got a fresh ticket (the client's session id is
            // the ticket's hash), so none is used twice.
            assert_eq!(tickets.len(), 11, "a resumed connection got no new ticket");
        }
        println!("{version:?}: {resumed} of 10 handshakes alternating between two nodes resumed");
        assert_eq!(resumed, 10, "{version:?}");

        // The same session under another name the certificate covers: a full handshake.
        let (r, _) = visit(&b, "other.linkedge.test", Some(&session), version).await;
        assert!(!r, "{version:?}: a session crossed SNI names");
        let (r, _) = visit(&a, "localhost", Some(&session), version).await;
        assert!(!r, "{version:?}: a session crossed SNI names");
        // And under its own name it still resumes.
        assert!(visit(&a, sni, Some(&session), version).await.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_two_rotations_a_ticket_is_refused() {
    let redis = Redis::start();
    let a = node(&redis, "12h");
    let b = node(&redis, "12h");
    assert!(eventually(Duration::from_secs(10), || shared(&a, &b)));
    let version = |le: &Linkedge| le.metric("linkedge_tls_ticket_keys_version");
    let sni = "app.linkedge.test";
    let (_, session) = visit(&a, sni, None, SslVersion::TLS1_3).await;
    let (_, session12) = visit(&a, sni, None, SslVersion::TLS1_2).await;
    let v1 = version(&a);
    let rotate = || {
        let (ok, out) = cli(&a, "cert", &["rotate-tickets"]);
        assert!(ok, "{out}");
    };

    // One rotation later (well inside the ticket's 2-hour life) the ticket's key is the
    // previous one: still accepted, on either node.
    rotate();
    assert!(eventually(Duration::from_secs(3), || version(&a)
        == v1 + 1.0
        && shared(&a, &b)));
    assert!(visit(&b, sni, Some(&session), SslVersion::TLS1_3).await.0);
    assert!(visit(&b, sni, Some(&session12), SslVersion::TLS1_2).await.0);
    // Two rotations later its key is gone: a full handshake on both nodes.
    rotate();
    assert!(eventually(Duration::from_secs(3), || version(&a)
        == v1 + 2.0
        && shared(&a, &b)));
    assert!(!visit(&a, sni, Some(&session), SslVersion::TLS1_3).await.0);
    assert!(!visit(&b, sni, Some(&session), SslVersion::TLS1_3).await.0);
    assert!(!visit(&b, sni, Some(&session12), SslVersion::TLS1_2).await.0);

    // A stored set no node can open (here: damaged): every node keeps its keys and says so,
    // a plain rotation refuses to replace it, a forced one does.
    let (_, kept) = visit(&a, sni, None, SslVersion::TLS1_3).await;
    let () = redis::cmd("SET")
        .arg("linkedge:tls:ticket_keys")
        .arg("{\"damaged\": true}")
        .query(&mut redis.conn())
        .unwrap();
    let (ok, out) = cli(&a, "cert", &["rotate-tickets"]);
    assert!(
        !ok && out.contains("damaged") && out.contains("--force"),
        "{out}"
    );
    let unreadable = |le: &Linkedge| le.metric("linkedge_tls_ticket_keys_unreadable") == 1.0;
    // The next read (an announcement, or the re-sync) finds it; a PUBLISH prompts one.
    let () = redis::cmd("PUBLISH")
        .arg("linkedge:tls:ticket_keys:changed")
        .arg("1")
        .query(&mut redis.conn())
        .unwrap();
    assert!(eventually(Duration::from_secs(3), || unreadable(&a) && unreadable(&b)));
    assert!(visit(&b, sni, Some(&kept), SslVersion::TLS1_3).await.0);
    let (ok, out) = cli(&a, "cert", &["rotate-tickets", "--force"]);
    assert!(ok, "{out}");
    assert!(eventually(Duration::from_secs(3), || !unreadable(&a)
        && !unreadable(&b)
        && shared(&a, &b)));

    // Redis gone: each node keeps its keys, and still resumes what the other sealed.
    let (_, fresh) = visit(&a, sni, None, SslVersion::TLS1_3).await;
    drop(redis);
    // Past the change feed's 5 s ping: both nodes know Redis is gone.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(visit(&b, sni, Some(&fresh), SslVersion::TLS1_3).await.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_rotate_on_schedule_and_the_nodes_follow() {
    let redis = Redis::start();
    let a = node(&redis, "2s");
    let b = node(&redis, "2s");
    assert!(eventually(Duration::from_secs(10), || shared(&a, &b)));
    let v0 = a.metric("linkedge_tls_ticket_keys_version");
    // Two more rotations within about 4 s, each made by one node only.
    assert!(eventually(Duration::from_secs(8), || a
        .metric("linkedge_tls_ticket_keys_version")
        >= v0 + 2.0
        && shared(&a, &b)));
    let made = a.metric("linkedge_tls_ticket_rotations_total")
        + b.metric("linkedge_tls_ticket_rotations_total");
    assert_eq!(made, b.metric("linkedge_tls_ticket_keys_version"));
    // A ticket made now resumes on the other node (a ticket lives at most one rotation: 2 s).
    let (_, session) = visit(&a, "app.linkedge.test", None, SslVersion::TLS1_3).await;
    assert!(
        visit(&b, "app.linkedge.test", Some(&session), SslVersion::TLS1_3)
            .await
            .0
    );
}
