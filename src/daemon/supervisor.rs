//! The supervisor: the main thread's loop that owns every watcher thread. It starts one per
//! (account, mailbox), applies a reloaded config (keeping unchanged watchers connected),
//! restarts a watcher that dies, reconnects all after a resume from suspend, keeps systemd
//! informed, and stops everything on SIGTERM/SIGINT.
//!
//! Everything reaches it as an [`Event`] on one channel, so all decisions about threads are
//! made in one place. It owns every `JoinHandle` and every watcher's [`Control`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::{actions, budget, config_watch, signals, suspend};
use crate::announce::notify::{Notifier, Settings};
use crate::announce::outputs::{Outputs, SharedOutputs};
use crate::config::patterns;
use crate::config::{self, Account, Config};
use crate::daemon::reload::{self, Key};
use crate::daemon::systemd::SystemdNotifier;
pub use crate::event::Event;
use crate::event::SHARED_KEY;
use crate::event::{ReloadQueue, Shown};
use crate::mailbox::state::StateStore;
use crate::mailbox::watcher::{Control, Shared, Watcher};
use crate::status::StatusTable;

/// How long shutdown waits for watchers to log out before the process exits anyway; keeps
/// the whole stop under the 2 seconds systemd and users expect.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);
/// How long of that a watcher may spend on its goodbye (DONE, LOGOUT) before its
/// connection is cut.
const GOODBYE_GRACE: Duration = Duration::from_millis(1000);
/// How long after the stop began the last popups may take to go out (the notification
/// thread's calls time out later than that, so a frozen server is not waited for).
const NOTIFY_GRACE: Duration = Duration::from_millis(1800);

struct Running {
    id: u64,
    account: Arc<Account>,
    /// The mailboxes it watches: one, or the shared connection's.
    mailboxes: Vec<String>,
    /// It lists the account's patterns.
    lists: bool,
    control: Arc<Control>,
    thread: JoinHandle<()>,
}

/// What the supervisor has learnt about an account's server since the account's
/// connection settings last changed.
#[derive(Debug, Default, Clone)]
struct Learned {
    /// What the account's `mailboxes` patterns stand for (`None`: not listed yet), and
    /// when that last changed.
    mailboxes: Option<Vec<String>>,
    mailboxes_at: Option<Instant>,
    /// NOTIFY and IDLE offered (`None`: no login yet).
    notify: Option<bool>,
    /// IDLE offered (`None`: no login yet).
    idle: Option<bool>,
    /// The budget after the server refused a connection for its limit, and when it was
    /// lowered.
    budget: Option<(u32, Instant)>,
}

/// After the budget was lowered, a refusal this soon is taken for the server still
/// counting the connections just given up (Dovecot counts a logout a moment after the
/// client saw it), not for a lower limit: the watcher retries after [`RETRY_SOON`].
const SETTLE: Duration = Duration::from_secs(30);
/// How soon a watcher refused during [`SETTLE`] tries again.
const RETRY_SOON: Duration = Duration::from_secs(3);
/// Asked-for reloads (SIGHUP, D-Bus `Reload`) one after another at most this often: a
/// `Reload` called in a loop reloads once a second (the last request is always served, up
/// to this much later), not once per call with two log lines and a systemd RELOADING
/// each.
const RELOAD_SPACING: Duration = Duration::from_secs(1);
/// What patterns stand for changes the watchers at most this often.
const LIST_HOLD: Duration = Duration::from_secs(60);

struct Supervisor {
    config_path: PathBuf,
    config: Config,
    shared: Shared,
    running: BTreeMap<Key, Running>,
    /// Stopped (by a reload or a new assignment) but not yet exited. A watcher that
    /// would watch one of the same mailboxes starts only once this one has exited, so
    /// that two never announce the same mail.
    retiring: Vec<Running>,
    learned: BTreeMap<String, Learned>,
    /// Watchers refused for the connection limit, kept by the new assignment: they retry
    /// as soon as a retiring watcher of their account has freed its connection.
    refused: Vec<Key>,
    /// Watchers to make retry at a given time (refused while the budget settles), and
    /// those that had that retry since the budget was last lowered: one each, so a server
    /// that keeps refusing is not knocked on more often than `reconnect_max_secs`.
    retries: Vec<(Instant, Key)>,
    retried_soon: Vec<Key>,
    /// A listing that came within LIST_HOLD of the last change, by account, to apply
    /// when the hold ends (the latest wins).
    pending_lists: BTreeMap<String, (Instant, Vec<String>)>,
    next_id: u64,
    systemd: SystemdNotifier,
    /// The notification thread: all D-Bus traffic, never waited on for long.
    notifier: Notifier,
    notify_thread: JoinHandle<()>,
    /// The D-Bus interface with the unread counts (src/bus/service.rs).
    bus_thread: Option<JoinHandle<()>>,
    /// Whether a reload is waiting in the channel (SIGHUP and D-Bus `Reload` send one at
    /// most).
    reloads: ReloadQueue,
}

/// Runs the daemon until SIGTERM/SIGINT. Returns once the watchers have stopped (or the
/// grace period ran out).
pub fn run(config_path: PathBuf, config: Config, store: StateStore) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel();
    let reloads = ReloadQueue::default();
    signals::spawn(tx.clone(), reloads.clone())?;
    if let Err(e) = suspend::spawn(tx.clone()) {
        log::warn!("cannot watch for resume from suspend ({e}); relying on TCP keepalive");
    }
    if let Err(e) = config_watch::spawn(&config_path, tx.clone()) {
        log::warn!(
            "cannot watch {} for changes ({e}); reload with SIGHUP",
            config_path.display()
        );
    }
    let status = StatusTable::default();
    let (notifier, notify_thread) = Notifier::spawn(
        Settings::of(&config.notifications),
        Some(tx.clone()),
        status.clone(),
    )?;
    let bus_thread = match crate::bus::service::spawn(status.clone(), tx.clone(), reloads.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            log::warn!("cannot start the D-Bus interface ({e}); unread counts are not published");
            None
        }
    };
    let mut sup = Supervisor {
        bus_thread,
        reloads,
        shared: Shared {
            outputs: SharedOutputs::new(Outputs::new(&config, Some(tx.clone()), notifier.clone())),
            status,
            store,
            events: tx,
        },
        config_path,
        notifier,
        notify_thread,
        running: BTreeMap::new(),
        retiring: Vec::new(),
        learned: BTreeMap::new(),
        refused: Vec::new(),
        retries: Vec::new(),
        retried_soon: Vec::new(),
        pending_lists: BTreeMap::new(),
        next_id: 0,
        systemd: SystemdNotifier::from_env(),
        config,
    };
    sup.reconcile()?;
    log::info!(
        "mailpushd {} started: {} account(s), {} mailbox(es)",
        env!("CARGO_PKG_VERSION"),
        sup.config.accounts.len(),
        sup.config
            .accounts
            .iter()
            .map(|a| a.mailboxes.len())
            .sum::<usize>()
    );
    let status = sup.shared.status.summary();
    sup.systemd.ready(&status);
    sup.serve(&rx)?;
    sup.systemd.stopping();
    sup.shutdown(&rx);
    Ok(())
}

impl Supervisor {
    /// The event loop, until a stop signal. It wakes for events, and otherwise only on a
    /// deadline it has: a systemd watchdog ping (at half its timeout) or a held burst
    /// summary; with neither, it sleeps until the next event.
    fn serve(&mut self, rx: &Receiver<Event>) -> std::io::Result<()> {
        let watchdog = self.systemd.watchdog_interval();
        let mut last_ping = Instant::now();
        let mut burst_due: Option<Instant> = None;
        // When the last asked-for reload began, and when a deferred one is due.
        let mut last_reload: Option<Instant> = None;
        let mut reload_due: Option<Instant> = None;
        loop {
            let retry_due = self
                .retries
                .iter()
                .map(|(at, _)| *at)
                .chain(self.pending_lists.values().map(|(at, _)| *at))
                .min();
            let deadline = [
                watchdog.map(|every| last_ping + every),
                burst_due,
                retry_due,
                reload_due,
            ]
            .into_iter()
            .flatten()
            .min();
            let event = match deadline {
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(e) => Some(e),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                },
                None => match rx.recv() {
                    Ok(e) => Some(e),
                    Err(_) => return Ok(()),
                },
            };
            if let Some(every) = watchdog {
                if last_ping.elapsed() >= every {
                    self.systemd.watchdog();
                    last_ping = Instant::now();
                }
            }
            if burst_due.is_some_and(|at| Instant::now() >= at)
                || matches!(event, Some(Event::BurstHeld))
            {
                burst_due = self.shared.outputs.lock().flush_bursts(Instant::now());
            }
            if retry_due.is_some_and(|at| Instant::now() >= at) {
                let now = Instant::now();
                let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retries)
                    .into_iter()
                    .partition(|(at, _)| *at <= now);
                self.retries = later;
                for (_, key) in due {
                    if let Some(r) = self.running.get(&key) {
                        r.control.reconnect();
                    }
                }
                let lists: Vec<String> = self
                    .pending_lists
                    .iter()
                    .filter(|(_, (at, _))| *at <= now)
                    .map(|(account, _)| account.clone())
                    .collect();
                for account in lists {
                    if let Some((_, mailboxes)) = self.pending_lists.remove(&account) {
                        if let Some(l) = self.learned.get_mut(&account) {
                            l.mailboxes_at = None;
                        }
                        self.learnt_mailboxes(&account, mailboxes)?;
                    }
                }
            }
            if reload_due.is_some_and(|at| Instant::now() >= at)
                && !matches!(event, Some(Event::Terminate))
            {
                reload_due = None;
                last_reload = Some(Instant::now());
                log::info!("reloading {} (asked for again)", self.config_path.display());
                self.reload()?;
            }
            let Some(event) = event else { continue };
            match event {
                Event::Terminate => {
                    self.shared.outputs.lock().flush_all_bursts();
                    return Ok(());
                }
                Event::Reload => {
                    self.reloads.begin();
                    if let Some(at) = last_reload
                        .map(|t| t + RELOAD_SPACING)
                        .filter(|at| *at > Instant::now())
                    {
                        reload_due = Some(at);
                        continue;
                    }
                    reload_due = None;
                    last_reload = Some(Instant::now());
                    log::info!(
                        "SIGHUP or D-Bus Reload: reloading {}",
                        self.config_path.display()
                    );
                    self.reload()?;
                }
                Event::ConfigChanged => {
                    log::info!("{} changed: reloading", self.config_path.display());
                    self.reload()?;
                }
                Event::DumpState => {
                    for line in self.shared.status.dump(SystemTime::now()) {
                        log::info!("state: {line}");
                    }
                }
                Event::Resumed(slept) => {
                    log::info!(
                        "resumed after {:.0}s of suspend: reconnecting every watcher",
                        slept.as_secs_f64()
                    );
                    for r in self.running.values() {
                        r.control.reconnect();
                    }
                }
                Event::StatusChanged => {
                    let status = self.shared.status.summary();
                    self.systemd.status(&status);
                }
                Event::WatcherExited { key, id } => self.exited(key, id)?,
                Event::Capabilities {
                    account,
                    notify,
                    idle,
                } => self.learnt_offers(&account, notify, idle)?,
                Event::Mailboxes { account, mailboxes } => {
                    self.learnt_mailboxes(&account, mailboxes)?;
                }
                Event::ConnectionLimit { key, cap } => self.limited(key, cap)?,
                Event::NotificationAction {
                    id,
                    key,
                    about,
                    activation_token,
                } => self.action(id, &key, about, activation_token),
                // Handled above, with the timer.
                Event::BurstHeld => {}
            }
        }
    }

    /// A watcher thread ended. Retiring ones are expected to; a running one is not
    /// (watchers only return when stopped): that is a bug escaping the watcher's own
    /// panic guard, so it is logged and the watcher restarted.
    fn exited(&mut self, key: Key, id: u64) -> std::io::Result<()> {
        if let Some(i) = self.retiring.iter().position(|r| r.id == id) {
            let gone = self.retiring.swap_remove(i);
            let _ = gone.thread.join();
            // Its mailboxes may now go to their new watchers, and its connection to a
            // watcher that was refused one.
            self.reconcile()?;
            let account = &gone.account.name;
            for key in std::mem::take(&mut self.refused) {
                match self.running.get(&key) {
                    Some(r) if &key.0 == account => r.control.reconnect(),
                    Some(_) => self.refused.push(key),
                    None => {}
                }
            }
            return Ok(());
        }
        if self.running.get(&key).is_some_and(|r| r.id == id) {
            let dead = self.running.remove(&key).expect("checked above");
            let reason = match dead.thread.join() {
                Ok(()) => "exited",
                Err(_) => "panicked",
            };
            log::error!(
                "{}/{}: watcher thread {reason}; restarting it",
                key.0,
                key.1
            );
            self.start(Unit {
                key,
                account: dead.account,
                mailboxes: dead.mailboxes,
                lists: dead.lists,
            })?;
        }
        Ok(())
    }

    /// A watcher of `account` logged in and learnt whether the server offers NOTIFY: the
    /// first login after a start or a change of the account's settings lets the other
    /// mailboxes start, on connections of their own or the shared one.
    fn learnt_offers(&mut self, account: &str, notify: bool, idle: bool) -> std::io::Result<()> {
        if !self.config.accounts.iter().any(|a| a.name == account) {
            return Ok(());
        }
        let learned = self.learned.entry(account.to_owned()).or_default();
        if learned.notify.is_some() {
            // The first login's answer holds until the account's settings change: a
            // server whose answers differ (a cluster of mixed versions behind one name)
            // would otherwise have the watchers re-planned, and logging in, at every
            // login. The shared connection uses NOTIFY only where its own server offers
            // it, so a plan made for NOTIFY still watches every mailbox.
            if learned.notify != Some(notify) || learned.idle != Some(idle) {
                log::debug!(
                    "{account}: this server answered NOTIFY {notify}, IDLE {idle}; keeping the first answer until a reload"
                );
            }
            return Ok(());
        }
        learned.notify = Some(notify);
        learned.idle = Some(idle);
        self.reconcile()?;
        if let Some(line) = self.assignment_line(account) {
            log::info!("{line}");
        }
        Ok(())
    }

    /// The watcher `key` was refused a connection for the server's limit: the account's
    /// budget drops to one fewer than it had running (or the server's cap), the overflow
    /// moves to the shared connection, and that is said once, in words. Reports from
    /// watchers no longer running, or once the budget is 1, change nothing.
    fn limited(&mut self, key: Key, cap: Option<u32>) -> std::io::Result<()> {
        if !self.running.contains_key(&key) {
            return Ok(());
        }
        let account = key.0.clone();
        let Some(acct) = self.config.accounts.iter().find(|a| a.name == account) else {
            return Ok(());
        };
        let units = self.running.keys().filter(|k| k.0 == account).count();
        let learned = self.learned.entry(account.clone()).or_default();
        let settling = learned.budget.filter(|(_, at)| at.elapsed() < SETTLE);
        if let Some((_, at)) = settling.filter(|_| !self.retried_soon.contains(&key)) {
            self.retried_soon.push(key.clone());
            log::debug!(
                "{account}: refused {:.0}s after the budget was lowered; retrying in {}s",
                at.elapsed().as_secs_f64(),
                RETRY_SOON.as_secs()
            );
            self.retries.push((Instant::now() + RETRY_SOON, key));
            return Ok(());
        }
        if settling.is_some() {
            // Retried soon once already: the watcher's own backoff (the cap) from here.
            return Ok(());
        }
        let before = learned.budget.map_or(acct.max_connections, |(b, _)| b);
        let after = budget::lowered(units, cap).min(before);
        if after >= before && units <= usize::try_from(before).unwrap_or(usize::MAX) {
            if !self.refused.contains(&key) {
                self.refused.push(key);
            }
            return Ok(());
        }
        learned.budget = Some((after, Instant::now()));
        self.retried_soon.clear();
        self.reconcile()?;
        if self.running.contains_key(&key) && !self.refused.contains(&key) {
            self.refused.push(key);
        }
        if let Some(line) = self.assignment_line(&account) {
            let line = format!(
                "{account}: the server allows only {after} connection{} for this account; {}",
                if after == 1 { "" } else { "s" },
                line.split_once(": ")
                    .map_or(line.as_str(), |(_, rest)| rest)
            );
            log::warn!("{line}");
            self.shared.outputs.lock().warning(&line);
        }
        Ok(())
    }

    /// `account: INBOX on a connection of its own; 11 mailboxes over one shared connection
    /// (new mail reported by NOTIFY)`: how the account is watched now.
    fn assignment_line(&self, account: &str) -> Option<String> {
        let acct = self.config.accounts.iter().find(|a| a.name == account)?;
        let a = self.assignment(acct);
        let mut parts = Vec::new();
        match a.own.as_slice() {
            [] => {}
            [one] => parts.push(format!("{one} on a connection of its own (IDLE)")),
            few if few.len() <= 5 => parts.push(format!(
                "{} on connections of their own (IDLE)",
                few.join(", ")
            )),
            many => parts.push(format!(
                "{} mailboxes on connections of their own (IDLE)",
                many.len()
            )),
        }
        if !a.shared.is_empty() {
            let how = if self.learned.get(account).and_then(|l| l.notify) == Some(true) {
                "new mail reported by NOTIFY".to_owned()
            } else {
                format!("checked every {}s", acct.poll_interval.as_secs())
            };
            parts.push(format!(
                "{} mailbox{} over one shared connection ({how})",
                a.shared.len(),
                if a.shared.len() == 1 { "" } else { "es" }
            ));
        }
        if parts.is_empty() {
            return None;
        }
        Some(crate::decode::controls_escaped(&format!(
            "{account}: {}",
            parts.join("; ")
        )))
    }

    fn assignment(&self, account: &Account) -> budget::Assignment {
        let learned = self.learned.get(&account.name).cloned().unwrap_or_default();
        let mailboxes = if has_patterns(account) {
            // Until the patterns are listed, the mailboxes named outright.
            learned
                .mailboxes
                .unwrap_or_else(|| patterns::expand(&account.mailboxes, &[]))
        } else {
            account.mailboxes.clone()
        };
        budget::assign(&mailboxes, learned.notify, self.budget_of(account))
    }

    /// The account's connection budget now: `max_connections`, or lower after a refusal
    /// for the server's limit, or 1 without IDLE (every mailbox is polled, and one
    /// connection polls them all as well as many; NetEase also throttles logins).
    fn budget_of(&self, account: &Account) -> u32 {
        let learned = self.learned.get(&account.name);
        if learned.and_then(|l| l.idle) == Some(false) {
            1
        } else {
            learned
                .and_then(|l| l.budget)
                .map_or(account.max_connections, |(b, _)| b)
        }
    }

    /// What `account`'s patterns stand for now, from its listing watcher.
    fn learnt_mailboxes(&mut self, account: &str, mailboxes: Vec<String>) -> std::io::Result<()> {
        let Some(acct) = self.config.accounts.iter().find(|a| a.name == account) else {
            return Ok(());
        };
        if !has_patterns(acct) {
            return Ok(());
        }
        let learned = self.learned.entry(account.to_owned()).or_default();
        if learned.mailboxes.as_ref() == Some(&mailboxes) {
            self.pending_lists.remove(account);
            return Ok(());
        }
        // A change is applied at most once per LIST_HOLD: each one restarts the shared
        // connection, which lists again at its login, and a server whose answers differ
        // from one connection to the next (a cluster) would otherwise keep that going.
        if let Some(at) = learned.mailboxes_at.filter(|at| at.elapsed() < LIST_HOLD) {
            self.pending_lists
                .insert(account.to_owned(), (at + LIST_HOLD, mailboxes));
            return Ok(());
        }
        if learned.mailboxes.is_some() {
            // The first listing is no change; changes after it are held apart.
            learned.mailboxes_at = Some(Instant::now());
        }
        self.pending_lists.remove(account);
        let names: Vec<String> = mailboxes
            .iter()
            .map(|m| crate::decode::controls_escaped(m))
            .collect();
        log::info!(
            "{}: watching {} mailbox{}: {}",
            crate::decode::controls_escaped(account),
            names.len(),
            if names.len() == 1 { "" } else { "es" },
            names.join(", ")
        );
        learned.mailboxes = Some(mailboxes);
        self.reconcile()?;
        if let Some(line) = self.assignment_line(account) {
            log::info!("{line}");
        }
        Ok(())
    }

    /// A popup's button: "default" / "open" run `open_command`; "read" marks the message
    /// as read on the server, from a short-lived connection of its own so the watcher's
    /// IDLE is not disturbed (it then sees the flag change and closes the popup).
    /// `about` is the popup's subject; the notification thread passes on only clicks on
    /// popups that mailpushd showed, on the server it shows them on. `activation_token`
    /// came with this click (for this popup only) and goes to `open_command`; any other
    /// action drops it.
    fn action(&mut self, id: u32, key: &str, about: Shown, activation_token: Option<String>) {
        log::info!(
            "popup {id}: action {key:?}{}",
            if activation_token.is_some() {
                " (with an activation token)"
            } else {
                ""
            }
        );
        match key {
            "default" | "open" => {
                // The user looked at this mailbox's new mail: its "new" count goes (the
                // unread count stays until the mail is read).
                let (Shown::Message {
                    account, mailbox, ..
                }
                | Shown::Summary {
                    account, mailbox, ..
                }) = &about;
                self.shared
                    .status
                    .mark_seen_by_user(Some(account), Some(mailbox));
                match &self.config.notifications.open_command {
                    Some(argv) => actions::open(argv, activation_token.as_deref()),
                    None => log::debug!("popup {id} clicked; no open_command configured"),
                }
            }
            "read" => {
                let Shown::Message {
                    account,
                    mailbox,
                    uid,
                } = about
                else {
                    return;
                };
                let Some(acct) = self.config.accounts.iter().find(|a| a.name == account) else {
                    return;
                };
                actions::mark_read(Arc::clone(acct), mailbox, uid);
            }
            other => log::debug!("popup {id}: unknown action {other:?}"),
        }
    }

    /// Re-reads the config. A broken file is reported (log, syslog, one popup) and the
    /// daemon keeps running on the last good config.
    fn reload(&mut self) -> std::io::Result<()> {
        self.systemd.reloading();
        // A reload is also the way to make new connections see an updated system CA store.
        crate::imap::tls::forget();
        match config::load(&self.config_path) {
            Err(e) => {
                let lines = e.log_lines();
                for line in &lines {
                    log::error!("{line}");
                }
                let what = match e.count() {
                    1 => "1 problem".to_owned(),
                    n => format!("{n} problems"),
                };
                let summary = format!(
                    "configuration not reloaded ({what}); still running with the previous one"
                );
                log::error!("{summary}");
                self.shared
                    .outputs
                    .lock()
                    .config_rejected(&lines, e.count(), &summary);
            }
            Ok(new) => {
                for w in config::duplicate_watch_warnings(&new) {
                    log::warn!("{w}");
                }
                let plan = reload::plan(Some(&self.config), &new);
                // What was learnt about a server holds while the account's connection
                // settings do (a new limit, a new host: learn again).
                self.learned.retain(|name, learned| {
                    let old = self.config.accounts.iter().find(|a| &a.name == name);
                    let new = new.accounts.iter().find(|a| &a.name == name);
                    if let (Some(o), Some(n)) = (old, new) {
                        if o.mailboxes != n.mailboxes {
                            // New patterns: listed again by a new listing watcher.
                            learned.mailboxes = None;
                        }
                    }
                    matches!((old, new), (Some(o), Some(n)) if reload::same_connection(o, n))
                });
                log::info!(
                    "configuration reloaded: {} kept, {} restarted, {} stopped, {} started",
                    plan.keep.len(),
                    plan.restart.len(),
                    plan.stop.len(),
                    plan.start.len()
                );
                if new.notifications != self.config.notifications
                    || new.syslog != self.config.syslog
                {
                    self.shared.outputs.lock().reconfigure(&new);
                }
                self.shared.outputs.lock().set_accounts(&new);
                self.config = new;
                self.reconcile()?;
            }
        }
        let status = self.shared.status.summary();
        self.systemd.ready(&status);
        Ok(())
    }

    /// Makes the running watchers those the config and what was learnt call for
    /// (src/daemon/budget.rs): stops the ones no longer wanted (or whose account's
    /// connection settings or mailboxes changed) and starts the missing ones, except where
    /// a stopped watcher of the same mailbox has not exited yet: that one starts when it
    /// has (see [`Supervisor::exited`]).
    fn reconcile(&mut self) -> std::io::Result<()> {
        let mut want: Vec<Unit> = Vec::new();
        for account in &self.config.accounts {
            let a = self.assignment(account);
            let patterns = has_patterns(account);
            // The watcher that lists the patterns: the shared connection's, else the first
            // mailbox's; with neither (nothing named, nothing matched yet), a shared
            // connection with no mailbox, there only to list.
            let lister_is_shared = a.own.is_empty() || !a.shared.is_empty();
            for (i, m) in a.own.into_iter().enumerate() {
                want.push(Unit {
                    key: (account.name.clone(), m.clone()),
                    account: Arc::clone(account),
                    mailboxes: vec![m],
                    lists: patterns && i == 0 && !lister_is_shared,
                });
            }
            if !a.shared.is_empty() || (patterns && lister_is_shared) {
                want.push(Unit {
                    key: (account.name.clone(), SHARED_KEY.to_owned()),
                    account: Arc::clone(account),
                    mailboxes: a.shared,
                    lists: patterns,
                });
            }
        }
        let stale: Vec<Key> = self
            .running
            .iter()
            .filter(|(key, r)| match want.iter().find(|u| u.key == **key) {
                None => true,
                Some(u) => {
                    !reload::same_connection(&r.account, &u.account)
                        || r.mailboxes != u.mailboxes
                        || (u.lists && !r.lists)
                        || (r.lists && r.account.mailboxes != u.account.mailboxes)
                }
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in &stale {
            self.retire(key);
        }
        let rows: std::collections::BTreeSet<String> = want
            .iter()
            .flat_map(|u| {
                u.mailboxes
                    .iter()
                    .map(|m| crate::status::row_key(&u.key.0, m))
            })
            .collect();
        self.shared.status.retain(|key| rows.contains(key));
        for unit in want {
            if self.running.contains_key(&unit.key) {
                continue;
            }
            let busy = self.retiring.iter().any(|r| {
                same_state_files(&r.account, &unit.account)
                    && r.mailboxes.iter().any(|m| unit.mailboxes.contains(m))
            });
            // Stopped watchers still hold their connections until they have logged out:
            // the budget counts them, so that a reload never holds more than it allows.
            let held = self
                .running
                .values()
                .chain(&self.retiring)
                .filter(|r| r.account.name == unit.account.name)
                .count();
            let budget = usize::try_from(self.budget_of(&unit.account)).unwrap_or(usize::MAX);
            if !busy && held < budget.max(1) {
                self.start(unit)?;
            }
        }
        Ok(())
    }

    fn retire(&mut self, key: &Key) {
        if let Some(r) = self.running.remove(key) {
            r.control.stop();
            // Its rows stay, with their counts and "new", for a watcher that goes on
            // watching the mailbox (a reload that restarts a connection): a panel does not
            // see the mailbox vanish and come back empty. Rows nobody watches any more go
            // at the end of `reconcile`.
            for m in &r.mailboxes {
                self.shared
                    .status
                    .update_existing(&crate::status::row_key(&key.0, m), |row| {
                        row.phase = crate::status::Phase::Connecting;
                        row.connected_since = None;
                    });
            }
            self.refused.retain(|k| k != key);
            self.retiring.push(r);
        }
    }

    fn start(&mut self, unit: Unit) -> std::io::Result<()> {
        let Unit {
            key,
            account,
            mailboxes,
            lists,
        } = unit;
        let id = self.next_id;
        self.next_id += 1;
        let control = Arc::new(Control::default());
        let mut watcher = if key.1 == SHARED_KEY {
            Watcher::shared(
                Arc::clone(&account),
                mailboxes.clone(),
                self.shared.clone(),
                Arc::clone(&control),
            )
        } else {
            Watcher::new(
                Arc::clone(&account),
                key.1.clone(),
                self.shared.clone(),
                Arc::clone(&control),
            )
        };
        if lists {
            watcher = watcher.listing();
        }
        let events = self.shared.events.clone();
        let exit_key = key.clone();
        let thread = std::thread::Builder::new()
            .name(watcher.key())
            .spawn(move || {
                // Sent from a guard so the supervisor hears of the exit even on a panic.
                let _exit = ExitNotice(Some((events, exit_key, id)));
                watcher.run();
            })?;
        self.running.insert(
            key,
            Running {
                id,
                account,
                mailboxes,
                lists,
                control,
                thread,
            },
        );
        Ok(())
    }

    fn shutdown(self, rx: &Receiver<Event>) {
        let started = Instant::now();
        // Hooks are killed in parallel with the watchers' stop (each bounded), so the whole
        // stop stays within SHUTDOWN_GRACE plus a little.
        let outputs = self.shared.outputs.clone();
        let hooks = std::thread::spawn(move || outputs.lock().shutdown_hooks());
        let left: Vec<Running> = self.running.into_values().chain(self.retiring).collect();
        log::info!("stopping {} watcher(s)", left.len());
        for r in &left {
            r.control.stop();
        }
        let stopped = wait_for_exits(left, rx);
        // The popups queued so far (held summaries flushed at the stop) go out if the
        // notification server answers promptly; a frozen one does not delay the exit.
        self.notifier.stop();
        self.shared.status.close();
        let syslog = self.shared.outputs.lock().stop_syslog();
        if !join_by(self.notify_thread, started + NOTIFY_GRACE) {
            log::warn!("desktop notifications still pending at exit were dropped");
        }
        if let Some(bus) = self.bus_thread {
            if !join_by(bus, started + NOTIFY_GRACE) {
                log::warn!("the D-Bus interface did not close in time");
            }
        }
        if let Some(syslog) = syslog {
            if !join_by(syslog, started + NOTIFY_GRACE) {
                log::warn!("syslog lines still pending at exit were dropped");
            }
        }
        if stopped {
            let _ = hooks.join();
            log::info!("stopped");
        }
    }
}

/// A watcher the supervisor wants running.
struct Unit {
    key: Key,
    account: Arc<Account>,
    mailboxes: Vec<String>,
    lists: bool,
}

/// Whether the account's `mailboxes` hold patterns, to be listed.
fn has_patterns(account: &Account) -> bool {
    account.mailboxes.iter().any(|m| patterns::is_pattern(m))
}

/// Whether two accounts' watchers of one mailbox would keep the same state file (which is
/// keyed by user, host, port and mailbox: src/mailbox/state.rs), whatever the accounts'
/// names.
fn same_state_files(a: &Account, b: &Account) -> bool {
    a.username == b.username && a.host == b.host && a.port == b.port
}

/// Joins `thread` if it ends by `deadline`; false if it did not (it is then left to die
/// with the process).
fn join_by(thread: JoinHandle<()>, deadline: Instant) -> bool {
    let (done, ended) = mpsc::channel();
    let joiner = std::thread::Builder::new()
        .name("join".into())
        .spawn(move || {
            let _ = thread.join();
            let _ = done.send(());
        });
    joiner.is_ok()
        && ended
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
}

/// Waits (at most SHUTDOWN_GRACE) for stopped watchers to exit; false if they did not all
/// exit in time or a second stop signal came. Watchers still saying goodbye (DONE, LOGOUT)
/// after [`GOODBYE_GRACE`] have their connections cut, so they end within the grace.
fn wait_for_exits(mut left: Vec<Running>, rx: &Receiver<Event>) -> bool {
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    let mut cut_at = Some(Instant::now() + GOODBYE_GRACE);
    while !left.is_empty() {
        let until = cut_at.unwrap_or(deadline);
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Err(_) if cut_at.take().is_some() => {
                for r in &left {
                    r.control.cut();
                }
            }
            Ok(Event::WatcherExited { id, .. }) => {
                if let Some(i) = left.iter().position(|r| r.id == id) {
                    let _ = left.swap_remove(i).thread.join();
                }
            }
            Ok(Event::Terminate) => {
                log::warn!("second stop signal: exiting now");
                return false;
            }
            Ok(_) => {}
            Err(_) => {
                log::warn!("{} watcher(s) did not stop in time", left.len());
                return false;
            }
        }
    }
    true
}

struct ExitNotice(Option<(Sender<Event>, Key, u64)>);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        if let Some((tx, key, id)) = self.0.take() {
            let _ = tx.send(Event::WatcherExited { key, id });
        }
    }
}
