//! Issue 15: live unread counts on the daemon's D-Bus interface, `mailpushd status` and
//! its waybar follow mode, against the real Dovecot and the private session bus.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::dbus::{call_no_args, SessionBus};
use crate::support::dovecot::{message, DovecotOptions};
use crate::support::rig::{Rig, WAIT};
use crate::support::{run_command, spawn_tracked, with_timeout};

const LIMIT: Duration = Duration::from_secs(120);

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_mailpushd")
}

/// `mailpushd <args>` against `bus`: (exit code, stdout, stderr).
fn mailpushd(bus: &SessionBus, args: &[&str]) -> (Option<i32>, String, String) {
    let out = run_command(
        "mailpushd status",
        Command::new(binary())
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address),
        Duration::from_secs(20),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mailpushd status --json`, parsed.
fn status(bus: &SessionBus) -> Vec<Value> {
    let (code, out, err) = mailpushd(bus, &["status", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    serde_json::from_str::<Value>(&out)
        .unwrap_or_else(|e| panic!("{e}: {out}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// (unread, new) of `mailbox` in the account "main", as `mailpushd status --json` says.
fn counts(bus: &SessionBus, mailbox: &str) -> Option<(Option<u64>, u64)> {
    status(bus)
        .iter()
        .find(|m| m["account"] == "main" && m["mailbox"] == mailbox)
        .map(|m| (m["unread"].as_u64(), m["new"].as_u64().unwrap_or(0)))
}

/// Waits until `mailbox` shows `unread` unread and `new` new.
fn wait_counts(bus: &SessionBus, mailbox: &str, unread: u64, new: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = counts(bus, mailbox);
        if now == Some((Some(unread), new)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{mailbox}: want {unread} unread, {new} new; have {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sets `\Seen` on the first message of `mailbox` ("read on a phone"), or expunges it.
fn elsewhere(rig: &Rig, mailbox: &str, what: &str) {
    let mut s = rig.dovecot.session();
    s.select(mailbox).expect("SELECT");
    match what {
        "read" => {
            s.store("1", "+FLAGS (\\Seen)").expect("STORE");
        }
        "unread" => {
            s.store("1", "-FLAGS (\\Seen)").expect("STORE");
        }
        "delete" => {
            s.store("1", "+FLAGS (\\Deleted)").expect("STORE");
            s.expunge().expect("EXPUNGE");
        }
        other => panic!("{other}"),
    }
    let _ = s.logout();
}

/// INBOX on a connection of its own (counts from SEARCH UNSEEN, then EXISTS, FETCH FLAGS
/// and EXPUNGE) and Lists on the shared NOTIFY connection (counts by STATUS UNSEEN): new
/// mail, mail read and deleted by another client, mail marked unread again, and a
/// reconnect, each reflected exactly.
#[test]
fn counts_follow_new_mail_and_what_other_clients_do() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        rig.dovecot.create_mailbox("Lists");
        for mb in ["INBOX", "Lists"] {
            rig.dovecot
                .append(mb, &message("old unread 1", "a@example.com"));
            rig.dovecot
                .append(mb, &message("old unread 2", "a@example.com"));
            rig.dovecot
                .append_with_flags(mb, &message("old read", "a@example.com"), &["\\Seen"]);
        }
        let account = rig.dovecot.account_toml("main", "implicit").replace(
            "mailboxes = [\"INBOX\"]",
            "mailboxes = [\"INBOX\", \"Lists\"]",
        );
        let daemon = rig.daemon(&account, &["main/INBOX", "main/Lists"]);

        for mb in ["INBOX", "Lists"] {
            wait_counts(&rig.bus, mb, 2, 0);
            rig.dovecot.deliver(mb, &message("fresh", "b@example.com"));
            wait_counts(&rig.bus, mb, 3, 1);
            // Read on a phone: the first message (old unread 1).
            elsewhere(&rig, mb, "read");
            wait_counts(&rig.bus, mb, 2, 1);
            elsewhere(&rig, mb, "unread");
            wait_counts(&rig.bus, mb, 3, 1);
            // Deleted elsewhere: an unread one goes.
            elsewhere(&rig, mb, "delete");
            wait_counts(&rig.bus, mb, 2, 1);
        }

        // The user looked: "new" goes, unread stays.
        let (code, out, err) = mailpushd(&rig.bus, &["mark-seen", "main", "INBOX"]);
        assert_eq!(code, Some(0), "{out}{err}");
        wait_counts(&rig.bus, "INBOX", 2, 0);
        assert_eq!(counts(&rig.bus, "Lists"), Some((Some(2), 1)));

        // Every connection dropped; mail and a read while reconnecting.
        rig.dovecot.kick();
        rig.dovecot
            .deliver("INBOX", &message("during the reconnect", "c@example.com"));
        elsewhere(&rig, "Lists", "read");
        wait_counts(&rig.bus, "INBOX", 3, 1);
        wait_counts(&rig.bus, "Lists", 1, 1);
        drop(daemon);
    });
}

/// `mailpushd status --waybar --follow` prints a new line when mail arrives, driven by the
/// daemon's signal; the latency is printed for the record (measured in scripts/measure,
/// never asserted here).
#[test]
fn waybar_follow_prints_a_line_on_new_mail() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = rig.dovecot.account_toml("main", "implicit");
        let _daemon = rig.daemon(&account, &["main/INBOX"]);
        wait_counts(&rig.bus, "INBOX", 0, 0);

        let mut cmd = Command::new(binary());
        cmd.args(["status", "--waybar", "--follow"])
            .env("DBUS_SESSION_BUS_ADDRESS", &rig.bus.address)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let child = spawn_tracked("status --follow", &mut cmd).expect("spawn");
        let stdout = child.take_stdio(|c| c.stdout.take()).expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let next = |what: &str| -> (Instant, Value) {
            let (at, line) = rx
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("no waybar line for {what}"));
            (
                at,
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")),
            )
        };
        let (_, first) = next("the start");
        assert_eq!(first["text"], "0");
        assert_eq!(first["alt"], "read");

        let delivered = Instant::now();
        rig.dovecot
            .deliver("INBOX", &message("for the bar", "b@example.com"));
        let (at, line) = loop {
            let (at, v) = next("the new mail");
            if v["text"] == "1" {
                break (at, v);
            }
        };
        eprintln!("waybar line {:?} after delivery", at - delivered);
        assert_eq!(line["alt"], "new");
        assert_eq!(line["class"], serde_json::json!(["new"]));
        assert_eq!(line["tooltip"], "main/INBOX: 1 unread, 1 new");

        // Marked seen by the user: a line with the "unread" class, no timer involved.
        mailpushd(&rig.bus, &["mark-seen"]);
        loop {
            let (_, v) = next("mark-seen");
            if v["alt"] == "unread" {
                assert_eq!(v["text"], "1");
                break;
            }
        }
        child.kill();
    });
}

/// The interface is introspectable, with what the README documents.
#[test]
fn the_interface_introspects() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = rig.dovecot.account_toml("main", "implicit");
        let daemon = rig.daemon(&account, &["main/INBOX"]);
        let xml: String = call_no_args(
            &rig.bus,
            "org.mailpushd.Mailpushd",
            "/org/mailpushd/Mailpushd",
            "org.freedesktop.DBus.Introspectable",
            "Introspect",
        )
        .expect("Introspect");
        for want in [
            r#"<interface name="org.mailpushd.Mailpushd1">"#,
            r#"<property name="Mailboxes" type="aa{sv}" access="read"/>"#,
            r#"<property name="Unread" type="u" access="read"/>"#,
            r#"<method name="MarkSeenByUser">"#,
            r#"<arg name="matched" type="u" direction="out"/>"#,
            r#"<method name="Reload">"#,
            r#"<signal name="Changed">"#,
            r#"<arg name="mailboxes" type="aa{sv}"/>"#,
        ] {
            assert!(xml.contains(want), "{want} not in\n{xml}");
        }

        // Reload through the interface, as SIGHUP.
        let (code, _, err) = mailpushd(&rig.bus, &["status"]);
        assert_eq!(code, Some(0), "{err}");
        // A reader that stops early (`| head -1`, here `| true`, which reads nothing) is
        // no error and no panic.
        let out = run_command(
            "mailpushd status | true",
            Command::new("bash")
                .args(["-c", "set -o pipefail; \"$0\" status | true", binary()])
                .env("DBUS_SESSION_BUS_ADDRESS", &rig.bus.address),
            Duration::from_secs(20),
        );
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let () = call_no_args(
            &rig.bus,
            "org.mailpushd.Mailpushd",
            "/org/mailpushd/Mailpushd",
            "org.mailpushd.Mailpushd1",
            "Reload",
        )
        .expect("Reload");
        daemon.wait_for_output(WAIT, "configuration reloaded");
    });
}

/// No daemon: one clear line on stderr and exit 1, whether or not there is a session bus
/// at all.
#[test]
fn status_without_a_daemon_says_so_in_one_line() {
    with_timeout(LIMIT, || {
        let bus = SessionBus::start();
        for args in [
            &["status"][..],
            &["status", "--json"],
            &["status", "--waybar", "--follow"],
            &["mark-seen"],
        ] {
            let (code, out, err) = mailpushd(&bus, args);
            assert_eq!(code, Some(1), "{args:?}: {out}{err}");
            assert_eq!(out, "", "{args:?}");
            assert_eq!(
                err,
                "mailpushd: mailpushd is not running (nothing owns org.mailpushd.Mailpushd on the session bus)\n",
                "{args:?}"
            );
        }
        let out = run_command(
            "mailpushd status",
            Command::new(binary())
                .arg("status")
                .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus"),
            Duration::from_secs(20),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.starts_with("mailpushd: cannot reach the session bus"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    });
}

/// Clicking a popup is looking at that mailbox: its "new" count goes, its unread stays.
#[test]
fn clicking_a_popup_counts_as_looking() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = rig.dovecot.account_toml("main", "implicit");
        let _daemon = rig.daemon(&account, &["main/INBOX"]);
        rig.dovecot
            .deliver("INBOX", &message("click me", "b@example.com"));
        let note = rig.notifications.wait_for_count(1, WAIT).remove(0);
        wait_counts(&rig.bus, "INBOX", 1, 1);
        rig.notifications.emit_action_invoked(note.id, "default");
        wait_counts(&rig.bus, "INBOX", 1, 0);
    });
}
