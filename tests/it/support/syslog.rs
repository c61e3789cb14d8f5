//! A stand-in for the system log socket: a unix datagram socket in a TempDir that records
//! every datagram the daemon sends, so tests can assert on syslog lines without touching
//! `/dev/log` or the journal.
//!
//! Owns: the socket file, its directory, and the background thread reading it.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tempfile::TempDir;

use super::{lock, toml_string, wait_until};

/// How often the reader thread looks at its stop flag while no datagram arrives.
const READ_TIMEOUT: Duration = Duration::from_millis(100);

pub struct SyslogRecorder {
    /// The socket path (`<tempdir>/syslog.sock`).
    pub path: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    // Dropped after the thread has stopped (fields drop after `Drop::drop`).
    _dir: TempDir,
}

impl SyslogRecorder {
    pub fn start() -> SyslogRecorder {
        let dir = tempfile::Builder::new()
            .prefix("mailpushd-syslog.")
            .tempdir()
            .expect("create syslog temp dir");
        let path = dir.path().join("syslog.sock");
        let socket = UnixDatagram::bind(&path).expect("bind syslog datagram socket");
        // Bound wait, so the thread notices `stop` within READ_TIMEOUT.
        socket
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set syslog socket read timeout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let lines = Arc::clone(&lines);
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("syslog-recorder".into())
                .spawn(move || {
                    // Larger than any syslog datagram a sane sender produces (RFC 5426 allows
                    // up to the transport's limit; Linux unix datagrams default to ~208 KiB).
                    let mut buf = vec![0u8; 256 * 1024];
                    while !stop.load(Ordering::Relaxed) {
                        match socket.recv(&mut buf) {
                            Ok(n) => {
                                let line = String::from_utf8_lossy(&buf[..n]).into_owned();
                                eprintln!("[syslog] {line}");
                                lock(&lines).push(line);
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock
                                        | std::io::ErrorKind::TimedOut
                                        | std::io::ErrorKind::Interrupted
                                ) => {}
                            Err(e) => {
                                eprintln!("[syslog] recorder stopped: {e}");
                                break;
                            }
                        }
                    }
                })
                .expect("spawn syslog recorder thread")
        };
        SyslogRecorder {
            path,
            lines,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Every datagram received so far, lossily decoded, in arrival order.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.lines).clone()
    }

    /// Waits until `pred` holds for the lines received so far; returns them.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        wait_until(timeout, what, || {
            let lines = self.lines();
            pred(&lines).then_some(lines)
        })
    }

    /// Waits until some line contains `needle`; returns that line.
    pub fn wait_for_line(&self, timeout: Duration, needle: &str) -> String {
        wait_until(
            timeout,
            &format!("a syslog line containing {needle:?}"),
            || self.lines().into_iter().find(|l| l.contains(needle)),
        )
    }

    /// The address in mailpushd's config syntax: `unix:<path>`.
    pub fn address(&self) -> String {
        format!("unix:{}", self.path.display())
    }

    /// A `[syslog]` table for mailpushd's config sending to this recorder.
    pub fn config_toml(&self) -> String {
        format!(
            "[syslog]\nenabled = true\naddress = {}\nfacility = \"mail\"\n",
            toml_string(&self.address())
        )
    }
}

impl Drop for SyslogRecorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // Returns within READ_TIMEOUT: the thread checks `stop` after every timed-out read.
            let _ = thread.join();
        }
    }
}
