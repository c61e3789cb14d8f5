//! The one description of every config key: its table, its type, its default, its range
//! and its documentation.
//!
//! Everything that needs to know the keys reads it from here:
//! - stage one of reading a file (`shape.rs`): unknown keys, with the nearest known one
//!   suggested; values of the wrong type; integers out of range;
//! - mailpushd.toml(5) (`src/generate.rs`), rendered from [`KEYS`] and [`TABLES`];
//! - the tests that hold config.example.toml and the validated types to it.
//!
//! Like ripgrep's flag definitions, each key's documentation lives on its definition, so a
//! new key is one entry here (plus the field that carries it in [`super::Config`]).

/// One table of the file.
pub struct Table {
    /// The name in the file: `accounts`, `notifications`, `syslog` or `hooks`.
    pub name: &'static str,
    /// How it is written: `[[accounts]]` (an array of tables) or `[notifications]`.
    pub header: &'static str,
    /// The introduction in mailpushd.toml(5), in roff.
    pub doc: &'static str,
}

/// One key of the config file.
pub struct Key {
    /// The [`Table`] it belongs in.
    pub table: &'static str,
    pub name: &'static str,
    /// What the value must be; checked before anything else reads it.
    pub kind: Kind,
    /// The default, in roff; "" for a required key or one without a default.
    pub default: &'static str,
    /// The accepted integer range, inclusive; the error and the man page say it.
    pub range: Option<(i64, i64)>,
    /// The description, in roff.
    pub doc: &'static str,
}

/// The type of a key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    /// A file name (a string).
    Path,
    /// One of [`super::providers::names`].
    Provider,
    Bool,
    /// A count.
    Int,
    /// An integer number of seconds.
    Secs,
    /// An integer number of milliseconds.
    Millis,
    /// A program and its arguments: an array of strings, run without a shell.
    Argv,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// An array whose items are mailbox names or `{ name = ..., notify = ... }` tables
    /// (keys in [`MAILBOX_KEYS`]).
    Mailboxes,
}

impl Kind {
    /// The value's type as mailpushd.toml(5) writes it, in roff.
    pub fn roff(self) -> String {
        match self {
            Kind::Str | Kind::Provider => "string".into(),
            Kind::Path => "path".into(),
            Kind::Bool => "boolean".into(),
            Kind::Int | Kind::Secs | Kind::Millis => "integer".into(),
            Kind::Argv => "array of strings".into(),
            Kind::Mailboxes => "array of strings or tables".into(),
            Kind::OneOf(values) => values
                .iter()
                .map(|v| format!("\"{v}\""))
                .collect::<Vec<_>>()
                .join(" | "),
        }
    }

    /// What a value of this kind is, for an error message: "an integer", "true or false".
    pub fn expected(self) -> String {
        match self {
            Kind::Str | Kind::Provider => "a string".into(),
            Kind::Path => "a string (a file name)".into(),
            Kind::Bool => "true or false".into(),
            Kind::Int => "an integer".into(),
            Kind::Secs => "an integer (seconds)".into(),
            Kind::Millis => "an integer (milliseconds)".into(),
            Kind::Argv => {
                "a list of strings: a program and its arguments, run without a shell".into()
            }
            Kind::Mailboxes => "a list of mailbox names".into(),
            Kind::OneOf(values) => format!("one of {}", quoted_list(values)),
        }
    }

    /// The unit an integer is in, after its number in a message: " seconds".
    pub fn unit(self) -> &'static str {
        match self {
            Kind::Secs => " seconds",
            Kind::Millis => " milliseconds",
            _ => "",
        }
    }
}

/// `"a", "b" or "c"`.
pub fn quoted_list(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// Longest IDLE we allow: RFC 2177 section 3 says servers may log a client off after 30
/// minutes of inactivity.
const MAX_IDLE_REFRESH_SECS: i64 = 29 * 60;
/// An hour: a summary held longer than that would be news from the past.
const MAX_BURST_WINDOW_SECS: i64 = 3600;

/// The keys of a mailbox given as a table inside `mailboxes` (documented with `mailboxes`).
pub const MAILBOX_KEYS: &[(&str, Kind)] = &[("name", Kind::Str), ("notify", Kind::Bool)];

/// The key `name` of table `table`, if there is one.
pub fn find(table: &str, name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.table == table && k.name == name)
}

/// The table called `name`, if there is one.
pub fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

/// The candidate nearest to `word`, if it is near enough to be what was meant (see
/// [`nearest`]).
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    nearest(word, candidates).into_iter().next()
}

/// The candidates near enough to `word` to be what was meant, nearest first: at most one
/// edit (insertion, deletion, substitution or swap of neighbours) per three characters, as
/// cargo and rustc judge their "did you mean" suggestions, and never a different word of
/// the same length sharing only a letter or two. Candidates as near as each other keep
/// their order.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let length = word.chars().count();
    let limit = (length / 3).max(1);
    let mut near: Vec<(usize, &str)> = candidates
        .into_iter()
        // The distance is at least the difference in length, and must stay below the
        // candidate's length: a word twice as long matches nothing, and is not compared
        // (a huge key would cost its length times each candidate's).
        .filter(|c| length < 2 * c.chars().count())
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= limit && *d < c.chars().count())
        .collect();
    near.sort_by_key(|(d, _)| *d);
    near.into_iter().map(|(_, c)| c).collect()
}

/// The keys whose values are secrets, or commands that may hold one: no message ever
/// quotes what they are set to (a password pasted into `password_command` would otherwise
/// be printed by `--check` and logged to the journal and syslog on a reload).
pub const SECRETS: &[&str] = &["password", "password_command", "oauth2_token_command"];

/// Every key of the config file, in the order mailpushd.toml(5) lists them.
pub const KEYS: &[Key] = &[
    Key {
        table: "accounts",
        name: "name",
        kind: Kind::Str,
        default: "",
        range: None,
        doc: "Required. The account's name, unique among the accounts. \
              It is shown in notifications and logs and tells accounts apart when the \
              configuration is reloaded.",
    },
    Key {
        table: "accounts",
        name: "provider",
        kind: Kind::Provider,
        default: "",
        range: None,
        doc: "A preset for a well-known provider: \\fBgmail\\fR, \\fBoutlook\\fR, \\fBicloud\\fR, \
              \\fByahoo\\fR, \\fBfastmail\\fR, \\fBqq\\fR, \\fB163\\fR, \\fB126\\fR, \\fByeah\\fR or \
              \\fBaliyun\\fR. It fills in \\fBhost\\fR, \\fBport\\fR and \\fBtls\\fR, plus a \
              polling interval for servers without IDLE (NetEase) and \\fBmax_connections\\fR \
              (Gmail, Outlook); any key set explicitly wins. \
              docs/PROVIDERS.md says what each preset sets and what the provider requires \
              (app passwords, authorization codes).",
    },
    Key {
        table: "accounts",
        name: "host",
        kind: Kind::Str,
        default: "",
        range: None,
        doc: "Required unless \\fBprovider\\fR is set. The IMAP server's host name or IP \
              address. The server's certificate is verified against it.",
    },
    Key {
        table: "accounts",
        name: "port",
        kind: Kind::Int,
        default: "993 with \\fBtls = \"implicit\"\\fR, 143 otherwise",
        range: Some((1, 65535)),
        doc: "The server's port.",
    },
    Key {
        table: "accounts",
        name: "tls",
        kind: Kind::OneOf(&["implicit", "starttls", "none"]),
        default: "\"implicit\"",
        range: None,
        doc: "How the connection is encrypted. \
              \\fB\"implicit\"\\fR: TLS from the first byte (port 993). \
              \\fB\"starttls\"\\fR: a plain connection upgraded with STARTTLS; if the server \
              does not offer it, \\fBmailpushd\\fR refuses to log in rather than continue in \
              the clear. \
              \\fB\"none\"\\fR: no encryption; allowed only for a server on this machine \
              (localhost, 127.0.0.0/8, ::1) unless \\fBallow_plaintext_auth\\fR is true. \
              Certificates and host names are always verified, against the system's trusted \
              roots and \\fBca_file\\fR; TLS 1.2 is the minimum.",
    },
    Key {
        table: "accounts",
        name: "ca_file",
        kind: Kind::Path,
        default: "none",
        range: None,
        doc: "A PEM file with an extra trust anchor, for a server with a self\\-signed or \
              private\\-CA certificate: the certificate itself or its CA. \
              The system's trusted roots are used too. \
              A relative path is relative to the configuration file's directory. \
              The file must exist when the configuration is read.",
    },
    Key {
        table: "accounts",
        name: "username",
        kind: Kind::Str,
        default: "",
        range: None,
        doc: "Required. The login name.",
    },
    Key {
        table: "accounts",
        name: "password",
        kind: Kind::Str,
        default: "",
        range: None,
        doc: "The password. \
              Exactly one of \\fBpassword\\fR and \\fBpassword_command\\fR must be set. \
              Providers that use two\\-factor login (Gmail, Outlook) need an app password.",
    },
    Key {
        table: "accounts",
        name: "password_command",
        kind: Kind::Argv,
        default: "",
        range: None,
        doc: "A program and its arguments, run without a shell at every connect, with \
              standard input from \\fI/dev/null\\fR and the daemon's environment; its \
              standard output, less a trailing newline, is the password. \
              It must finish within 60 seconds and print something; otherwise the attempt \
              fails with its exit status and standard error, and is retried like any other \
              failure. \
              It runs in a process group of its own, which is killed at the 60 seconds or when \
              the daemon stops; a process it leaves behind that still holds its standard \
              output is killed one second after it exits. \
              For example \\fB[\"pass\", \"show\", \"mail/work\"]\\fR or \
              \\fB[\"secret\\-tool\", \"lookup\", \"service\", \"imap\", \"user\", \"me\"]\\fR.",
    },
    Key {
        table: "accounts",
        name: "mailboxes",
        kind: Kind::Mailboxes,
        default: "[\"INBOX\"]",
        range: None,
        doc: "The mailboxes to watch, named as the server names them (with its hierarchy \
              separator, e.g. \\fB\"Archive/2024\"\\fR or \\fB\"INBOX.Lists\"\\fR), in UTF\\-8: \
              names with non\\-ASCII characters are encoded for the server (modified UTF\\-7) \
              automatically. \
              An entry with \\fB*\\fR or \\fB%\\fR is a pattern (IMAP LIST wildcards: \
              \\fB*\\fR any characters, \\fB%\\fR any but the hierarchy separator), \
              listed at each connect and again at least every 30 minutes: \\fB[\"INBOX\", \"Lists/*\"]\\fR, or \
              \\fB[\"*\"]\\fR for every mailbox. A pattern leaves out what cannot be \
              selected and the special\\-use mailboxes (RFC 6154) \\fB\\\\All\\fR, \
              \\fB\\\\Flagged\\fR, \\fB\\\\Junk\\fR, \\fB\\\\Trash\\fR, \\fB\\\\Sent\\fR and \
              \\fB\\\\Drafts\\fR; a mailbox named outright is always watched. \
              How many connections they take: see \\fBmax_connections\\fR. \
              Names must not be empty, repeated or contain line breaks; \
              \\fBINBOX\\fR is case\\-insensitive, so \\fB\"Inbox\"\\fR repeats it. \
              An entry can also be a table, \\fB{ name = \"Lists\", notify = false }\\fR, whose \
              \\fBnotify\\fR overrides the account's for that mailbox.",
    },
    Key {
        table: "accounts",
        name: "idle_refresh_secs",
        kind: Kind::Secs,
        default: "1500",
        range: Some((10, MAX_IDLE_REFRESH_SECS)),
        doc: "Re\\-issue IDLE at least this often, in seconds. \
              Servers may end an IDLE after 30 minutes, some providers and NAT routers \
              sooner. \
              Each refresh also checks for new mail, and the server must answer the DONE \
              that ends the cycle within \\fBtimeout_secs\\fR, which is how a connection \
              that froze without being closed is found.",
    },
    Key {
        table: "accounts",
        name: "idle_silence_secs",
        kind: Kind::Secs,
        default: "125",
        range: Some((5, MAX_IDLE_REFRESH_SECS)),
        doc: "During IDLE, this many seconds without a word from the server (no keepalive \
              line, no data) end the wait: mailpushd sends DONE, and a server that does not \
              answer within 20 seconds (or \\fBtimeout_secs\\fR, if shorter) is replaced \
              by a new connection. \
              The default is just over Dovecot's 2 minutes between keepalive lines, so a \
              server that talks costs nothing extra and a frozen link is found within \
              150 seconds.",
    },
    Key {
        table: "accounts",
        name: "poll_interval_secs",
        kind: Kind::Secs,
        default: "120",
        range: Some((1, 86400)),
        doc: "For a server that does not offer IDLE: check for new mail this often, in \
              seconds.",
    },
    Key {
        table: "accounts",
        name: "reconnect_max_secs",
        kind: Kind::Secs,
        default: "300",
        range: Some((1, 86400)),
        doc: "The longest wait between reconnect attempts, in seconds. \
              After a failure \\fBmailpushd\\fR retries after about 1 second, then 2, 4, 8, \
              ... up to this. \
              A failed login or a missing mailbox waits this long straight away: retrying a \
              wrong password every second would only get the account locked.",
    },
    Key {
        table: "accounts",
        name: "max_connections",
        kind: Kind::Int,
        default: "from the \\fBprovider\\fR preset, else 5",
        range: Some((1, 100)),
        doc: "How many IMAP connections \\fBmailpushd\\fR may hold at once for this \
              account. \
              INBOX first, as many mailboxes as fit get a connection of their own (IDLE); the \
              rest are watched over one shared connection, which is the budget's last: by \
              NOTIFY (RFC 5465) where the server offers it, else by STATUS every \
              \\fBpoll_interval_secs\\fR. With NOTIFY the account takes two connections \
              however many mailboxes it watches. \
              A preset's value is below the provider's published cap, leaving room for your \
              mail client. When the server refuses a connection for its limit, the budget is \
              lowered to what it allows until the next reload.",
    },
    Key {
        table: "accounts",
        name: "timeout_secs",
        kind: Kind::Secs,
        default: "30",
        range: Some((1, 600)),
        doc: "How long the server may take to answer a command, in seconds.",
    },
    Key {
        table: "accounts",
        name: "catch_up_max",
        kind: Kind::Int,
        default: "10",
        range: Some((0, u32::MAX as i64)), // i64::from is not const
        doc: "After a reconnect or a restart, more new messages than this are shown as one \
              summary notification (\"23 new messages in work/INBOX while disconnected\"); \
              syslog still gets a line per message. \
              With 0, every catch\\-up is a summary.",
    },
    Key {
        table: "accounts",
        name: "oauth2_token_command",
        kind: Kind::Argv,
        default: "",
        range: None,
        doc: "Instead of a password: a command (argv, no shell) that prints an OAuth2 access \
              token, run at every connect so a refreshed token is used, e.g. \
              \\fB[\"oama\", \"access\", \"me@gmail.com\"]\\fR or mutt_oauth2.py. Logs in with \
              XOAUTH2 or OAUTHBEARER.",
    },
    Key {
        table: "accounts",
        name: "auth",
        kind: Kind::OneOf(&["login", "plain", "xoauth2", "oauthbearer"]),
        default: "the best the server offers",
        range: None,
        doc: "\\fBlogin\\fR, \\fBplain\\fR (AUTHENTICATE PLAIN), \\fBxoauth2\\fR or \
              \\fBoauthbearer\\fR (RFC 7628). By default a password uses AUTHENTICATE PLAIN \
              when the server offers it (always when it says LOGINDISABLED), else LOGIN; a \
              token uses XOAUTH2, else OAUTHBEARER.",
    },
    Key {
        table: "accounts",
        name: "tls_verify",
        kind: Kind::Bool,
        default: "true",
        range: None,
        doc: "An escape hatch, not a setting: \\fBfalse\\fR skips the certificate and host \
              name checks, so anyone on the path can read the password. Logged as a warning at \
              every connect. Use \\fBca_file\\fR for a self-signed server instead.",
    },
    Key {
        table: "accounts",
        name: "allow_plaintext_auth",
        kind: Kind::Bool,
        default: "false",
        range: None,
        doc: "With \\fBtls = \"none\"\\fR, send the password unencrypted to a host that is \
              not this machine anyway.",
    },
    Key {
        table: "accounts",
        name: "notify",
        kind: Kind::Bool,
        default: "true",
        range: None,
        doc: "Show desktop notifications for this account's mail; syslog lines and hooks \
              happen either way. \
              A mailbox's own \\fBnotify\\fR (see \\fBmailboxes\\fR) overrides it.",
    },
    Key {
        table: "accounts",
        name: "show_sender",
        kind: Kind::Bool,
        default: "true",
        range: None,
        doc: "Privacy: with false, notifications leave out who the mail is from and say \
              \"New mail in \\fIaccount\\fR/\\fImailbox\\fR\" instead. \
              Syslog lines are not affected.",
    },
    Key {
        table: "accounts",
        name: "show_subject",
        kind: Kind::Bool,
        default: "true",
        range: None,
        doc: "Privacy: with false, notifications leave out the subject. \
              Syslog lines are not affected.",
    },
    Key {
        table: "accounts",
        name: "on_new_mail",
        kind: Kind::Argv,
        default: "the one in \\fB[hooks]\\fR",
        range: None,
        doc: "This account's own \\fBon_new_mail\\fR hook (see \\fB[hooks]\\fR).",
    },
    Key {
        table: "accounts",
        name: "on_new_mail_post",
        kind: Kind::Argv,
        default: "the one in \\fB[hooks]\\fR",
        range: None,
        doc: "This account's own \\fBon_new_mail_post\\fR hook (see \\fB[hooks]\\fR).",
    },
    Key {
        table: "accounts",
        name: "hook_debounce_ms",
        kind: Kind::Millis,
        default: "the one in \\fB[hooks]\\fR",
        range: Some((0, 600_000)),
        doc: "This account's own \\fBhook_debounce_ms\\fR (see \\fB[hooks]\\fR).",
    },
    Key {
        table: "accounts",
        name: "hook_timeout_secs",
        kind: Kind::Secs,
        default: "the one in \\fB[hooks]\\fR",
        range: Some((1, 86400)),
        doc: "This account's own \\fBhook_timeout_secs\\fR (see \\fB[hooks]\\fR).",
    },
    Key {
        table: "notifications",
        name: "enabled",
        kind: Kind::Bool,
        default: "true",
        range: None,
        doc: "Show desktop notifications through \\fBorg.freedesktop.Notifications\\fR on \
              the session bus.",
    },
    Key {
        table: "notifications",
        name: "summary_threshold",
        kind: Kind::Int,
        default: "3",
        range: Some((1, u32::MAX as i64)), // i64::from is not const
        doc: "More new messages than this at once in one mailbox are shown as one summary \
              notification (\"12 new messages in work/INBOX\", listing the first few), \
              which the next summary of that mailbox replaces. \
              After a reconnect the account's \\fBcatch_up_max\\fR applies instead.",
    },
    Key {
        table: "notifications",
        name: "burst_window_secs",
        kind: Kind::Secs,
        default: "10",
        range: Some((0, MAX_BURST_WINDOW_SECS)),
        doc: "Flood control. Within this many seconds of a mailbox's first popup, up to \
              \\fBsummary_threshold\\fR messages get popups of their own, at once; once there \
              are more, the rest is held and shown as one summary once no new mail has \
              come for a second, or when the window ends while it keeps coming (then the \
              next window holds too). A mailbox quiet for a window is back to instant popups. Syslog lines and hooks are never held. \
              0 judges each wake alone.",
    },
    Key {
        table: "notifications",
        name: "urgency",
        kind: Kind::OneOf(&["low", "normal", "critical"]),
        default: "\"normal\"",
        range: None,
        doc: "The urgency the notification daemon is told; many show \"critical\" ones until \
              they are dismissed.",
    },
    Key {
        table: "notifications",
        name: "icon",
        kind: Kind::Str,
        default: "\"mail\\-unread\"",
        range: None,
        doc: "An icon name from the icon theme, or the path of an image file.",
    },
    Key {
        table: "notifications",
        name: "sound",
        kind: Kind::Str,
        default: "\"message\\-new\\-email\"",
        range: None,
        doc: "The sound of notifications about new mail (single messages and summaries): \
              a name from the freedesktop sound naming specification, sent as the \
              \\fBsound\\-name\\fR hint for the notification server to play from the \
              sound theme (lowercase letters, digits, \\fB\\-\\fR, \\fB_\\fR and \\fB.\\fR; not \
              a file). \\fB\"\"\\fR turns it off: no sound hint is sent, and what the \
              server does by default applies. Notifications about problems (a failed \
              login, a rejected config) never ask for a sound. Servers that cannot play \
              sounds ignore it.",
    },
    Key {
        table: "notifications",
        name: "open_command",
        kind: Kind::Argv,
        default: "none",
        range: None,
        doc: "A program and its arguments, run without a shell when a notification is \
              clicked or its \\fBOpen\\fR button is pressed, e.g. \\fB[\"thunderbird\"]\\fR. \
              Without it, notifications have no \\fBOpen\\fR button. \
              A notification for a single message also has a \\fBMark as read\\fR button. \
              When the notification server gives an activation token with the click \
              (\\fBActivationToken\\fR, Desktop Notifications 1.2), the program gets it in \
              \\fBXDG_ACTIVATION_TOKEN\\fR and \\fBDESKTOP_STARTUP_ID\\fR, so that it may \
              take focus; otherwise both are removed from its environment.",
    },
    Key {
        table: "syslog",
        name: "enabled",
        kind: Kind::Bool,
        default: "true",
        range: None,
        doc: "Write one line per new message (level info) and one per connection problem \
              (level warning) to syslog.",
    },
    Key {
        table: "syslog",
        name: "address",
        kind: Kind::Str,
        default: "\"unix:/dev/log\"",
        range: None,
        doc: "Where syslog lines go: \\fB\"unix:\\fIpath\\fB\"\\fR, a datagram socket given \
              by its absolute path (\\fI/dev/log\\fR is provided by journald and rsyslog), or \
              \\fB\"udp:\\fIhost\\fB:\\fIport\\fB\"\\fR (an IPv6 address in brackets). \
              If the socket is missing, \\fBmailpushd\\fR says so once and carries on.",
    },
    Key {
        table: "syslog",
        name: "facility",
        kind: Kind::Str,
        default: "\"mail\"",
        range: None,
        doc: "The syslog facility: \\fBkern\\fR, \\fBuser\\fR, \\fBmail\\fR, \\fBdaemon\\fR, \
              \\fBauth\\fR, \\fBsyslog\\fR, \\fBlpr\\fR, \\fBnews\\fR, \\fBuucp\\fR, \\fBcron\\fR, \
              \\fBauthpriv\\fR, \\fBftp\\fR, \\fBntp\\fR, \\fBaudit\\fR, \\fBalert\\fR, \
              \\fBclock_daemon\\fR or \\fBlocal0\\fR to \\fBlocal7\\fR (with or without a \
              \\fBlog_\\fR prefix, in any case).",
    },
    Key {
        table: "hooks",
        name: "on_new_mail",
        kind: Kind::Argv,
        default: "none",
        range: None,
        doc: "A program and its arguments, run without a shell when new mail arrives, e.g. \
              \\fB[\"mbsync\", \"\\-a\"]\\fR to fetch it or \\fB[\"notmuch\", \"new\"]\\fR. \
              Messages that arrive within \\fBhook_debounce_ms\\fR of each other make one \
              run. \
              Hooks run at most once per message: when the daemon stops, a running hook is \
              killed and messages still waiting for their run are logged and dropped, and \
              they are not offered again after a restart.",
    },
    Key {
        table: "hooks",
        name: "on_new_mail_post",
        kind: Kind::Argv,
        default: "none",
        range: None,
        doc: "A program and its arguments, run without a shell after \\fBon_new_mail\\fR has \
              finished (like goimapnotify's onNewMailPost).",
    },
    Key {
        table: "hooks",
        name: "hook_debounce_ms",
        kind: Kind::Millis,
        default: "1000",
        range: Some((0, 600_000)),
        doc: "Messages arriving within this many milliseconds of each other make one run \
              of the hooks.",
    },
    Key {
        table: "hooks",
        name: "hook_timeout_secs",
        kind: Kind::Secs,
        default: "60",
        range: Some((1, 86400)),
        doc: "A hook still running after this many seconds is killed.",
    },
];

/// The tables of the file, in the order mailpushd.toml(5) lists them.
pub const TABLES: &[Table] = &[
    Table {
        name: "accounts",
        header: "[[accounts]]",
        doc: "One table per IMAP account; at least one is required. \
              INBOX idles on a connection of its own; the other mailboxes share one \
              connection where the server offers NOTIFY, else get their own while \
              \\fBmax_connections\\fR allows.",
    },
    Table {
        name: "notifications",
        header: "[notifications]",
        doc: "Desktop notifications. The table may be left out.",
    },
    Table {
        name: "syslog",
        header: "[syslog]",
        doc: "Syslog output. The table may be left out.",
    },
    Table {
        name: "hooks",
        header: "[hooks]",
        doc: "Commands run for new mail, for every account; an account can set each key for \
              itself. The table may be left out.",
    },
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config;

    fn documented(table: &str) -> BTreeSet<&'static str> {
        KEYS.iter()
            .filter(|k| k.table == table)
            .map(|k| k.name)
            .collect()
    }

    const EXAMPLE: &str = include_str!("../../config.example.toml");

    /// Every `key =` line of config.example.toml, commented out or not, with its table.
    fn example_keys() -> BTreeSet<(String, String)> {
        let mut table = String::new();
        let mut keys = BTreeSet::new();
        for line in EXAMPLE.lines() {
            let line = line.trim_start_matches(['#', ' ']).trim_end();
            if let Some(t) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
                table = t.to_owned();
            } else if let Some(t) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                table = t.to_owned();
            } else if let Some((key, _)) = line.split_once('=') {
                let key = key.trim_end();
                if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    keys.insert((table.clone(), key.to_owned()));
                }
            }
        }
        keys
    }

    #[test]
    fn every_key_of_the_example_is_documented() {
        let keys = example_keys();
        assert!(keys.len() >= 15, "the scan found too few keys: {keys:?}");
        for (table, key) in &keys {
            assert!(
                documented(table).contains(key.as_str()),
                "config.example.toml has [{table}] {key}, which mailpushd.toml(5) lacks: \
                 add it to KEYS in src/config/keys.rs"
            );
        }
    }

    #[test]
    fn example_config_is_valid() {
        config::parse(EXAMPLE, Path::new("/")).expect("config.example.toml parses");
    }

    #[test]
    fn a_config_with_every_key_parses() {
        // Listed by hand, to be independent of the error-message scan above.
        // ca_file must name an existing file: any will do.
        let text = format!(
            r#"
[[accounts]]
name = "a"
host = "mail.example.com"
port = 993
tls = "implicit"
ca_file = "{}/Cargo.toml"
username = "u"
password = "p"
mailboxes = ["INBOX", {{ name = "Lists", notify = false }}]
idle_refresh_secs = 1500
idle_silence_secs = 125
poll_interval_secs = 120
reconnect_max_secs = 300
max_connections = 5
timeout_secs = 30
catch_up_max = 10
allow_plaintext_auth = false
notify = true
show_sender = true
show_subject = true
on_new_mail = ["true"]
on_new_mail_post = ["true"]
hook_debounce_ms = 1000
hook_timeout_secs = 60

[[accounts]]
name = "b"
host = "localhost"
tls = "none"
username = "u"
password_command = ["true"]

[[accounts]]
name = "c"
provider = "163"
username = "u"
password = "p"
auth = "plain"
tls_verify = true

[[accounts]]
name = "d"
host = "imap.gmail.com"
username = "u"
oauth2_token_command = ["true"]

[notifications]
enabled = true
summary_threshold = 3
burst_window_secs = 10
urgency = "normal"
icon = "mail-unread"
sound = "message-new-email"
open_command = ["true"]

[syslog]
enabled = true
address = "unix:/dev/log"
facility = "mail"

[hooks]
on_new_mail = ["true"]
on_new_mail_post = ["true"]
hook_debounce_ms = 1000
hook_timeout_secs = 60
"#,
            env!("CARGO_MANIFEST_DIR")
        );
        let c = config::parse(&text, Path::new("/")).expect("every key parses");
        assert!(!c.accounts[0].notify_for("Lists"), "a mailbox's own notify");
        let mut used = BTreeSet::new();
        let mut table = "";
        for line in text.lines() {
            if line.starts_with('[') {
                table = line.trim_matches(['[', ']']);
            } else if let Some((key, _)) = line.split_once(" = ") {
                used.insert((table, key));
            }
        }
        let all: BTreeSet<_> = KEYS.iter().map(|k| (k.table, k.name)).collect();
        assert_eq!(used, all);
    }

    /// A minimal config with `key = value` in `table`.
    fn with_key(
        table: &str,
        key: &str,
        value: i64,
    ) -> Result<config::Config, Vec<config::Problem>> {
        let account = "[[accounts]]\nname='a'\nhost='h'\nusername='u'\npassword='p'\n";
        let text = match table {
            "accounts" => format!("{account}{key} = {value}\n"),
            _ => format!("{account}[{table}]\n{key} = {value}\n"),
        };
        config::parse(&text, Path::new("/"))
    }

    #[test]
    fn documented_ranges_are_enforced() {
        for k in KEYS {
            let Some((lo, hi)) = k.range else { continue };
            let what = |v: i64| format!("[{}] {} = {v}", k.table, k.name);
            assert!(with_key(k.table, k.name, lo).is_ok(), "{}", what(lo));
            assert!(with_key(k.table, k.name, hi).is_ok(), "{}", what(hi));
            assert!(
                with_key(k.table, k.name, lo - 1).is_err(),
                "{}",
                what(lo - 1)
            );
            assert!(
                with_key(k.table, k.name, hi + 1).is_err(),
                "{}",
                what(hi + 1)
            );
        }
    }

    #[test]
    fn documented_defaults_are_the_real_ones() {
        let default = |table: &str, name: &str| {
            KEYS.iter()
                .find(|k| k.table == table && k.name == name)
                .unwrap_or_else(|| panic!("[{table}] {name} is not documented"))
                .default
        };
        let acct = |name: &str| default("accounts", name);
        let c = config::parse(
            "[[accounts]]\nname='a'\nhost='h'\nusername='u'\npassword='p'\n",
            Path::new("/"),
        )
        .unwrap();
        let a = &c.accounts[0];
        let secs = |d: Duration| d.as_secs().to_string();
        assert_eq!(acct("idle_refresh_secs"), secs(a.idle_refresh));
        assert_eq!(acct("idle_silence_secs"), secs(a.idle_silence));
        assert_eq!(acct("poll_interval_secs"), secs(a.poll_interval));
        assert_eq!(acct("reconnect_max_secs"), secs(a.reconnect_max));
        assert!(
            acct("max_connections").ends_with(&format!(" {}", a.max_connections)),
            "{}",
            acct("max_connections")
        );
        assert_eq!(acct("timeout_secs"), secs(a.timeout));
        assert_eq!(acct("catch_up_max"), a.catch_up_max.to_string());
        assert_eq!(
            acct("allow_plaintext_auth"),
            a.allow_plaintext_auth.to_string()
        );
        assert_eq!(acct("mailboxes"), format!("{:?}", a.mailboxes));
        assert_eq!(a.tls, config::TlsMode::Implicit);
        assert_eq!(acct("tls"), "\"implicit\"");
        assert_eq!(a.port, 993);
        assert!(acct("port").starts_with("993 "));
        assert!(a.ca_file.is_none());
        assert_eq!(acct("ca_file"), "none");
        assert_eq!(acct("notify"), a.notify.to_string());
        assert_eq!(acct("show_sender"), a.show_sender.to_string());
        assert_eq!(acct("show_subject"), a.show_subject.to_string());

        let n = &c.notifications;
        assert_eq!(default("notifications", "enabled"), n.enabled.to_string());
        assert_eq!(
            default("notifications", "summary_threshold"),
            n.summary_threshold.to_string()
        );
        assert_eq!(
            default("notifications", "burst_window_secs"),
            n.burst_window.as_secs().to_string()
        );
        assert_eq!(n.urgency, config::Urgency::Normal);
        assert_eq!(default("notifications", "urgency"), "\"normal\"");
        assert_eq!(
            default("notifications", "icon"),
            format!("\"{}\"", n.icon.replace('-', "\\-"))
        );
        assert_eq!(
            default("notifications", "sound"),
            format!("\"{}\"", n.sound.as_deref().unwrap().replace('-', "\\-"))
        );
        assert!(n.open_command.is_none());
        assert_eq!(default("notifications", "open_command"), "none");

        assert_eq!(default("syslog", "enabled"), c.syslog.enabled.to_string());
        assert_eq!(
            default("syslog", "address"),
            format!("\"{}\"", c.syslog.address)
        );
        assert_eq!(
            c.syslog.facility as u32,
            ::syslog::Facility::LOG_MAIL as u32
        );
        assert_eq!(default("syslog", "facility"), "\"mail\"");

        let h = &a.hooks;
        assert!(h.on_new_mail.is_none() && h.on_new_mail_post.is_none());
        assert_eq!(default("hooks", "on_new_mail"), "none");
        assert_eq!(default("hooks", "on_new_mail_post"), "none");
        assert_eq!(
            default("hooks", "hook_debounce_ms"),
            h.debounce.as_millis().to_string()
        );
        assert_eq!(default("hooks", "hook_timeout_secs"), secs(h.timeout));
        // An account's hook keys default to [hooks]'.
        let c = config::parse(
            "[hooks]\nhook_timeout_secs = 7\non_new_mail = ['x']\n\
             [[accounts]]\nname='a'\nhost='h'\nusername='u'\npassword='p'\n",
            Path::new("/"),
        )
        .unwrap();
        let h = &c.accounts[0].hooks;
        assert_eq!(h.timeout, Duration::from_secs(7));
        assert_eq!(h.on_new_mail, Some(vec!["x".to_owned()]));
        for name in [
            "on_new_mail",
            "on_new_mail_post",
            "hook_debounce_ms",
            "hook_timeout_secs",
        ] {
            assert!(acct(name).contains("[hooks]"), "{name}");
        }
    }

    #[test]
    fn near_words_are_suggested_and_far_ones_are_not() {
        let keys = ["password", "password_command", "port", "host"];
        assert_eq!(suggest("passwrd", keys), Some("password"));
        assert_eq!(suggest("pasword", keys), Some("password"));
        assert_eq!(suggest("prot", keys), Some("port"));
        assert_eq!(suggest("hots", keys), Some("host"));
        assert_eq!(suggest("gmial", ["gmail", "outlook", "163"]), Some("gmail"));
        assert_eq!(suggest("colour", keys), None);
        assert_eq!(suggest("x", ["y"]), None);
    }

    #[test]
    fn every_key_is_in_a_known_table_once() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(
                table(k.table).is_some(),
                "{} is in unknown table {}",
                k.name,
                k.table
            );
            assert!(
                !KEYS[..i]
                    .iter()
                    .any(|o| o.table == k.table && o.name == k.name),
                "[{}] {} is listed twice",
                k.table,
                k.name
            );
            if let Some((lo, hi)) = k.range {
                assert!(lo <= hi, "{}", k.name);
                assert!(
                    matches!(k.kind, Kind::Int | Kind::Secs | Kind::Millis),
                    "{} has a range but is not an integer",
                    k.name
                );
            }
        }
    }

    #[test]
    fn lists_read_as_english() {
        assert_eq!(quoted_list(&["a"]), "\"a\"");
        assert_eq!(quoted_list(&["a", "b", "c"]), "\"a\", \"b\" or \"c\"");
    }
}
