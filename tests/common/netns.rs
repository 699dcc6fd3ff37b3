//! Hosts in network namespaces for fleet tests: `ip netns` namespaces joined by veth pairs to
//! two bridges (a front network for clients, a back network for Redis) in a switch namespace of
//! their own. Every address lives inside the namespaces created here, which are deleted (with
//! their links) on drop. Needs root and iproute2.
//!
//! A thread enters a namespace with `setns(2)`: sockets it opens and processes it starts live
//! there ([`Netns::run`]), so the test drives each host without any address outside them.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Whether this process may create namespaces (root with `ip`).
pub fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A set of namespaces: a switch (`<prefix>sw`) with bridges `bf` (front) and `bb` (back), and
/// hosts attached to one or both.
pub struct Netns {
    prefix: String,
    hosts: Vec<String>,
}

/// Which networks a host joins, and its last address octet there.
pub struct Host<'a> {
    pub name: &'a str,
    /// Front network (`10.199.1.<n>/24`, interface `f0`).
    pub front: Option<u8>,
    /// Back network (`10.199.2.<n>/24`, interface `b0`).
    pub back: Option<u8>,
}

impl Netns {
    /// Creates the switch and `hosts`, each with loopback up and its addresses.
    pub fn create(hosts: &[Host]) -> Netns {
        let prefix = format!("le{}", std::process::id() % 100_000);
        let sw = format!("{prefix}sw");
        let mut n = Netns {
            prefix: prefix.clone(),
            hosts: vec![sw.clone()],
        };
        ip(&["netns", "add", &sw]);
        for br in ["bf", "bb"] {
            ip(&["-n", &sw, "link", "add", br, "type", "bridge"]);
            ip(&["-n", &sw, "link", "set", br, "up"]);
        }
        for h in hosts {
            let ns = n.ns(h.name);
            ip(&["netns", "add", &ns]);
            n.hosts.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            for (octet, net, dev, br) in [(h.front, 1, "f0", "bf"), (h.back, 2, "b0", "bb")] {
                let Some(octet) = octet else { continue };
                let port = n.port(h.name, dev);
                ip(&[
                    "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", dev, "netns",
                    &ns,
                ]);
                ip(&["-n", &sw, "link", "set", &port, "master", br]);
                ip(&["-n", &sw, "link", "set", &port, "up"]);
                ip(&[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("10.199.{net}.{octet}/24"),
                    "dev",
                    dev,
                ]);
                ip(&["-n", &ns, "link", "set", dev, "up"]);
            }
        }
        n
    }

    /// The namespace's name for host `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The switch-side interface of `host`'s `dev` (at most 15 characters).
    fn port(&self, host: &str, dev: &str) -> String {
        format!("{host}{}", &dev[..1])
    }

    /// Sets `host`'s link to the back network down (cut off from Redis) or up (healed).
    pub fn set_back(&self, host: &str, up: bool) {
        let port = self.port(host, "b0");
        ip(&[
            "-n",
            &format!("{}sw", self.prefix),
            "link",
            "set",
            &port,
            if up { "up" } else { "down" },
        ]);
    }

    /// Runs `f` on a thread inside `host`'s namespace: its sockets, and processes it starts,
    /// are there.
    pub fn run<T: Send>(&self, host: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.ns(host));
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(&path);
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// [`Netns::run`] on a thread of its own, in the background.
    pub fn spawn<T: Send + 'static>(
        &self,
        host: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.ns(host));
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    /// A thread inside `host`'s namespace that forwards every TCP connection to `listen` on to
    /// `target`, until dropped: a small proxy standing in for a name the host cannot resolve.
    pub fn forward(&self, host: &str, listen: SocketAddr, target: SocketAddr) -> Forward {
        let stop = Arc::new(AtomicBool::new(false));
        let path = format!("/run/netns/{}", self.ns(host));
        let l = {
            let path = path.clone();
            std::thread::spawn(move || {
                enter(&path);
                TcpListener::bind(listen).unwrap()
            })
            .join()
            .unwrap()
        };
        l.set_nonblocking(true).unwrap();
        let s = stop.clone();
        std::thread::spawn(move || {
            enter(&path);
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((client, _)) => {
                        let path = path.clone();
                        std::thread::spawn(move || {
                            enter(&path);
                            let _ = client.set_nonblocking(false);
                            if let Ok(server) =
                                TcpStream::connect_timeout(&target, Duration::from_secs(5))
                            {
                                pipe(client, server);
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Forward { stop }
    }
}

/// Stops a [`Netns::forward`] proxy's accept loop when dropped.
pub struct Forward {
    stop: Arc<AtomicBool>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let t = std::thread::spawn(move || {
        let _ = copy(&mut a2, &mut b2);
        let _ = b2.shutdown(std::net::Shutdown::Write);
    });
    let (mut a, mut b) = (a, b);
    let _ = copy(&mut b, &mut a);
    let _ = a.shutdown(std::net::Shutdown::Write);
    let _ = t.join();
}

fn copy(from: &mut TcpStream, to: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
    }
}

/// Moves the calling thread into the namespace mounted at `path`.
fn enter(path: &str) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    use std::os::fd::AsRawFd;
    // SAFETY: a valid namespace file descriptor; affects only the calling thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
