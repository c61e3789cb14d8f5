//! Review of issue 15 (unread counts, the D-Bus interface, `mailpushd status`): a hostile
//! IMAP server, played by a scripted server on 127.0.0.1 whose answers each test writes,
//! and whose idling connection a test can push lines to; counts read as a panel reads
//! them, through `mailpushd status --json` on a private session bus.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::support::daemon::Daemon;
use crate::support::dbus::SessionBus;
use crate::support::{lock, run_command, wait_until, with_timeout};

const LIMIT: Duration = Duration::from_secs(90);
const WAIT: Duration = Duration::from_secs(20);

/// The scripted EXAMINE answer: `exists` messages, UIDVALIDITY 7, UIDNEXT `uid_next`.
fn examined(exists: u64, uid_next: u32, tag: &str) -> String {
    format!(
        "* {exists} EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT {uid_next}] ok\r\n{tag} OK [READ-ONLY] done\r\n"
    )
}

/// Answers one command: (verb in upper case, the whole line, tag) -> the reply, or `None`
/// for the default.
type Answer = dyn Fn(&str, &str, &str) -> Option<String> + Send + Sync;

/// A scripted IMAP server: the default answers are enough for a watcher of INBOX (empty,
/// UIDNEXT 1); `answer` overrides any of them.
pub(crate) struct Scripted {
    pub(crate) port: u16,
    pub(crate) connections: Arc<AtomicUsize>,
    /// Every command line received, in order.
    pub(crate) commands: Arc<Mutex<Vec<String>>>,
    /// The connection that is idling now, for [`Scripted::push`].
    idling: Arc<Mutex<Option<TcpStream>>>,
}

impl Scripted {
    pub(crate) fn start(
        answer: impl Fn(&str, &str, &str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let commands = Arc::new(Mutex::new(Vec::new()));
        let idling = Arc::new(Mutex::new(None));
        let answer: Arc<Answer> = Arc::new(answer);
        let (c, l, i) = (connections.clone(), commands.clone(), idling.clone());
        thread::spawn(move || {
            for sock in listener.incoming() {
                let Ok(sock) = sock else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let (l, i, a) = (l.clone(), i.clone(), answer.clone());
                thread::spawn(move || serve(sock, &l, &i, &*a));
            }
        });
        Scripted {
            port,
            connections,
            commands,
            idling,
        }
    }

    /// Writes `text` to the connection that is idling, once one is.
    pub(crate) fn push(&self, text: &str) {
        let what = format!("an idling connection (after {:?})", lock(&self.commands));
        let mut sock = wait_until(WAIT, &what, || {
            lock(&self.idling).as_ref().and_then(|s| s.try_clone().ok())
        });
        sock.write_all(text.as_bytes())
            .expect("push to the idling connection");
    }

    /// Waits until the server has seen `n` commands of `verb`.
    pub(crate) fn wait_count(&self, verb: &str, n: usize) {
        let deadline = std::time::Instant::now() + WAIT;
        while self.count(verb) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {n} {verb} commands; the server read {:?}",
                lock(&self.commands)
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn count(&self, verb: &str) -> usize {
        lock(&self.commands)
            .iter()
            .filter(|l| {
                l.split(' ')
                    .nth(1)
                    .is_some_and(|v| v.eq_ignore_ascii_case(verb))
            })
            .count()
    }

    pub(crate) fn account(&self, extra: &str) -> String {
        format!(
            "[[accounts]]\nname = \"s\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             username = \"u\"\npassword = \"p\"\nreconnect_max_secs = 1\ntimeout_secs = 5\n{extra}\n\
             [notifications]\nenabled = false\n[syslog]\nenabled = false\n",
            self.port
        )
    }
}

fn serve(
    mut sock: TcpStream,
    log: &Mutex<Vec<String>>,
    idling: &Mutex<Option<TcpStream>>,
    answer: &Answer,
) {
    sock.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let _ = sock.write_all(b"* OK [CAPABILITY IMAP4rev1 IDLE] scripted\r\n");
    let mut reader = BufReader::new(sock.try_clone().unwrap());
    let mut line = String::new();
    let mut idle_tag = String::new();
    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        let text = line.trim_end().to_owned();
        line.clear();
        lock(log).push(text.clone());
        if text.eq_ignore_ascii_case("DONE") {
            *lock(idling) = None;
            let reply = format!("{idle_tag} OK idle done\r\n");
            if sock.write_all(reply.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let (tag, rest) = text.split_once(' ').unwrap_or(("*", ""));
        let verb = rest.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply = answer(&verb, &text, tag).unwrap_or_else(|| match verb.as_str() {
            "CAPABILITY" => format!("* CAPABILITY IMAP4rev1 IDLE\r\n{tag} OK done\r\n"),
            "EXAMINE" | "SELECT" => examined(0, 1, tag),
            "SEARCH" => format!("* SEARCH\r\n{tag} OK done\r\n"),
            "IDLE" => "+ idling\r\n".to_owned(),
            "LOGOUT" => format!("* BYE\r\n{tag} OK bye\r\n"),
            _ => format!("{tag} OK done\r\n"),
        });
        if verb == "IDLE" {
            idle_tag = tag.to_owned();
            *lock(idling) = sock.try_clone().ok();
        }
        if sock.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
    *lock(idling) = None;
}

/// `mailpushd status --json` against `bus`, parsed: one object per mailbox.
pub(crate) fn status(bus: &SessionBus) -> Option<Vec<Value>> {
    let out = run_command(
        "mailpushd status --json",
        Command::new(env!("CARGO_BIN_EXE_mailpushd"))
            .args(["status", "--json"])
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address),
        Duration::from_secs(20),
    );
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()?
        .as_array()
        .cloned()
}

/// Waits until the row of `s/INBOX` satisfies `f`, and returns it.
fn wait_row(bus: &SessionBus, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    wait_until(WAIT, what, || {
        status(bus)?
            .into_iter()
            .find(|m| m["account"] == "s" && m["mailbox"] == "INBOX" && f(m))
    })
}

/// The resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A server that says its mailbox holds 4,294,967,295 messages (EXAMINE, or later in
/// IDLE) must not make the daemon allocate a flag per message (4 GiB): the count is
/// unknown, the daemon stays small and watches on, on the same connection.
#[test]
fn an_absurd_exists_costs_the_count_not_the_memory() {
    with_timeout(LIMIT, || {
        for at_examine in [false, true] {
            let server = Scripted::start(move |verb, _, tag| match verb {
                "EXAMINE" if at_examine => Some(examined(4294967295, 1, tag)),
                "EXAMINE" => Some(examined(3, 4, tag)),
                "SEARCH" if !at_examine => Some(format!("* SEARCH 1 3\r\n{tag} OK done\r\n")),
                _ => None,
            });
            let bus = SessionBus::start();
            let daemon = Daemon::start(&server.account(""), Some(&bus));
            daemon.wait_for_output(WAIT, "watching s/INBOX (IDLE)");
            if !at_examine {
                wait_row(&bus, "2 unread", |m| m["unread"] == 2);
                server.push("* 4294967295 EXISTS\r\n");
            }
            // The daemon answers for its count (unknown) and is still idling.
            wait_row(&bus, "an unknown count while idling", |m| {
                m["unread"].is_null() && m["state"] == "idling"
            });
            assert!(daemon.try_wait().is_none(), "the daemon died");
            let rss = rss_kib(daemon.pid());
            assert!(rss < 200 * 1024, "the daemon holds {rss} KiB");
            assert_eq!(server.connections.load(Ordering::SeqCst), 1, "reconnected");
        }
    });
}

/// A server that refuses SEARCH (BAD, or NO) costs the count only: one SEARCH per
/// connection, no reconnect, and flag changes and new mail in IDLE ask for no more. An
/// unsolicited `* SEARCH` in IDLE is not an answer and moves nothing.
#[test]
fn a_refused_search_costs_only_the_count() {
    with_timeout(LIMIT, || {
        for refusal in ["BAD not here", "NO [SERVERBUG] not today"] {
            let server = Scripted::start(move |verb, _, tag| match verb {
                "EXAMINE" => Some(examined(3, 4, tag)),
                "SEARCH" => Some(format!("{tag} {refusal}\r\n")),
                _ => None,
            });
            let bus = SessionBus::start();
            let daemon = Daemon::start(&server.account(""), Some(&bus));
            daemon.wait_for_output(WAIT, "watching s/INBOX (IDLE)");
            daemon.wait_for_output(WAIT, "the server refused SEARCH UNSEEN");
            server.wait_count("IDLE", 1);
            server.push("* 2 FETCH (FLAGS (\\Seen))\r\n* SEARCH 1 2 3\r\n* 4 EXISTS\r\n");
            server.wait_count("IDLE", 2);
            server.push("* 1 EXPUNGE\r\n* 4 EXISTS\r\n");
            server.wait_count("IDLE", 3);
            let row = wait_row(&bus, "the row", |_| true);
            assert!(row["unread"].is_null(), "{row}");
            assert_eq!(server.count("SEARCH"), 1, "{refusal}");
            assert_eq!(server.connections.load(Ordering::SeqCst), 1, "{refusal}");
            assert_eq!(daemon.count_output("the server refused SEARCH UNSEEN"), 1);
        }
    });
}

/// A SEARCH answer that names messages the mailbox does not hold (0, past EXISTS) is not
/// a count: unknown, and asked again at most twice a wake (the wake costs a UID FETCH
/// anyway), on the same connection.
#[test]
fn a_search_answer_past_the_end_is_not_a_count() {
    with_timeout(LIMIT, || {
        let server = Scripted::start(move |verb, _, tag| match verb {
            "EXAMINE" => Some(examined(3, 4, tag)),
            "SEARCH" => Some(format!("* SEARCH 1 7 0\r\n{tag} OK done\r\n")),
            _ => None,
        });
        let bus = SessionBus::start();
        let daemon = Daemon::start(&server.account(""), Some(&bus));
        daemon.wait_for_output(WAIT, "watching s/INBOX (IDLE)");
        for wakes in 1..=3 {
            server.wait_count("IDLE", wakes);
            server.push("* 2 FETCH (FLAGS (\\Seen))\r\n");
        }
        server.wait_count("IDLE", 4);
        let row = wait_row(&bus, "the row", |_| true);
        assert!(row["unread"].is_null(), "{row}");
        let searches = server.count("SEARCH");
        assert!(searches <= 3 + 2 * 3, "{searches} SEARCHes");
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    });
}

/// Calls `method` (no arguments) on the daemon's interface on `bus` in a tight loop until
/// `stop` is set; returns how many calls were answered.
fn hammer(
    bus: &SessionBus,
    method: &'static str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> thread::JoinHandle<usize> {
    let address = bus.address.clone();
    thread::spawn(move || {
        zbus::block_on(async move {
            let conn = zbus::connection::Builder::address(address.as_str())
                .build()
                .await
                .expect("client connect to private bus");
            let mut answered = 0;
            while !stop.load(Ordering::SeqCst) {
                let reply = match method {
                    "Reload" => {
                        conn.call_method(
                            Some("org.mailpushd.Mailpushd"),
                            "/org/mailpushd/Mailpushd",
                            Some("org.mailpushd.Mailpushd1"),
                            "Reload",
                            &(),
                        )
                        .await
                    }
                    _ => {
                        conn.call_method(
                            Some("org.mailpushd.Mailpushd"),
                            "/org/mailpushd/Mailpushd",
                            Some("org.mailpushd.Mailpushd1"),
                            method,
                            &("", ""),
                        )
                        .await
                    }
                };
                if reply.is_err() {
                    break;
                }
                answered += 1;
            }
            answered
        })
    })
}

/// A panel script calling Reload in a loop (or MarkSeenByUser) must not cost a reload per
/// call (two log lines, a systemd RELOADING=1, a config parse): reloads asked for come a
/// second apart at most, the last request is still served, and a SIGTERM in the middle
/// of it stops the daemon as promptly as ever.
#[test]
fn reload_in_a_tight_loop_coalesces() {
    with_timeout(LIMIT, || {
        let server = Scripted::start(|_, _, _| None);
        let bus = SessionBus::start();
        let mut daemon = Daemon::start(&server.account(""), Some(&bus));
        daemon.wait_for_output(WAIT, "watching s/INBOX (IDLE)");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reloads = hammer(&bus, "Reload", stop.clone());
        let marks = hammer(&bus, "MarkSeenByUser", stop.clone());
        thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::SeqCst);
        let calls = reloads.join().unwrap();
        let _ = marks.join().unwrap();
        // The last call is served, a moment later.
        daemon.wait_for_output(WAIT, "(asked for again)");
        let logged = daemon.count_output("reloading");
        // SIGTERM in the middle of another flood.
        let stop_again = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let again = hammer(&bus, "Reload", stop_again.clone());
        daemon.wait_for_output_count(WAIT, "reloading", logged + 1);
        let (_, took) = daemon.terminate();
        stop_again.store(true, Ordering::SeqCst);
        let _ = again.join();
        eprintln!("{calls} Reload calls answered, {logged} reloads logged, stopped in {took:?}");
        assert!(calls > 100, "only {calls} calls");
        assert!(took < Duration::from_secs(3), "stopped in {took:?}");
        assert!(
            logged <= calls / 10 + 5,
            "{logged} reloads logged for {calls} calls"
        );
    });
}

/// `mailpushd <args>` on `bus`, its stdout piped, tracked (stopped if the test fails).
pub(crate) fn spawn_client(bus: &SessionBus, args: &[&str]) -> crate::support::TrackedChild {
    crate::support::spawn_tracked(
        "mailpushd client",
        Command::new(env!("CARGO_BIN_EXE_mailpushd"))
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    )
    .expect("spawn mailpushd client")
}

/// The lines a child writes on stdout, as they come.
pub(crate) fn lines_of(child: &crate::support::TrackedChild) -> std::sync::mpsc::Receiver<String> {
    let out = child.take_stdio(|c| c.stdout.take()).expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn stop_signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{signal} {pid}");
}

/// `status --follow` whose session bus goes away (the session ended) exits, with an
/// error, rather than hanging on (or spinning on) a dead connection; its last line does
/// not leave a bar showing the last count as if it were live.
#[test]
fn follow_ends_when_the_bus_goes() {
    with_timeout(LIMIT, || {
        let server = Scripted::start(|_, _, _| None);
        let bus = SessionBus::start();
        let daemon = Daemon::start(&server.account(""), Some(&bus));
        daemon.wait_for_output(WAIT, "watching s/INBOX (IDLE)");
        let follow = spawn_client(&bus, &["status", "--waybar", "--follow"]);
        let lines = lines_of(&follow);
        let first = lines.recv_timeout(WAIT).expect("a first line");
        assert!(first.contains("\"text\":\"0\""), "{first}");
        drop(bus);
        let status = follow
            .wait_timeout(Duration::from_secs(5))
            .expect("status --follow still running after its bus went");
        assert!(!status.success(), "{status}");
        let last: Vec<String> = lines.iter().collect();
        let last = last.last().expect("a last line");
        let v: Value = serde_json::from_str(last).unwrap();
        assert_eq!(v["alt"], "stopped", "{last}");
        drop(daemon);
    });
}

/// `status` against a daemon that does not answer (stopped) gives up within its deadline,
/// with one line and a failure.
#[test]
fn status_of_a_hung_daemon_has_a_deadline() {
    with_timeout(LIMIT, || {
        let server = Scripted::start(|_, _, _| None);
        let bus = SessionBus::start();
        let daemon = Daemon::start(&server.account(""), Some(&bus));
        daemon.wait_for_output(WAIT, "watching s/INBOX (IDLE)");
        stop_signal(daemon.pid(), "STOP");
        let started = std::time::Instant::now();
        let client = spawn_client(&bus, &["status"]);
        let status = client.wait_timeout(Duration::from_secs(15));
        stop_signal(daemon.pid(), "CONT");
        let status = status.expect("status still running against a stopped daemon");
        let took = started.elapsed();
        assert!(!status.success());
        assert!(took < Duration::from_secs(8), "{took:?}");
        let err = client.take_stdio(|c| {
            let mut s = String::new();
            std::io::Read::read_to_string(c.stderr.as_mut().unwrap(), &mut s).ok();
            s
        });
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    });
}

/// A session bus that stops reading (frozen) while the daemon has a change to publish
/// does not hold up shutdown.
#[test]
fn a_frozen_bus_does_not_hold_up_shutdown() {
    with_timeout(LIMIT, || {
        let server = Scripted::start(|verb, _, tag| match verb {
            "EXAMINE" => Some(examined(3, 4, tag)),
            "SEARCH" => Some(format!("* SEARCH 1 2 3\r\n{tag} OK done\r\n")),
            _ => None,
        });
        let bus = SessionBus::start();
        let mut daemon = Daemon::start(&server.account(""), Some(&bus));
        daemon.wait_for_output(WAIT, "watching s/INBOX (IDLE)");
        wait_row(&bus, "3 unread", |m| m["unread"] == 3);
        stop_signal(bus.pid(), "STOP");
        // Changes to publish, many of them, while nobody reads.
        for i in 1..=3 {
            server.wait_count("IDLE", i);
            let flags: String = (1..=3)
                .map(|s| {
                    format!(
                        "* {s} FETCH (FLAGS ({}))\r\n",
                        if s % 2 == i % 2 { "\\Seen" } else { "" }
                    )
                })
                .collect();
            server.push(&flags);
        }
        server.wait_count("IDLE", 4);
        let (_, took) = daemon.terminate();
        stop_signal(bus.pid(), "CONT");
        assert!(took < Duration::from_secs(3), "stopped after {took:?}");
    });
}

/// `status --follow` whose reader went away (waybar restarted, a pipe closed) exits at the
/// next change instead of writing into the void for ever.
#[test]
fn follow_ends_when_its_reader_goes() {
    with_timeout(LIMIT, || {
        let server = Scripted::start(|_, _, _| None);
        let bus = SessionBus::start();
        let daemon = Daemon::start(&server.account(""), Some(&bus));
        daemon.wait_for_output(WAIT, "watching s/INBOX (IDLE)");
        wait_row(&bus, "0 unread", |m| m["unread"] == 0);
        let follow = spawn_client(&bus, &["status", "--json", "--follow"]);
        let out = follow.take_stdio(|c| c.stdout.take()).expect("stdout");
        let mut first = String::new();
        BufReader::new(out)
            .read_line(&mut first)
            .expect("a first line");
        // The reader is gone (its end of the pipe closed with the BufReader).
        server.push("* 1 EXISTS\r\n");
        wait_row(&bus, "1 unread", |m| m["unread"] == 1);
        let status = follow
            .wait_timeout(Duration::from_secs(5))
            .expect("status --follow still running after its reader went");
        assert!(status.code().is_some(), "killed by {status}");
    });
}

/// A session bus frozen from the start (the interface's connection never gets its Hello
/// answered) costs the interface only: the daemon watches, and stops within its grace
/// for the interface (1.8 s, NOTIFY_GRACE in src/daemon/supervisor.rs; the bound here
/// leaves room for a loaded machine).
#[test]
fn a_bus_frozen_from_the_start_costs_the_interface_only() {
    with_timeout(LIMIT, || {
        let server = Scripted::start(|_, _, _| None);
        let bus = SessionBus::start();
        stop_signal(bus.pid(), "STOP");
        let mut daemon = Daemon::start(&server.account(""), Some(&bus));
        daemon.wait_for_output(WAIT, "watching s/INBOX (IDLE)");
        server.push("* 1 EXISTS\r\n");
        server.wait_count("IDLE", 2);
        let (_, took) = daemon.terminate();
        stop_signal(bus.pid(), "CONT");
        assert!(took < Duration::from_millis(2500), "stopped after {took:?}");
    });
}
