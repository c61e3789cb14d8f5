//! Second review of issue 15 (unread counts, the D-Bus interface, `mailpushd status`):
//! what the first round (tests/it/review15.rs) did not try. A hostile IMAP server is the
//! scripted server of that module; counts are read as a panel reads them, through
//! `mailpushd status --json` on a private session bus.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::review15::{status, Scripted};
use crate::support::daemon::Daemon;
use crate::support::dbus::SessionBus;
use crate::support::{wait_until, with_timeout};

const LIMIT: Duration = Duration::from_secs(90);
const WAIT: Duration = Duration::from_secs(20);

/// Waits until the row of `s/<mailbox>` satisfies `f`, and returns it.
fn wait_row(bus: &SessionBus, mailbox: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    wait_until(WAIT, what, || {
        status(bus)?
            .into_iter()
            .find(|m| m["account"] == "s" && m["mailbox"] == mailbox && f(m))
    })
}

/// A server with NOTIFY that does not know the `FlagChange` event (RFC 5465 section 5.3:
/// `BAD [BADEVENT ...]`) still reports new mail to the shared connection: it is asked for
/// fewer events, not given up on (before, the refusal was taken for too many names, the
/// set halved down to nothing, and every shared mailbox was polled). The counts NOTIFY
/// no longer follows are asked by STATUS at the polling interval, and that is said.
#[test]
fn a_server_refusing_flagchange_keeps_notify() {
    with_timeout(LIMIT, || {
        let unseen = Arc::new(AtomicU32::new(1));
        let u = Arc::clone(&unseen);
        let server = Scripted::start(move |verb, line, tag| match verb {
            "CAPABILITY" => Some(format!(
                "* CAPABILITY IMAP4rev1 IDLE NOTIFY UNSELECT\r\n{tag} OK done\r\n"
            )),
            "NOTIFY" if line.contains("FlagChange") => Some(format!(
                "{tag} BAD [BADEVENT (MessageNew MessageExpunge)] FlagChange not supported\r\n"
            )),
            "STATUS" => Some(format!(
                "* STATUS \"A\" (UIDNEXT 1 UIDVALIDITY 7 UNSEEN {})\r\n{tag} OK done\r\n",
                u.load(Ordering::SeqCst)
            )),
            _ => None,
        });
        let bus = SessionBus::start();
        let config = server.account("mailboxes = [\"INBOX\", \"A\"]\npoll_interval_secs = 1\n");
        let daemon = Daemon::start(&config, Some(&bus));
        daemon.wait_for_output(
            WAIT,
            "watching s/A (shared connection, new mail reported by NOTIFY)",
        );
        let said = daemon.wait_for_output(
            WAIT,
            "s/(shared): the server refused NOTIFY (MessageNew MessageExpunge FlagChange)",
        );
        assert!(said.contains("took (MessageNew MessageExpunge)"), "{said}");
        wait_row(&bus, "A", "A idling with 1 unread", |m| {
            m["state"] == "idling" && m["unread"] == 1
        });
        // Read on a phone: no NOTIFY report comes, the count follows within the interval.
        unseen.store(0, Ordering::SeqCst);
        wait_row(&bus, "A", "A at 0 unread", |m| m["unread"] == 0);
        let output = daemon.output();
        assert!(!output.contains("checking every"), "{output}");
        // Refused once: the server is not asked again for what it does not know.
        let commands = crate::support::lock(&server.commands).clone();
        let asked = commands.iter().filter(|c| c.contains("FlagChange")).count();
        assert_eq!(asked, 1, "{commands:?}");
    });
}

/// A reload that restarts the account's shared connection (a mailbox added to it, as a
/// pattern does when a folder is created) keeps the rows of the mailboxes it goes on
/// watching: a panel following `Changed` never sees them vanish or their count go
/// unknown, and mail announced before the reload stays "new" until the user looks.
/// Before, every member's row was removed with the old watcher and came back empty.
#[test]
fn a_reload_that_restarts_a_watcher_keeps_its_counts() {
    use crate::review15::{lines_of, spawn_client};
    use crate::support::dovecot::{message, DovecotOptions};
    use crate::support::rig::Rig;
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        rig.dovecot.create_mailbox("Lists");
        rig.dovecot.create_mailbox("Work");
        let account = rig.dovecot.account_toml("main", "implicit").replace(
            "mailboxes = [\"INBOX\"]",
            "mailboxes = [\"INBOX\", \"Lists\"]",
        );
        let daemon = rig.daemon(&account, &["main/INBOX", "main/Lists"]);
        rig.dovecot
            .deliver("Lists", &message("fresh", "b@example.com"));
        let row = |m: &Value| m["account"] == "main" && m["mailbox"] == "Lists";
        wait_until(WAIT, "Lists: 1 unread, 1 new", || {
            status(&rig.bus)?
                .into_iter()
                .find(|m| row(m) && m["unread"] == 1 && m["new"] == 1)
        });
        let follower = spawn_client(&rig.bus, &["status", "--json", "--follow"]);
        let lines = lines_of(&follower);
        let first = lines.recv_timeout(WAIT).expect("the first line");
        assert!(first.contains("\"Lists\""), "{first}");

        std::fs::write(
            daemon.config_path(),
            rig.config(&account.replace("\"Lists\"]", "\"Lists\", \"Work\"]")),
        )
        .unwrap();
        assert!(daemon.signal("HUP"));
        daemon.wait_for_output(WAIT, "watching main/Work ");
        daemon.wait_for_output_count(WAIT, "watching main/Lists ", 2);
        // Every line the panel printed meanwhile still shows Lists, counted.
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .expect("a line showing Work watched");
            let rows: Vec<Value> = serde_json::from_str(&line).expect("JSON");
            let lists: Vec<&Value> = rows.iter().filter(|m| row(m)).collect();
            assert_eq!(lists.len(), 1, "Lists vanished: {line}");
            assert_eq!(lists[0]["unread"], 1, "{line}");
            assert_eq!(lists[0]["new"], 1, "{line}");
            if rows
                .iter()
                .any(|m| m["mailbox"] == "Work" && m["state"] == "idling")
                && lists[0]["state"] == "idling"
            {
                break;
            }
        }
        drop(follower);
    });
}
