//! What every watcher is doing, in one table: the source of systemd's `STATUS=` line and
//! of the SIGUSR1 state dump.
//!
//! Watchers write their own row on each change of state (connecting, idling, failed...)
//! and of their mailbox's unread count; the supervisor reads the table to summarise, and
//! the D-Bus interface (src/bus/service.rs) publishes it, woken by [`StatusTable::wait_change`].
//! Formatting is pure and unit-tested.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    Idling,
    Polling,
    /// Waiting to reconnect after a failure.
    Retrying,
}

/// `account/mailbox`: a watcher's row key, thread name and log prefix, with control and
/// bidi characters escaped (mailbox names come from the config and, for patterns, from
/// the server's LIST: neither may break or colour a log line).
pub fn row_key(account: &str, mailbox: &str) -> String {
    crate::decode::controls_escaped(&format!("{account}/{mailbox}"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The account's name and the mailbox's, as configured (or listed, for a pattern).
    pub account: String,
    pub mailbox: String,
    pub phase: Phase,
    /// Messages without `\Seen` (RFC 3501 STATUS UNSEEN), once known.
    pub unread: Option<u32>,
    /// Messages announced since the user last looked ([`StatusTable::mark_seen_by_user`]).
    pub new: u32,
    pub connected_since: Option<SystemTime>,
    /// The last thing that happened worth knowing (new mail, refresh...), and when.
    pub last_event: Option<(SystemTime, String)>,
    pub last_error: Option<(SystemTime, String)>,
    pub next_retry: Option<SystemTime>,
}

impl Default for Row {
    fn default() -> Self {
        Row {
            account: String::new(),
            mailbox: String::new(),
            phase: Phase::Connecting,
            unread: None,
            new: 0,
            connected_since: None,
            last_event: None,
            last_error: None,
            next_retry: None,
        }
    }
}

/// One mailbox as the D-Bus interface and `mailpushd status` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxView {
    pub account: String,
    pub mailbox: String,
    /// `None` until the first count (a mailbox still connecting, or refused).
    pub unread: Option<u32>,
    /// Announced since the user last looked, and still unread (at most `unread`).
    pub new: u32,
    /// "connecting", "idling", "polling" or "retrying".
    pub state: &'static str,
    /// The last failure, while it is not over (`None` once watching again).
    pub last_error: Option<String>,
}

impl Phase {
    /// The name the D-Bus interface and `mailpushd status` use.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::Idling => "idling",
            Phase::Polling => "polling",
            Phase::Retrying => "retrying",
        }
    }
}

impl Row {
    fn view(&self) -> MailboxView {
        MailboxView {
            account: self.account.clone(),
            mailbox: self.mailbox.clone(),
            unread: self.unread,
            new: self.unread.map_or(self.new, |u| self.new.min(u)),
            state: self.phase.name(),
            last_error: match self.phase {
                Phase::Retrying | Phase::Connecting => {
                    self.last_error.as_ref().map(|(_, e)| e.clone())
                }
                Phase::Idling | Phase::Polling => None,
            },
        }
    }
}

/// Shared between the supervisor, the watchers and the notification thread.
#[derive(Debug, Clone, Default)]
pub struct StatusTable {
    rows: Arc<Mutex<BTreeMap<String, Row>>>,
    /// Trouble outside the watchers, by source ("notifications"): appended to `STATUS=`.
    notices: Arc<Mutex<BTreeMap<&'static str, String>>>,
    /// A counter of changes to what [`StatusTable::mailboxes`] shows, and whether the table
    /// is closing, with the condition variable [`StatusTable::wait_change`] waits on.
    changes: Arc<(Mutex<(u64, bool)>, Condvar)>,
}

impl StatusTable {
    fn rows(&self) -> MutexGuard<'_, BTreeMap<String, Row>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notices(&self) -> MutexGuard<'_, BTreeMap<&'static str, String>> {
        self.notices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets (`Some`) or clears (`None`) the notice of `source`, a short plain-words line
    /// such as "desktop notifications not answering". Returns whether it changed (worth a
    /// new STATUS=).
    pub fn set_notice(&self, source: &'static str, text: Option<String>) -> bool {
        let mut notices = self.notices();
        match text {
            Some(t) => notices.insert(source, t.clone()).as_ref() != Some(&t),
            None => notices.remove(source).is_some(),
        }
    }

    /// Changes one watcher's row; returns whether its phase changed (worth a new STATUS=).
    /// A change to what [`StatusTable::mailboxes`] shows wakes [`StatusTable::wait_change`].
    pub fn update(&self, key: &str, f: impl FnOnce(&mut Row)) -> bool {
        let (phase_changed, shown_changed) = {
            let mut rows = self.rows();
            let row = rows.entry(key.to_owned()).or_default();
            let before = row.view();
            let phase = row.phase.clone();
            f(row);
            if row.unread == Some(0) && before.unread != Some(0) {
                // Everything read, here or elsewhere: nothing is new any more. (Only on
                // the change: mail announced before its count moves is new.)
                row.new = 0;
            }
            (row.phase != phase, row.view() != before)
        };
        if shown_changed {
            self.changed();
        }
        phase_changed
    }

    /// [`StatusTable::update`] of a row that exists; none is made.
    pub fn update_existing(&self, key: &str, f: impl FnOnce(&mut Row)) -> bool {
        if !self.rows().contains_key(key) {
            return false;
        }
        self.update(key, f)
    }

    /// Removes every row whose key `keep` refuses: the mailboxes no longer watched.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let removed = {
            let mut rows = self.rows();
            let before = rows.len();
            rows.retain(|key, _| keep(key));
            rows.len() != before
        };
        if removed {
            self.changed();
        }
    }

    /// Every mailbox's row as shown, in key order (account, then mailbox).
    pub fn mailboxes(&self) -> Vec<MailboxView> {
        self.rows().values().map(Row::view).collect()
    }

    /// The user has seen what is new in `account`'s `mailbox` (either `None`: every
    /// account, every mailbox): their "new" counts go to 0. Flags on the server are not
    /// touched. Returns how many mailboxes matched.
    pub fn mark_seen_by_user(&self, account: Option<&str>, mailbox: Option<&str>) -> usize {
        let mut matched = 0;
        let mut cleared = false;
        for row in self.rows().values_mut() {
            if account.is_some_and(|a| a != row.account)
                || mailbox.is_some_and(|m| m != row.mailbox)
            {
                continue;
            }
            matched += 1;
            cleared |= std::mem::take(&mut row.new) != 0;
        }
        if cleared {
            self.changed();
        }
        matched
    }

    fn changes(&self) -> MutexGuard<'_, (u64, bool)> {
        self.changes.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.changes().0 += 1;
        self.changes.1.notify_all();
    }

    /// The number of changes so far, for [`StatusTable::wait_change`].
    pub fn generation(&self) -> u64 {
        self.changes().0
    }

    /// Waits until the table has changed since `generation` (returns the new one) or is
    /// closing ([`StatusTable::close`]: returns `None`). No timeout: nothing wakes while
    /// nothing changes.
    pub fn wait_change(&self, generation: u64) -> Option<u64> {
        let mut g = self.changes();
        loop {
            if g.1 {
                return None;
            }
            if g.0 != generation {
                return Some(g.0);
            }
            g = self.changes.1.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits `d`, or less if the table closes ([`StatusTable::close`]: returns false).
    pub fn linger(&self, d: Duration) -> bool {
        let deadline = std::time::Instant::now() + d;
        let mut g = self.changes();
        loop {
            if g.1 {
                return false;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return true;
            }
            g = self
                .changes
                .1
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Ends every [`StatusTable::wait_change`], now and later: the daemon is stopping.
    pub fn close(&self) {
        self.changes().1 = true;
        self.changes.1.notify_all();
    }

    /// One line for `systemctl status`: "3/4 mailboxes idling, 1 reconnecting
    /// (work/INBOX: connection refused)".
    pub fn summary(&self) -> String {
        let mut line = summary(&self.rows());
        for notice in self.notices().values() {
            line.push_str("; ");
            line.push_str(notice);
        }
        line
    }

    /// One line per watcher, for SIGUSR1.
    pub fn dump(&self, now: SystemTime) -> Vec<String> {
        self.rows()
            .iter()
            .map(|(key, row)| dump_line(key, row, now))
            .collect()
    }
}

fn summary(rows: &BTreeMap<String, Row>) -> String {
    let total = rows.len();
    let count = |p: Phase| rows.values().filter(|r| r.phase == p).count();
    let watching = count(Phase::Idling) + count(Phase::Polling);
    let mut parts = vec![format!("{watching}/{total} mailboxes watching")];
    let connecting = count(Phase::Connecting);
    if connecting > 0 {
        parts.push(format!("{connecting} connecting"));
    }
    let failing: Vec<(&String, &Row)> = rows
        .iter()
        .filter(|(_, r)| r.phase == Phase::Retrying)
        .collect();
    if let Some((key, row)) = failing.first() {
        let why = row
            .last_error
            .as_ref()
            .map(|(_, e)| crate::decode::truncate_chars(e, 80))
            .unwrap_or_default();
        parts.push(format!("{} reconnecting ({key}: {why})", failing.len()));
    }
    parts.join(", ")
}

fn ago(now: SystemTime, t: SystemTime) -> String {
    match now.duration_since(t) {
        Ok(d) => format!("{} ago", human(d)),
        Err(e) => format!("in {}", human(e.duration())),
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

fn dump_line(key: &str, row: &Row, now: SystemTime) -> String {
    let phase = match row.phase {
        Phase::Connecting => "connecting",
        Phase::Idling => "idling",
        Phase::Polling => "polling",
        Phase::Retrying => "waiting to reconnect",
    };
    let mut line = format!("{key}: {phase}");
    if let Some(t) = row.connected_since {
        line.push_str(&format!("; connected since {}", ago(now, t)));
    }
    if let Some((t, e)) = &row.last_event {
        line.push_str(&format!("; last event {} ({e})", ago(now, *t)));
    }
    if let Some((t, e)) = &row.last_error {
        line.push_str(&format!("; last error {} ({e})", ago(now, *t)));
    }
    if let Some(t) = row.next_retry {
        line.push_str(&format!("; next retry {}", ago(now, t)));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&str, Phase, Option<&str>)]) -> BTreeMap<String, Row> {
        rows.iter()
            .map(|(k, p, e)| {
                (
                    k.to_string(),
                    Row {
                        phase: p.clone(),
                        last_error: e.map(|e| (SystemTime::UNIX_EPOCH, e.to_owned())),
                        ..Row::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn summary_counts_and_names_a_failure() {
        let t = table(&[
            ("home/INBOX", Phase::Idling, None),
            ("work/INBOX", Phase::Retrying, Some("connection refused")),
            ("work/Sent", Phase::Polling, None),
            ("x/INBOX", Phase::Idling, None),
        ]);
        assert_eq!(
            summary(&t),
            "3/4 mailboxes watching, 1 reconnecting (work/INBOX: connection refused)"
        );
        let t = table(&[("a/INBOX", Phase::Connecting, None)]);
        assert_eq!(summary(&t), "0/1 mailboxes watching, 1 connecting");
    }

    #[test]
    fn dump_says_when() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100_000);
        let row = Row {
            phase: Phase::Retrying,
            connected_since: None,
            last_event: Some((now - Duration::from_secs(7200), "new mail uid=4".into())),
            last_error: Some((now - Duration::from_secs(5), "reset".into())),
            next_retry: Some(now + Duration::from_secs(3)),
            ..Row::default()
        };
        assert_eq!(
            dump_line("w/INBOX", &row, now),
            "w/INBOX: waiting to reconnect; last event 2h00m ago (new mail uid=4); last error 5s ago (reset); next retry in 3s"
        );
    }

    #[test]
    fn update_reports_phase_changes_only() {
        let t = StatusTable::default();
        assert!(!t.update("a", |_| {}));
        assert!(t.update("a", |r| r.phase = Phase::Idling));
        assert!(!t.update("a", |r| r.last_event =
            Some((SystemTime::now(), "x".into()))));
        let g = t.generation();
        t.retain(|key| key != "a");
        assert_eq!(t.dump(SystemTime::now()).len(), 0);
        assert!(t.generation() > g, "a removed row is a change to publish");
    }

    #[test]
    fn the_view_follows_counts_and_wakes_waiters() {
        let t = StatusTable::default();
        let g = t.generation();
        t.update("w/INBOX", |r| {
            r.account = "w".into();
            r.mailbox = "INBOX".into();
            r.phase = Phase::Idling;
            r.unread = Some(3);
            r.new = 2;
            r.last_error = Some((SystemTime::now(), "old".into()));
        });
        let g2 = t.wait_change(g).expect("changed");
        assert!(g2 > g);
        let v = &t.mailboxes()[0];
        assert_eq!(
            (v.unread, v.new, v.state, v.last_error.clone()),
            (Some(3), 2, "idling", None)
        );
        // Read on a phone: "new" never says more than is unread, and 0 unread clears it.
        t.update("w/INBOX", |r| r.unread = Some(1));
        assert_eq!(t.mailboxes()[0].new, 1);
        t.update("w/INBOX", |r| r.unread = Some(0));
        t.update("w/INBOX", |r| r.unread = Some(4));
        assert_eq!(t.mailboxes()[0].new, 0);
        // No change shown: no wake.
        let g3 = t.generation();
        t.update("w/INBOX", |r| r.connected_since = Some(SystemTime::now()));
        assert_eq!(t.generation(), g3);
        t.update("w/INBOX", |r| r.new = 2);
        assert_eq!(t.mark_seen_by_user(Some("w"), Some("Other")), 0);
        assert_eq!(t.mailboxes()[0].new, 2);
        assert_eq!(t.mark_seen_by_user(Some("w"), None), 1);
        assert_eq!(t.mailboxes()[0].new, 0);
        assert!(t.linger(Duration::from_millis(1)));
        t.close();
        assert_eq!(t.wait_change(t.generation()), None);
        assert!(!t.linger(Duration::from_secs(60)));
    }

    #[test]
    fn notices_are_appended_and_cleared() {
        let t = StatusTable::default();
        t.update("a/INBOX", |r| r.phase = Phase::Idling);
        assert!(t.set_notice("notifications", Some("popups stalled".into())));
        assert!(!t.set_notice("notifications", Some("popups stalled".into())));
        assert_eq!(t.summary(), "1/1 mailboxes watching; popups stalled");
        assert!(t.set_notice("notifications", None));
        assert!(!t.set_notice("notifications", None));
        assert_eq!(t.summary(), "1/1 mailboxes watching");
    }
}
