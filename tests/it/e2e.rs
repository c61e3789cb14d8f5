//! End to end through the real binary: a real Dovecot on 127.0.0.1, a private D-Bus session
//! bus with a recording notification server, and a unix datagram socket standing in for
//! /dev/log. Every wait has a deadline; every process started here is stopped on drop.

use std::time::Duration;

use crate::support::daemon::Daemon;
use crate::support::dovecot::{message, Dovecot, DovecotOptions};
use crate::support::rig::{Rig, WAIT};
use crate::support::syslog::SyslogRecorder;
use crate::support::{with_timeout, FIVE_MISTAKES};

const LIMIT: Duration = Duration::from_secs(90);

/// "测试邮件" as GBK, base64: the kind of subject Chinese mail clients send.
const GBK_SUBJECT: &str = "=?GBK?B?suLK1NPKvP4=?=";
/// "张三" as UTF-8, base64.
const UTF8_NAME: &str = "=?UTF-8?B?5byg5LiJ?=";

#[test]
fn new_mail_is_announced_once_with_decoded_escaped_text() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        rig.dovecot
            .append("INBOX", &message("old news", "Old <old@example.com>"));
        // Four at once would be one summary popup by default (summary_threshold 3): this
        // test is about single popups.
        let config = rig.config_with(
            &rig.dovecot.account_toml("main", "implicit"),
            "summary_threshold = 10\n",
        );
        let daemon = rig.daemon_with_config(&config, &["main/INBOX"]);

        rig.dovecot.append(
            "INBOX",
            &message(GBK_SUBJECT, &format!("{UTF8_NAME} <z@example.com>")),
        );
        rig.dovecot
            .append("INBOX", &message("<b>&</b>", "Mallory <m@example.com>"));
        rig.dovecot
            .append("INBOX", &message("plain hello", "bob@example.com"));
        // Already read (filed by another client): new, but not worth a popup.
        rig.dovecot.append_with_flags(
            "INBOX",
            &message("read elsewhere", "c@example.com"),
            &["\\Seen"],
        );
        // A fourth message as a sentinel: once it is announced, anything duplicated or
        // announced from before the start would already be in the record.
        rig.dovecot
            .append("INBOX", &message("sentinel", "s@example.com"));

        let notes = rig.notifications.wait_for_count(4, WAIT);
        rig.syslog.wait_for(WAIT, "4 new-mail lines", |lines| {
            lines.iter().filter(|l| l.contains("new mail ")).count() >= 4
        });
        daemon.wait_for_output(WAIT, "subject=\"sentinel\"");
        rig.wait_syslog("subject=\"sentinel\"");

        assert_eq!(notes.len(), 4, "{notes:#?}");
        for n in &notes {
            assert_eq!(n.app_name, "mailpushd");
            assert_eq!(n.category.as_deref(), Some("email.arrived"));
            assert!(n.body.contains("main/INBOX"), "{}", n.body);
        }
        assert_eq!(notes[0].summary, "张三");
        assert!(notes[0].body.starts_with("测试邮件\n"), "{}", notes[0].body);
        // The server advertises body-markup, so markup in a subject must arrive escaped.
        assert_eq!(notes[1].summary, "Mallory");
        assert!(
            notes[1].body.starts_with("&lt;b&gt;&amp;&lt;/b&gt;\n"),
            "{}",
            notes[1].body
        );
        assert_eq!(notes[2].summary, "bob@example.com");
        assert!(notes
            .iter()
            .all(|n| !n.body.contains("old news") && !n.body.contains("read elsewhere")));

        let lines = rig.new_mail_lines();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(
            lines[0].contains(
                "new mail account=main mailbox=INBOX uid=2 from=\"张三 <z@example.com>\" subject=\"测试邮件\""
            ),
            "{}",
            lines[0]
        );
        // RFC 3164 framing: facility mail (2) * 8 + info (6) = 22.
        assert!(lines[0].starts_with("<22>"), "{}", lines[0]);
        assert!(lines[1].contains("subject=\"<b>&</b>\""), "{}", lines[1]);
        assert!(lines
            .iter()
            .all(|l| !l.contains("old news") && !l.contains("read elsewhere")));
        // The sentinel got UID 6: the \Seen message (UID 5) was skipped, not lost track of.
        assert!(lines[3].contains("uid=6 "), "{}", lines[3]);
        assert_eq!(daemon.count_output("new mail account="), 4);
        // ID was sent (Dovecot advertises it): what NetEase needs before EXAMINE.
        assert!(
            rig.dovecot.log().contains("ID sent: name=mailpushd"),
            "{}",
            rig.dovecot.log()
        );
    });
}

#[test]
fn starttls_works_and_a_chinese_mailbox_name_is_watched() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let wire = mailpushd::imap::mutf7::encode("工作");
        rig.dovecot.create_mailbox(&wire);
        let accounts = rig.dovecot.account_toml("home", "starttls").replace(
            "mailboxes = [\"INBOX\"]",
            "mailboxes = [\"INBOX\", \"工作\"]\npoll_interval_secs = 1",
        );
        let daemon = rig.daemon(&accounts, &["home/INBOX", "home/工作"]);
        // On the shared connection, checked by STATUS: Dovecot's NOTIFY never reports a
        // mailbox whose name is not ASCII (src/mailbox/watcher.rs, `notify_trusted`).
        daemon.wait_for_output(
            WAIT,
            "watching home/工作 (shared connection, checked by STATUS every 1s: NOTIFY is not \
             relied on for non-ASCII names)",
        );

        rig.dovecot
            .append(&wire, &message("filed at work", "boss@example.com"));
        let line = rig.syslog.wait_for_line(WAIT, "new mail ");
        assert!(
            line.contains("account=home mailbox=工作 uid=1 from=\"boss@example.com\" subject=\"filed at work\""),
            "{line}"
        );
        let notes = rig.notifications.wait_for_count(1, WAIT);
        assert!(notes[0].body.contains("home/工作"), "{}", notes[0].body);
        // The server log shows the login happened over TLS (Dovecot marks it "TLS").
        assert!(
            rig.dovecot
                .log()
                .lines()
                .any(|l| l.contains("Login: user=<alice>") && l.contains("TLS")),
            "{}",
            rig.dovecot.log()
        );
    });
}

#[test]
fn a_server_without_idle_is_polled() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions {
            idle: false,
            ..DovecotOptions::default()
        });
        let accounts = format!(
            "{}poll_interval_secs = 1\n",
            rig.dovecot.account_toml("netease", "implicit")
        );
        let daemon = rig.daemon(&accounts, &["netease/INBOX"]);
        assert!(
            daemon
                .output()
                .contains("watching netease/INBOX (no IDLE on this server, polling every 1s)"),
            "{}",
            daemon.output()
        );
        rig.dovecot
            .append("INBOX", &message("polled", "p@example.com"));
        rig.dovecot
            .append("INBOX", &message("polled again", "p@example.com"));
        let notes = rig.notifications.wait_for_count(2, WAIT);
        assert!(notes[0].body.starts_with("polled\n"));
        assert!(notes[1].body.starts_with("polled again\n"));
        rig.syslog.wait_for(WAIT, "2 new-mail lines", |lines| {
            lines.iter().filter(|l| l.contains("new mail ")).count() == 2
        });
    });
}

#[test]
fn a_wrong_password_is_reported_and_other_accounts_keep_working() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let good = rig.dovecot.account_toml("good", "implicit");
        let bad = rig
            .dovecot
            .account_toml("bad", "implicit")
            .replace(&rig.dovecot.password, "wrong-password-7f3a");
        let daemon = rig.daemon(&format!("{bad}\n{good}"), &["good/INBOX"]);
        daemon.wait_for_output(WAIT, "bad/INBOX: login failed");

        rig.dovecot
            .append("INBOX", &message("still here", "a@example.com"));
        let line = rig.syslog.wait_for_line(WAIT, "new mail ");
        assert!(line.contains("account=good"), "{line}");
        // The failure also went to syslog, at warning level or worse (mail.err = 19,
        // mail.warning = 20), and the password never appears anywhere.
        let lines = rig.syslog.lines();
        assert!(
            lines
                .iter()
                .any(|l| (l.starts_with("<19>") || l.starts_with("<20>"))
                    && l.contains("login failed")),
            "{lines:#?}"
        );
        assert!(daemon.try_wait().is_none(), "daemon exited");
        assert!(!daemon.output().contains("wrong-password-7f3a"));
        assert!(!lines.iter().any(|l| l.contains("wrong-password-7f3a")));
    });
}

#[test]
fn sigterm_stops_idling_watchers_and_exits_zero_quickly() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let accounts = format!(
            "{}\n{}",
            rig.dovecot.account_toml("one", "implicit"),
            rig.dovecot.account_toml("two", "starttls")
        );
        let mut daemon = rig.daemon(&accounts, &["one/INBOX", "two/INBOX"]);
        let (status, took) = daemon.terminate();
        assert!(status.success(), "{status:?}\n{}", daemon.output());
        assert!(took < Duration::from_secs(2), "took {took:?}");
        assert!(daemon.output().contains("stopped"), "{}", daemon.output());
    });
}

#[test]
fn without_a_notification_server_syslog_still_gets_the_line() {
    with_timeout(LIMIT, || {
        let dovecot = Dovecot::start_default();
        let syslog = SyslogRecorder::start();
        let config = format!(
            "{}\n{}",
            dovecot.account_toml("main", "implicit"),
            syslog.config_toml()
        );
        let daemon = Daemon::start(&config, None);
        daemon.wait_for_output(WAIT, "watching main/INBOX ");
        dovecot.append("INBOX", &message("nobody watching", "a@example.com"));
        dovecot.append("INBOX", &message("still nobody", "a@example.com"));
        syslog.wait_for(WAIT, "2 new-mail lines", |lines| {
            lines.iter().filter(|l| l.contains("new mail ")).count() == 2
        });
        daemon.wait_for_output(WAIT, "cannot show desktop notification");
        // A later message: its "announced" debug line comes after its popup was tried.
        dovecot.append("INBOX", &message("third", "a@example.com"));
        daemon.wait_for_output(WAIT, "announced main/INBOX uid=3 ");
        // Said once, not once per message.
        assert_eq!(
            daemon.count_output("cannot show desktop notification"),
            1,
            "{}",
            daemon.output()
        );
        assert!(daemon.try_wait().is_none());
    });
}

#[test]
fn a_missing_syslog_socket_is_reported_once_and_popups_continue() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let config = format!(
            "{}\n[syslog]\naddress = \"unix:/nonexistent/mailpushd-test/log\"\n",
            rig.dovecot.account_toml("main", "implicit")
        );
        let daemon = Daemon::start(&config, Some(&rig.bus));
        daemon.wait_for_output(WAIT, "watching main/INBOX ");
        rig.dovecot
            .append("INBOX", &message("one", "a@example.com"));
        rig.dovecot
            .append("INBOX", &message("two", "a@example.com"));
        rig.notifications.wait_for_count(2, WAIT);
        daemon.wait_for_output(WAIT, "subject=\"two\"");
        assert_eq!(
            daemon.count_output("syslog at unix:/nonexistent/mailpushd-test/log is unavailable"),
            1,
            "{}",
            daemon.output()
        );
    });
}

#[test]
fn check_reports_every_problem_with_position_and_exits_78() {
    with_timeout(LIMIT, || {
        let check = |path: &std::path::Path| {
            std::process::Command::new(env!("CARGO_BIN_EXE_mailpushd"))
                .args(["--check", "--config"])
                .arg(path)
                .output()
                .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "[[accounts]]\nname = \"a\"\nhost = \"\"\nusername = \"u\"\npassword = \"p\"\nport = 0\ncolour = \"red\"\n",
        )
        .unwrap();
        let out = check(&bad);
        assert_eq!(out.status.code(), Some(78));
        let text = String::from_utf8_lossy(&out.stdout);
        // Every problem at once, each where it is: the unknown key no longer hides the rest.
        let expected = format!(
            "{p}:3:8: `host` must not be empty\n\
             {p}:6:8: `port` must be between 1 and 65535\n\
             {p}:7:1: unknown key `colour` in [[accounts]] (mailpushd.toml(5) lists every key)\n",
            p = bad.display()
        );
        assert_eq!(text, expected);

        // The five mistakes of issue 13, five kinds at once, with the two suggestions.
        std::fs::write(&bad, FIVE_MISTAKES).unwrap();
        let out = check(&bad);
        assert_eq!(out.status.code(), Some(78));
        let text = String::from_utf8_lossy(&out.stdout);
        let p = bad.display();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                format!("{p}:4:8: `port` must be an integer, not a string: write port = 993 (without quotes)"),
                format!("{p}:6:1: unknown key `passwrd` in [[accounts]]; did you mean `password`?"),
                format!("{p}:10:8: duplicate account name \"work\" (first on line 2): names must be unique"),
                format!(
                    "{p}:11:12: unknown provider \"gmial\"; did you mean \"gmail\"? (known: gmail, \
                     outlook, icloud, yahoo, fastmail, qq, 163, 126, yeah, aliyun)"
                ),
                format!(
                    "{p}:13:20: `password_command` must be a list of strings (a program and its \
                     arguments, run without a shell), not a string: write password_command = \
                     [\"pass\", \"show\", \"mail\"]"
                ),
            ],
            "{text}"
        );

        let good = dir.path().join("good.toml");
        std::fs::write(
            &good,
            "[[accounts]]\nname = \"a\"\nhost = \"imap.example.com\"\nusername = \"u\"\npassword = \"p\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&good, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let out = check(&good);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        // It holds a password and is world-readable (0644 here): warned, with the fix.
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!(
                "warning: {p} holds a password and is readable by others (mode 644); fix it with: chmod 600 {p}",
                p = good.display()
            )),
            "{text}"
        );

        // The daemon itself refuses a bad config with the same code, without connecting.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailpushd"))
            .arg("--config")
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(":6:1: unknown key `passwrd`"), "{stderr}");
        assert!(stderr.contains(":13:20: `password_command`"), "{stderr}");
    });
}

#[test]
fn idle_is_refreshed_on_time_even_while_the_server_sends_keepalives() {
    with_timeout(LIMIT, || {
        // Keepalives every 2 s would restart a plain socket timeout forever; the refresh
        // (10 s, the minimum) must still happen, and the session must keep working after.
        let rig = Rig::start(DovecotOptions {
            idle_notify_interval: Duration::from_secs(2),
            ..DovecotOptions::default()
        });
        let accounts = format!(
            "{}idle_refresh_secs = 10\n",
            rig.dovecot.account_toml("main", "implicit")
        );
        let daemon = rig.daemon(&accounts, &["main/INBOX"]);
        daemon.wait_for_output(Duration::from_secs(30), "main/INBOX: refreshing IDLE");
        rig.dovecot
            .append("INBOX", &message("after refresh", "a@example.com"));
        let line = rig.syslog.wait_for_line(WAIT, "new mail ");
        assert!(line.contains("subject=\"after refresh\""), "{line}");
        // Two logins, the daemon's and the APPEND's: the refresh re-issued IDLE on the
        // same connection rather than reconnecting.
        rig.dovecot.wait_for_logins(2, WAIT);
        assert_eq!(rig.dovecot.login_count(), 2, "{}", rig.dovecot.log());
    });
}

#[test]
fn mail_arriving_during_a_fetch_is_not_left_for_the_next_keepalive() {
    with_timeout(Duration::from_secs(120), || {
        // New mail that lands while the watcher is busy fetching is reported as EXISTS in
        // that FETCH's answer, not again in the next IDLE. Keepalives every 60 s here: a
        // message left waiting for the next server line would miss the 5 s deadline below.
        let rig = Rig::start(DovecotOptions {
            idle_notify_interval: Duration::from_secs(60),
            ..DovecotOptions::default()
        });
        let config = rig.config_with(
            &rig.dovecot.account_toml("main", "implicit"),
            "summary_threshold = 1000\n",
        );
        let _daemon = rig.daemon_with_config(&config, &["main/INBOX"]);
        let mut s = rig.dovecot.session();
        for i in 1..=40 {
            // Back to back on one session, each as soon as the previous one was announced:
            // the next EXISTS often arrives while the daemon is still fetching.
            s.append("INBOX", &message(&format!("n{i}"), "a@example.com"))
                .finish()
                .unwrap();
            rig.syslog.wait_for(
                Duration::from_secs(5),
                &format!("message {i} announced"),
                |lines| {
                    lines
                        .iter()
                        .any(|l| l.contains(&format!("subject=\"n{i}\"")))
                },
            );
        }
        let _ = s.logout();
    });
}
