//! The one `log` backend: lines on stderr.
//!
//! Under systemd (`JOURNAL_STREAM` set) each line starts with a `<N>` syslog priority so
//! journalctl shows levels and the journal adds its own timestamps; otherwise lines carry a
//! UTC time and the level in plain text. Syslog proper is an output, not a log backend
//! (see `announce/syslog.rs`).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    journal: bool,
    /// Most verbose level shown for other crates' messages.
    others: LevelFilter,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        if metadata.target().starts_with("mailpushd") {
            metadata.level() <= log::max_level()
        } else {
            metadata.level() <= self.others
        }
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Our own crate logs with bare messages; others (zbus, native-tls) are named so
        // their lines can be told apart.
        let target = record.target();
        let origin = if target.starts_with("mailpushd") {
            String::new()
        } else {
            format!("{target}: ")
        };
        let line = if self.journal {
            format!("<{}>{origin}{}\n", priority(record.level()), record.args())
        } else {
            format!(
                "{} {:5} {origin}{}\n",
                utc_time(),
                record.level(),
                record.args()
            )
        };
        // One write per line so lines from different threads do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Whether stderr is the journal stream systemd set up for us: `JOURNAL_STREAM` holds its
/// `device:inode`, and must match stderr itself, not merely be inherited from a service
/// that started the terminal we run in (sd-daemon's advice).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    journal_stream_matches(&value.to_string_lossy(), stat.st_dev, stat.st_ino)
}

fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    value
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

fn utc_time() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        now.subsec_millis()
    )
}

/// Installs the logger. `level` is the most verbose level shown for our own messages; other
/// crates are held one step quieter unless trace is asked for, as their debug output is
/// rarely what a user needs.
pub fn init(level: LevelFilter) {
    let journal = stderr_is_journal();
    let others = match level {
        LevelFilter::Trace => LevelFilter::Trace,
        LevelFilter::Debug => LevelFilter::Info,
        l => l.min(LevelFilter::Warn),
    };
    if log::set_boxed_logger(Box::new(StderrLogger { journal, others })).is_ok() {
        log::set_max_level(level);
    }
    // Panics are caught and survived (see watcher.rs); report them as one log line with a
    // priority, not as the default hook's unprefixed multi-line text.
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        log::error!(
            "panic in thread {name}: {}",
            info.to_string().replace('\n', " ")
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(!journal_stream_matches("8:12345", 8, 12346));
        assert!(!journal_stream_matches("garbage", 8, 12345));
        assert!(!journal_stream_matches("", 0, 0));
    }
}
