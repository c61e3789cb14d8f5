//! One daemon per state directory: an exclusive `flock` on `lock` in the state directory,
//! held for the daemon's lifetime.
//!
//! Two daemons on one state directory (the user unit, and `mailpushd -v` started in a
//! terminal) would show every popup, write every syslog line and run every hook twice, and
//! race on the state files. The second one therefore refuses to start, naming the PID that
//! holds the lock, which the holder writes into the file.
//!
//! The lock belongs to the open file description, which is close-on-exec: hooks and
//! password commands never inherit it, so a hook's leftover background process cannot keep
//! a restarted daemon out. The kernel drops the lock when the process dies, however it
//! dies, so a stale lock file is harmless and never needs removing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "lock";

/// How long a second instance waits for the first to write its PID into a lock file it has
/// just locked (only the moment between `flock` and the write).
const PID_WAIT: Duration = Duration::from_millis(200);

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Another process holds the lock. `pid` is what it wrote into the file: `None` if the
    /// file held no PID (yet).
    #[error(
        "another mailpushd is already running on state directory {dir} ({}); \
         stop it first (systemctl --user stop mailpushd, or kill {})",
        .pid.map_or_else(|| "PID unknown".to_owned(), |p| format!("PID {p}")),
        .pid.map_or_else(|| "it".to_owned(), |p| p.to_string())
    )]
    Running { dir: PathBuf, pid: Option<u32> },
    /// The state directory or the lock file could not be created or locked.
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The held lock; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock on `state_dir` (created, mode 0700, if missing) without waiting, and
    /// writes this process's PID into the lock file.
    ///
    /// # Errors
    /// [`InstanceError::Running`] if another process holds it; [`InstanceError::Io`] if the
    /// directory or file cannot be created, opened or locked.
    pub fn acquire(state_dir: &Path) -> Result<InstanceLock, InstanceError> {
        let path = state_dir.join(LOCK_FILE);
        let io_err = |source| InstanceError::Io {
            path: path.clone(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(io_err)?;
        // Not truncated on open: the holder's PID must survive a second instance's look.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                return Err(InstanceError::Running {
                    dir: state_dir.to_owned(),
                    pid: holder_pid(&mut file),
                })
            }
            Err(e) => return Err(io_err(e.into())),
        }
        let write = |file: &mut File| -> io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(format!("{}\n", std::process::id()).as_bytes())
        };
        write(&mut file).map_err(io_err)?;
        Ok(InstanceLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The PID in a lock file someone else holds, waiting briefly in case the holder has only
/// just locked it and not yet written it.
fn holder_pid(file: &mut File) -> Option<u32> {
    let deadline = Instant::now() + PID_WAIT;
    loop {
        let mut text = String::new();
        let read = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_string(&mut text));
        if read.is_ok() {
            if let Some(pid) = parse_pid(&text) {
                return Some(pid);
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A PID on a line of its own, as [`InstanceLock::acquire`] writes it.
fn parse_pid(text: &str) -> Option<u32> {
    text.strip_suffix('\n')?.parse().ok().filter(|&p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state").join("mailpushd");
        let first = InstanceLock::acquire(&state).unwrap();
        assert_eq!(first.path(), state.join(LOCK_FILE));
        assert_eq!(
            fs::read_to_string(first.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // flock locks belong to the open file description: a second open in the same
        // process conflicts just as another process's would.
        match InstanceLock::acquire(&state) {
            Err(InstanceError::Running { pid, dir }) => {
                assert_eq!(pid, Some(std::process::id()));
                assert_eq!(dir, state);
            }
            other => panic!("{other:?}"),
        }
        // The refused attempt left the holder's PID in place.
        assert_eq!(
            fs::read_to_string(first.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(first);
        let again = InstanceLock::acquire(&state).unwrap();
        drop(again);
    }

    #[test]
    fn a_stale_file_from_a_dead_holder_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LOCK_FILE), "999999999\n").unwrap();
        let lock = InstanceLock::acquire(dir.path()).unwrap();
        assert_eq!(
            fs::read_to_string(lock.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
    }

    #[test]
    fn the_message_names_the_pid_and_the_directory() {
        let e = InstanceError::Running {
            dir: "/s/mailpushd".into(),
            pid: Some(4242),
        };
        let text = e.to_string();
        assert!(text.contains("PID 4242"), "{text}");
        assert!(text.contains("/s/mailpushd"), "{text}");
        let unknown = InstanceError::Running {
            dir: "/s".into(),
            pid: None,
        }
        .to_string();
        assert!(unknown.contains("PID unknown"), "{unknown}");
        assert_eq!(parse_pid("12\n"), Some(12));
        assert_eq!(parse_pid("12"), None, "a half-written PID is no PID");
        assert_eq!(parse_pid("0\n"), None);
        assert_eq!(parse_pid(""), None);
    }
}
