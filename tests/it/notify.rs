//! IMAP NOTIFY (RFC 5465) against the real Dovecot (issue 14, part 1): at the session
//! level (one connection, INBOX selected, hears of new mail in another mailbox as
//! `* STATUS`, during IDLE and between commands), and the daemon's shared connection that
//! watches every mailbox but INBOX with it.

use std::path::Path;
use std::time::{Duration, Instant};

use mailpushd::imap::{self, Wake};

use crate::support::dovecot::{message, DovecotOptions};
use crate::support::rig::{subjects, Rig, WAIT};
use crate::support::{wait_until, with_timeout};

const LIMIT: Duration = Duration::from_secs(90);

#[test]
fn one_connection_hears_of_new_mail_in_another_mailbox() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        rig.dovecot.create_mailbox("Lists");
        let text = rig.config(&rig.dovecot.account_toml("main", "implicit"));
        let config = mailpushd::config::parse(&text, Path::new("/")).expect("config");
        let account = &config.accounts[0];
        let mut conn = imap::connect(account, &rig.dovecot.password, Default::default(), |_| {})
            .expect("connect");
        assert!(conn.capabilities.notify, "Dovecot offers NOTIFY");
        conn.examine("INBOX", "INBOX").expect("EXAMINE");
        conn.notify_set(&["Lists"]).expect("NOTIFY SET");

        rig.dovecot
            .deliver("Lists", &message("to the list", "a@example.com"));
        // However the server's report and our IDLE interleave (before IDLE it waits among
        // the unsolicited responses, which a NOOP reads), it arrives within the deadline.
        let deadline = Instant::now() + Duration::from_secs(20);
        let statuses = loop {
            conn.noop().expect("NOOP");
            let statuses = conn.take_statuses();
            if !statuses.is_empty() {
                break statuses;
            }
            assert!(Instant::now() < deadline, "no STATUS for Lists");
            match conn.idle(Duration::from_secs(2), false).expect("IDLE") {
                Wake::Changed { .. } | Wake::Refresh | Wake::Silence => {}
                other => panic!("IDLE ended by {other:?}"),
            }
            let statuses = conn.take_statuses();
            if !statuses.is_empty() {
                break statuses;
            }
        };
        // Lists' UIDNEXT after its first message, and nothing said about INBOX.
        assert_eq!(
            statuses.into_iter().collect::<Vec<_>>(),
            vec![("Lists".to_owned(), Some(2))]
        );
        assert!(!conn.take_changed(), "INBOX did not change");

        // New mail in the selected INBOX still ends IDLE the usual way, with no STATUS.
        rig.dovecot
            .deliver("INBOX", &message("to the inbox", "a@example.com"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if conn.take_changed() {
                break;
            }
            if let Wake::Changed { .. } = conn.idle(Duration::from_secs(2), false).expect("IDLE") {
                break;
            }
            assert!(Instant::now() < deadline, "INBOX's new mail not reported");
            conn.noop().expect("NOOP");
        }
        assert!(conn.take_statuses().is_empty());
        conn.logout();
    });
}

/// The twelve mailboxes of the test: INBOX and F01..F11.
fn twelve() -> Vec<String> {
    std::iter::once("INBOX".to_owned())
        .chain((1..=11).map(|i| format!("F{i:02}")))
        .collect()
}

/// An account watching `mailboxes`, with `extra` lines.
fn account_watching(rig: &Rig, mailboxes: &[String], extra: &str) -> String {
    let list: Vec<String> = mailboxes.iter().map(|m| format!("{m:?}")).collect();
    let account = rig.dovecot.account_toml("main", "implicit").replace(
        "mailboxes = [\"INBOX\"]",
        &format!("mailboxes = [{}]", list.join(", ")),
    );
    format!("{account}{extra}\n")
}

/// Issue 14's first test: twelve mailboxes on one account hold two connections (INBOX's
/// own, and the shared one that hears of the other eleven through NOTIFY), and mail in
/// each of them is announced. What 100 mailboxes cost, and how fast, is
/// measured by `bench/run mailboxes` (docs/PERFORMANCE.md).
#[test]
fn twelve_mailboxes_take_two_connections_and_each_is_announced() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let mailboxes = twelve();
        for m in &mailboxes[1..] {
            rig.dovecot.create_mailbox(m);
        }
        let keys: Vec<String> = mailboxes.iter().map(|m| format!("main/{m}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let daemon = rig.daemon(&account_watching(&rig, &mailboxes, ""), &keys);
        daemon.wait_for_output(
            WAIT,
            "main: INBOX on a connection of its own (IDLE); 11 mailboxes over one shared \
             connection (new mail reported by NOTIFY)",
        );
        assert_eq!(
            daemon.count_output("(shared connection, new mail reported by NOTIFY)"),
            11,
            "{}",
            daemon.output()
        );
        wait_until(WAIT, "two IMAP sessions", || {
            (rig.dovecot.connections() == 2).then_some(())
        });

        for (i, m) in mailboxes.iter().enumerate() {
            rig.dovecot
                .deliver(m, &message(&format!("to {m}"), "a@example.com"));
            let lines = rig.wait_new_mail(i + 1);
            assert!(
                lines[i].contains(&format!("subject=\"to {m}\"")),
                "{lines:?}"
            );
        }
        // Each once, from its own mailbox, and still two connections.
        let lines = rig.new_mail_lines();
        assert_eq!(lines.len(), 12, "{lines:?}");
        for m in &mailboxes {
            assert_eq!(
                lines
                    .iter()
                    .filter(|l| l.contains(&format!("subject=\"to {m}\"")))
                    .count(),
                1,
                "{lines:?}"
            );
        }
        assert_eq!(rig.dovecot.connections(), 2);
        // No warning about the account (the config file's mode is the rig's business).
        let output = daemon.output();
        assert!(!output.contains("WARN  main"), "{output}");
    });
}

/// Restart and reconnect stay exactly-once for mailboxes on the shared connection: mail
/// that came while the daemon was stopped is announced once at the next start, and mail
/// that comes while the connections are down once after the reconnect.
#[test]
fn restart_and_reconnect_announce_shared_mailboxes_exactly_once() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let mailboxes = vec!["INBOX".to_owned(), "Lists".to_owned(), "Work".to_owned()];
        rig.dovecot.create_mailbox("Lists");
        rig.dovecot.create_mailbox("Work");
        let account = account_watching(&rig, &mailboxes, "reconnect_max_secs = 1");
        let watching = ["main/INBOX", "main/Lists", "main/Work"];
        let mut daemon = rig.daemon(&account, &watching);
        rig.dovecot
            .deliver("Lists", &message("first", "a@example.com"));
        assert_eq!(subjects(&rig.wait_new_mail(1)), ["first"]);
        daemon.terminate();

        // While stopped.
        rig.dovecot
            .deliver("Lists", &message("while stopped", "a@example.com"));
        rig.dovecot
            .deliver("Work", &message("also while stopped", "a@example.com"));
        let daemon = rig.daemon(&account, &watching);
        let lines = rig.wait_new_mail(3);
        let mut got = subjects(&lines);
        got.sort();
        assert_eq!(got, ["also while stopped", "first", "while stopped"]);

        // Every connection dropped; mail comes before the shared connection is back.
        rig.dovecot.kick();
        rig.dovecot
            .deliver("Work", &message("while reconnecting", "a@example.com"));
        daemon.wait_for_output_count(WAIT, "watching main/Work ", 2);
        let lines = rig.wait_new_mail(4);
        assert_eq!(subjects(&lines)[3], "while reconnecting");
        // And nothing twice, also after a while: one more message proves the shared
        // connection caught up and carried on.
        rig.dovecot
            .deliver("Lists", &message("after", "a@example.com"));
        let lines = rig.wait_new_mail(5);
        assert_eq!(subjects(&lines).len(), 5, "{lines:?}");
        assert_eq!(subjects(&lines)[4], "after");
        assert!(daemon.try_wait().is_none());
    });
}

/// Issue 14 asks which is cheaper for fetching a shared mailbox's new mail: EXAMINE it on
/// the shared connection and leave it again (what the daemon does: EXAMINE, UID FETCH,
/// UNSELECT, STATUS), or a short-lived second connection (connect, TLS, LOGIN, EXAMINE,
/// UID FETCH, LOGOUT). Prints the median of `MEASURE_LOOKS` (default 200) of each, on
/// loopback against Dovecot; run by scripts/measure.
#[test]
#[ignore = "measurement: run scripts/measure"]
fn measure_look_on_the_shared_connection_against_a_second_connection() {
    with_timeout(Duration::from_secs(600), || {
        let n: usize = std::env::var("MEASURE_LOOKS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        let rig = Rig::start(DovecotOptions::default());
        rig.dovecot.create_mailbox("Lists");
        rig.dovecot
            .deliver("Lists", &message("one", "a@example.com"));
        let text = rig.config(&rig.dovecot.account_toml("main", "implicit"));
        let config = mailpushd::config::parse(&text, Path::new("/")).expect("config");
        let account = &config.accounts[0];
        let median = |mut v: Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let mut shared = imap::connect(account, &rig.dovecot.password, Default::default(), |_| {})
            .expect("connect");
        let mut on_shared = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            shared.examine("Lists", "Lists").expect("EXAMINE");
            shared.fetch_flags("1:*").expect("FETCH");
            shared.unselect().expect("UNSELECT");
            shared.status("Lists", "Lists").expect("STATUS");
            on_shared.push(t.elapsed());
        }
        shared.logout();
        let mut on_second = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let mut c = imap::connect(account, &rig.dovecot.password, Default::default(), |_| {})
                .expect("connect");
            c.examine("Lists", "Lists").expect("EXAMINE");
            c.fetch_flags("1:*").expect("FETCH");
            c.logout();
            on_second.push(t.elapsed());
        }
        let a = median(on_shared);
        let b = median(on_second);
        println!(
            "look: on the shared connection {:.2} ms, on a second connection {:.2} ms (median of {n}, loopback, implicit TLS)",
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3
        );
    });
}

/// Review 14: NOTIFY reports that come in a burst (new mail in INBOX, Lists and Work at
/// once) are all kept. The `imap` crate hands the IDLE caller only the first response and
/// drops what comes with the answer to DONE; the tolerant layer under it keeps every
/// `* STATUS` it sees during IDLE (src/imap/tolerant.rs, `keep_report`).
#[test]
fn a_burst_of_notify_reports_in_one_idle_is_kept_whole() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        rig.dovecot.create_mailbox("Lists");
        rig.dovecot.create_mailbox("Work");
        let text = rig.config(&rig.dovecot.account_toml("main", "implicit"));
        let config = mailpushd::config::parse(&text, Path::new("/")).expect("config");
        let account = &config.accounts[0];
        let mut conn = imap::connect(account, &rig.dovecot.password, Default::default(), |_| {})
            .expect("connect");
        conn.notify_mailboxes(
            &["INBOX", "Lists", "Work"],
            mailpushd::imap::session::SharedEvents::Counts,
        )
        .expect("NOTIFY");
        for m in ["INBOX", "Lists", "Work"] {
            rig.dovecot.deliver(m, &message("x", "a@example.com"));
        }
        let mut got = std::collections::BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < 3 && Instant::now() < deadline {
            conn.idle(Duration::from_secs(2), false).expect("IDLE");
            got.extend(conn.take_statuses());
        }
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec![
                ("INBOX".to_owned(), Some(2)),
                ("Lists".to_owned(), Some(2)),
                ("Work".to_owned(), Some(2))
            ]
        );
        conn.logout();
    });
}
