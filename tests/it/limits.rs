//! The server's per-user connection limit (issue 14, parts 2 and 3): a refusal for the
//! limit is told from a wrong password, said once per account in words, not retried sooner
//! than the backoff cap, and lowers the account's connection budget so that every mailbox
//! is still watched. Against the real Dovecot with `mail_max_userip_connections` lowered
//! and NOTIFY hidden.

use std::time::Duration;

use crate::support::dovecot::{message, DovecotOptions};
use crate::support::rig::{subjects, Rig, WAIT};
use crate::support::{wait_until, with_timeout};

const LIMIT: Duration = Duration::from_secs(90);

#[test]
fn a_full_connection_limit_is_said_once_and_not_mistaken_for_a_wrong_password() {
    with_timeout(LIMIT, || {
        // Without NOTIFY every mailbox the budget allows gets a connection of its own.
        let rig = Rig::start(DovecotOptions {
            mail_max_userip_connections: 2,
            notify: false,
            ..DovecotOptions::default()
        });
        for name in ["A", "B", "C"] {
            rig.dovecot.create_mailbox(name);
        }
        let account = rig.dovecot.account_toml("main", "implicit");
        let two = account.replace("mailboxes = [\"INBOX\"]", "mailboxes = [\"INBOX\", \"A\"]");
        let daemon = rig.daemon(&two, &["main/INBOX", "main/A"]);
        // Two more mailboxes: within the default budget (5), so they get connections of
        // their own, which the server refuses. (Dovecot counts a session once it is logged
        // in, so logins at the same instant can all pass: the reload makes the order
        // certain.)
        let four = account.replace(
            "mailboxes = [\"INBOX\"]",
            "mailboxes = [\"INBOX\", \"A\", \"B\", \"C\"]",
        );
        let path = daemon.config_path();
        let next = path.with_extension("new");
        std::fs::write(&next, rig.config(&four)).unwrap();
        std::fs::rename(&next, &path).unwrap();
        let refused =
            daemon.wait_for_output(WAIT, "main: the server refused a connection for main/");
        assert!(refused.contains("WARN"), "{refused}");
        // The server's words, and the cap the refused watcher's retry waits for
        // (reconnect_max_secs, 300 s by default), not the backoff's first second.
        assert!(
            refused.contains("Maximum number of connections"),
            "{refused}"
        );
        assert!(refused.contains("retrying in 300.0s"), "{refused}");
        // The budget drops to what the server allows, and the mailboxes that do not fit
        // move to one shared connection: said once, in words, also to syslog.
        let moved = "main: the server allows only 2 connections for this account; INBOX on a \
                     connection of its own (IDLE); 3 mailboxes over one shared connection \
                     (checked every 120s)";
        let line = daemon.wait_for_output(WAIT, moved);
        assert!(line.contains("WARN"), "{line}");
        rig.wait_syslog(moved);
        for m in ["A", "B", "C"] {
            daemon.wait_for_output(
                WAIT,
                &format!("watching main/{m} (shared connection, checked by STATUS every 120s)"),
            );
        }

        // Said once per account, and never as a failed login: no error, no popup.
        let output = daemon.output();
        assert_eq!(output.matches(moved).count(), 1, "{output}");
        assert_eq!(
            output.matches("the server refused a connection").count(),
            1,
            "{output}"
        );
        assert!(!output.contains("login failed"), "{output}");
        assert!(!output.contains("ERROR"), "{output}");
        assert!(
            rig.notifications.notifications().is_empty(),
            "{:?}",
            rig.notifications.notifications()
        );
        wait_until(WAIT, "two IMAP sessions", || {
            (rig.dovecot.connections() == 2).then_some(())
        });

        // Every mailbox works (mail delivered locally: IMAP is full).
        rig.dovecot
            .deliver("INBOX", &message("within the limit", "sender@example.com"));
        assert_eq!(subjects(&rig.wait_new_mail(1)), vec!["within the limit"]);
        assert!(daemon.try_wait().is_none());
    });
}

/// Issue 14's second test: a server that allows 4 connections and offers no NOTIFY, and
/// twelve mailboxes. The budget (5 by default) is lowered to 4 at the first refusal:
/// three mailboxes keep IDLE on connections of their own and the other nine are checked
/// over the shared one every `poll_interval_secs`; mail in every one of them is announced,
/// once.
#[test]
fn twelve_mailboxes_within_four_connections_and_no_notify_are_all_announced() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions {
            mail_max_userip_connections: 4,
            notify: false,
            ..DovecotOptions::default()
        });
        let mailboxes: Vec<String> = std::iter::once("INBOX".to_owned())
            .chain((1..=11).map(|i| format!("F{i:02}")))
            .collect();
        for m in &mailboxes[1..] {
            rig.dovecot.create_mailbox(m);
        }
        let quoted = |list: &[String]| {
            list.iter()
                .map(|m| format!("{m:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let account = |list: &[String]| {
            format!(
                "{}poll_interval_secs = 1\n",
                rig.dovecot.account_toml("main", "implicit").replace(
                    "mailboxes = [\"INBOX\"]",
                    &format!("mailboxes = [{}]", quoted(list))
                )
            )
        };
        // Four first (they fit), so that the refusal of the fifth is certain (see above).
        let daemon = rig.daemon(
            &account(&mailboxes[..4]),
            &["main/INBOX", "main/F01", "main/F02", "main/F03"],
        );
        let path = daemon.config_path();
        let next = path.with_extension("new");
        std::fs::write(&next, rig.config(&account(&mailboxes))).unwrap();
        std::fs::rename(&next, &path).unwrap();
        let line = daemon.wait_for_output(WAIT, "main: the server allows only ");
        assert!(
            line.contains("over one shared connection (checked every 1s)"),
            "{line}"
        );
        for m in &mailboxes[4..] {
            daemon.wait_for_output(WAIT, &format!("watching main/{m} (shared connection"));
        }
        for (i, m) in mailboxes.iter().enumerate() {
            rig.dovecot
                .deliver(m, &message(&format!("to {m}"), "a@example.com"));
            let lines = rig.wait_new_mail(i + 1);
            assert!(
                lines[i].contains(&format!("subject=\"to {m}\"")),
                "{lines:?}"
            );
        }
        assert_eq!(rig.new_mail_lines().len(), 12);
        assert!(rig.dovecot.connections() <= 4);
        let output = daemon.output();
        assert!(!output.contains("ERROR"), "{output}");
    });
}

/// Review 14: a watched mailbox that does not exist, whose name holds "Rate limit", is a
/// missing mailbox ("cannot open mailbox"), not the server's connection limit. The error's
/// whole text (which names the mailbox, and which Dovecot echoes) is matched for limit
/// words, so it is reported as "the server allows no more connections".
#[test]
fn a_missing_mailbox_named_rate_limit_is_not_reported_as_the_connection_limit() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = rig.dovecot.account_toml("main", "implicit").replace(
            "mailboxes = [\"INBOX\"]",
            "mailboxes = [\"INBOX\", \"Rate limit\"]",
        );
        let daemon = rig.daemon(&account, &["main/INBOX"]);
        // The one report of the failure is the missing mailbox, in its own words.
        let line = daemon.wait_for_output(WAIT, "main/Rate limit: cannot open mailbox");
        assert!(line.contains("WARN"), "{line}");
        let output = daemon.output();
        assert!(
            !output.contains("the server allows"),
            "a missing mailbox reported as the connection limit: {line}\n{output}"
        );
    });
}

/// Review 14: a reload that restarts an account's watchers (any changed account setting)
/// when the account uses all its connections. The old watchers are stopped and the new
/// ones started at once, without waiting for the old sessions to be gone: the new logins
/// race the old LOGOUTs, the server refuses them for the limit, and the mailboxes go
/// unwatched for reconnect_max (300 s by default).
#[test]
fn a_reload_that_restarts_a_full_account_does_not_lock_itself_out() {
    with_timeout(LIMIT, || {
        // Without NOTIFY, so that both mailboxes have connections of their own.
        let rig = Rig::start(DovecotOptions {
            mail_max_userip_connections: 2,
            notify: false,
            ..DovecotOptions::default()
        });
        rig.dovecot.create_mailbox("A");
        let account = rig
            .dovecot
            .account_toml("main", "implicit")
            .replace("mailboxes = [\"INBOX\"]", "mailboxes = [\"INBOX\", \"A\"]");
        let daemon = rig.daemon(&account, &["main/INBOX", "main/A"]);
        let path = daemon.config_path();
        let next = path.with_extension("new");
        // A changed account setting: every watcher of the account restarts.
        std::fs::write(&next, rig.config(&format!("{account}timeout_secs = 29\n"))).unwrap();
        std::fs::rename(&next, &path).unwrap();
        daemon.wait_for_output(WAIT, "configuration reloaded");
        daemon.wait_for_output_count(WAIT, "watching main/INBOX (IDLE)", 2);
        daemon.wait_for_output_count(WAIT, "watching main/A (IDLE)", 2);
        let output = daemon.output();
        assert!(!output.contains("the server allows"), "{output}");
    });
}

/// A server without IDLE (NetEase): every mailbox is polled anyway, so one connection polls
/// them all, whatever the budget.
#[test]
fn without_idle_one_connection_polls_every_mailbox() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions {
            idle: false,
            ..DovecotOptions::default()
        });
        rig.dovecot.create_mailbox("A");
        rig.dovecot.create_mailbox("B");
        let account = format!(
            "{}poll_interval_secs = 1\n",
            rig.dovecot.account_toml("main", "implicit").replace(
                "mailboxes = [\"INBOX\"]",
                "mailboxes = [\"INBOX\", \"A\", \"B\"]"
            )
        );
        let daemon = rig.daemon(&account, &["main/INBOX", "main/A", "main/B"]);
        daemon.wait_for_output(
            WAIT,
            "main: 3 mailboxes over one shared connection (checked every 1s)",
        );
        rig.dovecot
            .deliver("B", &message("polled", "sender@example.com"));
        assert_eq!(subjects(&rig.wait_new_mail(1)), vec!["polled"]);
        rig.dovecot
            .deliver("INBOX", &message("also polled", "sender@example.com"));
        assert_eq!(subjects(&rig.wait_new_mail(2))[1], "also polled");
        wait_until(WAIT, "one IMAP session", || {
            (rig.dovecot.connections() == 1).then_some(())
        });
    });
}
