//! Man pages and shell completions, written by the binary itself: `mailpushd --generate
//! KIND` (a hidden option) prints one to stdout. mailpushd(1)'s SYNOPSIS and OPTIONS and the
//! completions come from the same clap definitions the binary parses with, so they cannot
//! drift from the real options; packagers run it at build time (packaging/README.md).
//!
//! mailpushd.toml(5) is rendered from [`KEYS`], one entry per config key. The tests below
//! hold that table to the truth: every key of config.example.toml and every field serde
//! accepts must be in it, and each documented default and range must be what
//! `config::parse` does.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;

use crate::cli::{Cli, GenerateKind as Kind};

/// Writes `kind` to `out`. Everything is rendered into memory first, so a closed pipe is an
/// error returned here, not a panic inside a generator.
pub fn write(kind: Kind, out: &mut dyn Write) -> io::Result<()> {
    let text = match kind {
        Kind::Man => man()?,
        Kind::ManConfig => man_config(),
        Kind::CompleteBash => completion(Shell::Bash),
        Kind::CompleteZsh => completion(Shell::Zsh),
        Kind::CompleteFish => completion(Shell::Fish),
    };
    out.write_all(&text)?;
    out.flush()
}

fn completion(shell: Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut visible_command(), "mailpushd", &mut buf);
    buf
}

/// The command line without its hidden options: clap_complete would offer them (it only
/// leaves out hidden *values*), and `--generate` is not for people at a prompt. clap cannot
/// remove an argument, so this copies the visible ones into a fresh command.
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new("mailpushd")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().filter(|a| !a.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    cmd
}

/// The `.TH` line. Its date is SOURCE_DATE_EPOCH's, which distribution builds set, so a
/// rebuild writes the same page; without it the date is left empty.
fn title_line(title: &str, section: u8, manual: &str) -> String {
    let date = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map(iso_date)
        .unwrap_or_default();
    format!(
        ".TH {title} {section} \"{date}\" \"mailpushd {}\" \"{manual}\"\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// `YYYY-MM-DD` (UTC) of a Unix time; Howard Hinnant's days-to-civil algorithm.
fn iso_date(unix_secs: i64) -> String {
    let z = unix_secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// What every roff render of the `roff` crate starts with (defines `\*(Aq`, an apostrophe).
/// Kept once, at the top, when sections are rendered one by one.
const ROFF_PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// mailpushd(1): title, NAME, SYNOPSIS and OPTIONS from clap; the rest written here.
fn man() -> io::Result<Vec<u8>> {
    type Render = fn(&Man, &mut dyn Write) -> io::Result<()>;
    let man = Man::new(Cli::command())
        .title("MAILPUSHD")
        .section("1")
        .manual("User Commands");
    // Each render starts with the roff crate's preamble: keep only the first.
    let section = |render: Render| -> io::Result<String> {
        let mut buf = Vec::new();
        render(&man, &mut buf)?;
        let text = String::from_utf8(buf).expect("roff output is UTF-8");
        Ok(text.strip_prefix(ROFF_PREAMBLE).unwrap_or(&text).to_owned())
    };
    // Our own .TH: clap_mangen drops an empty date argument instead of quoting it.
    let mut page = String::from(ROFF_PREAMBLE);
    page.push_str(&title_line("MAILPUSHD", 1, "User Commands"));
    page.push_str(&section(Man::render_name_section)?);
    page.push_str(&section(Man::render_synopsis_section)?);
    page.push_str(MAN1_DESCRIPTION);
    page.push_str(&section(Man::render_options_section)?);
    page.push_str(MAN1_REST);
    Ok(page.into_bytes())
}

const MAN1_DESCRIPTION: &str = r#".SH DESCRIPTION
\fBmailpushd\fR announces new mail the moment it arrives: as a desktop notification on the
user's session bus and as one line to syslog.
It keeps one IMAP connection open for every configured mailbox, waiting in IDLE (RFC 2177)
for the server to report new mail, and polls servers that do not offer IDLE.
It is meant to run as a systemd user service (\fBmailpushd.service\fR) and be forgotten
about; run by hand, it stays in the foreground and logs to standard error.
.PP
Each new, unread message is announced once.
New mail is found by UID, not by counting messages, so an expunge and a new message at the
same moment still announce the new one.
Mail already in a mailbox when it is first watched is not announced, nor is mail already
marked \(rsSeen by another client.
What has been announced is remembered per mailbox in the state directory (see
\fBFILES\fR), so after a reconnect or a restart exactly what arrived meanwhile is announced;
more than \fBcatch_up_max\fR such messages become one summary notification.
.PP
A notification shows the sender's name as its title and the subject and
\fIaccount\fR/\fImailbox\fR as its body (application name \fBmailpushd\fR, category
\fBemail.arrived\fR, icon \fBmail\-unread\fR).
The syslog line, at level info, reads
.PP
.RS
.EX
new mail account=work mailbox=INBOX uid=4711 from="Zhang San <z@example.com>" subject="..."
.EE
.RE
.PP
More than \fBsummary_threshold\fR new messages at once, or a stream of them within
\fBburst_window_secs\fR, become one summary notification.
With an \fBopen_command\fR configured, clicking a notification (or its \fBOpen\fR button)
starts your mail client; \fBMark as read\fR marks the message as read on the server.
Which accounts and mailboxes notify, and whether sender and subject are shown, is
configurable, and hooks can run a command for new mail (say, to fetch it); see
\fBmailpushd.toml\fR(5).
Subjects and names in RFC 2047 encoded words are decoded, including legacy Chinese,
Japanese, Korean and Cyrillic charsets.
.PP
A broken connection is retried forever, after about 1, 2, 4, ... seconds up to the
account's \fBreconnect_max_secs\fR; a failed login is reported once (log and one
notification) and retried every \fBreconnect_max_secs\fR.
A link that dies silently is noticed by TCP keepalive within 105 seconds, one that stops
answering at the end of the IDLE cycle, and a resume from suspend makes every connection
start afresh at once.
Problems are logged on standard error and, at level warning, to syslog; passwords are
never logged.
.PP
The configuration is read from \fI$XDG_CONFIG_HOME/mailpushd/config.toml\fR (or the file
given with \fB\-\-config\fR); its format is described in \fBmailpushd.toml\fR(5).
\fBmailpushd \-\-check\fR validates it without connecting and lists every problem as
\fIfile\fR:\fIline\fR:\fIcolumn\fR: \fImessage\fR.
The file is read again when it changes and on \fBSIGHUP\fR: watchers whose account settings
did not change keep their connections, the others reconnect, stop or start.
A new file with problems is reported and the running configuration is kept.
"#;

const MAN1_REST: &str = r#".SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop: every watcher logs out and closes its connection, and \fBmailpushd\fR exits with
status 0 within about two seconds.
A second such signal during shutdown exits at once.
.TP
\fBSIGHUP\fR
Read the configuration file again, as described above.
\fBsystemctl \-\-user reload mailpushd\fR sends it.
.TP
\fBSIGUSR1\fR
Write each watcher's state to the log, one line per mailbox: connecting, idling, polling
or waiting to reconnect, connected since when, the last event and the last error, and
when the next attempt is due.
.SH EXIT STATUS
.TP
\fB0\fR
Stopped by \fBSIGTERM\fR or \fBSIGINT\fR; or, with \fB\-\-check\fR, the configuration is
valid (and with \fB\-\-connect\fR, every mailbox could be opened).
.TP
\fB78\fR
\fBEX_CONFIG\fR (see \fBsysexits.h\fR): the configuration file cannot be read or is
invalid.
The systemd unit does not restart the service after this status: fix the file, check it
with \fBmailpushd \-\-check\fR, then start the service again.
.TP
\fB75\fR
\fBEX_TEMPFAIL\fR: another \fBmailpushd\fR already runs on the same state directory
(it holds the lock file \fIlock\fR there, see \fBFILES\fR); the message names its PID.
Two would announce every message twice.
The systemd unit does not restart the service after this status either: stop the other
one, then start the service again.
\fB\-\-check\fR never takes the lock.
.TP
\fB1\fR
Any other failure, including \fB\-\-check \-\-connect\fR finding an account or mailbox that
cannot be used.
.SH ENVIRONMENT
.TP
\fBXDG_CONFIG_HOME\fR
The configuration file is \fI$XDG_CONFIG_HOME/mailpushd/config.toml\fR; when this is unset
or not an absolute path, \fI$HOME/.config/mailpushd/config.toml\fR.
.TP
\fBXDG_STATE_HOME\fR
The state directory is \fI$XDG_STATE_HOME/mailpushd\fR; when this is unset or not an
absolute path, \fI$HOME/.local/state/mailpushd\fR.
.TP
\fBHOME\fR
The base of the defaults above.
.TP
\fBDBUS_SESSION_BUS_ADDRESS\fR
The session bus that desktop notifications are sent on
(\fBorg.freedesktop.Notifications\fR).
The systemd user manager provides it when the session bus is a user service
(\fBdbus\-user\-session\fR on Debian).
Without a bus or a notification daemon, \fBmailpushd\fR says so once and keeps writing
syslog lines.
.TP
\fBNOTIFY_SOCKET\fR
Set by systemd for \fBType=notify\fR services.
\fBmailpushd\fR reports \fBREADY=1\fR once its watchers are started, \fBRELOADING=1\fR while
it reloads its configuration, a one\-line \fBSTATUS=\fR summary (how many mailboxes are
being watched, which are reconnecting and why) and \fBSTOPPING=1\fR; see
\fBsd_notify\fR(3).
.TP
\fBWATCHDOG_USEC\fR, \fBWATCHDOG_PID\fR
Set by systemd when the unit has \fBWatchdogSec=\fR; \fBmailpushd\fR sends
\fBWATCHDOG=1\fR at half that interval.
.TP
\fBJOURNAL_STREAM\fR
When it identifies standard error as a stream to the systemd journal, each log line starts
with a \fB<\fIN\fB>\fR priority prefix instead of a timestamp and level, so the journal
records its level.
.SH FILES
.TP
\fI~/.config/mailpushd/config.toml\fR
The configuration file (see \fBENVIRONMENT\fR for the exact rule).
It may hold a password: keep it private (\fBchmod 600\fR).
.TP
\fI~/.local/state/mailpushd/\fR
State: one small file per watched mailbox holding its UIDVALIDITY and the next UID not yet
announced, replaced atomically after every announcement.
The files are named after the user name, host, port and mailbox, so renaming an account
keeps its state; files of earlier versions, named without the port, are renamed on start.
A file that cannot be parsed is renamed to \fI*.corrupt\-\fItime\fR and the mailbox starts
afresh.
Deleting the directory is safe: mail then present is simply not announced.
.TP
\fI~/.local/state/mailpushd/lock\fR
Held (\fBflock\fR(2)) by the running daemon, and holding its PID, so that only one
\fBmailpushd\fR runs per state directory.
It is harmless when left behind: the lock ends with the process.
.TP
\fI/usr/lib/systemd/user/mailpushd.service\fR
The systemd user unit.
.TP
\fI/usr/share/doc/mailpushd/config.example.toml\fR
An example configuration that documents every key.
.TP
\fI/dev/log\fR
The default syslog socket.
.SH EXAMPLES
Check a configuration, then also log in to every account and open every mailbox:
.PP
.RS
.EX
mailpushd \-\-check
mailpushd \-\-check \-\-connect
.EE
.RE
.PP
Run it as a user service, follow its log, and see what every watcher is doing:
.PP
.RS
.EX
systemctl \-\-user enable \-\-now mailpushd
journalctl \-\-user \-u mailpushd \-f
systemctl \-\-user kill \-\-kill\-whom=main \-\-signal=USR1 mailpushd
.EE
.RE
.SH SEE ALSO
\fBmailpushd.toml\fR(5),
\fBsystemctl\fR(1),
\fBjournalctl\fR(1),
\fBsystemd.service\fR(5),
\fBsd_notify\fR(3)
"#;

/// One key of the config file, as mailpushd.toml(5) documents it.
struct Key {
    /// The table it belongs in: `accounts`, `notifications` or `syslog`.
    table: &'static str,
    name: &'static str,
    /// The value's type, in roff.
    value: &'static str,
    /// The default, in roff; "" for a required key.
    default: &'static str,
    /// The accepted integer range, inclusive.
    range: Option<(i64, i64)>,
    /// The description, in roff.
    doc: &'static str,
}

/// Every key of the config file, in the order mailpushd.toml(5) lists them.
const KEYS: &[Key] = &[
    Key {
        table: "accounts",
        name: "name",
        value: "string",
        default: "",
        range: None,
        doc: "Required. The account's name, unique among the accounts. \
              It is shown in notifications and logs and tells accounts apart when the \
              configuration is reloaded.",
    },
    Key {
        table: "accounts",
        name: "provider",
        value: "string",
        default: "",
        range: None,
        doc: "A preset for a well-known provider: \\fBgmail\\fR, \\fBoutlook\\fR, \\fBicloud\\fR, \
              \\fByahoo\\fR, \\fBfastmail\\fR, \\fBqq\\fR, \\fB163\\fR, \\fB126\\fR, \\fByeah\\fR or \
              \\fBaliyun\\fR. It fills in \\fBhost\\fR, \\fBport\\fR and \\fBtls\\fR, and a polling \
              interval for servers without IDLE (NetEase); any key set explicitly wins. \
              docs/PROVIDERS.md says what each preset sets and what the provider requires \
              (app passwords, authorization codes).",
    },
    Key {
        table: "accounts",
        name: "host",
        value: "string",
        default: "",
        range: None,
        doc: "Required unless \\fBprovider\\fR is set. The IMAP server's host name or IP \
              address. The server's certificate is verified against it.",
    },
    Key {
        table: "accounts",
        name: "port",
        value: "integer",
        default: "993 with \\fBtls = \"implicit\"\\fR, 143 otherwise",
        range: Some((1, 65535)),
        doc: "The server's port.",
    },
    Key {
        table: "accounts",
        name: "tls",
        value: "\"implicit\" | \"starttls\" | \"none\"",
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
        value: "path",
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
        value: "string",
        default: "",
        range: None,
        doc: "Required. The login name.",
    },
    Key {
        table: "accounts",
        name: "password",
        value: "string",
        default: "",
        range: None,
        doc: "The password. \
              Exactly one of \\fBpassword\\fR and \\fBpassword_command\\fR must be set. \
              Providers that use two\\-factor login (Gmail, Outlook) need an app password.",
    },
    Key {
        table: "accounts",
        name: "password_command",
        value: "array of strings",
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
        value: "array of strings or tables",
        default: "[\"INBOX\"]",
        range: None,
        doc: "The mailboxes to watch, named as the server names them (with its hierarchy \
              separator, e.g. \\fB\"Archive/2024\"\\fR or \\fB\"INBOX.Lists\"\\fR), in UTF\\-8: \
              names with non\\-ASCII characters are encoded for the server (modified UTF\\-7) \
              automatically. \
              Each gets its own connection. \
              Names must not be empty, repeated or contain line breaks; \
              \\fBINBOX\\fR is case\\-insensitive, so \\fB\"Inbox\"\\fR repeats it. \
              An entry can also be a table, \\fB{ name = \"Lists\", notify = false }\\fR, whose \
              \\fBnotify\\fR overrides the account's for that mailbox.",
    },
    Key {
        table: "accounts",
        name: "idle_refresh_secs",
        value: "integer",
        default: "1500",
        range: Some((10, 1740)),
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
        value: "integer",
        default: "125",
        range: Some((5, 1740)),
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
        value: "integer",
        default: "120",
        range: Some((1, 86400)),
        doc: "For a server that does not offer IDLE: check for new mail this often, in \
              seconds.",
    },
    Key {
        table: "accounts",
        name: "reconnect_max_secs",
        value: "integer",
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
        name: "timeout_secs",
        value: "integer",
        default: "30",
        range: Some((1, 600)),
        doc: "How long the server may take to answer a command, in seconds.",
    },
    Key {
        table: "accounts",
        name: "catch_up_max",
        value: "integer",
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
        value: "array of strings",
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
        value: "string",
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
        value: "boolean",
        default: "true",
        range: None,
        doc: "An escape hatch, not a setting: \\fBfalse\\fR skips the certificate and host \
              name checks, so anyone on the path can read the password. Logged as a warning at \
              every connect. Use \\fBca_file\\fR for a self-signed server instead.",
    },
    Key {
        table: "accounts",
        name: "allow_plaintext_auth",
        value: "boolean",
        default: "false",
        range: None,
        doc: "With \\fBtls = \"none\"\\fR, send the password unencrypted to a host that is \
              not this machine anyway.",
    },
    Key {
        table: "accounts",
        name: "notify",
        value: "boolean",
        default: "true",
        range: None,
        doc: "Show desktop notifications for this account's mail; syslog lines and hooks \
              happen either way. \
              A mailbox's own \\fBnotify\\fR (see \\fBmailboxes\\fR) overrides it.",
    },
    Key {
        table: "accounts",
        name: "show_sender",
        value: "boolean",
        default: "true",
        range: None,
        doc: "Privacy: with false, notifications leave out who the mail is from and say \
              \"New mail in \\fIaccount\\fR/\\fImailbox\\fR\" instead. \
              Syslog lines are not affected.",
    },
    Key {
        table: "accounts",
        name: "show_subject",
        value: "boolean",
        default: "true",
        range: None,
        doc: "Privacy: with false, notifications leave out the subject. \
              Syslog lines are not affected.",
    },
    Key {
        table: "accounts",
        name: "on_new_mail",
        value: "array of strings",
        default: "the one in \\fB[hooks]\\fR",
        range: None,
        doc: "This account's own \\fBon_new_mail\\fR hook (see \\fB[hooks]\\fR).",
    },
    Key {
        table: "accounts",
        name: "on_new_mail_post",
        value: "array of strings",
        default: "the one in \\fB[hooks]\\fR",
        range: None,
        doc: "This account's own \\fBon_new_mail_post\\fR hook (see \\fB[hooks]\\fR).",
    },
    Key {
        table: "accounts",
        name: "hook_debounce_ms",
        value: "integer",
        default: "the one in \\fB[hooks]\\fR",
        range: Some((0, 600_000)),
        doc: "This account's own \\fBhook_debounce_ms\\fR (see \\fB[hooks]\\fR).",
    },
    Key {
        table: "accounts",
        name: "hook_timeout_secs",
        value: "integer",
        default: "the one in \\fB[hooks]\\fR",
        range: Some((1, 86400)),
        doc: "This account's own \\fBhook_timeout_secs\\fR (see \\fB[hooks]\\fR).",
    },
    Key {
        table: "notifications",
        name: "enabled",
        value: "boolean",
        default: "true",
        range: None,
        doc: "Show desktop notifications through \\fBorg.freedesktop.Notifications\\fR on \
              the session bus.",
    },
    Key {
        table: "notifications",
        name: "summary_threshold",
        value: "integer",
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
        value: "integer",
        default: "10",
        range: Some((0, 3600)),
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
        value: "\"low\" | \"normal\" | \"critical\"",
        default: "\"normal\"",
        range: None,
        doc: "The urgency the notification daemon is told; many show \"critical\" ones until \
              they are dismissed.",
    },
    Key {
        table: "notifications",
        name: "icon",
        value: "string",
        default: "\"mail\\-unread\"",
        range: None,
        doc: "An icon name from the icon theme, or the path of an image file.",
    },
    Key {
        table: "notifications",
        name: "open_command",
        value: "array of strings",
        default: "none",
        range: None,
        doc: "A program and its arguments, run without a shell when a notification is \
              clicked or its \\fBOpen\\fR button is pressed, e.g. \\fB[\"thunderbird\"]\\fR. \
              Without it, notifications have no \\fBOpen\\fR button. \
              A notification for a single message also has a \\fBMark as read\\fR button.",
    },
    Key {
        table: "syslog",
        name: "enabled",
        value: "boolean",
        default: "true",
        range: None,
        doc: "Write one line per new message (level info) and one per connection problem \
              (level warning) to syslog.",
    },
    Key {
        table: "syslog",
        name: "address",
        value: "string",
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
        value: "string",
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
        value: "array of strings",
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
        value: "array of strings",
        default: "none",
        range: None,
        doc: "A program and its arguments, run without a shell after \\fBon_new_mail\\fR has \
              finished (like goimapnotify's onNewMailPost).",
    },
    Key {
        table: "hooks",
        name: "hook_debounce_ms",
        value: "integer",
        default: "1000",
        range: Some((0, 600_000)),
        doc: "Messages arriving within this many milliseconds of each other make one run \
              of the hooks.",
    },
    Key {
        table: "hooks",
        name: "hook_timeout_secs",
        value: "integer",
        default: "60",
        range: Some((1, 86400)),
        doc: "A hook still running after this many seconds is killed.",
    },
];

/// The tables of the file, in order, with the roff that introduces each.
const TABLES: &[(&str, &str, &str)] = &[
    (
        "accounts",
        "[[accounts]]",
        "One table per IMAP account; at least one is required. \
         Each mailbox of each account gets its own connection and thread.",
    ),
    (
        "notifications",
        "[notifications]",
        "Desktop notifications. The table may be left out.",
    ),
    (
        "syslog",
        "[syslog]",
        "Syslog output. The table may be left out.",
    ),
    (
        "hooks",
        "[hooks]",
        "Commands run for new mail, for every account; an account can set each key for \
         itself. The table may be left out.",
    ),
];

/// mailpushd.toml(5), from [`KEYS`] and [`TABLES`].
fn man_config() -> Vec<u8> {
    let mut page = title_line("MAILPUSHD.TOML", 5, "File Formats");
    page.push_str(MAN5_HEAD);
    for (table, header, intro) in TABLES {
        page.push_str(&format!(
            ".SS \"{header}\"\n{}\n",
            one_sentence_per_line(intro)
        ));
        for key in KEYS.iter().filter(|k| k.table == *table) {
            page.push_str(&format!(
                ".TP\n\\fB{}\\fR = \\fI{}\\fR\n{}\n",
                key.name,
                key.value,
                one_sentence_per_line(key.doc)
            ));
            let mut facts = Vec::new();
            if !key.default.is_empty() {
                facts.push(format!("Default: {}.", key.default));
            }
            match key.range {
                Some((lo, hi)) if hi == i64::from(u32::MAX) => {
                    facts.push(format!("Range: {lo} or more."))
                }
                Some((lo, hi)) => facts.push(format!("Range: {lo} to {hi}.")),
                None => {}
            }
            if !facts.is_empty() {
                page.push_str(&format!(".IP\n{}\n", facts.join("\n")));
            }
        }
    }
    page.push_str(MAN5_TAIL);
    page.into_bytes()
}

/// Roff wants each sentence on its own line (that is how it knows where one ends); the
/// docs above are written as one line each for readability here.
fn one_sentence_per_line(doc: &str) -> String {
    let mut out = String::with_capacity(doc.len());
    let mut rest = doc;
    while let Some(i) = rest.find(". ") {
        let next = rest[i + 2..].chars().next();
        out.push_str(&rest[..i + 1]);
        if next.is_some_and(|c| c.is_ascii_uppercase() || c == '\\') && !rest[..i].ends_with("e.g")
        {
            out.push('\n');
        } else {
            out.push(' ');
        }
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    out
}

const MAN5_HEAD: &str = r#".SH NAME
mailpushd.toml \- configuration file of mailpushd
.SH SYNOPSIS
\fI$XDG_CONFIG_HOME/mailpushd/config.toml\fR
.br
\fI~/.config/mailpushd/config.toml\fR
.SH DESCRIPTION
\fBmailpushd\fR(1) reads its configuration from a TOML file: by default
\fI$XDG_CONFIG_HOME/mailpushd/config.toml\fR, or \fI~/.config/mailpushd/config.toml\fR when
\fBXDG_CONFIG_HOME\fR is unset, or the file given with \fB\-\-config\fR.
.PP
Unknown keys are errors, so a misspelt key is reported rather than ignored.
\fBmailpushd \-\-check\fR validates the file without connecting and lists every problem
at once, as \fIfile\fR:\fIline\fR:\fIcolumn\fR: \fImessage\fR; it exits with status 78 if
there is any.
The daemon exits with the same status if the file is unusable when it starts.
.PP
A running \fBmailpushd\fR reads the file again when it changes and on \fBSIGHUP\fR
(\fBsystemctl \-\-user reload mailpushd\fR).
Watchers whose account settings did not change keep their connections; the others
reconnect, stop or start.
A file with problems is reported and the running configuration is kept.
.PP
The file may hold passwords: keep it private (\fBchmod 600\fR), or use
\fBpassword_command\fR.
.SH KEYS
"#;

const MAN5_TAIL: &str = r#".SH EXAMPLE
Two accounts: one with implicit TLS and a password in the file, one with STARTTLS, its
password from \fBpass\fR(1) and two mailboxes; syslog to the \fBlocal3\fR facility.
.PP
.RS
.EX
[[accounts]]
name = "work"
host = "imap.example.com"
username = "me@example.com"
password = "app\-password\-here"

[[accounts]]
name = "home"
host = "mail.example.net"
tls = "starttls"
username = "me"
password_command = ["pass", "show", "mail/home"]
mailboxes = ["INBOX", "Lists/rust"]

[syslog]
facility = "local3"
.EE
.RE
.PP
\fI/usr/share/doc/mailpushd/config.example.toml\fR documents every key in comments.
.SH SEE ALSO
\fBmailpushd\fR(1),
\fBsyslog\fR(3)
.PP
TOML: \fIhttps://toml.io/\fR
"#;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::config;

    fn render(kind: Kind) -> String {
        let mut out = Vec::new();
        write(kind, &mut out).expect("render");
        String::from_utf8(out).expect("UTF-8")
    }

    fn documented(table: &str) -> BTreeSet<&'static str> {
        KEYS.iter()
            .filter(|k| k.table == table)
            .map(|k| k.name)
            .collect()
    }

    const EXAMPLE: &str = include_str!("../config.example.toml");

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
        let page = render(Kind::ManConfig);
        for (table, key) in &keys {
            assert!(
                documented(table).contains(key.as_str()),
                "config.example.toml has [{table}] {key}, which mailpushd.toml(5) lacks: \
                 add it to KEYS in src/generate.rs"
            );
            assert!(page.contains(&format!(".TP\n\\fB{key}\\fR = ")), "{key}");
        }
    }

    #[test]
    fn example_config_is_valid() {
        config::parse(EXAMPLE, Path::new("/")).expect("config.example.toml parses");
    }

    /// The field names serde accepts in `table`, read from its "unknown field" error, so a
    /// field added to the config structs fails this test until it is documented.
    fn accepted_fields(table: &str) -> BTreeSet<String> {
        let account = "[[accounts]]\nname='a'\nhost='h'\nusername='u'\npassword='p'\n";
        let text = match table {
            "" => format!("bogus_key = 1\n{account}"),
            "accounts" => format!("{account}bogus_key = 1\n"),
            other => format!("{account}[{other}]\nbogus_key = 1\n"),
        };
        let problems = config::parse(&text, Path::new("/")).expect_err("unknown key");
        let message = &problems[0].message;
        let expected = message
            .split_once("expected")
            .unwrap_or_else(|| panic!("no field list in {message:?}"))
            .1;
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_field_serde_accepts_is_documented() {
        let tables: BTreeSet<String> = TABLES.iter().map(|t| t.0.to_owned()).collect();
        assert_eq!(
            accepted_fields(""),
            tables,
            "a new table needs an entry in TABLES"
        );
        for (table, ..) in TABLES {
            let fields = accepted_fields(table);
            let docs: BTreeSet<String> = documented(table).into_iter().map(Into::into).collect();
            assert_eq!(
                fields, docs,
                "[{table}]: the keys the parser accepts (left) must be the ones documented in \
                 KEYS (right): document a new key there, with its default and range"
            );
        }
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
    fn generate_is_hidden_from_help_and_parses() {
        let help = Cli::command().render_long_help().to_string();
        assert!(!help.contains("generate"), "{help}");
        for (arg, kind) in [
            ("man", Kind::Man),
            ("man-config", Kind::ManConfig),
            ("complete-bash", Kind::CompleteBash),
            ("complete-zsh", Kind::CompleteZsh),
            ("complete-fish", Kind::CompleteFish),
        ] {
            let cli = Cli::try_parse_from(["mailpushd", "--generate", arg]).unwrap();
            assert_eq!(cli.generate, Some(kind));
        }
        assert!(Cli::try_parse_from(["mailpushd", "--generate", "man", "--check"]).is_err());
    }

    #[test]
    fn man_page_has_clap_options_and_written_sections() {
        let page = render(Kind::Man);
        assert_eq!(page.matches(ROFF_PREAMBLE).count(), 1);
        assert!(page.starts_with(ROFF_PREAMBLE));
        for section in [
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH DESCRIPTION",
            ".SH OPTIONS",
            ".SH SIGNALS",
            ".SH EXIT STATUS",
            ".SH ENVIRONMENT",
            ".SH FILES",
            ".SH SEE ALSO",
        ] {
            assert_eq!(page.matches(section).count(), 1, "{section}");
        }
        // Every visible option comes from clap; the hidden one stays hidden.
        for arg in Cli::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let shown = page.contains(&format!("\\-\\-{}", long.replace('-', "\\-")));
            assert_eq!(shown, !arg.is_hide_set(), "--{long}");
        }
        for var in [
            "XDG_CONFIG_HOME",
            "XDG_STATE_HOME",
            "DBUS_SESSION_BUS_ADDRESS",
            "NOTIFY_SOCKET",
            "JOURNAL_STREAM",
        ] {
            assert!(page.contains(&format!(".TP\n\\fB{var}\\fR")), "{var}");
        }
        assert!(page.contains("\\fBmailpushd.toml\\fR(5)"));
    }

    #[test]
    fn man_page_example_is_valid() {
        let page = render(Kind::ManConfig);
        let example = page
            .split_once(".EX\n")
            .and_then(|(_, rest)| rest.split_once(".EE\n"))
            .expect("an example")
            .0
            .replace("\\-", "-");
        let c = config::parse(&example, Path::new("/")).expect("the example parses");
        assert_eq!(c.accounts.len(), 2);
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(iso_date(951_782_400), "2000-02-29");
        assert_eq!(iso_date(1_764_028_800), "2025-11-25");
        assert_eq!(iso_date(1_764_028_799), "2025-11-24");
    }

    #[test]
    fn completions_offer_every_visible_option_and_no_hidden_one() {
        let full = Cli::command();
        // visible_command() copies arguments only; a subcommand would need copying too.
        assert!(!full.has_subcommands());
        for kind in [Kind::CompleteBash, Kind::CompleteZsh, Kind::CompleteFish] {
            let script = render(kind);
            for arg in full.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                let offered = match kind {
                    Kind::CompleteFish => script.contains(&format!(" -l {long} ")),
                    _ => script.contains(&format!("--{long}")),
                };
                assert_eq!(offered, !arg.is_hide_set(), "{kind:?}: --{long}");
            }
            assert!(script.contains("version"), "{kind:?}");
        }
        assert!(render(Kind::CompleteZsh).starts_with("#compdef mailpushd"));
    }
}
