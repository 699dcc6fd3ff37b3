//! Redis Sentinel and Redis Cluster for tests: real `redis-server` processes (data nodes and
//! sentinels) on free loopback ports, each in its own temp directory, killed on drop.
#![allow(dead_code)]

use super::{eventually, free_port};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One `redis-server` process (a data node or a sentinel).
pub struct Node {
    pub port: u16,
    /// The address it binds (127.0.0.1, or an address inside a test namespace).
    pub host: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Node {
    /// `redis-server` on a free port with `args` (and, for a sentinel, a config file first).
    fn spawn(args: &[String], sentinel_conf: Option<String>) -> Node {
        Node::spawn_on("127.0.0.1", args, sentinel_conf)
    }

    /// [`Node::spawn`] bound to `host`.
    fn spawn_on(host: &str, args: &[String], sentinel_conf: Option<String>) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        if let Some(conf) = sentinel_conf {
            let path = dir.path().join("sentinel.conf");
            std::fs::write(
                &path,
                format!(
                    "port {port}\nbind {host}\nprotected-mode no\ndir {}\n{conf}",
                    dir.path().display()
                ),
            )
            .unwrap();
            cmd.arg(path).arg("--sentinel");
        } else {
            cmd.args(["--port", &port.to_string(), "--bind", host])
                // Reached from other test namespaces, with no password.
                .args(["--protected-mode", "no"])
                .args(["--save", "", "--appendonly", "no"])
                // A replica's full sync starts at once, not after Redis's default 5 s wait for
                // other replicas to share it.
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(dir.path());
        }
        let child = cmd
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let n = Node {
            port,
            host: host.to_string(),
            child: Some(child),
            dir,
        };
        assert!(
            eventually(Duration::from_secs(10), || n.ping()),
            "redis-server on {port} did not start"
        );
        n
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(format!("redis://{}/", self.addr()))?
            .get_connection_with_timeout(Duration::from_secs(2))
    }

    fn ping(&self) -> bool {
        self.conn()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// `INFO <section>` field `key`.
    pub fn info(&self, section: &str, key: &str) -> Option<String> {
        self.info_all(section)?
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    }

    /// The whole `INFO <section>` text, for a failure's message.
    pub fn info_all(&self, section: &str) -> Option<String> {
        info_at(&self.addr(), section)
    }

    /// A data node replicating from the master at `master_port`, once it has synced.
    pub fn replica_of(master_port: u16) -> Node {
        Node::replica_on("127.0.0.1", master_port)
    }

    /// [`Node::replica_of`], both bound to `host`.
    fn replica_on(host: &str, master_port: u16) -> Node {
        let n = Node::spawn_on(
            host,
            &["--replicaof".into(), host.into(), master_port.to_string()],
            None,
        );
        // A full sync of a master that was just promoted under load can take a while on a
        // busy machine (CI once passed 15 s); the tests' assertions are about clicks, not this.
        let synced = eventually(Duration::from_secs(60), || {
            n.info("replication", "master_link_status").as_deref() == Some("up")
        });
        if !synced {
            panic!(
                "the replica of {master_port} never synced\nreplica: {:?}\nmaster: {:?}",
                n.info_all("replication"),
                info_at(&format!("{host}:{master_port}"), "replication"),
            );
        }
        n
    }

    /// SIGSTOP: the process holds everything sent to it, unread, until [`Node::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let c = self.child.as_ref().expect("running");
        let _ = Command::new("kill")
            .args([sig, &c.id().to_string()])
            .status();
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

/// `INFO <section>` of the Redis at `addr`.
fn info_at(addr: &str, section: &str) -> Option<String> {
    let mut conn = redis::Client::open(format!("redis://{addr}/"))
        .ok()?
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    redis::cmd("INFO").arg(section).query(&mut conn).ok()
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.resume();
        }
        self.kill();
    }
}

/// One master, one replica and three sentinels watching them as `lm`.
pub struct SentinelSet {
    pub master: Node,
    pub replica: Node,
    pub sentinels: Vec<Node>,
}

/// The master name the sentinels monitor.
pub const MASTER_NAME: &str = "lm";

impl SentinelSet {
    pub fn start() -> SentinelSet {
        SentinelSet::start_on("127.0.0.1")
    }

    /// [`SentinelSet::start`] with every process bound to `host`.
    pub fn start_on(host: &str) -> SentinelSet {
        let master = Node::spawn_on(host, &[], None);
        let replica = Node::replica_on(host, master.port);
        let conf = format!(
            "sentinel monitor {MASTER_NAME} {host} {} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 5000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            master.port
        );
        let sentinels: Vec<Node> = (0..3)
            .map(|_| Node::spawn_on(host, &[], Some(conf.clone())))
            .collect();
        // Ready when every sentinel knows the other two and the replica.
        for s in &sentinels {
            assert!(
                eventually(Duration::from_secs(20), || {
                    let Ok(mut c) = s.conn() else { return false };
                    let m: Vec<String> = redis::cmd("SENTINEL")
                        .arg("master")
                        .arg(MASTER_NAME)
                        .query(&mut c)
                        .unwrap_or_default();
                    let field = |k: &str| {
                        m.iter()
                            .position(|x| x == k)
                            .and_then(|i| m.get(i + 1))
                            .cloned()
                            .unwrap_or_default()
                    };
                    field("num-other-sentinels") == "2" && field("num-slaves") == "1"
                }),
                "sentinels never saw each other and the replica"
            );
        }
        SentinelSet {
            master,
            replica,
            sentinels,
        }
    }

    /// The `redis:` section body for linkedge.
    pub fn section(&self) -> String {
        let nodes = self
            .sentinels
            .iter()
            .map(|s| format!("\"{}\"", s.addr()))
            .collect::<Vec<_>>()
            .join(", ");
        format!("  sentinel:\n    master: {MASTER_NAME}\n    nodes: [{nodes}]\n  timeout: 500ms\n")
    }

    /// The master's address as the sentinels see it now.
    pub fn master_addr(&self) -> Option<String> {
        for s in &self.sentinels {
            let Ok(mut c) = s.conn() else { continue };
            if let Ok((h, p)) = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER_NAME)
                .query::<(String, String)>(&mut c)
            {
                return Some(format!("{h}:{p}"));
            }
        }
        None
    }
}

/// Three masters and three replicas in cluster mode.
pub struct ClusterSet {
    pub nodes: Vec<Node>,
}

impl ClusterSet {
    pub fn start() -> ClusterSet {
        let args: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let nodes: Vec<Node> = (0..6).map(|_| Node::spawn(&args, None)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| n.addr()))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for n in &nodes {
            assert!(
                eventually(Duration::from_secs(20), || n
                    .info("cluster", "cluster_enabled")
                    .is_some()
                    && cluster_ok(n)),
                "cluster never became ok on {}",
                n.addr()
            );
        }
        ClusterSet { nodes }
    }

    /// The `redis:` section body for linkedge (three seed nodes).
    pub fn section(&self) -> String {
        let seeds = self.nodes[..3]
            .iter()
            .map(|n| format!("\"{}\"", n.addr()))
            .collect::<Vec<_>>()
            .join(", ");
        format!("  cluster:\n    nodes: [{seeds}]\n  timeout: 500ms\n")
    }

    /// A cluster connection for checks.
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClient::new(
            self.nodes
                .iter()
                .filter(|n| n.child.is_some())
                .map(|n| format!("redis://{}/", n.addr()))
                .collect::<Vec<_>>(),
        )
        .unwrap()
        .get_connection()
        .unwrap()
    }

    /// Index of the node that is master for `key`'s slot now.
    pub fn master_of(&self, key: &str) -> usize {
        let mut c = self.conn();
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut c)
            .unwrap();
        let alive = self.nodes.iter().find(|n| n.child.is_some()).unwrap();
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut alive.conn().unwrap())
            .unwrap();
        for s in slots {
            let redis::Value::Array(parts) = s else {
                continue;
            };
            let num = |v: &redis::Value| redis::from_redis_value::<i64>(v.clone()).unwrap();
            if num(&parts[0]) <= slot as i64 && slot as i64 <= num(&parts[1]) {
                let redis::Value::Array(master) = &parts[2] else {
                    panic!("CLUSTER SLOTS shape")
                };
                let port = num(&master[1]) as u16;
                return self.nodes.iter().position(|n| n.port == port).unwrap();
            }
        }
        panic!("slot {slot} not served")
    }
}

fn cluster_ok(n: &Node) -> bool {
    n.info("cluster", "cluster_enabled").is_some() && {
        let Ok(mut c) = n.conn() else { return false };
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut c)
            .unwrap_or_default();
        info.contains("cluster_state:ok")
    }
}
