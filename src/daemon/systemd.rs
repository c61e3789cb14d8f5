//! The systemd notify protocol (sd_notify(3)), spoken directly over the unix datagram
//! socket in `NOTIFY_SOCKET`: READY=1, RELOADING=1 with MONOTONIC_USEC, STATUS=, WATCHDOG=1,
//! STOPPING=1. Without `NOTIFY_SOCKET` (not started by systemd with Type=notify) every call
//! is a no-op.
//!
//! Written by hand (a dozen lines of std) rather than with a crate: std's UnixDatagram
//! reaches abstract sockets too.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use rustix::time::{clock_gettime, ClockId};

pub struct SystemdNotifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
    last_status: String,
}

impl SystemdNotifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Self {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            let addr = match path.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
                None => SocketAddr::from_pathname(&path),
            };
            match (addr, UnixDatagram::unbound()) {
                (Ok(a), Ok(s)) => Some((s, a)),
                (Err(e), _) | (_, Err(e)) => {
                    log::warn!("NOTIFY_SOCKET={path} unusable: {e}");
                    None
                }
            }
        });
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        SystemdNotifier {
            target,
            watchdog,
            last_status: String::new(),
        }
    }

    /// How often to send WATCHDOG=1 (half of WatchdogSec), if systemd asked for it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref().and(self.watchdog)
    }

    fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.target {
            if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
                log::debug!("sd_notify {message:?}: {e}");
            }
        }
    }

    pub fn ready(&mut self, status: &str) {
        self.last_status = status.to_owned();
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// RELOADING=1 must carry the monotonic time so systemd can order it with READY=1.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading configuration",
            monotonic_usec()
        ));
    }

    /// Sends STATUS= only when it changed.
    pub fn status(&mut self, status: &str) {
        if status != self.last_status {
            self.last_status = status.to_owned();
            self.send(&format!("STATUS={status}"));
        }
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }
}

fn monotonic_usec() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000 + (t.tv_nsec as u64) / 1000
}

/// Half the watchdog timeout, when `WATCHDOG_USEC` is set and `WATCHDOG_PID` (if set) is us.
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.parse::<u32>().ok() != Some(me)) {
        return None;
    }
    let usec: u64 = usec?.parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_is_half_and_only_for_us() {
        assert_eq!(
            watchdog_interval(Some("60000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval(Some("60000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(watchdog_interval(Some("60000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn messages_reach_the_socket_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut n = SystemdNotifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                SocketAddr::from_pathname(&path).unwrap(),
            )),
            watchdog: None,
            last_status: String::new(),
        };
        n.ready("1/1 watching");
        n.status("1/1 watching");
        n.status("0/1 watching");
        n.reloading();
        n.watchdog();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        for _ in 0..4 {
            let len = server.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        assert_eq!(got[0], "READY=1\nSTATUS=1/1 watching");
        assert_eq!(
            got[1], "STATUS=0/1 watching",
            "an unchanged STATUS is not resent"
        );
        assert!(
            got[2].starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{}",
            got[2]
        );
        assert_eq!(got[3], "WATCHDOG=1");
    }
}
