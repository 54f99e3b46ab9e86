//! systemd's readiness protocol (`sd_notify`), with std only: one datagram
//! per state change to the unix socket named by `$NOTIFY_SOCKET` (a path,
//! or an abstract name written with a leading `@`). Without
//! `$NOTIFY_SOCKET` (not started by systemd, or `Type=` other than
//! `notify`) every call is a no-op.
//!
//! What sluice sends (see `src/main.rs`): `READY=1` once every worker
//! listens, `WATCHDOG=1` every `$WATCHDOG_USEC / 2` while every worker is
//! alive, `STOPPING=1` when the drain starts.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The environment variable systemd sets to the notification socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where notifications go: the socket address from `$NOTIFY_SOCKET`, or
/// nowhere.
#[derive(Debug)]
pub struct Notifier {
    target: Option<SocketAddr>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`. Unset or empty: a notifier that sends
    /// nothing. A value that names no usable unix socket address is an
    /// error (systemd's own `vsock:` form is not supported).
    pub fn from_env() -> io::Result<Self> {
        match std::env::var_os(NOTIFY_SOCKET) {
            None => Ok(Self { target: None }),
            Some(v) if v.is_empty() => Ok(Self { target: None }),
            Some(v) => {
                let v = v.into_string().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is not UTF-8")
                })?;
                Self::to(&v)
            }
        }
    }

    /// A notifier for the given socket name: an absolute path, or `@name`
    /// for a socket in the abstract namespace.
    pub fn to(name: &str) -> io::Result<Self> {
        let target = if let Some(abs) = name.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abs.as_bytes())?
        } else if name.starts_with('/') {
            SocketAddr::from_pathname(name)?
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET={name:?}: not an absolute path or @abstract name"),
            ));
        };
        Ok(Self {
            target: Some(target),
        })
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self { target: None }
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one notification (`KEY=VALUE` lines, e.g. `"READY=1"`).
    /// Returns `Ok(false)` when disabled, `Ok(true)` once the datagram was
    /// sent.
    pub fn notify(&self, state: &str) -> io::Result<bool> {
        let Some(target) = &self.target else {
            return Ok(false);
        };
        let socket = UnixDatagram::unbound()?;
        let sent = socket.send_to_addr(state.as_bytes(), target)?;
        if sent != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write to NOTIFY_SOCKET",
            ));
        }
        Ok(true)
    }

    /// `READY=1` with a human-readable `STATUS=` line.
    pub fn ready(&self, status: &str) -> io::Result<bool> {
        self.notify(&format!("READY=1\nSTATUS={status}"))
    }

    /// `STOPPING=1`: the drain has started.
    pub fn stopping(&self) -> io::Result<bool> {
        self.notify("STOPPING=1\nSTATUS=draining")
    }

    /// `WATCHDOG=1`: still alive.
    pub fn watchdog(&self) -> io::Result<bool> {
        self.notify("WATCHDOG=1")
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when it is set
/// and `$WATCHDOG_PID` (if set) names this process; `None` otherwise.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(me) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn ready_reaches_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("sluice-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::to(path.to_str().unwrap()).unwrap();
        assert!(n.is_enabled());
        assert!(n.ready("serving").unwrap());
        let got = recv(&sock);
        assert!(got.starts_with("READY=1\n"), "{got:?}");
        assert!(got.contains("STATUS=serving"), "{got:?}");
        assert!(n.watchdog().unwrap());
        assert_eq!(recv(&sock), "WATCHDOG=1");
        assert!(n.stopping().unwrap());
        assert!(recv(&sock).starts_with("STOPPING=1"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ready_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("sluice-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::to(&format!("@{name}")).unwrap();
        assert!(n.notify("READY=1").unwrap());
        assert_eq!(recv(&sock), "READY=1");
    }

    #[test]
    fn disabled_and_bad_names() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        assert!(!n.ready("x").unwrap());
        assert!(Notifier::to("relative/path").is_err());
    }

    #[test]
    fn watchdog_interval_is_half_and_checks_the_pid() {
        assert_eq!(
            watchdog_interval_from(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_from(None, None, 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("junk"), None, 7), None);
    }
}
