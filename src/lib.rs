//! mailpushd: push mail for Linux desktops. Watches IMAP mailboxes with IDLE (or polling
//! where a server has none) and announces each new message once, as a desktop notification
//! and a syslog line.
//!
//! The binary is a thin wrapper around [`run`]; see shared/DESIGN.md for the architecture.

pub mod announce;
pub mod bus;
pub mod child;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod event;
pub mod generate;
pub mod imap;
pub mod logging;
pub mod mailbox;
pub mod status;

use std::process::ExitCode;

use anyhow::Context;

/// sysexits.h EX_CONFIG: the configuration is unusable. systemd's unit does not restart on it.
pub const EX_CONFIG: u8 = 78;

/// sysexits.h EX_TEMPFAIL: another mailpushd already runs on the same state directory
/// ([`daemon::instance`]). systemd's unit does not restart on it either: the other one is running.
pub const EX_ALREADY_RUNNING: u8 = 75;

/// Runs the command line: `--check`, or the daemon in the foreground.
pub fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    if let Some(kind) = cli.generate {
        generate::write(kind, &mut std::io::stdout().lock()).context("writing to stdout")?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(command) = cli.command {
        return bus_command(command);
    }
    logging::init(cli.level());
    let path = cli.config_path();

    if cli.check {
        return Ok(match config::load(&path) {
            Ok(cfg) => {
                if let Some(w) = config::permission_warning(&path, &cfg) {
                    println!("warning: {w}");
                }
                for w in config::duplicate_watch_warnings(&cfg) {
                    println!("warning: {w}");
                }
                let mailboxes: usize = cfg.accounts.iter().map(|a| a.mailboxes.len()).sum();
                println!(
                    "{}: ok ({} account(s), {} mailbox(es))",
                    path.display(),
                    cfg.accounts.len(),
                    mailboxes
                );
                if cli.connect {
                    let outcomes = daemon::probe::probe(&cfg);
                    for o in &outcomes {
                        println!("{}", o.line);
                    }
                    if outcomes.iter().any(|o| !o.ok) {
                        return Ok(ExitCode::FAILURE);
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("{e}");
                ExitCode::from(EX_CONFIG)
            }
        });
    }

    let cfg = match config::load(&path) {
        Ok(cfg) => {
            if let Some(w) = config::permission_warning(&path, &cfg) {
                log::warn!("{w}");
            }
            for w in config::duplicate_watch_warnings(&cfg) {
                log::warn!("{w}");
            }
            cfg
        }
        Err(e) => {
            // One record per problem, so that each is at error level in the journal.
            for line in e.log_lines() {
                log::error!("{line}");
            }
            return Ok(ExitCode::from(EX_CONFIG));
        }
    };
    let store = mailbox::state::StateStore::new(mailbox::state::StateStore::default_dir(
        std::env::var_os("XDG_STATE_HOME").map(Into::into),
        std::env::var_os("HOME").map(Into::into),
    ));
    log::debug!("state directory: {}", store.dir().display());
    // Held until the supervisor returns: every output and state write happens under it.
    let _lock = match daemon::instance::InstanceLock::acquire(store.dir()) {
        Ok(lock) => lock,
        Err(e @ daemon::instance::InstanceError::Running { .. }) => {
            log::error!("{e}");
            return Ok(ExitCode::from(EX_ALREADY_RUNNING));
        }
        Err(e) => return Err(e).context("taking the single-instance lock"),
    };
    daemon::supervisor::run(path, cfg, store).context("starting the supervisor")?;
    Ok(ExitCode::SUCCESS)
}

/// `mailpushd status` and `mailpushd mark-seen`: the running daemon's D-Bus interface.
/// No daemon (or no session bus) is an error: one line, exit 1.
fn bus_command(command: cli::Command) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    match command {
        cli::Command::Status(args) => {
            let render = |mailboxes: Option<&[bus::Mailbox]>| match mailboxes {
                Some(m) if args.waybar => bus::format::waybar(m) + "\n",
                Some(m) if args.json => bus::format::json(m) + "\n",
                Some(m) if args.total => bus::format::total(m) + "\n",
                Some(m) => bus::format::table(m),
                None if args.waybar => bus::format::waybar_stopped() + "\n",
                None if args.json => "[]\n".to_owned(),
                None if args.total => "\n".to_owned(),
                None => "mailpushd is not running\n".to_owned(),
            };
            if args.follow {
                bus::client::follow(|mailboxes| {
                    // One write and a flush per change: waybar reads lines as they come.
                    let mut out = std::io::stdout().lock();
                    out.write_all(render(mailboxes).as_bytes())?;
                    out.flush()
                })?;
            } else {
                let mailboxes = bus::client::mailboxes()?;
                let mut out = std::io::stdout().lock();
                match out
                    .write_all(render(Some(&mailboxes)).as_bytes())
                    .and_then(|()| out.flush())
                {
                    // `mailpushd status | head -1`: the reader has what it wanted.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                    other => other.context("writing to stdout")?,
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::MarkSeen { account, mailbox } => {
            let matched = bus::client::mark_seen(
                account.as_deref().unwrap_or(""),
                mailbox.as_deref().unwrap_or(""),
            )?;
            if matched == 0 {
                eprintln!("mailpushd: no watched mailbox matches");
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
