//! Logins against scripted servers, for what Dovecot cannot be made to do: STARTTLS is
//! never silently skipped (a server that does not advertise it, or refuses it: no
//! credentials are sent), and LOGINDISABLED leads to AUTHENTICATE PLAIN, never LOGIN.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::support::with_timeout;

/// Serves one client with `script(line) -> reply` after `greeting`; returns every line the
/// client sent.
fn scripted_server(
    greeting: &'static str,
    script: fn(&str) -> Option<String>,
) -> (u16, mpsc::Receiver<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sock.write_all(greeting.as_bytes()).unwrap();
        let mut reader = BufReader::new(sock.try_clone().unwrap());
        let mut seen = Vec::new();
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            seen.push(line.trim_end().to_owned());
            match script(line.trim_end()) {
                Some(reply) => sock.write_all(reply.as_bytes()).unwrap(),
                None => break,
            }
            line.clear();
        }
        tx.send(seen).unwrap();
    });
    (port, rx)
}

fn account(port: u16) -> std::sync::Arc<mailpushd::config::Account> {
    let text = format!(
        "[[accounts]]\nname = \"a\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"starttls\"\n\
         username = \"alice\"\npassword = \"never-on-the-wire\"\n"
    );
    let cfg = mailpushd::config::parse(&text, Path::new("/")).unwrap();
    cfg.accounts[0].clone()
}

fn tag(line: &str) -> &str {
    line.split(' ').next().unwrap_or("")
}

#[test]
fn no_starttls_in_capabilities_means_no_login() {
    with_timeout(Duration::from_secs(30), || {
        let (port, rx) = scripted_server("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n", |l| {
            if l.contains("CAPABILITY") {
                Some(format!(
                    "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{} OK done\r\n",
                    tag(l)
                ))
            } else {
                Some(format!("{} OK sure\r\n", tag(l)))
            }
        });
        let err = mailpushd::imap::connect(
            &account(port),
            "never-on-the-wire",
            Default::default(),
            |_| {},
        )
        .err()
        .expect("connect must fail");
        assert!(err.to_string().contains("does not offer STARTTLS"), "{err}");
        let seen = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            seen.iter()
                .all(|l| !l.to_ascii_uppercase().contains("LOGIN")),
            "{seen:?}"
        );
        assert!(
            seen.iter().all(|l| !l.contains("never-on-the-wire")),
            "{seen:?}"
        );
    });
}

#[test]
fn a_refused_starttls_means_no_login() {
    with_timeout(Duration::from_secs(30), || {
        let (port, rx) = scripted_server("* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n", |l| {
            Some(format!("{} NO not today\r\n", tag(l)))
        });
        let err = mailpushd::imap::connect(
            &account(port),
            "never-on-the-wire",
            Default::default(),
            |_| {},
        )
        .err()
        .expect("connect must fail");
        assert!(
            err.to_string().contains("refused STARTTLS: NO not today"),
            "{err}"
        );
        drop(err);
        let seen = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].ends_with("STARTTLS"), "{seen:?}");
    });
}

#[test]
fn logindisabled_means_authenticate_plain_never_login() {
    with_timeout(Duration::from_secs(30), || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let caps = "IMAP4rev1 LOGINDISABLED AUTH=PLAIN IDLE";
            sock.write_all(format!("* OK [CAPABILITY {caps}] hi\r\n").as_bytes())
                .unwrap();
            let mut reader = BufReader::new(sock.try_clone().unwrap());
            let mut seen = Vec::new();
            let mut pending_auth: Option<String> = None;
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                let l = line.trim_end().to_owned();
                seen.push(l.clone());
                let reply = if let Some(t) = pending_auth.take() {
                    // The SASL PLAIN response: base64("\0alice\0pw").
                    assert_eq!(l, "AGFsaWNlAHB3", "PLAIN response");
                    format!("{t} OK logged in\r\n")
                } else if l.contains("AUTHENTICATE PLAIN") {
                    pending_auth = Some(tag(&l).to_owned());
                    "+ \r\n".to_owned()
                } else if l.contains("CAPABILITY") {
                    format!("* CAPABILITY {caps}\r\n{} OK done\r\n", tag(&l))
                } else {
                    format!("{} OK fine\r\n", tag(&l))
                };
                sock.write_all(reply.as_bytes()).unwrap();
                if l.contains("LOGOUT") {
                    break;
                }
                line.clear();
            }
            tx.send(seen).unwrap();
        });
        let text = format!(
            "[[accounts]]\nname = \"a\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
             username = \"alice\"\npassword = \"pw\"\n"
        );
        let cfg = mailpushd::config::parse(&text, Path::new("/")).unwrap();
        let conn =
            mailpushd::imap::connect(&cfg.accounts[0], "pw", Default::default(), |_| {}).unwrap();
        assert!(conn.capabilities.idle);
        conn.logout();
        let seen = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            seen.iter().any(|l| l.ends_with("AUTHENTICATE PLAIN")),
            "{seen:?}"
        );
        assert!(seen.iter().all(|l| !l.contains(" LOGIN ")), "{seen:?}");
    });
}
