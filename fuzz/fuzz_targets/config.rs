//! `config::parse` on arbitrary text (bytes made UTF-8 lossily, as a config file that is
//! not UTF-8 would never get this far).
//!
//! Beyond "never panics": a config that parses keeps the promises the rest of the daemon
//! relies on, and a rejected one says where, with line and column inside the text.
#![no_main]

use std::collections::HashSet;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mailpushd::config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match config::parse(&text, Path::new("/")) {
        Ok(cfg) => {
            assert!(!cfg.accounts.is_empty(), "a valid config watches something");
            let mut names = HashSet::new();
            for a in &cfg.accounts {
                assert!(
                    names.insert(a.name.clone()),
                    "duplicate account {:?}",
                    a.name
                );
                for s in [&a.name, &a.host, &a.username] {
                    assert!(!s.trim().is_empty(), "blank required key in {a:?}");
                }
                assert_ne!(a.port, 0);
                assert!(!a.mailboxes.is_empty());
                let mut seen = HashSet::new();
                for m in &a.mailboxes {
                    assert!(!m.is_empty());
                    assert!(!m.contains(['\r', '\n', '\0']), "{m:?}");
                    assert!(seen.insert(m), "mailbox {m:?} listed twice");
                }
                assert!((10..=29 * 60).contains(&a.idle_refresh.as_secs()));
                assert!((1..=86_400).contains(&a.poll_interval.as_secs()));
                assert!((1..=86_400).contains(&a.reconnect_max.as_secs()));
                assert!((1..=600).contains(&a.timeout.as_secs()));
            }
            assert!(cfg.notifications.summary_threshold >= 1);
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "rejected without a reason");
            let lines: Vec<&str> = text.split('\n').collect();
            for p in &problems {
                assert!(!p.message.trim().is_empty(), "{p:?}");
                assert!(p.line >= 1 && p.line <= lines.len(), "{p:?}");
                let width = lines[p.line - 1].chars().count();
                assert!(p.column >= 1 && p.column <= width + 1, "{p:?}");
            }
            assert!(
                problems
                    .windows(2)
                    .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column)),
                "problems not in file order: {problems:?}"
            );
            // One mistake, one message: the same problem is never reported twice.
            let mut seen = HashSet::new();
            for p in &problems {
                assert!(seen.insert((p.line, p.column, &p.message)), "twice: {p:?}");
            }
        }
    }
});
