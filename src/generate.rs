//! Man pages and shell completions, written by the binary itself: `mailpushd --generate
//! KIND` (a hidden option) prints one to stdout. mailpushd(1)'s SYNOPSIS and OPTIONS and the
//! completions come from the same clap definitions the binary parses with, so they cannot
//! drift from the real options; packagers run it at build time (packaging/README.md).
//!
//! mailpushd.toml(5) is rendered from `config::keys` ([`KEYS`] and [`TABLES`]), the one
//! description of every config key, whose tests hold it to what `config::parse` does.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;

use crate::cli::{Cli, GenerateKind as Kind};
use crate::config::keys::{KEYS, TABLES};

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
        .args(full.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(full.get_subcommands().cloned());
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
\fIaccount\fR/\fImailbox\fR as its body (application name \fBmailpushd\fR, desktop entry
\fBmailpushd\fR, category \fBemail.arrived\fR, icon \fBmail\-unread\fR, sound
\fBmessage\-new\-email\fR).
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
starts your mail client, with the activation token the notification server gave for the
click in \fBXDG_ACTIVATION_TOKEN\fR (and \fBDESKTOP_STARTUP_ID\fR) so that it may take
focus; \fBMark as read\fR marks the message as read on the server.
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

const MAN1_REST: &str = r#".SH COMMANDS
These talk to the running daemon over its D\-Bus interface (see \fBD\-BUS INTERFACE\fR);
with no daemon running they print one line on standard error and exit 1.
.TP
\fBmailpushd status\fR [\fB\-\-json\fR | \fB\-\-waybar\fR | \fB\-\-total\fR] [\fB\-\-follow\fR]
Every watched mailbox's unread count, how many of those were announced since you last
looked (\fInew\fR), its state (connecting, idling, polling, retrying) and its error while
it fails: a table; with \fB\-\-json\fR a JSON array of
{account, mailbox, unread, new, state, last_error}; with \fB\-\-waybar\fR the object of a
waybar custom module with \fBreturn\-type\fR json, {text, tooltip, class, alt}, where text
is the total unread count and class and alt are new, unread, read or unknown (class also
holds error while a mailbox fails); with \fB\-\-total\fR the total alone.
With \fB\-\-follow\fR it prints again, one line each, on every change the daemon signals
(no timer), and while the daemon is stopped (a waybar object with class stopped, an empty
line, or []) until it is back.
.TP
\fBmailpushd mark\-seen\fR [\fIACCOUNT\fR [\fIMAILBOX\fR]]
You have looked: the \fInew\fR counts go to 0, for one mailbox, an account or everything.
Nothing is marked read on the server.
.SH D-BUS INTERFACE
\fBmailpushd\fR owns \fBorg.mailpushd.Mailpushd\fR on the session bus and serves the
interface \fBorg.mailpushd.Mailpushd1\fR at \fB/org/mailpushd/Mailpushd\fR
(introspectable):
.TP
property \fBMailboxes\fR, \fBaa{sv}\fR
One dictionary per watched mailbox: \fBaccount\fR (s), \fBmailbox\fR (s), \fBunread\fR (u;
absent until known), \fBnew\fR (u), \fBstate\fR (s: connecting, idling, polling,
retrying), \fBlast_error\fR (s; only while failing).
Unread counts start from SEARCH UNSEEN or STATUS UNSEEN and follow what the server reports
(EXISTS, EXPUNGE, FETCH FLAGS, NOTIFY), so mail read or deleted by another client is
counted as it happens.
.TP
property \fBUnread\fR, \fBu\fR
The sum of the known unread counts.
.TP
property \fBVersion\fR, \fBs\fR
The version of \fBmailpushd\fR.
.TP
method \fBMarkSeenByUser\fR(\fBs\fR account, \fBs\fR mailbox) \(-> \fBu\fR matched
Sets \fInew\fR to 0 (an empty string matches every account or mailbox); flags on the
server are not touched.
.TP
method \fBReload\fR()
Reads the configuration file again, as \fBSIGHUP\fR.
.TP
signal \fBChanged\fR(\fBaa{sv}\fR mailboxes)
Sent after a change to \fBMailboxes\fR, with its new value (changes within 0.1 s of each
other come as one);
\fBorg.freedesktop.DBus.Properties.PropertiesChanged\fR is sent as well.
.PP
Without a session bus, or with the name owned by another program, mail is watched as usual
and the log says once that counts are not published.
.SH SIGNALS
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
.TP
\fBXDG_ACTIVATION_TOKEN\fR, \fBDESKTOP_STARTUP_ID\fR
Not read: \fBopen_command\fR gets them set to the token of the click that started it, or
removed when the notification server gave none, so a token \fBmailpushd\fR inherited is
never passed on.
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
\fI/usr/share/applications/mailpushd.desktop\fR
The desktop entry that notifications name (\fBdesktop\-entry\fR hint), so that desktops
can list \fBmailpushd\fR in their notification settings and keep its notifications'
history; hidden from application menus.
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

/// mailpushd.toml(5), from [`KEYS`] and [`TABLES`].
fn man_config() -> Vec<u8> {
    let mut page = title_line("MAILPUSHD.TOML", 5, "File Formats");
    page.push_str(MAN5_HEAD);
    for table in TABLES {
        page.push_str(&format!(
            ".SS \"{}\"\n{}\n",
            table.header,
            one_sentence_per_line(table.doc)
        ));
        for key in KEYS.iter().filter(|k| k.table == table.name) {
            page.push_str(&format!(
                ".TP\n\\fB{}\\fR = \\fI{}\\fR\n{}\n",
                key.name,
                key.kind.roff(),
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
Unknown keys are errors, so a misspelt key is reported rather than ignored, with the
nearest known key suggested (and likewise for providers and other fixed values).
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
    use std::path::Path;

    use clap::Parser;

    use super::*;
    use crate::config;

    fn render(kind: Kind) -> String {
        let mut out = Vec::new();
        write(kind, &mut out).expect("render");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn the_config_page_documents_every_key() {
        let page = render(Kind::ManConfig);
        for key in KEYS {
            assert!(
                page.contains(&format!(
                    ".TP\n\\fB{}\\fR = \\fI{}\\fR",
                    key.name,
                    key.kind.roff()
                )),
                "{}",
                key.name
            );
        }
        for table in TABLES {
            assert!(
                page.contains(&format!(".SS \"{}\"", table.header)),
                "{}",
                table.header
            );
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
            ".SH COMMANDS",
            ".SH D-BUS INTERFACE",
            ".SH SIGNALS",
            ".SH EXIT STATUS",
            ".SH ENVIRONMENT",
            ".SH FILES",
            ".SH SEE ALSO",
        ] {
            assert_eq!(page.matches(section).count(), 1, "{section}");
        }
        // Every command and its options are described.
        for sub in Cli::command().get_subcommands() {
            let name = sub.get_name().replace('-', "\\-");
            assert!(
                page.contains(&format!("\\fBmailpushd {name}\\fR")),
                "{name}"
            );
            for arg in sub.get_arguments() {
                if let Some(long) = arg.get_long() {
                    assert!(page.contains(&format!("\\fB\\-\\-{long}\\fR")), "{long}");
                }
            }
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
        for kind in [Kind::CompleteBash, Kind::CompleteZsh, Kind::CompleteFish] {
            let script = render(kind);
            // The subcommands and their options are copied whole (none is hidden).
            for sub in full.get_subcommands() {
                assert!(
                    script.contains(sub.get_name()),
                    "{kind:?}: {}",
                    sub.get_name()
                );
                for arg in sub.get_arguments() {
                    if let Some(long) = arg.get_long() {
                        assert!(script.contains(long), "{kind:?}: {long}");
                    }
                }
            }
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
