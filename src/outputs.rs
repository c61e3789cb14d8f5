//! What happens when mail arrives: the syslog line, the desktop popup (single, or one
//! summary for a burst), and what popups lead to later (closing them when the mail is read
//! elsewhere, their buttons), behind the one lock all watchers share.
//!
//! Formatting is pure ([`syslog_line`], [`popup`], [`burst_popup`]) and unit-tested;
//! [`Outputs`] decides and hands the side effects on. The lock guards bookkeeping only:
//! popups go to the notification thread over a channel (`notify.rs`), which owns every
//! D-Bus call, so no call to a notification server (or to IMAP) is ever made under it.

use std::collections::BTreeSet;
use std::sync::mpsc::Sender as EventSender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::burst::{Bursts, Decision, Held};

use crate::config::{Account, Config};
use crate::decode::{self, Sender};
use crate::event::Event;
pub use crate::event::Shown;
use crate::hooks::{HookMail, Hooks};
use crate::notify::{Actions, Notifier, Popup, Settings};
use crate::syslog::{Severity, SyslogWriter};

/// Longest subject shown in a popup, in characters; syslog gets more.
const POPUP_SUBJECT_CHARS: usize = 200;
/// Longest sender name in a popup's title, in characters.
const POPUP_SENDER_CHARS: usize = 80;
/// Longest sender and subject in one line of a summary popup, in characters.
const SUMMARY_SENDER_CHARS: usize = 40;
const SUMMARY_SUBJECT_CHARS: usize = 80;
/// Longest `account/mailbox` in a popup, in characters (both come from the config, but a
/// mailbox name can be long).
const POPUP_PLACE_CHARS: usize = 120;
/// Longest server-supplied reason (a failed login) in a popup, in characters.
const POPUP_REASON_CHARS: usize = 300;
const SYSLOG_SUBJECT_CHARS: usize = 1000;
/// How many senders and subjects a summary popup lists before "and N more".
const SUMMARY_LINES: usize = 3;

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

/// What a popup may reveal (an account's `show_sender` / `show_subject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privacy {
    pub sender: bool,
    pub subject: bool,
}

impl Privacy {
    pub const ALL: Privacy = Privacy {
        sender: true,
        subject: true,
    };

    pub fn of(account: &Account) -> Self {
        Privacy {
            sender: account.show_sender,
            subject: account.show_subject,
        }
    }
}

/// One field of a popup: a single line (see [`decode::single_line`]) of at most `max`
/// characters, so no field can forge a line or push the rest out of view.
fn field(s: &str, max: usize) -> String {
    decode::truncate_chars(&decode::single_line(s), max)
}

/// `account/mailbox`, bounded.
fn place(a: &Announcement) -> String {
    field(&format!("{}/{}", a.account, a.mailbox), POPUP_PLACE_CHARS)
}

/// Popup text: the sender as the title, the subject and where it arrived in the body; with
/// privacy settings, only what may be shown ("New mail in work/INBOX" at the least). Every
/// field is one line and bounded (sender 80, subject 200, place 120 characters).
pub fn popup(a: &Announcement, privacy: Privacy) -> Popup {
    let place = place(a);
    let subject = field(&a.subject, POPUP_SUBJECT_CHARS);
    let sender = field(&a.sender.short(), POPUP_SENDER_CHARS);
    match (privacy.sender, privacy.subject) {
        (true, true) => Popup {
            summary: sender,
            body: format!("{subject}\n{place}"),
        },
        (true, false) => Popup {
            summary: sender,
            body: place,
        },
        (false, true) => Popup {
            summary: format!("New mail in {place}"),
            body: subject,
        },
        (false, false) => Popup {
            summary: format!("New mail in {place}"),
            body: String::new(),
        },
    }
}

/// One popup for many messages: "12 new messages in work/INBOX" (plus `suffix`, e.g.
/// " while disconnected"), listing the first few senders and subjects as far as privacy
/// allows, each line bounded (sender 40, subject 80 characters). `mails` are the first
/// few of `total`.
pub fn burst_popup(mails: &[Announcement], total: usize, privacy: Privacy, suffix: &str) -> Popup {
    let place = mails.first().map(place).unwrap_or_default();
    let mut body: Vec<String> = Vec::new();
    if privacy.sender || privacy.subject {
        body = mails
            .iter()
            .take(SUMMARY_LINES)
            .map(|a| {
                let sender = || field(&a.sender.short(), SUMMARY_SENDER_CHARS);
                let subject = || field(&a.subject, SUMMARY_SUBJECT_CHARS);
                match (privacy.sender, privacy.subject) {
                    (true, true) => format!("{}: {}", sender(), subject()),
                    (true, false) => sender(),
                    _ => subject(),
                }
            })
            .collect();
        let listed = body.len();
        if total > listed {
            body.push(format!("and {} more", total - listed));
        }
    }
    Popup {
        summary: format!("{total} new messages in {place}{suffix}"),
        body: body.join("\n"),
    }
}

pub struct Outputs {
    /// The notification thread's handle; `None` while `[notifications]` is disabled.
    notifier: Option<Notifier>,
    /// Kept while notifications are disabled, so a reload can turn them back on.
    notify_thread: Notifier,
    /// The syslog thread's handle (writes never block) and the thread.
    syslog: Option<SyslogWriter>,
    syslog_thread: Option<JoinHandle<()>>,
    open_command: Option<Vec<String>>,
    /// Accounts whose login currently fails: one popup when it starts, one log line when it
    /// ends, however many watchers and retries are involved.
    login_failing: BTreeSet<String>,
    events: Option<EventSender<Event>>,
    hooks: Hooks,
    /// Flood control: popups held for a summary, per (account, mailbox).
    bursts: Bursts<(String, String), Announcement>,
    /// The configured accounts, so that held mail is shown under the settings in force
    /// when it is shown (a reload may have hidden subjects or removed the mailbox).
    accounts: Vec<Arc<Account>>,
}

/// The shared lock of the design: every watcher announces through it.
#[derive(Clone)]
pub struct SharedOutputs(Arc<Mutex<Outputs>>);

impl Outputs {
    /// `events` hears when a burst is held (see [`Event::BurstHeld`]); `notifier` is the
    /// notification thread (see `notify.rs`), used while `[notifications]` is enabled.
    pub fn new(config: &Config, events: Option<EventSender<Event>>, notifier: Notifier) -> Self {
        notifier.configure(Settings::of(&config.notifications));
        let (syslog, syslog_thread) = if config.syslog.enabled {
            match SyslogWriter::spawn(config.syslog.clone()) {
                Ok((w, t)) => (Some(w), Some(t)),
                Err(e) => {
                    log::warn!("cannot start the syslog thread ({e}); continuing without syslog");
                    (None, None)
                }
            }
        } else {
            (None, None)
        };
        Outputs {
            notifier: config.notifications.enabled.then(|| notifier.clone()),
            notify_thread: notifier,
            syslog,
            syslog_thread,
            open_command: config.notifications.open_command.clone(),
            login_failing: BTreeSet::new(),
            events,
            hooks: Hooks::new(),
            bursts: Bursts::new(
                config.notifications.burst_window,
                config.notifications.summary_threshold as usize,
                SUMMARY_LINES,
            ),
            accounts: config.accounts.clone(),
        }
    }

    /// The accounts of a newly loaded config (every reload, not only when the
    /// `[notifications]` settings change).
    pub fn set_accounts(&mut self, config: &Config) {
        self.accounts = config.accounts.clone();
    }

    fn record(&mut self, a: &Announcement) {
        let line = syslog_line(a);
        log::info!("{line}");
        if let Some(s) = &self.syslog {
            s.send(Severity::Info, &line);
        }
    }

    /// A popup nothing refers to later (no buttons).
    fn show(&self, popup: Popup) {
        if let Some(n) = &self.notifier {
            n.show(popup);
        }
    }

    /// Announces new mail from one wake of one mailbox: a syslog line each, then popups as
    /// flood control decides (src/burst.rs): one each, one summary now, or held for the
    /// summary at the end of the mailbox's window. After a reconnect (`catching_up`) the
    /// wake is judged alone against the account's `catch_up_max`.
    pub fn announce(
        &mut self,
        account: &Account,
        mailbox: &str,
        mails: &[Announcement],
        catching_up: bool,
        woke_at: Instant,
    ) {
        for a in mails {
            self.record(a);
        }
        if account.notify_for(mailbox) && !mails.is_empty() {
            let privacy = Privacy::of(account);
            let decision = if catching_up {
                // After a reconnect: one look at what came meanwhile, judged on its own.
                Decision::alone(mails.to_vec(), account.catch_up_max as usize, SUMMARY_LINES)
            } else {
                let key = (account.name.clone(), mailbox.to_owned());
                self.bursts.arrived(&key, mails.to_vec(), Instant::now())
            };
            let suffix = if catching_up {
                " while disconnected"
            } else {
                ""
            };
            match decision {
                Decision::Singles(singles) => {
                    for a in &singles {
                        self.single_popup(a, privacy);
                    }
                }
                Decision::Summary(held) => {
                    self.summary_popup(&account.name, mailbox, &held, privacy, suffix)
                }
                Decision::Held => {
                    // The supervisor sleeps without a timeout while nothing is held; tell
                    // it there is now a summary to show at the end of the window.
                    if let Some(events) = &self.events {
                        let _ = events.send(Event::BurstHeld);
                    }
                }
            }
        }
        // Hooks last: they are debounced on their own threads, popups should not wait.
        if !mails.is_empty() {
            self.hooks.new_mail(
                &account.name,
                mailbox,
                &account.hooks,
                mails.iter().map(HookMail::from).collect(),
            );
        }
        // For latency measurements (docs and bench): wake-up to popups sent, in-process.
        if let Some(last) = mails.last() {
            log::debug!(
                "announced {}/{} uid={} {:.3} ms after wake",
                last.account,
                last.mailbox,
                last.uid,
                woke_at.elapsed().as_secs_f64() * 1e3
            );
        }
    }

    fn single_popup(&self, a: &Announcement, privacy: Privacy) {
        let Some(n) = &self.notifier else { return };
        let mut actions: Actions = self.open_action().into_iter().collect();
        actions.push(("read", "Mark as read"));
        n.show_message(
            popup(a, privacy),
            actions,
            Shown::Message {
                account: a.account.clone(),
                mailbox: a.mailbox.clone(),
                uid: a.uid,
            },
        );
    }

    /// A summary replaces the mailbox's previous one on screen and counts its messages
    /// too: the popup the user sees always says how many arrived since it appeared. (The
    /// notification thread knows which one is on screen; it renders the text with the
    /// total.)
    fn summary_popup(
        &self,
        account: &str,
        mailbox: &str,
        held: &Held<Announcement>,
        privacy: Privacy,
        suffix: &str,
    ) {
        let Some(n) = &self.notifier else { return };
        let first = held.first.clone();
        let suffix = suffix.to_owned();
        let actions: Actions = self.open_action().into_iter().collect();
        n.summary(
            account,
            mailbox,
            held.total,
            actions,
            Box::new(move |total| burst_popup(&first, total, privacy, &suffix)),
        );
    }

    /// Shows the held summaries that are due; returns when the next one is.
    pub fn flush_bursts(&mut self, now: Instant) -> Option<Instant> {
        let due = self.bursts.due(now);
        self.show_held(due);
        self.bursts.next_due()
    }

    /// At exit: shows everything still held, due or not (its syslog lines and hooks have
    /// run; the popups should not be lost to a stop).
    pub fn flush_all_bursts(&mut self) {
        let all = self.bursts.take_all();
        self.show_held(all);
    }

    fn show_held(&mut self, held: Vec<((String, String), Held<Announcement>)>) {
        for ((account, mailbox), held) in held {
            // Under the settings in force now: a reload may have removed the mailbox, made
            // it quiet, or hidden senders and subjects since the mail arrived.
            let Some(acct) = self.accounts.iter().find(|a| a.name == account).cloned() else {
                log::debug!(
                    "{account}/{mailbox}: account gone; {} held popup(s) dropped",
                    held.total
                );
                continue;
            };
            if !acct.notify_for(&mailbox) {
                continue;
            }
            let privacy = Privacy::of(&acct);
            match held.first.as_slice() {
                // "1 new messages" would be silly; one held message gets its own popup.
                [only] if held.total == 1 => self.single_popup(only, privacy),
                _ => self.summary_popup(&account, &mailbox, &held, privacy, ""),
            }
            log::debug!("{account}/{mailbox}: {} held message(s) shown", held.total);
        }
    }

    /// "default" (clicking the popup) and "Open" run `open_command`, when there is one.
    fn open_action(&self) -> Option<(&'static str, &'static str)> {
        self.open_command.as_ref().map(|_| ("default", "Open"))
    }

    /// UIDs with a popup on screen in this mailbox, to check whether they were read
    /// elsewhere.
    pub fn open_uids(&self, account: &str, mailbox: &str) -> Vec<u32> {
        self.notify_thread.open_uids(account, mailbox)
    }

    /// Closes the popups of these messages (read or deleted elsewhere).
    pub fn close_messages(&self, account: &str, mailbox: &str, uids: &[u32]) {
        self.notify_thread.close_messages(account, mailbox, uids);
    }

    /// A login failed. Error level in the log and syslog every time the caller reports it
    /// (the watcher does so once per change of state); one popup per account until it
    /// recovers.
    ///
    /// `message` must already be one escaped line (the watcher makes it so).
    pub fn login_failed(&mut self, account: &str, message: &str, reason: &str) {
        log::error!("{message}");
        if let Some(s) = &self.syslog {
            s.send(Severity::Error, message);
        }
        if self.login_failing.insert(account.to_owned()) {
            self.show(Popup {
                summary: format!("{}: login failed", field(account, POPUP_PLACE_CHARS)),
                body: field(reason, POPUP_REASON_CHARS),
            });
        }
    }

    /// A login worked: if the account had been failing, say once that it recovered.
    pub fn login_ok(&mut self, account: &str) {
        if self.login_failing.remove(account) {
            let line = format!("{account}: login works again");
            log::info!("{line}");
            if let Some(s) = &self.syslog {
                s.send(Severity::Info, &line);
            }
        }
    }

    /// A reloaded config was rejected: error in syslog, one popup naming the first problem
    /// (the log has them all). The daemon carries on with the previous config.
    pub fn config_rejected(&mut self, problems: &str) {
        if let Some(s) = &self.syslog {
            for line in problems.lines() {
                s.send(Severity::Error, &decode::one_line(line));
            }
        }
        let first = field(
            problems.lines().next().unwrap_or_default(),
            POPUP_REASON_CHARS,
        );
        self.show(Popup {
            summary: "mailpushd: configuration not reloaded".to_owned(),
            body: format!("{first}\nStill running with the previous configuration."),
        });
    }

    /// New `[notifications]` or `[syslog]` settings after a reload. The notification
    /// thread, its one connection and listener, and the popups on screen carry on: only
    /// its settings change (a second connection would see every click again).
    pub fn reconfigure(&mut self, config: &Config) {
        let events = self.events.take();
        let login_failing = std::mem::take(&mut self.login_failing);
        let hooks = self.hooks.clone();
        let mut bursts = std::mem::replace(&mut self.bursts, Bursts::new(Default::default(), 1, 0));
        bursts.reconfigure(
            config.notifications.burst_window,
            config.notifications.summary_threshold as usize,
        );
        *self = Outputs::new(config, events, self.notify_thread.clone());
        // Held summaries survive a reload.
        self.bursts = bursts;
        self.login_failing = login_failing;
        // Running and pending hook runs carry on.
        self.hooks = hooks;
    }

    /// At exit: no more syslog lines; returns the syslog thread, which ends once it has
    /// written what is queued (join it with a deadline).
    pub fn stop_syslog(&mut self) -> Option<JoinHandle<()>> {
        self.syslog = None;
        self.syslog_thread.take()
    }

    /// At exit: kill running hooks, drop pending runs (bounded wait, about a second).
    pub fn shutdown_hooks(&self) {
        self.hooks.shutdown();
    }

    /// Connection trouble and the like: warning level in syslog (the caller logs it too).
    /// `message` must already be one escaped line.
    pub fn warning(&mut self, message: &str) {
        if let Some(s) = &self.syslog {
            s.send(Severity::Warning, message);
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
    fn popup_shows_sender_subject_and_place() {
        let p = popup(&mail("<b>&</b>"), Privacy::ALL);
        assert_eq!(p.summary, "Zhang San");
        assert_eq!(p.body, "<b>&</b>\nwork/INBOX");
    }

    #[test]
    fn privacy_hides_what_it_should() {
        let m = mail("secret plans");
        let none = Privacy {
            sender: false,
            subject: false,
        };
        assert_eq!(
            popup(&m, none),
            Popup {
                summary: "New mail in work/INBOX".into(),
                body: String::new()
            }
        );
        let no_subject = Privacy {
            sender: true,
            subject: false,
        };
        let p = popup(&m, no_subject);
        assert!(!p.body.contains("secret") && !p.summary.contains("secret"));
        let no_sender = Privacy {
            sender: false,
            subject: true,
        };
        let p = popup(&m, no_sender);
        assert!(!p.body.contains("Zhang") && !p.summary.contains("Zhang"));
        let b = burst_popup(&[m.clone(), m.clone()], 2, none, "");
        assert_eq!(b.summary, "2 new messages in work/INBOX");
        assert_eq!(b.body, "");
    }

    #[test]
    fn a_line_break_in_a_subject_or_name_cannot_forge_a_line() {
        let mut m = mail("Invoice\r\nFrom: your bank\tpay now");
        m.sender.name = Some("Eve\nAdmin".into());
        let p = popup(&m, Privacy::ALL);
        assert_eq!(p.summary, "Eve Admin");
        assert_eq!(p.body, "Invoice From: your bank pay now\nwork/INBOX");
        let b = burst_popup(&[m.clone(), m], 2, Privacy::ALL, "");
        assert_eq!(b.body.lines().count(), 2, "{}", b.body);
    }

    #[test]
    fn every_popup_field_is_bounded() {
        let mut m = mail(&"s".repeat(5000));
        m.sender.name = Some("N".repeat(5000));
        m.mailbox = "M".repeat(500);
        let p = popup(&m, Privacy::ALL);
        assert_eq!(p.summary.chars().count(), POPUP_SENDER_CHARS);
        assert!(p.summary.ends_with('…'));
        let mut lines = p.body.lines();
        assert_eq!(lines.next().unwrap().chars().count(), POPUP_SUBJECT_CHARS);
        assert_eq!(lines.next().unwrap().chars().count(), POPUP_PLACE_CHARS);
        let b = burst_popup(&[m.clone(), m.clone(), m.clone()], 9, Privacy::ALL, "");
        assert!(
            b.summary.chars().count() <= POPUP_PLACE_CHARS + 30,
            "{}",
            b.summary
        );
        for line in b.body.lines() {
            assert!(
                line.chars().count() <= SUMMARY_SENDER_CHARS + 2 + SUMMARY_SUBJECT_CHARS,
                "{line}"
            );
        }
    }

    #[test]
    fn burst_popup_lists_a_few_and_counts_the_rest() {
        let mails: Vec<_> = (0..23).map(|i| mail(&format!("s{i}"))).collect();
        let p = burst_popup(&mails[..3], 23, Privacy::ALL, " while disconnected");
        assert_eq!(
            p.summary,
            "23 new messages in work/INBOX while disconnected"
        );
        assert_eq!(
            p.body,
            "Zhang San: s0\nZhang San: s1\nZhang San: s2\nand 20 more"
        );
    }
}
