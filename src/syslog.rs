//! The syslog sink: one RFC 3164 line per event to a unix datagram socket (default
//! `/dev/log`) or a UDP server, through the `syslog` crate's formatter and transports.
//!
//! The crate neither reconnects nor reports lost lines when used as a `log` backend, so the
//! sink owns that: it opens the socket lazily, reopens it after a failed write (rsyslog or
//! journald restarted), and says once on stderr when syslog is unavailable, and once when it
//! works again. A missing syslog never stops the daemon.

use std::net::{SocketAddr, ToSocketAddrs};

use syslog::{Formatter3164, Logger, LoggerBackend};

use crate::config::{SyslogAddress, SyslogConfig};

type Backend = Logger<LoggerBackend, Formatter3164>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

pub struct SyslogSink {
    config: SyslogConfig,
    logger: Option<Backend>,
    /// Whether we already told the user that syslog is unreachable (say it once).
    unavailable: bool,
}

impl SyslogSink {
    pub fn new(config: SyslogConfig) -> Self {
        SyslogSink {
            config,
            logger: None,
            unavailable: false,
        }
    }

    /// Opens the socket now, so a wrong address is reported at start rather than with the
    /// first new mail, which may be hours later.
    pub fn open_now(&mut self) {
        if self.logger.is_some() {
            return;
        }
        match open(&self.config) {
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
                None => match open(&self.config) {
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

fn open(config: &SyslogConfig) -> Result<Backend, String> {
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
            let server: SocketAddr = hostport
                .to_socket_addrs()
                .map_err(|e| e.to_string())?
                .next()
                .ok_or_else(|| format!("{hostport} resolves to no address"))?;
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
