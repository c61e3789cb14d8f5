//! What a new configuration changes: which watchers keep their connection, which restart,
//! which stop and which start. Pure, so the rules are unit-tested.
//!
//! A watcher is identified by (account name, mailbox). It keeps running, connection and all,
//! when its account's connection settings are unchanged (adding or removing *other*
//! mailboxes of the same account does not count). Renaming an account stops the old
//! watchers and starts new ones; their persisted state follows them anyway, because state
//! files are keyed by user, host and mailbox (see `mailbox/state.rs`).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::{Account, Config};

/// `(account name, mailbox)`.
pub use crate::event::Key;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub keep: Vec<Key>,
    pub restart: Vec<(Key, Arc<Account>)>,
    pub stop: Vec<Key>,
    pub start: Vec<(Key, Arc<Account>)>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.restart.is_empty() && self.stop.is_empty() && self.start.is_empty()
    }
}

/// Everything except the mailbox list, which is per watcher, not per connection.
pub fn same_connection(a: &Account, b: &Account) -> bool {
    let strip = |x: &Account| Account {
        mailboxes: Vec::new(),
        ..x.clone()
    };
    strip(a) == strip(b)
}

fn keys(config: &Config) -> Vec<(Key, &Arc<Account>)> {
    config
        .accounts
        .iter()
        .flat_map(|a| {
            a.mailboxes
                .iter()
                .map(move |m| ((a.name.clone(), m.clone()), a))
        })
        .collect()
}

/// The plan that turns the watchers of `old` (none, at start) into those of `new`.
pub fn plan(old: Option<&Config>, new: &Config) -> Plan {
    let old_keys: Vec<(Key, &Arc<Account>)> = old.map(keys).unwrap_or_default();
    let new_keys = keys(new);
    let new_set: BTreeSet<&Key> = new_keys.iter().map(|(k, _)| k).collect();
    let mut plan = Plan::default();
    for (key, account) in &new_keys {
        match old_keys.iter().find(|(k, _)| k == key) {
            Some((_, before)) if same_connection(before, account) => plan.keep.push(key.clone()),
            Some(_) => plan.restart.push((key.clone(), Arc::clone(account))),
            None => plan.start.push((key.clone(), Arc::clone(account))),
        }
    }
    for (key, _) in &old_keys {
        if !new_set.contains(key) {
            plan.stop.push(key.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(text: &str) -> Config {
        crate::config::parse(text, Path::new("/")).unwrap()
    }

    const BASE: &str = r#"
[[accounts]]
name = "work"
host = "imap.example.com"
username = "me"
password = "p"
mailboxes = ["INBOX", "Lists"]

[[accounts]]
name = "home"
host = "mail.example.net"
username = "me"
password = "p"
"#;

    fn key(a: &str, m: &str) -> Key {
        (a.to_owned(), m.to_owned())
    }

    fn names(v: &[(Key, Arc<Account>)]) -> Vec<Key> {
        v.iter().map(|(k, _)| k.clone()).collect()
    }

    #[test]
    fn first_start_starts_everything() {
        let p = plan(None, &cfg(BASE));
        assert_eq!(
            names(&p.start),
            vec![
                key("work", "INBOX"),
                key("work", "Lists"),
                key("home", "INBOX")
            ]
        );
        assert!(p.keep.is_empty() && p.stop.is_empty() && p.restart.is_empty());
    }

    #[test]
    fn identical_config_is_a_noop() {
        let p = plan(Some(&cfg(BASE)), &cfg(BASE));
        assert!(p.is_noop());
        assert_eq!(p.keep.len(), 3);
    }

    #[test]
    fn adding_a_mailbox_keeps_the_others_connected() {
        let new = BASE.replace("[\"INBOX\", \"Lists\"]", "[\"INBOX\", \"Lists\", \"工作\"]");
        let p = plan(Some(&cfg(BASE)), &cfg(&new));
        assert_eq!(names(&p.start), vec![key("work", "工作")]);
        assert_eq!(p.keep.len(), 3);
        assert!(p.restart.is_empty() && p.stop.is_empty());
    }

    #[test]
    fn removing_a_mailbox_stops_only_it() {
        let new = BASE.replace("[\"INBOX\", \"Lists\"]", "[\"INBOX\"]");
        let p = plan(Some(&cfg(BASE)), &cfg(&new));
        assert_eq!(p.stop, vec![key("work", "Lists")]);
        assert_eq!(p.keep.len(), 2);
    }

    #[test]
    fn changed_settings_restart_that_account_only() {
        let new = BASE.replace("password = \"p\"\nmailboxes", "password = \"q\"\nmailboxes");
        let p = plan(Some(&cfg(BASE)), &cfg(&new));
        assert_eq!(
            names(&p.restart),
            vec![key("work", "INBOX"), key("work", "Lists")]
        );
        assert_eq!(p.keep, vec![key("home", "INBOX")]);
        // The restarted watchers get the new settings.
        assert!(p
            .restart
            .iter()
            .all(|(_, a)| a.secret == crate::config::Secret::Password("q".into())));
    }

    #[test]
    fn renaming_an_account_stops_and_starts() {
        let new = BASE.replace("name = \"home\"", "name = \"house\"");
        let p = plan(Some(&cfg(BASE)), &cfg(&new));
        assert_eq!(p.stop, vec![key("home", "INBOX")]);
        assert_eq!(names(&p.start), vec![key("house", "INBOX")]);
    }
}
