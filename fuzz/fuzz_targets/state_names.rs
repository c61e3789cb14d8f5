//! State file names (`StateStore::path`) and the save/load round trip, for arbitrary
//! usernames, hosts, ports and mailboxes.
//!
//! - the file name is `<stem>.toml` in the store's directory, at most 255 bytes, made of
//!   `[A-Za-z0-9._@+%~-]` only, not hidden (no leading `.`), the same for any host case;
//! - two mailboxes that differ (user, lower-cased host, mailbox) get different files: the
//!   second is the first re-split at another `@` and `/` (or `+`) of `user@host/mailbox`,
//!   or one the fuzzer chose;
//! - what `save` writes, with the description the watcher gives it
//!   (`"{user} on {host}, mailbox {mailbox}"`), `load` reads back.
#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mailpushd::mailbox::newmail::Cursor;
use mailpushd::mailbox::state::{Loaded, StateStore};

#[derive(Debug, Arbitrary)]
struct Input {
    user: String,
    host: String,
    port: u16,
    mailbox: String,
    other: Other,
    uid_validity: u32,
    next_uid: u32,
    /// The cursor after UID 4294967295 has been considered (`next_uid` 2^32).
    past_last_uid: bool,
}

#[derive(Debug, Arbitrary)]
enum Other {
    /// Split `user@host/mailbox` again at the `at`-th `@` and the `slash`-th `/` after it.
    /// Join `user@host<sep>mailbox` with `sep` `/` or (with `plus`) `+`, and split it
    /// again at the `at`-th `@` and the `sep_index`-th `sep` after it.
    Resplit {
        at: u8,
        sep_index: u8,
        plus: bool,
    },
    Triple(String, String, String),
}

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = PathBuf::from("/dev/shm");
        let base = if base.is_dir() {
            base
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("mailpushd-fuzz-names-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

fn resplit(joined: &str, sep: char, at: u8, sep_index: u8) -> Option<(String, String, String)> {
    let (i, _) = joined.match_indices('@').nth(usize::from(at))?;
    let (j, _) = joined[i + 1..]
        .match_indices(sep)
        .nth(usize::from(sep_index))?;
    let j = i + 1 + j;
    Some((
        joined[..i].to_owned(),
        joined[i + 1..j].to_owned(),
        joined[j + 1..].to_owned(),
    ))
}

fuzz_target!(|input: Input| {
    let dir = scratch();
    let store = StateStore::new(dir.clone());
    let (u, h, m) = (&input.user, &input.host, &input.mailbox);
    let path = store.path(u, h, input.port, m);

    assert_eq!(path.parent(), Some(dir.as_path()));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("UTF-8 file name");
    assert!(name.len() <= 255, "{} bytes: {name}", name.len());
    let stem = name.strip_suffix(".toml").expect(".toml");
    assert!(!stem.is_empty() && !stem.starts_with('.'), "{name}");
    assert!(
        stem.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+%~-".contains(&b)),
        "{name}"
    );
    assert_eq!(path, store.path(u, &h.to_ascii_uppercase(), input.port, m));
    assert_eq!(path, store.path(u, &h.to_ascii_lowercase(), input.port, m));

    let other = match input.other {
        Other::Resplit {
            at,
            sep_index,
            plus,
        } => {
            let sep = if plus { '+' } else { '/' };
            resplit(&format!("{u}@{h}{sep}{m}"), sep, at, sep_index)
        }
        Other::Triple(a, b, c) => Some((a, b, c)),
    };
    if let Some((u2, h2, m2)) = other {
        let same = *u == u2 && h.to_ascii_lowercase() == h2.to_ascii_lowercase() && *m == m2;
        // Known: the stem encodes `user@host/mailbox` as one string, so re-splitting it
        // differently gives the same file.
        let known = skip_known("state-stem")
            && format!("{u}@{}/{m}", h.to_ascii_lowercase())
                == format!("{u2}@{}/{m2}", h2.to_ascii_lowercase());
        if !same && !known {
            assert_ne!(
                path,
                store.path(&u2, &h2, input.port, &m2),
                "({u:?}, {h:?}, {m:?}) and ({u2:?}, {h2:?}, {m2:?}) share a state file"
            );
        }
    }

    let cursor = Cursor {
        uid_validity: input.uid_validity,
        next_uid: if input.past_last_uid {
            1 << 32
        } else {
            u64::from(input.next_uid.max(1))
        },
    };
    let description = format!("{u} on {h}, mailbox {m}");
    store.save(&path, cursor, &description).expect("save");
    let loaded = store.load(&path);
    for entry in fs::read_dir(dir).expect("read scratch directory") {
        let _ = fs::remove_file(entry.expect("entry").path());
    }
    // Known: control characters in the description end up raw in a TOML comment.
    if skip_known("state-comment") && description.chars().any(|c| c.is_control() && c != '\t') {
        return;
    }
    assert_eq!(
        loaded,
        Loaded::Found(cursor),
        "saved with description {description:?}"
    );
});

/// Whether the run was asked to step over a known, reported bug (`FUZZ_SKIP_KNOWN`, a comma
/// list of the names in README.md, or `all`), so that fuzzing can go on past it.
fn skip_known(bug: &str) -> bool {
    static LIST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LIST.get_or_init(|| std::env::var("FUZZ_SKIP_KNOWN").unwrap_or_default())
        .split(',')
        .any(|b| b.trim() == bug || b.trim() == "all")
}
