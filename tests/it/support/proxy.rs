//! A fault-injecting TCP proxy on loopback, to put between mailpushd and Dovecot and break
//! the connection the ways real networks and servers do: reset it (RST), refuse new
//! connections, freeze it (silence without closing), slow it down, or inject lines as if
//! the server had sent them (`* BYE`, `* NO [ALERT]`, garbage).
//!
//! Owns: the listening socket on 127.0.0.1 (port 0, so a free one), the accept thread, and
//! per connection the two sockets and two pump threads (client→server, server→client). On
//! `Drop` the listener is closed and every open connection is reset; all threads have
//! exited by the time `drop` returns.
//!
//! Byte-level features work for any TCP traffic, TLS included (implicit TLS, or after
//! STARTTLS the proxy simply keeps forwarding the opaque bytes): forwarding, reset, refuse,
//! freeze and delay, and the connection counts. The line-level features are only
//! meaningful for plain IMAP (`tls = "none"` in the daemon): on TLS,
//! [`FaultProxy::client_lines`] and [`FaultProxy::server_lines`] record ciphertext split at
//! random 0x0A bytes, and [`FaultProxy::inject_to_client`] corrupts the TLS stream (which
//! the client reports as a TLS error).
//!
//! Semantics worth knowing:
//! - Half-closes are forwarded: EOF from one side becomes `shutdown(Write)` on the other,
//!   and a reset (read or write error) on one side resets the other. A connection counts
//!   as open until both directions have finished.
//! - Frozen means nothing at all passes, in either direction: no data, no EOF, no reset
//!   (a pump that has something to pass on holds it until thawed and stops reading, so TCP
//!   flow control eventually pushes back on the sender). Only [`FaultProxy::reset_all`]
//!   and `Drop` end a frozen connection, and injections still go through.
//! - Server lines are never split by an injection: the server→client pump holds a
//!   per-connection write lock while it writes a chunk, and keeps holding it while the
//!   last chunk it forwarded ended mid-line, until the rest of the line arrives or the
//!   server has been silent for [`LINE_GRACE`]. Injection takes the same lock. Dovecot
//!   writes whole lines, so the grace period only matters for a line that a large response
//!   splits across reads; forwarding itself is never held back by it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::SockRef;

use super::{lock, wait_until};

/// How long the server→client pump keeps the write lock after forwarding a partial line,
/// waiting for the rest of it, before an injection may go in.
pub const LINE_GRACE: Duration = Duration::from_millis(100);
/// Write timeout on both sockets: a write blocked on a peer that does not read re-checks
/// every so often whether the connection is being reset.
const WRITE_POLL: Duration = Duration::from_millis(100);
/// Connecting to the upstream on loopback either works or is refused at once; the limit
/// only keeps a wedged upstream from stalling the accept loop forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BUF_SIZE: usize = 64 * 1024;

pub struct FaultProxy {
    /// The proxy's listening port on 127.0.0.1: point the daemon here.
    pub port: u16,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

/// State shared by the handle, the accept thread and the pumps.
struct Shared {
    port: u16,
    upstream_port: u16,
    stopping: AtomicBool,
    refuse: AtomicBool,
    freeze_new: AtomicBool,
    delay: Mutex<Duration>,
    /// Incremented once a connection is registered (so that a test that waited for
    /// `accepted() == n` can freeze or reset connection n), or just before it is reset
    /// (refused, or the upstream refused): always before the client can see anything.
    accepted: AtomicUsize,
    refused: AtomicUsize,
    conns: Mutex<Vec<Arc<Conn>>>,
    /// (connection index, line) in the order the lines were forwarded.
    client_lines: Mutex<Vec<(usize, String)>>,
    server_lines: Mutex<Vec<(usize, String)>>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1:0 and forwards each accepted connection to
    /// 127.0.0.1:`upstream_port`. If the upstream refuses, the client's connection is reset.
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind proxy listener");
        let port = listener.local_addr().expect("proxy local address").port();
        let shared = Arc::new(Shared {
            port,
            upstream_port,
            stopping: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            freeze_new: AtomicBool::new(false),
            delay: Mutex::new(Duration::ZERO),
            accepted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            conns: Mutex::new(Vec::new()),
            client_lines: Mutex::new(Vec::new()),
            server_lines: Mutex::new(Vec::new()),
        });
        let accept_thread = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("proxy-{port}-accept"))
                .spawn(move || accept_loop(&listener, &shared))
                .expect("spawn proxy accept thread")
        };
        eprintln!("[proxy:{port}] forwarding to 127.0.0.1:{upstream_port}");
        FaultProxy {
            port,
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    /// Connections accepted so far, in total: forwarded ones, refused ones (see
    /// [`FaultProxy::set_refuse`]) and ones reset because the upstream refused them.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Of [`FaultProxy::accepted`], those reset at once because of `set_refuse(true)`.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections being forwarded right now (one direction or both still running).
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// Waits until at least `n` connections have been accepted; returns the count.
    pub fn wait_for_accepted(&self, n: usize, timeout: Duration) -> usize {
        wait_until(
            timeout,
            &format!("{n} connections accepted by proxy :{}", self.port),
            || {
                let count = self.accepted();
                (count >= n).then_some(count)
            },
        )
    }

    /// Resets every open connection: both sockets are closed with SO_LINGER 0, so client
    /// and server see ECONNRESET rather than a clean EOF. Frozen, delayed and blocked pumps
    /// are woken and exit; by the time this returns the RSTs have been sent. Returns how
    /// many connections were reset.
    pub fn reset_all(&self) -> usize {
        let conns = lock(&self.shared.conns).clone();
        let reset = conns.iter().filter(|c| c.abort()).count();
        for conn in &conns {
            let pumps = std::mem::take(&mut *lock(&conn.pumps));
            for pump in pumps {
                let _ = pump.join();
            }
        }
        lock(&self.shared.conns).retain(|c| !conns.iter().any(|r| Arc::ptr_eq(c, r)));
        // The pumps are gone and the list no longer holds these: dropping the last
        // references closes the sockets, which sends the RSTs.
        drop(conns);
        eprintln!("[proxy:{}] reset {reset} connection(s)", self.port);
        reset
    }

    /// While set, new connections are accepted and immediately reset, without connecting
    /// upstream (the server is "down"). Clear it to let connections through again.
    pub fn set_refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Freezes every open connection: nothing passes in either direction, nothing is
    /// closed. Connections accepted later are not frozen unless `set_freeze_new(true)`.
    pub fn freeze_all(&self) {
        for conn in lock(&self.shared.conns).iter() {
            conn.set_frozen(true);
        }
        eprintln!("[proxy:{}] froze all connections", self.port);
    }

    /// Undoes [`FaultProxy::freeze_all`] (and a frozen start): held data is passed on.
    pub fn thaw_all(&self) {
        for conn in lock(&self.shared.conns).iter() {
            conn.set_frozen(false);
        }
        eprintln!("[proxy:{}] thawed all connections", self.port);
    }

    /// While set, new connections start frozen: accepted and connected upstream, but the
    /// server's greeting (and everything else) is held back.
    pub fn set_freeze_new(&self, freeze: bool) {
        self.shared.freeze_new.store(freeze, Ordering::SeqCst);
    }

    /// Writes `bytes` to the client of every open connection as if the server had sent
    /// them, between two whole server lines; end them with "\r\n". Goes through even on
    /// frozen connections. Returns how many connections it was written to. Plain IMAP only
    /// (see the module docs). Blocks while a client does not read and its buffer is full.
    pub fn inject_to_client(&self, bytes: &[u8]) -> usize {
        let conns = lock(&self.shared.conns).clone();
        let mut written = 0;
        for conn in conns {
            if conn.is_closed() {
                continue;
            }
            let _line = lock(&conn.to_client);
            if conn.write_all(&conn.client, bytes).is_ok() {
                written += 1;
            }
        }
        eprintln!(
            "[proxy:{}] injected {:?} into {written} connection(s)",
            self.port,
            String::from_utf8_lossy(bytes)
        );
        written
    }

    /// Holds every server→client chunk back by `delay` before forwarding it (a slow
    /// server or link); `Duration::ZERO` for none. Client→server is not delayed.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.shared.delay) = delay;
    }

    /// Lines forwarded client→server on all connections, in order, lossily decoded and
    /// without the line ending. Recorded as they are passed on (just before the write, so
    /// a line is there by the time the other side can react to it): nothing held by a
    /// freeze shows up until thawed. A final line without "\n" shows up once its direction
    /// reaches EOF.
    pub fn client_lines(&self) -> Vec<String> {
        lines(&self.shared.client_lines, None)
    }

    /// Like [`FaultProxy::client_lines`], for the `index`th accepted connection only
    /// (0-based, counting as [`FaultProxy::accepted`] does).
    pub fn client_lines_of(&self, index: usize) -> Vec<String> {
        lines(&self.shared.client_lines, Some(index))
    }

    /// Lines forwarded server→client (not including injected ones), like `client_lines`.
    pub fn server_lines(&self) -> Vec<String> {
        lines(&self.shared.server_lines, None)
    }

    pub fn server_lines_of(&self, index: usize) -> Vec<String> {
        lines(&self.shared.server_lines, Some(index))
    }

    /// Waits until some client→server line contains `needle`; returns that line.
    pub fn wait_for_client_line(&self, timeout: Duration, needle: &str) -> String {
        wait_until(
            timeout,
            &format!(
                "a client line containing {needle:?} at proxy :{}",
                self.port
            ),
            || self.client_lines().into_iter().find(|l| l.contains(needle)),
        )
    }

    /// Waits until some server→client line contains `needle`; returns that line.
    pub fn wait_for_server_line(&self, timeout: Duration, needle: &str) -> String {
        wait_until(
            timeout,
            &format!(
                "a server line containing {needle:?} at proxy :{}",
                self.port
            ),
            || self.server_lines().into_iter().find(|l| l.contains(needle)),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(thread) = self.accept_thread.take() {
            // Wake the blocking accept with a connection of our own; the loop then sees
            // `stopping` and returns, closing the listener.
            let woken = TcpStream::connect_timeout(&loopback(self.port), CONNECT_TIMEOUT);
            if woken.is_ok() || thread.is_finished() {
                let _ = thread.join();
            } else {
                eprintln!(
                    "[proxy:{}] could not wake the accept thread, leaving it: {:?}",
                    self.port,
                    woken.err()
                );
            }
        }
        self.reset_all();
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn lines(log: &Mutex<Vec<(usize, String)>>, index: Option<usize>) -> Vec<String> {
    lock(log)
        .iter()
        .filter(|(i, _)| index.is_none_or(|want| *i == want))
        .map(|(_, line)| line.clone())
        .collect()
}

/// Closes `stream` with RST when its last handle is dropped.
fn set_reset_on_close(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let port = shared.port;
    for incoming in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let client = match incoming {
            Ok(stream) => stream,
            Err(e) => {
                // Out of descriptors and the like: let it pass instead of spinning.
                eprintln!("[proxy:{port}] accept failed: {e}");
                thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let index = shared.accepted.load(Ordering::SeqCst);
        if shared.refuse.load(Ordering::SeqCst) {
            // Counted before the reset, which a client may be waiting for to check them.
            shared.refused.fetch_add(1, Ordering::SeqCst);
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            set_reset_on_close(&client);
            drop(client);
            eprintln!("[proxy:{port}] refused connection #{index} (reset)");
            continue;
        }
        match TcpStream::connect_timeout(&loopback(shared.upstream_port), CONNECT_TIMEOUT) {
            Ok(server) => {
                let frozen = shared.freeze_new.load(Ordering::SeqCst);
                start_connection(shared, index, client, server, frozen);
                eprintln!(
                    "[proxy:{port}] connection #{index} open{}",
                    if frozen { " (frozen)" } else { "" }
                );
            }
            Err(e) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                set_reset_on_close(&client);
                drop(client);
                eprintln!("[proxy:{port}] connection #{index}: upstream failed ({e}), reset");
            }
        }
    }
}

fn start_connection(
    shared: &Arc<Shared>,
    index: usize,
    client: TcpStream,
    server: TcpStream,
    frozen: bool,
) {
    for stream in [&client, &server] {
        // Pass chunks on as they come, so the client sees the server's writes unmerged.
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(WRITE_POLL));
    }
    let conn = Arc::new(Conn {
        index,
        client,
        server,
        state: Mutex::new(ConnState {
            frozen,
            closed: false,
            pumps_left: 2,
        }),
        changed: Condvar::new(),
        to_client: Mutex::new(()),
        pumps: Mutex::new(Vec::new()),
    });
    // Registered before the pumps run (one that finishes at once must find itself in the
    // list to remove), and with `pumps` locked until their handles are in, so `reset_all`
    // always gets the handles to join.
    let mut pumps = lock(&conn.pumps);
    lock(&shared.conns).push(Arc::clone(&conn));
    // Counted once registered, and before any data can reach the client.
    shared.accepted.fetch_add(1, Ordering::SeqCst);
    let port = shared.port;
    for (direction, to_server) in [("c2s", true), ("s2c", false)] {
        let shared = Arc::clone(shared);
        let conn = Arc::clone(&conn);
        let handle = thread::Builder::new()
            .name(format!("proxy-{port}-{index}-{direction}"))
            .spawn(move || {
                if to_server {
                    pump_to_server(&shared, &conn);
                } else {
                    pump_to_client(&shared, &conn);
                }
                conn.finish(&shared);
            })
            .expect("spawn proxy pump thread");
        pumps.push(handle);
    }
}

/// One proxied connection.
struct Conn {
    index: usize,
    client: TcpStream,
    server: TcpStream,
    state: Mutex<ConnState>,
    /// Signalled on every change of `state`: thaw, reset.
    changed: Condvar,
    /// Held while writing server data or an injection to the client (see module docs).
    to_client: Mutex<()>,
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

struct ConnState {
    frozen: bool,
    /// Being reset: pumps stop at the next opportunity and forward nothing more.
    closed: bool,
    pumps_left: u8,
}

impl Conn {
    fn state(&self) -> MutexGuard<'_, ConnState> {
        lock(&self.state)
    }

    fn is_closed(&self) -> bool {
        self.state().closed
    }

    fn set_frozen(&self, frozen: bool) {
        self.state().frozen = frozen;
        self.changed.notify_all();
    }

    /// Blocks while frozen. False once the connection is being reset.
    fn wait_thawed(&self) -> bool {
        let mut state = self.state();
        while state.frozen && !state.closed {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        !state.closed
    }

    /// Sleeps for `duration` unless reset meanwhile; false if reset.
    fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let mut state = self.state();
        loop {
            if state.closed {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Starts a reset: marks the connection closed, wakes parked pumps, arms RST-on-close
    /// on both sockets, and shuts down their read sides, which wakes blocked reads
    /// (returning EOF) without sending anything. The RSTs go out when the last handle to
    /// the sockets is dropped, i.e. once both pumps have exited. False if already reset.
    fn abort(&self) -> bool {
        {
            let mut state = self.state();
            if state.closed {
                return false;
            }
            state.closed = true;
        }
        self.changed.notify_all();
        for stream in [&self.client, &self.server] {
            set_reset_on_close(stream);
            let _ = stream.shutdown(Shutdown::Read);
        }
        true
    }

    /// `write_all` that gives up once the connection is reset, even when the peer does
    /// not read (the sockets' write timeout makes blocked writes come back to check).
    fn write_all(&self, mut to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match to.write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if self.is_closed() {
                        return Err(io::ErrorKind::ConnectionAborted.into());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Called by each pump as it exits; the last one out unregisters the connection.
    fn finish(self: &Arc<Self>, shared: &Shared) {
        let last = {
            let mut state = self.state();
            state.pumps_left -= 1;
            state.pumps_left == 0
        };
        if last {
            lock(&shared.conns).retain(|c| !Arc::ptr_eq(c, self));
        }
    }
}

/// Client→server: forwards chunks as they come.
fn pump_to_server(shared: &Shared, conn: &Conn) {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut lines = LineSplitter::new(conn.index);
    loop {
        match (&conn.client).read(&mut buf) {
            Ok(0) => {
                // EOF from the client, or our own shutdown(Read) during a reset.
                if conn.wait_thawed() {
                    lines.flush(&shared.client_lines);
                    let _ = conn.server.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => {
                if !conn.wait_thawed() {
                    return;
                }
                // Recorded before the write, so by the time the server can answer it.
                lines.feed(&buf[..n], &shared.client_lines);
                if conn.write_all(&conn.server, &buf[..n]).is_err() {
                    conn.abort();
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                // The client reset: pass that on (once thawed).
                if conn.wait_thawed() {
                    conn.abort();
                }
                return;
            }
        }
    }
}

/// Server→client: forwards chunks as they come, after the delay, holding the client
/// write lock while the last forwarded chunk ended mid-line (see module docs).
fn pump_to_client(shared: &Shared, conn: &Conn) {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut lines = LineSplitter::new(conn.index);
    let mut mid_line: Option<MutexGuard<'_, ()>> = None;
    let mut read_timeout_set = false;
    loop {
        if mid_line.is_some() != read_timeout_set {
            read_timeout_set = mid_line.is_some();
            let _ = conn
                .server
                .set_read_timeout(read_timeout_set.then_some(LINE_GRACE));
        }
        let n = match (&conn.server).read(&mut buf) {
            Ok(0) => {
                drop(mid_line);
                if conn.wait_thawed() {
                    lines.flush(&shared.server_lines);
                    let _ = conn.client.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // The rest of the line did not come within LINE_GRACE.
                mid_line = None;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                drop(mid_line);
                if conn.wait_thawed() {
                    conn.abort();
                }
                return;
            }
        };
        let delay = *lock(&shared.delay);
        if !delay.is_zero() && !conn.sleep(delay) {
            return;
        }
        {
            // Like `wait_thawed`, but an injection must not wait for the thaw.
            let mut state = conn.state();
            if state.frozen {
                mid_line = None;
            }
            while state.frozen && !state.closed {
                state = conn
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.closed {
                return;
            }
        }
        let guard = mid_line.take().unwrap_or_else(|| lock(&conn.to_client));
        lines.feed(&buf[..n], &shared.server_lines);
        if conn.write_all(&conn.client, &buf[..n]).is_err() {
            drop(guard);
            conn.abort();
            return;
        }
        if buf[n - 1] != b'\n' {
            mid_line = Some(guard);
        }
    }
}

/// Splits one direction's byte stream into lines for the log.
struct LineSplitter {
    index: usize,
    pending: Vec<u8>,
}

impl LineSplitter {
    fn new(index: usize) -> Self {
        Self {
            index,
            pending: Vec::new(),
        }
    }

    fn feed(&mut self, data: &[u8], log: &Mutex<Vec<(usize, String)>>) {
        self.pending.extend_from_slice(data);
        let mut complete = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            complete.push((self.index, decode_line(&line)));
        }
        if !complete.is_empty() {
            lock(log).extend(complete);
        }
    }

    fn flush(&mut self, log: &Mutex<Vec<(usize, String)>>) {
        if !self.pending.is_empty() {
            let line = decode_line(&std::mem::take(&mut self.pending));
            lock(log).push((self.index, line));
        }
    }
}

fn decode_line(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}
