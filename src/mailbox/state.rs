//! Persisted progress per mailbox: the UIDVALIDITY and the next UID not yet announced, so
//! that "never miss, never repeat" holds across daemon restarts as well as reconnects.
//!
//! One small TOML file per mailbox in `$XDG_STATE_HOME/mailpushd/` (else
//! `~/.local/state/mailpushd/`), named after user, host, port and mailbox, not the account's
//! display name, so renaming an account keeps its state while pointing it at another server
//! does not. The port is part of the name because two servers can share a host name (SSH
//! tunnels on localhost); names without it, from earlier versions, are still read and renamed
//! ([`StateStore::path_migrated`]). Writes are atomic (temp file, fsync, rename, fsync of the directory): a crash
//! mid-write leaves the old state. A file that does not parse is renamed aside and reported,
//! never fatal.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::mailbox::newmail::Cursor;

/// Longest file-name stem before it is shortened with a hash (file names max out at 255).
const MAX_STEM: usize = 180;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    uid_validity: u32,
    next_uid: u64,
}

/// What was found on disk for one mailbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Loaded {
    Missing,
    Found(Cursor),
    /// The file did not parse; it was renamed to `set_aside` (or could not be, if `None`).
    Corrupt {
        reason: String,
        set_aside: Option<PathBuf>,
    },
    /// The file exists but could not be read (permissions, I/O error); left alone.
    Unreadable(String),
}

#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// A store in `dir`, created (mode 0700) if needed on the first save.
    pub fn new(dir: PathBuf) -> Self {
        StateStore { dir }
    }

    /// `$XDG_STATE_HOME/mailpushd`, else `~/.local/state/mailpushd`.
    pub fn default_dir(xdg_state_home: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
        xdg_state_home
            .filter(|p| p.is_absolute())
            .or_else(|| home.map(|h| h.join(".local").join("state")))
            .unwrap_or_else(|| PathBuf::from(".local/state"))
            .join("mailpushd")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds the state of `mailbox` for `username` on `host`:`port`.
    pub fn path(&self, username: &str, host: &str, port: u16, mailbox: &str) -> PathBuf {
        self.dir
            .join(format!("{}.toml", file_stem(username, host, port, mailbox)))
    }

    /// [`StateStore::path`], after adopting the file of an earlier version if there is one:
    /// when no file has the current name and one named without the port (as earlier versions named it)
    /// exists, that one is renamed to the current name, so an upgrade loses nothing.
    ///
    /// Two accounts that differ only by port shared that one old file; the first to ask
    /// gets it, and the other starts afresh (as it did before: the shared file held the
    /// other server's UIDVALIDITY). A failed rename is logged and leaves the old file.
    pub fn path_migrated(&self, username: &str, host: &str, port: u16, mailbox: &str) -> PathBuf {
        let path = self.path(username, host, port, mailbox);
        let legacy = self.dir.join(format!(
            "{}.toml",
            legacy_file_stem(username, host, mailbox)
        ));
        if !path.exists() && legacy.exists() {
            match fs::rename(&legacy, &path) {
                Ok(()) => log::info!(
                    "state file {} renamed to {} (state files now include the port)",
                    legacy.display(),
                    path.display()
                ),
                Err(e) => log::warn!(
                    "cannot rename state file {} to {}: {e}; starting afresh",
                    legacy.display(),
                    path.display()
                ),
            }
        }
        path
    }

    pub fn load(&self, path: &Path) -> Loaded {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return self.set_aside(path, "not UTF-8 text".to_owned())
            }
            Err(e) => return Loaded::Unreadable(e.to_string()),
        };
        match toml::from_str::<Saved>(&text) {
            // 2^32 (after UID 4294967295) is as far as a cursor can go; more would silence
            // the mailbox until its UIDVALIDITY changed.
            Ok(s) if (1..=1 << 32).contains(&s.next_uid) => Loaded::Found(Cursor {
                uid_validity: s.uid_validity,
                next_uid: s.next_uid,
            }),
            Ok(_) => self.set_aside(path, "next_uid must be between 1 and 2^32".to_owned()),
            Err(e) => self.set_aside(path, e.message().trim().to_owned()),
        }
    }

    fn set_aside(&self, path: &Path, reason: String) -> Loaded {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let aside = path.with_extension(format!("toml.corrupt-{stamp}"));
        let set_aside = fs::rename(path, &aside).ok().map(|()| aside);
        Loaded::Corrupt { reason, set_aside }
    }

    /// Atomically replaces the state file at `path` with `cursor`.
    pub fn save(&self, path: &Path, cursor: Cursor, description: &str) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let text = format!(
            "# mailpushd: what has been announced for {}.\n\
             # Deleting this file makes mailpushd start afresh (mail already there is not announced).\n\
             {}",
            // A comment may hold no control characters: escape them, or the file would
            // not load again.
            crate::decode::controls_escaped(description),
            toml::to_string(&Saved {
                uid_validity: cursor.uid_validity,
                next_uid: cursor.next_uid,
            })
            .expect("two integers serialize")
        );
        let tmp = path.with_extension(format!("toml.tmp-{}", std::process::id()));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, path)?;
            // The rename itself must reach the disk too.
            File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// `user@host+port+mailbox`, each text part with every byte outside `[A-Za-z0-9._-]`
/// percent-encoded, so the separators `@` and `+` appear only between parts and no two
/// mailboxes share a name; very long names are cut and suffixed with a hash. Two `+` tell
/// it from the older `user@host+mailbox`, whose mailbox part can hold no `+`.
fn file_stem(username: &str, host: &str, port: u16, mailbox: &str) -> String {
    stem(username, host, Some(port), mailbox)
}

/// The name before 0.2, without the port: `user@host+mailbox`. Read only, to migrate.
fn legacy_file_stem(username: &str, host: &str, mailbox: &str) -> String {
    stem(username, host, None, mailbox)
}

/// The stem with or without the port part; the hash of a long name covers the same parts.
fn stem(username: &str, host: &str, port: Option<u16>, mailbox: &str) -> String {
    let host = host.to_ascii_lowercase();
    let mut out = String::new();
    enc(username, &mut out);
    out.push('@');
    enc(&host, &mut out);
    out.push('+');
    let mut key = format!("{username}\0{host}\0");
    if let Some(port) = port {
        out.push_str(&port.to_string());
        out.push('+');
        key.push_str(&format!("{port}\0"));
    }
    enc(mailbox, &mut out);
    key.push_str(mailbox);
    finish_stem(out, &key)
}

/// Percent-encodes every byte of `part` outside `[A-Za-z0-9._-]` onto `out`.
fn enc(part: &str, out: &mut String) {
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Cuts a stem longer than [`MAX_STEM`] and appends the hash of `raw` (the unencoded
/// parts); encodes a leading dot, which would hide the file.
fn finish_stem(mut out: String, raw: &str) -> String {
    if out.len() > MAX_STEM {
        out.truncate(MAX_STEM);
        out.push_str(&format!("~{:016x}", fnv1a(raw.as_bytes())));
    }
    if let Some(rest) = out.strip_prefix('.') {
        out = format!("%2E{rest}");
    }
    out
}

/// FNV-1a: a fixed, version-independent hash (std's hasher may change between releases,
/// which would orphan state files).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, StateStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("mailpushd"));
        (dir, store)
    }

    const C: Cursor = Cursor {
        uid_validity: 1_700_000_000,
        next_uid: 42,
    };

    #[test]
    fn save_then_load_round_trips() {
        let (_d, s) = store();
        let p = s.path("me@example.com", "IMAP.example.com", 993, "INBOX");
        assert_eq!(s.load(&p), Loaded::Missing);
        s.save(&p, C, "me@example.com on imap.example.com, INBOX")
            .unwrap();
        assert_eq!(s.load(&p), Loaded::Found(C));
        let next = Cursor { next_uid: 43, ..C };
        s.save(&p, next, "x").unwrap();
        assert_eq!(s.load(&p), Loaded::Found(next));
        // No temp files left behind; private permissions.
        let names: Vec<_> = fs::read_dir(s.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(s.dir()).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn a_crash_before_rename_leaves_the_old_state() {
        let (_d, s) = store();
        let p = s.path("u", "h", 993, "INBOX");
        s.save(&p, C, "x").unwrap();
        // What a crash mid-write leaves: a half-written temp file beside the real one.
        fs::write(p.with_extension("toml.tmp-999"), "uid_valid").unwrap();
        assert_eq!(s.load(&p), Loaded::Found(C));
    }

    #[test]
    fn corrupt_files_are_set_aside_not_fatal() {
        let (_d, s) = store();
        let p = s.path("u", "h", 993, "INBOX");
        fs::create_dir_all(s.dir()).unwrap();
        for junk in [
            &b"uid_validity = \"x\"\n"[..],
            b"\xff\xfe garbage",
            b"next_uid = 0\nuid_validity = 1\n",
            b"",
        ] {
            fs::write(&p, junk).unwrap();
            match s.load(&p) {
                Loaded::Corrupt {
                    set_aside: Some(aside),
                    reason,
                } => {
                    assert!(!reason.is_empty());
                    assert!(aside.exists());
                    assert!(!p.exists());
                    fs::remove_file(aside).unwrap();
                }
                other => panic!("{junk:?}: {other:?}"),
            }
            assert_eq!(s.load(&p), Loaded::Missing);
        }
    }

    #[test]
    fn file_names_are_safe_and_distinct() {
        let a = file_stem("me@example.com", "Imap.Example.com", 993, "其他/工作");
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._@+-%".contains(&b)),
            "{a}"
        );
        assert_ne!(
            a,
            file_stem("me@example.com", "imap.example.com", 993, "INBOX")
        );
        // Host names are case-insensitive.
        assert_eq!(
            a,
            file_stem("me@example.com", "imap.example.com", 993, "其他/工作")
        );
        assert_ne!(
            file_stem("a/b", "h", 993, "c"),
            file_stem("a", "h", 993, "b/c")
        );
        assert!(!file_stem(".hidden", "h", 993, "x").starts_with('.'));
        let long = file_stem("u", "h", 993, &"x".repeat(1000));
        assert!(long.len() < 220, "{}", long.len());
        assert_ne!(long, file_stem("u", "h", 993, &"x".repeat(999)));
    }

    #[test]
    fn accounts_that_differ_only_by_port_have_their_own_files() {
        let (_d, s) = store();
        let a = s.path("me", "localhost", 1993, "INBOX");
        let b = s.path("me", "localhost", 2993, "INBOX");
        assert_ne!(a, b);
        assert_eq!(
            a.file_name().unwrap().to_str().unwrap(),
            "me@localhost+1993+INBOX.toml"
        );
        s.save(&a, C, "a").unwrap();
        let other = Cursor {
            uid_validity: 7,
            next_uid: 3,
        };
        s.save(&b, other, "b").unwrap();
        assert_eq!(s.load(&a), Loaded::Found(C));
        assert_eq!(s.load(&b), Loaded::Found(other));
        // The port is a part of its own: no host or mailbox can imitate it.
        assert_ne!(
            file_stem("me", "h", 993, "1+INBOX"),
            file_stem("me", "h+993", 1, "INBOX")
        );
        assert_ne!(
            file_stem("me", "h", 993, "INBOX"),
            legacy_file_stem("me", "h", "INBOX")
        );
    }

    #[test]
    fn a_file_named_without_the_port_is_adopted_once() {
        let (_d, s) = store();
        fs::create_dir_all(s.dir()).unwrap();
        let legacy = s
            .dir()
            .join(format!("{}.toml", legacy_file_stem("me", "Host", "INBOX")));
        assert_eq!(legacy.file_name().unwrap(), "me@host+INBOX.toml");
        s.save(&legacy, C, "from an earlier version").unwrap();

        let p = s.path_migrated("me", "HOST", 993, "INBOX");
        assert_eq!(p, s.path("me", "host", 993, "INBOX"));
        assert_eq!(s.load(&p), Loaded::Found(C));
        assert!(!legacy.exists(), "renamed, not copied");

        // A second account on another port finds nothing left to adopt: it starts afresh.
        let q = s.path_migrated("me", "host", 143, "INBOX");
        assert_eq!(s.load(&q), Loaded::Missing);

        // A current file is never replaced by an old one.
        let newer = Cursor { next_uid: 99, ..C };
        s.save(&p, newer, "x").unwrap();
        s.save(&legacy, C, "stale").unwrap();
        assert_eq!(s.path_migrated("me", "host", 993, "INBOX"), p);
        assert_eq!(s.load(&p), Loaded::Found(newer));
        assert!(legacy.exists());

        // Nothing to adopt, nothing done; no directory needed.
        let empty = StateStore::new(s.dir().join("missing"));
        let r = empty.path_migrated("u", "h", 1, "INBOX");
        assert_eq!(empty.load(&r), Loaded::Missing);
    }

    #[test]
    fn default_dir_follows_xdg() {
        assert_eq!(
            StateStore::default_dir(Some("/s".into()), Some("/home/u".into())),
            PathBuf::from("/s/mailpushd")
        );
        assert_eq!(
            StateStore::default_dir(None, Some("/home/u".into())),
            PathBuf::from("/home/u/.local/state/mailpushd")
        );
    }

    // Found by fuzz/fuzz_targets/state_names.rs (fuzz/README.md, known bug `state-comment`).
    #[test]
    fn control_characters_in_the_description_keep_the_file_loadable() {
        let (_d, s) = store();
        let p = s.path("u", "h", 993, "INBOX");
        // The watcher's description is "{username} on {host}, mailbox {mailbox}"; the config
        // lets a username hold any character and a mailbox any but CR, LF and NUL.
        for description in [
            "me\nuid_validity = 9 on h, mailbox INBOX",
            "u on h, mailbox a\u{1}b",
            "u on h, mailbox a\u{1b}[31m",
            "u on h\r, mailbox INBOX",
            "u\0 on h, mailbox \u{7f}",
        ] {
            s.save(&p, C, description).unwrap();
            assert_eq!(s.load(&p), Loaded::Found(C), "{description:?}");
        }
    }

    // Found by fuzz/fuzz_targets/state_names.rs (fuzz/README.md, known bug `state-stem`).
    #[test]
    fn distinct_mailboxes_never_share_a_state_file() {
        // `user@host/mailbox` is joined before it is encoded, so an `@` or `/` inside a
        // part can move the boundaries.
        assert_ne!(
            file_stem("alice", "imap.example.com", 993, "lists@work/archive"),
            file_stem("alice@imap.example.com/lists", "work", 993, "archive")
        );
        assert_ne!(
            file_stem("me@example.com", "imap.example.com", 993, "INBOX"),
            file_stem("me", "example.com@imap.example.com", 993, "INBOX")
        );
    }

    // Found by fuzz/fuzz_targets/state_load.rs (fuzz/README.md, known bug `state-range`).
    #[test]
    fn a_cursor_past_the_last_uid_plus_one_is_corrupt() {
        let (_d, s) = store();
        let p = s.path("u", "h", 993, "INBOX");
        fs::create_dir_all(s.dir()).unwrap();
        // 2^32 (after UID 4294967295) is the highest cursor a mailbox can reach; a higher
        // one would silence the mailbox until UIDVALIDITY changes.
        fs::write(&p, "uid_validity = 1\nnext_uid = 4294967296\n").unwrap();
        assert!(matches!(s.load(&p), Loaded::Found(_)));
        fs::write(&p, "uid_validity = 1\nnext_uid = 4294967297\n").unwrap();
        assert!(
            matches!(s.load(&p), Loaded::Corrupt { .. }),
            "{:?}",
            s.load(&p)
        );
    }
}
