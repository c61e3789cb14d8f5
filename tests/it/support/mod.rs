//! Shared integration-test support: deadline-based waiting, per-test timeouts, and the
//! registry of child processes started by support code.
//!
//! The test binary's `main.rs` declares it once (`mod support;`) and every test module uses
//! it as `crate::support`; `examples/demo.rs` includes it by path for the Dovecot launcher.
//! The submodules own one external collaborator each: [`dovecot`] a real IMAP server,
//! [`dbus`] a private session bus with a recording notification server, [`syslog`] a
//! datagram socket standing in for `/dev/log`, and [`daemon`] the mailpushd binary under
//! test; [`proxy`] sits between the last and the first to inject network and server faults,
//! [`quirky`] is a scripted server with the quirks of real providers, and [`logs`] records
//! the library's own log lines for tests that drive it in-process.
//!
//! Child processes are never spawned directly by the submodules: they go through
//! [`spawn_tracked`], which records the child in a process-wide registry under the id of the
//! [`with_timeout`] scope that started it. When a test body overruns its limit its thread
//! cannot be cancelled, so its `Drop`s would never run; `with_timeout` then stops that
//! scope's children itself, and only those: tests run in parallel threads of one process, and
//! a timeout in one test must not take down another test's server.

pub mod daemon;
pub mod dbus;
pub mod dovecot;
pub mod logs;
pub mod proxy;
pub mod quirky;
pub mod rig;
pub mod syslog;

use std::cell::Cell;
use std::fs;
use std::io::Read;
use std::panic;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// How often [`wait_until`] re-checks its condition. Short enough not to slow tests down,
/// long enough not to burn a core while a server starts.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The config file of issue 13: five mistakes of five kinds (a string for a number, a
/// misspelt key, a duplicate account name, a misspelt provider, a command as one string).
/// The unit tests and the `config` fuzz target's seeds read the same file.
pub const FIVE_MISTAKES: &str = include_str!("../../data/five-mistakes.toml");

/// Polls `f` every ~20 ms until it returns `Some`, and returns that value.
///
/// Panics with `timed out after {timeout:?} waiting for {what}` when the deadline passes.
/// `f` is always called at least once, and once more after the deadline, so a condition that
/// became true during the last sleep is not reported as a timeout.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return value;
        }
        let now = Instant::now();
        if now >= deadline {
            if let Some(value) = f() {
                return value;
            }
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

/// Runs `f` on its own thread and fails the test if it has not finished within `limit`.
///
/// A panic in `f` is re-raised here with its original payload, so its message (and
/// `#[should_panic(expected = ...)]`) work as if `f` had run on the test thread. On timeout,
/// every child process that support code started from inside `f`'s thread is stopped
/// (SIGTERM, then SIGKILL) before this panics, because the stuck thread will never get to run
/// the `Drop`s that would normally do it.
pub fn with_timeout<F: FnOnce() + Send + 'static>(limit: Duration, f: F) {
    let scope = NEXT_SCOPE.fetch_add(1, Ordering::Relaxed);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    // Naming the body thread after the test makes panic messages point at the right test.
    let name = thread::current()
        .name()
        .map_or_else(|| "test-body".to_owned(), str::to_owned);
    let handle = thread::Builder::new()
        .name(name)
        .spawn(move || {
            SCOPE.with(|s| s.set(scope));
            f();
            // Only reached without a panic; on panic the sender is dropped during unwinding,
            // which wakes the receiver with `Disconnected` instead.
            let _ = done_tx.send(());
        })
        .expect("spawn test body thread");

    match done_rx.recv_timeout(limit) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(payload) = handle.join() {
                panic::resume_unwind(payload);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let stopped = stop_scope(scope);
            // The body thread is left detached: Rust cannot cancel it. Its children are gone,
            // so whatever it was waiting on will fail and let it finish on its own.
            panic!("test timed out after {limit:?} (stopped child processes: {stopped:?})");
        }
    }
}

/// Scope ids handed out by [`with_timeout`]; 0 means "not inside any `with_timeout`".
static NEXT_SCOPE: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The [`with_timeout`] scope of the current thread. Children spawned from helper
    /// threads that a test body starts itself fall into scope 0 and are only cleaned up by
    /// their owners' `Drop`.
    static SCOPE: Cell<u64> = const { Cell::new(0) };
}

struct Registered {
    scope: u64,
    id: u64,
    pid: u32,
    name: String,
    child: Arc<Mutex<Child>>,
}

/// Every child started through [`spawn_tracked`] and not yet dropped.
///
/// The `Child` handles themselves are kept (not bare PIDs) because std remembers whether a
/// child has been reaped: signalling through a handle that was already waited for is a no-op,
/// so a PID that the kernel has since reused for someone else's process is never hit.
static REGISTRY: Mutex<Vec<Registered>> = Mutex::new(Vec::new());
static NEXT_CHILD_ID: AtomicU64 = AtomicU64::new(1);

/// PIDs of every child started through [`spawn_tracked`] and not yet dropped, by any test
/// of the binary. One that has exited stays a zombie until its owner reaps it, so a test
/// looking for zombies that something else left behind skips these.
pub fn tracked_pids() -> Vec<u32> {
    lock(&REGISTRY).iter().map(|r| r.pid).collect()
}

/// Locks ignoring poison: a test that panicked while holding a lock must not make every
/// other test's cleanup panic too.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Stops all registered children of `scope`; returns their names and PIDs.
fn stop_scope(scope: u64) -> Vec<String> {
    let victims: Vec<(String, Arc<Mutex<Child>>)> = lock(&REGISTRY)
        .iter()
        .filter(|r| r.scope == scope)
        .map(|r| (r.name.clone(), Arc::clone(&r.child)))
        .collect();
    let mut stopped = Vec::new();
    for (name, child) in victims {
        let pid = lock(&child).id();
        // Whole process trees: a server's workers must not outlive it (Dovecot's imap
        // processes do unless told), and collecting them works only while the parent lives.
        let family = child_descendants(&child);
        signal_all(&family, "TERM");
        stop_child(&child, Duration::from_secs(3));
        stop_leftovers(&family);
        stopped.push(format!("{name}[{pid}]"));
    }
    stopped
}

/// Live descendants of a child that has not been reaped. The lock is held during the scan
/// so nobody reaps it meanwhile: a reaped child's PID may already belong to a stranger,
/// whose children must not be mistaken for ours.
fn child_descendants(child: &Mutex<Child>) -> Vec<ProcId> {
    let mut guard = lock(child);
    match guard.try_wait() {
        Ok(None) => descendants(guard.id()),
        _ => Vec::new(),
    }
}

/// Sends `signal` (a name for kill(1), e.g. "TERM") unless the child was already reaped.
/// The lock is held across the check and the kill, so the owner cannot reap the child (and
/// free its PID for reuse) in between.
fn signal_child(child: &Mutex<Child>, signal: &str) -> bool {
    let mut guard = lock(child);
    if !matches!(guard.try_wait(), Ok(None)) {
        return false;
    }
    // std can only send SIGKILL; everything else goes through kill(1).
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(guard.id().to_string())
        .status()
        .is_ok_and(|s| s.success())
}

/// SIGTERM, wait up to `grace` for the child to exit, then SIGKILL. Always reaps.
fn stop_child(child: &Mutex<Child>, grace: Duration) -> ExitStatus {
    if let Ok(Some(status)) = lock(child).try_wait() {
        return status;
    }
    signal_child(child, "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = lock(child).try_wait() {
            return status;
        }
        thread::sleep(POLL_INTERVAL);
    }
    let mut guard = lock(child);
    let _ = guard.kill();
    guard.wait().expect("reap child after SIGKILL")
}

/// A child process owned by support code: registered for [`with_timeout`] cleanup, and
/// stopped (SIGTERM, grace period, SIGKILL) and reaped when dropped.
pub struct TrackedChild {
    id: u64,
    pid: u32,
    child: Arc<Mutex<Child>>,
    /// How long `Drop` waits after SIGTERM before SIGKILL.
    grace: Duration,
}

/// Spawns `cmd` and registers the child under the current [`with_timeout`] scope.
///
/// Take stdio handles you need (e.g. piped stdout) with [`TrackedChild::take_stdio`]
/// before they are needed elsewhere.
pub fn spawn_tracked(name: &str, cmd: &mut Command) -> std::io::Result<TrackedChild> {
    // Spawning while holding the registry lock means a concurrent timeout either sees the
    // child or runs before it exists; never a window where it is running but unregistered.
    let mut registry = lock(&REGISTRY);
    let child = cmd.spawn()?;
    let pid = child.id();
    let child = Arc::new(Mutex::new(child));
    let id = NEXT_CHILD_ID.fetch_add(1, Ordering::Relaxed);
    registry.push(Registered {
        scope: SCOPE.with(Cell::get),
        id,
        pid,
        name: name.to_owned(),
        child: Arc::clone(&child),
    });
    Ok(TrackedChild {
        id,
        pid,
        child,
        grace: Duration::from_secs(5),
    })
}

impl TrackedChild {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sets how long `Drop` and [`TrackedChild::stop`] wait after SIGTERM before SIGKILL.
    pub fn set_grace(&mut self, grace: Duration) {
        self.grace = grace;
    }

    /// Gives `f` the `Child` to take its piped stdin/stdout/stderr. Do not wait on it there:
    /// reaping goes through this type so the registry stays sound.
    pub fn take_stdio<R>(&self, f: impl FnOnce(&mut Child) -> R) -> R {
        f(&mut lock(&self.child))
    }

    /// The exit status if the child has exited (reaping it), `None` while it runs.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        lock(&self.child).try_wait().ok().flatten()
    }

    pub fn is_running(&self) -> bool {
        self.try_wait().is_none()
    }

    /// Sends a signal by kill(1) name ("TERM", "HUP", "INT", ...). Returns false if the child
    /// had already exited.
    pub fn signal(&self, signal: &str) -> bool {
        signal_child(&self.child, signal)
    }

    /// Live descendants (children, grandchildren, ...) while the child runs; empty once it
    /// has exited. For servers whose workers may outlive them.
    pub fn descendants(&self) -> Vec<ProcId> {
        child_descendants(&self.child)
    }

    /// Waits for the child to exit on its own, up to `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// SIGKILL and reap. No-op if it already exited.
    pub fn kill(&self) -> ExitStatus {
        let mut guard = lock(&self.child);
        let _ = guard.kill();
        guard.wait().expect("reap child after SIGKILL")
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL. Always reaps.
    pub fn stop(&self) -> ExitStatus {
        stop_child(&self.child, self.grace)
    }
}

impl Drop for TrackedChild {
    fn drop(&mut self) {
        stop_child(&self.child, self.grace);
        lock(&REGISTRY).retain(|r| r.id != self.id);
    }
}

/// Runs a short-lived helper command to completion (stdout and stderr captured) and
/// returns its output; panics if it takes longer than `timeout`, after killing it.
///
/// Goes through [`spawn_tracked`], so even a helper that hangs is cleaned up by
/// [`with_timeout`]. The pipes are drained on threads while waiting, so a chatty command
/// cannot block on a full pipe.
pub fn run_command(name: &str, cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn_tracked(name, cmd).unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let (out, err) = child.take_stdio(|c| (c.stdout.take(), c.stderr.take()));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(out.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(err.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let Some(status) = child.wait_timeout(timeout) else {
        child.kill();
        panic!("{name} did not finish within {timeout:?}");
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Escapes `s` as a TOML basic string, quotes included.
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether the tests run as root (CI does; developers may not). Root-only arrangements,
/// such as Dovecot's mail processes switching to the `dovecot` user, key off this.
pub fn is_root() -> bool {
    current_ids().0 == 0
}

/// (uid, gid) of this process, read from `/proc/self/status` because std has no getuid
/// and `unsafe` (libc) is forbidden in this crate.
pub fn current_ids() -> (u32, u32) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |key: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().nth(1)) // effective id
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/self/status"))
    };
    (field("Uid:"), field("Gid:"))
}

/// Looks a user up in the passwd database via getent(1): (name, uid, gid).
pub fn lookup_user(name_or_uid: &str) -> Option<(String, u32, u32)> {
    let out = run_command(
        "getent",
        Command::new("getent").args(["passwd", name_or_uid]),
        Duration::from_secs(10),
    );
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .to_owned();
    let fields: Vec<&str> = line.split(':').collect();
    Some((
        fields.first()?.to_string(),
        fields.get(2)?.parse().ok()?,
        fields.get(3)?.parse().ok()?,
    ))
}

/// Group name of `gid` via getent(1).
pub fn lookup_group(gid: u32) -> Option<String> {
    let out = run_command(
        "getent",
        Command::new("getent").args(["group", &gid.to_string()]),
        Duration::from_secs(10),
    );
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next()?.split(':').next().map(str::to_owned)
}

/// A process identity that survives PID reuse: (pid, start time in clock ticks).
pub type ProcId = (u32, u64);

/// (ppid, start time) of a live, non-zombie process, from /proc/<pid>/stat.
pub fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split at the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// All live descendants of `root`.
pub fn descendants(root: u32) -> Vec<ProcId> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let table: Vec<(u32, u32, u64)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| proc_stat(pid).map(|(ppid, start)| (pid, ppid, start)))
        .collect();
    let mut found: Vec<ProcId> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid, start) in &table {
            if ppid == parent && !found.iter().any(|&(p, _)| p == pid) {
                found.push((pid, start));
                frontier.push(pid);
            }
        }
    }
    found
}

pub fn merge(into: &mut Vec<ProcId>, more: Vec<ProcId>) {
    for id in more {
        if !into.contains(&id) {
            into.push(id);
        }
    }
}

/// Those of `family` that are still the same live process.
pub fn still_alive(family: &[ProcId]) -> Vec<u32> {
    family
        .iter()
        .filter(|&&(pid, start)| proc_stat(pid).is_some_and(|(_, s)| s == start))
        .map(|&(pid, _)| pid)
        .collect()
}

/// Sends `signal` to whatever of `family` is still the same live process. The start time
/// check means a PID reused by an unrelated process is never signalled (short of reuse
/// within the few milliseconds between check and kill). Returns false if none was alive.
pub fn signal_all(family: &[ProcId], signal: &str) -> bool {
    let pids = still_alive(family);
    if pids.is_empty() {
        return false;
    }
    // Some may exit between the check and the kill; kill(1) then fails for those only.
    let _ = run_command(
        "kill",
        Command::new("kill")
            .arg(format!("-{signal}"))
            .args(pids.iter().map(u32::to_string)),
        Duration::from_secs(10),
    );
    true
}

/// SIGTERM, then SIGKILL, whatever of `family` is still running; waits for it to go.
pub fn stop_leftovers(family: &[ProcId]) {
    for signal in ["TERM", "KILL"] {
        if !signal_all(family, signal) {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if still_alive(family).is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    eprintln!(
        "[support] processes survived SIGKILL: {:?}",
        still_alive(family)
    );
}
