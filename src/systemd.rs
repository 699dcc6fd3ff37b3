//! The systemd notification protocol (`sd_notify(3)`), written by hand: one datagram of
//! `NAME=value` lines to the socket named by `NOTIFY_SOCKET`, when systemd set it.
//!
//! The unit runs linkedge as `Type=notify`: `READY=1` tells systemd it serves. A reload
//! (`linkedge reload`, the unit's `ExecReload`) starts a new process that takes the listeners
//! over and sends `MAINPID=` with its own id, so systemd follows it instead of the process that
//! is about to exit (which would otherwise stop the unit and kill the new one with it). Without
//! `NOTIFY_SOCKET` (not under systemd, or a unit of another type) nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The message that says this process, `pid`, is the unit's main process and serves.
pub fn ready_message(pid: u32) -> String {
    format!("READY=1\nMAINPID={pid}\nSTATUS=serving (pid {pid})\n")
}

/// Where `NOTIFY_SOCKET`'s value points: a path, or an abstract name when it starts with `@`.
pub fn socket_addr(value: &str) -> std::io::Result<SocketAddr> {
    match value.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None if value.starts_with('/') => SocketAddr::from_pathname(value),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither an absolute path nor an @abstract name",
        )),
    }
}

/// Sends `message` to systemd; nothing when `NOTIFY_SOCKET` is not set. A failure is logged
/// (systemd then times the start out, which says more than an error here could).
pub fn notify(message: &str) {
    let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let value = value.to_string_lossy();
    let sent = socket_addr(&value).and_then(|addr| {
        let sock = UnixDatagram::unbound()?;
        sock.send_to_addr(message.as_bytes(), &addr)
    });
    if let Err(e) = sent {
        tracing::error!(socket = %value, error = %e, "cannot notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_names_the_main_process() {
        let m = ready_message(4242);
        assert!(m.lines().any(|l| l == "READY=1"), "{m}");
        assert!(m.lines().any(|l| l == "MAINPID=4242"), "{m}");
    }

    #[test]
    fn socket_values() {
        assert_eq!(
            socket_addr("/run/systemd/notify").unwrap().as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        use std::os::linux::net::SocketAddrExt;
        assert_eq!(
            socket_addr("@sd-notify").unwrap().as_abstract_name(),
            Some(&b"sd-notify"[..])
        );
        let e = socket_addr("relative/notify").unwrap_err();
        assert!(e.to_string().contains("absolute path"), "{e}");
    }
}
