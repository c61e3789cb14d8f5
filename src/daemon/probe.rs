//! `mailpushd --check --connect`: logs in to every account and opens every mailbox once,
//! printing one line each, so a user can see at a glance what works and why what does not.
//! The first thing to run when something is wrong.

use crate::config::{patterns, Config};
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
        let mut mailboxes = account.mailboxes.clone();
        if account.mailboxes.iter().any(|m| patterns::is_pattern(m)) {
            match expand(account) {
                Ok(expanded) => {
                    out.push(Outcome {
                        ok: true,
                        line: format!(
                            "ok    {}: the patterns stand for {} mailbox(es): {}",
                            crate::decode::controls_escaped(&account.name),
                            expanded.len(),
                            names(&expanded)
                        ),
                    });
                    mailboxes = expanded;
                }
                Err(e) => {
                    out.push(Outcome {
                        ok: false,
                        line: format!(
                            "FAIL  {}: listing the patterns: {}",
                            crate::decode::controls_escaped(&account.name),
                            crate::decode::one_line(&e)
                        ),
                    });
                    mailboxes = patterns::expand(&account.mailboxes, &[]);
                }
            }
        }
        for mailbox in &mailboxes {
            let key = crate::status::row_key(&account.name, mailbox);
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
                line: connections_line(account, &mailboxes, caps),
            });
        }
    }
    out
}

/// How the account's mailboxes would be watched, and what that costs in connections
/// (src/daemon/budget.rs), given what the server offers:
///
/// ```text
///       work: NOTIFY yes; at most 5 connections (max_connections), 2 used
///         own connection (IDLE): INBOX
///         shared connection (new mail reported by NOTIFY): Lists, Work
/// ```
///
/// Servers cap connections per user (Dovecot 10 per user and IP, Gmail 15), and every
/// mail client of the account shares the cap.
fn connections_line(
    account: &crate::config::Account,
    mailboxes: &[String],
    caps: imap::Capabilities,
) -> String {
    let notify = caps.notify && caps.idle;
    // Without IDLE, one connection polls every mailbox (as the supervisor does).
    let budget = if caps.idle {
        account.max_connections
    } else {
        1
    };
    let a = super::budget::assign(mailboxes, Some(notify), budget);
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let mut lines = vec![format!(
        "      {}: NOTIFY {}; at most {} connection{} (max_connections), {} used",
        crate::decode::controls_escaped(&account.name),
        if notify { "yes" } else { "no" },
        account.max_connections,
        plural(account.max_connections as usize),
        a.connections()
    )];
    if !a.own.is_empty() {
        let how = if caps.idle { "IDLE" } else { "no IDLE: polled" };
        lines.push(format!(
            "        own connection{} ({how}): {}",
            plural(a.own.len()),
            names(&a.own)
        ));
    }
    if !a.shared.is_empty() {
        let how = if notify {
            "new mail reported by NOTIFY".to_owned()
        } else {
            format!("STATUS every {}s", account.poll_interval.as_secs())
        };
        lines.push(format!(
            "        shared connection ({how}): {}",
            names(&a.shared)
        ));
    }
    lines.join("\n")
}

/// What the account's `mailboxes` stand for, patterns listed (one connection).
fn expand(account: &crate::config::Account) -> Result<Vec<String>, String> {
    let password = credentials::resolve(&account.secret).map_err(|e| e.to_string())?;
    let mut conn =
        imap::connect(account, &password, Default::default(), |_| {}).map_err(|e| e.to_string())?;
    let mut listed = Vec::new();
    for pattern in account.mailboxes.iter().filter(|m| patterns::is_pattern(m)) {
        let listing = conn
            .list(&mutf7::encode(pattern))
            .map_err(|e| e.to_string())?;
        listed.extend(patterns::matching(pattern, listing.listed));
    }
    conn.logout();
    Ok(patterns::expand(&account.mailboxes, &listed))
}

/// Mailbox names as one line each: names come from the config, which may hold anything
/// but a line break; the terminal sees no control character either.
fn names(list: &[String]) -> String {
    list.iter()
        .map(|m| crate::decode::controls_escaped(m))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(mailboxes: &str, extra: &str) -> crate::config::Account {
        let text = format!(
            "[[accounts]]\nname = \"work\"\nhost = \"h\"\nusername = \"u\"\n\
             password_command = [\"true\"]\nmailboxes = [{mailboxes}]\n{extra}"
        );
        let config = crate::config::parse(&text, std::path::Path::new("/")).expect("config");
        (*config.accounts[0]).clone()
    }

    fn caps(idle: bool, notify: bool) -> imap::Capabilities {
        imap::Capabilities {
            idle,
            id: false,
            notify,
            unselect: true,
            list_special_use: false,
        }
    }

    #[test]
    fn the_check_says_which_mailboxes_share_a_connection() {
        let a = account(
            "\"Lists\", \"INBOX\", \"Work\", \"Archive\"",
            "max_connections = 3\npoll_interval_secs = 60\n",
        );
        assert_eq!(
            connections_line(&a, &a.mailboxes, caps(true, true)),
            "      work: NOTIFY yes; at most 3 connections (max_connections), 2 used\n\
             \x20       own connection (IDLE): INBOX\n\
             \x20       shared connection (new mail reported by NOTIFY): Lists, Work, Archive"
        );
        assert_eq!(
            connections_line(&a, &a.mailboxes, caps(true, false)),
            "      work: NOTIFY no; at most 3 connections (max_connections), 3 used\n\
             \x20       own connections (IDLE): INBOX, Lists\n\
             \x20       shared connection (STATUS every 60s): Work, Archive"
        );
        // NOTIFY without IDLE cannot be waited on: polled.
        assert!(connections_line(&a, &a.mailboxes, caps(false, true)).contains("NOTIFY no"));
    }

    #[test]
    fn mailbox_names_cannot_break_the_check_output() {
        let a = account("\"INBOX\", \"a\\u001b[2Jb\"", "max_connections = 1\n");
        let line = connections_line(&a, &a.mailboxes, caps(true, false));
        assert!(!line.contains('\x1b'), "{line:?}");
        assert_eq!(line.lines().count(), 2, "{line:?}");
    }
}
