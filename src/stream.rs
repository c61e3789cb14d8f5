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
//! (src/nesting.rs): that would overflow the thread's stack and abort the whole process.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use imap::extensions::idle::SetReadTimeout;

use crate::nesting::{Nesting, MAX_DEPTH};

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<native_tls::TlsStream<TcpStream>>),
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
}

impl Stream {
    pub fn new(transport: Transport, command_timeout: Duration) -> Self {
        Stream {
            transport,
            read_since_write: 0,
            command_timeout,
            deadline: None,
            nesting: Nesting::default(),
        }
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
        if self.deadline.is_some() {
            let Some(t) = read_timeout(self.deadline, self.command_timeout, Instant::now()) else {
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
        // Never read past the bound, so the crate's buffer cannot grow beyond it.
        let room = (MAX_RESPONSE - self.read_since_write).min(buf.len());
        let n = match &mut self.transport {
            Transport::Plain(s) => s.read(&mut buf[..room])?,
            Transport::Tls(s) => s.read(&mut buf[..room])?,
        };
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

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.read_since_write = 0;
        match &mut self.transport {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
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
        let t = timeout.unwrap_or(self.command_timeout);
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
