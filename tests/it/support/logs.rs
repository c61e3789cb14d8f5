//! The library's log lines, for tests that drive `mailpushd` in-process (the hook runner)
//! and assert on what it logs.
//!
//! A `log` logger can be installed only once per process, and every test module shares this
//! one process: so there is one recorder for the whole binary, installed by the first test
//! that calls [`capture`], and each test reads only the lines of its own account name (the
//! library prefixes every line about an account with `"<account>: "`). Lines from library
//! calls of other tests (e.g. `imap::connect` in scripted_logins) land here too once the
//! recorder is installed, and are simply never asked for; account names must therefore be
//! unique among the tests that read logs.
//!
//! Owns: the logger and the lines it recorded.

use std::sync::{Mutex, Once};
use std::time::Duration;

use super::{lock, wait_until};

static LINES: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

struct Recorder;

impl log::Log for Recorder {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        lock(&LINES).push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

static RECORDER: Recorder = Recorder;

/// Installs the recorder (once per process; later calls do nothing). Lines logged before
/// the first call are not recorded.
pub fn capture() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&RECORDER).expect("no other logger in the test binary");
        log::set_max_level(log::LevelFilter::Debug);
    });
}

/// Waits up to `timeout` for a line of `account` containing `needle`; returns its level
/// and text.
pub fn wait_for(account: &str, needle: &str, timeout: Duration) -> (log::Level, String) {
    let prefix = format!("{account}: ");
    wait_until(
        timeout,
        &format!("log line {needle:?} for {account}"),
        || {
            lock(&LINES)
                .iter()
                .find(|(_, l)| l.starts_with(&prefix) && l.contains(needle))
                .cloned()
        },
    )
}

/// Every line of `account` recorded so far, oldest first.
pub fn of(account: &str) -> Vec<String> {
    let prefix = format!("{account}: ");
    lock(&LINES)
        .iter()
        .filter(|(_, l)| l.starts_with(&prefix))
        .map(|(_, l)| l.clone())
        .collect()
}
