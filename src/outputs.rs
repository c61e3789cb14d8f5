//! What happens when mail arrives: the desktop popup and the syslog line, behind the one
//! lock all watchers share.
//!
//! Formatting is pure ([`syslog_line`], [`popup`]) and unit-tested; [`Outputs`] performs
//! the side effects. The lock is held while a popup is sent over D-Bus (local, fast, and it
//! keeps popups in order) but never across IMAP network I/O.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::config::Config;
use crate::decode::{self, Sender};
use crate::notify::{DesktopNotifier, Popup};
use crate::syslog::{Severity, SyslogSink};

/// Longest subject shown in a popup, in characters; syslog gets more.
const POPUP_SUBJECT_CHARS: usize = 200;
const SYSLOG_SUBJECT_CHARS: usize = 1000;

/// One new message, decoded and ready to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub account: String,
    /// Mailbox name as the user wrote it (decoded, UTF-8).
    pub mailbox: String,
    pub uid: u32,
    pub sender: Sender,
    pub subject: String,
}

/// `new mail account=work mailbox=INBOX uid=4711 from="Zhang San <z@example.com>"
/// subject="测试邮件"`: one line whatever the mail holds, parseable as key=value.
pub fn syslog_line(a: &Announcement) -> String {
    format!(
        "new mail account={} mailbox={} uid={} from=\"{}\" subject=\"{}\"",
        value(&a.account),
        value(&a.mailbox),
        a.uid,
        decode::one_line(&a.sender.display()),
        decode::one_line(&decode::truncate_chars(&a.subject, SYSLOG_SUBJECT_CHARS)),
    )
}

/// A value that stays bare when it is a single plain token and is quoted otherwise.
fn value(s: &str) -> String {
    let escaped = decode::one_line(s);
    if !s.is_empty() && escaped == s && !s.contains(char::is_whitespace) {
        escaped
    } else {
        format!("\"{escaped}\"")
    }
}

/// Popup text: the sender as the title, the subject and where it arrived in the body.
pub fn popup(a: &Announcement) -> Popup {
    Popup {
        summary: a.sender.short(),
        body: format!(
            "{}\n{}/{}",
            decode::truncate_chars(&a.subject, POPUP_SUBJECT_CHARS),
            a.account,
            a.mailbox
        ),
    }
}

/// How many senders and subjects a summary popup lists before "and N more".
const SUMMARY_LINES: usize = 3;

/// One popup for many messages that arrived while the watcher could not see them.
pub fn catch_up_popup(account: &str, mailbox: &str, mails: &[Announcement]) -> Popup {
    let mut body: Vec<String> = mails
        .iter()
        .take(SUMMARY_LINES)
        .map(|a| {
            format!(
                "{}: {}",
                a.sender.short(),
                decode::truncate_chars(&a.subject, 80)
            )
        })
        .collect();
    if mails.len() > SUMMARY_LINES {
        body.push(format!("and {} more", mails.len() - SUMMARY_LINES));
    }
    Popup {
        summary: format!(
            "{} new messages in {account}/{mailbox} while disconnected",
            mails.len()
        ),
        body: body.join("\n"),
    }
}

pub struct Outputs {
    notifier: Option<DesktopNotifier>,
    syslog: Option<SyslogSink>,
    /// Accounts whose login currently fails: one popup when it starts, one log line when it
    /// ends, however many watchers and retries are involved.
    login_failing: BTreeSet<String>,
}

/// The shared lock of the design: every watcher announces through it.
#[derive(Clone)]
pub struct SharedOutputs(Arc<Mutex<Outputs>>);

impl Outputs {
    pub fn new(config: &Config) -> Self {
        Outputs {
            notifier: config.notifications.enabled.then(DesktopNotifier::new),
            syslog: config.syslog.enabled.then(|| {
                let mut sink = SyslogSink::new(config.syslog.clone());
                sink.open_now();
                sink
            }),
            login_failing: BTreeSet::new(),
        }
    }

    fn record(&mut self, a: &Announcement) {
        let line = syslog_line(a);
        log::info!("{line}");
        if let Some(s) = self.syslog.as_mut() {
            s.send(Severity::Info, &line);
        }
    }

    fn show(&mut self, popup: &Popup) {
        if let Some(n) = self.notifier.as_mut() {
            n.show(popup);
        }
    }

    /// Syslog line first (it is the record), then the popup.
    pub fn announce(&mut self, a: &Announcement, woke_at: Instant) {
        self.record(a);
        self.show(&popup(a));
        // For latency measurements (docs and bench): wake-up to popup sent, in-process.
        log::debug!(
            "announced {}/{} uid={} {:.3} ms after wake",
            a.account,
            a.mailbox,
            a.uid,
            woke_at.elapsed().as_secs_f64() * 1e3
        );
    }

    /// Many messages at once after a (re)connect: every syslog line, one popup.
    pub fn announce_catch_up(&mut self, account: &str, mailbox: &str, mails: &[Announcement]) {
        for a in mails {
            self.record(a);
        }
        self.show(&catch_up_popup(account, mailbox, mails));
    }

    /// A login failed. Error level in the log and syslog every time the caller reports it
    /// (the watcher does so once per change of state); one popup per account until it
    /// recovers.
    pub fn login_failed(&mut self, account: &str, message: &str, reason: &str) {
        log::error!("{message}");
        if let Some(s) = self.syslog.as_mut() {
            s.send(Severity::Error, &decode::one_line(message));
        }
        if self.login_failing.insert(account.to_owned()) {
            self.show(&Popup {
                summary: format!("{account}: login failed"),
                body: reason.to_owned(),
            });
        }
    }

    /// A login worked: if the account had been failing, say once that it recovered.
    pub fn login_ok(&mut self, account: &str) {
        if self.login_failing.remove(account) {
            let line = format!("{account}: login works again");
            log::info!("{line}");
            if let Some(s) = self.syslog.as_mut() {
                s.send(Severity::Info, &line);
            }
        }
    }

    /// A reloaded config was rejected: error in syslog, one popup naming the first problem
    /// (the log has them all). The daemon carries on with the previous config.
    pub fn config_rejected(&mut self, problems: &str) {
        if let Some(s) = self.syslog.as_mut() {
            for line in problems.lines() {
                s.send(Severity::Error, &decode::one_line(line));
            }
        }
        let first = problems.lines().next().unwrap_or_default();
        self.show(&Popup {
            summary: "mailpushd: configuration not reloaded".to_owned(),
            body: format!("{first}\nStill running with the previous configuration."),
        });
    }

    /// New `[notifications]` or `[syslog]` settings after a reload.
    pub fn reconfigure(&mut self, config: &Config) {
        let login_failing = std::mem::take(&mut self.login_failing);
        *self = Outputs::new(config);
        self.login_failing = login_failing;
    }

    /// Connection trouble and the like: warning level in syslog (the caller logs it too).
    pub fn warning(&mut self, message: &str) {
        if let Some(s) = self.syslog.as_mut() {
            s.send(Severity::Warning, &decode::one_line(message));
        }
    }
}

impl SharedOutputs {
    pub fn new(outputs: Outputs) -> Self {
        SharedOutputs(Arc::new(Mutex::new(outputs)))
    }

    /// A watcher that panicked while holding the lock leaves it poisoned; the outputs are
    /// still consistent (each call is self-contained), so keep going.
    pub fn lock(&self) -> MutexGuard<'_, Outputs> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(subject: &str) -> Announcement {
        Announcement {
            account: "work".into(),
            mailbox: "INBOX".into(),
            uid: 4711,
            sender: Sender {
                name: Some("Zhang San".into()),
                address: Some("z@example.com".into()),
            },
            subject: subject.into(),
        }
    }

    #[test]
    fn syslog_line_shape() {
        assert_eq!(
            syslog_line(&mail("测试邮件")),
            "new mail account=work mailbox=INBOX uid=4711 from=\"Zhang San <z@example.com>\" subject=\"测试邮件\""
        );
    }

    #[test]
    fn syslog_line_is_one_line_whatever_the_subject() {
        let mut m = mail("a\r\nfake: line\x1b[2J \"quoted\"");
        m.mailbox = "Sent Items".into();
        let line = syslog_line(&m);
        assert!(!line.contains(['\r', '\n', '\x1b']), "{line}");
        assert!(line.contains("mailbox=\"Sent Items\""), "{line}");
        assert!(
            line.contains("subject=\"a\\r\\nfake: line\\x1b[2J \\\"quoted\\\"\""),
            "{line}"
        );
    }

    #[test]
    fn catch_up_popup_lists_a_few_and_counts_the_rest() {
        let mails: Vec<_> = (0..23).map(|i| mail(&format!("s{i}"))).collect();
        let p = catch_up_popup("work", "INBOX", &mails);
        assert_eq!(
            p.summary,
            "23 new messages in work/INBOX while disconnected"
        );
        assert_eq!(
            p.body,
            "Zhang San: s0\nZhang San: s1\nZhang San: s2\nand 20 more"
        );
    }

    #[test]
    fn popup_shows_sender_subject_and_place() {
        let p = popup(&mail("<b>&</b>"));
        assert_eq!(p.summary, "Zhang San");
        assert_eq!(p.body, "<b>&</b>\nwork/INBOX");
    }
}
