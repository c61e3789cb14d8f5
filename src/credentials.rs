//! Turning an account's [`Secret`] into a password at connect time.
//!
//! `password_command` (and `oauth2_token_command`) is an argv list run directly (never through a shell) at every connect,
//! so a password manager's current answer is always used. Its stdout is the password; what
//! it prints is never logged.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Secret;

/// How long a password command may take (a keyring prompt may need a moment).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

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
    #[error(
        "credential command {program:?} did not finish within {0:?}",
        COMMAND_TIMEOUT
    )]
    Timeout { program: String },
    #[error("credential command {program:?} printed nothing")]
    Empty { program: String },
}

/// The password (or OAuth2 token) for one connection attempt.
pub fn resolve(secret: &Secret) -> Result<String, CredentialError> {
    match secret {
        Secret::Password(p) => Ok(p.clone()),
        Secret::Command(argv) | Secret::TokenCommand(argv) => run(argv),
    }
}

fn run(argv: &[String]) -> Result<String, CredentialError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut child = Command::new(&program)
        .args(&argv[1..])
        // Only the daemon speaks to systemd (NotifyAccess=main).
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CredentialError::Spawn {
            program: program.clone(),
            source,
        })?;
    // Read both pipes on helper threads so a chatty command cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.take(4096).read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CredentialError::Timeout { program });
            }
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
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
}
