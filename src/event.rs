//! The one message type every thread sends to the supervisor: signals, the config watch,
//! the suspend watch, the notification thread and the watchers. Leaf threads import this
//! module, never the supervisor, so imports run one way (towards the leaves).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A watcher's key: (account name, mailbox name as configured), or (account name,
/// [`SHARED_KEY`]) for the account's shared connection.
pub type Key = (String, String);

/// The mailbox part of the key of an account's shared connection: NUL cannot be in a
/// configured mailbox name (src/config/mod.rs), so no mailbox's key can be this one.
pub const SHARED_KEY: &str = "\0shared";

#[derive(Debug)]
pub enum Event {
    /// SIGTERM or SIGINT. A second one during shutdown exits at once.
    Terminate,
    /// SIGHUP, or the D-Bus interface's `Reload`: sent through [`ReloadQueue`], so at
    /// most one waits in the channel however often it is asked for.
    Reload,
    /// The config file changed on disk.
    ConfigChanged,
    /// SIGUSR1: write every watcher's state to the log.
    DumpState,
    /// The machine woke from suspend after sleeping this long.
    Resumed(Duration),
    /// A watcher's phase changed (connected, failed...): time to update STATUS=.
    StatusChanged,
    /// A button (or the popup itself, key "default") of popup `id` was clicked: a popup
    /// that mailpushd showed on the current notification server, never another
    /// application's (the notification thread checks). `activation_token`: what the
    /// server's `ActivationToken` signal gave for this popup just before the click
    /// (Desktop Notifications spec 1.2), for the program the click starts.
    NotificationAction {
        id: u32,
        key: String,
        about: Shown,
        activation_token: Option<String>,
    },
    /// A watcher thread ended (stopped, or died in a way its own loop could not catch).
    WatcherExited { key: Key, id: u64 },
    /// Flood control held popups for a summary: time to set the timer for it.
    BurstHeld,
    /// A watcher of `account` logged in; `notify`: the server offers NOTIFY (RFC 5465)
    /// and IDLE, so one shared connection can watch every mailbox but the first; `idle`:
    /// it offers IDLE (without, every mailbox is polled, and one connection does that as
    /// well as many).
    Capabilities {
        account: String,
        notify: bool,
        idle: bool,
    },
    /// What `account`'s `mailboxes` patterns stand for now (LIST, src/mailbox/patterns.rs):
    /// every mailbox to watch, named ones first.
    Mailboxes {
        account: String,
        mailboxes: Vec<String>,
    },
    /// The watcher `key` was refused a connection for the server's per-user limit (which
    /// is `cap`, if the server said): time to use fewer connections.
    ConnectionLimit { key: Key, cap: Option<u32> },
}

/// Whether an [`Event::Reload`] is waiting in the supervisor's channel. A reload reads
/// the config file as it is when the reload begins, so one waiting reload serves every
/// request made before it begins: a `Reload` called in a loop (a panel script, `kill -HUP`
/// in a loop) queues one, not one per call, and the channel the supervisor also takes
/// SIGTERM from stays short.
#[derive(Debug, Clone, Default)]
pub struct ReloadQueue(Arc<AtomicBool>);

impl ReloadQueue {
    /// Whether a reload should be sent now (none is waiting); marks one waiting.
    pub fn ask(&self) -> bool {
        !self.0.swap(true, Ordering::SeqCst)
    }

    /// The supervisor is beginning the reload: a request from now on needs a new one.
    pub fn begin(&self) {
        self.0.store(false, Ordering::SeqCst);
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
    pub fn message_in(&self, account: &str, mailbox: &str) -> Option<u32> {
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
