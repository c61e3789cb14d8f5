//! mailpushd's own D-Bus interface on the session bus: the unread count and state of
//! every watched mailbox, for panels and bars, pushed with a signal on each change.
//!
//! - [`service`]: the daemon's side: owns [`NAME`], serves [`INTERFACE`] at [`PATH`] from
//!   the status table, and emits `Changed` when the table changes (no timer);
//! - [`client`]: `mailpushd status` and `mailpushd mark-seen`'s side: reads the
//!   `Mailboxes` property, follows `Changed`;
//! - [`format`]: the pure text for the terminal, scripts and waybar.
//!
//! The interface (introspectable; documented in README.md and mailpushd(1)):
//!
//! ```text
//! org.mailpushd.Mailpushd1 at /org/mailpushd/Mailpushd
//!   property Mailboxes  aa{sv}  read  one dict per mailbox: account s, mailbox s,
//!                                     unread u (absent until known), new u, state s,
//!                                     last_error s (absent unless failing)
//!   property Unread     u       read  the sum of the known unread counts
//!   property Version    s       read  mailpushd's version
//!   method   MarkSeenByUser(s account, s mailbox) -> u matched
//!                                     "new" to 0 ("" = every account / mailbox);
//!                                     \Seen on the server is not touched
//!   method   Reload()                 as SIGHUP (a second apart at most)
//!   signal   Changed(aa{sv} mailboxes) after a change to Mailboxes (those within
//!                                     0.1 s of each other as one)
//! ```
//!
//! Depends on `status` (the table) and `event` (Reload); nothing depends on it but the
//! supervisor and the command line.

pub mod client;
pub mod format;
pub mod service;

use zbus::{DeserializeDict, SerializeDict, Type};

/// The well-known name mailpushd owns on the session bus.
pub const NAME: &str = "org.mailpushd.Mailpushd";
/// The object the interface is served at.
pub const PATH: &str = "/org/mailpushd/Mailpushd";
/// The interface; the version is in its name, as the D-Bus API design guidelines advise.
pub const INTERFACE: &str = "org.mailpushd.Mailpushd1";

/// One watched mailbox, as the interface carries it (`a{sv}`, so fields can be added
/// without breaking readers).
#[derive(Debug, Clone, Default, PartialEq, Eq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "snake_case")]
pub struct Mailbox {
    pub account: String,
    pub mailbox: String,
    /// Messages without `\Seen` (RFC 3501): absent until the first count.
    pub unread: Option<u32>,
    /// Announced since the user last looked (`MarkSeenByUser`), and still unread.
    pub new: u32,
    /// "connecting", "idling", "polling" or "retrying".
    pub state: String,
    /// What went wrong, while it lasts.
    pub last_error: Option<String>,
}

/// The sum of the known unread counts (capped at `u32::MAX`); `None` while none is known.
/// The `Unread` property, `status --total` and waybar's text.
pub fn total_unread(mailboxes: &[Mailbox]) -> Option<u32> {
    mailboxes
        .iter()
        .filter_map(|m| m.unread)
        .reduce(u32::saturating_add)
}

impl From<crate::status::MailboxView> for Mailbox {
    fn from(v: crate::status::MailboxView) -> Self {
        Mailbox {
            account: v.account,
            mailbox: v.mailbox,
            unread: v.unread,
            new: v.new,
            state: v.state.to_owned(),
            last_error: v.last_error,
        }
    }
}
