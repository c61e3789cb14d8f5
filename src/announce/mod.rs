//! Saying that mail arrived: desktop popups, syslog lines and the user's hooks.
//!
//! - [`outputs`]: the one entry point the watchers call with an [`Announcement`];
//! - [`burst`]: many messages at once become one summary instead of a flood of popups;
//! - [`notify`]: the notification thread on one session-bus connection
//!   (`org.freedesktop.Notifications`), with buttons and its own deadlines;
//! - [`activation`]: the activation tokens the server gives with a click, kept for the
//!   popup they belong to;
//! - [`text`]: the pure words of each announcement (syslog line, popup, summary);
//! - [`syslog`]: one line per message to syslog;
//! - [`hooks`]: the user's commands, run as argv with the mail as JSON on stdin.
//!
//! Depends on `config`, `decode` and `event` only; the watchers feed it and the daemon
//! owns it.

pub mod activation;
pub mod burst;
pub mod hooks;
pub mod notify;
pub mod outputs;
pub mod syslog;
pub mod text;

pub use text::Announcement;
