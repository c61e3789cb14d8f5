//! Popups worth reading, through the real binary, Dovecot and the recording notification
//! server: charsets decoded end to end, bursts summarised (and replaced), privacy, quiet
//! mailboxes, the popup's buttons, and popups closed when the mail is read elsewhere; text
//! that cannot forge lines or escape its bounds; and a notification server that freezes,
//! restarts, or sends clicks on popups that are not ours, which must cost only itself.

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::daemon::Daemon;
use crate::support::dbus::{connections_of, send_notify};
use crate::support::dovecot::{message, DovecotOptions};
use crate::support::rig::{subjects, Rig, WAIT};
use crate::support::{wait_until, with_timeout};

const LIMIT: Duration = Duration::from_secs(90);

/// Flags of one message, asked from a separate IMAP session.
fn flags_of(rig: &Rig, uid: u32) -> String {
    let mut s = rig.dovecot.session();
    s.examine("INBOX").unwrap();
    let fetches = s.uid_fetch(uid.to_string(), "FLAGS").unwrap();
    let flags = fetches
        .iter()
        .map(|f| format!("{:?}", f.flags()))
        .collect::<String>();
    let _ = s.logout();
    flags
}

#[test]
fn charsets_decode_end_to_end() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let config = rig.config_with(
            &rig.dovecot.account_toml("main", "implicit"),
            "summary_threshold = 10\n",
        );
        let _daemon = rig.daemon_with_config(&config, &["main/INBOX"]);
        let vectors = [
            // GBK: 测试邮件
            ("=?GBK?B?suLK1NPKvP4=?=", "测试邮件"),
            // GB18030 four-byte sequence: 𠀀 (U+20000) followed by 中
            ("=?GB18030?B?lTKCNtbQ?=", "𠀀中"),
            // Big5: 繁體
            ("=?Big5?B?wWPF6Q==?=", "繁體"),
            // ISO-2022-JP: 日本語
            ("=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?=", "日本語"),
            // UTF-8 Q with underscores and hex: Grüße aus Köln
            (
                "=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=",
                "Grüße aus Köln",
            ),
        ];
        for (raw, _) in &vectors {
            rig.append(raw);
        }
        let lines = rig.wait_new_mail(vectors.len());
        let expected: Vec<&str> = vectors.iter().map(|(_, d)| *d).collect();
        assert_eq!(subjects(&lines), expected);
        let notes = rig.notifications.wait_for_count(vectors.len(), WAIT);
        for (n, want) in notes.iter().zip(&expected) {
            assert!(n.body.starts_with(&format!("{want}\n")), "{}", n.body);
        }
    });
}

#[test]
fn a_burst_is_one_summary_and_the_next_replaces_it() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let daemon = rig.daemon(
            &rig.dovecot.account_toml("main", "implicit"),
            &["main/INBOX"],
        );
        // Twelve at once: appended in one session so they land in one wake.
        let mut s = rig.dovecot.session();
        for i in 0..12 {
            s.append("INBOX", &message(&format!("burst {i}"), "b@example.com"))
                .finish()
                .unwrap();
        }
        let _ = s.logout();
        let lines = rig.wait_new_mail(12);
        assert_eq!(lines.len(), 12);
        daemon.wait_for_output(WAIT, "subject=\"burst 11\"");
        rig.wait_syslog("subject=\"burst 11\"");
        let notes = rig.notifications.wait_for_count(1, WAIT);
        // The burst may be split over a few wakes by the server; each wake of more than
        // three is one summary, and each summary replaces the previous one.
        let summaries: Vec<_> = notes
            .iter()
            .filter(|n| n.summary.contains("new messages in main/INBOX"))
            .collect();
        assert!(!summaries.is_empty(), "{notes:#?}");
        assert!(notes.len() < 12, "{notes:#?}");
        assert!(
            summaries[0].body.contains("b@example.com: burst 0"),
            "{}",
            summaries[0].body
        );
        for pair in summaries.windows(2) {
            assert_eq!(pair[1].replaces_id, pair[0].id, "{summaries:#?}");
        }

        // A second burst replaces the last summary on screen instead of stacking.
        let last = summaries.last().unwrap().id;
        let mut s = rig.dovecot.session();
        for i in 0..5 {
            s.append("INBOX", &message(&format!("second {i}"), "c@example.com"))
                .finish()
                .unwrap();
        }
        let _ = s.logout();
        rig.wait_new_mail(17);
        let again = wait_until(WAIT, "a summary of the second burst", || {
            rig.notifications
                .notifications()
                .into_iter()
                .find(|n| n.body.contains("second"))
        });
        assert!(
            again.summary.ends_with("new messages in main/INBOX"),
            "{again:#?}"
        );
        assert_eq!(again.replaces_id, last);
        // The summary on screen counts every message since it appeared: all 17, less any
        // that got a popup of their own (a first wake of three or fewer).
        rig.notifications.wait_for_count(1, WAIT);
        let all = wait_until(WAIT, "the last summary", || {
            let all = rig.notifications.notifications();
            all.last()
                .is_some_and(|n| n.body.contains("second"))
                .then_some(all)
        });
        let singles = all
            .iter()
            .filter(|n| !n.summary.contains("new messages"))
            .count();
        let counted: usize = all
            .last()
            .unwrap()
            .summary
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(counted + singles, 17, "{all:#?}");
    });
}

/// Flood control: a stream of single-message wakes gets `summary_threshold` popups at
/// once and one summary for the rest once the stream pauses, while every syslog line is
/// written at once. (Before it, each wake was judged alone: ~85 popups for 1,000 messages
/// that Dovecot stored over 14 s, see docs/PERFORMANCE.md.)
#[test]
fn a_trickle_of_mail_is_summed_up_once_it_pauses() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let config = rig.config_with(
            &rig.dovecot.account_toml("main", "implicit"),
            // Long enough that the six single wakes (~0.5 s each, Dovecot's IDLE delay)
            // fall into one window.
            "summary_threshold = 2\nburst_window_secs = 8\n",
        );
        let _daemon = rig.daemon_with_config(&config, &["main/INBOX"]);
        for i in 0..6 {
            rig.append(&format!("trickle {i}"));
            // One wake per message: wait for its syslog line before the next.
            rig.wait_new_mail(i + 1);
        }
        // Syslog is never held; popups past the threshold are. (Popups go out from the
        // notification thread, so wait for the first two.)
        let singles = rig.notifications.wait_for_count(2, WAIT)[..2].to_vec();
        assert!(singles[0].body.starts_with("trickle 0\n"), "{singles:#?}");
        assert!(singles[1].body.starts_with("trickle 1\n"), "{singles:#?}");

        // The other four come as one summary a second after the last. (If Dovecot paused
        // for over a second between two of them, in two popups: a single one, or a summary
        // that the next replaces and counts in. So count messages, not popups: the latest
        // summary's count plus the held ones shown singly.)
        let covered = |held: &[crate::support::dbus::Notify]| -> usize {
            let count = |n: &crate::support::dbus::Notify| {
                n.summary
                    .strip_suffix(" new messages in main/INBOX")
                    .map(|c| c.parse::<usize>().unwrap())
            };
            held.iter().rev().find_map(count).unwrap_or(0)
                + held.iter().filter(|n| count(n).is_none()).count()
        };
        let all = wait_until(Duration::from_secs(30), "the held four shown", || {
            let all = rig.notifications.notifications();
            (covered(&all[2..]) >= 4).then_some(all)
        });
        let held = &all[2..];
        assert_eq!(covered(held), 4, "{all:#?}");
        assert!(held.len() <= 2, "{all:#?}");
        let body = &held[0].body;
        assert!(
            body.starts_with("sender@example.com: trickle 2\nsender@example.com: trickle 3")
                || body.starts_with("trickle 2\n"),
            "{all:#?}"
        );
        assert_eq!(rig.new_mail_lines().len(), 6);
    });
}

#[test]
fn privacy_and_quiet_mailboxes() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        rig.dovecot.create_mailbox("Lists");
        let account = rig
            .dovecot
            .account_toml("main", "implicit")
            .replace(
                "mailboxes = [\"INBOX\"]",
                "mailboxes = [\"INBOX\", { name = \"Lists\", notify = false }]\nshow_subject = false\nshow_sender = false",
            );
        let daemon = rig.daemon(&account, &["main/INBOX", "main/Lists"]);
        rig.dovecot
            .append("Lists", &message("list traffic", "list@example.com"));
        rig.append("confidential merger");
        let lines = rig.wait_new_mail(2);
        daemon.wait_for_output(WAIT, "subject=\"confidential merger\"");
        rig.wait_syslog("subject=\"confidential merger\"");
        let notes = rig.notifications.wait_for_count(1, WAIT);
        // The syslog record is complete; the popup reveals nothing, and Lists has none.
        let mut got = subjects(&lines);
        got.sort();
        assert_eq!(got, vec!["confidential merger", "list traffic"]);
        assert_eq!(notes.len(), 1, "{notes:#?}");
        assert_eq!(notes[0].summary, "New mail in main/INBOX");
        assert_eq!(notes[0].body, "");
        assert!(!format!("{notes:?}").contains("sender@example.com"));
    });
}

#[test]
fn mark_as_read_sets_seen_and_the_popup_closes() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let _daemon = rig.daemon(
            &rig.dovecot.account_toml("main", "implicit"),
            &["main/INBOX"],
        );
        rig.append("read me from the popup");
        let note = rig.notifications.wait_for_count(1, WAIT).remove(0);
        assert!(
            note.actions.contains(&"read".to_owned()),
            "{:?}",
            note.actions
        );
        assert!(!flags_of(&rig, 1).contains("Seen"));

        rig.notifications.emit_action_invoked(note.id, "read");
        wait_until(WAIT, "\\Seen on the server", || {
            flags_of(&rig, 1).contains("Seen").then_some(())
        });
        // The watcher saw the flag change during IDLE and closed the popup.
        wait_until(WAIT, "the popup closed", || {
            rig.notifications.closed().contains(&note.id).then_some(())
        });
    });
}

/// A config whose `open_command` touches `marker`.
fn open_command_config(rig: &Rig, marker: &std::path::Path) -> String {
    rig.config_with(
        &rig.dovecot.account_toml("main", "implicit"),
        &format!(
            "open_command = [\"touch\", {}]\n",
            crate::support::toml_string(&marker.to_string_lossy())
        ),
    )
}

#[test]
fn reading_elsewhere_closes_the_popup_and_open_runs_the_command() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let marker = rig.state.path().join("opened");
        let config = open_command_config(&rig, &marker);
        let _daemon = rig.daemon_with_config(&config, &["main/INBOX"]);
        rig.append("first");
        rig.append("second");
        let notes = rig.notifications.wait_for_count(2, WAIT);
        assert!(
            notes[0].actions.contains(&"default".to_owned()),
            "{:?}",
            notes[0].actions
        );

        // Clicking the popup runs open_command (argv, no shell).
        rig.notifications
            .emit_action_invoked(notes[0].id, "default");
        wait_until(WAIT, "open_command to run", || {
            marker.exists().then_some(())
        });

        // Another client reads the second message: its popup closes, the first stays.
        let mut s = rig.dovecot.session();
        s.select("INBOX").unwrap();
        s.uid_store("2", "+FLAGS (\\Seen)").unwrap();
        let _ = s.logout();
        wait_until(WAIT, "the second popup closed", || {
            rig.notifications
                .closed()
                .contains(&notes[1].id)
                .then_some(())
        });
        assert!(!rig.notifications.closed().contains(&notes[0].id));
    });
}

#[test]
fn hooks_run_once_per_burst_and_mail_data_stays_inert() {
    with_timeout(LIMIT, || {
        use std::os::unix::fs::PermissionsExt;
        let rig = Rig::start(DovecotOptions::default());
        let dir = rig.state.path().join("hook");
        std::fs::create_dir_all(&dir).unwrap();
        // The hook itself may be a shell script: what matters is that mailpushd never builds
        // a shell command out of mail data.
        let script = dir.join("hook.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\nn=$(ls \"$1\" | grep -c '^run')\ncat > \"$1/run$n.json\"\nenv | grep '^MAILPUSHD_' | sort > \"$1/run$n.env\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pwned = dir.join("pwned");
        let hostile = format!("$(touch {}); `touch {}`", pwned.display(), pwned.display());
        let account = format!(
            "{}on_new_mail = [{}, {}]\nhook_debounce_ms = 1500\n",
            rig.dovecot.account_toml("main", "implicit"),
            crate::support::toml_string(&script.to_string_lossy()),
            crate::support::toml_string(&dir.to_string_lossy()),
        );
        let daemon = rig.daemon(&account, &["main/INBOX"]);
        rig.append(&hostile);
        for i in 1..10 {
            rig.append(&format!("burst {i}"));
        }
        rig.wait_new_mail(10);
        // The script writes the JSON first, the environment last: once that is there, both
        // are complete.
        let env = wait_until(WAIT, "the hook's run", || {
            std::fs::read_to_string(dir.join("run0.env"))
                .ok()
                .filter(|e| e.contains("MAILPUSHD_COUNT"))
        });
        let json = std::fs::read_to_string(dir.join("run0.json")).unwrap();
        // One run for the burst of ten (all appended within the debounce window).
        assert!(env.contains("MAILPUSHD_COUNT=10"), "{env}");
        assert!(env.contains("MAILPUSHD_ACCOUNT=main"), "{env}");
        assert!(env.contains("MAILPUSHD_MAILBOX=INBOX"), "{env}");
        let parsed: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed.len(), 10, "{json}");
        assert_eq!(parsed[0]["subject"], hostile.as_str());
        assert_eq!(parsed[0]["account"], "main");
        assert!(!pwned.exists(), "mail data was executed");
        daemon.wait_for_output(WAIT, "on_new_mail");
        assert!(!dir.join("run1.json").exists(), "more than one run");
    });
}

/// Lines written to a notification socket, read on a thread of their own (sd_notify).
fn notify_socket(dir: &std::path::Path) -> (String, Arc<Mutex<Vec<String>>>) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // Ends when the test process does; the socket outlives the daemon harmlessly.
        while let Ok(n) = socket.recv(&mut buf) {
            crate::support::lock(&sink).push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    (path.to_string_lossy().into_owned(), received)
}

/// Appends to `mailbox` and waits for its syslog line; returns how long that took.
fn append_and_time(rig: &Rig, mailbox: &str, subject: &str) -> Duration {
    let sent = Instant::now();
    rig.dovecot
        .append(mailbox, &message(subject, "sender@example.com"));
    rig.syslog
        .wait_for_line(WAIT, &format!("subject=\"{subject}\""));
    sent.elapsed()
}

/// Issue 12: a notification server that stops answering (SIGSTOP, a frozen compositor)
/// used to block every account under the shared lock, and SIGTERM with it. Now each
/// account's syslog line still comes at once, the stall is logged once and shown in
/// STATUS=, what was missed is summed up when the server answers again, and a stop takes
/// under 2 s even with a call to the frozen server in flight.
#[test]
fn a_frozen_notification_server_costs_only_itself() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        rig.dovecot.create_mailbox("Lists");
        let accounts = format!(
            "{}\n{}",
            rig.dovecot.account_toml("a", "implicit"),
            rig.dovecot
                .account_toml("b", "implicit")
                .replace("mailboxes = [\"INBOX\"]", "mailboxes = [\"Lists\"]"),
        );
        let sd = tempfile::tempdir().unwrap();
        let (socket, status) = notify_socket(sd.path());
        let mut daemon = Daemon::start_with_env(
            &rig.config(&accounts),
            Some(&rig.bus),
            rig.state.path(),
            &[("NOTIFY_SOCKET", &socket)],
        );
        daemon.wait_for_output(WAIT, "watching a/INBOX ");
        daemon.wait_for_output(WAIT, "watching b/Lists ");
        rig.append("warm up");
        rig.notifications.wait_for_count(1, WAIT);

        rig.notifications.freeze();
        // Each line well within the 3 s that one popup call now waits for the server (and
        // they used to wait for ever): the lock is not held across D-Bus calls.
        for (mailbox, subject) in [
            ("INBOX", "frozen a1"),
            ("Lists", "frozen b1"),
            ("INBOX", "frozen a2"),
            ("Lists", "frozen b2"),
        ] {
            let took = append_and_time(&rig, mailbox, subject);
            eprintln!("FIGURE frozen notification server: {subject}: APPEND start -> syslog line {took:?}");
            assert!(
                took < Duration::from_millis(2500),
                "{subject}: syslog line after {took:?}"
            );
        }
        daemon.wait_for_output(WAIT, "does not answer");
        wait_until(WAIT, "STATUS= naming the stall", || {
            crate::support::lock(&status)
                .iter()
                .any(|m| m.contains("STATUS=") && m.contains("notifications not answering"))
                .then_some(())
        });
        assert_eq!(daemon.count_output("does not answer"), 1, "logged once");

        // Answering again: the popups missed meanwhile are summed up per mailbox.
        rig.notifications.thaw();
        daemon.wait_for_output(Duration::from_secs(30), "answers again");
        let summed = wait_until(WAIT, "a summary for each mailbox", || {
            let all = rig.notifications.notifications();
            let of = |place: &str| {
                all.iter()
                    .any(|n| n.summary.ends_with(&format!("in {place}")))
            };
            (of("a/INBOX") && of("b/Lists")).then_some(all)
        });
        assert!(summed.len() <= 6, "bounded: {summed:#?}");
        wait_until(WAIT, "STATUS= without the stall", || {
            crate::support::lock(&status)
                .last()
                .is_some_and(|m| !m.contains("not answering"))
                .then_some(())
        });

        // Frozen again, with a popup call in flight: SIGTERM still stops within 2 s.
        rig.notifications.freeze();
        append_and_time(&rig, "INBOX", "frozen at stop");
        let (exit, took) = daemon.terminate();
        assert!(exit.success(), "{exit}");
        assert!(took < Duration::from_secs(2), "stopped after {took:?}");
    });
}

/// Issue 12: after reloads that changed `[notifications]`, each reload used to add a
/// connection and a listener, so one click ran `open_command` once per reload plus one.
#[test]
fn a_click_after_reloads_runs_open_command_once() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let marker = rig.state.path().join("opened");
        let open = format!(
            "open_command = [\"sh\", \"-c\", \"echo run >> \\\"$0\\\"\", {}]\n",
            crate::support::toml_string(&marker.to_string_lossy())
        );
        let account = rig.dovecot.account_toml("main", "implicit");
        let daemon = rig.daemon_with_config(&rig.config_with(&account, &open), &["main/INBOX"]);
        rig.append("before the reloads");
        rig.notifications.wait_for_count(1, WAIT);
        for (i, urgency) in ["low", "critical"].iter().enumerate() {
            let changed = format!("{open}urgency = \"{urgency}\"\n");
            std::fs::write(daemon.config_path(), rig.config_with(&account, &changed)).unwrap();
            assert!(daemon.signal("HUP"));
            daemon.wait_for_output_count(WAIT, "configuration reloaded", i + 1);
        }
        rig.append("after the reloads");
        let note = rig.notifications.wait_for_count(2, WAIT).remove(1);
        assert_eq!(note.urgency, Some(2), "the reload took effect");
        assert_eq!(
            connections_of(&rig.bus, daemon.pid()),
            2,
            "one notification connection and the D-Bus interface's, whatever the reloads"
        );

        rig.notifications.emit_action_invoked(note.id, "default");
        // Signals are handled in order: once this is ignored, the click was passed on.
        rig.notifications.emit_action_invoked(9999, "default");
        daemon.wait_for_output(WAIT, "ActionInvoked(9999");
        daemon.wait_for_output(WAIT, "open_command \"sh\" started");
        let runs = wait_until(WAIT, "open_command's run", || {
            std::fs::read_to_string(&marker)
                .ok()
                .filter(|s| s.ends_with('\n'))
        });
        assert_eq!(runs, "run\n");
        assert_eq!(daemon.count_output("open_command \"sh\" started"), 1);
        assert_eq!(
            daemon.count_output(&format!("popup {}: action", note.id)),
            1
        );
    });
}

/// Issue 12: GNOME Shell (and the test server) send `ActionInvoked` to every listener,
/// so a click on another application's popup must not run mailpushd's `open_command`,
/// nor "Mark as read" anything.
#[test]
fn a_click_on_a_popup_that_is_not_ours_does_nothing() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let marker = rig.state.path().join("opened");
        let config = open_command_config(&rig, &marker);
        let daemon = rig.daemon_with_config(&config, &["main/INBOX"]);
        rig.append("ours");
        let ours = rig.notifications.wait_for_count(1, WAIT).remove(0);
        let theirs = send_notify(&rig.bus, "another-app", "Chat", "hello");
        assert_ne!(theirs, ours.id);

        rig.notifications.emit_action_invoked(theirs, "default");
        rig.notifications.emit_action_invoked(theirs, "read");
        daemon.wait_for_output(WAIT, &format!("ActionInvoked({theirs}, \"read\") ignored"));
        // Ours still works, and it is the only click acted on.
        rig.notifications.emit_action_invoked(ours.id, "default");
        wait_until(WAIT, "open_command to run", || {
            marker.exists().then_some(())
        });
        daemon.wait_for_output(WAIT, &format!("popup {}: action \"default\"", ours.id));
        assert_eq!(daemon.count_output(": action \""), 1, "{}", daemon.output());
        assert_eq!(daemon.count_output(&format!("popup {theirs}:")), 0);
        assert_eq!(daemon.count_output("marked as read"), 0);
    });
}

/// Issue 12: a notification server that restarts hands our popups' ids to other
/// applications. The daemon forgets them (no close of another app's popup, no
/// `replaces_id` with a stale id, no count of the old server's messages in a summary)
/// and asks the new server what it can do.
#[test]
fn a_restarted_server_gets_no_stale_ids_and_is_asked_its_capabilities() {
    with_timeout(LIMIT, || {
        let mut rig = Rig::start(DovecotOptions::default());
        // One popup, then the rest of the window held for a summary.
        let config = rig.config_with(
            &rig.dovecot.account_toml("main", "implicit"),
            "summary_threshold = 1\nburst_window_secs = 60\n",
        );
        let daemon = rig.daemon_with_config(&config, &["main/INBOX"]);
        rig.append("one");
        rig.notifications.wait_for_count(1, WAIT);
        rig.append("two");
        rig.append("three");
        let old = wait_until(WAIT, "the first summary", || {
            rig.notifications
                .notifications()
                .into_iter()
                .find(|n| n.summary == "2 new messages in main/INBOX")
        });
        assert_eq!(rig.notifications.call_count("GetCapabilities"), 1);

        let Rig {
            notifications, bus, ..
        } = &mut rig;
        notifications.restart(bus);
        daemon.wait_for_output(WAIT, "desktop notification server changed");
        wait_until(WAIT, "the new server's capabilities read", || {
            (rig.notifications.call_count("GetCapabilities") >= 1).then_some(())
        });
        // Another application's popup gets the id our first popup had on the old server.
        assert_eq!(send_notify(&rig.bus, "another-app", "Chat", "hello"), 1);

        // Read elsewhere: the old popup (id 1 on the old server) must not be closed here.
        let mut s = rig.dovecot.session();
        s.select("INBOX").unwrap();
        s.uid_store("1", "+FLAGS (\\Seen)").unwrap();
        let _ = s.logout();
        rig.append("four");
        rig.append("five");
        let new = wait_until(WAIT, "a summary on the new server", || {
            rig.notifications
                .notifications()
                .into_iter()
                .find(|n| n.app_name == "mailpushd" && n.summary.contains("new messages"))
        });
        assert_eq!(new.summary, "2 new messages in main/INBOX", "{new:#?}");
        assert_eq!(
            new.replaces_id, 0,
            "not the old server's summary {}",
            old.id
        );
        assert!(rig.notifications.closed().is_empty());
        assert!(!daemon.output().contains("closing popup"));
    });
}

/// Issue 12 item 8: a subject with an encoded CR/LF stays on one line, a sender name of
/// thousands of characters is cut in the title, and an apostrophe arrives as it is (GNOME
/// Shell shows `&#39;` literally).
#[test]
fn popup_text_is_one_line_per_field_bounded_and_plainly_escaped() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let _daemon = rig.daemon(
            &rig.dovecot.account_toml("main", "implicit"),
            &["main/INBOX"],
        );
        rig.dovecot.append(
            "INBOX",
            &message(
                "=?UTF-8?Q?Invoice=0D=0AFrom:_your_bank=09pay_now?=",
                "sender@example.com",
            ),
        );
        let words = vec![format!("=?UTF-8?Q?{}?=", "N".repeat(60)); 50].join("\r\n ");
        rig.dovecot.append(
            "INBOX",
            &message("long name", &format!("{words} <long@example.com>")),
        );
        rig.dovecot
            .append("INBOX", &message("Don't <stop> & go", "sender@example.com"));
        let notes = rig.notifications.wait_for_count(3, WAIT);
        let find = |needle: &str| {
            notes
                .iter()
                .find(|n| n.body.contains(needle))
                .unwrap_or_else(|| panic!("no popup with {needle:?}: {notes:#?}"))
        };

        let forged = find("Invoice");
        assert_eq!(
            forged.body, "Invoice From: your bank pay now\nmain/INBOX",
            "one line for the subject"
        );

        let long = find("long name");
        assert!(long.summary.starts_with("NNNN"), "{}", long.summary);
        assert_eq!(long.summary.chars().count(), 80, "{}", long.summary);
        assert!(long.summary.ends_with('…'));

        let apostrophe = find("Don");
        assert_eq!(
            apostrophe.body, "Don't &lt;stop&gt; &amp; go\nmain/INBOX",
            "only & < > escaped"
        );
    });
}

/// Issue 12: a notification service that D-Bus activates but that never takes its name
/// made every popup wait out the bus's 25 s activation timeout, one after another, for
/// every account. Now each call gives up after 3 s on the notification thread, and no
/// account's syslog line waits for it.
#[test]
fn a_notification_service_that_never_starts_costs_only_itself() {
    with_timeout(LIMIT, || {
        let dovecot = crate::support::dovecot::Dovecot::start(DovecotOptions::default());
        dovecot.create_mailbox("Lists");
        let bus = crate::support::dbus::SessionBus::start_with_stuck_notification_service();
        let syslog = crate::support::syslog::SyslogRecorder::start();
        let config = format!(
            "{}\n{}\n[notifications]\nenabled = true\n{}",
            dovecot.account_toml("a", "implicit"),
            dovecot
                .account_toml("b", "implicit")
                .replace("mailboxes = [\"INBOX\"]", "mailboxes = [\"Lists\"]"),
            syslog.config_toml()
        );
        let mut daemon = Daemon::start(&config, Some(&bus));
        daemon.wait_for_output(WAIT, "watching a/INBOX ");
        daemon.wait_for_output(WAIT, "watching b/Lists ");
        for (mailbox, subject) in [
            ("INBOX", "stuck a1"),
            ("Lists", "stuck b1"),
            ("INBOX", "stuck a2"),
            ("Lists", "stuck b2"),
        ] {
            let sent = Instant::now();
            dovecot.append(mailbox, &message(subject, "sender@example.com"));
            syslog.wait_for_line(WAIT, &format!("subject=\"{subject}\""));
            let took = sent.elapsed();
            eprintln!("FIGURE never-starting notification service: {subject}: APPEND start -> syslog line {took:?}");
            assert!(
                took < Duration::from_millis(2500),
                "{subject}: syslog line after {took:?}"
            );
        }
        daemon.wait_for_output(WAIT, "does not answer");
        let (status, took) = daemon.terminate();
        assert_eq!(status.code(), Some(0), "{}", daemon.output());
        assert!(took < Duration::from_secs(2), "stopped after {took:?}");
    });
}

/// Issue 12: syslog was written under the shared lock with blocking sockets, so a syslog
/// daemon that stopped reading (its socket buffer full) blocked every account's popups and
/// the stop. Now lines wait on a thread of their own, each write for at most 1 s.
#[test]
fn a_syslog_that_stops_reading_costs_only_itself() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions {
            fsync: false,
            ..DovecotOptions::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stuck-syslog.sock");
        // Bound and never read: once its buffer is full, every send blocks.
        let _stuck = UnixDatagram::bind(&path).unwrap();
        let config = format!(
            "{}\n[notifications]\nenabled = true\nburst_window_secs = 0\n\
             [syslog]\nenabled = true\naddress = {}\n",
            rig.dovecot.account_toml("main", "implicit"),
            crate::support::toml_string(&format!("unix:{}", path.display()))
        );
        let mut daemon = rig.daemon_with_config(&config, &["main/INBOX"]);
        // Far more lines than a datagram socket buffer holds.
        rig.dovecot.bulk_append("INBOX", 3000, |i| {
            message(
                &format!("flood {i} {}", "x".repeat(200)),
                "bulk@example.com",
            )
        });
        rig.notifications.wait_for_count(1, WAIT);
        // The whole flood read, so that the next message makes a wake (and a popup) of its
        // own instead of ending the flood's last summary, which lists only the first few.
        daemon.wait_for_output(WAIT, "uid=3000 ");
        rig.append("after the flood");
        wait_until(WAIT, "the popup after the flood", || {
            rig.notifications
                .notifications()
                .iter()
                .any(|n| {
                    n.body.contains("after the flood") || n.summary.contains("after the flood")
                })
                .then_some(())
        });
        daemon.wait_for_output(WAIT, "syslog at unix:");
        let (status, took) = daemon.terminate();
        assert_eq!(status.code(), Some(0), "{}", daemon.output());
        assert!(took < Duration::from_secs(2), "stopped after {took:?}");
    });
}
