//! Self-tests for tests/it/support: each helper is exercised against the real thing (Dovecot,
//! dbus-daemon, a datagram socket) so that a failing integration test points at the daemon,
//! not at its test harness. The daemon itself is not run here.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::dbus::{NotificationServer, SessionBus};
use crate::support::dovecot::{self, Dovecot, DovecotOptions};
use crate::support::proxy::FaultProxy;
use crate::support::syslog::SyslogRecorder;
use crate::support::{spawn_tracked, wait_until, with_timeout};

const LIMIT: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(15);

fn has_idle(caps: &imap::types::Capabilities) -> bool {
    caps.has_str("IDLE")
}

/// Reads IMAP lines until the one tagged `tag`; returns all of them.
fn read_until_tagged(reader: &mut impl BufRead, tag: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("read IMAP line");
        assert!(n > 0, "connection closed; got {lines:?}");
        let done = line.starts_with(&format!("{tag} "));
        lines.push(line);
        if done {
            return lines;
        }
    }
}

#[test]
fn dovecot_advertises_idle_by_default() {
    with_timeout(LIMIT, || {
        let d = Dovecot::start_default();
        assert!(d.options.idle);

        // Greeting (pre-login) capability.
        let tls = dovecot::connect_tls(d.imaps_port, "localhost", &d.ca_file).unwrap();
        let mut client = imap::Client::new(tls);
        let greeting = String::from_utf8(client.read_greeting().unwrap()).unwrap();
        assert!(greeting.contains(" IDLE "), "greeting: {greeting}");

        // Post-login capability.
        let mut session = d.session();
        let caps = session.capabilities().unwrap();
        assert!(
            has_idle(&caps),
            "capabilities: {:?}",
            caps.iter().collect::<Vec<_>>()
        );
        session.logout().unwrap();
    });
}

#[test]
fn dovecot_without_idle_hides_it_everywhere() {
    with_timeout(LIMIT, || {
        let d = Dovecot::start(DovecotOptions {
            idle: false,
            ..DovecotOptions::default()
        });

        let tls = dovecot::connect_tls(d.imaps_port, "localhost", &d.ca_file).unwrap();
        let mut client = imap::Client::new(tls);
        let greeting = String::from_utf8(client.read_greeting().unwrap()).unwrap();
        assert!(greeting.contains("CAPABILITY IMAP4rev1"), "{greeting}");
        assert!(!greeting.contains("IDLE"), "greeting: {greeting}");
        let pre = client.capabilities().unwrap();
        assert!(!has_idle(&pre));

        let mut session = client.login(&d.user, &d.password).map_err(|e| e.0).unwrap();
        let caps = session.capabilities().unwrap();
        let list: Vec<_> = caps.iter().map(|c| format!("{c:?}")).collect();
        assert!(!has_idle(&caps), "post-login capabilities: {list:?}");
        assert!(!caps.has_str("NOTIFY"), "{list:?}");
        // Still a full server otherwise.
        assert!(caps.has_str("UIDPLUS") && caps.has_str("MOVE"), "{list:?}");
        session.logout().unwrap();

        // The plain port's greeting too.
        let tcp = dovecot::connect_tcp(d.imap_port).unwrap();
        let mut reader = BufReader::new(tcp);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(
            line.contains("STARTTLS") && !line.contains("IDLE"),
            "{line}"
        );
    });
}

#[test]
fn dovecot_without_notify_keeps_idle() {
    with_timeout(LIMIT, || {
        let post_login_caps = |d: &Dovecot| {
            let mut session = d.session();
            let caps = session.capabilities().unwrap();
            let mut list: Vec<String> = caps.iter().map(|c| format!("{c:?}")).collect();
            list.sort();
            assert_eq!(caps.has_str("NOTIFY"), d.options.notify, "{list:?}");
            assert!(has_idle(&caps), "{list:?}");
            session.logout().unwrap();
            list
        };

        let d = Dovecot::start_default();
        assert!(d.options.notify);
        let default = post_login_caps(&d);
        drop(d);

        let d = Dovecot::start(DovecotOptions {
            notify: false,
            ..DovecotOptions::default()
        });
        let without = post_login_caps(&d);
        // Exactly the default list minus NOTIFY: nothing else lost or gained.
        let expected: Vec<String> = default
            .iter()
            .filter(|c| !c.contains("\"NOTIFY\""))
            .cloned()
            .collect();
        assert_eq!(expected.len() + 1, default.len(), "{default:?}");
        assert_eq!(without, expected);
    });
}

#[test]
fn dovecot_certificate_verifies_for_localhost_and_ip() {
    with_timeout(LIMIT, || {
        let d = Dovecot::start_default();
        for host in ["localhost", "127.0.0.1"] {
            dovecot::connect_tls(d.imaps_port, host, &d.ca_file)
                .unwrap_or_else(|e| panic!("verify as {host}: {e}"));
        }
        // And a name the certificate does not cover is rejected, so verification is real.
        let err = dovecot::connect_tls(d.imaps_port, "example.invalid", &d.ca_file)
            .expect_err("wrong host name must not verify");
        assert!(err.contains("handshake"), "{err}");
    });
}

#[test]
fn dovecot_plain_port_offers_starttls_and_plaintext_login() {
    with_timeout(LIMIT, || {
        let d = Dovecot::start_default();

        // STARTTLS upgrade, then LOGIN over TLS.
        let tcp = dovecot::connect_tcp(d.imap_port).unwrap();
        let mut reader = BufReader::new(tcp.try_clone().unwrap());
        let mut writer = tcp;
        let mut greeting = String::new();
        reader.read_line(&mut greeting).unwrap();
        assert!(greeting.contains("STARTTLS"), "{greeting}");
        writer.write_all(b"a STARTTLS\r\n").unwrap();
        let lines = read_until_tagged(&mut reader, "a");
        assert!(lines.last().unwrap().starts_with("a OK"), "{lines:?}");
        drop(reader);
        let tls = dovecot::tls_connector(&d.ca_file)
            .connect("localhost", writer)
            .expect("TLS after STARTTLS");
        let mut reader = BufReader::new(tls);
        reader
            .get_mut()
            .write_all(b"b LOGIN alice \"correct horse\"\r\n")
            .unwrap();
        let lines = read_until_tagged(&mut reader, "b");
        assert!(lines.last().unwrap().starts_with("b OK"), "{lines:?}");
        reader.get_mut().write_all(b"c LOGOUT\r\n").unwrap();
        read_until_tagged(&mut reader, "c");

        // Plaintext LOGIN without TLS (tls = "none" in the daemon) is allowed.
        let tcp = dovecot::connect_tcp(d.imap_port).unwrap();
        let mut client = imap::Client::new(tcp);
        client.read_greeting().unwrap();
        let mut session = client.login(&d.user, &d.password).map_err(|e| e.0).unwrap();
        session.select("INBOX").unwrap();
        session.logout().unwrap();

        // A wrong password fails and shows up in the log (auth_verbose).
        let tcp = dovecot::connect_tcp(d.imap_port).unwrap();
        let mut client = imap::Client::new(tcp);
        client.read_greeting().unwrap();
        assert!(client.login(&d.user, "wrong").is_err());
        wait_until(WAIT, "auth failure in dovecot log", || {
            d.log()
                .to_lowercase()
                .contains("password mismatch")
                .then_some(())
        });

        assert_eq!(d.wait_for_logins(2, WAIT), 2);
    });
}

#[test]
fn dovecot_append_count_and_logins() {
    with_timeout(LIMIT, || {
        let d = Dovecot::start_default();
        assert_eq!(d.login_count(), 0, "start must not log in");
        assert_eq!(d.message_count("INBOX"), 0);
        let before = d.wait_for_logins(1, WAIT);

        d.append("INBOX", &dovecot::message("First", "Bob <bob@example.org>"));
        d.append(
            "INBOX",
            &dovecot::message("=?UTF-8?Q?Gr=C3=BC=C3=9Fe?=", "Carol <carol@example.org>"),
        );
        assert_eq!(d.message_count("INBOX"), 2);
        // Three more sessions: two appends and one STATUS.
        assert_eq!(d.wait_for_logins(before + 3, WAIT), before + 3);

        d.create_mailbox("Work");
        d.append_with_flags(
            "Work",
            &dovecot::message("Read", "dave@example.org"),
            &["\\Seen"],
        );
        d.append("Work", &dovecot::message("Unread", "dave@example.org"));
        assert_eq!(d.message_count("Work"), 2);
        let mut session = d.session();
        let status = session.status("Work", "(MESSAGES UNSEEN)").unwrap();
        assert_eq!((status.exists, status.unseen), (2, Some(1)));

        // The message arrived intact (CRLF, headers as given).
        session.select("INBOX").unwrap();
        let fetched = session.fetch("2", "RFC822.HEADER").unwrap();
        let header =
            String::from_utf8_lossy(fetched.iter().next().unwrap().header().unwrap()).into_owned();
        assert!(
            header.contains("Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n"),
            "{header}"
        );
        assert!(header.contains("To: alice@localhost\r\n"), "{header}");
        session.logout().unwrap();

        // The generated config runs cleanly: nothing in the log above info level.
        let log = d.log();
        for bad in [" Error: ", " Fatal: ", " Panic: ", " Warning: "] {
            assert!(!log.contains(bad), "{bad:?} in dovecot log:\n{log}");
        }
    });
}

#[test]
fn dovecot_idle_sees_appends_promptly() {
    with_timeout(LIMIT, || {
        let d = Dovecot::start_default();
        let mut session = d.session();
        session.select("INBOX").unwrap();
        let started = std::time::Instant::now();
        let mut exists = None;
        std::thread::scope(|s| {
            // Racing the IDLE below on purpose: whether the APPEND lands before or during
            // IDLE, Dovecot reports it as EXISTS while idling.
            s.spawn(|| d.append("INBOX", &dovecot::message("pushed", "bob@example.org")));
            let outcome = session
                .idle()
                .timeout(Duration::from_secs(20))
                .keepalive(false)
                .wait_while(|r| {
                    if let imap::types::UnsolicitedResponse::Exists(n) = r {
                        exists = Some(n);
                        return false;
                    }
                    true
                })
                .unwrap();
            assert_eq!(outcome, imap::extensions::idle::WaitOutcome::MailboxChanged);
        });
        assert_eq!(exists, Some(1));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        session.logout().unwrap();
    });
}

#[test]
fn dovecot_idle_notify_interval_sends_keepalives() {
    with_timeout(LIMIT, || {
        let d = Dovecot::start(DovecotOptions {
            idle_notify_interval: Duration::from_secs(1),
            ..DovecotOptions::default()
        });
        // Raw protocol: the imap crate swallows "* OK Still here" inside IDLE (and, as data
        // keeps arriving, its read timeout never fires either).
        let tls = dovecot::connect_tls(d.imaps_port, "localhost", &d.ca_file).unwrap();
        let mut reader = BufReader::new(tls);
        let mut greeting = String::new();
        reader.read_line(&mut greeting).unwrap();
        reader
            .get_mut()
            .write_all(b"a LOGIN alice \"correct horse\"\r\nb SELECT INBOX\r\nc IDLE\r\n")
            .unwrap();
        read_until_tagged(&mut reader, "b");
        let started = std::time::Instant::now();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("+ "), "{line}");
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "* OK Still here\r\n");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "{took:?}");
        reader.get_mut().write_all(b"DONE\r\nd LOGOUT\r\n").unwrap();
        read_until_tagged(&mut reader, "d");
    });
}

#[test]
fn dovecot_kick_and_restart_drop_clients_but_keep_mail() {
    with_timeout(LIMIT, || {
        let mut d = Dovecot::start_default();
        let ports = (d.imap_port, d.imaps_port);
        d.append("INBOX", &dovecot::message("kept", "bob@example.org"));

        let mut session = d.session();
        session.select("INBOX").unwrap();
        d.kick();
        wait_until(WAIT, "kicked session to be closed", || {
            session.noop().is_err().then_some(())
        });
        // Nobody connected: still fine.
        d.kick();

        let mut session = d.session();
        session.select("INBOX").unwrap();
        let logins = d.wait_for_logins(3, WAIT);
        d.restart();
        assert_eq!((d.imap_port, d.imaps_port), ports);
        // Closed by the time restart returns, not eventually.
        assert!(session.noop().is_err(), "session survived a restart");
        assert_eq!(d.message_count("INBOX"), 1);
        assert_eq!(d.wait_for_logins(logins + 1, WAIT), logins + 1);
    });
}

#[test]
fn dovecot_connections_counts_logged_in_sessions() {
    with_timeout(LIMIT, || {
        let d = Dovecot::start_default();
        // `start` only greets and logs out before login: nobody is counted.
        assert_eq!(d.connections(), 0);

        let first = d.session();
        let mut second = d.session();
        wait_until(WAIT, "dovecot to count 2 sessions", || {
            (d.connections() == 2).then_some(())
        });

        second.logout().unwrap();
        wait_until(WAIT, "dovecot to count 1 session", || {
            (d.connections() == 1).then_some(())
        });
        // A client that just goes away (no LOGOUT) stops being counted too.
        drop(first);
        wait_until(WAIT, "dovecot to count no session", || {
            (d.connections() == 0).then_some(())
        });
    });
}

#[test]
fn dovecot_stops_with_its_children() {
    with_timeout(LIMIT, || {
        let d = Dovecot::start_default();
        let master = d.pid();
        d.append("INBOX", &dovecot::message("x", "y@example.org"));
        // A logged-in client keeps its imap process alive past the master's exit unless
        // `stop` takes care of it (see Dovecot::stop).
        let mut session = d.session();
        session.select("INBOX").unwrap();
        let children = child_pids(master);
        assert!(children.len() >= 5, "dovecot master children: {children:?}");
        drop(d);
        assert!(session.noop().is_err(), "session survived dovecot's drop");
        wait_until(WAIT, "dovecot processes to exit", || {
            let alive: Vec<u32> = std::iter::once(master)
                .chain(children.iter().copied())
                .filter(|p| Path::new(&format!("/proc/{p}")).exists())
                .collect();
            alive.is_empty().then_some(())
        });
    });
}

/// PIDs whose parent is `pid`, from /proc.
fn child_pids(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // Fields after the ")" closing the command name: state, ppid, ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

#[test]
fn message_builder_is_rfc5322_with_crlf() {
    let m = String::from_utf8(dovecot::message("Hi there", "Bob <bob@example.org>")).unwrap();
    let (head, body) = m.split_once("\r\n\r\n").expect("header/body separator");
    for h in [
        "Date: ",
        "From: Bob <bob@example.org>",
        "To: alice@localhost",
        "Subject: Hi there",
    ] {
        assert!(head.contains(h), "missing {h:?} in {head}");
    }
    assert!(head.contains("Message-ID: <") && head.contains("@mailpushd.test>"));
    assert!(!m.replace("\r\n", "").contains('\n'), "bare LF in {m:?}");
    assert!(!body.is_empty());
    let other = String::from_utf8(dovecot::message("Hi there", "Bob <bob@example.org>")).unwrap();
    let mid = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("Message-ID"))
            .unwrap()
            .to_owned()
    };
    assert_ne!(mid(&m), mid(&other), "Message-IDs must be unique");

    assert_eq!(dovecot::rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    assert_eq!(
        dovecot::rfc5322_date(951_782_400),
        "Tue, 29 Feb 2000 00:00:00 +0000"
    );
    assert_eq!(
        dovecot::rfc5322_date(1_764_096_925),
        "Tue, 25 Nov 2025 18:55:25 +0000"
    );
}

#[test]
fn account_and_syslog_toml_parse() {
    with_timeout(LIMIT, || {
        let d = Dovecot::start_default();
        let s = SyslogRecorder::start();
        let text = format!(
            "{}\n{}\n{}",
            s.config_toml(),
            d.account_toml("work \"main\"", "implicit"),
            d.account_toml("plain", "starttls")
        );
        let parsed: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let accounts = parsed["accounts"].as_array().unwrap();
        assert_eq!(accounts[0]["name"].as_str(), Some("work \"main\""));
        assert_eq!(
            accounts[0]["port"].as_integer(),
            Some(i64::from(d.imaps_port))
        );
        assert_eq!(
            accounts[1]["port"].as_integer(),
            Some(i64::from(d.imap_port))
        );
        assert_eq!(accounts[1]["tls"].as_str(), Some("starttls"));
        assert_eq!(accounts[0]["host"].as_str(), Some("localhost"));
        assert_eq!(
            accounts[0]["ca_file"].as_str(),
            Some(d.ca_file.to_str().unwrap())
        );
        assert_eq!(accounts[0]["password"].as_str(), Some("correct horse"));
        assert_eq!(accounts[0]["mailboxes"].as_array().unwrap().len(), 1);
        let syslog = parsed["syslog"].as_table().unwrap();
        assert_eq!(syslog["address"].as_str(), Some(s.address().as_str()));
        assert!(s.address().starts_with("unix:/"));
        assert_eq!(syslog["facility"].as_str(), Some("mail"));

        let tricky = "back\\slash \"quote\" tab\t newline\n ctrl\u{1} ünï";
        let v: toml::Table =
            toml::from_str(&format!("x = {}", crate::support::toml_string(tricky))).unwrap();
        assert_eq!(v["x"].as_str(), Some(tricky));
    });
}

#[test]
fn notification_server_records_zbus_client_and_answers_dbus_send() {
    with_timeout(LIMIT, || {
        let bus = SessionBus::start();
        let server = NotificationServer::start(&bus);

        let id = crate::support::dbus::send_notify(&bus, "selftest", "New mail", "From Bob");
        assert_eq!(id, 1);
        let all = server.wait_for_count(1, WAIT);
        let n = &all[0];
        assert_eq!(
            (n.app_name.as_str(), n.summary.as_str(), n.body.as_str()),
            ("selftest", "New mail", "From Bob")
        );
        assert_eq!(n.app_icon, "mail-unread");
        assert_eq!(n.actions, ["default", "Open"]);
        assert_eq!(n.category.as_deref(), Some("email.arrived"));
        assert_eq!(n.urgency, Some(1));
        assert!(n.hints_debug.contains("category="), "{}", n.hints_debug);
        assert_eq!((n.id, n.replaces_id, n.expire_timeout), (1, 0, -1));

        // dbus-send, an independent client: server information and CloseNotification.
        let info = dbus_send(&bus, "GetServerInformation", &[]);
        assert!(
            info.contains("\"mailpushd-test\"") && info.contains("\"1.2\""),
            "{info}"
        );
        let caps = dbus_send(&bus, "GetCapabilities", &[]);
        for c in ["body", "body-markup", "actions", "persistence"] {
            assert!(caps.contains(&format!("\"{c}\"")), "{caps}");
        }
        dbus_send(&bus, "CloseNotification", &["uint32:7"]);
        wait_until(WAIT, "CloseNotification(7) to be recorded", || {
            (server.closed() == [7]).then_some(())
        });

        // replaces_id is echoed back, a new notification gets the next id.
        assert_eq!(crate::support::dbus::send_notify(&bus, "a", "b", "c"), 2);
        assert_eq!(server.wait_for_count(2, WAIT).len(), 2);
    });
}

#[test]
fn notification_server_can_be_frozen_and_restarted() {
    with_timeout(LIMIT, || {
        let bus = SessionBus::start();
        let mut server = NotificationServer::start(&bus);
        assert_eq!(
            crate::support::dbus::name_owner(&bus, crate::support::dbus::NOTIFICATIONS_NAME)
                .as_deref(),
            Some(server.unique_name())
        );
        assert_eq!(crate::support::dbus::send_notify(&bus, "a", "b", "c"), 1);

        // Frozen: a call is not answered within its timeout, and is answered once thawed.
        server.freeze();
        assert!(!dbus_send_ok(&bus, "GetCapabilities", 300));
        assert_eq!(server.call_count("GetCapabilities"), 0);
        server.thaw();
        wait_until(WAIT, "the frozen call answered after the thaw", || {
            (server.call_count("GetCapabilities") == 1).then_some(())
        });
        assert!(dbus_send_ok(&bus, "GetCapabilities", 10_000));
        assert_eq!(
            server.calls(),
            ["Notify", "GetCapabilities", "GetCapabilities"]
        );

        // Restarted: a new owner of the name, numbering from 1 again, nothing recorded.
        let old = server.unique_name().to_owned();
        server.restart(&bus);
        assert_ne!(server.unique_name(), old);
        assert_eq!(
            crate::support::dbus::name_owner(&bus, crate::support::dbus::NOTIFICATIONS_NAME)
                .as_deref(),
            Some(server.unique_name())
        );
        assert!(server.calls().is_empty());
        assert_eq!(crate::support::dbus::send_notify(&bus, "a", "b", "c"), 1);
        assert_eq!(server.wait_for_count(1, WAIT).len(), 1);
        // A process's bus connections: this one has the server's and the asking one (the
        // old server's is closed).
        assert_eq!(
            crate::support::dbus::connections_of(&bus, std::process::id()),
            2
        );
    });
}

/// Whether `dbus-send` to the notification server got a reply within `timeout_ms`.
fn dbus_send_ok(bus: &SessionBus, method: &str, timeout_ms: u32) -> bool {
    let mut cmd = Command::new("dbus-send");
    cmd.arg(format!("--bus={}", bus.address))
        .arg("--print-reply")
        .arg(format!("--reply-timeout={timeout_ms}"))
        .arg("--dest=org.freedesktop.Notifications")
        .arg("/org/freedesktop/Notifications")
        .arg(format!("org.freedesktop.Notifications.{method}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = spawn_tracked("dbus-send", &mut cmd).unwrap();
    child
        .wait_timeout(WAIT)
        .expect("dbus-send did not finish")
        .success()
}

/// `dbus-send --print-reply` to the notification server; returns its stdout.
fn dbus_send(bus: &SessionBus, method: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("dbus-send");
    cmd.arg(format!("--bus={}", bus.address))
        .args(["--print-reply", "--reply-timeout=10000"])
        .arg("--dest=org.freedesktop.Notifications")
        .arg("/org/freedesktop/Notifications")
        .arg(format!("org.freedesktop.Notifications.{method}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn_tracked("dbus-send", &mut cmd).unwrap();
    let status = child.wait_timeout(WAIT).expect("dbus-send did not finish");
    let (mut out, mut err) = (String::new(), String::new());
    child.take_stdio(|c| {
        use std::io::Read;
        c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    });
    assert!(status.success(), "dbus-send {method}: {status}: {err}");
    out
}

/// Env var that turns [`notify_rust_client_child`] from a no-op into the client half of
/// [`notification_server_accepts_notify_rust`].
const CHILD_ENV: &str = "MAILPUSHD_SELFTEST_NOTIFY_RUST_CHILD";

/// Runs only as a subprocess of `notification_server_accepts_notify_rust`: notify-rust reads
/// DBUS_SESSION_BUS_ADDRESS from the environment, which is process-wide, so setting it in a
/// test thread would race with other tests. In a normal run it returns immediately.
#[test]
fn notify_rust_client_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let handle = notify_rust::Notification::new()
        .appname("mailpushd-selftest")
        .summary("Subject line")
        .body("Body text")
        .icon("mail-unread")
        .hint(notify_rust::Hint::Category("email.arrived".into()))
        .urgency(notify_rust::Urgency::Critical)
        .action("default", "Open")
        .show()
        .expect("notify-rust show");
    println!("NOTIFICATION_ID={}", handle.id());
}

#[test]
fn notification_server_accepts_notify_rust() {
    with_timeout(LIMIT, || {
        let bus = SessionBus::start();
        let server = NotificationServer::start(&bus);
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            // Test names in the one test binary carry their module path.
            "support_selftest::notify_rust_client_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = spawn_tracked("selftest notify-rust child", &mut cmd).unwrap();
        let status = child
            .wait_timeout(WAIT)
            .expect("notify-rust child finished");
        assert!(status.success(), "notify-rust child: {status}");

        let all = server.wait_for_count(1, WAIT);
        let n = &all[0];
        assert_eq!(n.app_name, "mailpushd-selftest");
        assert_eq!(
            (n.summary.as_str(), n.body.as_str()),
            ("Subject line", "Body text")
        );
        assert_eq!(n.app_icon, "mail-unread");
        assert_eq!(n.category.as_deref(), Some("email.arrived"));
        assert_eq!(n.urgency, Some(2));
        assert_eq!(n.actions, ["default", "Open"]);
    });
}

#[test]
fn notification_server_emits_action_invoked() {
    with_timeout(LIMIT, || {
        let bus = SessionBus::start();
        let server = NotificationServer::start(&bus);
        let address = bus.address.clone();
        let (subscribed_tx, subscribed_rx) = mpsc::channel();
        // A zbus listener on its own thread, subscribed before the signal is emitted.
        let listener = std::thread::spawn(move || {
            zbus::block_on(async move {
                let conn = zbus::connection::Builder::address(address.as_str())
                    .build()
                    .await
                    .unwrap();
                let rule = zbus::MatchRule::builder()
                    .msg_type(zbus::message::Type::Signal)
                    .interface("org.freedesktop.Notifications")
                    .build()
                    .unwrap();
                let mut stream = zbus::MessageStream::for_match_rule(rule, &conn, None)
                    .await
                    .unwrap();
                subscribed_tx.send(()).unwrap();
                let mut got = Vec::new();
                while got.len() < 2 {
                    let msg = std::future::poll_fn(|cx| {
                        zbus::export::futures_core::Stream::poll_next(
                            std::pin::Pin::new(&mut stream),
                            cx,
                        )
                    })
                    .await
                    .expect("signal stream ended")
                    .unwrap();
                    let member = msg.header().member().unwrap().to_string();
                    let body = msg.body();
                    let text = if member == "ActionInvoked" {
                        let (id, key): (u32, String) = body.deserialize().unwrap();
                        format!("{member}({id},{key})")
                    } else {
                        let (id, reason): (u32, u32) = body.deserialize().unwrap();
                        format!("{member}({id},{reason})")
                    };
                    got.push(text);
                }
                got
            })
        });
        subscribed_rx
            .recv_timeout(WAIT)
            .expect("listener subscribed");
        server.emit_action_invoked(3, "default");
        server.emit_notification_closed(3, 2);
        let got = listener.join().unwrap();
        assert_eq!(got, ["ActionInvoked(3,default)", "NotificationClosed(3,2)"]);
    });
}

#[test]
fn syslog_recorder_receives_datagrams() {
    with_timeout(LIMIT, || {
        let s = SyslogRecorder::start();
        let client = UnixDatagram::unbound().unwrap();
        client
            .send_to(b"<22>Nov 25 18:00:00 mailpushd[1]: new mail", &s.path)
            .unwrap();
        client.send_to(b"<22>second \xff line", &s.path).unwrap();
        let lines = s.wait_for(WAIT, "two syslog datagrams", |l| l.len() >= 2);
        assert_eq!(lines[0], "<22>Nov 25 18:00:00 mailpushd[1]: new mail");
        assert_eq!(lines[1], "<22>second \u{FFFD} line");
        assert!(s.wait_for_line(WAIT, "new mail").starts_with("<22>"));
    });
}

#[test]
fn wait_until_returns_value_once_condition_holds() {
    let mut calls = 0;
    let v = wait_until(WAIT, "third call", || {
        calls += 1;
        (calls == 3).then_some(calls * 10)
    });
    assert_eq!(v, 30);
}

#[test]
#[should_panic(expected = "timed out after 50ms waiting for the impossible")]
fn wait_until_panics_with_message() {
    wait_until(Duration::from_millis(50), "the impossible", || None::<()>);
}

#[test]
#[should_panic(expected = "boom from the body")]
fn with_timeout_propagates_body_panic() {
    with_timeout(LIMIT, || panic!("boom from the body"));
}

#[test]
fn with_timeout_kills_children_of_the_timed_out_body() {
    let (pid_tx, pid_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (finished_tx, finished_rx) = mpsc::channel::<()>();
    let outcome = std::panic::catch_unwind(move || {
        with_timeout(Duration::from_secs(3), move || {
            let bus = SessionBus::start();
            pid_tx.send(bus.pid()).unwrap();
            // Stuck until the outer test lets go, long after the limit.
            let _ = release_rx.recv();
            // Dropping after the timeout's kill must be harmless (no double reap, no kill of
            // a reused PID) and still remove the temp dir.
            drop(bus);
            let _ = finished_tx.send(());
        });
    });
    let message = *outcome
        .expect_err("with_timeout must panic on timeout")
        .downcast::<String>()
        .unwrap();
    assert!(message.contains("test timed out after 3s"), "{message}");
    assert!(message.contains("dbus-daemon["), "{message}");
    let pid = pid_rx.recv().unwrap();
    // Reaped by with_timeout already, so /proc/<pid> is gone (not a zombie).
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "dbus-daemon {pid} survived the timeout"
    );
    drop(release_tx);
    // Let the detached body finish, so its temp dir is gone before the process exits.
    finished_rx
        .recv_timeout(WAIT)
        .expect("body thread finished after release");
}

#[test]
fn with_timeout_kills_whole_process_trees() {
    let (family_tx, family_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (finished_tx, finished_rx) = mpsc::channel::<()>();
    let outcome = std::panic::catch_unwind(move || {
        with_timeout(Duration::from_secs(5), move || {
            let d = Dovecot::start_default();
            // A logged-in session: its imap process is what outlives a plain master kill.
            let mut session = d.session();
            session.select("INBOX").unwrap();
            let mut family = crate::support::descendants(d.pid());
            family.push((d.pid(), crate::support::proc_stat(d.pid()).unwrap().1));
            family_tx.send(family).unwrap();
            let _ = release_rx.recv();
            drop(session);
            drop(d);
            let _ = finished_tx.send(());
        });
    });
    assert!(outcome.is_err(), "with_timeout must panic on timeout");
    let family = family_rx.recv().unwrap();
    let pids: Vec<u32> = family.iter().map(|&(p, _)| p).collect();
    let alive = crate::support::still_alive(&family);
    assert!(alive.is_empty(), "survivors {alive:?} of {pids:?}");
    drop(release_tx);
    finished_rx
        .recv_timeout(WAIT)
        .expect("body thread finished after release");
}

#[test]
fn session_bus_and_server_stop_on_drop() {
    with_timeout(LIMIT, || {
        let bus = SessionBus::start();
        let pid = bus.pid();
        let socket = bus.socket.clone();
        {
            let _server = NotificationServer::start(&bus);
        }
        // A second server can own the name after the first is dropped.
        let again = NotificationServer::start(&bus);
        crate::support::dbus::send_notify(&bus, "a", "b", "c");
        assert_eq!(again.wait_for_count(1, WAIT).len(), 1);
        // Dropping the bus first (as a struct with fields in that order would) must not
        // make the server's drop hang.
        drop(bus);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        assert!(!socket.exists());
        let t = std::time::Instant::now();
        drop(again);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    });
}

/// A tiny line server standing in for Dovecot in the proxy self-tests: greets with
/// "* OK ready", then echoes every line back. "SPLIT" is answered with one line written in
/// two parts 20 ms apart. Records how each connection ended.
struct LineServer {
    port: u16,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// "eof" or "error: <kind>" per finished connection.
    endings: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LineServer {
    fn start() -> LineServer {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let endings = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (connections, endings, stopping) =
                (connections.clone(), endings.clone(), stopping.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let endings = endings.clone();
                    std::thread::spawn(move || {
                        let ending = match serve_lines(stream) {
                            Ok(()) => "eof".to_owned(),
                            Err(e) => format!("error: {:?}", e.kind()),
                        };
                        crate::support::lock(&endings).push(ending);
                    });
                }
            })
        };
        LineServer {
            port,
            connections,
            endings,
            stopping,
            thread: Some(thread),
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn endings(&self) -> Vec<String> {
        crate::support::lock(&self.endings).clone()
    }
}

impl Drop for LineServer {
    fn drop(&mut self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn serve_lines(stream: std::net::TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    writer.write_all(b"* OK ready\r\n")?;
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line == b"SPLIT\r\n" {
            writer.write_all(b"* first half")?;
            std::thread::sleep(Duration::from_millis(20));
            writer.write_all(b" second half\r\n")?;
        } else {
            writer.write_all(&line)?;
        }
    }
}

/// A client connection with 10 s timeouts: (reader, writer) over one socket.
fn proxy_client(port: u16) -> (BufReader<std::net::TcpStream>, std::net::TcpStream) {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (BufReader::new(stream.try_clone().unwrap()), stream)
}

fn read_text_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read line");
    line
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

#[test]
fn proxy_forwards_both_ways_and_closes_cleanly() {
    use std::io::Read;
    with_timeout(LIMIT, || {
        let upstream = LineServer::start();
        let proxy = FaultProxy::start(upstream.port);
        assert_ne!(proxy.port, upstream.port);
        let (mut reader, mut writer) = proxy_client(proxy.port);
        assert_eq!(read_text_line(&mut reader), "* OK ready\r\n");
        writer.write_all(b"a1 NOOP\r\n").unwrap();
        assert_eq!(read_text_line(&mut reader), "a1 NOOP\r\n");
        assert_eq!((proxy.accepted(), proxy.open_connections()), (1, 1));
        assert_eq!(upstream.connections(), 1);

        // A megabyte of arbitrary bytes both ways, written while reading (no deadlock on
        // full buffers), then a half-close that must reach the server as EOF.
        let payload: Vec<u8> = (0..1_048_576u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let sender = {
            let payload = payload.clone();
            let mut writer = writer.try_clone().unwrap();
            std::thread::spawn(move || {
                writer.write_all(&payload).unwrap();
                writer.shutdown(std::net::Shutdown::Write).unwrap();
            })
        };
        let mut echoed = Vec::new();
        reader.read_to_end(&mut echoed).unwrap();
        sender.join().unwrap();
        assert!(echoed == payload, "echo differs ({} bytes)", echoed.len());
        wait_until(WAIT, "connection to close on both sides", || {
            (proxy.open_connections() == 0 && upstream.endings() == ["eof"]).then_some(())
        });
        assert_eq!(proxy.accepted(), 1);
    });
}

#[test]
fn proxy_reset_all_resets_both_sides() {
    with_timeout(LIMIT, || {
        let upstream = LineServer::start();
        let proxy = FaultProxy::start(upstream.port);
        let (mut reader, _writer) = proxy_client(proxy.port);
        assert_eq!(read_text_line(&mut reader), "* OK ready\r\n");
        assert_eq!(proxy.reset_all(), 1);
        assert_eq!(proxy.open_connections(), 0);
        let mut line = String::new();
        let err = reader
            .read_line(&mut line)
            .expect_err("read after reset_all must fail, not see EOF");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        wait_until(WAIT, "upstream to see the reset", || {
            (!upstream.endings().is_empty()).then_some(())
        });
        assert_eq!(upstream.endings(), ["error: ConnectionReset"]);
        // The proxy itself keeps working.
        let (mut reader, _writer) = proxy_client(proxy.port);
        assert_eq!(read_text_line(&mut reader), "* OK ready\r\n");
        assert_eq!(proxy.accepted(), 2);
    });
}

#[test]
fn proxy_freeze_holds_data_without_closing() {
    with_timeout(LIMIT, || {
        let upstream = LineServer::start();
        let proxy = FaultProxy::start(upstream.port);
        let (mut reader, mut writer) = proxy_client(proxy.port);
        assert_eq!(read_text_line(&mut reader), "* OK ready\r\n");
        proxy.freeze_all();
        writer.write_all(b"a1 NOOP\r\n").unwrap();
        writer
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut line = String::new();
        let err = reader
            .read_line(&mut line)
            .expect_err("no data through a frozen connection");
        assert!(is_timeout(&err), "{err}");
        assert!(line.is_empty(), "{line:?}");
        assert_eq!(proxy.open_connections(), 1);
        assert!(
            proxy.client_lines().is_empty(),
            "{:?}",
            proxy.client_lines()
        );
        assert!(upstream.endings().is_empty(), "{:?}", upstream.endings());

        // New connections are not frozen.
        let (mut reader2, mut writer2) = proxy_client(proxy.port);
        assert_eq!(read_text_line(&mut reader2), "* OK ready\r\n");
        writer2.write_all(b"b1 NOOP\r\n").unwrap();
        assert_eq!(read_text_line(&mut reader2), "b1 NOOP\r\n");

        // Thawing passes the held command on.
        proxy.thaw_all();
        writer.set_read_timeout(Some(WAIT)).unwrap();
        assert_eq!(read_text_line(&mut reader), "a1 NOOP\r\n");
        assert_eq!(proxy.client_lines_of(0), ["a1 NOOP"]);
    });
}

#[test]
fn proxy_freeze_new_holds_the_greeting() {
    with_timeout(LIMIT, || {
        let upstream = LineServer::start();
        let proxy = FaultProxy::start(upstream.port);
        proxy.set_freeze_new(true);
        let (mut reader, writer) = proxy_client(proxy.port);
        writer
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut line = String::new();
        let err = reader
            .read_line(&mut line)
            .expect_err("no greeting while frozen");
        assert!(is_timeout(&err), "{err}");
        // Connected upstream all the same.
        wait_until(WAIT, "upstream connection", || {
            (upstream.connections() == 1).then_some(())
        });
        assert_eq!(proxy.open_connections(), 1);
        proxy.set_freeze_new(false);
        proxy.thaw_all();
        writer.set_read_timeout(Some(WAIT)).unwrap();
        assert_eq!(read_text_line(&mut reader), "* OK ready\r\n");
        // A frozen connection can still be reset, waking its parked pumps.
        proxy.set_freeze_new(true);
        let (mut reader, _writer) = proxy_client(proxy.port);
        proxy.wait_for_accepted(2, WAIT);
        assert_eq!(proxy.reset_all(), 2);
        let err = reader.read_line(&mut line).expect_err("reset");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    });
}

#[test]
fn proxy_refuse_resets_new_connections() {
    with_timeout(LIMIT, || {
        let upstream = LineServer::start();
        let proxy = FaultProxy::start(upstream.port);
        proxy.set_refuse(true);
        let (mut reader, _writer) = proxy_client(proxy.port);
        let mut line = String::new();
        let err = reader
            .read_line(&mut line)
            .expect_err("refused connection must be reset");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!((proxy.accepted(), proxy.refused()), (1, 1));
        assert_eq!(proxy.open_connections(), 0);
        assert_eq!(upstream.connections(), 0, "refused connections go nowhere");

        proxy.set_refuse(false);
        let (mut reader, _writer) = proxy_client(proxy.port);
        assert_eq!(read_text_line(&mut reader), "* OK ready\r\n");
        assert_eq!((proxy.accepted(), proxy.refused()), (2, 1));
    });
}

#[test]
fn proxy_resets_clients_when_upstream_is_down() {
    with_timeout(LIMIT, || {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let proxy = FaultProxy::start(port);
        let (mut reader, _writer) = proxy_client(proxy.port);
        let mut line = String::new();
        let err = reader.read_line(&mut line).expect_err("reset");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!((proxy.accepted(), proxy.refused()), (1, 0));
    });
}

#[test]
fn proxy_inject_delivers_between_whole_lines() {
    use std::io::Read;
    with_timeout(LIMIT, || {
        let upstream = LineServer::start();
        let proxy = FaultProxy::start(upstream.port);
        let (mut reader, mut writer) = proxy_client(proxy.port);
        assert_eq!(read_text_line(&mut reader), "* OK ready\r\n");
        assert_eq!(proxy.inject_to_client(b"* BYE going down\r\n"), 1);
        assert_eq!(read_text_line(&mut reader), "* BYE going down\r\n");

        // Injecting while the server is halfway through a line waits for its end.
        writer.write_all(b"SPLIT\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        let stream = reader.get_mut();
        while !String::from_utf8_lossy(&got).contains("first half") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "EOF after {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(proxy.inject_to_client(b"* NO [ALERT] maintenance\r\n"), 1);
        let want = "* first half second half\r\n* NO [ALERT] maintenance\r\n";
        while got.len() < want.len() {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "EOF after {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(String::from_utf8_lossy(&got), want);
        // Injected lines are not server lines.
        assert_eq!(
            proxy.server_lines(),
            ["* OK ready", "* first half second half"]
        );
    });
}

#[test]
fn proxy_delay_slows_server_to_client() {
    with_timeout(LIMIT, || {
        let upstream = LineServer::start();
        let proxy = FaultProxy::start(upstream.port);
        let delay = Duration::from_millis(300);
        proxy.set_delay(delay);
        let started = std::time::Instant::now();
        let (mut reader, mut writer) = proxy_client(proxy.port);
        assert_eq!(read_text_line(&mut reader), "* OK ready\r\n");
        assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
        let started = std::time::Instant::now();
        writer.write_all(b"a1 NOOP\r\n").unwrap();
        assert_eq!(read_text_line(&mut reader), "a1 NOOP\r\n");
        assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
        // Client→server is not delayed: the server already has the command.
        proxy.set_delay(Duration::ZERO);
        writer.write_all(b"a2 NOOP\r\n").unwrap();
        assert_eq!(read_text_line(&mut reader), "a2 NOOP\r\n");
    });
}

#[test]
fn proxy_records_client_and_server_lines() {
    with_timeout(LIMIT, || {
        let upstream = LineServer::start();
        let proxy = FaultProxy::start(upstream.port);
        let (mut reader, mut writer) = proxy_client(proxy.port);
        read_text_line(&mut reader);
        for command in ["a1 LOGIN alice secret\r\n", "a2 IDLE\r\n", "DONE\r\n"] {
            writer.write_all(command.as_bytes()).unwrap();
            assert_eq!(read_text_line(&mut reader), command);
        }
        let (mut reader2, mut writer2) = proxy_client(proxy.port);
        read_text_line(&mut reader2);
        writer2.write_all(b"b1 NOOP\r\n").unwrap();
        read_text_line(&mut reader2);
        // A last line without "\n" is recorded at EOF.
        writer2.write_all(b"b2 tail").unwrap();
        writer2.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(proxy.wait_for_client_line(WAIT, "tail"), "b2 tail");

        assert_eq!(
            proxy.client_lines(),
            [
                "a1 LOGIN alice secret",
                "a2 IDLE",
                "DONE",
                "b1 NOOP",
                "b2 tail"
            ]
        );
        assert_eq!(proxy.client_lines_of(1), ["b1 NOOP", "b2 tail"]);
        let logins = proxy
            .client_lines()
            .iter()
            .filter(|l| l.split_whitespace().nth(1) == Some("LOGIN"))
            .count();
        assert_eq!(logins, 1);
        assert_eq!(
            proxy.server_lines_of(0),
            ["* OK ready", "a1 LOGIN alice secret", "a2 IDLE", "DONE"]
        );
        assert_eq!(proxy.wait_for_server_line(WAIT, "b2"), "b2 tail");
    });
}

/// Names of this process's threads (as the kernel has them: at most 15 bytes).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

#[test]
fn proxy_drop_closes_listener_connections_and_threads() {
    with_timeout(LIMIT, || {
        let upstream = LineServer::start();
        let proxy = FaultProxy::start(upstream.port);
        let port = proxy.port;
        let (mut reader, _writer) = proxy_client(port);
        read_text_line(&mut reader);
        // A frozen connection too: its pumps are parked, not blocked in a read.
        proxy.set_freeze_new(true);
        let (mut frozen, _frozen_writer) = proxy_client(port);
        proxy.wait_for_accepted(2, WAIT);
        let prefix = format!("proxy-{port}-");
        let proxy_threads = || -> Vec<String> {
            thread_names()
                .into_iter()
                .filter(|n| n.starts_with(&prefix))
                .collect()
        };
        // The accept thread and two pumps per connection.
        wait_until(WAIT, "5 proxy threads", || {
            (proxy_threads().len() == 5).then_some(())
        });

        let started = std::time::Instant::now();
        drop(proxy);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let refused = std::net::TcpStream::connect(("127.0.0.1", port));
        assert!(refused.is_err(), "proxy port still listening");
        let mut line = String::new();
        for r in [&mut reader, &mut frozen] {
            let err = r.read_line(&mut line).expect_err("reset by drop");
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        }
        wait_until(WAIT, "proxy threads to exit", || {
            proxy_threads().is_empty().then_some(())
        });
    });
}

#[test]
fn proxy_in_front_of_dovecot_plain() {
    with_timeout(LIMIT, || {
        let d = Dovecot::start_default();
        let proxy = FaultProxy::start(d.imap_port);
        let (mut reader, mut writer) = proxy_client(proxy.port);
        let greeting = read_text_line(&mut reader);
        assert!(greeting.starts_with("* OK"), "{greeting}");
        writer.write_all(b"a1 CAPABILITY\r\n").unwrap();
        let lines = read_until_tagged(&mut reader, "a1");
        assert!(lines.last().unwrap().starts_with("a1 OK"), "{lines:?}");
        assert!(lines[0].starts_with("* CAPABILITY "), "{lines:?}");
        assert_eq!(proxy.client_lines(), ["a1 CAPABILITY"]);
        assert!(proxy.server_lines()[0].starts_with("* OK"));
        // Injected BYE reaches the client as a whole line.
        proxy.inject_to_client(b"* BYE going down\r\n");
        assert_eq!(read_text_line(&mut reader), "* BYE going down\r\n");
    });
}

#[test]
fn proxy_passes_tls_through_and_faults_it() {
    with_timeout(LIMIT, || {
        let d = Dovecot::start_default();
        let proxy = FaultProxy::start(d.imaps_port);
        let tls = dovecot::connect_tls(proxy.port, "localhost", &d.ca_file).unwrap();
        let mut reader = BufReader::new(tls);
        let greeting = read_text_line(&mut reader);
        assert!(greeting.starts_with("* OK"), "{greeting}");
        reader
            .get_mut()
            .write_all(b"a LOGIN alice \"correct horse\"\r\n")
            .unwrap();
        let lines = read_until_tagged(&mut reader, "a");
        assert!(lines.last().unwrap().starts_with("a OK"), "{lines:?}");

        // Frozen: the command goes nowhere and nothing comes back.
        proxy.freeze_all();
        reader.get_mut().write_all(b"b NOOP\r\n").unwrap();
        let tcp = reader.get_ref().get_ref();
        tcp.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut line = String::new();
        let err = reader.read_line(&mut line).expect_err("frozen");
        assert!(is_timeout(&err), "{err}");
        proxy.thaw_all();
        reader
            .get_ref()
            .get_ref()
            .set_read_timeout(Some(WAIT))
            .unwrap();
        let lines = read_until_tagged(&mut reader, "b");
        assert!(lines.last().unwrap().starts_with("b OK"), "{lines:?}");

        // Delayed, then reset.
        proxy.set_delay(Duration::from_millis(200));
        let started = std::time::Instant::now();
        reader.get_mut().write_all(b"c NOOP\r\n").unwrap();
        read_until_tagged(&mut reader, "c");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(proxy.reset_all(), 1);
        assert!(reader.read_line(&mut line).is_err(), "read after reset");
    });
}
