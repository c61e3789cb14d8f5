//! Runs the real `mailpushd` binary under test, with a config file, environment and home
//! directory of its own, and captures its output.
//!
//! Owns: the daemon's scratch directory (config, HOME, XDG dirs), the child process, and the
//! reader threads that collect its stdout/stderr lines.
//!
//! The environment is built explicitly rather than inherited as-is: a developer's real
//! session bus, journal or systemd notify socket must never be reached from a test.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::dbus::SessionBus;
use super::{lock, spawn_tracked, wait_until, TrackedChild};

/// Command-line arguments after the binary, with `{config}` replaced by the config path.
/// Kept in one place so a CLI change is a one-line fix here.
pub const DAEMON_ARGS: &[&str] = &["--config", "{config}", "-v"];

/// How long `terminate` waits for a clean exit after SIGTERM before SIGKILL (and panic).
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Daemon {
    process: TrackedChild,
    output: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    config_path: PathBuf,
    // Held for its `Drop`, and last: the process is stopped (in `Drop`) before its
    // directory goes.
    _dir: TempDir,
}

impl Daemon {
    /// Writes `config_toml` to `<tempdir>/config.toml` and starts the daemon on it.
    /// With `bus == None`, `DBUS_SESSION_BUS_ADDRESS` points at a socket that does not exist,
    /// so notifications fail the way they do without a desktop session.
    pub fn start(config_toml: &str, bus: Option<&SessionBus>) -> Daemon {
        Self::start_inner(config_toml, bus, None, &[])
    }

    /// Like [`Daemon::start`], with `XDG_STATE_HOME` at `state_home` so that successive
    /// daemons share their persisted state (restart tests).
    pub fn start_with_state(
        config_toml: &str,
        bus: Option<&SessionBus>,
        state_home: &Path,
    ) -> Daemon {
        Self::start_inner(config_toml, bus, Some(state_home), &[])
    }

    /// Like [`Daemon::start_with_state`], with extra environment variables set after the
    /// defaults (e.g. `NOTIFY_SOCKET` and `WATCHDOG_USEC` for the sd_notify tests).
    pub fn start_with_env(
        config_toml: &str,
        bus: Option<&SessionBus>,
        state_home: &Path,
        env: &[(&str, &str)],
    ) -> Daemon {
        Self::start_inner(config_toml, bus, Some(state_home), env)
    }

    /// Like [`Daemon::start_with_state`], on a config file the test wrote itself at
    /// `config_path` (to move or replace its directory).
    pub fn start_at(config_path: &Path, bus: Option<&SessionBus>, state_home: &Path) -> Daemon {
        Self::start_inner_at(None, Some(config_path), bus, Some(state_home), &[])
    }

    fn start_inner(
        config_toml: &str,
        bus: Option<&SessionBus>,
        state_home: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Daemon {
        Self::start_inner_at(Some(config_toml), None, bus, state_home, env)
    }

    fn start_inner_at(
        config_toml: Option<&str>,
        config_at: Option<&Path>,
        bus: Option<&SessionBus>,
        state_home: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("mailpushd-daemon.")
            .tempdir()
            .expect("create daemon temp dir");
        let config_path =
            config_at.map_or_else(|| dir.path().join("config.toml"), Path::to_path_buf);
        if let Some(text) = config_toml {
            std::fs::write(&config_path, text).expect("write daemon config");
        }
        let home = dir.path().join("home");
        let state = state_home.map_or_else(|| dir.path().join("state"), Path::to_path_buf);
        let config_home = dir.path().join("config");
        for d in [&home, &state, &config_home] {
            std::fs::create_dir_all(d).expect("create daemon dirs");
        }
        let bus_address = match bus {
            Some(bus) => bus.address.clone(),
            None => format!("unix:path={}", dir.path().join("no-bus").display()),
        };

        // `option_env!`, not `env!`: Cargo defines this for integration tests only, and
        // examples/demo.rs compiles this module too (it never starts a `Daemon`).
        let Some(binary) = option_env!("CARGO_BIN_EXE_mailpushd") else {
            panic!("CARGO_BIN_EXE_mailpushd is set by Cargo for integration tests only");
        };
        // MAILPUSHD_WRAP runs the daemon under a profiler for measurements, e.g.
        // `MAILPUSHD_WRAP="heaptrack -o /tmp/hp"` (words split on spaces; unset in tests).
        let wrap = std::env::var("MAILPUSHD_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut cmd = match words.next() {
            Some(tool) => {
                let mut c = Command::new(tool);
                c.args(words).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let config_str = config_path.to_string_lossy();
        let args = DAEMON_ARGS
            .iter()
            .map(|a| a.replace("{config}", &config_str));
        cmd.args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", bus_address)
            .env("XDG_STATE_HOME", &state)
            .env("XDG_CONFIG_HOME", &config_home)
            .env("HOME", &home)
            .env("RUST_BACKTRACE", "1")
            // Not a systemd service here: no journal stream detection, no sd_notify.
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("INVOCATION_ID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            // Logging level comes from -v, not from whatever the developer has set.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }

        let process = spawn_tracked("mailpushd", &mut cmd).expect("spawn mailpushd");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (stdout, stderr) = process.take_stdio(|c| (c.stdout.take(), c.stderr.take()));
        let pid = process.pid();
        let readers = vec![
            spawn_reader(format!("mailpushd[{pid}] out"), stdout, &output),
            spawn_reader(format!("mailpushd[{pid}] err"), stderr, &output),
        ];

        Daemon {
            process,
            output,
            readers,
            config_path,
            _dir: dir,
        }
    }

    /// All captured stdout and stderr lines so far, joined with '\n', interleaved in the
    /// order the reader threads saw them.
    pub fn output(&self) -> String {
        lock(&self.output).join("\n")
    }

    pub fn output_lines(&self) -> Vec<String> {
        lock(&self.output).clone()
    }

    /// Waits until an output line contains `needle`; returns that line. Fails early (with
    /// the output) if the daemon exits first.
    pub fn wait_for_output(&self, timeout: Duration, needle: &str) -> String {
        let what = format!("daemon output containing {needle:?}");
        let found = wait_until(timeout, &what, || {
            if let Some(line) = lock(&self.output).iter().find(|l| l.contains(needle)) {
                return Some(Ok(line.clone()));
            }
            self.process.try_wait().map(Err)
        });
        match found {
            Ok(line) => line,
            Err(status) => {
                // Let the readers drain what the daemon wrote before it died.
                self.join_readers_briefly();
                let output = self.output();
                if let Some(line) = output.lines().find(|l| l.contains(needle)) {
                    return line.to_owned();
                }
                panic!("daemon exited with {status} before printing {needle:?}; output:\n{output}");
            }
        }
    }

    /// Number of output lines containing `needle`.
    /// Waits until at least `n` output lines contain `needle`.
    pub fn wait_for_output_count(&self, timeout: Duration, needle: &str, n: usize) {
        wait_until(
            timeout,
            &format!("{n} output lines containing {needle:?}"),
            || (self.count_output(needle) >= n).then_some(()),
        );
    }

    pub fn count_output(&self, needle: &str) -> usize {
        lock(&self.output)
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `Some(status)` once the daemon has exited (e.g. on a config error).
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.process.try_wait()
    }

    /// Waits for the daemon to exit by itself; panics with its output after `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> ExitStatus {
        let status = wait_until(timeout, "mailpushd to exit", || self.process.try_wait());
        self.join_readers_briefly();
        status
    }

    /// Sends a signal by kill(1) name ("HUP", "INT", "USR1", ...).
    pub fn signal(&self, signal: &str) -> bool {
        self.process.signal(signal)
    }

    /// SIGTERM, then waits for the exit. Returns the status and the time from the signal to
    /// the exit. Panics (after SIGKILL) if the daemon takes longer than
    /// [`TERMINATE_TIMEOUT`].
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let sent = Instant::now();
        if let Some(status) = self.process.try_wait() {
            panic!(
                "daemon had already exited with {status} before SIGTERM; output:\n{}",
                self.output()
            );
        }
        self.process.signal("TERM");
        match self.process.wait_timeout(TERMINATE_TIMEOUT) {
            Some(status) => {
                let elapsed = sent.elapsed();
                self.join_readers_briefly();
                (status, elapsed)
            }
            None => {
                self.process.kill();
                panic!(
                    "daemon did not exit within {TERMINATE_TIMEOUT:?} of SIGTERM; output:\n{}",
                    self.output()
                );
            }
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.config_path.clone()
    }

    /// After the process exited, its pipes close and the readers finish; wait a little for
    /// them so `output()` has the last lines. Bounded because a grandchild holding the pipe
    /// open would keep a reader alive.
    fn join_readers_briefly(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && !self.readers.iter().all(|r| r.is_finished()) {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Hard kill: a test that wanted a graceful stop called `terminate`.
        self.process.kill();
        self.join_readers_briefly();
        for reader in self.readers.drain(..) {
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
    }
}

fn spawn_reader(
    prefix: String,
    stream: Option<impl Read + Send + 'static>,
    output: &Arc<Mutex<Vec<String>>>,
) -> JoinHandle<()> {
    let output = Arc::clone(output);
    thread::Builder::new()
        .name(format!("{prefix} reader"))
        .spawn(move || {
            let Some(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_owned();
                        // Captured by the test harness and shown when the test fails.
                        eprintln!("[{prefix}] {line}");
                        lock(&output).push(line);
                    }
                }
            }
        })
        .expect("spawn output reader thread")
}
