//! Never stop, never miss, never repeat: restarts, outages, frozen links, hostile lines and
//! failed logins, through the real binary against a real Dovecot (with a fault-injecting
//! proxy in between where Dovecot cannot produce the fault itself).

use std::path::Path;
use std::time::Duration;

use crate::support::dovecot::{message, DovecotOptions};
use crate::support::rig::{subjects, Rig, WAIT};
use crate::support::{toml_string, wait_until, with_timeout};

const LIMIT: Duration = Duration::from_secs(120);

/// The files in the state directory but the single-instance `lock`.
fn state_files(dir: &Path) -> Vec<String> {
    let sub = dir.join("mailpushd");
    std::fs::read_dir(&sub)
        .map(|it| {
            it.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name != "lock")
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn restart_announces_what_arrived_while_stopped_exactly_once() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = rig.dovecot.account_toml("main", "implicit");
        rig.append("before first start");

        let mut first = rig.daemon(&account, &["main/INBOX"]);
        assert_eq!(first.terminate().0.code(), Some(0));
        assert_eq!(state_files(rig.state.path()).len(), 1);

        for i in 1..=3 {
            rig.append(&format!("while stopped {i}"));
        }
        let mut second = rig.daemon(&account, &["main/INBOX"]);
        let lines = rig.wait_new_mail(3);
        second.wait_for_output(WAIT, "subject=\"while stopped 3\"");
        rig.wait_syslog("subject=\"while stopped 3\"");
        assert_eq!(second.terminate().0.code(), Some(0));
        assert_eq!(
            subjects(&lines),
            vec!["while stopped 1", "while stopped 2", "while stopped 3"]
        );
        // Three is not more than catch_up_max (10): one popup each.
        assert_eq!(rig.notifications.notifications().len(), 3);

        // Started again: nothing new, nothing repeated. A message sent now is the proof
        // that the daemon is up and would have announced anything pending first.
        let third = rig.daemon(&account, &["main/INBOX"]);
        rig.append("after third start");
        let lines = rig.wait_new_mail(4);
        third.wait_for_output(WAIT, "subject=\"after third start\"");
        rig.wait_syslog("subject=\"after third start\"");
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert_eq!(subjects(&lines)[3], "after third start");
    });
}

#[test]
fn a_big_catch_up_is_one_summary_popup_and_every_syslog_line() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = rig.dovecot.account_toml("main", "implicit");
        let mut first = rig.daemon(&account, &["main/INBOX"]);
        first.terminate();

        for i in 0..12 {
            rig.append(&format!("queued {i}"));
        }
        let daemon = rig.daemon(&account, &["main/INBOX"]);
        let lines = rig.wait_new_mail(12);
        let notes = rig.notifications.wait_for_count(1, WAIT);
        // The summary is shown after the lines are written: wait for it, then make sure a
        // later message gets its own popup (the summary was the only one before it).
        daemon.wait_for_output(WAIT, "subject=\"queued 11\"");
        rig.wait_syslog("subject=\"queued 11\"");
        rig.append("live again");
        let notes_after = rig.notifications.wait_for_count(2, WAIT);
        assert_eq!(lines.len(), 12);
        assert_eq!(
            notes[0].summary,
            "12 new messages in main/INBOX while disconnected"
        );
        assert!(notes[0].body.contains("and 9 more"), "{}", notes[0].body);
        assert_eq!(notes_after.len(), 2, "{notes_after:#?}");
        assert!(notes_after[1].body.starts_with("live again\n"));
    });
}

#[test]
fn a_corrupt_state_file_is_set_aside_and_the_daemon_carries_on() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = rig.dovecot.account_toml("main", "implicit");
        let mut first = rig.daemon(&account, &["main/INBOX"]);
        first.terminate();
        let files = state_files(rig.state.path());
        assert_eq!(files.len(), 1, "{files:?}");
        let path = rig.state.path().join("mailpushd").join(&files[0]);
        std::fs::write(&path, "uid_validity = 'not a number'\x00\x01").unwrap();

        rig.append("old after corruption");
        let daemon = rig.daemon(&account, &["main/INBOX"]);
        let warning = daemon.wait_for_output(WAIT, "is corrupt");
        assert!(warning.contains("moved to"), "{warning}");
        let files = state_files(rig.state.path());
        assert!(files.iter().any(|f| f.contains(".corrupt-")), "{files:?}");
        // Started afresh: what was there is not announced, new mail is.
        rig.append("new after corruption");
        let lines = rig.wait_new_mail(1);
        assert_eq!(subjects(&lines), vec!["new after corruption"]);
    });
}

#[test]
fn a_changed_uidvalidity_rebaselines_without_flooding() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = rig.dovecot.account_toml("main", "implicit");
        let mut first = rig.daemon(&account, &["main/INBOX"]);
        first.terminate();
        let files = state_files(rig.state.path());
        let path = rig.state.path().join("mailpushd").join(&files[0]);
        // As if the mailbox had been recreated on the server since the last run.
        std::fs::write(&path, "uid_validity = 1\nnext_uid = 1\n").unwrap();
        for i in 0..3 {
            rig.append(&format!("existing {i}"));
        }
        let daemon = rig.daemon(&account, &["main/INBOX"]);
        daemon.wait_for_output(WAIT, "UIDVALIDITY changed");
        rig.append("genuinely new");
        let lines = rig.wait_new_mail(1);
        assert_eq!(subjects(&lines), vec!["genuinely new"]);
    });
}

#[test]
fn a_failed_login_backs_off_notifies_once_and_recovers_when_the_password_is_fixed() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let secret = rig.state.path().join("password");
        std::fs::write(&secret, "wrong-password-5be1\n").unwrap();
        let account = rig.dovecot.account_toml("main", "implicit").replace(
            &format!("password = {}", toml_string(&rig.dovecot.password)),
            &format!(
                "password_command = [\"cat\", {}]\nreconnect_max_secs = 1",
                toml_string(&secret.to_string_lossy())
            ),
        );
        assert!(account.contains("password_command"), "{account}");
        let daemon = rig.start_daemon(&account);

        daemon.wait_for_output(WAIT, "main/INBOX: login failed");
        // Retried at the cap (1 s here; Dovecot adds its own delay to each failure), and
        // still only one error line and one popup.
        daemon.wait_for_output_count(WAIT, "main/INBOX: login failed", 2);
        assert_eq!(
            daemon.count_output("ERROR main/INBOX: login failed"),
            1,
            "{}",
            daemon.output()
        );
        let notes = rig.notifications.notifications();
        assert_eq!(notes.len(), 1, "{notes:#?}");
        assert_eq!(notes[0].summary, "main: login failed");

        std::fs::write(&secret, format!("{}\n", rig.dovecot.password)).unwrap();
        daemon.wait_for_output(WAIT, "watching main/INBOX ");
        daemon.wait_for_output(WAIT, "main: login works again");
        rig.append("after the fix");
        let lines = rig.wait_new_mail(1);
        assert_eq!(subjects(&lines), vec!["after the fix"]);
        assert_eq!(rig.notifications.wait_for_count(2, WAIT).len(), 2);
        assert!(!daemon.output().contains("wrong-password-5be1"));
    });
}

#[test]
fn a_missing_mailbox_is_reported_once_and_watched_once_it_exists() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = format!(
            "{}reconnect_max_secs = 1\n",
            rig.dovecot
                .account_toml("main", "implicit")
                .replace("mailboxes = [\"INBOX\"]", "mailboxes = [\"Later\"]")
        );
        let daemon = rig.start_daemon(&account);
        daemon.wait_for_output(WAIT, "main/Later: cannot open mailbox \"Later\"");
        daemon.wait_for_output_count(WAIT, "cannot open mailbox", 2);
        assert_eq!(
            daemon.count_output("WARN  main/Later: cannot open mailbox"),
            1,
            "{}",
            daemon.output()
        );
        rig.dovecot.create_mailbox("Later");
        daemon.wait_for_output(WAIT, "watching main/Later ");
        rig.dovecot
            .append("Later", &message("filed later", "a@example.com"));
        let lines = rig.wait_new_mail(1);
        assert!(lines[0].contains("mailbox=Later"), "{}", lines[0]);
    });
}

#[test]
fn tls_failures_are_retried_and_do_not_affect_other_accounts() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let good = rig.dovecot.account_toml("main", "implicit");
        // TLS spoken to the plaintext port: the handshake fails.
        let wrong_port = rig.dovecot.account_toml("wrongport", "implicit").replace(
            &format!("port = {}", rig.dovecot.imaps_port),
            &format!("port = {}", rig.dovecot.imap_port),
        );
        // Self-signed server without its ca_file: the certificate must be refused.
        let untrusted = rig
            .dovecot
            .account_toml("untrusted", "implicit")
            .lines()
            .filter(|l| !l.starts_with("ca_file"))
            .collect::<Vec<_>>()
            .join("\n");
        let daemon = rig.start_daemon(&format!("{wrong_port}\n{untrusted}\n{good}"));
        daemon.wait_for_output(WAIT, "watching main/INBOX ");
        daemon.wait_for_output(WAIT, "wrongport/INBOX: TLS with localhost failed");
        let refused = daemon.wait_for_output(WAIT, "untrusted/INBOX: TLS with localhost failed");
        assert!(refused.contains("certificate"), "{refused}");
        rig.append("unaffected");
        let lines = rig.wait_new_mail(1);
        assert!(lines[0].contains("account=main"), "{}", lines[0]);
        // Neither failed account ever logged in.
        assert_eq!(rig.dovecot.wait_for_logins(2, WAIT), 2);
    });
}

// ---- faults Dovecot cannot produce: through the fault-injecting proxy --------------------

use std::time::Instant;

#[test]
fn an_outage_is_caught_up_exactly_once_when_the_server_returns() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let (proxy, daemon) = rig.proxied("");
        proxy.set_refuse(true);
        proxy.reset_all();
        for i in 1..=5 {
            rig.append(&format!("during outage {i}"));
        }
        // At least one reconnect attempt has been turned away.
        wait_until(WAIT, "a refused reconnect", || {
            (proxy.refused() >= 1).then_some(())
        });
        assert!(rig.new_mail_lines().is_empty());

        let back = Instant::now();
        proxy.set_refuse(false);
        let lines = rig.wait_new_mail(5);
        eprintln!(
            "FIGURE server back -> first catch-up announcement: {:?}",
            back.elapsed()
        );
        daemon.wait_for_output(WAIT, "subject=\"during outage 5\"");
        rig.wait_syslog("subject=\"during outage 5\"");
        rig.append("sentinel");
        let lines_after = rig.wait_new_mail(6);
        assert_eq!(
            subjects(&lines_after),
            vec![
                "during outage 1",
                "during outage 2",
                "during outage 3",
                "during outage 4",
                "during outage 5",
                "sentinel"
            ],
            "{lines:#?}"
        );
    });
}

/// Freezes the link, delivers a message and waits for it to be announced on a new
/// connection, the old one ended by its unanswered DONE; returns how long that took.
fn freeze_and_expect_a_new_connection(
    rig: &Rig,
    proxy: &crate::support::proxy::FaultProxy,
    daemon: &crate::support::daemon::Daemon,
) -> Duration {
    let frozen = Instant::now();
    proxy.freeze_all();
    rig.append("sent into the freeze");
    let lines = rig.wait_new_mail(1);
    let took = frozen.elapsed();
    assert_eq!(subjects(&lines), vec!["sent into the freeze"]);
    assert!(proxy.accepted() >= 2, "no new connection");
    // The DONE goes unanswered: that, not a later command, ends the session.
    assert!(
        daemon
            .output()
            .contains("main/INBOX: ending IDLE: the server did not answer in time"),
        "{}",
        daemon.output()
    );
    took
}

#[test]
fn a_frozen_link_is_detected_and_replaced() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        // Short settings for the test: IDLE re-issued every 10 s, 2 s for the answer to DONE.
        let (proxy, daemon) = rig.proxied("idle_refresh_secs = 10\ntimeout_secs = 2\n");
        let took = freeze_and_expect_a_new_connection(&rig, &proxy, &daemon);
        eprintln!(
            "FIGURE frozen link (refresh 10 s, timeout 2 s) -> announced on a new connection: {took:?}"
        );
        rig.append("after the freeze");
        let lines = rig.wait_new_mail(2);
        assert_eq!(subjects(&lines)[1], "after the freeze");
    });
}

#[test]
fn a_silent_link_is_checked_long_before_the_refresh() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions {
            // Dovecot talks every 60 s: the 5 s silence limit below is what ends the wait.
            idle_notify_interval: Duration::from_secs(60),
            ..DovecotOptions::default()
        });
        let (proxy, daemon) =
            rig.proxied("idle_refresh_secs = 1500\nidle_silence_secs = 5\ntimeout_secs = 2\n");
        // A silent but alive server: the DONE that checks it is answered, same connection.
        daemon.wait_for_output(WAIT, "no word from the server for 5s; it answered DONE");
        assert_eq!(proxy.accepted(), 1);
        let took = freeze_and_expect_a_new_connection(&rig, &proxy, &daemon);
        eprintln!("FIGURE silent link (silence 5 s, timeout 2 s) -> announced on a new connection: {took:?}");
        // Silence 5 s + 2 s for the DONE + reconnect: far below the 1500 s refresh.
        assert!(took < Duration::from_secs(15), "{took:?}");
    });
}

#[test]
fn a_failed_session_closes_its_connection_at_once() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let proxy = crate::support::proxy::FaultProxy::start(rig.dovecot.imap_port);
        let account = rig
            .dovecot
            .account_toml("main", "none")
            .replace("host = \"localhost\"", "host = \"127.0.0.1\"")
            .replace(
                &format!("port = {}", rig.dovecot.imap_port),
                &format!("port = {}", proxy.port),
            )
            .replace("mailboxes = [\"INBOX\"]", "mailboxes = [\"Missing\"]");
        // A long backoff: the connection used to stay open through all of it.
        let daemon = rig.start_daemon(&format!("{account}reconnect_max_secs = 600\n"));
        daemon.wait_for_output(WAIT, "main/Missing: cannot open mailbox");
        wait_until(
            Duration::from_secs(5),
            "the failed connection closed",
            || (proxy.open_connections() == 0).then_some(()),
        );
        assert_eq!(proxy.accepted(), 1);
    });
}

#[test]
fn a_bulk_arrival_is_announced_in_batches_with_one_summary() {
    with_timeout(Duration::from_secs(300), || {
        let rig = Rig::start(DovecotOptions {
            fsync: false,
            ..DovecotOptions::default()
        });
        let account = rig.dovecot.account_toml("main", "implicit");
        let mut first = rig.daemon(&account, &["main/INBOX"]);
        assert_eq!(first.terminate().0.code(), Some(0));
        // 2,500 messages with 8 KiB subjects arrive while the daemon is stopped: 20 MB of
        // subjects, more than one 16 MiB answer could hold.
        let n = 2500;
        let long = "x".repeat(8 * 1024);
        rig.dovecot.bulk_append("INBOX", n, move |i| {
            message(&format!("bulk {i} {long}"), "bulk@example.com")
        });
        let started = std::time::Instant::now();
        let second = rig.daemon(&account, &["main/INBOX"]);
        let lines = rig
            .syslog
            .wait_for(Duration::from_secs(120), "every new-mail line", |lines| {
                lines.iter().filter(|l| l.contains("new mail ")).count() >= n
            });
        eprintln!(
            "FIGURE bulk arrival of {n} (8 KiB subjects) -> all lines: {:?}",
            started.elapsed()
        );
        let announced: Vec<&String> = lines.iter().filter(|l| l.contains("new mail ")).collect();
        assert_eq!(announced.len(), n);
        let mut uids: Vec<u32> = announced
            .iter()
            .map(|l| {
                l.split("uid=")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        uids.dedup();
        assert_eq!(uids.len(), n, "a message announced twice");
        // The popups: summaries, each replacing the one before, ending with all of them.
        let popups = rig.notifications.notifications();
        assert!(!popups.is_empty());
        for pair in popups.windows(2) {
            assert_eq!(pair[1].replaces_id, pair[0].id, "{popups:#?}");
        }
        let last = popups.last().unwrap();
        assert!(
            last.summary.contains(&n.to_string()) || last.body.contains(&n.to_string()),
            "{last:#?}"
        );
        assert_eq!(second.count_output("more than 16 MiB"), 0);
    });
}

#[test]
fn bye_mid_idle_reconnects_and_keeps_announcing() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let (proxy, daemon) = rig.proxied("");
        assert_eq!(proxy.inject_to_client(b"* BYE server shutting down\r\n"), 1);
        daemon.wait_for_output(WAIT, "server closed the connection: server shutting down");
        daemon.wait_for_output_count(WAIT, "watching main/INBOX ", 2);
        rig.append("after bye");
        assert_eq!(subjects(&rig.wait_new_mail(1)), vec!["after bye"]);
    });
}

#[test]
fn a_garbage_line_costs_only_that_line() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let (proxy, daemon) = rig.proxied("");
        proxy.inject_to_client(b"\x01\x02 this is not IMAP \xff\r\n");
        daemon.wait_for_output(
            WAIT,
            "main/INBOX: could not parse the server's answer to IDLE: \\x01\\x02 this is not IMAP \\xff\\r\\n; skipped that line",
        );
        rig.append("after garbage");
        assert_eq!(subjects(&rig.wait_new_mail(1)), vec!["after garbage"]);
        assert!(daemon.try_wait().is_none());
        assert_eq!(proxy.accepted(), 1, "the line cost the connection");
        assert_eq!(daemon.count_output("watching main/INBOX "), 1);
    });
}

/// Lists nested 500,000 deep (1 MB, well inside the 16 MiB answer bound): the `imap`
/// crate's parser recurses once per level, so before src/imap/nesting.rs this overflowed the
/// watcher's stack and aborted the whole process. Now it costs only the connection.
#[test]
fn a_response_nested_too_deep_costs_only_the_connection() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let (proxy, daemon) = rig.proxied("");
        let depth = 500_000;
        let mut hostile =
            b"* 1 FETCH (BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL \"7bit\" 1 1 NIL NIL NIL "
                .to_vec();
        hostile.extend(std::iter::repeat_n(b'(', depth));
        hostile.extend(std::iter::repeat_n(b')', depth));
        hostile.extend(b"))\r\n");
        proxy.inject_to_client(&hostile);
        daemon.wait_for_output(WAIT, "server response nests lists more than 100 deep");
        daemon.wait_for_output_count(WAIT, "watching main/INBOX ", 2);
        rig.append("after the deep list");
        assert_eq!(subjects(&rig.wait_new_mail(1)), vec!["after the deep list"]);
        assert!(daemon.try_wait().is_none(), "{}", daemon.output());
    });
}

#[test]
fn an_alert_is_logged_and_the_session_goes_on() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let (proxy, daemon) = rig.proxied("");
        proxy.inject_to_client(b"* NO [ALERT] maintenance at 05:00\r\n");
        // Taken out of the IDLE by the tolerant layer: the server's words, logged once.
        daemon.wait_for_output(
            WAIT,
            "WARN  main/INBOX: the server says: [ALERT] maintenance at 05:00",
        );
        rig.append("after alert");
        assert_eq!(subjects(&rig.wait_new_mail(1)), vec!["after alert"]);
        assert_eq!(proxy.accepted(), 1, "the session should have survived");
    });
}

#[test]
fn a_slow_server_is_waited_for() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let (proxy, daemon) = rig.proxied("timeout_secs = 5\n");
        // Every server line now arrives 400 ms late: slower, not broken.
        proxy.set_delay(Duration::from_millis(400));
        rig.append("slowly");
        assert_eq!(subjects(&rig.wait_new_mail(1)), vec!["slowly"]);
        assert_eq!(proxy.accepted(), 1, "{}", daemon.output());
    });
}
