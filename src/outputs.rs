//! What happens when mail arrives: the syslog line, the desktop popup (single, or one
//! summary for a burst), and what popups lead to later (closing them when the mail is read
//! elsewhere, their buttons), behind the one lock all watchers share.
//!
//! Formatting is pure ([`syslog_line`], [`popup`], [`burst_popup`]) and unit-tested;
//! [`Outputs`] performs the side effects. The lock is held while a popup is sent over D-Bus
//! (local, fast, and it keeps popups in order) but never across IMAP network I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::Sender as EventSender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::burst::{Bursts, Decision, Held};

use crate::config::{Account, Config};
use crate::decode::{self, Sender};
use crate::event::Event;
use crate::hooks::{HookMail, Hooks};
use crate::notify::{DesktopNotifier, Popup};
use crate::syslog::{Severity, SyslogSink};

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
/// Open popups remembered per mailbox (to close them when read elsewhere); older ones are
/// forgotten, not closed.
const OPEN_PER_MAILBOX: usize = 50;

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

/// A popup on screen that mailpushd may still act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    /// One message: closed when it is read elsewhere; "Mark as read" acts on it.
    Message {
        account: String,
        mailbox: String,
        uid: u32,
    },
    /// A burst or catch-up summary: replaced by the next summary of the same mailbox,
    /// which then counts these `total` messages too.
    Summary {
        account: String,
        mailbox: String,
        total: usize,
    },
}

impl Shown {
    /// The UID, if this is a single message's popup in `account`/`mailbox`.
    fn message_in(&self, account: &str, mailbox: &str) -> Option<u32> {
        match self {
            Shown::Message {
                account: a,
                mailbox: m,
                uid,
            } if a == account && m == mailbox => Some(*uid),
            _ => None,
        }
    }
}

pub struct Outputs {
    notifier: Option<DesktopNotifier>,
    syslog: Option<SyslogSink>,
    open_command: Option<Vec<String>>,
    /// Accounts whose login currently fails: one popup when it starts, one log line when it
    /// ends, however many watchers and retries are involved.
    login_failing: BTreeSet<String>,
    /// Popups on screen, by notification id.
    shown: BTreeMap<u32, Shown>,
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
    /// `events` receives popup actions and closes (see `notify.rs`); `None` where no one
    /// listens.
    pub fn new(config: &Config, events: Option<EventSender<Event>>) -> Self {
        Outputs {
            notifier: config
                .notifications
                .enabled
                .then(|| DesktopNotifier::new(&config.notifications, events.clone())),
            syslog: config.syslog.enabled.then(|| {
                let mut sink = SyslogSink::new(config.syslog.clone());
                sink.open_now();
                sink
            }),
            open_command: config.notifications.open_command.clone(),
            login_failing: BTreeSet::new(),
            shown: BTreeMap::new(),
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
        if let Some(s) = self.syslog.as_mut() {
            s.send(Severity::Info, &line);
        }
    }

    fn show(&mut self, popup: &Popup, replaces: u32, actions: &[(&str, &str)]) -> Option<u32> {
        self.notifier.as_mut()?.show(popup, replaces, actions)
    }

    /// The mailbox's summary popup on screen, if any, to be replaced by the next one, and
    /// how many messages it counts.
    fn summary_of(&self, account: &str, mailbox: &str) -> (u32, usize) {
        self.shown
            .iter()
            .find_map(|(id, s)| match s {
                Shown::Summary {
                    account: a,
                    mailbox: m,
                    total,
                } if a == account && m == mailbox => Some((*id, *total)),
                _ => None,
            })
            .unwrap_or((0, 0))
    }

    fn remember(&mut self, id: u32, shown: Shown) {
        // Bounded: forget the oldest message popups of a mailbox beyond the limit (ids grow,
        // so the map's order is age).
        if let Shown::Message {
            account, mailbox, ..
        } = &shown
        {
            let of_mailbox: Vec<u32> = self
                .shown
                .iter()
                .filter(|(k, s)| **k != id && s.message_in(account, mailbox).is_some())
                .map(|(id, _)| *id)
                .collect();
            let excess = (of_mailbox.len() + 1).saturating_sub(OPEN_PER_MAILBOX);
            for old in &of_mailbox[..excess] {
                self.shown.remove(old);
            }
        }
        self.shown.insert(id, shown);
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

    fn single_popup(&mut self, a: &Announcement, privacy: Privacy) {
        let mut actions: Vec<(&str, &str)> = self.open_action().into_iter().collect();
        actions.push(("read", "Mark as read"));
        if let Some(id) = self.show(&popup(a, privacy), 0, &actions) {
            self.remember(
                id,
                Shown::Message {
                    account: a.account.clone(),
                    mailbox: a.mailbox.clone(),
                    uid: a.uid,
                },
            );
        }
    }

    /// A summary replaces the mailbox's previous one on screen and counts its messages
    /// too: the popup the user sees always says how many arrived since it appeared.
    fn summary_popup(
        &mut self,
        account: &str,
        mailbox: &str,
        held: &Held<Announcement>,
        privacy: Privacy,
        suffix: &str,
    ) {
        let (replaces, before) = self.summary_of(account, mailbox);
        let total = before + held.total;
        let popup = burst_popup(&held.first, total, privacy, suffix);
        let actions: Vec<(&str, &str)> = self.open_action().into_iter().collect();
        if let Some(id) = self.show(&popup, replaces, &actions) {
            self.shown.remove(&replaces);
            self.remember(
                id,
                Shown::Summary {
                    account: account.to_owned(),
                    mailbox: mailbox.to_owned(),
                    total,
                },
            );
        }
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
        self.shown
            .values()
            .filter_map(|s| s.message_in(account, mailbox))
            .collect()
    }

    /// Closes the popups of these messages (read or deleted elsewhere).
    pub fn close_messages(&mut self, account: &str, mailbox: &str, uids: &[u32]) {
        let ids: Vec<u32> = self
            .shown
            .iter()
            .filter(|(_, s)| {
                s.message_in(account, mailbox)
                    .is_some_and(|uid| uids.contains(&uid))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.shown.remove(&id);
            if let Some(n) = self.notifier.as_mut() {
                log::debug!("{account}/{mailbox}: closing popup {id} (read elsewhere)");
                n.close(id);
            }
        }
    }

    /// The server closed a popup (expired, dismissed, or closed by us).
    pub fn closed(&mut self, id: u32) {
        self.shown.remove(&id);
    }

    /// What a popup's button refers to, and the command to open mail with.
    pub fn action_target(&self, id: u32) -> (Option<Shown>, Option<Vec<String>>) {
        (self.shown.get(&id).cloned(), self.open_command.clone())
    }

    /// A login failed. Error level in the log and syslog every time the caller reports it
    /// (the watcher does so once per change of state); one popup per account until it
    /// recovers.
    ///
    /// `message` must already be one escaped line (the watcher makes it so).
    pub fn login_failed(&mut self, account: &str, message: &str, reason: &str) {
        log::error!("{message}");
        if let Some(s) = self.syslog.as_mut() {
            s.send(Severity::Error, message);
        }
        if self.login_failing.insert(account.to_owned()) {
            self.show(
                &Popup {
                    summary: format!("{}: login failed", field(account, POPUP_PLACE_CHARS)),
                    body: field(reason, POPUP_REASON_CHARS),
                },
                0,
                &[],
            );
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
        let first = field(
            problems.lines().next().unwrap_or_default(),
            POPUP_REASON_CHARS,
        );
        self.show(
            &Popup {
                summary: "mailpushd: configuration not reloaded".to_owned(),
                body: format!("{first}\nStill running with the previous configuration."),
            },
            0,
            &[],
        );
    }

    /// New `[notifications]` or `[syslog]` settings after a reload.
    pub fn reconfigure(&mut self, config: &Config) {
        let events = self.events.take();
        let login_failing = std::mem::take(&mut self.login_failing);
        let shown = std::mem::take(&mut self.shown);
        let hooks = self.hooks.clone();
        let mut bursts = std::mem::replace(&mut self.bursts, Bursts::new(Default::default(), 1, 0));
        bursts.reconfigure(
            config.notifications.burst_window,
            config.notifications.summary_threshold as usize,
        );
        *self = Outputs::new(config, events);
        // Held summaries survive a reload.
        self.bursts = bursts;
        self.login_failing = login_failing;
        self.shown = shown;
        // Running and pending hook runs carry on.
        self.hooks = hooks;
    }

    /// At exit: kill running hooks, drop pending runs (bounded wait, about a second).
    pub fn shutdown_hooks(&self) {
        self.hooks.shutdown();
    }

    /// Connection trouble and the like: warning level in syslog (the caller logs it too).
    /// `message` must already be one escaped line.
    pub fn warning(&mut self, message: &str) {
        if let Some(s) = self.syslog.as_mut() {
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
