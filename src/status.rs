//! What every watcher is doing, in one table: the source of systemd's `STATUS=` line and
//! of the SIGUSR1 state dump.
//!
//! Watchers write their own row on each change of state (connecting, idling, failed...);
//! the supervisor reads the table to summarise. Formatting is pure and unit-tested.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
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
    pub phase: Phase,
    pub connected_since: Option<SystemTime>,
    /// The last thing that happened worth knowing (new mail, refresh...), and when.
    pub last_event: Option<(SystemTime, String)>,
    pub last_error: Option<(SystemTime, String)>,
    pub next_retry: Option<SystemTime>,
}

impl Default for Row {
    fn default() -> Self {
        Row {
            phase: Phase::Connecting,
            connected_since: None,
            last_event: None,
            last_error: None,
            next_retry: None,
        }
    }
}

/// Shared between the supervisor, the watchers and the notification thread.
#[derive(Debug, Clone, Default)]
pub struct StatusTable {
    rows: Arc<Mutex<BTreeMap<String, Row>>>,
    /// Trouble outside the watchers, by source ("notifications"): appended to `STATUS=`.
    notices: Arc<Mutex<BTreeMap<&'static str, String>>>,
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
    pub fn update(&self, key: &str, f: impl FnOnce(&mut Row)) -> bool {
        let mut rows = self.rows();
        let row = rows.entry(key.to_owned()).or_default();
        let before = row.phase.clone();
        f(row);
        row.phase != before
    }

    pub fn remove(&self, key: &str) {
        self.rows().remove(key);
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
        t.remove("a");
        assert_eq!(t.dump(SystemTime::now()).len(), 0);
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
