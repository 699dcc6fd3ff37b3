//! Test harness: a real `redis-server` and a real `linkedge serve` process, each on free loopback
//! ports in their own temp directory, torn down on drop. Tests run in parallel without clashes.
#![allow(dead_code)]

pub mod ca;
pub mod nginx;
pub mod topology;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509, X509NameBuilder};
pub mod netns;
pub mod upstream;

use linkedge::token::{Keyring, Kind, Link, Secret};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Test link keys (not secrets): id 1 is the rotated-out key, id 2 mints.
pub const KEY1: &str = "test-key-1-not-a-secret-0123456789abcdef";
/// The current test key.
pub const KEY2: &str = "test-key-2-not-a-secret-0123456789abcdef";
/// The test certificate-store master key (not a secret), 64 hex characters.
pub const MASTER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// The test admin API token (not a secret).
pub const ADMIN_TOKEN: &str = "test-admin-token-not-a-secret-0123456789";

/// The development CA that signed `certs-dev/leaf.pem`.
pub fn dev_ca() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-dev/dev-ca.pem")
}

/// A port nobody listens on right now, and never handed out before in this test process (so
/// two servers started by parallel tests cannot be given the same one).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Option<std::collections::HashSet<u16>>> =
        std::sync::Mutex::new(None);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if given.get_or_insert_with(Default::default).insert(port) {
            return port;
        }
    }
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what} not ready after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

/// A `redis-server` on a free port, with an append-only file fsynced on every write so a
/// SIGKILL loses nothing it acknowledged.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Redis {
            port: free_port(),
            dir,
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        self.child = Some(child);
        let url = self.url();
        wait_for("redis-server", Duration::from_secs(10), || {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Starts again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: the server hangs (accepts connections, answers nothing) until [`Redis::resume`].
    pub fn pause(&self) {
        signal(self.child.as_ref().expect("running"), "-STOP");
    }

    /// SIGCONT after [`Redis::pause`].
    pub fn resume(&self) {
        signal(self.child.as_ref().expect("running"), "-CONT");
    }

    /// SIGKILL, then start again on the same port with no data: a restart without
    /// persistence, or a failover to a server that never saw the data.
    pub fn restart_empty(&mut self) {
        self.kill();
        for e in std::fs::read_dir(self.dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
        self.spawn();
    }

    /// Every entry of `stream` as field maps, oldest first.
    pub fn entries(&self, stream: &str) -> Vec<std::collections::HashMap<String, String>> {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query(&mut self.conn())
            .unwrap();
        reply
            .ids
            .into_iter()
            .map(|id| {
                id.map
                    .into_iter()
                    .map(|(k, v)| (k, redis::from_redis_value::<String>(v).unwrap()))
                    .collect()
            })
            .collect()
    }

    /// Entries ever added to `stream` (`XINFO STREAM` `entries-added`), trimmed ones included.
    pub fn entries_added(&self, stream: &str) -> u64 {
        let info: std::collections::HashMap<String, redis::Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(stream)
            .query(&mut self.conn())
            .unwrap();
        redis::from_redis_value(info["entries-added"].clone()).unwrap()
    }

    pub fn xlen(&self, stream: &str) -> usize {
        redis::cmd("XLEN")
            .arg(stream)
            .query(&mut self.conn())
            .unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a test may change in the linkedge config.
#[derive(Clone)]
pub struct Options {
    /// The body of the `redis:` section (standalone `url` by default; see [`Options::new`]).
    pub redis_section: String,
    pub trusted_proxies: Vec<String>,
    pub queue_capacity: usize,
    pub spool_max: String,
    pub spool_dir: Option<PathBuf>,
    /// YAML appended to the config (regions, routing).
    pub extra_yaml: String,
    /// YAML appended inside the `events` section (indented two spaces).
    pub events_extra: String,
    /// YAML appended inside the `tls` section (indented two spaces).
    pub tls_extra: String,
    /// The plain HTTP port, when the test must know it before start (pebble validates there).
    pub http_port: Option<u16>,
    /// Environment variables for the `serve` processes (such as `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
    /// The address every listener binds (`0.0.0.0` for a node in a test namespace).
    pub listen_host: std::net::IpAddr,
}

impl Options {
    pub fn new(redis_url: String) -> Options {
        Options::with_redis(&format!("  url: {redis_url}\n  timeout: 500ms\n"))
    }

    /// Options with `section` (indented YAML) as the body of the `redis:` section.
    pub fn with_redis(section: &str) -> Options {
        Options {
            redis_section: section.to_string(),
            trusted_proxies: Vec::new(),
            queue_capacity: 65536,
            spool_max: "64MiB".into(),
            spool_dir: None,
            extra_yaml: String::new(),
            events_extra: String::new(),
            tls_extra: String::new(),
            http_port: None,
            env: Vec::new(),
            listen_host: [127, 0, 0, 1].into(),
        }
    }
}

/// A `linkedge serve` process on free ports.
pub struct Linkedge {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub metrics: SocketAddr,
    pub dir: tempfile::TempDir,
    pub spool_dir: PathBuf,
    pub config: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// The new process during an upgrade, until it takes over.
    upgrading: Option<Child>,
}

pub const STREAM: &str = "linkedge:events";

/// The Host of plain-HTTP test requests (the URL is `http://127.0.0.1:port/...`).
pub const LOCAL: &str = "127.0.0.1";

impl Linkedge {
    pub fn start(opts: &Options) -> Linkedge {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key1"), KEY1).unwrap();
        std::fs::write(dir.path().join("key2"), format!("{KEY2}\n")).unwrap();
        std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).unwrap();
        std::fs::write(dir.path().join("master-key"), MASTER_KEY).unwrap();
        let spool_dir = opts
            .spool_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("spool"));
        let root = env!("CARGO_MANIFEST_DIR");
        let (http, https, metrics) = (
            opts.http_port.unwrap_or_else(free_port),
            free_port(),
            free_port(),
        );
        let trusted = opts
            .trusted_proxies
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let yaml = format!(
            r#"listen:
  http: {host}:{http}
  https: {host}:{https}
  metrics: {host}:{metrics}
tls:
  cert: {root}/certs-dev/leaf.pem
  key: {root}/certs-dev/leaf.key
{tls_extra}redis:
{redis}links:
  mint_key: 2
  keys:
    - {{ id: 1, secret_file: key1 }}
    - {{ id: 2, secret_file: key2 }}
clients:
  trusted_proxies: [{trusted}]
events:
  queue_capacity: {queue}
  spool:
    dir: {spool}
    max_bytes: {spool_max}
{events_extra}server:
  threads: 2
  pid_file: {d}/pid
  upgrade_sock: {d}/upgrade.sock
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 2
admin:
  token_file: admin-token
{extra}
"#,
            host = opts.listen_host,
            extra = opts.extra_yaml,
            events_extra = opts.events_extra,
            tls_extra = opts.tls_extra,
            redis = opts.redis_section,
            queue = opts.queue_capacity,
            spool = spool_dir.display(),
            spool_max = opts.spool_max,
            d = dir.path().display(),
        );
        let config = dir.path().join("linkedge.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut le = Linkedge {
            http: (opts.listen_host, http).into(),
            https: (opts.listen_host, https).into(),
            metrics: (opts.listen_host, metrics).into(),
            dir,
            spool_dir,
            config,
            env: opts.env.clone(),
            child: None,
            upgrading: None,
        };
        le.spawn();
        le
    }

    /// `linkedge serve` (plus `extra` flags) on this config, logging to `linkedge.log`
    /// (truncated when `fresh_log`, else appended to).
    fn serve(&self, extra: &[&str], fresh_log: bool) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(!fresh_log)
            .truncate(fresh_log)
            .open(self.dir.path().join("linkedge.log"))
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_linkedge"))
            .arg("serve")
            .args(extra)
            .arg("--config")
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("LINKEDGE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn spawn(&mut self) {
        self.child = Some(self.serve(&[], true));
        let addrs = [self.http, self.https, self.metrics];
        let start = Instant::now();
        while !addrs.iter().all(|a| TcpStream::connect(a).is_ok()) {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("linkedge exited ({st}) at start:\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "linkedge not listening after 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A `/proc/<pid>/status` field in kB, such as `VmRSS` or `VmHWM`.
    pub fn proc_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("linkedge.log")).unwrap_or_default()
    }

    /// SIGTERM and wait for the process to exit; returns its success.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        signal(&c, "-TERM");
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st.success();
            }
            if start.elapsed() > Duration::from_secs(30) {
                c.kill().unwrap();
                c.wait().unwrap();
                panic!(
                    "linkedge did not stop within 30 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first half of a zero-downtime upgrade: starts a second process on the same config
    /// with `--upgrade` and waits until it is ready to take the listeners over. The running
    /// process keeps serving until [`Linkedge::finish_upgrade`].
    pub fn begin_upgrade(&mut self) {
        let sock = self.dir.path().join("upgrade.sock");
        let _ = std::fs::remove_file(&sock);
        self.upgrading = Some(self.serve(&["--upgrade"], false));
        // The new process listens on the upgrade socket for the listeners.
        assert!(
            eventually(Duration::from_secs(20), || sock.exists()),
            "the new process never opened {}:\n{}",
            sock.display(),
            self.log()
        );
    }

    /// The second half: SIGQUIT makes the running process hand its listeners to the new one;
    /// returns once the old process has exited (after its grace period).
    pub fn finish_upgrade(&mut self) {
        let mut old = self.child.take().expect("running");
        self.child = Some(self.upgrading.take().expect("begin_upgrade first"));
        signal(&old, "-QUIT");
        let start = Instant::now();
        while old.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the old process did not exit within 30 s of SIGQUIT:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("the new process exited ({st}):\n{}", self.log());
        }
    }

    /// SIGKILL, as a crash, an OOM kill or `kill -9` would: nothing is flushed.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Starts the same config again after [`Linkedge::crash`].
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Starts the same config again (same ports, same spool).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// The `/metrics` text.
    pub fn metrics_text(&self) -> String {
        let mut s = TcpStream::connect(self.metrics).unwrap();
        use std::io::{Read, Write};
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// The value of a metric line such as `linkedge_host_mismatch_total` (0 when absent).
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics_text()
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Linkedge {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `linkedge <command> <args[0]> --config <le's config> <args[1..]>`; (success, output).
pub fn cli(le: &Linkedge, command: &str, args: &[&str]) -> (bool, String) {
    let mut full = vec![command, args[0], "--config", le.config.to_str().unwrap()];
    full.extend(&args[1..]);
    run(Command::new(env!("CARGO_BIN_EXE_linkedge")).args(&full))
}

/// `linkedge domain add HOST --workspace 1 --region us` plus `extra` (e.g. `--fronted`) on
/// `le`, then waits until `le`'s registry mirror has applied it; the command's output.
pub fn add_domain(le: &Linkedge, host: &str, extra: &[&str]) -> String {
    let changes = le.metric("linkedge_registry_changes_total");
    let mut args = vec!["add", host, "--workspace", "1", "--region", "us"];
    args.extend(extra);
    let (ok, out) = cli(le, "domain", &args);
    assert!(ok, "{out}");
    assert!(
        eventually(Duration::from_secs(5), || le
            .metric("linkedge_registry_changes_total")
            > changes),
        "the registry mirror did not apply {host}'s registration"
    );
    out
}

/// Redis and a linkedge with `limits:` set to `limits` (indented YAML lines) and `extra`
/// top-level YAML.
pub fn start_with_limits(limits: &str, extra: &str) -> (Redis, Linkedge) {
    let redis = Redis::start();
    let mut o = Options::new(redis.url());
    o.extra_yaml = format!("limits:\n{limits}{extra}");
    let le = Linkedge::start(&o);
    (redis, le)
}

/// Runs `cmd` to the end; (success, stdout and stderr).
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The keyring the test servers use.
pub fn keyring(mint: u32) -> Keyring {
    Keyring::new(
        vec![
            (1, Secret::new(KEY1.as_bytes().to_vec()).unwrap()),
            (2, Secret::new(KEY2.as_bytes().to_vec()).unwrap()),
        ],
        mint,
    )
    .unwrap()
}

/// A click token for `host` to `url`, with link id `link`, signed by key 2.
pub fn click(host: &str, url: &str, link: u64) -> String {
    keyring(2)
        .mint(
            host,
            &Link {
                kind: Kind::Click,
                key_id: 2,
                workspace: 11,
                message: 22,
                link,
                issued: 1_790_000_000,
                url: url.into(),
                trap: false,
            },
        )
        .unwrap()
}

/// An open-pixel token for `host`.
pub fn pixel(host: &str) -> String {
    keyring(2)
        .mint(
            host,
            &Link {
                kind: Kind::Open,
                key_id: 2,
                workspace: 11,
                message: 22,
                link: 0,
                issued: 1_790_000_000,
                url: String::new(),
                trap: false,
            },
        )
        .unwrap()
}

/// An HTTP client that follows no redirects and trusts the development CA.
pub fn client() -> reqwest::Client {
    client_builder().build().unwrap()
}

pub fn client_builder() -> reqwest::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dev_ca()).unwrap()).unwrap();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(ca)
        .no_proxy()
        .timeout(Duration::from_secs(10))
}

/// Polls until `f` holds or `limit` passes; returns whether it held.
/// `linkedge domain add HOST` (workspace 1, region `us`, which the config must have; kept as
/// it is when already registered), then `linkedge cert import HOST --cert CERT --key KEY`;
/// both must succeed. Returns once `le`'s registry mirror has applied both changes, so its
/// next handshake for HOST finds the certificate.
pub fn import_cert(le: &Linkedge, host: &str, cert: &Path, key: &Path) {
    let changes = "linkedge_registry_changes_total";
    let before = le.metric(changes);
    let (added, out) = cli(
        le,
        "domain",
        &["add", host, "--workspace", "1", "--region", "us"],
    );
    assert!(added || out.contains("already registered"), "{out}");
    // Each change is one message on the feed: the registration (when new) and the certificate.
    let changed = if added { 2.0 } else { 1.0 };
    let (ok, out) = cli(
        le,
        "cert",
        &[
            "import",
            host,
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    assert!(
        eventually(Duration::from_secs(5), || le.metric(changes)
            >= before + changed),
        "the registry mirror did not apply the changes to {host}"
    );
}

/// The event `id` of every entry of the events stream ([`STREAM`]), through `conn`, oldest
/// first.
pub fn stream_ids(conn: &mut dyn redis::ConnectionLike) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(STREAM)
        .arg("-")
        .arg("+")
        .query(conn)
        .unwrap();
    reply
        .ids
        .into_iter()
        .filter_map(|e| e.get::<String>("id"))
        .collect()
}

/// Spool segment files under `dir`, in every process's subdirectory.
pub fn spooled_segments(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap().path())
        .map(|p| {
            if p.is_dir() {
                spooled_segments(&p)
            } else {
                usize::from(p.extension().is_some_and(|x| x == "evz" || x == "jsonl"))
            }
        })
        .sum()
}

pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A leaf for `name` signed by the development CA, issued `age_days` ago and valid for
/// `valid_days` from then; returns (cert path, key path, serial hex).
pub fn dev_leaf(
    dir: &Path,
    name: &str,
    age_days: u32,
    valid_days: u32,
) -> (PathBuf, PathBuf, String) {
    dev_leaf_with(dir, name, age_days, valid_days, false)
}

/// [`dev_leaf`] with an RSA-2048 key when `rsa`, else ECDSA P-256.
pub fn dev_leaf_with(
    dir: &Path,
    name: &str,
    age_days: u32,
    valid_days: u32,
    rsa: bool,
) -> (PathBuf, PathBuf, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-dev");
    let ca = X509::from_pem(&std::fs::read(root.join("dev-ca.pem")).unwrap()).unwrap();
    let ca_key =
        PKey::private_key_from_pem(&std::fs::read(root.join("dev-ca.key")).unwrap()).unwrap();
    let key = if rsa {
        PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap()
    } else {
        PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap()
    };
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    let mut n = X509NameBuilder::new().unwrap();
    n.append_entry_by_text("CN", name).unwrap();
    b.set_subject_name(&n.build()).unwrap();
    b.set_issuer_name(ca.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let nb = now - age_days as i64 * 86_400;
    b.set_not_before(&Asn1Time::from_unix(nb).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::from_unix(nb + valid_days as i64 * 86_400).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns(name)
        .build(&b.x509v3_context(Some(&ca), None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let cert = b.build();
    let serial = cert
        .serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string();
    let (cp, kp) = (
        dir.join(format!("{name}-{serial}.pem")),
        dir.join(format!("{name}-{serial}.key")),
    );
    std::fs::write(&cp, cert.to_pem().unwrap()).unwrap();
    std::fs::write(&kp, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cp, kp, serial)
}

/// The serial of the certificate served for `sni`, verified against the
/// certificates in `root_pem`; `Err` when the handshake or the verification fails.
pub async fn tls_serial(le: &Linkedge, sni: &str, root_pem: &[u8]) -> Result<String, String> {
    tls_serial_at(le.https, sni, root_pem).await
}

/// [`tls_serial`] against the HTTPS listener at `https`.
pub async fn tls_serial_at(
    https: SocketAddr,
    sni: &str,
    root_pem: &[u8],
) -> Result<String, String> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    let store = b.cert_store_mut();
    for c in openssl::x509::X509::stack_from_pem(root_pem).unwrap() {
        store.add_cert(c).unwrap();
    }
    b.set_verify(SslVerifyMode::PEER);
    let ssl = b.build().configure().unwrap().into_ssl(sni).unwrap();
    let tcp = tokio::net::TcpStream::connect(https).await.unwrap();
    let mut s = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    std::pin::Pin::new(&mut s)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let cert = s.ssl().peer_certificate().ok_or("no certificate")?;
    Ok(cert
        .serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string())
}

/// Sets the registry state of `host` (as `domain verify` or the issuer would have), through
/// `conn` (a standalone or cluster connection), and announces it on the change feed as the
/// registry does.
pub fn set_domain_state(conn: &mut dyn redis::ConnectionLike, host: &str, state: &str) {
    let raw: String = redis::cmd("HGET")
        .arg("linkedge:domains")
        .arg(host)
        .query(conn)
        .unwrap();
    let mut d: serde_json::Value = serde_json::from_str(&raw).unwrap();
    d["state"] = state.into();
    let _: () = redis::cmd("HSET")
        .arg("linkedge:domains")
        .arg(host)
        .arg(d.to_string())
        .query(conn)
        .unwrap();
    let _: () = redis::cmd("PUBLISH")
        .arg("linkedge:domains:changed")
        .arg(host)
        .query(conn)
        .unwrap();
}
