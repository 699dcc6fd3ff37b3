//! `domain verify` names the obstacles the customers' page warns about
//! (`../shared/context/https-link-tracking.txt`), each played by a real nginx as the customer's
//! misconfigured proxy on the verifier's path (`verify.http_port`; every name resolves to
//! 127.0.0.1 through pebble-challtestsrv, one of `verify.target_addrs`): a redirect rule
//! sending the tracking domain away (Cloudflare Bulk Redirects with "include subdomains"), a
//! firewall answering `403`, and a firewall that lets the verifier's User-Agent through to
//! linkedge. Every failure prints the User-Agent to allow. Loopback only.

mod common;

use common::ca::Ca;
use common::nginx::Nginx;
use common::*;
use reqwest::StatusCode;
use serde_json::Value;

const TARGET: &str = "track.linkedge.test";
/// The page the verifier's User-Agent names in these tests (`verify.user_agent_url`).
const UA_URL: &str = "https://linkedge.test/verify";

/// The User-Agent every verify request carries.
fn user_agent() -> String {
    format!("linkedge-verify/{} (+{UA_URL})", env!("CARGO_PKG_VERSION"))
}

/// `le`'s config with `verify.http_port` (`served`, there) set to `port`, the nginx in front.
fn verify_through(le: &Linkedge, served: u16, port: u16, name: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&le.config).unwrap();
    let text = text.replace(
        &format!("  http_port: {served}\n"),
        &format!("  http_port: {port}\n"),
    );
    assert!(text.contains(&format!("  http_port: {port}\n")), "{text}");
    let path = le.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `linkedge domain verify HOST --config <config>`: (success, output).
fn verify(config: &std::path::Path, host: &str) -> (bool, String) {
    run(std::process::Command::new(env!("CARGO_BIN_EXE_linkedge"))
        .args(["domain", "verify", "--config"])
        .arg(config)
        .arg(host))
}

/// An nginx `server` on 127.0.0.1:`port` with `body` inside it.
fn server(port: u16, body: &str) -> String {
    format!("  server {{\n    listen 127.0.0.1:{port};\n{body}\n  }}\n")
}

/// nginx passing the rest to linkedge's plain listener with the Host kept.
fn to_linkedge(le: &Linkedge) -> String {
    format!(
        "      proxy_pass http://127.0.0.1:{};\n      proxy_set_header Host $host;\n",
        le.http.port()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_redirect_rules_and_firewalls_and_sends_its_user_agent() {
    let redis = Redis::start();
    let http = free_port();
    // Only its DNS is used: no acme section, so verify orders nothing.
    let ca = Ca::start(http);
    let wall = free_port();
    let mut o = Options::new(redis.url());
    o.http_port = Some(http);
    o.extra_yaml = format!(
        "regions:\n  us: {{ backends: [{{ addr: \"127.0.0.1:9\" }}] }}\n\
verify:\n  target: {TARGET}\n  target_addrs: [127.0.0.1]\n  nameservers: [\"{}\"]\n  http_port: {wall}\n  user_agent_url: {UA_URL}\n",
        ca.dns
    );
    let le = Linkedge::start(&o);
    let (away, walled, allowed) = (
        "link.redirected.test",
        "link.walled.test",
        "link.allowed.test",
    );
    for host in [away, walled, allowed] {
        let (ok, out) = cli(
            &le,
            "domain",
            &["add", host, "--workspace", "5", "--region", "us"],
        );
        assert!(ok, "{out}");
    }
    let ua = user_agent();

    // A redirect rule on the nonce path (the rest still reaches linkedge): named, not followed.
    let port = free_port();
    let body = format!(
        "    location /.well-known/linkedge/verify/ {{\n      return 301 https://www.example.com/;\n    }}\n    location / {{\n{}    }}",
        to_linkedge(&le)
    );
    let nginx = Nginx::start(&server(port, &body), &[port]);
    let (ok, out) = verify(&verify_through(&le, wall, port, "redirect"), away);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "requests to {away} are redirected to https://www.example.com/: a redirect rule (for example Cloudflare Bulk Redirects with 'include subdomains') sends them away from linkedge"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("'{ua}'")), "{out}");
    drop(nginx);

    // A firewall answering 403 to everything, on the port the serving config names: the CLI and
    // the admin API both name it and the User-Agent to allow.
    let nginx = Nginx::start(&server(wall, "    return 403;"), &[wall]);
    let (ok, out) = cli(&le, "domain", &["verify", walled]);
    assert!(!ok, "{out}");
    let expected = format!(
        "a firewall in front of linkedge answered 403 to requests for {walled}: allow the User-Agent '{ua}' (for example a Cloudflare WAF exception on http.user_agent)"
    );
    assert!(out.contains(&expected), "{out}");
    assert_eq!(out.matches(&ua).count(), 1, "named once: {out}");
    let r = client()
        .post(format!("http://{}/v1/domains/{walled}/verify", le.metrics))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let e: Value = r.json().await.unwrap();
    let msg = e["error"].as_str().unwrap();
    assert!(msg.contains(&expected), "{msg}");
    assert_eq!(domain_state(&redis, walled), "pending");
    drop(nginx);

    // A firewall that lets only the verifier's User-Agent through, and only exactly it, to
    // linkedge with the Host kept: verify passes; another client is refused.
    let port = free_port();
    let body = format!(
        "    location / {{\n      if ($http_user_agent !~ \"^linkedge-verify/\") {{\n        return 403;\n      }}\n      if ($http_user_agent != \"{ua}\") {{\n        return 418;\n      }}\n{}    }}",
        to_linkedge(&le)
    );
    let nginx = Nginx::start(&server(port, &body), &[port]);
    let (ok, out) = verify(&verify_through(&le, wall, port, "allowed"), allowed);
    assert!(ok, "{out}\n{}\n{}", le.log(), nginx.error_log());
    assert!(out.contains(&format!("{allowed} verified")), "{out}");
    let r = client()
        .get(format!(
            "http://127.0.0.1:{port}/.well-known/linkedge/verify/x"
        ))
        .header("User-Agent", "curl/8.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(domain_state(&redis, allowed), "verified");
    assert_eq!(domain_state(&redis, away), "pending");
}

/// `host`'s state in the registry.
fn domain_state(redis: &Redis, host: &str) -> String {
    let raw: String = redis::cmd("HGET")
        .arg("linkedge:domains")
        .arg(host)
        .query(&mut redis.conn())
        .unwrap();
    let d: Value = serde_json::from_str(&raw).unwrap();
    d["state"].as_str().unwrap_or_default().to_string()
}
