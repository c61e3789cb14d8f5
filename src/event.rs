//! The one message type every thread sends to the supervisor: signals, the config watch,
//! the suspend watch, the notification thread and the watchers. Leaf threads import this
//! module, never the supervisor, so imports run one way (towards the leaves).

use std::time::Duration;

/// A watcher's key: (account name, mailbox name as configured).
pub type Key = (String, String);

#[derive(Debug)]
pub enum Event {
    /// SIGTERM or SIGINT. A second one during shutdown exits at once.
    Terminate,
    /// SIGHUP.
    Reload,
    /// The config file changed on disk.
    ConfigChanged,
    /// SIGUSR1: write every watcher's state to the log.
    DumpState,
    /// The machine woke from suspend after sleeping this long.
    Resumed(Duration),
    /// A watcher's phase changed (connected, failed...): time to update STATUS=.
    StatusChanged,
    /// A popup's button (or the popup itself, key "default") was clicked.
    NotificationAction { id: u32, key: String },
    /// A popup went away (expired, dismissed, closed).
    NotificationClosed { id: u32 },
    /// A watcher thread ended (stopped, or died in a way its own loop could not catch).
    WatcherExited { key: Key, id: u64 },
    /// Flood control held popups for a summary: time to set the timer for it.
    BurstHeld,
}
