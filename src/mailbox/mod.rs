//! One watched mailbox, from credentials to "these UIDs are new".
//!
//! - [`watcher`]: the thread per (account, mailbox): connect, catch up, IDLE or poll,
//!   reconnect with [`backoff`], and hand new mail to the announcers;
//! - [`newmail`]: the pure decision of which UIDs are new (never miss, never repeat);
//! - [`state`]: the per-mailbox cursor on disk, so a restart resumes where it stopped;
//! - [`credentials`]: the password from the config, a command or a file;
//! - [`backoff`]: the delay between reconnects.
//!
//! Uses `imap` for the wire and `announce` for the output; the daemon above starts and stops
//! the watchers.

pub mod backoff;
pub mod credentials;
pub mod newmail;
pub mod state;
pub mod unread;
pub mod watcher;
