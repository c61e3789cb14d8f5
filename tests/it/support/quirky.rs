//! A scripted IMAP server on 127.0.0.1 that plays real servers' quirks on request: untagged
//! `NO`/`BAD` inside answers, data before IDLE's `+`, IDLE ended by the server, grammar
//! bent the way Yahoo bends it, and messages that can never be read.
//!
//! Owns: one mailbox of [`Msg`]s, a listener thread and one thread per connection. Enough
//! IMAP for mailpushd's watcher (CAPABILITY, LOGIN, ID, EXAMINE, UID FETCH of flags or header
//! fields, UID SEARCH UID, SEARCH UNSEEN, IDLE/DONE, NOOP, LOGOUT); everything it reads from clients is
//! recorded for tests to check.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::lock;

/// One message in the scripted mailbox.
#[derive(Debug, Clone, Default)]
pub struct Msg {
    pub uid: u32,
    pub seen: bool,
    /// The header block (`From: ...\r\nSubject: ...\r\n\r\n`).
    pub header: String,
    /// Sent instead of the message's line in a `UID FETCH (UID FLAGS)` answer.
    pub flags_line: Option<String>,
    /// Sent instead of the message's line in a header-fields answer.
    pub header_line: Option<String>,
    /// Asking for this message's header fields closes the connection.
    pub kills_connection: bool,
    /// Asking for this message's header fields gets the whole UID FETCH a tagged NO (as
    /// Gmail answers "Some messages could not be FETCHed").
    pub refuses_headers: bool,
}

impl Msg {
    pub fn new(uid: u32, from: &str, subject: &str) -> Msg {
        Msg {
            uid,
            header: format!("From: {from}\r\nSubject: {subject}\r\n\r\n"),
            ..Msg::default()
        }
    }
}

/// What the server does differently from a well-behaved one.
#[derive(Debug, Clone, Default)]
pub struct Quirks {
    /// Untagged lines put into every EXAMINE answer, after its `* OK [UIDNEXT n]`.
    pub examine_extra: Vec<String>,
    /// Untagged lines put before the tagged OK of every UID FETCH.
    pub fetch_extra: Vec<String>,
    /// Untagged lines sent after IDLE and before `+ idling`.
    pub before_continuation: Vec<String>,
    /// Messages added to the mailbox when the next IDLE arrives, reported with EXISTS
    /// before the `+` (the position real servers sometimes use).
    pub arrive_at_next_idle: Vec<Msg>,
    /// End every IDLE with a tagged OK after this long (some servers do).
    pub end_idle_after: Option<Duration>,
}

struct State {
    messages: Vec<Msg>,
    quirks: Quirks,
}

pub struct Quirky {
    pub port: u16,
    state: Arc<Mutex<State>>,
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    client_lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

/// Counted in [`Quirky::stray_dones`]: a DONE that came when no IDLE was in progress (after
/// the server had ended it), which a real server answers with BAD.
static STRAY_DONES: AtomicUsize = AtomicUsize::new(0);

impl Quirky {
    pub fn start(quirks: Quirks, messages: Vec<Msg>) -> Quirky {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind scripted server");
        let port = listener.local_addr().unwrap().port();
        let q = Quirky {
            port,
            state: Arc::new(Mutex::new(State { messages, quirks })),
            connections: Arc::default(),
            open: Arc::default(),
            client_lines: Arc::default(),
            stop: Arc::default(),
        };
        let (state, connections, open, lines, stop) = (
            Arc::clone(&q.state),
            Arc::clone(&q.connections),
            Arc::clone(&q.open),
            Arc::clone(&q.client_lines),
            Arc::clone(&q.stop),
        );
        thread::spawn(move || {
            for sock in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(sock) = sock else { return };
                connections.fetch_add(1, Ordering::SeqCst);
                open.fetch_add(1, Ordering::SeqCst);
                let (state, open, lines, stop) = (
                    Arc::clone(&state),
                    Arc::clone(&open),
                    Arc::clone(&lines),
                    Arc::clone(&stop),
                );
                thread::spawn(move || {
                    let _ = Conn {
                        sock,
                        state,
                        lines,
                        stop,
                        told_exists: 0,
                    }
                    .serve();
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        q
    }

    /// The account table for a daemon watching this server's INBOX.
    pub fn account_toml(&self, name: &str, extra: &str) -> String {
        format!(
            "[[accounts]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             username = \"u\"\npassword = \"p\"\nreconnect_max_secs = 1\n{extra}\n",
            self.port
        )
    }

    /// Adds a message; a connection in IDLE reports it with EXISTS.
    pub fn add(&self, msg: Msg) {
        lock(&self.state).messages.push(msg);
    }

    /// Replaces the whole mailbox (a server restored from a backup). UIDNEXT follows the
    /// highest UID present, so it may go back.
    pub fn replace_messages(&self, messages: Vec<Msg>) {
        lock(&self.state).messages = messages;
    }

    pub fn set_quirks(&self, f: impl FnOnce(&mut Quirks)) {
        f(&mut lock(&self.state).quirks);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// DONEs sent while no IDLE was in progress, by any client of any scripted server in
    /// this test process (tests run in parallel: compare before and after, or expect 0).
    pub fn stray_dones() -> usize {
        STRAY_DONES.load(Ordering::SeqCst)
    }

    /// Every line clients sent, in order.
    pub fn client_lines(&self) -> Vec<String> {
        lock(&self.client_lines).clone()
    }
}

impl Drop for Quirky {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the listener so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

struct Conn {
    sock: TcpStream,
    state: Arc<Mutex<State>>,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    /// The EXISTS count this client was last told.
    told_exists: usize,
}

/// How often an idling connection looks for new messages and for the client's DONE.
const TICK: Duration = Duration::from_millis(25);

impl Conn {
    fn send(&mut self, s: &str) -> std::io::Result<()> {
        self.sock.write_all(s.as_bytes())
    }

    fn serve(&mut self) -> std::io::Result<()> {
        self.sock.set_read_timeout(Some(TICK))?;
        self.send("* OK [CAPABILITY IMAP4rev1 IDLE] scripted quirks\r\n")?;
        let mut reader = BufReader::new(self.sock.try_clone()?);
        let mut line = String::new();
        let mut idle: Option<(String, Instant)> = None;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                let _ = self.sock.shutdown(Shutdown::Both);
                return Ok(());
            }
            match reader.read_line(&mut line) {
                Ok(0) => return Ok(()),
                Ok(_) if line.ends_with('\n') => {}
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if let Some((tag, since)) = &idle {
                        let (tag, since) = (tag.clone(), *since);
                        if self.idle_tick(&tag, since)? {
                            idle = None;
                        }
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
            let text = line.trim_end().to_owned();
            line.clear();
            lock(&self.lines).push(text.clone());
            if let Some((tag, _)) = idle.take() {
                if text.eq_ignore_ascii_case("DONE") {
                    self.send(&format!("{tag} OK idle done\r\n"))?;
                } else {
                    self.send(&format!("* BAD expected DONE, got {text}\r\n"))?;
                }
                continue;
            }
            if text.eq_ignore_ascii_case("DONE") {
                STRAY_DONES.fetch_add(1, Ordering::SeqCst);
                self.send("* BAD DONE without IDLE\r\n")?;
                continue;
            }
            let (tag, rest) = text.split_once(' ').unwrap_or((&text, ""));
            let tag = tag.to_owned();
            let upper = rest.to_ascii_uppercase();
            let mut words = upper.split(' ');
            match words.next().unwrap_or("") {
                "CAPABILITY" => {
                    self.send(&format!("* CAPABILITY IMAP4rev1 IDLE\r\n{tag} OK done\r\n"))?
                }
                "LOGIN" | "ID" | "NOOP" => self.send(&format!("{tag} OK done\r\n"))?,
                "LOGOUT" => {
                    self.send(&format!("* BYE bye\r\n{tag} OK done\r\n"))?;
                    return Ok(());
                }
                "EXAMINE" | "SELECT" => self.examine(&tag)?,
                "UID" => match words.next().unwrap_or("") {
                    "FETCH" => {
                        let set = rest.split(' ').nth(2).unwrap_or("").to_owned();
                        if !self.fetch(&tag, &set, upper.contains("BODY.PEEK"))? {
                            // A message that takes the connection down.
                            let _ = self.sock.shutdown(Shutdown::Both);
                            return Ok(());
                        }
                    }
                    "SEARCH" => {
                        let set = rest.split(' ').nth(3).unwrap_or("").to_owned();
                        let uids = self.select_uids(&set);
                        let list: Vec<String> =
                            uids.iter().map(|(_, m)| m.uid.to_string()).collect();
                        self.send(&format!("* SEARCH {}\r\n{tag} OK done\r\n", list.join(" ")))?;
                    }
                    _ => self.send(&format!("{tag} BAD unknown\r\n"))?,
                },
                // `SEARCH UNSEEN` (the unread count): sequence numbers of the unseen
                // messages the client was told of.
                "SEARCH" => {
                    let list: Vec<String> = {
                        let s = lock(&self.state);
                        s.messages
                            .iter()
                            .take(self.told_exists)
                            .enumerate()
                            .filter(|(_, m)| !m.seen)
                            .map(|(i, _)| (i + 1).to_string())
                            .collect()
                    };
                    self.send(&format!("* SEARCH {}\r\n{tag} OK done\r\n", list.join(" ")))?;
                }
                "IDLE" => {
                    self.idle_start(&tag)?;
                    idle = Some((tag, Instant::now()));
                }
                _ => self.send(&format!("{tag} BAD unknown command\r\n"))?,
            }
        }
    }

    fn examine(&mut self, tag: &str) -> std::io::Result<()> {
        let (n, next, extra) = {
            let s = lock(&self.state);
            let next = s.messages.iter().map(|m| m.uid).max().unwrap_or(0) + 1;
            (s.messages.len(), next, s.quirks.examine_extra.clone())
        };
        self.told_exists = n;
        let mut out = format!(
            "* FLAGS (\\Seen)\r\n* {n} EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT {next}] ok\r\n"
        );
        for l in extra {
            out.push_str(&l);
            out.push_str("\r\n");
        }
        out.push_str(&format!("{tag} OK [READ-ONLY] done\r\n"));
        self.send(&out)
    }

    /// Messages (with their sequence numbers) in a UID set: `a:b`, `a:*`, `*`, lists.
    fn select_uids(&self, set: &str) -> Vec<(usize, Msg)> {
        let s = lock(&self.state);
        let mut sorted: Vec<Msg> = s.messages.clone();
        sorted.sort_by_key(|m| m.uid);
        let max = sorted.last().map_or(0, |m| m.uid);
        let num = |w: &str| {
            if w == "*" {
                max
            } else {
                w.parse().unwrap_or(0)
            }
        };
        let wanted = |uid: u32| {
            set.split(',').any(|part| match part.split_once(':') {
                Some((a, b)) => {
                    let (a, b) = (num(a), num(b));
                    (a.min(b)..=a.max(b)).contains(&uid)
                }
                None => num(part) == uid,
            })
        };
        sorted
            .into_iter()
            .enumerate()
            .filter(|(_, m)| wanted(m.uid))
            .map(|(i, m)| (i + 1, m))
            .collect()
    }

    /// Answers a UID FETCH; `false` if a message in it kills the connection.
    fn fetch(&mut self, tag: &str, set: &str, headers: bool) -> std::io::Result<bool> {
        let mut out = String::new();
        let selected = self.select_uids(set);
        if headers && selected.iter().any(|(_, m)| m.refuses_headers) {
            self.send(&format!(
                "{tag} NO Some messages could not be FETCHed (Failure)\r\n"
            ))?;
            return Ok(true);
        }
        for (seq, m) in selected {
            if headers {
                if m.kills_connection {
                    return Ok(false);
                }
                match &m.header_line {
                    Some(l) => out.push_str(l),
                    None => out.push_str(&format!(
                        "* {seq} FETCH (UID {} BODY[HEADER.FIELDS (FROM SUBJECT)]<0> {{{}}}\r\n{})",
                        m.uid,
                        m.header.len(),
                        m.header
                    )),
                }
            } else {
                match &m.flags_line {
                    Some(l) => out.push_str(l),
                    None => out.push_str(&format!(
                        "* {seq} FETCH (UID {} FLAGS ({}))",
                        m.uid,
                        if m.seen { "\\Seen" } else { "" }
                    )),
                }
            }
            out.push_str("\r\n");
        }
        for l in lock(&self.state).quirks.fetch_extra.clone() {
            out.push_str(&l);
            out.push_str("\r\n");
        }
        out.push_str(&format!("{tag} OK done\r\n"));
        self.send(&out)?;
        Ok(true)
    }

    fn idle_start(&mut self, tag: &str) -> std::io::Result<()> {
        let (before, arriving) = {
            let mut s = lock(&self.state);
            let arriving = std::mem::take(&mut s.quirks.arrive_at_next_idle);
            s.messages.extend(arriving.iter().cloned());
            (s.quirks.before_continuation.clone(), !arriving.is_empty())
        };
        let mut out = String::new();
        for l in before {
            out.push_str(&l);
            out.push_str("\r\n");
        }
        if arriving {
            let n = lock(&self.state).messages.len();
            self.told_exists = n;
            out.push_str(&format!("* {n} EXISTS\r\n"));
        }
        let _ = tag;
        out.push_str("+ idling\r\n");
        self.send(&out)
    }

    /// One look while idling: new messages are reported; the quirk may end IDLE. Returns
    /// whether IDLE ended.
    fn idle_tick(&mut self, tag: &str, since: Instant) -> std::io::Result<bool> {
        let (n, end_after) = {
            let s = lock(&self.state);
            (s.messages.len(), s.quirks.end_idle_after)
        };
        if n > self.told_exists {
            self.told_exists = n;
            self.send(&format!("* {n} EXISTS\r\n"))?;
        }
        if end_after.is_some_and(|d| since.elapsed() >= d) {
            self.send(&format!("{tag} OK IDLE terminated by server\r\n"))?;
            return Ok(true);
        }
        Ok(false)
    }
}
