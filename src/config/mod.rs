//! The configuration file: its keys, how it is read and checked, and the validated types
//! the rest of the daemon uses.
//!
//! - [`keys`]: the one description of every key (table, type, default, range, docs), from
//!   which the checks below, their suggestions and mailpushd.toml(5) are all made;
//! - `shape.rs`, stage one: the file against [`keys`]: syntax, unknown tables and keys
//!   ("did you mean `password`?"), wrong types, unknown values, integers out of range;
//! - this file, stage two: what the values mean together (a secret given twice, a
//!   duplicate account name, plaintext to a remote host, ...), turning them into
//!   [`Config`], whose types cannot hold an invalid value;
//! - [`providers`]: the presets `provider = "gmail"` stands for.
//!
//! Both stages collect every problem they find, not just the first, as a [`Problem`] with
//! line and column, so `--check` and a failed reload list them all at once; a mistake
//! reported by stage one is not reported again by stage two as a missing key.

pub mod keys;
pub mod patterns;
pub mod providers;
mod shape;
mod types;

pub use types::*;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

// The defaults. The ranges are in `keys.rs`, with each key's documentation.
const DEFAULT_IDLE_REFRESH_SECS: u64 = 25 * 60;
/// Silence during IDLE before the link is checked: just over the 2 minutes between
/// Dovecot's `* OK Still here` lines (`imap_idle_notify_interval`), so a server that talks
/// costs nothing extra, and with [`PROBE_ANSWER`] a frozen link is replaced within 150 s.
const DEFAULT_IDLE_SILENCE_SECS: u64 = 125;
/// Longest wait for the answer to the DONE that checks a silent link.
pub const PROBE_ANSWER: Duration = Duration::from_secs(20);
const DEFAULT_POLL_INTERVAL_SECS: u64 = 120;
const DEFAULT_RECONNECT_MAX_SECS: u64 = 300;
/// Connection budget without a preset's: Dovecot allows 10 per user and IP, and this leaves
/// the other half to the user's mail client (Thunderbird holds up to
/// [`providers::MAIL_CLIENT_CONNECTIONS`]).
const DEFAULT_MAX_CONNECTIONS: u32 = 5;
const DEFAULT_TIMEOUT_SECS: u64 = 30;
const DEFAULT_CATCH_UP_MAX: u32 = 10;
const DEFAULT_SUMMARY_THRESHOLD: u32 = 3;
/// Flood control window (src/announce/burst.rs): long enough to catch a server storing a big
/// delivery one message at a time, short enough that a summary is not long in coming.
const DEFAULT_BURST_WINDOW_SECS: u64 = 10;
/// The sound of new mail in the freedesktop sound naming spec (0.2, "Standard Sound
/// Names", context Notifications).
const DEFAULT_SOUND: &str = "message-new-email";
const DEFAULT_HOOK_DEBOUNCE_MS: u64 = 1000;
const DEFAULT_HOOK_TIMEOUT_SECS: u64 = 60;

/// One thing wrong with a config file, positioned for `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Why a config file could not be used. Display gives one `file:line:column: message` line
/// per problem, which is what `--check` prints and what the daemon logs.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: the config file is {bytes} bytes; one over {MAX_CONFIG_BYTES} bytes is not read",
        path.display()
    )]
    TooBig { path: PathBuf, bytes: u64 },
    #[error("{}", format_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// The largest config file read, in bytes: far more than any real one (a thousand
/// accounts fit in a tenth of it), and a bound on the time a reload takes.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Longest message about one problem, in characters.
const MAX_MESSAGE_CHARS: usize = 1000;

/// At most this many problems are written to the log and syslog for one failed start or
/// reload; `--check` prints them all.
pub const MAX_LOGGED_PROBLEMS: usize = 20;

impl ConfigError {
    /// How many problems this is.
    pub fn count(&self) -> usize {
        match self {
            ConfigError::Invalid { problems, .. } => problems.len(),
            _ => 1,
        }
    }

    /// The lines to log: one per problem, at most [`MAX_LOGGED_PROBLEMS`], then how many
    /// more there are. A file full of mistakes cannot flood the journal or syslog.
    pub fn log_lines(&self) -> Vec<String> {
        let text = self.to_string();
        let mut lines: Vec<String> = text
            .lines()
            .take(MAX_LOGGED_PROBLEMS)
            .map(str::to_owned)
            .collect();
        let more = self.count().saturating_sub(lines.len());
        if more > 0 {
            lines.push(format!(
                "... and {more} more problem{} (mailpushd --check lists them all)",
                if more == 1 { "" } else { "s" }
            ));
        }
        lines
    }
}

fn format_problems(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}:{}:{}: {}", path.display(), p.line, p.column, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Like ssh with private keys: a config file holding a literal `password` must not be
/// readable by group or others. Returns the warning to show (with the fix), if any.
pub fn permission_warning(path: &Path, config: &Config) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let holds_password = config
        .accounts
        .iter()
        .any(|a| matches!(a.secret, Secret::Password(_)));
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (holds_password && mode & 0o077 != 0).then(|| {
        format!(
            "{p} holds a password and is readable by {who} (mode {mode:03o}); fix it with: chmod 600 {p}",
            p = path.display(),
            who = if mode & 0o007 != 0 { "others" } else { "its group" },
        )
    })
}

/// A mailbox watched by two accounts of the same user on the same server is announced by
/// both, twice (and both keep one state file). Allowed (two ways to log in, a test of one
/// against the other), but said: one warning per such mailbox, naming both accounts.
/// Patterns are not compared (what they stand for is the server's answer).
pub fn duplicate_watch_warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (i, a) in config.accounts.iter().enumerate() {
        for b in config.accounts[..i]
            .iter()
            .filter(|b| b.username == a.username && b.host == a.host && b.port == a.port)
        {
            for m in a.mailboxes.iter().filter(|m| {
                !patterns::is_pattern(m)
                    && b.mailboxes.iter().any(|o| mailbox_key(o) == mailbox_key(m))
            }) {
                out.push(crate::decode::controls_escaped(&format!(
                    "mailbox {m:?} is watched by accounts {:?} and {:?}, the same user on the \
                     same server: each message in it is announced twice",
                    b.name, a.name
                )));
            }
        }
    }
    out
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    use std::io::Read;
    let read_error = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    // Opened without blocking (a FIFO would wait for a writer forever, holding up a
    // reload), and read only if it is a regular file (not a FIFO, a device, a directory).
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        return Err(read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooBig {
            path: path.to_owned(),
            bytes: meta.len(),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        // It grew while being read.
        return Err(ConfigError::TooBig {
            path: path.to_owned(),
            bytes: bytes.len() as u64,
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e.utf8_error(),
        ))
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).map_err(|problems| ConfigError::Invalid {
        path: path.to_owned(),
        problems,
    })
}

/// Parses and validates config text. Relative `ca_file` paths are taken relative to
/// `base_dir` (the config file's directory), so a config means the same wherever the daemon
/// is started from.
pub fn parse(text: &str, base_dir: &Path) -> Result<Config, Vec<Problem>> {
    let shape::Shape {
        root,
        problems,
        meant,
        incomplete,
    } = shape::check(text);
    let lines = Lines::new(text);
    let problems: Vec<Problem> = problems
        .into_iter()
        .map(|(span, message)| lines.problem(&span, message))
        .collect();
    // Stage one took out every value of the wrong shape, so this only fails if a key in
    // `keys.rs` has no field below (a bug, which the tests catch); say what it was anyway.
    let raw = RawConfig::deserialize(toml::de::Deserializer::from(root)).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let mut all = problems.clone();
        all.push(lines.problem(&span, e.message().trim().to_owned()));
        in_order(all)
    })?;
    Validator {
        lines,
        base_dir,
        problems,
        meant,
        incomplete,
    }
    .run(raw)
}

// ---- the file's values, typed ---------------------------------------------------------
//
// Stage one (`shape.rs`) has checked every key and value against `keys.rs`; these structs
// only carry the values into stage two, with their spans.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    accounts: Option<Spanned<Vec<Spanned<RawAccount>>>>,
    #[serde(default)]
    notifications: Option<RawNotifications>,
    #[serde(default)]
    syslog: Option<RawSyslog>,
    #[serde(default)]
    hooks: Option<RawHooks>,
}

// Required keys are `Option` here so that a missing one becomes a validation problem that
// is reported together with all the others, rather than serde's first-error-wins.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: Option<Spanned<String>>,
    provider: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    tls: Option<Spanned<TlsMode>>,
    ca_file: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    password_command: Option<Spanned<Vec<String>>>,
    oauth2_token_command: Option<Spanned<Vec<String>>>,
    auth: Option<Spanned<AuthMethod>>,
    tls_verify: Option<bool>,
    mailboxes: Option<Spanned<Vec<Spanned<RawMailbox>>>>,
    idle_refresh_secs: Option<Spanned<i64>>,
    idle_silence_secs: Option<Spanned<i64>>,
    poll_interval_secs: Option<Spanned<i64>>,
    reconnect_max_secs: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
    timeout_secs: Option<Spanned<i64>>,
    catch_up_max: Option<Spanned<i64>>,
    allow_plaintext_auth: Option<bool>,
    notify: Option<bool>,
    show_subject: Option<bool>,
    show_sender: Option<bool>,
    // The same keys as [hooks] (serde's flatten would lose spans and unknown-key errors).
    on_new_mail: Option<Spanned<Vec<String>>>,
    on_new_mail_post: Option<Spanned<Vec<String>>>,
    hook_debounce_ms: Option<Spanned<i64>>,
    hook_timeout_secs: Option<Spanned<i64>>,
}

/// A mailbox: its name, or a table with per-mailbox settings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawMailbox {
    Name(String),
    Table(RawMailboxTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMailboxTable {
    name: String,
    notify: Option<bool>,
}

/// Hook settings: in `[hooks]` as defaults, and in each account to override them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    on_new_mail: Option<Spanned<Vec<String>>>,
    on_new_mail_post: Option<Spanned<Vec<String>>>,
    hook_debounce_ms: Option<Spanned<i64>>,
    hook_timeout_secs: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotifications {
    enabled: Option<bool>,
    summary_threshold: Option<Spanned<i64>>,
    burst_window_secs: Option<Spanned<i64>>,
    urgency: Option<Urgency>,
    icon: Option<Spanned<String>>,
    sound: Option<Spanned<String>>,
    open_command: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyslog {
    enabled: Option<bool>,
    address: Option<Spanned<String>>,
    facility: Option<Spanned<String>>,
}

// ---- stage two: validation --------------------------------------------------------------

struct Validator<'a> {
    lines: Lines<'a>,
    base_dir: &'a Path,
    problems: Vec<Problem>,
    meant: shape::Meant,
    /// The file had syntax errors: what was read of it may lack what the broken lines held,
    /// so nothing is reported missing (that would be the same mistake twice).
    incomplete: bool,
}

impl Validator<'_> {
    fn report(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let problem = self.lines.problem(span, message.into());
        self.problems.push(problem);
    }

    fn run(mut self, raw: RawConfig) -> Result<Config, Vec<Problem>> {
        let defaults = raw.hooks.unwrap_or_default();
        let default_hooks = self.hooks(defaults, None);
        let mut accounts = Vec::new();
        match raw.accounts {
            // A broken or wrongly written `accounts` was reported already.
            _ if self.incomplete => {}
            None if self.meant.has(shape::Meant::ROOT, "accounts") => {}
            None => self.report(&(0..0), "no [[accounts]] configured: nothing to watch"),
            Some(list) if list.get_ref().is_empty() => {
                if !self.meant.has(shape::Meant::ROOT, "accounts") {
                    self.report(&list.span(), "accounts is empty: nothing to watch")
                }
            }
            Some(list) => {
                // A name given twice is reported where it is given again, whatever else is
                // wrong with either account.
                let mut seen: HashMap<String, usize> = HashMap::new();
                for acct in list.into_inner() {
                    let span = acct.span();
                    let raw = acct.into_inner();
                    let mut duplicate = false;
                    if let Some(name) = &raw.name {
                        if let Some(first) = seen.get(name.get_ref()) {
                            duplicate = true;
                            let message = format!(
                                "duplicate account name {:?} (first on line {first}): names \
                                 must be unique",
                                name.get_ref()
                            );
                            self.report(&name.span(), message);
                        } else {
                            let line = self.lines.problem(&name.span(), String::new()).line;
                            seen.insert(name.get_ref().clone(), line);
                        }
                    }
                    if let Some(a) = self.account(raw, &span, &default_hooks) {
                        if !duplicate {
                            accounts.push(a);
                        }
                    }
                }
            }
        }
        let notifications = self.notifications(raw.notifications);
        let syslog = self.syslog(raw.syslog);
        if self.problems.is_empty() {
            Ok(Config {
                accounts: accounts.into_iter().map(Arc::new).collect(),
                notifications,
                syslog,
            })
        } else {
            Err(in_order(self.problems))
        }
    }

    fn required(
        &mut self,
        value: Option<Spanned<String>>,
        key: &str,
        table: &Range<usize>,
    ) -> Option<String> {
        match value {
            // Given with a wrong value or misspelt: reported already, where it is.
            None if self.incomplete || self.meant.has(table.start, key) => None,
            None => {
                self.report(table, format!("account is missing required key `{key}`"));
                None
            }
            Some(v) if v.get_ref().trim().is_empty() => {
                self.report(&v.span(), format!("`{key}` must not be empty"));
                None
            }
            // The value is not quoted: it may be a secret.
            Some(v) if v.get_ref().chars().any(char::is_control) => {
                self.report(
                    &v.span(),
                    format!("`{key}` must not contain line breaks or other control characters"),
                );
                None
            }
            Some(v) => Some(v.into_inner()),
        }
    }

    /// A duration in seconds, or `default`. Its range was checked in stage one.
    fn secs(value: Option<Spanned<i64>>, default: u64) -> Duration {
        Duration::from_secs(
            value.map_or(default, |v| u64::try_from(*v.get_ref()).unwrap_or(default)),
        )
    }

    fn argv(&mut self, value: Option<Spanned<Vec<String>>>, key: &str) -> Option<Vec<String>> {
        let v = value?;
        if v.get_ref().first().is_none_or(|c| c.is_empty()) {
            self.report(
                &v.span(),
                format!("`{key}` must name a program: an argv list such as [\"mbsync\", \"work\"]"),
            );
            return None;
        }
        Some(v.into_inner())
    }

    /// Hook settings: `raw` over `base` (the [hooks] defaults, when validating an account).
    fn hooks(&mut self, raw: RawHooks, base: Option<&HookConfig>) -> HookConfig {
        let on_new_mail = self.argv(raw.on_new_mail, "on_new_mail");
        let on_new_mail_post = self.argv(raw.on_new_mail_post, "on_new_mail_post");
        let debounce = match raw.hook_debounce_ms {
            None => base.map_or(Duration::from_millis(DEFAULT_HOOK_DEBOUNCE_MS), |b| {
                b.debounce
            }),
            Some(v) => Duration::from_millis(
                u64::try_from(*v.get_ref()).unwrap_or(DEFAULT_HOOK_DEBOUNCE_MS),
            ),
        };
        let timeout = match raw.hook_timeout_secs {
            None => base.map_or(Duration::from_secs(DEFAULT_HOOK_TIMEOUT_SECS), |b| {
                b.timeout
            }),
            some => Self::secs(some, DEFAULT_HOOK_TIMEOUT_SECS),
        };
        HookConfig {
            on_new_mail: on_new_mail.or_else(|| base.and_then(|b| b.on_new_mail.clone())),
            on_new_mail_post: on_new_mail_post
                .or_else(|| base.and_then(|b| b.on_new_mail_post.clone())),
            debounce,
            timeout,
        }
    }

    fn notifications(&mut self, raw: Option<RawNotifications>) -> Notifications {
        let raw = raw.unwrap_or(RawNotifications {
            enabled: None,
            summary_threshold: None,
            burst_window_secs: None,
            urgency: None,
            icon: None,
            sound: None,
            open_command: None,
        });
        let summary_threshold = raw
            .summary_threshold
            .and_then(|v| u32::try_from(*v.get_ref()).ok())
            .unwrap_or(DEFAULT_SUMMARY_THRESHOLD);
        let burst_window = Self::secs(raw.burst_window_secs, DEFAULT_BURST_WINDOW_SECS);
        let icon = match raw.icon {
            None => "mail-unread".to_owned(),
            Some(i) if i.get_ref().trim().is_empty() => {
                self.report(&i.span(), "`icon` must not be empty");
                "mail-unread".to_owned()
            }
            Some(i) => i.into_inner(),
        };
        let sound = match raw.sound {
            None => Some(DEFAULT_SOUND.to_owned()),
            Some(s) if s.get_ref().is_empty() => None,
            Some(s) if !is_sound_name(s.get_ref()) => {
                self.report(
                    &s.span(),
                    format!(
                        "`sound` must be a sound name from the sound theme, like \
                         \"{DEFAULT_SOUND}\" (lowercase letters, digits, `-`, `_`, `.`), \
                         or \"\" for no sound; not {:?}",
                        s.get_ref()
                    ),
                );
                Some(DEFAULT_SOUND.to_owned())
            }
            Some(s) => Some(s.into_inner()),
        };
        Notifications {
            enabled: raw.enabled.unwrap_or(true),
            summary_threshold,
            burst_window,
            urgency: raw.urgency.unwrap_or(Urgency::Normal),
            icon,
            sound,
            open_command: self.argv(raw.open_command, "open_command"),
        }
    }

    fn account(
        &mut self,
        raw: RawAccount,
        span: &Range<usize>,
        default_hooks: &HookConfig,
    ) -> Option<Account> {
        let before = self.problems.len();
        let name = self.required(raw.name, "name", span);
        // A preset fills host, port, tls and quirks; anything set explicitly wins.
        // Stage one checked the name against the presets.
        let preset = raw
            .provider
            .and_then(|p| crate::config::providers::find(p.get_ref()));
        let host = match (raw.host, preset) {
            (None, Some(p)) => Some(p.host.to_owned()),
            // An unknown provider was reported already; a missing host is its consequence.
            (None, None) if self.meant.has(span.start, "provider") => None,
            (h, _) => self.required(h, "host", span),
        };
        let username = self.required(raw.username, "username", span);
        let tls = raw
            .tls
            .map(Spanned::into_inner)
            .or(preset.map(|p| p.tls))
            .unwrap_or(TlsMode::Implicit);

        let port = match raw.port {
            // The preset's port goes with the preset's tls mode only.
            None => match preset {
                Some(p) if p.tls == tls => p.port,
                _ => tls.default_port(),
            },
            Some(p) => u16::try_from(*p.get_ref()).unwrap_or(0),
        };

        let ca_file = raw.ca_file.and_then(|c| {
            let path = self.base_dir.join(c.get_ref());
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => Some(path),
                Ok(_) => {
                    self.report(
                        &c.span(),
                        format!("ca_file {} is not a file", path.display()),
                    );
                    None
                }
                Err(e) => {
                    self.report(
                        &c.span(),
                        format!("ca_file {} cannot be read: {e}", path.display()),
                    );
                    None
                }
            }
        });

        let auth = raw.auth.as_ref().map(|a| *a.get_ref());
        let auth_span = raw.auth.as_ref().map(Spanned::span);
        let given = [
            raw.password.is_some(),
            raw.password_command.is_some(),
            raw.oauth2_token_command.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        // A conflict is reported where the second way of giving a secret is.
        let conflict_at = raw
            .oauth2_token_command
            .as_ref()
            .map(Spanned::span)
            .or(raw.password_command.as_ref().map(Spanned::span))
            .unwrap_or_else(|| span.clone());
        let password_command = self.argv(raw.password_command, "password_command");
        let token_command = self.argv(raw.oauth2_token_command, "oauth2_token_command");
        let secret = if given > 1 {
            self.report(
                &conflict_at,
                "set only one of `password`, `password_command` and `oauth2_token_command`",
            );
            None
        } else if let Some(p) = raw.password {
            if p.get_ref().chars().any(char::is_control) {
                // IMAP cannot carry it (RFC 3501 quoted strings have no CR or LF); never
                // quoted here.
                self.report(
                    &p.span(),
                    "`password` must not contain line breaks or other control characters",
                );
                None
            } else {
                Some(Secret::Password(p.into_inner()))
            }
        } else if let Some(cmd) = password_command {
            Some(Secret::Command(cmd))
        } else if let Some(cmd) = token_command {
            Some(Secret::TokenCommand(cmd))
        } else {
            let meant = ["password", "password_command", "oauth2_token_command"]
                .iter()
                .any(|k| self.meant.has(span.start, k));
            if given == 0 && !meant && !self.incomplete {
                self.report(
                    span,
                    "account needs `password`, `password_command` (an argv list run without a \
                     shell) or `oauth2_token_command`",
                );
            }
            None
        };
        // A token only works with the OAuth2 mechanisms, a password only with the others.
        if let (Some(secret), Some(method), Some(at)) = (&secret, auth, &auth_span) {
            let oauth = matches!(method, AuthMethod::Xoauth2 | AuthMethod::Oauthbearer);
            if oauth && !secret.is_token() {
                self.report(
                    at,
                    "auth = \"xoauth2\"/\"oauthbearer\" needs `oauth2_token_command`",
                );
            } else if !oauth && secret.is_token() {
                self.report(
                    at,
                    "`oauth2_token_command` needs auth = \"xoauth2\" or \"oauthbearer\" (or no `auth`)",
                );
            }
        }

        let mut mailbox_notify = BTreeMap::new();
        let mailboxes = match raw.mailboxes {
            None => vec!["INBOX".to_owned()],
            Some(list) => {
                let list_span = list.span();
                let mut names: Vec<String> = Vec::new();
                // Each name as compared (INBOX in any case is INBOX), and as first written.
                let mut listed: HashMap<String, String> = HashMap::new();
                for mb in list.into_inner() {
                    let mb_span = mb.span();
                    let (mb, notify) = match mb.into_inner() {
                        RawMailbox::Name(n) => (n, None),
                        RawMailbox::Table(t) => (t.name, t.notify),
                    };
                    if mb.is_empty() {
                        self.report(&mb_span, "mailbox name must not be empty");
                    } else if mb.contains(['\r', '\n', '\0']) {
                        self.report(&mb_span, "mailbox name must not contain line breaks or NUL");
                    } else if let Some(first) = listed.get(&mailbox_key(&mb)) {
                        let why = if *first == mb {
                            String::new()
                        } else {
                            format!(" (as {first:?}: INBOX is case-insensitive)")
                        };
                        self.report(&mb_span, format!("mailbox {mb:?} is listed twice{why}"));
                    } else {
                        if let Some(n) = notify {
                            mailbox_notify.insert(mb.clone(), n);
                        }
                        listed.insert(mailbox_key(&mb), mb.clone());
                        names.push(mb);
                    }
                }
                if names.is_empty()
                    && self.problems.len() == before
                    && !self.meant.has(span.start, "mailboxes")
                {
                    self.report(&list_span, "`mailboxes` must list at least one mailbox");
                }
                names
            }
        };

        let idle_refresh = Self::secs(
            raw.idle_refresh_secs,
            preset
                .and_then(|p| p.idle_refresh_secs)
                .unwrap_or(DEFAULT_IDLE_REFRESH_SECS),
        );
        let idle_silence = Self::secs(raw.idle_silence_secs, DEFAULT_IDLE_SILENCE_SECS);
        let poll_interval = Self::secs(
            raw.poll_interval_secs,
            preset
                .and_then(|p| p.poll_interval_secs)
                .unwrap_or(DEFAULT_POLL_INTERVAL_SECS),
        );
        let reconnect_max = Self::secs(raw.reconnect_max_secs, DEFAULT_RECONNECT_MAX_SECS);
        // Stage one kept the value in 1..=100.
        let max_connections = raw
            .max_connections
            .and_then(|v| u32::try_from(*v.get_ref()).ok())
            .or(preset.and_then(|p| p.max_connections))
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        let timeout = Self::secs(raw.timeout_secs, DEFAULT_TIMEOUT_SECS);
        let catch_up_max = raw
            .catch_up_max
            .and_then(|v| u32::try_from(*v.get_ref()).ok())
            .unwrap_or(DEFAULT_CATCH_UP_MAX);
        let allow_plaintext_auth = raw.allow_plaintext_auth.unwrap_or(false);
        let hooks = self.hooks(
            RawHooks {
                on_new_mail: raw.on_new_mail,
                on_new_mail_post: raw.on_new_mail_post,
                hook_debounce_ms: raw.hook_debounce_ms,
                hook_timeout_secs: raw.hook_timeout_secs,
            },
            Some(default_hooks),
        );

        if tls == TlsMode::None && !allow_plaintext_auth {
            if let Some(h) = host.as_deref() {
                if !is_loopback(h) {
                    self.report(
                        span,
                        format!(
                            "tls = \"none\" would send the password to {h} in the clear; use \
                             tls = \"implicit\" or \"starttls\", or set allow_plaintext_auth = true"
                        ),
                    );
                }
            }
        }

        if self.problems.len() != before {
            return None;
        }
        Some(Account {
            name: name?,
            host: host?,
            port,
            tls,
            ca_file,
            username: username?,
            secret: secret?,
            auth,
            tls_verify: raw.tls_verify.unwrap_or(true),
            mailboxes,
            idle_refresh,
            idle_silence,
            poll_interval,
            reconnect_max,
            max_connections,
            timeout,
            catch_up_max,
            allow_plaintext_auth,
            notify: raw.notify.unwrap_or(true),
            mailbox_notify,
            show_subject: raw.show_subject.unwrap_or(true),
            show_sender: raw.show_sender.unwrap_or(true),
            hooks,
        })
    }

    fn syslog(&mut self, raw: Option<RawSyslog>) -> SyslogConfig {
        let raw = raw.unwrap_or(RawSyslog {
            enabled: None,
            address: None,
            facility: None,
        });
        let address = match raw.address {
            None => SyslogAddress::Unix(PathBuf::from("/dev/log")),
            Some(a) => match parse_syslog_address(a.get_ref()) {
                Ok(addr) => addr,
                Err(msg) => {
                    self.report(&a.span(), msg);
                    SyslogAddress::Unix(PathBuf::from("/dev/log"))
                }
            },
        };
        let facility = match raw.facility {
            None => syslog::Facility::LOG_MAIL,
            Some(f) => match f.get_ref().parse::<syslog::Facility>() {
                Ok(fac) => fac,
                Err(()) => {
                    self.report(
                        &f.span(),
                        format!(
                            "unknown syslog facility {:?} (try \"mail\", \"user\", \"daemon\" or \"local0\"..\"local7\")",
                            f.get_ref()
                        ),
                    );
                    syslog::Facility::LOG_MAIL
                }
            },
        };
        SyslogConfig {
            enabled: raw.enabled.unwrap_or(true),
            address,
            facility,
        }
    }
}

/// Whether `s` can be a sound name. Sound naming spec 0.2, "Sound Naming Guidelines":
/// "sound names may only contain lowercase letters, numbers, underscore, dash, or period
/// characters". Anything else, a path above all, is a mistake (a file would be the
/// `sound-file` hint, which mailpushd does not send).
fn is_sound_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

fn parse_syslog_address(s: &str) -> Result<SyslogAddress, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.starts_with('/') {
            return Ok(SyslogAddress::Unix(PathBuf::from(path)));
        }
        return Err(format!(
            "syslog address {s:?}: the unix socket path must be absolute"
        ));
    }
    if let Some(hostport) = s.strip_prefix("udp:") {
        let ok = hostport
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
        if ok {
            return Ok(SyslogAddress::Udp(hostport.to_owned()));
        }
        return Err(format!("syslog address {s:?}: expected udp:HOST:PORT"));
    }
    Err(format!(
        "syslog address {s:?}: expected \"unix:/path/to/socket\" or \"udp:HOST:PORT\""
    ))
}

/// Whether `host` names this machine, where plaintext cannot be sniffed on a network.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `problems` in file order, each once: toml's recovering parser can report one syntax
/// error more than once.
fn in_order(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by_key(|p| (p.line, p.column));
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    problems
}

/// Where each line of a text starts, to turn byte offsets into line and column in
/// logarithmic time (a file with many problems is checked in time linear in its size).
struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines { text, starts }
    }

    /// The problem `message` at byte offset `span.start`: 1-based line and column (in
    /// characters, a byte-order mark not counted). Control characters in the message (from
    /// a key or value in the file) are escaped, so each problem stays one line.
    fn problem(&self, span: &Range<usize>, message: String) -> Problem {
        let offset = floor_char_boundary(self.text, span.start.min(self.text.len()));
        let index = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[index];
        let column = self.text[start..offset]
            .chars()
            .filter(|&c| !(index == 0 && c == '\u{feff}'))
            .count()
            + 1;
        let mut message = crate::decode::controls_escaped(&message);
        // Messages quote at most a bounded part of the file; this bounds the rest (toml's
        // own messages) the same way.
        if message.chars().count() > MAX_MESSAGE_CHARS {
            message = message.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "...";
        }
        Problem {
            line: index + 1,
            column,
            message,
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A mailbox name as compared: two configured names mean the same mailbox if they are equal,
/// or both INBOX, whose name alone is case-insensitive (RFC 3501 section 5.1; `INBOX/x` and
/// `Inbox/x` may differ).
fn mailbox_key(name: &str) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX".to_owned()
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[accounts]]
name = "work"
host = "imap.example.com"
username = "me@example.com"
password = "hunter2"

[[accounts]]
name = "home"
host = "127.0.0.1"
port = 1143
tls = "none"
username = "me"
password_command = ["pass", "show", "mail/home"]
mailboxes = ["INBOX", "其他文件夹/工作"]
idle_refresh_secs = 600
poll_interval_secs = 30
reconnect_max_secs = 20
timeout_secs = 5
catch_up_max = 0

[notifications]
enabled = false

[syslog]
address = "udp:127.0.0.1:514"
facility = "local3"
"#;

    fn parse_ok(text: &str) -> Config {
        parse(text, Path::new("/")).expect("valid config")
    }

    fn problems(text: &str) -> Vec<Problem> {
        parse(text, Path::new("/")).expect_err("invalid config")
    }

    #[test]
    fn good_config_with_defaults() {
        let c = parse_ok(GOOD);
        assert_eq!(c.accounts.len(), 2);
        let w = &c.accounts[0];
        assert_eq!(w.port, 993);
        assert_eq!(w.tls, TlsMode::Implicit);
        assert_eq!(w.mailboxes, vec!["INBOX"]);
        assert_eq!(w.idle_refresh, Duration::from_secs(1500));
        assert_eq!(w.poll_interval, Duration::from_secs(120));
        assert_eq!(w.reconnect_max, Duration::from_secs(300));
        assert_eq!(w.timeout, Duration::from_secs(30));
        assert_eq!(w.catch_up_max, 10);
        let h = &c.accounts[1];
        assert_eq!(h.port, 1143);
        assert_eq!(h.mailboxes[1], "其他文件夹/工作");
        assert_eq!(h.reconnect_max, Duration::from_secs(20));
        assert_eq!(h.timeout, Duration::from_secs(5));
        assert_eq!(h.catch_up_max, 0);
        assert_eq!(
            h.secret,
            Secret::Command(vec!["pass".into(), "show".into(), "mail/home".into()])
        );
        assert!(!c.notifications.enabled);
        assert!(c.syslog.enabled);
        assert_eq!(c.syslog.address, SyslogAddress::Udp("127.0.0.1:514".into()));
        assert_eq!(
            c.syslog.facility as u32,
            syslog::Facility::LOG_LOCAL3 as u32
        );
    }

    #[test]
    fn starttls_defaults_to_143_and_syslog_to_dev_log() {
        let c = parse_ok(
            "[[accounts]]\nname='a'\nhost='h'\nusername='u'\npassword='p'\ntls='starttls'\n",
        );
        assert_eq!(c.accounts[0].port, 143);
        assert_eq!(
            c.syslog.address,
            SyslogAddress::Unix(PathBuf::from("/dev/log"))
        );
        assert_eq!(c.syslog.facility as u32, syslog::Facility::LOG_MAIL as u32);
        assert!(c.notifications.enabled);
    }

    #[test]
    fn syntax_error_has_position() {
        let p = problems("[[accounts]]\nname = \"work\nhost = 'x'\n");
        assert_eq!(p.len(), 1);
        // toml points at where the string should have ended: line 2, after its last character.
        assert_eq!((p[0].line, p[0].column), (2, 13), "{p:?}");
    }

    #[test]
    fn unknown_key_is_an_error_at_its_position() {
        let p = problems(
            "[[accounts]]\nname='a'\nhost='h'\nusername='u'\npassword='p'\n  pasword = 'x'\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].line, p[0].column), (6, 3));
        assert!(p[0].message.contains("pasword"), "{}", p[0].message);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"[[accounts]]
name = "a"
host = ""
port = 70000
username = "u"
password = "p"
password_command = ["x"]
idle_refresh_secs = 3600

[[accounts]]
name = "a"
host = "h"
username = "u"
password = "p"
mailboxes = ["INBOX", "INBOX"]

[syslog]
address = "tcp:foo"
facility = "nope"
"#;
        let p = problems(text);
        let lines: Vec<_> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![3, 4, 7, 8, 11, 15, 18, 19], "{p:#?}");
        assert!(p[0].message.contains("`host` must not be empty"));
        assert_eq!(p[1].message, "`port` must be between 1 and 65535");
        assert!(p[2].message.contains("only one of"));
        assert_eq!(
            p[3].message,
            "`idle_refresh_secs` must be between 10 and 1740 seconds"
        );
        assert!(p[4]
            .message
            .contains("duplicate account name \"a\" (first on line 2)"));
        assert!(p[5].message.contains("listed twice"));
        assert!(p[6].message.contains("udp:HOST:PORT"));
        assert!(p[7].message.contains("facility"));
    }

    #[test]
    fn inbox_is_listed_twice_in_any_case_other_names_are_case_sensitive() {
        let text = "[[accounts]]\nname = \"a\"\nhost = \"h\"\nusername = \"u\"\npassword = \"p\"\n\
                    mailboxes = [\"INBOX\", \"Work\", \"work\", { name = \"Inbox\" }, \"inbox\"]\n";
        let p = problems(text);
        assert_eq!(
            p.iter()
                .map(|p| (p.line, p.column, p.message.as_str()))
                .collect::<Vec<_>>(),
            [
                (
                    6,
                    39,
                    "mailbox \"Inbox\" is listed twice (as \"INBOX\": INBOX is case-insensitive)"
                ),
                (
                    6,
                    59,
                    "mailbox \"inbox\" is listed twice (as \"INBOX\": INBOX is case-insensitive)"
                ),
            ],
            "{p:#?}"
        );
        assert_eq!(mailbox_key("INBOX"), mailbox_key("iNbOx"));
        assert_ne!(mailbox_key("INBOX/Work"), mailbox_key("Inbox/Work"));
        assert_ne!(mailbox_key("Work"), mailbox_key("work"));
    }

    #[test]
    fn one_mailbox_of_one_user_in_two_accounts_is_warned_about() {
        let acct = |name: &str, mailboxes: &str| {
            format!(
                "[[accounts]]\nname='{name}'\nhost='h'\nusername='u'\npassword='p'\nmailboxes = [{mailboxes}]\n"
            )
        };
        let warnings = |text: String| {
            duplicate_watch_warnings(&parse(&text, std::path::Path::new("/")).expect("valid"))
        };
        assert_eq!(
            warnings(format!("{}{}", acct("a", "'INBOX', 'Lists'"), acct("b", "'Lists'"))),
            ["mailbox \"Lists\" is watched by accounts \"a\" and \"b\", the same user on the same server: each message in it is announced twice"]
        );
        // INBOX in another case is INBOX.
        assert_eq!(
            warnings(format!("{}{}", acct("a", "'INBOX'"), acct("b", "'inbox'"))).len(),
            1
        );
        // Other mailboxes, another user, or patterns: nothing to say.
        assert!(warnings(format!("{}{}", acct("a", "'INBOX'"), acct("b", "'Lists'"))).is_empty());
        assert!(warnings(format!(
            "{}{}",
            acct("a", "'INBOX'"),
            acct("b", "'INBOX'").replace("username='u'", "username='v'")
        ))
        .is_empty());
        assert!(warnings(format!("{}{}", acct("a", "'*'"), acct("b", "'*'"))).is_empty());
    }

    #[test]
    fn duplicate_account_names() {
        let one = "[[accounts]]\nname='a'\nhost='h'\nusername='u'\npassword='p'\n";
        let p = problems(&format!("{one}{one}"));
        assert_eq!(p.len(), 1);
        // At the second `name`, not at its table: that is what to change.
        assert_eq!((p[0].line, p[0].column), (7, 6), "{p:?}");
        assert_eq!(
            p[0].message,
            "duplicate account name \"a\" (first on line 2): names must be unique"
        );
    }

    #[test]
    fn missing_keys_and_no_accounts() {
        let p = problems("[[accounts]]\nname='a'\n");
        let msgs: Vec<_> = p.iter().map(|p| p.message.as_str()).collect();
        assert!(msgs.iter().any(|m| m.contains("`host`")), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("`username`")));
        assert!(msgs.iter().any(|m| m.contains("password")));
        let p = problems("[notifications]\nenabled = true\n");
        assert!(p[0].message.contains("no [[accounts]]"));
    }

    #[test]
    fn plaintext_password_needs_loopback_or_consent() {
        let base = "[[accounts]]\nname='a'\nusername='u'\npassword='p'\ntls='none'\n";
        assert!(parse(&format!("{base}host='localhost'\n"), Path::new("/")).is_ok());
        assert!(parse(&format!("{base}host='::1'\n"), Path::new("/")).is_ok());
        let p = problems(&format!("{base}host='mail.example.com'\n"));
        assert!(p[0].message.contains("in the clear"), "{p:?}");
        assert!(parse(
            &format!("{base}host='mail.example.com'\nallow_plaintext_auth=true\n"),
            Path::new("/")
        )
        .is_ok());
    }

    #[test]
    fn ca_file_must_exist_relative_to_config_dir() {
        let text =
            "[[accounts]]\nname='a'\nhost='h'\nusername='u'\npassword='p'\nca_file='nope.pem'\n";
        let p = parse(text, Path::new("/nonexistent-dir")).unwrap_err();
        assert_eq!(p[0].line, 6);
        assert!(p[0].message.contains("/nonexistent-dir/nope.pem"), "{p:?}");
    }

    #[test]
    fn notification_and_hook_settings() {
        let text = r#"
[hooks]
on_new_mail = ["mbsync", "-a"]
hook_debounce_ms = 250

[[accounts]]
name = "a"
host = "h"
username = "u"
password = "p"
notify = false
show_subject = false
mailboxes = ["INBOX", { name = "Lists", notify = true }]

[[accounts]]
name = "b"
host = "h"
username = "v"
password = "p"
on_new_mail = ["notmuch", "new"]
on_new_mail_post = ["true"]
hook_timeout_secs = 5

[notifications]
summary_threshold = 5
burst_window_secs = 0
urgency = "low"
icon = "/usr/share/icons/x.png"
open_command = ["thunderbird"]
"#;
        let c = parse_ok(text);
        let a = &c.accounts[0];
        assert_eq!(a.mailboxes, vec!["INBOX", "Lists"]);
        assert!(!a.notify_for("INBOX"));
        assert!(a.notify_for("Lists"));
        assert!(!a.show_subject && a.show_sender);
        assert_eq!(
            a.hooks.on_new_mail,
            Some(vec!["mbsync".into(), "-a".into()])
        );
        assert_eq!(a.hooks.debounce, Duration::from_millis(250));
        assert_eq!(a.hooks.timeout, Duration::from_secs(60));
        let b = &c.accounts[1];
        assert_eq!(
            b.hooks.on_new_mail,
            Some(vec!["notmuch".into(), "new".into()])
        );
        assert_eq!(b.hooks.on_new_mail_post, Some(vec!["true".into()]));
        assert_eq!(b.hooks.debounce, Duration::from_millis(250));
        assert_eq!(b.hooks.timeout, Duration::from_secs(5));
        assert_eq!(c.notifications.summary_threshold, 5);
        assert_eq!(c.notifications.burst_window, Duration::ZERO);
        assert_eq!(c.notifications.urgency, Urgency::Low);
        assert_eq!(
            c.notifications.open_command,
            Some(vec!["thunderbird".into()])
        );
        let p = problems(
            "[[accounts]]\nname='a'\nhost='h'\nusername='u'\npassword='p'\non_new_mail=[]\nmailboxes=[{name='X', nope=1}]\n",
        );
        let at: Vec<_> = p.iter().map(|p| (p.line, p.column)).collect();
        assert_eq!(at, [(6, 13), (7, 23)], "{p:?}");
        assert!(p[0].message.contains("must name a program"), "{p:?}");
        assert_eq!(
            p[1].message,
            "unknown key `nope` in a mailbox (a mailbox table has `name` and `notify`)"
        );
    }

    #[test]
    fn provider_presets_fill_in_and_explicit_keys_win() {
        let base = "[[accounts]]\nname='a'\nusername='u'\npassword='p'\n";
        let c = parse_ok(&format!("{base}provider = '163'\n"));
        let a = &c.accounts[0];
        assert_eq!(
            (a.host.as_str(), a.port, a.tls),
            ("imap.163.com", 993, TlsMode::Implicit)
        );
        let c = parse_ok(&format!(
            "{base}provider = 'Gmail'\nhost = 'imap.example.org'\nport = 1993\n"
        ));
        let a = &c.accounts[0];
        assert_eq!((a.host.as_str(), a.port), ("imap.example.org", 1993));
        let c = parse_ok(&format!("{base}provider = 'fastmail'\ntls = 'starttls'\n"));
        assert_eq!(
            c.accounts[0].port, 143,
            "the preset's port goes with its tls mode"
        );
        let p = problems(&format!("{base}provider = 'aol'\n"));
        assert!(
            p[0].message
                .contains("unknown provider \"aol\"; known: gmail"),
            "{p:?}"
        );
    }

    #[test]
    fn max_connections_comes_from_the_key_else_the_preset_else_5() {
        let base = "[[accounts]]\nname='a'\nusername='u'\npassword='p'\n";
        let budget = |rest: &str| parse_ok(&format!("{base}{rest}")).accounts[0].max_connections;
        assert_eq!(budget("host = 'imap.example.com'\n"), 5);
        assert_eq!(budget("provider = 'gmail'\n"), 10);
        assert_eq!(budget("provider = 'outlook'\n"), 8);
        assert_eq!(budget("provider = 'fastmail'\n"), 5, "no preset value");
        assert_eq!(budget("provider = 'gmail'\nmax_connections = 3\n"), 3);
        assert_eq!(budget("provider = 'gmail'\nmax_connections = 12\n"), 12);
        assert_eq!(budget("host = 'h'\nmax_connections = 1\n"), 1);
        assert_eq!(budget("host = 'h'\nmax_connections = 100\n"), 100);
    }

    #[test]
    fn max_connections_out_of_range_is_an_error_at_its_value() {
        let base = "[[accounts]]\nname='a'\nusername='u'\npassword='p'\n";
        for (preset, value) in [
            ("host = 'h'", "0"),
            ("host = 'h'", "101"),
            ("host = 'h'", "-1"),
            // A preset does not stand in for a wrong value.
            ("provider = 'gmail'", "0"),
        ] {
            let p = problems(&format!("{base}{preset}\nmax_connections = {value}\n"));
            assert_eq!(
                p,
                [Problem {
                    line: 6,
                    column: 19,
                    message: "`max_connections` must be between 1 and 100".to_owned(),
                }],
                "{preset}, {value}"
            );
        }
    }

    #[test]
    fn a_readable_config_with_a_password_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, GOOD).unwrap();
        let c = parse_ok(GOOD);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = permission_warning(&path, &c).unwrap();
        assert!(w.contains("readable by others (mode 644)"), "{w}");
        assert!(w.ends_with(&format!("chmod 600 {}", path.display())), "{w}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(permission_warning(&path, &c).unwrap().contains("its group"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(permission_warning(&path, &c), None);
        // No literal password, no warning.
        let cmd_only = parse_ok(
            "[[accounts]]\nname='a'\nhost='h'\nusername='u'\npassword_command=['pass','x']\n",
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(permission_warning(&path, &cmd_only), None);
    }

    #[test]
    fn oauth_settings() {
        let base = "[[accounts]]\nname='a'\nhost='h'\nusername='u'\n";
        let c = parse_ok(&format!(
            "{base}oauth2_token_command=['oama','access','u']\n"
        ));
        assert!(c.accounts[0].secret.is_token());
        assert_eq!(c.accounts[0].auth, None);
        assert!(c.accounts[0].tls_verify);
        let c = parse_ok(&format!(
            "{base}password='p'\nauth='plain'\ntls_verify=false\n"
        ));
        assert_eq!(c.accounts[0].auth, Some(AuthMethod::Plain));
        assert!(!c.accounts[0].tls_verify);
        let p = problems(&format!("{base}password='p'\nauth='xoauth2'\n"));
        assert!(
            p[0].message.contains("needs `oauth2_token_command`"),
            "{p:?}"
        );
        let p = problems(&format!("{base}oauth2_token_command=['x']\nauth='login'\n"));
        assert!(p[0].message.contains("needs auth"), "{p:?}");
        let p = problems(&format!("{base}password='p'\noauth2_token_command=['x']\n"));
        assert!(p[0].message.contains("only one of"), "{p:?}");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = parse_ok(GOOD);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn error_display_is_file_line_column() {
        let err = ConfigError::Invalid {
            path: PathBuf::from("/etc/x.toml"),
            problems: vec![Problem {
                line: 3,
                column: 7,
                message: "bad".into(),
            }],
        };
        assert_eq!(err.to_string(), "/etc/x.toml:3:7: bad");
    }

    /// The example of issue 13: five mistakes of five kinds, each reported where it is,
    /// with the two suggestions, and nothing reported twice.
    const FIVE_MISTAKES: &str = include_str!("../../tests/data/five-mistakes.toml");

    #[test]
    fn five_mistakes_are_five_located_problems() {
        let p = problems(FIVE_MISTAKES);
        let got: Vec<_> = p
            .iter()
            .map(|p| (p.line, p.column, p.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    4,
                    8,
                    "`port` must be an integer, not a string: write port = 993 (without quotes)"
                ),
                (
                    6,
                    1,
                    "unknown key `passwrd` in [[accounts]]; did you mean `password`?"
                ),
                (
                    10,
                    8,
                    "duplicate account name \"work\" (first on line 2): names must be unique"
                ),
                (
                    11,
                    12,
                    "unknown provider \"gmial\"; did you mean \"gmail\"? (known: gmail, outlook, \
                     icloud, yahoo, fastmail, qq, 163, 126, yeah, aliyun)"
                ),
                (
                    13,
                    20,
                    "`password_command` must be a list of strings (a program and its arguments, \
                     run without a shell), not a string: write password_command = \
                     [\"pass\", \"show\", \"mail\"]"
                ),
            ],
            "{p:#?}"
        );
    }

    #[test]
    fn shapes_are_checked_against_the_key_descriptions() {
        let base = "[[accounts]]\nname='a'\nhost='h'\nusername='u'\npassword='p'\n";
        let one = |extra: &str| {
            let p = problems(&format!("{base}{extra}"));
            assert_eq!(p.len(), 1, "{extra}: {p:#?}");
            (p[0].line, p[0].column, p[0].message.clone())
        };
        assert_eq!(
            one("tls = 'implict'\n"),
            (6, 7, "`tls` must be \"implicit\", \"starttls\" or \"none\", not \"implict\"; did you mean \"implicit\"?".into())
        );
        assert_eq!(
            one("tls = 'STARTTLS'\n").2,
            "`tls` must be \"implicit\", \"starttls\" or \"none\", not \"STARTTLS\"; did you mean \"starttls\"?"
        );
        assert_eq!(
            one("notify = 'yes'\n").2,
            "`notify` must be true or false, not a string"
        );
        assert_eq!(
            one("timeout_secs = 1.5\n").2,
            "`timeout_secs` must be an integer (seconds), not a float"
        );
        assert_eq!(
            one("mailboxes = 'INBOX'\n").2,
            "`mailboxes` must be a list of mailbox names, not a string: write mailboxes = [\"INBOX\"]"
        );
        assert_eq!(
            one("on_new_mail = ['mbsync', 3]\n"),
            (6, 26, "`on_new_mail` must be a list of strings: a program and its arguments, run without a shell; this item is an integer".into())
        );
        // Quoting is read the way a user reads it; the suggestion is never run by a shell.
        assert_eq!(
            one("on_new_mail = \"notify-send 'new mail'\"\n").2,
            "`on_new_mail` must be a list of strings (a program and its arguments, run without \
             a shell), not a string: write on_new_mail = [\"notify-send\", \"new mail\"]"
        );
        assert_eq!(
            one("[notification]\nenabled = false\n"),
            (
                6,
                2,
                "unknown table `notification`; did you mean [notifications]?".into()
            )
        );
        assert_eq!(
            one("[notifications]\nsummary_threshold = 0\n").2,
            "`summary_threshold` must be 1 or more"
        );
        assert_eq!(
            one("[syslog]\nhost = 'x'\n").2,
            "unknown key `host` in [syslog] (it is a key of [[accounts]])"
        );
        assert_eq!(
            one("colour = 'red'\n").2,
            "unknown key `colour` in [[accounts]] (mailpushd.toml(5) lists every key)"
        );
        let p = problems(&format!("poll_interval_secs = 5\n{base}"));
        assert_eq!(
            p[0].message,
            "`poll_interval_secs` must be inside a table: it is a key of [[accounts]], which \
             must come before it"
        );
    }

    #[test]
    fn a_mistake_is_not_reported_again_as_a_missing_key() {
        // A misspelt or mistyped required key is one problem, not also "missing".
        let p = problems("[[accounts]]\nname='a'\nhots='h'\nusername=5\npasswd='p'\n");
        let msgs: Vec<_> = p.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "unknown key `hots` in [[accounts]]; did you mean `host`?",
                "`username` must be a string, not an integer",
                "unknown key `passwd` in [[accounts]]; did you mean `password`?",
            ]
        );
        // A syntax error is reported alone: what it swallowed is not "missing".
        let p = problems("[[accounts]]\nname = \"work\nhost = 'x'\n");
        assert_eq!(p.len(), 1, "{p:?}");
        // But a key that is simply absent still is.
        let p = problems("[[accounts]]\nname='a'\nhost='h'\npassword='p'\n");
        assert_eq!(p[0].message, "account is missing required key `username`");
    }

    #[test]
    fn a_syntax_error_is_reported_once() {
        // Found by fuzzing: toml's recovering parser reported this unclosed array twice.
        let text =
            "[[accounts]]\nname\u{0}\u{fffd} \"wo.k\"\nmailboxes = [\"Iider = \"port = \"993\"\n\
                    mailboxes = [\"Iidermail.com\"\npassword_command = \"pass show mail\"\n";
        let p = problems(text);
        let mut unique = p.clone();
        unique.dedup();
        assert_eq!(p, unique);
        assert!(!p.is_empty());
    }

    #[test]
    fn a_failed_start_or_reload_logs_a_bounded_number_of_lines() {
        let base = "[[accounts]]\nname='a'\nhost='h'\nusername='u'\npassword='p'\n";
        let keys: String = (0..50).map(|i| format!("k{i} = 1\n")).collect();
        let e = ConfigError::Invalid {
            path: PathBuf::from("f.toml"),
            problems: problems(&format!("{base}{keys}")),
        };
        assert_eq!(e.count(), 50);
        let lines = e.log_lines();
        assert_eq!(lines.len(), MAX_LOGGED_PROBLEMS + 1);
        assert_eq!(
            lines[0],
            "f.toml:6:1: unknown key `k0` in [[accounts]] (mailpushd.toml(5) lists every key)"
        );
        assert_eq!(
            lines[MAX_LOGGED_PROBLEMS],
            "... and 30 more problems (mailpushd --check lists them all)"
        );
        // --check prints them all.
        assert_eq!(e.to_string().lines().count(), 50);
    }

    #[test]
    fn sound_is_a_sound_name_or_empty_for_none() {
        let base = "[[accounts]]\nname='a'\nhost='h'\nusername='u'\npassword='p'\n\
                    [notifications]\n";
        let sound = |line: &str| parse_ok(&format!("{base}{line}")).notifications.sound;
        assert_eq!(sound("").as_deref(), Some("message-new-email"));
        assert_eq!(sound("sound = ''\n"), None, "\"\" is off: no hint at all");
        assert_eq!(
            sound("sound = 'message-new-instant'\n").as_deref(),
            Some("message-new-instant")
        );
        for bad in ["/usr/share/sounds/mail.oga", "Bell", " ", "new mail"] {
            let p = problems(&format!("{base}sound = {bad:?}\n"));
            assert_eq!(p.len(), 1, "{bad:?}: {p:?}");
            assert_eq!((p[0].line, p[0].column), (7, 9), "{p:?}");
            assert!(
                p[0].message.starts_with("`sound` must be a sound name")
                    && p[0].message.contains("\"\" for no sound"),
                "{p:?}"
            );
        }
        let p = problems(&format!("{base}sound = false\n"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].line, p[0].column), (7, 9), "{p:?}");
        assert!(p[0].message.contains("must be a string"), "{p:?}");
    }

    #[test]
    fn a_file_over_the_size_bound_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.toml");
        let line = "# comment\n";
        let text = line.repeat(MAX_CONFIG_BYTES as usize / line.len() + 1);
        std::fs::write(&path, &text).unwrap();
        let e = load(&path).unwrap_err();
        assert!(matches!(e, ConfigError::TooBig { bytes, .. } if bytes == text.len() as u64));
        assert_eq!(
            e.to_string(),
            format!(
                "{}: the config file is {} bytes; one over 1048576 bytes is not read",
                path.display(),
                text.len()
            )
        );
    }
}

#[cfg(test)]
mod hostile_tests;
