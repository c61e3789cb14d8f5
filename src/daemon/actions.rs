//! What popup buttons do: run the user's `open_command` (argv, never a shell), or mark a
//! message as read on the server. Both run off the supervisor's thread, so a slow mail
//! client or server never delays anything else.

use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::config::Account;
use crate::imap::{self, mutf7};
use crate::mailbox::credentials;

/// Starts `argv` detached from our stdio, and reaps it on a thread of its own (no zombies).
pub fn open(argv: &[String]) {
    let Some((program, args)) = argv.split_first() else {
        return;
    };
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_remove("NOTIFY_SOCKET")
        .spawn()
    {
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
