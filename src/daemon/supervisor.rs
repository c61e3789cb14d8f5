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

use super::{actions, config_watch, signals, suspend};
use crate::announce::notify::{Notifier, Settings};
use crate::announce::outputs::{Outputs, SharedOutputs};
use crate::config::{self, Account, Config};
use crate::daemon::reload::{self, Key};
use crate::daemon::systemd::SystemdNotifier;
pub use crate::event::Event;
use crate::event::Shown;
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
    control: Arc<Control>,
    thread: JoinHandle<()>,
}

struct Supervisor {
    config_path: PathBuf,
    config: Config,
    shared: Shared,
    running: BTreeMap<Key, Running>,
    /// Stopped (by a reload) but not yet exited.
    retiring: Vec<Running>,
    next_id: u64,
    systemd: SystemdNotifier,
    /// The notification thread: all D-Bus traffic, never waited on for long.
    notifier: Notifier,
    notify_thread: JoinHandle<()>,
}

/// Runs the daemon until SIGTERM/SIGINT. Returns once the watchers have stopped (or the
/// grace period ran out).
pub fn run(config_path: PathBuf, config: Config, store: StateStore) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel();
    signals::spawn(tx.clone())?;
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
    let mut sup = Supervisor {
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
        next_id: 0,
        systemd: SystemdNotifier::from_env(),
        config,
    };
    sup.apply(reload::plan(None, &sup.config))?;
    log::info!(
        "mailpushd {} started: {} account(s), {} mailbox(es)",
        env!("CARGO_PKG_VERSION"),
        sup.config.accounts.len(),
        sup.running.len()
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
        loop {
            let deadline = [watchdog.map(|every| last_ping + every), burst_due]
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
            let Some(event) = event else { continue };
            match event {
                Event::Terminate => {
                    self.shared.outputs.lock().flush_all_bursts();
                    return Ok(());
                }
                Event::Reload => {
                    log::info!("SIGHUP: reloading {}", self.config_path.display());
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
                Event::NotificationAction { id, key, about } => self.action(id, &key, about),
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
            let _ = self.retiring.swap_remove(i).thread.join();
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
            self.start(key, dead.account)?;
        }
        Ok(())
    }

    /// A popup's button: "default" / "open" run `open_command`; "read" marks the message
    /// as read on the server, from a short-lived connection of its own so the watcher's
    /// IDLE is not disturbed (it then sees the flag change and closes the popup).
    /// `about` is the popup's subject; the notification thread passes on only clicks on
    /// popups that mailpushd showed, on the server it shows them on.
    fn action(&mut self, id: u32, key: &str, about: Shown) {
        log::info!("popup {id}: action {key:?}");
        match key {
            "default" | "open" => match &self.config.notifications.open_command {
                Some(argv) => actions::open(argv),
                None => log::debug!("popup {id} clicked; no open_command configured"),
            },
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
                let plan = reload::plan(Some(&self.config), &new);
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
                self.apply(plan)?;
            }
        }
        let status = self.shared.status.summary();
        self.systemd.ready(&status);
        Ok(())
    }

    fn apply(&mut self, plan: reload::Plan) -> std::io::Result<()> {
        for key in plan.stop {
            self.retire(&key);
        }
        for (key, account) in plan.restart {
            self.retire(&key);
            self.start(key, account)?;
        }
        for (key, account) in plan.start {
            self.start(key, account)?;
        }
        Ok(())
    }

    fn retire(&mut self, key: &Key) {
        if let Some(r) = self.running.remove(key) {
            r.control.stop();
            self.shared.status.remove(&format!("{}/{}", key.0, key.1));
            self.retiring.push(r);
        }
    }

    fn start(&mut self, key: Key, account: Arc<Account>) -> std::io::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let control = Arc::new(Control::default());
        let watcher = Watcher::new(
            Arc::clone(&account),
            key.1.clone(),
            self.shared.clone(),
            Arc::clone(&control),
        );
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
        let syslog = self.shared.outputs.lock().stop_syslog();
        if !join_by(self.notify_thread, started + NOTIFY_GRACE) {
            log::warn!("desktop notifications still pending at exit were dropped");
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
