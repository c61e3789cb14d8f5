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
use std::process::{Child, Command};

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

/// The environment variables that carry an activation token to a program being started.
/// `XDG_ACTIVATION_TOKEN` is the Wayland one: the xdg-activation-v1 protocol's description
/// names it as the established way to hand a token to a newly launched child.
/// `DESKTOP_STARTUP_ID` is the X11 startup-notification one. GLib's launcher
/// (`g_desktop_app_info_launch_uris_with_spawn` in gio/gdesktopappinfo.c) sets
/// `DESKTOP_STARTUP_ID`, and in current releases `XDG_ACTIVATION_TOKEN` too, to the same
/// id; toolkits read whichever their display uses.
pub const ACTIVATION_ENV: [&str; 2] = ["XDG_ACTIVATION_TOKEN", "DESKTOP_STARTUP_ID"];

/// Variables of the daemon's own environment that no child may inherit: systemd's notify
/// socket (only the daemon speaks to systemd, `NotifyAccess=main`) and an activation
/// token the daemon was started with (spent long ago; a click's own token is set by
/// src/daemon/actions.rs for `open_command` alone).
pub const WITHHELD_ENV: [&str; 3] = ["NOTIFY_SOCKET", ACTIVATION_ENV[0], ACTIVATION_ENV[1]];

/// Removes [`WITHHELD_ENV`] from `command`'s environment (the daemon's stays as it is).
pub fn withhold_env(command: &mut Command) -> &mut Command {
    for name in WITHHELD_ENV {
        command.env_remove(name);
    }
    command
}

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

#[cfg(test)]
mod tests {
    #[test]
    fn the_daemons_own_variables_are_withheld() {
        let mut c = std::process::Command::new("true");
        super::withhold_env(&mut c);
        let removed: Vec<_> = c
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            removed,
            [
                "DESKTOP_STARTUP_ID",
                "NOTIFY_SOCKET",
                "XDG_ACTIVATION_TOKEN"
            ]
        );
    }
}
