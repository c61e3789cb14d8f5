//! The syslog sink: one RFC 3164 line per event to a unix datagram socket (default
//! `/dev/log`) or a UDP server, through the `syslog` crate's formatter and transports.
//!
//! The crate neither reconnects nor reports lost lines when used as a `log` backend, so the
//! sink owns that: it opens the socket lazily, reopens it after a failed write (rsyslog or
//! journald restarted), and says once on stderr when syslog is unavailable, and once when it
//! works again. A missing syslog never stops the daemon.
//!
//! A slow syslog never stops anything else either: the sink runs on a thread of its own
//! (`syslog`), fed through a [`SyslogWriter`] whose `send` never blocks (a bounded queue of
//! [`QUEUE_LIMIT`] lines; lines beyond it are counted and reported, not queued). Each write
//! has a timeout of [`WRITE_TIMEOUT`] (a stuck journald fills `/dev/log`'s queue and would
//! block a datagram write for good), and a UDP server's name is resolved once, not per
//! reconnect.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use syslog::{Formatter3164, Logger, LoggerBackend};

use crate::config::{SyslogAddress, SyslogConfig};

type Backend = Logger<LoggerBackend, Formatter3164>;

/// Lines waiting for the syslog thread, at most.
pub const QUEUE_LIMIT: usize = 1024;
/// How long one write may block before the line is given up.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The handle that `Outputs` writes through: `send` returns at once.
pub struct SyslogWriter {
    tx: SyncSender<(Severity, String)>,
    /// Lines dropped because the queue was full, not yet reported.
    dropped: Arc<AtomicUsize>,
}

impl SyslogWriter {
    /// Starts the syslog thread, which opens the socket at once (so a wrong address is
    /// reported at start rather than with the first new mail, which may be hours later).
    /// The thread ends when the writer is dropped, after writing what is queued.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn spawn(config: SyslogConfig) -> std::io::Result<(SyslogWriter, JoinHandle<()>)> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_LIMIT);
        let dropped = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&dropped);
        let thread = std::thread::Builder::new()
            .name("syslog".into())
            .spawn(move || write_all(SyslogSink::new(config), &rx, &counter))?;
        Ok((SyslogWriter { tx, dropped }, thread))
    }

    /// Queues one line; never blocks. A full queue drops the line (counted, and reported
    /// by the thread once it catches up).
    pub fn send(&self, severity: Severity, message: &str) {
        match self.tx.try_send((severity, message.to_owned())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn write_all(mut sink: SyslogSink, rx: &Receiver<(Severity, String)>, dropped: &AtomicUsize) {
    sink.open_now();
    while let Ok((severity, line)) = rx.recv() {
        sink.send(severity, &line);
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            log::warn!(
                "{lost} syslog line(s) dropped: syslog at {} did not keep up",
                sink.config.address
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

pub struct SyslogSink {
    config: SyslogConfig,
    logger: Option<Backend>,
    /// A UDP server's address, resolved once (DNS can take seconds).
    resolved: Option<SocketAddr>,
    /// Whether we already told the user that syslog is unreachable (say it once).
    unavailable: bool,
}

impl SyslogSink {
    pub fn new(config: SyslogConfig) -> Self {
        SyslogSink {
            config,
            logger: None,
            resolved: None,
            unavailable: false,
        }
    }

    /// Opens the socket now, so a wrong address is reported at start rather than with the
    /// first new mail, which may be hours later.
    pub fn open_now(&mut self) {
        if self.logger.is_some() {
            return;
        }
        match open(&self.config, &mut self.resolved) {
            Ok(l) => self.logger = Some(l),
            Err(e) => {
                self.unavailable = true;
                log::warn!(
                    "syslog at {} is unavailable ({e}); continuing without it",
                    self.config.address
                );
            }
        }
    }

    /// Sends one line. Failures are reported once, then silently retried on later lines.
    pub fn send(&mut self, severity: Severity, message: &str) {
        // Two tries: the first may hit a socket left over from a syslog daemon that has since
        // restarted; the second opens a fresh one.
        let mut last_err = String::new();
        for _ in 0..2 {
            let logger = match self.logger.as_mut() {
                Some(l) => l,
                None => match open(&self.config, &mut self.resolved) {
                    Ok(l) => self.logger.insert(l),
                    Err(e) => {
                        last_err = e;
                        break;
                    }
                },
            };
            let res = match severity {
                Severity::Info => logger.info(message),
                Severity::Warning => logger.warning(message),
                Severity::Error => logger.err(message),
            };
            match res {
                Ok(()) => {
                    if self.unavailable {
                        self.unavailable = false;
                        log::info!("syslog at {} is reachable again", self.config.address);
                    }
                    return;
                }
                Err(e) => {
                    last_err = e.to_string();
                    self.logger = None;
                }
            }
        }
        if !self.unavailable {
            self.unavailable = true;
            log::warn!(
                "syslog at {} is unavailable ({last_err}); continuing without it",
                self.config.address
            );
        }
    }
}

/// Opens the socket, with [`WRITE_TIMEOUT`] on writes. `resolved` caches a UDP server's
/// address across reopenings.
fn open(config: &SyslogConfig, resolved: &mut Option<SocketAddr>) -> Result<Backend, String> {
    let logger = connect(config, resolved)?;
    let timeout = Some(WRITE_TIMEOUT);
    let set = match &logger.backend {
        LoggerBackend::Unix(s) => s.set_write_timeout(timeout),
        LoggerBackend::UnixStream(s) => s.get_ref().set_write_timeout(timeout),
        LoggerBackend::Udp(s, _) => s.set_write_timeout(timeout),
        LoggerBackend::Tcp(s) => s.get_ref().set_write_timeout(timeout),
    };
    set.map_err(|e| e.to_string())?;
    Ok(logger)
}

fn connect(config: &SyslogConfig, resolved: &mut Option<SocketAddr>) -> Result<Backend, String> {
    let mut formatter = Formatter3164 {
        facility: config.facility,
        hostname: None,
        process: "mailpushd".into(),
        pid: std::process::id(),
    };
    match &config.address {
        SyslogAddress::Unix(path) => {
            if !path.exists() {
                return Err(format!("{} does not exist", path.display()));
            }
            syslog::unix_custom(formatter, path).map_err(|e| e.to_string())
        }
        SyslogAddress::Udp(hostport) => {
            let server: SocketAddr = match resolved {
                Some(a) => *a,
                None => *resolved.insert(
                    hostport
                        .to_socket_addrs()
                        .map_err(|e| e.to_string())?
                        .next()
                        .ok_or_else(|| format!("{hostport} resolves to no address"))?,
                ),
            };
            // A remote collector needs to know which machine a line is from.
            formatter.hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned());
            let local = if server.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            syslog::udp(formatter, local, server).map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::time::Instant;

    /// A syslog daemon that stopped reading: its socket's queue fills and writes to it
    /// block. Sending must still return at once, the excess must be counted, and the
    /// syslog thread must not hang on a write.
    #[test]
    fn a_stuck_syslog_blocks_no_sender() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let stuck = UnixDatagram::bind(&path).unwrap();
        let (writer, thread) = SyslogWriter::spawn(SyslogConfig {
            enabled: true,
            address: SyslogAddress::Unix(path),
            facility: syslog::Facility::LOG_USER,
        })
        .unwrap();
        let started = Instant::now();
        for i in 0..(QUEUE_LIMIT + 500) {
            writer.send(Severity::Info, &format!("line {i}"));
        }
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "send blocked for {:?}",
            started.elapsed()
        );
        assert!(writer.dropped.load(Ordering::Relaxed) > 0, "excess counted");
        // The thread got lines through until the queue of the socket was full.
        let mut buf = [0u8; 256];
        let n = stuck.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("line 0"));
        drop(stuck);
        drop(writer);
        // With the reader gone every write fails at once: the thread drains and ends.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "syslog thread did not end");
            std::thread::sleep(Duration::from_millis(10));
        }
        thread.join().unwrap();
    }
}
