//! Server behaviour no real server shows on request, played by a scripted IMAP server on
//! 127.0.0.1: an IDLE answered with a tagged OK and no `+`. The `imap` crate hits an
//! `unreachable!()` on that; the tolerant layer (src/imap/tolerant.rs) hands it a `+` and the
//! OK as "IDLE ended by the server" instead, and a server that does it every time is
//! polled on the same connection rather than reconnected to or spun on.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::support::daemon::Daemon;
use crate::support::with_timeout;

const WAIT: Duration = Duration::from_secs(20);

/// Answers every connection with a minimal IMAP dialogue whose IDLE is broken.
fn broken_idle_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { return };
            count.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || serve(sock));
        }
    });
    (port, connections)
}

fn serve(mut sock: TcpStream) {
    sock.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let _ = sock.write_all(b"* OK [CAPABILITY IMAP4rev1 IDLE] scripted\r\n");
    let mut reader = BufReader::new(sock.try_clone().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        let (tag, rest) = line.trim_end().split_once(' ').unwrap_or(("*", ""));
        let command = rest.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply = match command.as_str() {
            "CAPABILITY" => format!("* CAPABILITY IMAP4rev1 IDLE\r\n{tag} OK done\r\n"),
            "EXAMINE" => format!(
                "* 0 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 1] ok\r\n{tag} OK [READ-ONLY] done\r\n"
            ),
            "UID" => format!("{tag} OK done\r\n"),
            // Not a continuation: the crate's IDLE code treats this as impossible.
            "IDLE" => format!("{tag} OK no idling today\r\n"),
            "LOGOUT" => format!("* BYE\r\n{tag} OK bye\r\n"),
            _ => format!("{tag} OK done\r\n"),
        };
        if sock.write_all(reply.as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

#[test]
fn an_idle_answered_with_a_tagged_ok_costs_no_connection() {
    with_timeout(Duration::from_secs(60), || {
        let (port, connections) = broken_idle_server();
        let config = format!(
            "[[accounts]]\nname = \"odd\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
             username = \"u\"\npassword = \"p\"\nreconnect_max_secs = 1\ntimeout_secs = 2\n\n\
             [notifications]\nenabled = false\n[syslog]\nenabled = false\n"
        );
        let daemon = Daemon::start(&config, None);
        daemon.wait_for_output(WAIT, "odd/INBOX: the server ends every IDLE at once");
        assert!(daemon.try_wait().is_none(), "the daemon died");
        assert_eq!(daemon.count_output("internal error"), 0);
        assert_eq!(connections.load(Ordering::SeqCst), 1, "reconnected");
        assert_eq!(daemon.count_output("watching odd/INBOX (IDLE)"), 1);
    });
}

/// Outlook answers EXAMINE (after a good login) with "BAD User is authenticated but not
/// connected." when the account has too many connections: that is the connection limit
/// (no failed login; the budget drops to one shared connection, said once), with the
/// server's control characters escaped.
#[test]
fn outlooks_bad_on_examine_is_the_connection_limit() {
    with_timeout(Duration::from_secs(60), || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            for sock in listener.incoming() {
                let Ok(mut sock) = sock else { return };
                thread::spawn(move || {
                    sock.set_read_timeout(Some(Duration::from_secs(30))).ok();
                    let _ = sock.write_all(b"* OK [CAPABILITY IMAP4rev1 IDLE] scripted\r\n");
                    let mut reader = BufReader::new(sock.try_clone().unwrap());
                    let mut line = String::new();
                    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                        let (tag, rest) = line.trim_end().split_once(' ').unwrap_or(("*", ""));
                        let command = rest.split(' ').next().unwrap_or("").to_ascii_uppercase();
                        let reply = match command.as_str() {
                            "CAPABILITY" => {
                                format!("* CAPABILITY IMAP4rev1 IDLE\r\n{tag} OK done\r\n")
                            }
                            "EXAMINE" | "STATUS" => format!(
                                "{tag} BAD User is authenticated but not connected.\x1b[2J\x07\r\n"
                            ),
                            "LOGOUT" => format!("* BYE\r\n{tag} OK bye\r\n"),
                            _ => format!("{tag} OK done\r\n"),
                        };
                        if sock.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                        line.clear();
                    }
                });
            }
        });
        let config = format!(
            "[[accounts]]\nname = \"ol\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
             username = \"u\"\npassword = \"p\"\nmailboxes = [\"INBOX\", \"A\"]\n\
             reconnect_max_secs = 2\ntimeout_secs = 2\n\n\
             [notifications]\nenabled = false\n[syslog]\nenabled = false\n"
        );
        let daemon = Daemon::start(&config, None);
        let warned = daemon.wait_for_output(WAIT, "ol: the server refused a connection for ol/");
        assert!(warned.contains("WARN"), "{warned}");
        assert!(warned.contains("it allows no more connections"), "{warned}");
        assert!(
            !warned.contains('\x1b') && !warned.contains('\x07'),
            "{warned:?}"
        );
        // The budget drops to one connection, shared by both mailboxes, said once; the
        // server refuses that one too, and it retries at the cap (every 2 s), never as a
        // failed login.
        daemon.wait_for_output(
            WAIT,
            "ol: the server allows only 1 connection for this account; 2 mailboxes over one \
             shared connection (checked every 120s)",
        );
        daemon.wait_for_output_count(WAIT, "ol/(shared): ", 4);
        daemon.wait_for_output_count(WAIT, "retrying in 2.0s", 4);
        let output = daemon.output();
        assert_eq!(
            output.matches("the server allows only").count(),
            1,
            "{output}"
        );
        assert!(!output.contains("login failed"), "{output}");
        assert!(
            !output.contains("every watched mailbox has its connection again"),
            "{output}"
        );
    });
}
