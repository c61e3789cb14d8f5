//! The usual end-to-end rig: a real Dovecot, a private session bus with the recording
//! notification server, a syslog recorder, and a state directory that successive daemons
//! share (so restart tests see what the previous daemon saved).
//!
//! Owns: those four, and the helpers tests use on all of them together.

use std::time::Duration;

use super::daemon::Daemon;
use super::dbus::{NotificationServer, SessionBus};
use super::dovecot::{message, Dovecot, DovecotOptions};
use super::proxy::FaultProxy;
use super::syslog::SyslogRecorder;

/// How long a rig helper waits for something the daemon should do promptly.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Rig {
    pub dovecot: Dovecot,
    pub bus: SessionBus,
    pub notifications: NotificationServer,
    pub syslog: SyslogRecorder,
    pub state: tempfile::TempDir,
}

impl Rig {
    pub fn start(options: DovecotOptions) -> Rig {
        let dovecot = Dovecot::start(options);
        let bus = SessionBus::start();
        let notifications = NotificationServer::start(&bus);
        Rig {
            dovecot,
            notifications,
            bus,
            syslog: SyslogRecorder::start(),
            state: tempfile::tempdir().expect("state dir"),
        }
    }

    /// A whole config: the given `[[accounts]]` tables, notifications on, syslog recorded.
    pub fn config(&self, accounts: &str) -> String {
        self.config_with(accounts, "")
    }

    /// [`Rig::config`] with extra lines in `[notifications]`.
    pub fn config_with(&self, accounts: &str, notifications: &str) -> String {
        format!(
            "{accounts}\n[notifications]\nenabled = true\n{notifications}\n{}",
            self.syslog.config_toml()
        )
    }

    /// Starts a daemon on a whole config text and waits for each of `watching`.
    pub fn daemon_with_config(&self, config: &str, watching: &[&str]) -> Daemon {
        let d = Daemon::start_with_state(config, Some(&self.bus), self.state.path());
        for w in watching {
            d.wait_for_output(WAIT, &format!("watching {w} "));
        }
        d
    }

    /// Starts a daemon on [`Rig::config`] with the rig's bus and state directory.
    pub fn start_daemon(&self, accounts: &str) -> Daemon {
        Daemon::start_with_state(&self.config(accounts), Some(&self.bus), self.state.path())
    }

    /// [`Rig::start_daemon`] with extra environment variables.
    pub fn start_daemon_with_env(&self, accounts: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_with_env(
            &self.config(accounts),
            Some(&self.bus),
            self.state.path(),
            env,
        )
    }

    /// [`Rig::start_daemon`], then waits until each of `watching` (`account/mailbox`)
    /// reports that it is watching.
    pub fn daemon(&self, accounts: &str, watching: &[&str]) -> Daemon {
        self.daemon_with_config(&self.config(accounts), watching)
    }

    /// A daemon that talks plain IMAP to Dovecot through a fault proxy (plain, so the proxy
    /// can inject lines; loopback, so the daemon allows it), with `reconnect_max_secs = 1`
    /// and `extra` account lines; returned once it is idling.
    pub fn proxied(&self, extra: &str) -> (FaultProxy, Daemon) {
        let proxy = FaultProxy::start(self.dovecot.imap_port);
        let account = format!(
            "{}reconnect_max_secs = 1\n{extra}",
            self.dovecot
                .account_toml("main", "none")
                .replace("host = \"localhost\"", "host = \"127.0.0.1\"")
                .replace(
                    &format!("port = {}", self.dovecot.imap_port),
                    &format!("port = {}", proxy.port)
                )
        );
        let daemon = self.daemon(&account, &["main/INBOX"]);
        proxy.wait_for_client_line(WAIT, " IDLE");
        proxy.wait_for_server_line(WAIT, "+ idling");
        (proxy, daemon)
    }

    /// The syslog lines announcing new mail so far.
    pub fn new_mail_lines(&self) -> Vec<String> {
        self.syslog
            .lines()
            .into_iter()
            .filter(|l| l.contains("new mail "))
            .collect()
    }

    /// Waits until at least `n` new-mail syslog lines exist and returns them all.
    pub fn wait_new_mail(&self, n: usize) -> Vec<String> {
        self.syslog
            .wait_for(WAIT, &format!("{n} new-mail lines"), |lines| {
                lines.iter().filter(|l| l.contains("new mail ")).count() >= n
            });
        self.new_mail_lines()
    }

    /// Waits for a syslog line containing `needle`. Syslog lines are written by a thread of
    /// their own, so one may come a moment after the daemon's log line for the same mail:
    /// a test that reads syslog lines waits for them here, not on the daemon's output.
    pub fn wait_syslog(&self, needle: &str) {
        self.wait_syslog_within(WAIT, needle);
    }

    /// [`Rig::wait_syslog`] with a deadline of its own.
    pub fn wait_syslog_within(&self, timeout: Duration, needle: &str) {
        self.syslog
            .wait_for(timeout, &format!("a syslog line with {needle}"), |lines| {
                lines.iter().any(|l| l.contains(needle))
            });
    }

    /// APPENDs a message with this subject to INBOX.
    pub fn append(&self, subject: &str) {
        self.dovecot
            .append("INBOX", &message(subject, "sender@example.com"));
    }
}

/// The `subject="..."` values of syslog lines, in order.
pub fn subjects(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            l.split("subject=\"")
                .nth(1)
                .unwrap_or("")
                .trim_end_matches('"')
                .to_owned()
        })
        .collect()
}
