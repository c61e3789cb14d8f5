//! Command-line arguments, parsed by clap, and the default config path.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use log::LevelFilter;

/// Push mail for Linux desktops: watches IMAP mailboxes with IDLE and shows a desktop
/// notification and a syslog line the moment new mail arrives.
#[derive(Debug, Parser)]
#[command(name = "mailpushd", version, about, long_about = None)]
pub struct Cli {
    /// Config file [default: $XDG_CONFIG_HOME/mailpushd/config.toml, else
    /// ~/.config/mailpushd/config.toml]
    #[arg(short, long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Validate the config file without connecting; print every problem as
    /// file:line:column: message and exit 0 if valid, 78 if not
    #[arg(long)]
    pub check: bool,

    /// With --check: also log in to every account and open every mailbox, printing one
    /// line each: ok (with the capabilities that matter) or why it failed
    #[arg(long, requires = "check")]
    pub connect: bool,

    /// More log output (-v debug, -vv trace)
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with_all = ["quiet", "log_level"])]
    pub verbose: u8,

    /// Only warnings and errors
    #[arg(short, long, conflicts_with = "log_level")]
    pub quiet: bool,

    /// Log level: error, warn, info, debug or trace [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<LevelFilter>,

    /// Write a man page or a shell completion script to stdout and exit (for packagers;
    /// hidden from --help, see src/generate.rs)
    #[arg(long, value_enum, value_name = "KIND", hide = true, exclusive = true)]
    pub generate: Option<GenerateKind>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Commands that talk to the running daemon over its D-Bus interface
/// (org.mailpushd.Mailpushd on the session bus); without one, mailpushd runs the daemon.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every watched mailbox's unread count and state, from the running daemon;
    /// exit 1 with one line on stderr if none runs
    Status(StatusArgs),
    /// Say that you have seen the new mail: the "new" counts (and waybar's "new" class) go
    /// to 0, for one mailbox, one account or all; flags on the server are not touched
    MarkSeen {
        /// Only this account [default: every account]
        account: Option<String>,
        /// Only this mailbox of the account [default: every mailbox]
        mailbox: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A JSON array of {account, mailbox, unread, new, state, last_error}
    #[arg(long, conflicts_with_all = ["waybar", "total"])]
    pub json: bool,
    /// waybar's custom-module object {text, tooltip, class, alt} (return-type: json)
    #[arg(long, conflicts_with = "total")]
    pub waybar: bool,
    /// One number: the sum of the known unread counts (empty while none is known), for
    /// polybar, i3blocks and scripts
    #[arg(long)]
    pub total: bool,
    /// Print again on every change, as the daemon signals it (no polling, no interval),
    /// one line each with --json, --waybar or --total; survives a restart of the daemon
    #[arg(long)]
    pub follow: bool,
}

impl Cli {
    pub fn level(&self) -> LevelFilter {
        if let Some(l) = self.log_level {
            return l;
        }
        match (self.quiet, self.verbose) {
            (true, _) => LevelFilter::Warn,
            (false, 0) => LevelFilter::Info,
            (false, 1) => LevelFilter::Debug,
            _ => LevelFilter::Trace,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(|| {
            default_config_path(
                std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from),
                std::env::var_os("HOME").map(PathBuf::from),
            )
        })
    }
}

/// `$XDG_CONFIG_HOME/mailpushd/config.toml`, else `~/.config/mailpushd/config.toml`. The
/// XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
fn default_config_path(xdg: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
    let base = xdg
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(".config")))
        .unwrap_or_else(|| PathBuf::from(".config"));
    base.join("mailpushd").join("config.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_follows_xdg() {
        let p = |x: Option<&str>, h: Option<&str>| {
            default_config_path(x.map(PathBuf::from), h.map(PathBuf::from))
        };
        assert_eq!(
            p(Some("/x"), Some("/home/u")),
            PathBuf::from("/x/mailpushd/config.toml")
        );
        assert_eq!(
            p(Some("rel"), Some("/home/u")),
            PathBuf::from("/home/u/.config/mailpushd/config.toml")
        );
        assert_eq!(
            p(None, Some("/home/u")),
            PathBuf::from("/home/u/.config/mailpushd/config.toml")
        );
    }

    #[test]
    fn verbosity() {
        let cli = |args: &[&str]| Cli::parse_from([&["mailpushd"], args].concat());
        assert_eq!(cli(&[]).level(), LevelFilter::Info);
        assert_eq!(cli(&["-v"]).level(), LevelFilter::Debug);
        assert_eq!(cli(&["-vv"]).level(), LevelFilter::Trace);
        assert_eq!(cli(&["-q"]).level(), LevelFilter::Warn);
        assert_eq!(cli(&["--log-level", "error"]).level(), LevelFilter::Error);
        assert!(Cli::try_parse_from(["mailpushd", "-v", "-q"]).is_err());
    }

    #[test]
    fn status_command() {
        let cli = Cli::parse_from(["mailpushd", "status", "--waybar", "--follow"]);
        match cli.command {
            Some(Command::Status(a)) => assert!(a.waybar && a.follow && !a.json),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["mailpushd", "status", "--json", "--waybar"]).is_err());
        assert!(Cli::try_parse_from(["mailpushd", "status", "--total", "--waybar"]).is_err());
        let cli = Cli::parse_from(["mailpushd", "mark-seen", "work"]);
        assert!(matches!(
            cli.command,
            Some(Command::MarkSeen { account: Some(ref a), mailbox: None }) if a == "work"
        ));
    }
}

/// What `--generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenerateKind {
    /// mailpushd(1), roff
    Man,
    /// mailpushd.toml(5), roff
    ManConfig,
    /// bash completion script
    CompleteBash,
    /// zsh completion script (`_mailpushd`)
    CompleteZsh,
    /// fish completion script
    CompleteFish,
}
