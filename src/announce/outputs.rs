//! What happens when mail arrives: the syslog line, the desktop popup (single, or one
//! summary for a burst), and what popups lead to later (closing them when the mail is read
//! elsewhere, their buttons), behind the one lock all watchers share.
//!
//! Formatting is pure and lives in `text.rs` ([`syslog_line`], [`popup`], [`burst_popup`]);
//! [`Outputs`] decides and hands the side effects on. The lock guards bookkeeping only:
//! popups go to the notification thread over a channel (`notify.rs`), which owns every
//! D-Bus call, so no call to a notification server (or to IMAP) is ever made under it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::Sender as EventSender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use super::burst::{Bursts, Decision, Held};
use super::hooks::{HookMail, Hooks};
use super::notify::{Actions, Notifier, Popup, Settings};
use super::syslog::{Severity, SyslogWriter};
pub use super::text::{burst_popup, popup, syslog_line, Announcement, Privacy};
use super::text::{field, POPUP_PLACE_CHARS, POPUP_REASON_CHARS, SUMMARY_LINES};
use crate::config::{Account, Config};
use crate::decode;
use crate::event::Event;
pub use crate::event::Shown;

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
    /// Per account, the watchers (`account/mailbox`) waiting because the server allows no
    /// more connections: said once when the first one waits and once when the last one is
    /// through, however many mailboxes and retries are involved.
    limited: BTreeMap<String, BTreeSet<String>>,
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
            limited: BTreeMap::new(),
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
    /// flood control decides (src/announce/burst.rs): one each, one summary now, or held for the
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

    /// `key` (`account/mailbox`) could not connect: the server allows the account no more
    /// connections. The first refusal of an episode is a warning, in words; the others are
    /// noted at info level, repeats at debug. The episode lasts until a watcher of the
    /// account connects with none waiting ([`Outputs::account_connected`]), so watchers
    /// that the supervisor moves to the shared connection do not start a new one.
    /// `cap` is how many connections the server said it allows, if it said.
    pub fn connection_limited(
        &mut self,
        account: &str,
        key: &str,
        message: &str,
        retry: &str,
        cap: Option<u32>,
    ) {
        let first = !self.limited.contains_key(account);
        let waiting = self.limited.entry(account.to_owned()).or_default();
        if !waiting.insert(key.to_owned()) {
            log::debug!("{message}; {retry}");
            return;
        }
        if first {
            let allows = match cap {
                Some(n) => format!("only {n} connection{}", if n == 1 { "" } else { "s" }),
                None => "no more connections".to_owned(),
            };
            let line = format!(
                "{account}: the server refused a connection for {key}: it allows {allows} \
                 for this account ({message}); {retry}"
            );
            log::warn!("{line}");
            if let Some(s) = &self.syslog {
                s.send(Severity::Warning, &line);
            }
        } else {
            log::info!("{key}: also waiting for a free connection ({retry})");
        }
    }

    /// `key` is connected again after waiting for a free connection (`connected`), or
    /// stopped while waiting. Once no mailbox of the account waits, a connected one says
    /// so; a stopped one leaves the episode open until a watcher connects.
    pub fn connection_free(&mut self, account: &str, key: &str, connected: bool) {
        let Some(waiting) = self.limited.get_mut(account) else {
            return;
        };
        if waiting.remove(key) && waiting.is_empty() && connected {
            self.limited.remove(account);
            let line = format!("{account}: every watched mailbox has its connection again");
            log::info!("{line}");
            if let Some(s) = &self.syslog {
                s.send(Severity::Info, &line);
            }
        }
    }

    /// A watcher of `account` connected: a connection-limit episode in which no watcher is
    /// waiting any more is over (a later refusal is warned about again).
    pub fn account_connected(&mut self, account: &str) {
        if self.limited.get(account).is_some_and(BTreeSet::is_empty) {
            self.limited.remove(account);
        }
    }

    /// A reloaded config was rejected: error in syslog, one popup naming the first problem
    /// (the log has them all). The daemon carries on with the previous config.
    pub fn config_rejected(&mut self, lines: &[String], count: usize, summary: &str) {
        if let Some(s) = &self.syslog {
            for line in lines.iter().map(String::as_str).chain([summary]) {
                s.send(Severity::Error, &decode::one_line(line));
            }
        }
        let first = lines.first().map_or("", String::as_str);
        self.show(super::text::config_rejected_popup(first, count));
    }

    /// New `[notifications]` or `[syslog]` settings after a reload. The notification
    /// thread, its one connection and listener, and the popups on screen carry on: only
    /// its settings change (a second connection would see every click again).
    pub fn reconfigure(&mut self, config: &Config) {
        let events = self.events.take();
        let login_failing = std::mem::take(&mut self.login_failing);
        let limited = std::mem::take(&mut self.limited);
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
        self.limited = limited;
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
