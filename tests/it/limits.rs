//! The server's per-user connection limit (issue 14, part 3): a refusal for the limit is
//! told from a wrong password, said once per account in words, and not retried sooner than
//! the backoff cap. Against the real Dovecot with `mail_max_userip_connections` lowered.

use std::time::Duration;

use crate::support::dovecot::{message, DovecotOptions};
use crate::support::rig::{subjects, Rig, WAIT};
use crate::support::with_timeout;

const LIMIT: Duration = Duration::from_secs(90);

#[test]
fn a_full_connection_limit_is_said_once_and_not_mistaken_for_a_wrong_password() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions {
            mail_max_userip_connections: 2,
            ..DovecotOptions::default()
        });
        for name in ["A", "B", "C"] {
            rig.dovecot.create_mailbox(name);
        }
        let account = rig.dovecot.account_toml("main", "implicit");
        let two = account.replace("mailboxes = [\"INBOX\"]", "mailboxes = [\"INBOX\", \"A\"]");
        let daemon = rig.daemon(&two, &["main/INBOX", "main/A"]);
        // Two more mailboxes: their watchers are refused for the limit. (Dovecot counts a
        // session once it is logged in, so logins at the same instant can all pass: the
        // reload makes the order certain.)
        let four = account.replace(
            "mailboxes = [\"INBOX\"]",
            "mailboxes = [\"INBOX\", \"A\", \"B\", \"C\"]",
        );
        let path = daemon.config_path();
        let next = path.with_extension("new");
        std::fs::write(&next, rig.config(&four)).unwrap();
        std::fs::rename(&next, &path).unwrap();
        let warned = daemon.wait_for_output(
            WAIT,
            "main: the server allows only 2 connections for this account, so main/",
        );
        assert!(warned.contains("WARN"), "{warned}");
        // The server's words and the cap the retry waits for (reconnect_max_secs, 300 s by
        // default), not the backoff's first second: no storm against a full server.
        assert!(warned.contains("Maximum number of connections"), "{warned}");
        assert!(warned.contains("retrying in 300.0s"), "{warned}");
        daemon.wait_for_output(
            WAIT,
            "also waiting for a free connection (retrying in 300.0s)",
        );
        rig.wait_syslog("the server allows only 2 connections for this account");

        // Said once per account, and never as a failed login: no error, no popup.
        let output = daemon.output();
        assert_eq!(
            output
                .matches("the server allows only 2 connections for this account")
                .count(),
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

        // The watched mailboxes still work (mail delivered locally: IMAP is full).
        rig.dovecot
            .deliver("INBOX", &message("within the limit", "sender@example.com"));
        assert_eq!(subjects(&rig.wait_new_mail(1)), vec!["within the limit"]);
        assert!(daemon.try_wait().is_none());
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
        let rig = Rig::start(DovecotOptions {
            mail_max_userip_connections: 2,
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
