//! Real servers' quirks cost a line, never a mailbox (issue 11): each quirk played by the
//! scripted server in tests/it/support/quirky.rs against the real binary, with the right
//! announcements asserted (each message exactly once, on one connection).

use std::time::Duration;

use crate::support::daemon::Daemon;
use crate::support::quirky::{Msg, Quirks, Quirky};
use crate::support::rig::subjects;
use crate::support::syslog::SyslogRecorder;
use crate::support::{wait_until, with_timeout};

const WAIT: Duration = Duration::from_secs(20);
const LIMIT: Duration = Duration::from_secs(90);

/// A daemon on the scripted server, syslog recorded, popups off. `extra` goes into the
/// account table.
fn start(server: &Quirky, syslog: &SyslogRecorder, extra: &str) -> Daemon {
    let daemon = Daemon::start(&config(server, syslog, extra), None);
    daemon.wait_for_output(WAIT, "watching q/INBOX");
    daemon
}

fn config(server: &Quirky, syslog: &SyslogRecorder, extra: &str) -> String {
    format!(
        "{}\n[notifications]\nenabled = false\n{}",
        server.account_toml("q", extra),
        syslog.config_toml()
    )
}

fn new_mail(syslog: &SyslogRecorder) -> Vec<String> {
    syslog
        .lines()
        .into_iter()
        .filter(|l| l.contains("new mail "))
        .collect()
}

fn wait_new_mail(syslog: &SyslogRecorder, n: usize) -> Vec<String> {
    syslog.wait_for(WAIT, &format!("{n} new-mail lines"), |lines| {
        lines.iter().filter(|l| l.contains("new mail ")).count() >= n
    });
    new_mail(syslog)
}

/// Waits until the server has seen at least `total` IDLE commands and the watcher is in
/// IDLE now (its last line was IDLE): proof the watcher finished what it was doing (and so
/// had every chance to repeat itself).
fn wait_idles(server: &Quirky, total: usize) {
    wait_until(
        WAIT,
        &format!("{total} IDLE commands, the last one pending"),
        || {
            let idle_now = server
                .client_lines()
                .last()
                .is_some_and(|l| l.to_ascii_uppercase().ends_with(" IDLE"));
            (idle_now && count_idles(server) >= total).then_some(())
        },
    );
}

/// Warning lines in the daemon's log that contain `needle`.
fn warned(daemon: &Daemon, needle: &str) -> usize {
    warnings(daemon)
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

/// Warning lines in the daemon's log, but for the test config's own (it holds a password
/// and is world-readable).
fn warnings(daemon: &Daemon) -> Vec<String> {
    daemon
        .output_lines()
        .into_iter()
        .filter(|l| l.contains(" WARN ") && !l.contains("readable by others"))
        .collect()
}

fn count_idles(server: &Quirky) -> usize {
    server
        .client_lines()
        .iter()
        .filter(|l| l.to_ascii_uppercase().ends_with(" IDLE"))
        .count()
}

#[test]
fn untagged_no_inside_answers_is_a_warning_and_costs_nothing() {
    with_timeout(LIMIT, || {
        let disk = "* NO Disk is 98% full, please delete unnecessary data";
        let server = Quirky::start(
            Quirks {
                // After `* OK [UIDNEXT n]` the crate panicked on this.
                examine_extra: vec![disk.into(), "* BAD  stray complaint".into()],
                // Before the tagged OK of UID FETCH it failed the command.
                fetch_extra: vec![disk.into()],
                ..Quirks::default()
            },
            vec![Msg::new(1, "old@example.org", "already there")],
        );
        let syslog = SyslogRecorder::start();
        let daemon = start(&server, &syslog, "");
        wait_idles(&server, 1);
        server.add(Msg::new(2, "a@example.org", "first"));
        server.add(Msg::new(3, "b@example.org", "second"));
        let lines = wait_new_mail(&syslog, 2);
        assert_eq!(subjects(&lines), ["first", "second"]);
        wait_idles(&server, 2);
        assert_eq!(new_mail(&syslog).len(), 2, "announced again");
        assert_eq!(server.connections(), 1, "reconnected");
        // The server's words, once, at warning level.
        assert_eq!(
            warned(
                &daemon,
                "the server says: Disk is 98% full, please delete unnecessary data"
            ),
            1
        );
        assert_eq!(warned(&daemon, "the server says: stray complaint"), 1);
        assert_eq!(daemon.count_output("internal error"), 0);
    });
}

#[test]
fn data_before_the_idle_continuation_wakes_and_does_not_stall() {
    with_timeout(LIMIT, || {
        let server = Quirky::start(
            Quirks {
                before_continuation: vec!["* FLAGS (\\Answered)".into()],
                ..Quirks::default()
            },
            vec![],
        );
        let syslog = SyslogRecorder::start();
        // timeout_secs long: a watcher stuck waiting for a tagged answer would take that.
        let daemon = start(&server, &syslog, "timeout_secs = 60");
        wait_idles(&server, 1);
        server.add(Msg::new(1, "a@example.org", "in idle"));
        let lines = wait_new_mail(&syslog, 1);
        assert_eq!(subjects(&lines), ["in idle"]);
        // An EXISTS before the `+` is new mail too.
        server.set_quirks(|q| {
            q.arrive_at_next_idle = vec![Msg::new(3, "b@example.org", "before plus")];
        });
        // The next IDLE comes after the check that the next message causes.
        server.add(Msg::new(2, "t@example.org", "trigger"));
        let lines = wait_new_mail(&syslog, 3);
        assert_eq!(subjects(&lines), ["in idle", "trigger", "before plus"]);
        assert_eq!(server.connections(), 1);
        assert_eq!(warnings(&daemon), Vec::<String>::new());
    });
}

#[test]
fn a_yahoo_style_answer_is_mended_and_the_newest_message_is_not_repeated() {
    with_timeout(LIMIT, || {
        let server = Quirky::start(
            Quirks {
                // Every IDLE ends soon, so the watcher re-fetches `N:*` (which always returns
                // the newest message) again and again.
                end_idle_after: Some(Duration::from_millis(2500)),
                ..Quirks::default()
            },
            vec![],
        );
        let syslog = SyslogRecorder::start();
        let daemon = start(&server, &syslog, "");
        // An address with a space before `)`, and stray spaces, in the newest message's
        // FETCH line: imap-proto refuses it as sent.
        let mut yahoo = Msg::new(1, "y@yahoo.example", "from yahoo");
        yahoo.flags_line = Some(
            "* 1 FETCH (UID 1  FLAGS () ENVELOPE (NIL \"from yahoo\" ((\"undisclosed-recipients\" NIL \"\\\"undisclosed-recipients\\\"\" NIL )) NIL NIL NIL NIL NIL NIL NIL) )"
                .into(),
        );
        server.add(yahoo);
        let lines = wait_new_mail(&syslog, 1);
        assert_eq!(subjects(&lines), ["from yahoo"]);
        let idles = count_idles(&server);
        wait_idles(&server, idles + 3);
        assert_eq!(
            new_mail(&syslog).len(),
            1,
            "the newest message was announced again"
        );
        server.add(Msg::new(2, "z@example.org", "later"));
        let lines = wait_new_mail(&syslog, 2);
        assert_eq!(subjects(&lines), ["from yahoo", "later"]);
        let idles = count_idles(&server);
        wait_idles(&server, idles + 2);
        assert_eq!(new_mail(&syslog).len(), 2);
        assert_eq!(server.connections(), 1);
        // Ending IDLE is normal for such servers: no warning, and no DONE sent after it.
        assert_eq!(warnings(&daemon), Vec::<String>::new());
        assert_eq!(
            Quirky::stray_dones(),
            0,
            "DONE sent after the server had ended IDLE"
        );
    });
}

#[test]
fn a_poison_message_is_announced_as_unreadable_once_and_later_mail_flows() {
    with_timeout(LIMIT, || {
        let server = Quirky::start(Quirks::default(), vec![]);
        let syslog = SyslogRecorder::start();
        let daemon = start(&server, &syslog, "");
        wait_idles(&server, 1);
        let mut poison = Msg::new(1, "p@example.org", "poison");
        poison.header_line =
            Some("* 1 FETCH (UID 1 BODY[HEADER.FIELDS (FROM SUBJECT)] ((((".into());
        server.add(poison);
        server.add(Msg::new(2, "ok@example.org", "fine"));
        let lines = wait_new_mail(&syslog, 2);
        assert_eq!(subjects(&lines), ["(could not be read)", "fine"]);
        assert!(lines[0].contains("uid=1 "), "{}", lines[0]);
        server.add(Msg::new(3, "ok@example.org", "after"));
        let lines = wait_new_mail(&syslog, 3);
        assert_eq!(subjects(&lines)[2], "after");
        wait_idles(&server, 3);
        assert_eq!(new_mail(&syslog).len(), 3);
        assert_eq!(server.connections(), 1);
        assert_eq!(
            daemon.count_output("message uid 1 could not be read after 3 attempts"),
            1
        );
        assert_eq!(
            warned(
                &daemon,
                "could not parse the server's answer to UID FETCH: * 1 FETCH (UID 1 BODY"
            ),
            1,
            "the unreadable line is logged once, in words"
        );
    });
}

#[test]
fn a_message_that_kills_the_connection_is_passed_after_bounded_tries() {
    with_timeout(LIMIT, || {
        let server = Quirky::start(Quirks::default(), vec![]);
        let syslog = SyslogRecorder::start();
        let daemon = start(&server, &syslog, "");
        wait_idles(&server, 1);
        let mut poison = Msg::new(1, "p@example.org", "killer");
        poison.kills_connection = true;
        server.add(poison);
        server.add(Msg::new(2, "ok@example.org", "fine"));
        let lines = wait_new_mail(&syslog, 2);
        assert_eq!(subjects(&lines), ["(could not be read)", "fine"]);
        // One connection per failed try, and one that stays.
        let used = server.connections();
        assert!((2..=4).contains(&used), "{used} connections");
        let idles = count_idles(&server);
        wait_idles(&server, idles);
        assert_eq!(server.connections(), used, "still reconnecting");
        assert_eq!(new_mail(&syslog).len(), 2);
        assert_eq!(daemon.count_output("message uid 1 could not be read"), 1);
    });
}

#[test]
fn a_group_sender_is_shown_by_its_name() {
    with_timeout(LIMIT, || {
        let server = Quirky::start(Quirks::default(), vec![]);
        let syslog = SyslogRecorder::start();
        let _daemon = start(&server, &syslog, "");
        server.add(Msg::new(
            1,
            "Team: alice@example.org, Bob <bob@example.org>;",
            "group",
        ));
        let lines = wait_new_mail(&syslog, 1);
        assert!(
            lines[0].contains("from=\"Team <alice@example.org>\""),
            "{}",
            lines[0]
        );
    });
}

#[test]
fn a_server_that_ends_every_idle_at_once_is_polled_not_spun() {
    with_timeout(LIMIT, || {
        let server = Quirky::start(
            Quirks {
                end_idle_after: Some(Duration::ZERO),
                ..Quirks::default()
            },
            vec![],
        );
        let syslog = SyslogRecorder::start();
        let daemon = start(&server, &syslog, "poll_interval_secs = 1");
        daemon.wait_for_output(
            WAIT,
            "the server ends every IDLE at once; checking every 1s instead",
        );
        let idles = count_idles(&server);
        server.add(Msg::new(1, "a@example.org", "polled"));
        let lines = wait_new_mail(&syslog, 1);
        assert_eq!(subjects(&lines), ["polled"]);
        assert_eq!(count_idles(&server), idles, "still idling after the switch");
        assert_eq!(server.connections(), 1);
    });
}

#[test]
fn a_mailbox_fed_every_quirk_announces_each_message_once_on_one_connection() {
    with_timeout(LIMIT, || {
        let server = Quirky::start(
            Quirks {
                examine_extra: vec!["* NO [ALERT] Disk is 98% full".into()],
                fetch_extra: vec!["* NO quota warning".into(), "* BAD  stray".into()],
                before_continuation: vec!["* FLAGS (\\Answered)".into()],
                end_idle_after: Some(Duration::from_secs(3)),
                ..Quirks::default()
            },
            vec![],
        );
        let syslog = SyslogRecorder::start();
        let daemon = start(&server, &syslog, "");
        wait_idles(&server, 1);
        let mut yahoo = Msg::new(1, "y@yahoo.example", "yahoo");
        yahoo.flags_line = Some(
            "* 1 FETCH (UID 1  FLAGS () ENVELOPE (NIL \"yahoo\" ((\"undisclosed-recipients\" NIL \"\\\"undisclosed-recipients\\\"\" NIL )) NIL NIL NIL NIL NIL NIL NIL) )"
                .into(),
        );
        let mut poison = Msg::new(2, "p@example.org", "poison");
        poison.header_line =
            Some("* 2 FETCH (UID 2 BODY[HEADER.FIELDS (FROM SUBJECT)] ((((".into());
        server.add(yahoo);
        server.add(poison);
        server.add(Msg::new(
            3,
            "Team: alice@example.org, Bob <bob@example.org>;",
            "group",
        ));
        server.add(Msg::new(
            4,
            "=?GBK?B?1cXI/Q==?= <z@example.com>",
            "=?UTF-8?B?5rWL6K+V?=",
        ));
        let lines = wait_new_mail(&syslog, 4);
        assert_eq!(
            subjects(&lines),
            ["yahoo", "(could not be read)", "group", "\u{6d4b}\u{8bd5}"]
        );
        assert!(
            lines[2].contains("from=\"Team <alice@example.org>\""),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("from=\"\u{5f20}\u{4e09} <z@example.com>\""),
            "{}",
            lines[3]
        );
        // Several more rounds of IDLE ended by the server, each re-reading `N:*`.
        let idles = count_idles(&server);
        wait_idles(&server, idles + 3);
        server.add(Msg::new(5, "late@example.org", "late"));
        let lines = wait_new_mail(&syslog, 5);
        assert_eq!(subjects(&lines)[4], "late");
        let idles = count_idles(&server);
        wait_idles(&server, idles + 2);
        assert_eq!(new_mail(&syslog).len(), 5, "announced again");
        assert_eq!(server.connections(), 1, "reconnected");
        assert_eq!(
            warned(&daemon, "the server says: [ALERT] Disk is 98% full"),
            1
        );
        assert_eq!(warned(&daemon, "the server says: quota warning"), 1);
        assert_eq!(warned(&daemon, "message uid 2 could not be read"), 1);
        assert_eq!(daemon.count_output("internal error"), 0);
    });
}

#[test]
fn a_server_restored_from_a_backup_is_rebaselined_and_new_mail_is_announced() {
    with_timeout(LIMIT, || {
        let server = Quirky::start(
            Quirks::default(),
            (1..=5)
                .map(|u| Msg::new(u, "old@example.org", "old"))
                .collect(),
        );
        let syslog = SyslogRecorder::start();
        let state = tempfile::tempdir().unwrap();
        let cfg = config(&server, &syslog, "");
        let mut first = Daemon::start_with_state(&cfg, None, state.path());
        first.wait_for_output(WAIT, "watching q/INBOX");
        wait_idles(&server, 1);
        server.add(Msg::new(6, "a@example.org", "six"));
        wait_new_mail(&syslog, 1);
        assert_eq!(first.terminate().0.code(), Some(0));
        // Restored from a backup taken at UID 2: UIDNEXT 3, UIDVALIDITY unchanged.
        server.replace_messages(
            (1..=2)
                .map(|u| Msg::new(u, "old@example.org", "old"))
                .collect(),
        );
        let second = Daemon::start_with_state(&cfg, None, state.path());
        second.wait_for_output(
            WAIT,
            "the server's UIDNEXT (3) is below the next UID mailpushd expected (7)",
        );
        second.wait_for_output(WAIT, "watching q/INBOX");
        let idles = count_idles(&server);
        wait_idles(&server, idles.max(1));
        server.add(Msg::new(3, "b@example.org", "after the restore"));
        let lines = wait_new_mail(&syslog, 2);
        assert_eq!(subjects(&lines), ["six", "after the restore"]);
    });
}

#[test]
fn a_message_whose_fetch_is_refused_is_passed_without_a_reconnect() {
    with_timeout(LIMIT, || {
        let server = Quirky::start(Quirks::default(), vec![]);
        let syslog = SyslogRecorder::start();
        let daemon = start(&server, &syslog, "");
        wait_idles(&server, 1);
        let mut refused = Msg::new(1, "p@example.org", "refused");
        refused.refuses_headers = true;
        server.add(refused);
        server.add(Msg::new(2, "ok@example.org", "fine"));
        let lines = wait_new_mail(&syslog, 2);
        assert_eq!(subjects(&lines), ["(could not be read)", "fine"]);
        wait_idles(&server, 2);
        assert_eq!(new_mail(&syslog).len(), 2);
        assert_eq!(server.connections(), 1, "reconnected");
        assert_eq!(
            warned(
                &daemon,
                "message uid 1 could not be read after 3 attempts (the server refused to fetch it: Some messages could not be FETCHed (Failure))"
            ),
            1
        );
    });
}
