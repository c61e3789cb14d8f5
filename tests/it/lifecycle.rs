//! The daemon as a process among others, through the real binary against a real Dovecot
//! and a private session bus: one instance per state directory, state files of accounts
//! that differ only by port, a config directory that is replaced, hooks pending at
//! shutdown, and a mailbox listed twice.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::support::daemon::Daemon;
use crate::support::dovecot::{message, Dovecot, DovecotOptions};
use crate::support::rig::{subjects, Rig, WAIT};
use crate::support::{run_command, toml_string, with_timeout};

const LIMIT: Duration = Duration::from_secs(120);

/// sysexits.h EX_TEMPFAIL, as documented in mailpushd(1).
const EX_ALREADY_RUNNING: i32 = 75;

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_mailpushd")
}

/// The `*.toml` state files in the state home, sorted.
fn state_files(state_home: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(state_home.join("mailpushd"))
        .map(|it| {
            it.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".toml"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
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

#[test]
fn accounts_differing_only_by_port_each_announce_what_arrived_while_stopped() {
    with_timeout(LIMIT, || {
        // Two servers on one host, one user name: SSH tunnels to localhost, say.
        let rig = Rig::start(DovecotOptions::default());
        let other = Dovecot::start(DovecotOptions::default());
        assert_eq!(rig.dovecot.user, other.user);
        // Different numbers of messages, so a shared cursor would be wrong for one of them
        // even if both mailboxes had the same UIDVALIDITY.
        for i in 0..3 {
            rig.append(&format!("old a {i}"));
        }
        other.append("INBOX", &message("old b", "sender@example.com"));
        let accounts = format!(
            "{}{}",
            rig.dovecot.account_toml("a", "implicit"),
            other.account_toml("b", "implicit")
        );
        let mut first = rig.daemon(&accounts, &["a/INBOX", "b/INBOX"]);
        assert_eq!(first.terminate().0.code(), Some(0));
        let files = state_files(rig.state.path());
        assert_eq!(
            files,
            {
                let mut want = vec![
                    format!("alice@localhost+{}+INBOX.toml", rig.dovecot.imaps_port),
                    format!("alice@localhost+{}+INBOX.toml", other.imaps_port),
                ];
                want.sort();
                want
            },
            "one state file per server"
        );

        rig.append("new a");
        other.append("INBOX", &message("new b", "sender@example.com"));
        let second = rig.daemon(&accounts, &["a/INBOX", "b/INBOX"]);
        let lines = rig.wait_new_mail(2);
        // Both announced; then one more live message proves nothing else was pending.
        rig.append("live a");
        second.wait_for_output(WAIT, "subject=\"live a\"");
        rig.wait_syslog("subject=\"live a\"");
        let mut got = subjects(&rig.new_mail_lines());
        got.sort();
        assert_eq!(got, ["live a", "new a", "new b"], "{lines:#?}");
        assert_eq!(state_files(rig.state.path()), files);
    });
}

#[test]
fn a_state_file_named_without_the_port_is_adopted_on_upgrade() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = rig.dovecot.account_toml("main", "implicit");
        rig.append("already there");
        let mut first = rig.daemon(&account, &["main/INBOX"]);
        assert_eq!(first.terminate().0.code(), Some(0));
        // What an earlier version left: the same contents under the old name.
        let dir = rig.state.path().join("mailpushd");
        let current = format!("alice@localhost+{}+INBOX.toml", rig.dovecot.imaps_port);
        fs::rename(dir.join(&current), dir.join("alice@localhost+INBOX.toml")).unwrap();

        rig.append("while stopped");
        let second = rig.daemon(&account, &["main/INBOX"]);
        let lines = rig.wait_new_mail(1);
        rig.append("live");
        second.wait_for_output(WAIT, "subject=\"live\"");
        rig.wait_syslog("subject=\"live\"");
        assert_eq!(
            subjects(&rig.new_mail_lines()),
            ["while stopped", "live"],
            "{lines:#?}"
        );
        assert_eq!(state_files(rig.state.path()), [current]);
    });
}

/// Live (not zombie) processes whose process group is `pgid`.
fn live_group_members(pgid: u32) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("");
            let pgrp = fields.nth(1).and_then(|g| g.parse::<u32>().ok());
            pgrp == Some(pgid) && state != "Z" && state != "X"
        })
        .collect()
}

#[test]
fn sigterm_interrupts_a_hanging_password_command_and_kills_its_group() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let scratch = tempfile::tempdir().unwrap();
        let pidfile = scratch.path().join("pid");
        // A helper that never answers, with a background child holding its stdout.
        let command = format!(
            "password_command = [\"sh\", \"-c\", \"echo $$ > \\\"$1\\\"; sleep 1000 & sleep 1000\", \
             \"sh\", {}]\n",
            toml_string(&pidfile.to_string_lossy())
        );
        let account = rig
            .dovecot
            .account_toml("main", "implicit")
            .lines()
            .filter(|l| !l.starts_with("password ="))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            + &command;
        let mut daemon = rig.start_daemon(&account);
        let pgid: u32 = crate::support::wait_until(WAIT, "the password command's pid", || {
            fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
        });
        crate::support::wait_until(WAIT, "the background sleep", || {
            (live_group_members(pgid).len() >= 2).then_some(())
        });

        let (status, took) = daemon.terminate();
        assert_eq!(status.code(), Some(0), "{}", daemon.output());
        assert!(took < Duration::from_secs(2), "stopped after {took:?}");
        // Killed with its group by the daemon, not left to the timeout (or forever).
        assert_eq!(live_group_members(pgid), Vec::<u32>::new());
        assert!(
            daemon.output().contains("stopped"),
            "watchers stopped cleanly: {}",
            daemon.output()
        );
    });
}

#[test]
fn a_replaced_config_directory_is_still_watched() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        rig.dovecot.create_mailbox("Lists");
        let account = rig.dovecot.account_toml("main", "implicit");
        let config_for = |mailboxes: &str| {
            rig.config(&account.replace(
                "mailboxes = [\"INBOX\"]",
                &format!("mailboxes = [{mailboxes}]"),
            ))
        };
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("mailpushd");
        let config = dir.join("config.toml");
        fs::create_dir(&dir).unwrap();
        fs::write(&config, config_for("\"INBOX\"")).unwrap();
        let daemon = Daemon::start_at(&config, Some(&rig.bus), rig.state.path());
        daemon.wait_for_output(WAIT, "watching main/INBOX ");

        // Moved away; a new directory with a changed config appears a moment later.
        fs::rename(&dir, root.path().join("old-1")).unwrap();
        daemon.wait_for_output(WAIT, "is gone");
        fs::create_dir(&dir).unwrap();
        fs::write(&config, config_for("\"INBOX\", \"Lists\"")).unwrap();
        daemon.wait_for_output(WAIT, "watching main/Lists ");

        // Swapped for another in two renames, as a dotfiles tool deploys.
        let next = root.path().join("next");
        fs::create_dir(&next).unwrap();
        fs::write(next.join("config.toml"), config_for("\"INBOX\"")).unwrap();
        fs::rename(&dir, root.path().join("old-2")).unwrap();
        fs::rename(&next, &dir).unwrap();
        daemon.wait_for_output(WAIT, "1 kept, 0 restarted, 1 stopped, 0 started");

        // And an ordinary edit in the newest directory is seen too.
        let tmp = dir.join("config.toml.new");
        fs::write(&tmp, config_for("\"INBOX\", \"Lists\"")).unwrap();
        fs::rename(&tmp, &config).unwrap();
        daemon.wait_for_output_count(WAIT, "watching main/Lists ", 2);
        assert_eq!(daemon.count_output("config file watching stopped"), 0);
        assert!(daemon.try_wait().is_none(), "{}", daemon.output());

        // It still announces.
        rig.dovecot
            .append("Lists", &message("after the swaps", "sender@example.com"));
        let lines = rig.wait_new_mail(1);
        assert_eq!(subjects(&lines), ["after the swaps"]);
    });
}

#[test]
fn hooks_are_at_most_once_a_pending_batch_is_named_and_dropped_at_a_prompt_stop() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let scratch = tempfile::tempdir().unwrap();
        let ran = scratch.path().join("ran");
        // A long debounce window: the batch is still waiting when SIGTERM comes.
        let account = format!(
            "{}on_new_mail = [\"touch\", {}]\nhook_debounce_ms = 600000\n",
            rig.dovecot.account_toml("main", "implicit"),
            toml_string(&ran.to_string_lossy())
        );
        let mut daemon = rig.daemon(&account, &["main/INBOX"]);
        rig.append("waits for its hook");
        rig.wait_new_mail(1);
        rig.notifications.wait_for_count(1, WAIT);

        let (status, took) = daemon.terminate();
        assert_eq!(status.code(), Some(0), "{}", daemon.output());
        assert!(took < Duration::from_secs(2), "stopped after {took:?}");
        let line = daemon.wait_for_output(WAIT, "hooks not run for");
        assert!(
            line.contains("WARN")
                && line.contains(
                    "main: shutting down; hooks not run for 1 pending message(s) (INBOX 1)"
                ),
            "{line}"
        );
        assert!(!ran.exists(), "the hook ran after all");

        // Not offered again after a restart: the cursor had been saved.
        let mut again = rig.daemon(&account.replace("600000", "0"), &["main/INBOX"]);
        rig.append("live");
        again.wait_for_output(WAIT, "subject=\"live\"");
        rig.wait_syslog("subject=\"live\"");
        again.wait_for_output(WAIT, "on_new_mail \"touch\" for 1 message(s) exited 0");
        assert_eq!(
            subjects(&rig.new_mail_lines()),
            ["waits for its hook", "live"]
        );
        assert_eq!(again.terminate().0.code(), Some(0));
    });
}

/// Dovecot's log lines for sessions that ended with LOGOUT (`Disconnected: Logged out`)
/// and without it (`Disconnected: Connection closed` and the like).
fn goodbyes(dovecot: &Dovecot) -> (usize, usize) {
    let log = dovecot.log();
    // Logged-in sessions only (`imap(user)`): the test harness's own readiness probes end
    // at the login stage.
    let sessions: Vec<&str> = log.lines().filter(|l| l.contains(" imap(")).collect();
    (
        sessions.iter().filter(|l| l.contains("Logged out")).count(),
        sessions
            .iter()
            .filter(|l| l.contains("Disconnected") && !l.contains("Logged out"))
            .count(),
    )
}

#[test]
fn a_stop_ends_idle_and_logs_out_over_tls_within_two_seconds() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = rig.dovecot.account_toml("main", "implicit");
        let mut daemon = rig.daemon(&account, &["main/INBOX"]);
        let (status, took) = daemon.terminate();
        assert_eq!(status.code(), Some(0));
        assert!(took < Duration::from_secs(2), "{took:?}");
        crate::support::wait_until(WAIT, "Dovecot logging the LOGOUT", || {
            (goodbyes(&rig.dovecot).0 >= 1).then_some(())
        });
        assert_eq!(goodbyes(&rig.dovecot), (1, 0), "{}", rig.dovecot.log());
        assert_eq!(daemon.count_output("did not stop in time"), 0);
    });
}

#[test]
fn an_account_removed_on_reload_logs_out() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = rig.dovecot.account_toml("main", "implicit");
        let second = rig.dovecot.account_toml("other", "implicit");
        let daemon = rig.daemon_with_config(
            &rig.config(&format!("{account}\n{second}")),
            &["main/INBOX", "other/INBOX"],
        );
        fs::write(daemon.config_path(), rig.config(&account)).unwrap();
        assert!(daemon.signal("HUP"));
        crate::support::wait_until(WAIT, "Dovecot logging the LOGOUT", || {
            (goodbyes(&rig.dovecot).0 >= 1).then_some(())
        });
        assert_eq!(goodbyes(&rig.dovecot), (1, 0), "{}", rig.dovecot.log());
        // The other account goes on.
        rig.append("after the reload");
        assert_eq!(subjects(&rig.wait_new_mail(1)), ["after the reload"]);
    });
}

/// Sockets of this process tree in SYN-SENT towards `port` (/proc/net/tcp, state 02).
fn syn_sent_to(port: u16) -> usize {
    let table = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[3] == "02" && f[2].ends_with(&format!(":{port:04X}"))
        })
        .count()
}

#[test]
fn a_stop_cuts_a_connect_that_hangs() {
    with_timeout(LIMIT, || {
        // A listener that never accepts, with its backlog full: further SYNs are dropped,
        // so a connect to it hangs (on loopback) until its own timeout.
        let listener =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        listener
            .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        listener.listen(0).unwrap();
        let port = listener.local_addr().unwrap().as_socket().unwrap().port();
        let mut fillers = Vec::new();
        for _ in 0..64 {
            if syn_sent_to(port) > 0 {
                break;
            }
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into());
            fillers.push(s);
        }
        assert!(syn_sent_to(port) > 0, "could not fill the backlog");
        let hanging_before = syn_sent_to(port);
        let config = format!(
            "[[accounts]]\nname = \"slow\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
             username = \"u\"\npassword = \"p\"\ntimeout_secs = 60\n\n\
             [notifications]\nenabled = false\n[syslog]\nenabled = false\n"
        );
        let mut daemon = Daemon::start(&config, None);
        crate::support::wait_until(WAIT, "the daemon's connect hanging", || {
            (syn_sent_to(port) > hanging_before).then_some(())
        });
        let (status, took) = daemon.terminate();
        assert_eq!(status.code(), Some(0));
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(
            daemon.count_output("did not stop in time"),
            0,
            "{}",
            daemon.output()
        );
        drop(listener);
    });
}
