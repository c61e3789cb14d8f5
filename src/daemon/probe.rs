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
        let mut offered = None;
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
                    offered = Some(caps);
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
        if let Some(caps) = offered {
            out.push(Outcome {
                ok: true,
                line: connections_line(&account.name, account.mailboxes.len(), caps),
            });
        }
    }
    out
}

/// What watching an account costs in connections, and whether its server offers NOTIFY:
/// "      work: 3 connections, one per mailbox (IDLE); the server offers NOTIFY (RFC 5465),
/// which mailpushd does not use yet". Servers cap connections per user (Dovecot 10 per user
/// and IP, Gmail 15), and every mail client of the account shares the cap.
fn connections_line(account: &str, mailboxes: usize, caps: imap::Capabilities) -> String {
    let how = if caps.idle { "IDLE" } else { "polling" };
    let plural = if mailboxes == 1 { "" } else { "s" };
    let notify = if caps.notify {
        "the server offers NOTIFY (RFC 5465), which mailpushd does not use yet"
    } else {
        "no NOTIFY on this server"
    };
    format!("      {account}: {mailboxes} connection{plural}, one per mailbox ({how}); {notify}")
}
