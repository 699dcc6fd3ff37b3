//! A real ACME CA for tests: Debian's `pebble`, with `pebble-challtestsrv` as the DNS server
//! both pebble and linkedge's verifier ask. Both on free loopback ports, torn down on drop.
#![allow(dead_code)]

use super::free_port;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// pebble and its DNS.
pub struct Ca {
    /// The ACME directory URL.
    pub directory: String,
    /// `127.0.0.1:port` of the mock DNS server.
    pub dns: String,
    /// pebble's management port (roots at `/roots/0`).
    pub acme_mgmt: u16,
    /// pebble's ACME port.
    pub acme_port: u16,
    mgmt: u16,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

fn wait_tcp(port: u16, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} not listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Ca {
    /// Starts challtestsrv (every name resolves to 127.0.0.1) and pebble validating HTTP-01 on
    /// `http_port` (linkedge's plain HTTP listener).
    pub fn start(http_port: u16) -> Ca {
        Ca::start_with(http_port, "127.0.0.1", "127.0.0.1")
    }

    /// [`Ca::start`] with pebble's ACME listener on `listen` (such as `0.0.0.0` in a test
    /// namespace) and every name resolving to `default_ip`.
    pub fn start_with(http_port: u16, listen: &str, default_ip: &str) -> Ca {
        let dir = tempfile::tempdir().unwrap();
        let (dns, mgmt, acme, acme_mgmt, tls) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let dns_srv = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{mgmt}")])
            .args(["-defaultIPv4", default_ip, "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv is installed (apt-get install pebble)");
        wait_tcp(mgmt, "pebble-challtestsrv");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-dev");
        let conf = serde_json::json!({ "pebble": {
            "listenAddress": format!("{listen}:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{acme_mgmt}"),
            "certificate": root.join("leaf.pem"),
            "privateKey": root.join("leaf.key"),
            "httpPort": http_port,
            "tlsPort": tls,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }});
        let path = dir.path().join("pebble.json");
        std::fs::write(&path, conf.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("pebble.log")).unwrap();
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("pebble is installed (apt-get install pebble)");
        wait_tcp(acme, "pebble");
        Ca {
            directory: format!("https://127.0.0.1:{acme}/dir"),
            acme_port: acme,
            dns: format!("127.0.0.1:{dns}"),
            acme_mgmt,
            mgmt,
            children: vec![dns_srv, pebble],
            _dir: dir,
        }
    }

    /// pebble's issuing root (PEM), from its management API: what verifies the certificates
    /// it issues.
    pub async fn root_pem(&self) -> Vec<u8> {
        super::client()
            .get(format!("https://127.0.0.1:{}/roots/0", self.acme_mgmt))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    fn mgmt(&self, path: &str, body: serde_json::Value) {
        let body = body.to_string();
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.mgmt)).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{path}: {out}");
    }

    /// Makes `host` a CNAME to `target`.
    pub fn set_cname(&self, host: &str, target: &str) {
        self.mgmt(
            "/set-cname",
            serde_json::json!({ "host": format!("{host}."), "target": format!("{target}.") }),
        );
    }

    /// Removes `host`'s A records (it falls back to the default, 127.0.0.1).
    pub fn clear_a(&self, host: &str) {
        self.mgmt(
            "/clear-a",
            serde_json::json!({ "host": format!("{host}.") }),
        );
    }

    /// Gives `host` these A records.
    pub fn set_a(&self, host: &str, addrs: &[&str]) {
        self.mgmt(
            "/add-a",
            serde_json::json!({ "host": format!("{host}."), "addresses": addrs }),
        );
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
