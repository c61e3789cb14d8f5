//! Child processes the daemon runs for the user (hooks, `password_command`), each in a
//! process group of its own: reading their pipes without ever blocking, and killing the
//! whole group when they overrun, so nothing they started is left behind.
//!
//! The group id is the leader's pid, and it stays ours only while the leader is not yet
//! reaped: so the group is always killed *before* the leader is waited for, and callers
//! that must keep reading after the leader exits notice the exit with [`has_exited`],
//! which does not reap it.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::process::Child;

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

/// SIGKILL to the child's process group, then reap the child. The child must lead its own
/// group (`CommandExt::process_group(0)`) and not have been reaped yet, so that the group
/// id (its pid) cannot belong to anyone else. Falls back to killing the child alone if the
/// group is already empty of live processes or cannot be signalled.
pub fn kill_group(child: &mut Child) {
    let group = Pid::from_child(child);
    if rustix::process::kill_process_group(group, Signal::KILL).is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Whether the child has exited, *without* reaping it (`waitid` with `WNOWAIT`): its pid,
/// and so its process group id, stays reserved until [`Child::wait`] or [`kill_group`].
///
/// # Errors
/// The `waitid` error, e.g. `ECHILD` if the child was already reaped.
pub fn has_exited(child: &Child) -> io::Result<bool> {
    let pid = Pid::from_child(child);
    let status = rustix::process::waitid(
        WaitId::Pid(pid),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
    )?;
    Ok(status.is_some())
}

/// The first `limit` bytes a child writes to a pipe; the rest is read and dropped so the
/// child never blocks on a full pipe. The pipe is non-blocking: [`Capture::pump`] takes
/// what is there and returns at once.
pub struct Capture<P> {
    pipe: Option<P>,
    kept: Vec<u8>,
    limit: usize,
}

impl<P: Read + AsFd> Capture<P> {
    /// Captures from `pipe` (none: nothing to read, already at end of file). A pipe that
    /// cannot be made non-blocking (it always can) is dropped rather than risk a block.
    pub fn new(pipe: Option<P>, limit: usize) -> Self {
        let pipe = pipe.filter(|p| rustix::io::ioctl_fionbio(p, true).is_ok());
        Capture {
            pipe,
            kept: Vec::new(),
            limit,
        }
    }

    /// Reads what is there, at most 64 KiB a call so a flood cannot hold up a timeout.
    pub fn pump(&mut self) {
        let Some(pipe) = self.pipe.as_mut() else {
            return;
        };
        let mut chunk = [0u8; 4096];
        for _ in 0..16 {
            match pipe.read(&mut chunk) {
                Ok(0) => {
                    self.pipe = None;
                    return;
                }
                Ok(n) => {
                    let room = self.limit - self.kept.len();
                    self.kept.extend_from_slice(&chunk[..n.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.pipe = None;
                    return;
                }
            }
        }
    }

    /// True until end of file: some process still holds the pipe's write end.
    pub fn is_open(&self) -> bool {
        self.pipe.is_some()
    }

    /// A last read, then what was kept. The pipe is closed here, even if a process the
    /// child left behind still holds its other end.
    pub fn finish(mut self) -> Vec<u8> {
        self.pump();
        self.kept
    }
}
