//! Turning an account's [`Secret`] into a password at connect time.
//!
//! `password_command` (and `oauth2_token_command`) is an argv list run directly (never through a shell) at every connect,
//! so a password manager's current answer is always used. Its stdout is the password; what
//! it prints is never logged.
//!
//! Every wait is bounded by one deadline ([`COMMAND_TIMEOUT`]), pipes included: the command
//! runs in a process group of its own ([`crate::child`], as hooks do), its pipes are read
//! without blocking, and at the deadline the whole group is killed. A helper that exits but
//! leaves a background process holding its stdout (`sh -c 'agent & echo pw'`) gets
//! [`DRAIN_GRACE`] for the pipes to close, then that group is killed too and what it printed
//! is used. The caller can cut the wait short (a watcher being stopped or reloaded).

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::child::{self, Capture};
use crate::config::Secret;

/// How long a password command may take (a keyring prompt may need a moment), from start to
/// the end of its output.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// After the command itself exits, how long its pipes may stay open (held by a process it
/// left behind) before its process group is killed.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// How often a running command is looked at (exit, output, deadline, stop).
const TICK: Duration = Duration::from_millis(10);
/// Most of stdout that is kept: far more than any password or token.
const STDOUT_LIMIT: usize = 64 * 1024;
/// Most of stderr that is kept; only its first line is reported.
const STDERR_LIMIT: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("credential command {program:?} could not be started: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("credential command {program:?} failed ({status}){stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    /// Still running (or its output still open) at the deadline; its process group was
    /// killed.
    #[error("credential command {program:?} did not finish within {timeout:?}")]
    Timeout { program: String, timeout: Duration },
    /// The caller asked to stop (shutdown, reload); its process group was killed.
    #[error("credential command {program:?} interrupted: stopping")]
    Stopped { program: String },
    /// Waiting for it failed; its process group was killed.
    #[error("credential command {program:?}: cannot wait for it: {source}")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("credential command {program:?} printed nothing")]
    Empty { program: String },
}

/// The password (or OAuth2 token) for one connection attempt. A command may take up to
/// [`COMMAND_TIMEOUT`].
///
/// # Errors
/// [`CredentialError`]: the command could not start, failed, printed nothing or overran.
pub fn resolve(secret: &Secret) -> Result<String, CredentialError> {
    resolve_until(secret, || false)
}

/// [`resolve`], giving up as soon as `stopped()` returns true (it is asked every 10 ms
/// while a command runs): the command's process group is killed and
/// [`CredentialError::Stopped`] returned.
///
/// # Errors
/// As [`resolve`], plus [`CredentialError::Stopped`].
pub fn resolve_until(
    secret: &Secret,
    stopped: impl Fn() -> bool,
) -> Result<String, CredentialError> {
    match secret {
        Secret::Password(p) => Ok(p.clone()),
        Secret::Command(argv) | Secret::TokenCommand(argv) => run(argv, COMMAND_TIMEOUT, &stopped),
    }
}

/// How a command's run ended, before its output is judged.
enum End {
    /// Exited, and its pipes closed (or were given up on after [`DRAIN_GRACE`]).
    Exited {
        left_behind: bool,
    },
    TimedOut,
    Stopped,
    Lost(std::io::Error),
}

fn run(
    argv: &[String],
    timeout: Duration,
    stopped: &dyn Fn() -> bool,
) -> Result<String, CredentialError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut child = crate::child::withhold_env(&mut Command::new(&program))
        .args(argv.get(1..).unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // So that a timeout or stop kills whatever it started, too.
        .process_group(0)
        .spawn()
        .map_err(|source| CredentialError::Spawn {
            // A command of one word that is not a program may be a password written where
            // its command belongs: never put it in the log, syslog or a popup.
            program: if argv.len() > 1 || program.contains('/') {
                program.clone()
            } else {
                "<one word, not shown>".to_owned()
            },
            source,
        })?;
    let deadline = Instant::now() + timeout;
    let mut stdout = Capture::new(child.stdout.take(), STDOUT_LIMIT);
    let mut stderr = Capture::new(child.stderr.take(), STDERR_LIMIT);
    let mut exited_at: Option<Instant> = None;
    let end = loop {
        stdout.pump();
        stderr.pump();
        let now = Instant::now();
        if exited_at.is_none() {
            match child::has_exited(&child) {
                Ok(true) => exited_at = Some(now),
                Ok(false) => {}
                Err(e) => break End::Lost(e),
            }
        }
        if let Some(at) = exited_at {
            if !stdout.is_open() && !stderr.is_open() {
                break End::Exited { left_behind: false };
            }
            if now >= at + DRAIN_GRACE && now < deadline {
                break End::Exited { left_behind: true };
            }
        }
        if now >= deadline {
            break End::TimedOut;
        }
        if stopped() {
            break End::Stopped;
        }
        std::thread::sleep(TICK.min(deadline - now));
    };
    // The leader is not reaped yet (has_exited does not reap), so its group id is still
    // ours to kill; after a clean end there is nothing in it holding our pipes.
    let status = match end {
        End::Exited { left_behind: false } => child.wait(),
        End::Exited { left_behind: true } => {
            log::warn!(
                "credential command {program:?} exited but left a process holding its \
                 output; killed its process group"
            );
            child::kill_group(&mut child);
            child.wait()
        }
        End::TimedOut => {
            child::kill_group(&mut child);
            return Err(CredentialError::Timeout { program, timeout });
        }
        End::Stopped => {
            child::kill_group(&mut child);
            return Err(CredentialError::Stopped { program });
        }
        End::Lost(source) => {
            child::kill_group(&mut child);
            return Err(CredentialError::Wait { program, source });
        }
    };
    let status = status.map_err(|source| CredentialError::Wait {
        program: program.clone(),
        source,
    })?;
    let stdout = stdout.finish();
    let stderr = stderr.finish();
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        let first = stderr.lines().next().unwrap_or("").trim();
        return Err(CredentialError::Failed {
            program,
            status: status.to_string(),
            stderr: if first.is_empty() {
                String::new()
            } else {
                format!(": {}", crate::decode::one_line(first))
            },
        });
    }
    let mut password = String::from_utf8_lossy(&stdout).into_owned();
    // Only the trailing line break goes: a password may legitimately end in spaces.
    if password.ends_with('\n') {
        password.pop();
        if password.ends_with('\r') {
            password.pop();
        }
    }
    if password.is_empty() {
        return Err(CredentialError::Empty { program });
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Secret {
        Secret::Command(args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn command_output_trailing_newline_trimmed() {
        let p = resolve(&cmd(&["printf", "s3cret  \\n"])).unwrap();
        assert_eq!(p, "s3cret  ");
    }

    #[test]
    fn no_shell_is_involved() {
        // With a shell this would print "x"; without one, echo prints the text literally.
        let p = resolve(&cmd(&["echo", "$(echo x); true"])).unwrap();
        assert_eq!(p, "$(echo x); true");
    }

    #[test]
    fn failure_reports_status_and_stderr_not_stdout() {
        let e = resolve(&cmd(&["sh", "-c", "echo topsecret; echo nope >&2; exit 3"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(e.contains("nope"), "{e}");
        assert!(!e.contains("topsecret"), "{e}");
    }

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    /// Live (not zombie) processes in process group `pgid`.
    /// The group's live members once they are gone, or those still there after 3 s.
    /// SIGKILL is delivered asynchronously: a member can still run for a moment after the
    /// group was killed, longer on a loaded machine.
    fn members_left(pgid: u32) -> Vec<u32> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let left = live_members(pgid);
            if left.is_empty() || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn live_members(pgid: u32) -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    return false;
                };
                // After the command name (which may hold spaces): state, ppid, pgrp.
                let Some((_, rest)) = stat.rsplit_once(')') else {
                    return false;
                };
                let mut fields = rest.split_whitespace();
                let state = fields.next().unwrap_or("");
                let pgrp = fields.nth(1).and_then(|g| g.parse::<u32>().ok());
                pgrp == Some(pgid) && state != "Z" && state != "X"
            })
            .collect()
    }

    /// Runs `script` (sh -c), which must write its pid (`$$`, the process group) to `$1`;
    /// returns the result, how long it took, and the group.
    fn run_script(
        script: &str,
        timeout: Duration,
        stopped: &dyn Fn() -> bool,
    ) -> (Result<String, CredentialError>, Duration, u32) {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let started = Instant::now();
        let result = run(
            &argv(&["sh", "-c", script, "sh", pidfile.to_str().unwrap()]),
            timeout,
            stopped,
        );
        let elapsed = started.elapsed();
        let pgid = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (result, elapsed, pgid)
    }

    #[test]
    fn a_background_process_holding_stdout_does_not_hang_it_and_is_killed() {
        let (result, elapsed, pgid) = run_script(
            "echo $$ > \"$1\"; sleep 1000 & echo pw",
            Duration::from_secs(30),
            &|| false,
        );
        // The helper printed its answer and exited: that answer is used, after the grace.
        assert_eq!(result.unwrap(), "pw");
        assert!(elapsed >= DRAIN_GRACE, "{elapsed:?}");
        assert!(
            elapsed < DRAIN_GRACE + Duration::from_secs(3),
            "{elapsed:?}"
        );
        assert_eq!(
            members_left(pgid),
            Vec::<u32>::new(),
            "group {pgid} left behind"
        );
    }

    #[test]
    fn at_the_deadline_the_whole_group_is_killed() {
        // Still running itself, with a child of its own holding stdout too.
        let (result, elapsed, pgid) = run_script(
            "echo $$ > \"$1\"; sleep 1000 & sleep 1000",
            Duration::from_millis(500),
            &|| false,
        );
        assert!(
            matches!(result, Err(CredentialError::Timeout { .. })),
            "{result:?}"
        );
        assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
        assert_eq!(
            members_left(pgid),
            Vec::<u32>::new(),
            "group {pgid} left behind"
        );
    }

    #[test]
    fn a_stop_interrupts_it_and_kills_the_group() {
        let asked = Instant::now();
        let (result, elapsed, pgid) = run_script(
            "echo $$ > \"$1\"; sleep 1000 & sleep 1000",
            Duration::from_secs(60),
            &|| asked.elapsed() >= Duration::from_millis(300),
        );
        assert!(
            matches!(result, Err(CredentialError::Stopped { .. })),
            "{result:?}"
        );
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
        assert_eq!(
            members_left(pgid),
            Vec::<u32>::new(),
            "group {pgid} left behind"
        );
    }

    #[test]
    fn a_background_process_that_lets_go_of_the_pipes_is_not_waited_for() {
        // An agent started with its own stdio: not our business, and no grace to wait.
        let (result, elapsed, pgid) = run_script(
            "echo $$ > \"$1\"; sleep 2 >/dev/null 2>&1 & echo pw",
            Duration::from_secs(30),
            &|| false,
        );
        assert_eq!(result.unwrap(), "pw");
        assert!(elapsed < DRAIN_GRACE, "{elapsed:?}");
        // Ours to clean up: the sleep still holds the group id, so it is no one else's.
        let _ = rustix::process::kill_process_group(
            rustix::process::Pid::from_raw(pgid as i32).unwrap(),
            rustix::process::Signal::KILL,
        );
    }

    #[test]
    fn missing_program_and_empty_output() {
        assert!(matches!(
            resolve(&cmd(&["/nonexistent/mailpushd-pw"])),
            Err(CredentialError::Spawn { .. })
        ));
        assert!(matches!(
            resolve(&cmd(&["true"])),
            Err(CredentialError::Empty { .. })
        ));
    }

    #[test]
    fn a_password_written_as_the_command_is_not_logged() {
        // One word that is no program: what a password in `password_command` looks like.
        let e = resolve(&cmd(&["hunter2-91c2"])).unwrap_err();
        assert!(matches!(e, CredentialError::Spawn { .. }));
        assert!(!e.to_string().contains("hunter2"), "{e}");
        // A real command's name helps, and is kept.
        let e = resolve(&cmd(&["mailpushd-no-such-program", "show", "mail"])).unwrap_err();
        assert!(e.to_string().contains("mailpushd-no-such-program"), "{e}");
    }
}
