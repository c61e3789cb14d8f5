//! IMAP NOTIFY (RFC 5465) against the real Dovecot, at the session level (issue 14, part 1,
//! the first step): one connection, INBOX selected, hears of new mail in another mailbox as
//! `* STATUS`, during IDLE and between commands.

use std::path::Path;
use std::time::{Duration, Instant};

use mailpushd::imap::{self, Wake};

use crate::support::dovecot::{message, DovecotOptions};
use crate::support::rig::Rig;
use crate::support::with_timeout;

const LIMIT: Duration = Duration::from_secs(60);

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
