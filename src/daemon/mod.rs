//! The process around the watchers: the supervisor thread and everything that sends it
//! events.
//!
//! - [`supervisor`]: starts a watcher per (account, mailbox), applies reloads, routes popup
//!   actions, shuts down within systemd's budget;
//! - [`reload`]: what a new config changes (which watchers start, stop or restart);
//! - [`budget`]: which mailboxes get a connection of their own and which share one;
//! - [`config_watch`], [`signals`], [`suspend`]: the config file, SIGTERM/SIGHUP/SIGUSR1 and
//!   resume from suspend, turned into events;
//! - [`systemd`]: `sd_notify` readiness, status and the watchdog;
//! - [`instance`]: one daemon per state directory;
//! - [`actions`]: what popup buttons do (open the mail client, mark as read);
//! - [`probe`]: `mailpushd --check --connect`.
//!
//! The top of the import graph: it may use every other module, and none uses it.

pub mod actions;
pub mod budget;
pub mod config_watch;
pub mod instance;
pub mod probe;
pub mod reload;
pub mod signals;
pub mod supervisor;
pub mod suspend;
pub mod systemd;
