//! `mailpushd --check --connect`: logs in to every account and opens every mailbox once,
//! printing one line each, so a user can see at a glance what works and why what does not.
//! The first thing to run when something is wrong.

use crate::config::Config;
use crate::imap;
use crate::imap::mutf7;
use crate::mailbox::credentials;

/// One line of the report.
pub struct Outcome {
    pub ok: bool,
    pub line: String,
}

/// Probes every (account, mailbox) in turn. Sequential on purpose: it is a diagnostic, and
/// one connection at a time is what a server's per-user limits always allow.
pub fn probe(config: &Config) -> Vec<Outcome> {
    let mut out = Vec::new();
    for account in &config.accounts {
        for mailbox in &account.mailboxes {
            let key = format!("{}/{}", account.name, mailbox);
            let result = credentials::resolve(&account.secret)
                .map_err(|e| e.to_string())
                .and_then(|password| {
                    imap::connect(account, &password, Default::default(), |_| {})
                        .map_err(|e| e.to_string())
                })
                .and_then(|mut conn| {
                    let status = conn
                        .examine(&mutf7::encode(mailbox), mailbox)
                        .map_err(|e| e.to_string())?;
                    let caps = conn.capabilities;
                    conn.logout();
                    Ok((caps, status))
                });
            out.push(match result {
                Ok((caps, status)) => {
                    let watch = if caps.idle {
                        "IDLE".to_owned()
                    } else {
                        format!(
                            "no IDLE: will poll every {}s",
                            account.poll_interval.as_secs()
                        )
                    };
                    let id = if caps.id { ", ID" } else { "" };
                    Outcome {
                        ok: true,
                        line: format!(
                            "ok    {key}: {}:{} {}, {watch}{id}; {} message(s)",
                            account.host, account.port, account.tls, status.exists
                        ),
                    }
                }
                Err(e) => Outcome {
                    ok: false,
                    line: format!(
                        "FAIL  {key}: {}:{}: {}",
                        account.host,
                        account.port,
                        crate::decode::one_line(&e)
                    ),
                },
            });
        }
    }
    out
}
