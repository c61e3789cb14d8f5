//! The byte stream under an IMAP session: plain TCP or TLS over TCP, with a read deadline
//! that actually ends.
//!
//! The `imap` crate bounds IDLE with a socket read timeout, but that timeout restarts on
//! every line the server sends, and Dovecot (like many servers) sends `* OK Still here`
//! every couple of minutes, which the crate swallows. An IDLE refresh of 25 minutes would
//! then never fire. So when the crate sets a read timeout, this stream turns it into a
//! deadline: each read gets only the time left until then, and a read after it fails with
//! `TimedOut` at once, which the crate reports as an IDLE timeout.
//!
//! No read ever blocks without a bound: when the crate clears the timeout (it does after
//! every IDLE), the stream falls back to the command timeout.
//!
//! And no answer is without a bound either: a hostile or broken server that sends more than
//! [`MAX_RESPONSE`] bytes after our last command (an endless literal, a line that never
//! ends) gets the connection closed with an error, before the crate's buffers grow further.
//! The same for an answer whose lists nest deeper than the parser's recursion can take
//! (src/imap/nesting.rs): that would overflow the thread's stack and abort the whole process.
//!
//! Between the socket and the crate sits the tolerant layer (src/imap/tolerant.rs): the crate
//! reads whole responses that its parser accepts, and what the layer did about the rest is
//! shared with the connection through [`Stream::tolerant`].
//!
//! During IDLE a server that says nothing at all for [`Stream::set_silence_limit`] ends the
//! wait early, as if its deadline had come ([`Stream`] records that it was silence), so the
//! connection can check the link with DONE instead of waiting out a 25-minute refresh.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, PollFd, PollFlags};

use imap::extensions::idle::SetReadTimeout;

use crate::config::PROBE_ANSWER;
use crate::imap::nesting::{Nesting, MAX_DEPTH};
use crate::imap::tolerant::Tolerant;

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<native_tls::TlsStream<TcpStream>>),
}

/// How long the server may take to answer once a stop was asked for (the DONE that ends
/// IDLE, then LOGOUT): short, so that a stop (SIGTERM, an account removed on reload) says
/// goodbye properly yet stays within systemd's and the user's patience.
pub const STOP_ANSWER: Duration = Duration::from_millis(500);

/// "Stop now", from the supervisor to a watcher's stream: an eventfd that a read blocked in
/// IDLE waits on beside the socket. It ends the IDLE the way its deadline would, so the
/// connection can send DONE and LOGOUT instead of being cut (RFC 3501 §6.1.3); after it,
/// every read waits at most [`STOP_ANSWER`].
#[derive(Debug)]
pub struct StopSignal {
    fd: Option<OwnedFd>,
    raised: AtomicBool,
}

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal {
            // Without an eventfd (it does not fail in practice) a stop cuts the socket, as
            // the supervisor does anyway for a watcher that does not stop in time.
            fd: rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).ok(),
            raised: AtomicBool::new(false),
        }
    }
}

impl StopSignal {
    pub fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        if let Some(fd) = &self.fd {
            let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
        }
    }

    pub fn raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// Whether a stop can wake a blocked read (there is an eventfd to wait on).
    pub fn wakes_reads(&self) -> bool {
        self.fd.is_some()
    }
}

/// Most a server may send in answer to one command (or during one IDLE).
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

pub struct Stream {
    transport: Transport,
    /// Bytes read since we last wrote: the size of the answer in progress.
    read_since_write: usize,
    /// Bound for reads when no deadline is set.
    command_timeout: Duration,
    deadline: Option<Instant>,
    nesting: Nesting,
    tolerant: SharedTolerant,
    /// When the server last sent anything.
    last_heard: Instant,
    /// During a deadline (IDLE): end the wait after this much silence from the server.
    silence_limit: Option<Duration>,
    /// Set by the watcher's control to end a blocked IDLE cleanly.
    stop: Arc<StopSignal>,
    /// The socket read timeout was shortened to [`STOP_ANSWER`] after a stop.
    stop_timeout_set: bool,
    /// After a silent IDLE wait: the answer to DONE is due within [`PROBE_ANSWER`], and the
    /// command timeout is back from the command after DONE on.
    probe: Probe,
    /// What ended the last wait early, for the connection to read: silence, or a read
    /// outside IDLE that timed out (an unanswered DONE).
    pub events: Arc<Mutex<StreamEvents>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Off,
    /// The shorter read timeout is set; DONE is about to be written.
    Armed,
    /// DONE was written; the next write restores the command timeout.
    DoneSent,
}

/// The tolerant layer, shared by the stream (which feeds it) and the connection (which
/// reads its notes).
pub type SharedTolerant = Arc<Mutex<Tolerant>>;

/// What happened on the stream that the crate does not report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamEvents {
    /// An IDLE wait was ended by the server's silence, not by the refresh deadline.
    pub silent: bool,
    /// A read with no deadline set (a command's answer, the answer to DONE) timed out.
    pub timed_out: bool,
}

impl Stream {
    pub fn new(transport: Transport, command_timeout: Duration, stop: Arc<StopSignal>) -> Self {
        Stream {
            stop,
            stop_timeout_set: false,
            transport,
            read_since_write: 0,
            command_timeout,
            deadline: None,
            nesting: Nesting::default(),
            tolerant: SharedTolerant::default(),
            last_heard: Instant::now(),
            silence_limit: None,
            probe: Probe::Off,
            events: Arc::default(),
        }
    }

    /// The tolerant layer this stream feeds.
    pub fn tolerant(&self) -> SharedTolerant {
        Arc::clone(&self.tolerant)
    }

    /// Ends an IDLE wait after `limit` without a byte from the server (`None`: never).
    pub fn set_silence_limit(&mut self, limit: Option<Duration>) {
        self.silence_limit = limit;
    }

    fn layer(&self) -> MutexGuard<'_, Tolerant> {
        self.tolerant.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn event(&self, f: impl FnOnce(&mut StreamEvents)) {
        f(&mut self.events.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn tcp(&self) -> &TcpStream {
        match &self.transport {
            Transport::Plain(s) => s,
            Transport::Tls(s) => s.get_ref(),
        }
    }
}

/// The socket timeout for the next read: what is left of the deadline, or the command
/// timeout. `None` means the deadline has passed.
fn read_timeout(
    deadline: Option<Instant>,
    command_timeout: Duration,
    now: Instant,
) -> Option<Duration> {
    match deadline {
        None => Some(command_timeout),
        Some(d) => {
            let left = d.saturating_duration_since(now);
            // A zero timeout means "block forever" to the kernel: treat it as expired.
            (left >= Duration::from_millis(1)).then_some(left)
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut layer = self.layer();
                if layer.has_output() {
                    return Ok(layer.read(buf));
                }
            }
            let mut raw = [0u8; 16 * 1024];
            let n = self.read_raw(&mut raw)?;
            if n == 0 {
                return Ok(0);
            }
            self.layer().feed(&raw[..n]);
        }
    }
}

impl Stream {
    /// One read from the socket, within the deadline, the silence limit and the answer
    /// bound, through the nesting guard.
    fn read_raw(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.raised() {
            if self.deadline.is_some() {
                // A stop ends IDLE as its deadline would: the crate then sends DONE.
                return Err(io::Error::new(io::ErrorKind::TimedOut, "stopping"));
            }
            if !self.stop_timeout_set {
                self.stop_timeout_set = true;
                self.tcp()
                    .set_read_timeout(Some(self.command_timeout.min(STOP_ANSWER)))?;
            }
        }
        if self.deadline.is_some() {
            let now = Instant::now();
            let silence = self
                .silence_limit
                .map(|limit| self.last_heard + limit)
                .filter(|at| self.deadline.is_none_or(|d| *at < d));
            let Some(t) = read_timeout(silence.or(self.deadline), self.command_timeout, now) else {
                if silence.is_some() {
                    self.event(|e| e.silent = true);
                }
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "IDLE deadline reached",
                ));
            };
            self.tcp().set_read_timeout(Some(t))?;
        }
        if self.read_since_write >= MAX_RESPONSE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "server sent more than {} MiB in one answer",
                    MAX_RESPONSE >> 20
                ),
            ));
        }
        // Never read past the bound, so no buffer can grow beyond it.
        let room = (MAX_RESPONSE - self.read_since_write).min(buf.len());
        let waited = if self.deadline.is_some() && self.stop.wakes_reads() {
            self.wait_readable_or_stop()
        } else {
            Ok(())
        };
        let result = waited.and_then(|()| match &mut self.transport {
            Transport::Plain(s) => s.read(&mut buf[..room]),
            Transport::Tls(s) => s.read(&mut buf[..room]),
        });
        let n = match result {
            Ok(n) => n,
            Err(e) => {
                let timeout = matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                );
                if timeout && self.deadline.is_some() {
                    // The silence limit, not the refresh deadline, if that came first.
                    let silent = self
                        .silence_limit
                        .is_some_and(|limit| self.last_heard.elapsed() >= limit)
                        && self.deadline.is_some_and(|d| Instant::now() < d);
                    self.event(|e| e.silent = silent);
                } else if timeout {
                    self.event(|e| e.timed_out = true);
                }
                return Err(e);
            }
        };
        self.last_heard = Instant::now();
        self.read_since_write += n;
        if self.nesting.feed(&buf[..n]).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("server response nests lists more than {MAX_DEPTH} deep"),
            ));
        }
        Ok(n)
    }
}

impl Stream {
    /// During IDLE: waits until the socket has data, the stop signal is raised, or the
    /// socket's read timeout passes, whichever comes first. A stop or a timeout returns
    /// `TimedOut`, which the crate takes for the end of the IDLE wait.
    ///
    /// Waiting on the socket is sound for TLS too: reads take up to 16 KiB, the largest TLS
    /// record, so OpenSSL (which reads no further ahead than one record) holds no decrypted
    /// bytes that the socket would not show.
    fn wait_readable_or_stop(&mut self) -> io::Result<()> {
        let Some(stop_fd) = self.stop.fd.as_ref() else {
            return Ok(());
        };
        let timeout = self.tcp().read_timeout()?;
        let ts = timeout.map(|t| rustix::time::Timespec {
            tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        let tcp = self.tcp();
        let mut fds = [
            PollFd::new(tcp, PollFlags::IN),
            PollFd::new(stop_fd, PollFlags::IN),
        ];
        loop {
            match rustix::event::poll(&mut fds, ts.as_ref()) {
                Ok(0) => {
                    // The wait's deadline (or the silence limit) came first.
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no data in time"));
                }
                Ok(_) if !fds[1].revents().is_empty() => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "stopping"));
                }
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.read_since_write = 0;
        match self.probe {
            Probe::Off => {}
            Probe::Armed if buf.ends_with(b"\n") => self.probe = Probe::DoneSent,
            Probe::Armed => {}
            Probe::DoneSent => {
                self.probe = Probe::Off;
                self.tcp().set_read_timeout(Some(self.command_timeout))?;
            }
        }
        {
            let mut layer = self.layer();
            if layer.swallows() {
                // The DONE for an IDLE the server already ended: not sent (see tolerant.rs).
                layer.wrote(buf);
                return Ok(buf.len());
            }
        }
        let n = match &mut self.transport {
            Transport::Plain(s) => s.write(buf)?,
            Transport::Tls(s) => s.write(buf)?,
        };
        self.layer().wrote(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.transport {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

impl SetReadTimeout for Stream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> imap::error::Result<()> {
        self.deadline = timeout.map(|t| Instant::now() + t);
        if timeout.is_some() {
            // A new wait: silence counts from its start.
            self.last_heard = Instant::now();
            self.event(|e| e.silent = false);
        }
        let silent = self.events.lock().unwrap_or_else(|e| e.into_inner()).silent;
        let t = match timeout {
            Some(t) => t,
            // The end of a wait that silence ended: DONE checks the link, on a short bound.
            None if silent => {
                self.probe = Probe::Armed;
                self.command_timeout.min(PROBE_ANSWER)
            }
            None => self.command_timeout,
        };
        self.tcp()
            .set_read_timeout(Some(t))
            .map_err(imap::Error::Io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_deadline_uses_the_command_timeout() {
        let now = Instant::now();
        assert_eq!(
            read_timeout(None, Duration::from_secs(60), now),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn deadline_shrinks_each_read_and_then_expires() {
        let now = Instant::now();
        let d = Some(now + Duration::from_secs(10));
        let c = Duration::from_secs(60);
        assert_eq!(read_timeout(d, c, now), Some(Duration::from_secs(10)));
        assert_eq!(
            read_timeout(d, c, now + Duration::from_secs(7)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(read_timeout(d, c, now + Duration::from_secs(10)), None);
        assert_eq!(read_timeout(d, c, now + Duration::from_secs(11)), None);
    }
}
