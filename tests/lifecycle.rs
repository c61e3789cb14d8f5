//! The daemon as a process among others, through the real binary against a real Dovecot
//! and a private session bus: one instance per state directory, state files of accounts
//! that differ only by port, a config directory that is replaced, hooks pending at
//! shutdown, and a mailbox listed twice.

mod support;

use std::fs;
use std::time::Duration;

use support::dovecot::DovecotOptions;
use support::rig::{subjects, Rig, WAIT};
use support::{run_command, with_timeout};

const LIMIT: Duration = Duration::from_secs(120);

/// sysexits.h EX_TEMPFAIL, as documented in mailpushd(1).
const EX_ALREADY_RUNNING: i32 = 75;

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_mailpushd")
}

#[test]
fn a_second_instance_on_the_same_state_directory_exits_75_naming_the_first() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = rig.dovecot.account_toml("main", "implicit");
        let first = rig.daemon(&account, &["main/INBOX"]);
        let lock = rig.state.path().join("mailpushd").join("lock");
        assert_eq!(
            fs::read_to_string(&lock).unwrap(),
            format!("{}\n", first.pid())
        );

        let second = rig.start_daemon(&account);
        let status = second.wait_exit(WAIT);
        assert_eq!(
            status.code(),
            Some(EX_ALREADY_RUNNING),
            "{}",
            second.output()
        );
        let line = second.wait_for_output(WAIT, "already running");
        assert!(
            line.contains(&format!("(PID {})", first.pid())),
            "names the first instance: {line}"
        );
        assert!(
            line.contains(&rig.state.path().join("mailpushd").display().to_string()),
            "names the state directory: {line}"
        );
        // It never got as far as connecting.
        assert_eq!(second.count_output("watching "), 0, "{}", second.output());
        assert_eq!(
            fs::read_to_string(&lock).unwrap(),
            format!("{}\n", first.pid()),
            "the refused instance left the holder's PID alone"
        );

        // The first keeps announcing, once.
        rig.append("after the refused second start");
        let lines = rig.wait_new_mail(1);
        assert_eq!(subjects(&lines), ["after the refused second start"]);
        let notes = rig.notifications.wait_for_count(1, WAIT);
        assert_eq!(notes.len(), 1);

        // --check is unaffected by the lock.
        let config = first.config_path();
        let out = run_command(
            "mailpushd --check",
            std::process::Command::new(binary())
                .arg("--check")
                .arg("--config")
                .arg(&config)
                .env("XDG_STATE_HOME", rig.state.path()),
            WAIT,
        );
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        drop(second);

        // Once the first is gone, a new one starts (the stale file is no obstacle).
        let mut first = first;
        assert_eq!(first.terminate().0.code(), Some(0));
        let mut third = rig.daemon(&account, &["main/INBOX"]);
        assert_eq!(
            fs::read_to_string(&lock).unwrap(),
            format!("{}\n", third.pid())
        );
        assert_eq!(third.terminate().0.code(), Some(0));
    });
}

#[test]
fn inbox_listed_twice_in_another_case_is_a_config_error_with_its_position() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        fs::write(
            &config,
            "[[accounts]]\nname = \"a\"\nhost = \"imap.example.com\"\nusername = \"u\"\n\
             password_command = [\"true\"]\nmailboxes = [\"INBOX\", \"Lists\", \"Inbox\"]\n",
        )
        .unwrap();
        let check = run_command(
            "mailpushd --check",
            std::process::Command::new(binary())
                .arg("--check")
                .arg("--config")
                .arg(&config),
            WAIT,
        );
        assert_eq!(check.status.code(), Some(78), "{check:?}");
        assert_eq!(
            String::from_utf8_lossy(&check.stdout),
            format!(
                "{}:6:32: mailbox \"Inbox\" is listed twice (as \"INBOX\": INBOX is \
                 case-insensitive)\n",
                config.display()
            )
        );
        // The daemon refuses it the same way: no second watcher on one mailbox.
        let run = run_command(
            "mailpushd",
            std::process::Command::new(binary())
                .arg("--config")
                .arg(&config)
                .env("XDG_STATE_HOME", dir.path().join("state")),
            WAIT,
        );
        assert_eq!(run.status.code(), Some(78), "{run:?}");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            stderr.contains(":6:32: mailbox \"Inbox\" is listed twice"),
            "{stderr}"
        );
        assert!(!stderr.contains("watching"), "{stderr}");
    });
}
