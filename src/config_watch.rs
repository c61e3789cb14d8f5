//! Watches the config file for changes and tells the supervisor, debounced.
//!
//! It watches the file's *directory* with inotify, not the file: editors save by writing a
//! new file and renaming it over the old one (and Nix/home-manager swap symlinks), which a
//! watch on the old inode would never see. A burst of events (write, rename, chmod) is
//! reported once, after the directory has been quiet for a moment. The thread blocks in
//! poll(2) without a timeout while nothing happens: no wakeups while idle.

use std::ffi::OsStr;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::mpsc::Sender;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;
use rustix::time::Timespec;

use crate::event::Event;

/// Quiet time that ends a burst of events.
const DEBOUNCE: Duration = Duration::from_millis(250);

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
    inotify::add_watch(
        &fd,
        &dir,
        WatchFlags::CLOSE_WRITE
            | WatchFlags::MOVED_TO
            | WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM,
    )?;
    std::thread::Builder::new()
        .name("config-watch".into())
        .spawn(move || watch(fd, &name, &events))?;
    Ok(())
}

fn watch(fd: OwnedFd, name: &OsStr, events: &Sender<Event>) {
    loop {
        if wait(&fd, None).is_err() {
            return;
        }
        match drain(&fd, name) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                log::warn!("config file watching stopped: {e}; SIGHUP still reloads");
                return;
            }
        }
        // Let the burst settle: one reload for write + rename + chmod.
        while let Ok(true) = wait(&fd, Some(DEBOUNCE)) {
            if drain(&fd, name).is_err() {
                break;
            }
        }
        if events.send(Event::ConfigChanged).is_err() {
            return;
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

/// Reads every pending event; true if any concerns the config file (or events were lost).
fn drain(fd: &OwnedFd, name: &OsStr) -> rustix::io::Result<bool> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    let mut relevant = false;
    loop {
        match reader.next() {
            Ok(event) => {
                relevant |= event.events().contains(ReadFlags::QUEUE_OVERFLOW)
                    || event
                        .file_name()
                        .is_some_and(|f| f.to_bytes() == name.as_bytes());
            }
            Err(Errno::AGAIN) => return Ok(relevant),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
