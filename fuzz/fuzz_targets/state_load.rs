//! `StateStore::load` on arbitrary state-file contents: never panics, never reports a file
//! that is there as missing, and either returns a cursor a mailbox can reach (`next_uid`
//! from 1 to 2^32; it then survives a save and a load) or sets the file aside intact.
//!
//! Works in one scratch directory per process under /dev/shm (else the temp dir), emptied
//! after every input; the empty directory is left behind.
#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mailpushd::mailbox::state::{Loaded, StateStore};

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = PathBuf::from("/dev/shm");
        let base = if base.is_dir() {
            base
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("mailpushd-fuzz-state-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

fn clear(dir: &PathBuf) {
    for entry in fs::read_dir(dir).expect("read scratch directory") {
        let _ = fs::remove_file(entry.expect("entry").path());
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let store = StateStore::new(dir.clone());
    let path = store.path("me@example.com", "imap.example.com", 993, "INBOX");
    fs::write(&path, data).expect("write state file");

    match store.load(&path) {
        Loaded::Found(cursor) => {
            // Past the last UID (2^32 - 1) the cursor is 2^32; anything higher no mailbox
            // can reach, and would silence the mailbox until UIDVALIDITY changes.
            let highest = if skip_known("state-range") {
                u64::MAX
            } else {
                1 << 32
            };
            assert!(
                (1..=highest).contains(&cursor.next_uid),
                "loaded {cursor:?}"
            );
            assert_eq!(
                fs::read(&path).expect("still there"),
                data,
                "load changed the file"
            );
            store.save(&path, cursor, "fuzz").expect("save");
            assert_eq!(store.load(&path), Loaded::Found(cursor));
        }
        Loaded::Corrupt { reason, set_aside } => {
            assert!(!reason.trim().is_empty());
            let aside = set_aside.expect("renamed aside");
            assert!(!path.exists(), "corrupt file left in place");
            assert_eq!(
                fs::read(&aside).expect("aside file"),
                data,
                "set aside changed"
            );
            assert_eq!(store.load(&path), Loaded::Missing);
        }
        other => panic!("{other:?} for a readable file"),
    }
    clear(dir);
});

/// Whether the run was asked to step over a known, reported bug (`FUZZ_SKIP_KNOWN`, a comma
/// list of the names in README.md, or `all`), so that fuzzing can go on past it.
fn skip_known(bug: &str) -> bool {
    static LIST: OnceLock<String> = OnceLock::new();
    LIST.get_or_init(|| std::env::var("FUZZ_SKIP_KNOWN").unwrap_or_default())
        .split(',')
        .any(|b| b.trim() == bug || b.trim() == "all")
}
