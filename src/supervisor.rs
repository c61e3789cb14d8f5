//! The supervisor: the main thread's loop that starts one watcher thread per
//! (account, mailbox), restarts one that dies, and stops them all on SIGTERM/SIGINT.
//!
//! Everything reaches it as an [`Event`] on one channel, so all decisions about threads are
//! made in one place. It owns every `JoinHandle` and every watcher's [`Control`].

use std::collections::BTreeMap;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{Account, Config};
use crate::outputs::{Outputs, SharedOutputs};
use crate::state::StateStore;
use crate::watcher::{Control, Watcher};
use crate::{signals, suspend};

/// How long shutdown waits for watchers to log out before the process exits anyway; keeps
/// the whole stop under the 2 seconds systemd and users expect.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

#[derive(Debug)]
pub enum Event {
    /// SIGTERM or SIGINT. A second one during shutdown exits at once.
    Terminate,
    /// SIGHUP.
    Reload,
    /// The machine woke from suspend after sleeping this long.
    Resumed(Duration),
    /// A watcher thread ended (stopped, or died in a way its own loop could not catch).
    WatcherExited(String),
}

struct Running {
    account: Arc<Account>,
    mailbox: String,
    control: Arc<Control>,
    thread: JoinHandle<()>,
}

/// Runs the daemon until SIGTERM/SIGINT. Returns once the watchers have stopped (or the
/// grace period ran out).
pub fn run(config: Config, store: StateStore) -> std::io::Result<()> {
    let outputs = SharedOutputs::new(Outputs::new(&config));
    let (tx, rx) = mpsc::channel();
    signals::spawn(tx.clone())?;
    if let Err(e) = suspend::spawn(tx.clone()) {
        log::warn!("cannot watch for resume from suspend ({e}); relying on TCP keepalive");
    }

    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    for account in &config.accounts {
        for mailbox in &account.mailboxes {
            let r = start(account, mailbox, &outputs, &store, &tx)?;
            running.insert(format!("{}/{}", account.name, mailbox), r);
        }
    }
    log::info!(
        "mailpushd {} started: {} account(s), {} mailbox(es)",
        env!("CARGO_PKG_VERSION"),
        config.accounts.len(),
        running.len()
    );

    while let Ok(event) = rx.recv() {
        match event {
            Event::Terminate => break,
            Event::Reload => log::warn!(
                "SIGHUP: reloading the configuration is not supported yet; restart mailpushd to apply changes"
            ),
            Event::Resumed(slept) => {
                log::info!(
                    "resumed after {:.0}s of suspend: reconnecting every watcher",
                    slept.as_secs_f64()
                );
                for r in running.values() {
                    r.control.reconnect();
                }
            }
            Event::WatcherExited(key) => {
                // Watchers only return when stopped, and nothing stops them outside
                // shutdown: an exit here is a bug escaping the watcher's own panic guard.
                if let Some(dead) = running.remove(&key) {
                    let reason = match dead.thread.join() {
                        Ok(()) => "exited".to_owned(),
                        Err(_) => "panicked".to_owned(),
                    };
                    log::error!("{key}: watcher thread {reason}; restarting it");
                    let r = start(&dead.account, &dead.mailbox, &outputs, &store, &tx)?;
                    running.insert(key, r);
                }
            }
        }
    }
    shutdown(running, &rx);
    Ok(())
}

fn start(
    account: &Arc<Account>,
    mailbox: &str,
    outputs: &SharedOutputs,
    store: &StateStore,
    events: &Sender<Event>,
) -> std::io::Result<Running> {
    let control = Arc::new(Control::default());
    let watcher = Watcher::new(
        Arc::clone(account),
        mailbox.to_owned(),
        outputs.clone(),
        Arc::clone(&control),
        store.clone(),
    );
    let key = watcher.key();
    let events = events.clone();
    let thread = std::thread::Builder::new()
        .name(key.clone())
        .spawn(move || {
            // Sent from a guard so the supervisor hears of the exit even on a panic.
            let _exit = ExitNotice(Some((events, key)));
            watcher.run();
        })?;
    Ok(Running {
        account: Arc::clone(account),
        mailbox: mailbox.to_owned(),
        control,
        thread,
    })
}

struct ExitNotice(Option<(Sender<Event>, String)>);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        if let Some((tx, key)) = self.0.take() {
            let _ = tx.send(Event::WatcherExited(key));
        }
    }
}

fn shutdown(mut running: BTreeMap<String, Running>, rx: &mpsc::Receiver<Event>) {
    log::info!("stopping {} watcher(s)", running.len());
    for r in running.values() {
        r.control.stop();
    }
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while !running.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::WatcherExited(key)) => {
                if let Some(r) = running.remove(&key) {
                    let _ = r.thread.join();
                }
            }
            Ok(Event::Terminate) => {
                log::warn!("second stop signal: exiting now");
                return;
            }
            Ok(Event::Reload) | Ok(Event::Resumed(_)) => {}
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                log::warn!(
                    "{} watcher(s) did not stop in time: {}",
                    running.len(),
                    running.keys().cloned().collect::<Vec<_>>().join(", ")
                );
                return;
            }
        }
    }
    log::info!("stopped");
}
