//! A real nginx for tests, playing a customer's own proxy in front of linkedge: started from the
//! body of its `http` block, on loopback ports the test chose, in its own temp directory (config,
//! error log, pid, temp files); killed on drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nginx.
pub struct Nginx {
    /// Its prefix: `nginx.conf`, `error.log`, the pid file and temp directories.
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx with `http` as the body of its `http { }` block (`upstream` and `server`
    /// blocks, listening on loopback) and returns once each of `ports` on 127.0.0.1 accepts
    /// connections.
    pub fn start(http: &str, ports: &[u16]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let bin = binary();
        let d = dir.path().display();
        // One process, in the foreground: no master whose SIGKILL would leave its workers
        // serving, and no switch to another user (who could not read the test's files).
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
events {{\n  worker_connections 256;\n}}\n\
http {{\n  access_log off;\n{temp}{http}\n}}\n",
            temp = temp_paths(&bin, dir.path()),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log_path = dir.path().join("error.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        // -e: errors before the config is read go to the same file, not to the system's log.
        let child = Command::new(&bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(&log_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nginx is installed (apt-get install nginx-light)");
        let mut n = Nginx {
            dir,
            child: Some(child),
        };
        n.wait_listening(ports);
        n
    }

    fn wait_listening(&mut self, ports: &[u16]) {
        let start = Instant::now();
        while !ports
            .iter()
            .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("nginx exited ({st}) at start:\n{}", self.error_log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx not listening on {ports:?} after 10 s:\n{}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// nginx's error log so far (level `info`: upstream handshake failures included).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// nginx on the `PATH`, else Debian's `/usr/sbin/nginx` (not on an ordinary user's `PATH`).
fn binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("nginx"))
}

/// Temp directories in `dir`: nginx creates them at start, and the built-in ones
/// (`/var/lib/nginx/…` on Debian) may not be writable by whoever runs the tests. Only for the
/// modules `bin` has (`nginx -V` names those left out), as the others' directives are unknown.
fn temp_paths(bin: &Path, dir: &Path) -> String {
    let built = Command::new(bin)
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
    let d = dir.display();
    let mut out = format!("  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n");
    for m in ["fastcgi", "uwsgi", "scgi"] {
        if !built.contains(&format!("--without-http_{m}_module")) {
            out.push_str(&format!("  {m}_temp_path {d}/{m};\n"));
        }
    }
    out
}
