//! Live configuration and systemd integration through the real binary: reload by file
//! change (rename-on-save, as editors do) and by SIGHUP, broken configs survived, the
//! sd_notify protocol on a socket of our own, SIGUSR1, and `--check --connect`.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use crate::support::daemon::Daemon;
use crate::support::dovecot::{message, DovecotOptions};
use crate::support::rig::{subjects, Rig, WAIT};
use crate::support::{with_timeout, FIVE_MISTAKES};

const LIMIT: Duration = Duration::from_secs(90);

/// Saves `text` the way editors do: a new file in the same directory renamed over the old.
fn save_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn adding_a_mailbox_by_rename_on_save_keeps_the_other_connection() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        rig.dovecot.create_mailbox("Lists");
        let account = rig.dovecot.account_toml("main", "implicit");
        let daemon = rig.daemon(&account, &["main/INBOX"]);
        let logins_before = rig.dovecot.wait_for_logins(2, WAIT);

        let two = account.replace(
            "mailboxes = [\"INBOX\"]",
            "mailboxes = [\"INBOX\", \"Lists\"]",
        );
        save_by_rename(&daemon.config_path(), &rig.config(&two));
        daemon.wait_for_output(WAIT, "watching main/Lists ");
        daemon.wait_for_output(WAIT, "1 kept, 0 restarted, 0 stopped, 1 started");
        // Only the new watcher logged in; INBOX's connection was left alone.
        assert_eq!(
            rig.dovecot.wait_for_logins(logins_before + 1, WAIT),
            logins_before + 1
        );
        assert_eq!(daemon.count_output("watching main/INBOX "), 1);

        rig.append("to inbox");
        rig.dovecot
            .append("Lists", &message("to lists", "l@example.com"));
        let lines = rig.wait_new_mail(2);
        let mut got = subjects(&lines);
        got.sort();
        assert_eq!(got, vec!["to inbox", "to lists"]);
    });
}

#[test]
fn a_broken_config_is_reported_and_the_old_one_keeps_working() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = rig.dovecot.account_toml("main", "implicit");
        let daemon = rig.daemon(&account, &["main/INBOX"]);
        let path = daemon.config_path();

        save_by_rename(
            &path,
            &format!("{}\n[[accounts]\nname = \"x\"\n", rig.config(&account)),
        );
        let error = daemon.wait_for_output(WAIT, &format!("{}:", path.display()));
        assert!(error.contains("ERROR"), "{error}");
        // file:line:column
        let after = error.split(&format!("{}:", path.display())).nth(1).unwrap();
        let mut parts = after.splitn(3, ':');
        assert!(parts.next().unwrap().parse::<u32>().is_ok(), "{error}");
        assert!(parts.next().unwrap().parse::<u32>().is_ok(), "{error}");
        let notes = rig.notifications.wait_for_count(1, WAIT);
        assert_eq!(notes[0].summary, "mailpushd: configuration not reloaded");
        let logged = rig
            .syslog
            .wait_for_line(WAIT, &format!("{}:", path.display()));
        assert!(logged.starts_with("<19>"), "mail.err expected: {logged}");

        // Still watching with the old config.
        rig.append("still announced");
        assert_eq!(subjects(&rig.wait_new_mail(1)), vec!["still announced"]);
        assert!(daemon.try_wait().is_none());

        // Fixing the file is picked up too.
        save_by_rename(&path, &rig.config(&account));
        daemon.wait_for_output(WAIT, "1 kept, 0 restarted, 0 stopped, 0 started");
    });
}

/// Issue 13: a reload of a file with five problems logs all five, each located, keeps the
/// old config running, and the popup says how many more there are.
#[test]
fn a_reload_with_five_problems_logs_all_five_and_keeps_the_old_config() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = rig.dovecot.account_toml("main", "implicit");
        let daemon = rig.daemon(&account, &["main/INBOX"]);
        let path = daemon.config_path();

        save_by_rename(&path, FIVE_MISTAKES);
        let p = path.display();
        // (Syslog lines escape the quotes in the messages; the needles have none.)
        for at in [
            "4:8: `port` must be an integer",
            "6:1: unknown key `passwrd` in [[accounts]]; did you mean `password`?",
            "10:8: duplicate account name",
            "11:12: unknown provider",
            "13:20: `password_command` must be a list of strings",
        ] {
            let logged = rig.syslog.wait_for_line(WAIT, &format!("{p}:{at}"));
            assert!(logged.starts_with("<19>"), "mail.err expected: {logged}");
            daemon.wait_for_output(WAIT, &format!("{p}:{at}"));
        }
        daemon.wait_for_output(WAIT, "did you mean \"gmail\"?");
        daemon.wait_for_output(
            WAIT,
            "configuration not reloaded (5 problems); still running with the previous one",
        );
        let notes = rig.notifications.wait_for_count(1, WAIT);
        assert_eq!(notes[0].summary, "mailpushd: configuration not reloaded");
        assert!(
            notes[0]
                .body
                .contains("and 4 more problems (mailpushd --check lists them)"),
            "{}",
            notes[0].body
        );

        // Still watching with the old config.
        rig.append("announced after the rejected reload");
        assert_eq!(
            subjects(&rig.wait_new_mail(1)),
            vec!["announced after the rejected reload"]
        );
        assert!(daemon.try_wait().is_none());
    });
}

#[test]
fn sighup_reloads_and_a_renamed_account_keeps_its_state() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = rig.dovecot.account_toml("main", "implicit");
        let daemon = rig.daemon(&account, &["main/INBOX"]);
        rig.append("before rename");
        rig.wait_new_mail(1);

        // Written in place (no rename): the watcher sees it too, but SIGHUP is what we test,
        // so wait for the file-change reload to finish before signalling.
        let renamed = account.replace("name = \"main\"", "name = \"renamed\"");
        std::fs::write(daemon.config_path(), rig.config(&renamed)).unwrap();
        daemon.wait_for_output(WAIT, "watching renamed/INBOX ");
        daemon.wait_for_output(WAIT, "0 kept, 0 restarted, 1 stopped, 1 started");
        assert!(daemon.signal("HUP"));
        daemon.wait_for_output(WAIT, "SIGHUP or D-Bus Reload: reloading");
        daemon.wait_for_output(WAIT, "1 kept, 0 restarted, 0 stopped, 0 started");

        // Same user, host and mailbox: the state carried over, nothing was re-announced,
        // and new mail is announced under the new name.
        rig.append("after rename");
        let lines = rig.wait_new_mail(2);
        assert_eq!(subjects(&lines), vec!["before rename", "after rename"]);
        assert!(lines[1].contains("account=renamed"), "{}", lines[1]);
    });
}

#[test]
fn sd_notify_ready_status_reloading_and_watchdog_in_order() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let dir = tempfile::tempdir().unwrap();
        let socket_path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let account = rig.dovecot.account_toml("main", "implicit");
        let daemon = rig.start_daemon_with_env(
            &account,
            &[
                ("NOTIFY_SOCKET", &socket_path.to_string_lossy()),
                // 1 s: the daemon pings every 0.5 s.
                ("WATCHDOG_USEC", "1000000"),
            ],
        );
        let mut received: Vec<String> = Vec::new();
        let mut next = |what: &str| -> String {
            let mut buf = [0u8; 4096];
            loop {
                let n = socket
                    .recv(&mut buf)
                    .unwrap_or_else(|e| panic!("waiting for {what}: {e}; got {received:?}"));
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                received.push(msg.clone());
                if msg.contains(what) {
                    return msg;
                }
            }
        };
        let ready = next("READY=1");
        assert!(ready.contains("STATUS="), "{ready}");
        let status = next("STATUS=1/1 mailboxes watching");
        assert!(!status.contains("READY=1"), "{status}");
        next("WATCHDOG=1");
        assert!(daemon.signal("HUP"));
        let reloading = next("RELOADING=1");
        assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
        next("READY=1");
        next("WATCHDOG=1");
        // The order systemd needs: READY before anything else, RELOADING before READY again.
        let first_ready = received.iter().position(|m| m.contains("READY=1")).unwrap();
        let reload = received
            .iter()
            .position(|m| m.contains("RELOADING=1"))
            .unwrap();
        let second_ready = received
            .iter()
            .rposition(|m| m.contains("READY=1"))
            .unwrap();
        assert_eq!(first_ready, 0, "{received:?}");
        assert!(reload < second_ready, "{received:?}");
    });
}

#[test]
fn sigusr1_writes_each_watchers_state() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = rig.dovecot.account_toml("main", "implicit");
        let daemon = rig.daemon(&account, &["main/INBOX"]);
        rig.append("one");
        rig.wait_new_mail(1);
        assert!(daemon.signal("USR1"));
        let line = daemon.wait_for_output(WAIT, "state: main/INBOX: idling");
        assert!(line.contains("connected since"), "{line}");
        assert!(line.contains("last event"), "{line}");
        assert!(daemon.try_wait().is_none());
    });
}

#[test]
fn check_connect_reports_each_mailbox() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let good = rig.dovecot.account_toml("good", "implicit");
        let bad = rig
            .dovecot
            .account_toml("bad", "starttls")
            .replace(&rig.dovecot.password, "not-the-password-91c2");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, rig.config(&format!("{good}\n{bad}"))).unwrap();
        // Private, as a config with passwords should be (else --check warns first).
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailpushd"))
            .args(["--check", "--connect", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[1].starts_with("ok    good/INBOX: localhost:"),
            "{text}"
        );
        assert!(
            lines[1].contains("implicit TLS, IDLE, ID; 0 message(s)"),
            "{text}"
        );
        // NOTIFY (Dovecot offers it), the budget, and how the mailboxes would be watched.
        assert_eq!(
            lines[2], "      good: NOTIFY yes; at most 5 connections (max_connections), 1 used",
            "{text}"
        );
        assert_eq!(lines[3], "        own connection (IDLE): INBOX", "{text}");
        assert!(
            lines[4].starts_with("FAIL  bad/INBOX: localhost:"),
            "{text}"
        );
        assert!(
            lines[4].contains("login failed: [AUTHENTICATIONFAILED]"),
            "{text}"
        );
        assert!(!text.contains("not-the-password-91c2"));
    });
}

#[test]
fn the_daemon_exits_78_on_an_invalid_config() {
    with_timeout(LIMIT, || {
        let d = Daemon::start("this is = [not toml", None);
        let status = d.wait_exit(WAIT);
        assert_eq!(status.code(), Some(78));
    });
}
