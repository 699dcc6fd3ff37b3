//! The recipes customers follow to run their own proxy or CDN in front of the edge
//! (`../shared/context/https-link-tracking.txt`; README, "Your customers' own proxies"), each
//! played by a real nginx between the client and an edge configured as `conf/linkedge.yaml`
//! ships it: a `certs` section with `fallback: false`, `verify.target` the edge's own name.
//!
//! Each recipe: a genuine link answers `302` through the proxy and `/health` answers `{}`; the
//! same proxy rewriting the Host to the edge's name (Fastly's "Override default host" on) still
//! gets `{}` from `/health`, as the page warns, but `403 Invalid link security token` for the link.

mod common;

use common::nginx::Nginx;
use common::*;
use openssl::ssl::{SslConnector, SslMethod};
use reqwest::StatusCode;
use std::pin::Pin;
use std::time::Duration;

/// The customer's branded tracking domain; the customer's proxy holds its certificate.
const BRANDED: &str = "link.example.test";
/// The edge's own name, the origin customers configure: `tls.cert` (`*.linkedge.test`) covers it.
const EDGE: &str = "track.linkedge.test";
/// Where the genuine link leads.
const DESTINATION: &str = "https://example.com/welcome";

/// What a customer's proxy does towards the edge, as nginx settings in its `location /`.
struct Recipe {
    /// Settings besides `proxy_pass` and the Host, one per line.
    settings: Vec<String>,
    /// The Host it sends: `$host` forwards the client's.
    host: &'static str,
}

/// The page's NGINX block, verbatim but for the names (its quotes are nginx syntax only):
/// `proxy_pass https://<edge>;` and the Host set to the branded domain. nginx's defaults send
/// no SNI (`proxy_ssl_server_name off`), check no certificate and speak HTTP/1.0.
fn nginx_block() -> Recipe {
    Recipe {
        settings: Vec::new(),
        host: BRANDED,
    }
}

/// Fastly, origin the edge's name, "Override default host" off: the edge's name is the SNI and
/// the name the certificate is checked for; the client's Host is kept. CDNs speak HTTP/1.1.
fn fastly() -> Recipe {
    Recipe {
        settings: vec![
            "proxy_http_version 1.1;".into(),
            "proxy_ssl_server_name on;".into(),
            format!("proxy_ssl_name {EDGE};"),
            "proxy_ssl_verify on;".into(),
            format!("proxy_ssl_trusted_certificate {};", dev_ca().display()),
        ],
        host: "$host",
    }
}

/// CloudFront, origin the edge's name, cache behaviour "Headers: All": the client's Host is
/// forwarded and sent as SNI; TLS 1.2, the page's minimum origin protocol. CloudFront accepts
/// an origin certificate valid for the origin's name; nginx can only check the SNI name, so it
/// checks nothing here and [`presented`] checks what CloudFront would.
fn cloudfront() -> Recipe {
    Recipe {
        settings: vec![
            "proxy_http_version 1.1;".into(),
            "proxy_ssl_server_name on;".into(),
            "proxy_ssl_name $host;".into(),
            "proxy_ssl_protocols TLSv1.2;".into(),
        ],
        host: "$host",
    }
}

/// Cloudflare, record Proxied, SSL "Full": SNI and Host are the branded domain, and the edge's
/// certificate is not checked (nginx's default `proxy_ssl_verify off`).
fn cloudflare_full() -> Recipe {
    Recipe {
        settings: vec![
            "proxy_http_version 1.1;".into(),
            "proxy_ssl_server_name on;".into(),
            "proxy_ssl_name $host;".into(),
        ],
        host: "$host",
    }
}

/// Redis and an edge configured as `conf/linkedge.yaml` ships it, with BRANDED registered
/// (`--fronted` when `fronted`) and applied by the edge's registry mirror.
fn edge(fronted: bool) -> (Redis, Linkedge) {
    let redis = Redis::start();
    let mut o = Options::new(redis.url());
    o.extra_yaml = format!(
        "regions:\n  us: {{ backends: [{{ addr: \"127.0.0.1:9\" }}] }}\n\
certs:\n  master_key: 1\n  master_keys: [{{ id: 1, secret_file: master-key }}]\n  fallback: false\n\
verify:\n  target: {EDGE}\n"
    );
    let le = Linkedge::start(&o);
    add_domain(&le, BRANDED, if fronted { &["--fronted"] } else { &[] });
    (redis, le)
}

/// nginx in front of `le` serving BRANDED with a certificate from the development CA: on the
/// first port the recipe as given, on the second the same with the Host rewritten to the
/// edge's name. Both proxy to `upstream track.linkedge.test`, so `proxy_pass` names the edge
/// as the customer writes it and the edge's name is nginx's default SNI and verified name.
fn customer_proxy(le: &Linkedge, recipe: &Recipe) -> (Nginx, u16, u16) {
    let (cert, key, _) = dev_leaf(le.dir.path(), BRANDED, 0, 30);
    let (genuine, rewritten) = (free_port(), free_port());
    let settings: String = recipe
        .settings
        .iter()
        .map(|s| format!("      {s}\n"))
        .collect();
    let server = |port: u16, host: &str| {
        format!(
            "  server {{\n    listen 127.0.0.1:{port} ssl;\n    server_name {BRANDED};\n    \
ssl_certificate {cert};\n    ssl_certificate_key {key};\n    location / {{\n      \
proxy_pass https://{EDGE};\n{settings}      proxy_set_header Host {host};\n    }}\n  }}\n",
            cert = cert.display(),
            key = key.display(),
        )
    };
    let http = format!(
        "  upstream {EDGE} {{\n    server {};\n  }}\n{}{}",
        le.https,
        server(genuine, recipe.host),
        server(rewritten, EDGE)
    );
    let nginx = Nginx::start(&http, &[genuine, rewritten]);
    (nginx, genuine, rewritten)
}

/// `GET path` from a client that resolves BRANDED to nginx's `port` and trusts the
/// development CA, which signed nginx's certificate for BRANDED.
async fn get(port: u16, path: &str) -> reqwest::Response {
    client_builder()
        .resolve(BRANDED, ([127, 0, 0, 1], port).into())
        .build()
        .unwrap()
        .get(format!("https://{BRANDED}:{port}{path}"))
        .send()
        .await
        .unwrap()
}

/// Through `recipe`'s proxy: a genuine link `302`s and `/health` answers `{}`; with the Host
/// rewritten, `/health` still answers `{}` and the link gets `403 Invalid link security token`.
async fn serves_through(le: &Linkedge, recipe: &Recipe) {
    let (nginx, genuine, rewritten) = customer_proxy(le, recipe);
    let path = format!("/c/{}", click(BRANDED, DESTINATION, 1));
    let logs = || format!("nginx:\n{}\nlinkedge:\n{}", nginx.error_log(), le.log());

    let r = get(genuine, &path).await;
    assert_eq!(r.status(), StatusCode::FOUND, "{}", logs());
    assert_eq!(r.headers()["location"], DESTINATION);
    for port in [genuine, rewritten] {
        let r = get(port, "/health").await;
        assert_eq!(r.status(), StatusCode::OK, "{}", logs());
        assert_eq!(r.text().await.unwrap(), "{}");
    }
    let r = get(rewritten, &path).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "{}", logs());
    assert_eq!(r.text().await.unwrap(), "Invalid link security token");
}

/// Whether the edge presents, to a handshake with `sni` (none when `None`), a certificate a CDN
/// would accept from its origin: signed by the development CA and valid for the edge's name,
/// that is `tls.cert`. `Err` with why when the handshake or the check fails.
async fn presented(le: &Linkedge, sni: Option<&str>) -> Result<(), String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(dev_ca()).unwrap();
    let mut config = b
        .build()
        .configure()
        .unwrap()
        .use_server_name_indication(sni.is_some())
        .verify_hostname(false);
    config.param_mut().set_host(EDGE).unwrap();
    let ssl = config.into_ssl(sni.unwrap_or(EDGE)).unwrap();
    let tcp = tokio::net::TcpStream::connect(le.https).await.unwrap();
    let mut s = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    tokio::time::timeout(Duration::from_secs(10), Pin::new(&mut s).connect())
        .await
        .expect("the handshake within 10 s")
        .map_err(|e| e.to_string())
}

/// No SNI: `tls.cert`, the request judged by its Host. The domain needs no `--fronted`.
#[tokio::test(flavor = "multi_thread")]
async fn nginx_block_from_the_page_sends_no_sni() {
    let (_redis, le) = edge(false);
    presented(&le, None).await.unwrap();
    serves_through(&le, &nginx_block()).await;
}

/// SNI the edge's name: `tls.cert`, which nginx checks as Fastly does; judged by the Host.
#[tokio::test(flavor = "multi_thread")]
async fn fastly_sends_the_edge_name_and_keeps_the_host() {
    let (_redis, le) = edge(false);
    presented(&le, Some(EDGE)).await.unwrap();
    serves_through(&le, &fastly()).await;
}

/// SNI the branded domain, registered `--fronted`: `tls.cert`; its Host matches the SNI.
#[tokio::test(flavor = "multi_thread")]
async fn cloudfront_headers_all_sends_the_branded_name_of_a_fronted_domain() {
    let (_redis, le) = edge(true);
    presented(&le, Some(BRANDED)).await.unwrap();
    serves_through(&le, &cloudfront()).await;
}

/// As CloudFront, over TLS 1.3 (nginx's choice; the CloudFront recipe keeps to TLS 1.2).
#[tokio::test(flavor = "multi_thread")]
async fn cloudflare_full_sends_the_branded_name_of_a_fronted_domain() {
    let (_redis, le) = edge(true);
    presented(&le, Some(BRANDED)).await.unwrap();
    serves_through(&le, &cloudflare_full()).await;
}

/// Why `--fronted` exists: registered without it, the branded domain has no certificate, and
/// with `fallback: false` the handshake of a proxy sending it as SNI fails (nginx logs `SSL
/// alert number 40`), so every click through CloudFront or Cloudflare gets `502`. This nginx
/// never connected to the edge otherwise: nginx resumes a TLS session per upstream server
/// whatever the SNI, and a resumed handshake has no certificate chosen.
#[tokio::test(flavor = "multi_thread")]
async fn a_branded_sni_without_fronted_fails_at_the_handshake() {
    let (_redis, le) = edge(false);
    assert!(presented(&le, Some(BRANDED)).await.is_err());
    let (nginx, genuine, _) = customer_proxy(&le, &cloudfront());
    let path = format!("/c/{}", click(BRANDED, DESTINATION, 1));
    for p in [path.as_str(), "/health"] {
        let r = get(genuine, p).await;
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "{p}");
    }
    let log = nginx.error_log();
    assert!(log.contains("while SSL handshaking to upstream"), "{log}");
}
