//! Watches the config file for changes and tells the supervisor, debounced.
//!
//! It watches the file's *directory* with inotify, not the file: editors save by writing a
//! new file and renaming it over the old one (and Nix/home-manager swap symlinks), which a
//! watch on the old inode would never see. A burst of events (write, rename, chmod) is
//! reported once, after the directory has been quiet for a moment. The thread blocks in
//! poll(2) without a timeout while nothing happens: no wakeups while idle.
//!
//! The directory itself may be replaced too (a dotfiles tool that moves the old one away and
//! puts a new one in its place, or deletes and recreates it). The watch then follows the
//! old directory or ends (IN_MOVE_SELF, IN_DELETE_SELF, IN_IGNORED), so the thread watches
//! the path again, waiting up to [`REWATCH_FOR`] for a directory to appear there, and
//! reports a change: the new directory's file is read.

use std::ffi::OsStr;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;
use rustix::time::Timespec;

use crate::event::Event;

/// Quiet time that ends a burst of events.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// How long a replaced directory may be missing before watching gives up.
pub const REWATCH_FOR: Duration = Duration::from_secs(10);
/// How often a missing directory is looked for meanwhile.
const REWATCH_EVERY: Duration = Duration::from_millis(100);

/// What happens in the directory that matters here.
const DIR_EVENTS: WatchFlags = WatchFlags::CLOSE_WRITE
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::CREATE)
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR);

/// Starts the watcher thread for `config_path`.
pub fn spawn(config_path: &Path, events: Sender<Event>) -> std::io::Result<()> {
    let dir = match config_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => Path::new(".").to_owned(),
    };
    let name = config_path
        .file_name()
        .ok_or_else(|| std::io::Error::other("config path has no file name"))?
        .to_owned();
    let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
    let wd = inotify::add_watch(&fd, &dir, DIR_EVENTS)?;
    let watch = DirWatch { fd, dir, wd };
    std::thread::Builder::new()
        .name("config-watch".into())
        .spawn(move || watch.run(&name, &events))?;
    Ok(())
}

/// The inotify instance and the one watch on the config file's directory.
struct DirWatch {
    fd: OwnedFd,
    dir: PathBuf,
    /// The current watch; events of earlier ones (an IN_IGNORED after a re-watch) are
    /// told apart by it.
    wd: i32,
}

/// What one read of the queue found.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    /// Something happened to the config file (or events were lost).
    file: bool,
    /// The watched directory was moved or deleted, or its watch ended.
    dir_replaced: bool,
}

impl DirWatch {
    fn run(mut self, name: &OsStr, events: &Sender<Event>) {
        loop {
            if wait(&self.fd, None).is_err() {
                return;
            }
            match self.read(name) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    log::warn!("config file watching stopped: {e}; SIGHUP still reloads");
                    return;
                }
            }
            // Let the burst settle: one reload for write + rename + chmod.
            while let Ok(true) = wait(&self.fd, Some(DEBOUNCE)) {
                if let Err(e) = self.read(name) {
                    log::warn!("config file watching stopped: {e}; SIGHUP still reloads");
                    return;
                }
            }
            if events.send(Event::ConfigChanged).is_err() {
                return;
            }
        }
    }

    /// Reads the queue; re-watches the directory if it was replaced. True if the config
    /// may have changed.
    fn read(&mut self, name: &OsStr) -> std::io::Result<bool> {
        let seen = drain(&self.fd, name, self.wd)?;
        if seen.dir_replaced {
            self.rewatch()?;
            return Ok(true);
        }
        Ok(seen.file)
    }

    /// Watches the directory path again, whatever is there now, waiting up to
    /// [`REWATCH_FOR`] for it to exist.
    fn rewatch(&mut self) -> std::io::Result<()> {
        // Gone already after IN_DELETE_SELF/IN_IGNORED; after IN_MOVE_SELF it still
        // follows the old directory, wherever that went.
        let _ = inotify::remove_watch(&self.fd, self.wd);
        let give_up = Instant::now() + REWATCH_FOR;
        let mut said = false;
        loop {
            match inotify::add_watch(&self.fd, &self.dir, DIR_EVENTS) {
                Ok(wd) => {
                    self.wd = wd;
                    log::info!(
                        "config directory {} was replaced; watching the new one",
                        self.dir.display()
                    );
                    return Ok(());
                }
                Err(e @ (Errno::NOENT | Errno::NOTDIR)) if Instant::now() < give_up => {
                    if !std::mem::replace(&mut said, true) {
                        log::info!(
                            "config directory {} is gone ({e}); waiting up to {}s for it",
                            self.dir.display(),
                            REWATCH_FOR.as_secs()
                        );
                    }
                    std::thread::sleep(REWATCH_EVERY);
                }
                Err(e) => {
                    return Err(std::io::Error::other(format!(
                        "cannot watch {} again: {e}",
                        self.dir.display()
                    )))
                }
            }
        }
    }
}

/// Blocks until the inotify fd is readable (true) or `timeout` passes (false).
fn wait(fd: &OwnedFd, timeout: Option<Duration>) -> rustix::io::Result<bool> {
    let ts = timeout.map(|t| Timespec {
        tv_sec: t.as_secs() as i64,
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    loop {
        match poll(&mut fds, ts.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reads every pending event: whether any concerns the config file (or events were lost),
/// and whether the watch `wd` on the directory ended or follows a moved directory.
fn drain(fd: &OwnedFd, name: &OsStr, wd: i32) -> rustix::io::Result<Seen> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    let mut seen = Seen::default();
    loop {
        match reader.next() {
            Ok(event) => {
                let flags = event.events();
                seen.file |= flags.contains(ReadFlags::QUEUE_OVERFLOW)
                    || event
                        .file_name()
                        .is_some_and(|f| f.to_bytes() == name.as_bytes());
                seen.dir_replaced |= event.wd() == wd
                    && flags.intersects(
                        ReadFlags::DELETE_SELF
                            | ReadFlags::MOVE_SELF
                            | ReadFlags::IGNORED
                            | ReadFlags::UNMOUNT,
                    );
            }
            Err(Errno::AGAIN) => return Ok(seen),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::sync::mpsc::{self, Receiver};

    const WAIT: Duration = Duration::from_secs(10);

    fn changed(rx: &Receiver<Event>) -> bool {
        matches!(rx.recv_timeout(WAIT), Ok(Event::ConfigChanged))
    }

    /// Nothing more is reported: waits a whole debounce period and a little more.
    fn quiet(rx: &Receiver<Event>) -> bool {
        rx.recv_timeout(DEBOUNCE * 3).is_err()
    }

    #[test]
    fn a_replaced_directory_is_watched_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("mailpushd");
        fs::create_dir(&dir).unwrap();
        let config = dir.join("config.toml");
        fs::write(&config, "a").unwrap();
        let (tx, rx) = mpsc::channel();
        spawn(&config, tx).unwrap();

        fs::write(&config, "b").unwrap();
        assert!(changed(&rx), "an edit in place");

        // Moved away and a new one put in its place (a dotfiles deploy).
        fs::rename(&dir, root.path().join("old")).unwrap();
        fs::create_dir(&dir).unwrap();
        fs::write(&config, "c").unwrap();
        assert!(changed(&rx), "the directory was replaced");
        assert!(quiet(&rx));
        // The old directory is no longer watched; the new one is.
        fs::write(root.path().join("old").join("config.toml"), "x").unwrap();
        assert!(quiet(&rx), "an edit in the old directory");
        fs::write(&config, "d").unwrap();
        assert!(changed(&rx), "an edit in the new directory");

        // Deleted, and back a moment later (the file's deletion alone may be reported
        // first: one or two changes, then quiet).
        fs::remove_file(&config).unwrap();
        fs::remove_dir(&dir).unwrap();
        fs::create_dir(&dir).unwrap();
        fs::write(&config, "e").unwrap();
        assert!(changed(&rx), "the directory came back");
        let settled = (0..10).any(|_| quiet(&rx));
        assert!(settled, "still reporting changes");
        fs::write(&config, "f").unwrap();
        assert!(changed(&rx), "an edit in the recreated directory");
    }
}
