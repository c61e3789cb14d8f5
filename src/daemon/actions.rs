//! What popup buttons do: run the user's `open_command` (argv, never a shell), or mark a
//! message as read on the server. Both run off the supervisor's thread, so a slow mail
//! client or server never delays anything else.

use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::config::Account;
use crate::imap::{self, mutf7};
use crate::mailbox::credentials;

pub use crate::child::ACTIVATION_ENV;

/// Starts `argv` detached from our stdio, and reaps it on a thread of its own (no zombies).
/// With `activation_token` (from the click that asked for this, see
/// src/announce/activation.rs), the program gets it in [`ACTIVATION_ENV`] so that it may
/// take focus; without, those variables are removed, so a token the daemon itself was
/// started with (long spent) never reaches it. Only the child's environment is touched.
pub fn open(argv: &[String], activation_token: Option<&str>) {
    let Some(mut command) = open_command(argv, activation_token) else {
        return;
    };
    let program = &argv[0];
    match command.spawn() {
        Ok(mut child) => {
            log::info!("open_command {program:?} started");
            let _ = std::thread::Builder::new()
                .name("open-command".into())
                .spawn(move || {
                    let _ = child.wait();
                });
        }
        Err(e) => log::warn!("open_command {program:?} could not be started: {e}"),
    }
}

/// The command [`open`] runs: `argv` as it is (no shell), our stdio and systemd's notify
/// socket withheld, the activation variables set or removed. `None` for an empty `argv`
/// (config validation refuses one; this keeps a bug from panicking).
fn open_command(argv: &[String], activation_token: Option<&str>) -> Option<Command> {
    let (program, args) = argv.split_first()?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    crate::child::withhold_env(&mut command);
    if let Some(token) = activation_token {
        for name in ACTIVATION_ENV {
            command.env(name, token);
        }
    }
    Some(command)
}

/// Sets `\Seen` on one message from a connection of its own.
pub fn mark_read(account: Arc<Account>, mailbox: String, uid: u32) {
    let name = format!("mark-read/{}", account.name);
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let key = format!("{}/{}", account.name, mailbox);
        let result = credentials::resolve(&account.secret)
            .map_err(|e| e.to_string())
            .and_then(|pw| {
                imap::connect(&account, &pw, Default::default(), |_| {}).map_err(|e| e.to_string())
            })
            .and_then(|mut conn| {
                let r = conn
                    .mark_seen(&mutf7::encode(&mailbox), &mailbox, uid)
                    .map_err(|e| e.to_string());
                conn.logout();
                r
            });
        match result {
            Ok(()) => log::info!("{key}: uid {uid} marked as read"),
            Err(e) => log::warn!("{key}: could not mark uid {uid} as read: {e}"),
        }
    });
    if let Err(e) = spawned {
        log::warn!("could not mark uid {uid} as read: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn env_of(command: &Command, name: &str) -> Option<Option<String>> {
        command
            .get_envs()
            .find(|(k, _)| *k == OsStr::new(name))
            .map(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
    }

    #[test]
    fn a_token_goes_to_both_variables_of_the_child_only() {
        let argv = vec!["mail-client".to_owned(), "--inbox".to_owned()];
        let c = open_command(&argv, Some("tok-1")).unwrap();
        assert_eq!(c.get_program(), "mail-client");
        assert_eq!(c.get_args().collect::<Vec<_>>(), ["--inbox"]);
        for name in ACTIVATION_ENV {
            assert_eq!(env_of(&c, name), Some(Some("tok-1".to_owned())), "{name}");
        }
        assert_eq!(env_of(&c, "NOTIFY_SOCKET"), Some(None));
    }

    #[test]
    fn without_a_token_inherited_activation_variables_are_removed() {
        let c = open_command(&["mail-client".to_owned()], None).unwrap();
        for name in ACTIVATION_ENV {
            // `Some(None)`: removed from what the child inherits.
            assert_eq!(env_of(&c, name), Some(None), "{name}");
        }
        assert!(open_command(&[], Some("tok")).is_none());
    }
}
