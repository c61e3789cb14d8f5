//! The validated configuration: the types the rest of the daemon reads, which cannot hold
//! an invalid value (`mod.rs` makes them from a file, after checking it).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

/// A validated configuration. Cheap to share: accounts sit behind `Arc`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub accounts: Vec<Arc<Account>>,
    pub notifications: Notifications,
    pub syslog: SyslogConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    pub username: String,
    pub secret: Secret,
    pub auth: Option<AuthMethod>,
    /// `tls_verify = false`: the documented escape hatch that skips certificate checks
    /// (warned about at every connect).
    pub tls_verify: bool,
    /// Mailbox names as the user wrote them (UTF-8); encoded for the wire in `imap/session.rs`.
    pub mailboxes: Vec<String>,
    pub idle_refresh: Duration,
    /// During IDLE, this long without a byte from the server (no keepalive line, no data)
    /// ends the wait and checks the link with DONE, which must be answered within
    /// [`PROBE_ANSWER`] (or `timeout`, if shorter): a link that froze without FIN or RST is
    /// found within this plus that, not at the end of the refresh cycle.
    pub idle_silence: Duration,
    pub poll_interval: Duration,
    /// Longest wait between reconnect attempts (the backoff cap).
    pub reconnect_max: Duration,
    /// The connection budget: how many IMAP connections may be open at once for this
    /// account (1..=100): `max_connections`, else the provider preset's, else 5. Not yet
    /// enforced: each mailbox still has a connection of its own.
    pub max_connections: u32,
    /// How long the server may take to answer a command (and to answer DONE at the end of
    /// each IDLE cycle, which is what finds a connection that froze without FIN or RST).
    pub timeout: Duration,
    /// More new messages than this after a (re)connect become one summary popup.
    pub catch_up_max: u32,
    /// With `tls = "none"`, whether the user explicitly accepted sending the password in
    /// the clear to a host that is not loopback.
    pub allow_plaintext_auth: bool,
    /// Desktop popups for this account (syslog lines and hooks happen regardless).
    pub notify: bool,
    /// Per-mailbox exceptions to `notify` (`{ name = "Lists", notify = false }`).
    pub mailbox_notify: BTreeMap<String, bool>,
    /// Privacy: with either off, popups say only "New mail in work/INBOX" (or leave out the
    /// sender or subject).
    pub show_subject: bool,
    pub show_sender: bool,
    pub hooks: HookConfig,
}

impl Account {
    /// Whether new mail in `mailbox` gets a popup.
    ///
    /// A setting given to a pattern (`{ name = "Lists/*", notify = false }`) applies to
    /// the mailboxes it matches (the first such pattern, in name order), unless the
    /// mailbox has a setting of its own. `%` stops at the hierarchy separator, taken to be
    /// `/` or `.`, whichever the pattern or the name holds (the server's own is not known
    /// to the config; these two are what servers use).
    pub fn notify_for(&self, mailbox: &str) -> bool {
        if let Some(n) = self.mailbox_notify.get(mailbox) {
            return *n;
        }
        self.mailbox_notify
            .iter()
            .find(|(p, _)| {
                let separator = ['/', '.']
                    .into_iter()
                    .find(|c| p.contains(*c) || mailbox.contains(*c));
                super::patterns::is_pattern(p) && super::patterns::matches(p, mailbox, separator)
            })
            .map_or(self.notify, |(_, n)| *n)
    }
}

/// Commands run for new mail (argv lists, never through a shell).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    pub on_new_mail: Option<Vec<String>>,
    /// Run after `on_new_mail` finished (goimapnotify's onNewMailPost).
    pub on_new_mail_post: Option<Vec<String>>,
    /// Messages arriving within this window make one run.
    pub debounce: Duration,
    /// A hook still running after this is killed.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    Low,
    Normal,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    Implicit,
    Starttls,
    None,
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Implicit => "implicit TLS",
            TlsMode::Starttls => "STARTTLS",
            TlsMode::None => "no TLS",
        })
    }
}

impl TlsMode {
    pub(super) fn default_port(self) -> u16 {
        match self {
            TlsMode::Implicit => 993,
            TlsMode::Starttls | TlsMode::None => 143,
        }
    }
}

/// Where the password comes from. The password itself never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Password(String),
    /// argv run without a shell at every connect; stdout (trailing newline trimmed) is the
    /// password.
    Command(Vec<String>),
    /// argv run at every connect whose stdout is an OAuth2 access token (oama,
    /// mutt_oauth2.py...), so a refreshed token is used after each reconnect.
    TokenCommand(Vec<String>),
}

impl Secret {
    /// Whether this is an OAuth2 bearer token rather than a password.
    pub fn is_token(&self) -> bool {
        matches!(self, Secret::TokenCommand(_))
    }
}

/// How to log in. `None` in [`Account::auth`] means the best the server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    Login,
    Plain,
    Xoauth2,
    Oauthbearer,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Password(<redacted>)"),
            Secret::Command(argv) => f.debug_tuple("Command").field(argv).finish(),
            Secret::TokenCommand(argv) => f.debug_tuple("TokenCommand").field(argv).finish(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifications {
    pub enabled: bool,
    /// More new messages than this in one wake, or within `burst_window` of a mailbox's
    /// first popup, become one summary popup.
    pub summary_threshold: u32,
    /// Flood control window; zero judges each wake alone.
    pub burst_window: Duration,
    pub urgency: Urgency,
    /// Icon name from the icon theme, or a path.
    pub icon: String,
    /// The `sound-name` hint of new-mail popups; `None` when `sound = ""` (no hint at all).
    pub sound: Option<String>,
    /// Run (argv, no shell) by a popup's default action and its "Open" button.
    pub open_command: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct SyslogConfig {
    pub enabled: bool,
    pub address: SyslogAddress,
    pub facility: syslog::Facility,
}

// `syslog::Facility` has no `PartialEq`; compare its numeric code.
impl PartialEq for SyslogConfig {
    fn eq(&self, other: &Self) -> bool {
        self.enabled == other.enabled
            && self.address == other.address
            && self.facility as u32 == other.facility as u32
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogAddress {
    Unix(PathBuf),
    /// `host:port`, resolved when the socket is opened.
    Udp(String),
}

impl fmt::Display for SyslogAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyslogAddress::Unix(p) => write!(f, "unix:{}", p.display()),
            SyslogAddress::Udp(a) => write!(f, "udp:{a}"),
        }
    }
}
