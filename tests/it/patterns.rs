//! Mailbox patterns (issue 14, part 4): `mailboxes = ["INBOX", "Lists/*"]` or `["*"]`,
//! expanded by the server's LIST, without the special-use mailboxes (Trash, Sent, Junk,
//! Drafts, RFC 6154), cheap because the matches share one connection (NOTIFY here), and
//! mailboxes created on the server picked up at the next listing (a reconnect).

use std::time::Duration;

use crate::support::dovecot::{message, DovecotOptions};
use crate::support::rig::{subjects, Rig, WAIT};
use crate::support::{wait_until, with_timeout};

const LIMIT: Duration = Duration::from_secs(90);

fn account(rig: &Rig, mailboxes: &str) -> String {
    rig.dovecot.account_toml("main", "implicit").replace(
        "mailboxes = [\"INBOX\"]",
        &format!("mailboxes = [{mailboxes}]\nreconnect_max_secs = 1"),
    )
}

#[test]
fn a_pattern_watches_what_matches_and_leaves_special_uses_alone() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        for m in [
            "Lists",
            "Lists/rust",
            "Lists/debian",
            "Work",
            "Trash",
            "Sent",
            "Junk",
        ] {
            rig.dovecot.create_mailbox(m);
        }
        let daemon = rig.daemon(
            &account(&rig, "\"*\""),
            &[
                "main/INBOX",
                "main/Lists/rust",
                "main/Lists/debian",
                "main/Work",
            ],
        );
        // In the server's LIST order.
        let line = daemon.wait_for_output(WAIT, "main: watching 5 mailboxes: ");
        for m in ["INBOX", "Lists", "Lists/debian", "Lists/rust", "Work"] {
            assert!(line.contains(m), "{line}");
        }
        // Two connections for all of them (NOTIFY), none for Trash, Sent or Junk.
        daemon.wait_for_output(
            WAIT,
            "main: INBOX on a connection of its own (IDLE); 4 mailboxes over one shared \
             connection (new mail reported by NOTIFY)",
        );
        let output = daemon.output();
        for m in ["Trash", "Sent", "Junk"] {
            assert!(!output.contains(&format!("watching main/{m} ")), "{output}");
        }
        wait_until(WAIT, "two IMAP sessions", || {
            (rig.dovecot.connections() == 2).then_some(())
        });

        rig.dovecot
            .deliver("Trash", &message("thrown away", "a@example.com"));
        rig.dovecot
            .deliver("Lists/rust", &message("to the list", "a@example.com"));
        assert_eq!(subjects(&rig.wait_new_mail(1)), ["to the list"]);
        rig.append("in the inbox");
        assert_eq!(
            subjects(&rig.wait_new_mail(2)),
            ["to the list", "in the inbox"]
        );

        // A mailbox created on the server is watched after the next listing: here, the
        // reconnect after every connection is dropped. Mail that came meanwhile is
        // announced.
        rig.dovecot.create_mailbox("Lists/new");
        rig.dovecot
            .deliver("Lists/new", &message("in a new folder", "a@example.com"));
        rig.dovecot.kick();
        daemon.wait_for_output(WAIT, "watching main/Lists/new ");
        rig.dovecot
            .deliver("Lists/new", &message("and another", "a@example.com"));
        let lines = rig.wait_new_mail(3);
        assert_eq!(subjects(&lines)[2], "and another", "{lines:?}");
        // The first message came before the mailbox was watched: like any mailbox's first
        // look, what is already there is not announced.
        assert_eq!(rig.new_mail_lines().len(), 3);
        assert!(daemon.try_wait().is_none());
    });
}

#[test]
fn a_pattern_under_a_named_mailbox_and_a_named_special_use() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        for m in ["Lists", "Lists/rust", "Work", "Sent"] {
            rig.dovecot.create_mailbox(m);
        }
        // Sent is named outright: watched even though a pattern would leave it out.
        let daemon = rig.daemon(
            &account(&rig, "\"INBOX\", \"Lists/*\", \"Sent\""),
            &["main/INBOX", "main/Lists/rust", "main/Sent"],
        );
        daemon.wait_for_output(WAIT, "main: watching 3 mailboxes: INBOX, Sent, Lists/rust");
        assert!(!daemon.output().contains("watching main/Work "));
        rig.dovecot
            .deliver("Sent", &message("sent by me", "me@example.com"));
        assert_eq!(subjects(&rig.wait_new_mail(1)), ["sent by me"]);

        // `--check --connect` lists the patterns and says how the matches are watched.
        let path = daemon.config_path();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailpushd"))
            .args(["--check", "--connect", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(
            text.contains(
                "ok    main: the patterns stand for 3 mailbox(es): INBOX, Sent, Lists/rust"
            ),
            "{text}"
        );
        assert!(text.contains("ok    main/Lists/rust: "), "{text}");
        assert!(
            text.contains(
                "        shared connection (new mail reported by NOTIFY): Sent, Lists/rust"
            ),
            "{text}"
        );
    });
}
