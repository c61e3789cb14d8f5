//! Hooks: the user's commands run for new mail (goimapnotify's `onNewMail` and
//! `onNewMailPost`), typically `mbsync` and `notmuch new`.
//!
//! What a hook gets:
//! - `on_new_mail` is an argv list executed directly, never through a shell, so nothing in a
//!   subject or sender can become a command.
//! - Its environment is the daemon's plus `MAILPUSHD_ACCOUNT`, `MAILPUSHD_MAILBOX`,
//!   `MAILPUSHD_COUNT` and, for a batch of exactly one message, `MAILPUSHD_UID`,
//!   `MAILPUSHD_FROM` (`Name <address>`) and `MAILPUSHD_SUBJECT`. A batch can span several
//!   mailboxes of one account; `MAILPUSHD_MAILBOX` is then set but empty (so `set -u`
//!   scripts still run) and the JSON on stdin says which message is where. Values are the
//!   decoded text as it is, except that NUL bytes, which an environment cannot hold, are
//!   dropped and a value is cut at 4096 characters (the kernel refuses to start a program
//!   with a single variable over 128 KiB).
//! - stdin: the batch as a JSON array,
//!   `[{"account":..,"mailbox":..,"uid":..,"from":..,"subject":..}]` and a newline, then
//!   end of file. The JSON carries the full text, NULs included (as `\u0000`).
//! - stdout goes to /dev/null: the daemon's own stdout may be the journal, and a hook's
//!   chatter is not ours to publish. The first 4 KiB of stderr end up, as one escaped line,
//!   in the log line about the run (debug after success, warning after a failure).
//! - It runs in a process group of its own. One still running after `hook_timeout_secs` is
//!   killed with SIGKILL, group and all, so `sh -c 'mbsync -a; notmuch new'` leaves no
//!   `mbsync` behind. Every child is waited for: no zombies.
//! - `on_new_mail_post` runs after `on_new_mail` exited 0, as goimapnotify does, with the
//!   same environment and stdin; when it is the only hook set, it runs alone.
//!
//! Scheduling: one thread per account that has hooks (`hook/<account>`), started at the
//! account's first new mail and fed through a channel; accounts without hooks cost nothing.
//! The first message of a batch opens a `hook_debounce_ms` window and whatever arrives
//! within it joins the batch; then the hooks run. An account runs one batch at a time: mail
//! that arrives meanwhile forms the next batch (its window started with its first message,
//! so it runs as soon as the current run ends if the window has passed by then). With
//! nothing pending the thread blocks on its channel, no timer. While a hook runs the thread
//! looks at it every 10 ms, feeding stdin and reading stderr without blocking, so a hook
//! that ignores its stdin or floods its stderr cannot stall it or escape its timeout.
//!
//! A hook that leaves a background process behind should give that process its own stderr
//! (`mbsync -a 2>/dev/null &`): the pipe is closed once the hook itself exits.
//!
//! Delivery is at most once, unlike popups (at least once). At shutdown a running hook is
//! killed and a batch still in its debounce window is dropped, with a warning naming its
//! UIDs, so that SIGTERM is done within about 2 s; and the mailbox's cursor was saved when
//! the mail was announced, so neither a restart nor a crash offers those messages to the
//! hooks again. Running them at shutdown instead would hold the stop for up to
//! `hook_timeout_secs` (twice, with `on_new_mail_post`) and still not cover a crash.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::text::Announcement;
use crate::child::{self, Capture};
use crate::config::HookConfig;
use crate::decode;

/// How often a running hook is looked at (exit, timeout, stdin, stderr).
const TICK: Duration = Duration::from_millis(10);
/// How much of a hook's stderr is kept for the log.
const STDERR_LIMIT: usize = 4096;
/// Longest stderr excerpt in a log line, in characters.
const LOG_STDERR_CHARS: usize = 300;
/// Longest value of a `MAILPUSHD_*` variable, in characters (at most 16 KiB of UTF-8).
const ENV_VALUE_MAX_CHARS: usize = 4096;
/// How long [`Hooks::shutdown`] waits for the hook threads.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// The variables only a batch of exactly one message gets.
const SINGLE_MESSAGE_VARS: [&str; 3] = ["MAILPUSHD_UID", "MAILPUSHD_FROM", "MAILPUSHD_SUBJECT"];

/// One new message, as a hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookMail {
    pub uid: u32,
    /// The sender's display form, `Name <address>` ([`decode::Sender::display`]).
    pub from: String,
    pub subject: String,
}

impl From<&Announcement> for HookMail {
    fn from(a: &Announcement) -> Self {
        HookMail {
            uid: a.uid,
            from: a.sender.display(),
            subject: a.subject.clone(),
        }
    }
}

/// The hook runner: a cheap handle (clones share the same threads). Dropping the last clone
/// shuts it down as [`Hooks::shutdown`] does.
#[derive(Clone, Default)]
pub struct Hooks {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    stopped: bool,
    workers: HashMap<String, WorkerHandle>,
}

struct WorkerHandle {
    tx: Sender<Msg>,
    thread: JoinHandle<()>,
}

enum Msg {
    Mail {
        config: HookConfig,
        mails: Vec<Queued>,
    },
    Stop,
}

/// A message waiting for its batch, with the mailbox it arrived in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Queued {
    mailbox: String,
    mail: HookMail,
}

impl Hooks {
    pub fn new() -> Hooks {
        Hooks::default()
    }

    /// New mail in one mailbox of one account: schedules a debounced run of the account's
    /// hooks, with `config` (the latest config given for a batch is the one it runs with).
    /// Returns at once; does nothing when `config` has no hooks or `mails` is empty.
    pub fn new_mail(
        &self,
        account: &str,
        mailbox: &str,
        config: &HookConfig,
        mails: Vec<HookMail>,
    ) {
        if mails.is_empty() || !has_hooks(config) {
            return;
        }
        let count = mails.len();
        let mut msg = Msg::Mail {
            config: config.clone(),
            mails: mails
                .into_iter()
                .map(|mail| Queued {
                    mailbox: mailbox.to_owned(),
                    mail,
                })
                .collect(),
        };
        let mut registry = self.inner.registry();
        if registry.stopped {
            log::debug!("{account}: shutting down; hooks not run for {count} new message(s)");
            return;
        }
        if let Some(worker) = registry.workers.get(account) {
            match worker.tx.send(msg) {
                Ok(()) => return,
                // The thread is gone (it panicked, and said so in the log): start a new one.
                Err(mpsc::SendError(m)) => msg = m,
            }
            if let Some(dead) = registry.workers.remove(account) {
                let _ = dead.thread.join();
            }
        }
        match spawn_worker(account) {
            Ok(worker) => {
                // The receiver is alive: the thread has not even looked at it yet.
                let _ = worker.tx.send(msg);
                registry.workers.insert(account.to_owned(), worker);
            }
            Err(e) => log::warn!(
                "{account}: cannot start a hook thread ({e}); hooks not run for {count} message(s)"
            ),
        }
    }

    /// Stops accepting work, drops batches still waiting (a warning names their UIDs), kills
    /// running hooks (their process groups) and joins the threads, waiting at most about a
    /// second in all. Hooks are at most once: see the module documentation.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

impl Inner {
    /// A thread that panicked while holding the lock leaves the map consistent (every
    /// change is one insert or remove), so a poisoned lock is used as it is.
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shutdown(&self) {
        let workers: Vec<(String, WorkerHandle)> = {
            let mut registry = self.registry();
            registry.stopped = true;
            registry.workers.drain().collect()
        };
        for (_, worker) in &workers {
            let _ = worker.tx.send(Msg::Stop);
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        for (account, worker) in workers {
            while !worker.thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if worker.thread.is_finished() {
                let _ = worker.thread.join();
            } else {
                log::warn!(
                    "{account}: hook thread did not stop within {SHUTDOWN_WAIT:?}; not waiting for it"
                );
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn has_hooks(config: &HookConfig) -> bool {
    config.on_new_mail.is_some() || config.on_new_mail_post.is_some()
}

fn spawn_worker(account: &str) -> io::Result<WorkerHandle> {
    let (tx, rx) = mpsc::channel();
    let worker = Worker {
        account: account.to_owned(),
        rx,
        batch: Batch::default(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("hook/{account}"))
        .spawn(move || worker.run())?;
    Ok(WorkerHandle { tx, thread })
}

// ---- the debounce decision (pure) ------------------------------------------------------

/// The next batch of one account: mail collected since its first message arrived.
#[derive(Debug, Default)]
struct Batch {
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    /// When the first message arrived: the debounce window starts here and never moves.
    since: Instant,
    /// The config that came with the latest message.
    config: HookConfig,
    mails: Vec<Queued>,
}

impl Batch {
    fn add(&mut self, now: Instant, config: HookConfig, mails: Vec<Queued>) {
        if mails.is_empty() {
            return;
        }
        match &mut self.pending {
            Some(p) => {
                p.config = config;
                p.mails.extend(mails);
            }
            None => {
                self.pending = Some(Pending {
                    since: now,
                    config,
                    mails,
                })
            }
        }
    }

    /// How long until the batch is due: `None` with nothing pending (block until mail
    /// comes), zero when it should run now.
    fn wait(&self, now: Instant) -> Option<Duration> {
        self.pending
            .as_ref()
            .map(|p| (p.since + p.config.debounce).saturating_duration_since(now))
    }

    fn take(&mut self) -> Option<Pending> {
        self.pending.take()
    }
}

// ---- what a hook gets (pure) -----------------------------------------------------------

/// The `MAILPUSHD_*` variables for a batch (see the module documentation).
fn environment(account: &str, mails: &[Queued]) -> Vec<(&'static str, String)> {
    let mailbox = match mails.split_first() {
        Some((first, rest)) if rest.iter().all(|m| m.mailbox == first.mailbox) => {
            first.mailbox.as_str()
        }
        _ => "",
    };
    let mut env = vec![
        ("MAILPUSHD_ACCOUNT", env_value(account)),
        ("MAILPUSHD_MAILBOX", env_value(mailbox)),
        ("MAILPUSHD_COUNT", mails.len().to_string()),
    ];
    if let [one] = mails {
        let [uid, from, subject] = SINGLE_MESSAGE_VARS;
        env.push((uid, one.mail.uid.to_string()));
        env.push((from, env_value(&one.mail.from)));
        env.push((subject, env_value(&one.mail.subject)));
    }
    env
}

/// The text as it is, minus NUL bytes and cut to `ENV_VALUE_MAX_CHARS`.
fn env_value(s: &str) -> String {
    decode::truncate_chars(&s.replace('\0', ""), ENV_VALUE_MAX_CHARS)
}

#[derive(Serialize)]
struct JsonMail<'a> {
    account: &'a str,
    mailbox: &'a str,
    uid: u32,
    from: &'a str,
    subject: &'a str,
}

/// The JSON array a hook reads on stdin, newline-terminated.
fn stdin_json(account: &str, mails: &[Queued]) -> Vec<u8> {
    let list: Vec<JsonMail<'_>> = mails
        .iter()
        .map(|q| JsonMail {
            account,
            mailbox: &q.mailbox,
            uid: q.mail.uid,
            from: &q.mail.from,
            subject: &q.mail.subject,
        })
        .collect();
    // Strings and integers: serde_json cannot fail on them.
    let mut out = serde_json::to_vec(&list).expect("serializing strings and integers");
    out.push(b'\n');
    out
}

/// How one hook run ended.
#[derive(Debug)]
enum Outcome {
    NotStarted(io::Error),
    Exited {
        status: ExitStatus,
        stderr: Vec<u8>,
    },
    TimedOut {
        stderr: Vec<u8>,
    },
    /// `try_wait` itself failed; the hook was killed.
    Lost(io::Error),
    /// Killed because the daemon is shutting down.
    Stopped,
}

/// The log line for a run, and its level: debug for success, warning for failure.
fn describe(
    account: &str,
    which: &str,
    program: &str,
    count: usize,
    outcome: &Outcome,
    elapsed: Duration,
    timeout: Duration,
) -> (log::Level, String) {
    let head = format!("{account}: {which} {program:?} for {count} message(s)");
    let ms = elapsed.as_millis();
    match outcome {
        Outcome::NotStarted(e) => (
            log::Level::Warn,
            format!("{head} could not be started: {e}"),
        ),
        Outcome::Exited { status, stderr } if status.success() => (
            log::Level::Debug,
            format!("{head} exited 0 in {ms} ms{}", stderr_suffix(stderr)),
        ),
        Outcome::Exited { status, stderr } => (
            log::Level::Warn,
            format!(
                "{head} failed ({status}) in {ms} ms{}",
                stderr_suffix(stderr)
            ),
        ),
        Outcome::TimedOut { stderr } => (
            log::Level::Warn,
            format!(
                "{head} still running after {timeout:?}: killed{}",
                stderr_suffix(stderr)
            ),
        ),
        Outcome::Lost(e) => (
            log::Level::Warn,
            format!("{head}: cannot wait for it ({e}); killed"),
        ),
        Outcome::Stopped => (
            log::Level::Info,
            format!("{head} killed after {ms} ms: mailpushd is shutting down"),
        ),
    }
}

/// `: stderr: <first 300 characters, one escaped line>`, or nothing.
fn stderr_suffix(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(
            ": stderr: {}",
            decode::one_line(&decode::truncate_chars(text, LOG_STDERR_CHARS))
        )
    }
}

/// How many UIDs [`uid_list`] names before it stops.
const UID_LIST_MAX: usize = 20;

/// `INBOX 3, 4; Lists 7`: the UIDs of `mails` by mailbox, in arrival order, at most
/// [`UID_LIST_MAX`] of them (then `…`).
fn uid_list(mails: &[Queued]) -> String {
    let mut out = String::new();
    let mut current: Option<&str> = None;
    for (i, q) in mails.iter().enumerate() {
        if i == UID_LIST_MAX {
            out.push_str(", …");
            break;
        }
        if current != Some(q.mailbox.as_str()) {
            if current.is_some() {
                out.push_str("; ");
            }
            out.push_str(&decode::controls_escaped(&q.mailbox));
            out.push(' ');
            current = Some(&q.mailbox);
        } else {
            out.push_str(", ");
        }
        out.push_str(&q.mail.uid.to_string());
    }
    out
}

// ---- the account's thread --------------------------------------------------------------

struct Worker {
    account: String,
    rx: Receiver<Msg>,
    batch: Batch,
}

/// How a hook run went, as far as the next step is concerned.
#[derive(Debug, PartialEq, Eq)]
enum Ran {
    Succeeded,
    Failed,
    Stopped,
}

impl Worker {
    fn run(mut self) {
        loop {
            let received = match self.batch.wait(Instant::now()) {
                // Nothing pending: sleep until mail (or shutdown) comes.
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(wait) if wait.is_zero() => {
                    if let Some(pending) = self.batch.take() {
                        if self.run_batch(pending) == Ran::Stopped {
                            break;
                        }
                    }
                    continue;
                }
                Some(wait) => self.rx.recv_timeout(wait),
            };
            match received {
                Ok(Msg::Mail { config, mails }) => self.batch.add(Instant::now(), config, mails),
                Err(RecvTimeoutError::Timeout) => {}
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // At most once: the cursor was saved when the mail was announced, so this batch is
        // not offered again after a restart (README, Hooks). Said loudly enough to act on.
        if let Some(p) = self.batch.take() {
            log::warn!(
                "{}: shutting down; hooks not run for {} pending message(s) ({})",
                self.account,
                p.mails.len(),
                uid_list(&p.mails)
            );
        }
    }

    /// `on_new_mail`, then `on_new_mail_post` if the first succeeded (or is not set).
    fn run_batch(&mut self, batch: Pending) -> Ran {
        let Pending { config, mails, .. } = batch;
        let env = environment(&self.account, &mails);
        let stdin = stdin_json(&self.account, &mails);
        if let Some(argv) = &config.on_new_mail {
            let ran = self.run_one(
                "on_new_mail",
                argv,
                &env,
                &stdin,
                mails.len(),
                config.timeout,
            );
            if ran != Ran::Succeeded {
                if ran == Ran::Failed && config.on_new_mail_post.is_some() {
                    log::debug!(
                        "{}: on_new_mail_post not run because on_new_mail failed",
                        self.account
                    );
                }
                return ran;
            }
        }
        match &config.on_new_mail_post {
            Some(argv) => self.run_one(
                "on_new_mail_post",
                argv,
                &env,
                &stdin,
                mails.len(),
                config.timeout,
            ),
            None => Ran::Succeeded,
        }
    }

    fn run_one(
        &mut self,
        which: &str,
        argv: &[String],
        env: &[(&'static str, String)],
        stdin: &[u8],
        count: usize,
        timeout: Duration,
    ) -> Ran {
        let Some((program, args)) = argv.split_first() else {
            // Validation guarantees a program; an empty list is nothing to run.
            return Ran::Succeeded;
        };
        let started = Instant::now();
        let outcome = self.execute(program, args, env, stdin, timeout);
        let (level, line) = describe(
            &self.account,
            which,
            program,
            count,
            &outcome,
            started.elapsed(),
            timeout,
        );
        log::log!(level, "{line}");
        match outcome {
            Outcome::Exited { status, .. } if status.success() => Ran::Succeeded,
            Outcome::Stopped => Ran::Stopped,
            _ => Ran::Failed,
        }
    }

    /// Starts one hook and sees it through: stdin fed, stderr kept, the timeout enforced,
    /// the child always waited for. Mail arriving meanwhile goes into the next batch.
    fn execute(
        &mut self,
        program: &str,
        args: &[String],
        env: &[(&'static str, String)],
        stdin: &[u8],
        timeout: Duration,
    ) -> Outcome {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        // Not inherited from whoever started the daemon: a batch of several has none.
        for name in SINGLE_MESSAGE_VARS {
            cmd.env_remove(name);
        }
        crate::child::withhold_env(&mut cmd);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => return Outcome::NotStarted(e),
        };
        let deadline = Instant::now() + timeout;
        let mut feed = child.stdin.take().and_then(|pipe| Feed::new(pipe, stdin));
        let mut capture = Capture::new(child.stderr.take(), STDERR_LIMIT);
        loop {
            if feed.as_mut().is_some_and(|f| f.pump()) {
                // Everything written, or the hook closed its stdin: EOF for the hook.
                feed = None;
            }
            capture.pump();
            match child.try_wait() {
                Ok(Some(status)) => {
                    return Outcome::Exited {
                        status,
                        stderr: capture.finish(),
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    child::kill_group(&mut child);
                    return Outcome::Lost(e);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                child::kill_group(&mut child);
                return Outcome::TimedOut {
                    stderr: capture.finish(),
                };
            }
            match self.rx.recv_timeout(TICK.min(deadline - now)) {
                Ok(Msg::Mail { config, mails }) => self.batch.add(Instant::now(), config, mails),
                Err(RecvTimeoutError::Timeout) => {}
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    child::kill_group(&mut child);
                    return Outcome::Stopped;
                }
            }
        }
    }
}

/// The JSON for the hook's stdin, written without blocking as the pipe takes it.
struct Feed<'a> {
    pipe: ChildStdin,
    rest: &'a [u8],
}

impl<'a> Feed<'a> {
    /// `None` (stdin closed at once) when there is nothing to write or the pipe cannot be
    /// made non-blocking (it always can).
    fn new(pipe: ChildStdin, data: &'a [u8]) -> Option<Self> {
        if data.is_empty() || rustix::io::ioctl_fionbio(&pipe, true).is_err() {
            return None;
        }
        Some(Feed { pipe, rest: data })
    }

    /// Writes what the pipe takes; true when done (all written, or the hook closed its end).
    fn pump(&mut self) -> bool {
        while !self.rest.is_empty() {
            match self.pipe.write(self.rest) {
                Ok(0) => return true,
                Ok(n) => self.rest = &self.rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EPIPE: the hook does not read its stdin; fine.
                Err(_) => return true,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn config(debounce_ms: u64) -> HookConfig {
        HookConfig {
            on_new_mail: Some(vec!["true".into()]),
            on_new_mail_post: None,
            debounce: Duration::from_millis(debounce_ms),
            timeout: Duration::from_secs(60),
        }
    }

    fn queued(mailbox: &str, uid: u32, from: &str, subject: &str) -> Queued {
        Queued {
            mailbox: mailbox.into(),
            mail: HookMail {
                uid,
                from: from.into(),
                subject: subject.into(),
            },
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_window_opens_with_the_first_message_and_does_not_move() {
        let t0 = Instant::now();
        let mut b = Batch::default();
        assert_eq!(b.wait(t0), None, "nothing pending: block, no timer");
        b.add(t0, config(1000), vec![]);
        assert_eq!(b.wait(t0), None, "an empty delivery opens no window");
        b.add(t0, config(1000), vec![queued("INBOX", 1, "a", "s")]);
        assert_eq!(b.wait(t0), Some(ms(1000)));
        b.add(
            t0 + ms(400),
            config(1000),
            vec![queued("INBOX", 2, "a", "s")],
        );
        assert_eq!(
            b.wait(t0 + ms(400)),
            Some(ms(600)),
            "later mail does not extend it"
        );
        assert_eq!(b.wait(t0 + ms(1000)), Some(Duration::ZERO));
        assert_eq!(b.wait(t0 + ms(5000)), Some(Duration::ZERO));
        let p = b.take().unwrap();
        assert_eq!(
            p.mails.iter().map(|q| q.mail.uid).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(b.wait(t0 + ms(5000)), None);
    }

    #[test]
    fn mail_during_a_run_is_due_when_the_run_ends_if_its_window_passed() {
        let t0 = Instant::now();
        let mut b = Batch::default();
        // Arrived while a run was going on; the run ended 2 s later.
        b.add(t0, config(500), vec![queued("INBOX", 7, "a", "s")]);
        b.add(
            t0 + ms(100),
            config(500),
            vec![queued("INBOX", 8, "a", "s")],
        );
        assert_eq!(b.wait(t0 + ms(2000)), Some(Duration::ZERO));
        assert_eq!(b.take().unwrap().mails.len(), 2);
    }

    #[test]
    fn the_latest_config_wins_and_zero_debounce_runs_at_once() {
        let t0 = Instant::now();
        let mut b = Batch::default();
        b.add(t0, config(1000), vec![queued("INBOX", 1, "a", "s")]);
        b.add(t0, config(0), vec![queued("INBOX", 2, "a", "s")]);
        assert_eq!(b.wait(t0), Some(Duration::ZERO));
    }

    #[test]
    fn environment_for_one_message() {
        let env = environment(
            "work",
            &[queued("INBOX", 4711, "Zhang San <z@example.com>", "测试")],
        );
        assert_eq!(
            env,
            vec![
                ("MAILPUSHD_ACCOUNT", "work".to_owned()),
                ("MAILPUSHD_MAILBOX", "INBOX".to_owned()),
                ("MAILPUSHD_COUNT", "1".to_owned()),
                ("MAILPUSHD_UID", "4711".to_owned()),
                ("MAILPUSHD_FROM", "Zhang San <z@example.com>".to_owned()),
                ("MAILPUSHD_SUBJECT", "测试".to_owned()),
            ]
        );
    }

    #[test]
    fn environment_for_several_messages_has_no_per_message_values() {
        let same = [queued("Lists", 1, "a", "x"), queued("Lists", 2, "b", "y")];
        assert_eq!(
            environment("work", &same),
            vec![
                ("MAILPUSHD_ACCOUNT", "work".to_owned()),
                ("MAILPUSHD_MAILBOX", "Lists".to_owned()),
                ("MAILPUSHD_COUNT", "2".to_owned()),
            ]
        );
        let mixed = [queued("INBOX", 1, "a", "x"), queued("Lists", 2, "b", "y")];
        let env = environment("work", &mixed);
        assert_eq!(env[1], ("MAILPUSHD_MAILBOX", String::new()));
        assert_eq!(env.len(), 3);
    }

    #[test]
    fn environment_values_are_verbatim_except_nul_and_length() {
        let nasty = "$(touch x); rm -rf ~ `id` \"; touch pwned; \"\nline2\t'q'";
        let env = environment("w", &[queued("INBOX", 1, "a\0b <c@d>", nasty)]);
        assert_eq!(env[4].1, "ab <c@d>");
        assert_eq!(env[5].1, nasty);
        let long = "長".repeat(ENV_VALUE_MAX_CHARS + 10);
        let env = environment("w", &[queued("INBOX", 1, "a", &long)]);
        assert_eq!(env[5].1.chars().count(), ENV_VALUE_MAX_CHARS);
        assert!(env[5].1.ends_with('…'));
    }

    #[test]
    fn stdin_is_a_json_array_with_everything_verbatim() {
        let mails = [
            queued(
                "INBOX",
                1,
                "Zhang San <z@example.com>",
                "a \"quoted\"\nline\0",
            ),
            queued("其他", 2, "b@example.com", "$(x)"),
        ];
        let json = stdin_json("work", &mails);
        assert_eq!(
            String::from_utf8(json.clone()).unwrap(),
            concat!(
                r#"[{"account":"work","mailbox":"INBOX","uid":1,"from":"Zhang San <z@example.com>","subject":"a \"quoted\"\nline\u0000"},"#,
                r#"{"account":"work","mailbox":"其他","uid":2,"from":"b@example.com","subject":"$(x)"}]"#,
                "\n"
            )
        );
        let parsed: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(parsed[0]["subject"], "a \"quoted\"\nline\0");
        assert_eq!(parsed[1]["mailbox"], "其他");
    }

    #[test]
    fn log_lines_and_levels() {
        let d = |o: &Outcome| {
            describe(
                "work",
                "on_new_mail",
                "mbsync",
                3,
                o,
                ms(12),
                Duration::from_secs(60),
            )
        };
        let ok = Outcome::Exited {
            status: ExitStatus::from_raw(0),
            stderr: vec![],
        };
        assert_eq!(
            d(&ok),
            (
                log::Level::Debug,
                "work: on_new_mail \"mbsync\" for 3 message(s) exited 0 in 12 ms".to_owned()
            )
        );
        let failed = Outcome::Exited {
            status: ExitStatus::from_raw(3 << 8),
            stderr: b"  error: no\nsecond line\x1b[2J\n".to_vec(),
        };
        assert_eq!(
            d(&failed),
            (
                log::Level::Warn,
                "work: on_new_mail \"mbsync\" for 3 message(s) failed (exit status: 3) in 12 ms: \
                 stderr: error: no\\nsecond line\\x1b[2J"
                    .to_owned()
            )
        );
        let (level, line) = d(&Outcome::TimedOut { stderr: vec![] });
        assert_eq!(level, log::Level::Warn);
        assert!(line.ends_with("still running after 60s: killed"), "{line}");
        let (level, line) = d(&Outcome::NotStarted(io::Error::from(
            io::ErrorKind::NotFound,
        )));
        assert_eq!(level, log::Level::Warn);
        assert!(line.contains("could not be started"), "{line}");
        assert_eq!(d(&Outcome::Stopped).0, log::Level::Info);
    }

    #[test]
    fn dropped_batches_name_their_uids_by_mailbox() {
        assert_eq!(
            uid_list(&[
                queued("INBOX", 3, "a", "s"),
                queued("INBOX", 4, "a", "s"),
                queued("Lists", 7, "a", "s"),
                queued("a\nb", 1, "a", "s"),
            ]),
            "INBOX 3, 4; Lists 7; a\\nb 1"
        );
        let many: Vec<Queued> = (1..=25).map(|u| queued("INBOX", u, "a", "s")).collect();
        let text = uid_list(&many);
        assert!(text.starts_with("INBOX 1, 2, "), "{text}");
        assert!(text.ends_with("19, 20, …"), "{text}");
    }

    #[test]
    fn stderr_excerpt_is_bounded() {
        let s = stderr_suffix("x".repeat(10_000).as_bytes());
        assert_eq!(s.chars().count(), ": stderr: ".len() + LOG_STDERR_CHARS);
        assert_eq!(stderr_suffix(b"  \n"), "");
    }

    #[test]
    fn accounts_without_hooks_get_no_thread() {
        let hooks = Hooks::new();
        let none = HookConfig {
            on_new_mail: None,
            on_new_mail_post: None,
            debounce: ms(0),
            timeout: Duration::from_secs(1),
        };
        let mail = HookMail {
            uid: 1,
            from: "a".into(),
            subject: "s".into(),
        };
        hooks.new_mail("quiet", "INBOX", &none, vec![mail]);
        hooks.new_mail("busy", "INBOX", &config(60_000), vec![]);
        assert!(hooks.inner.registry().workers.is_empty());
        hooks.shutdown();
    }

    #[test]
    fn hook_mail_from_an_announcement() {
        let a = Announcement {
            account: "work".into(),
            mailbox: "INBOX".into(),
            uid: 9,
            sender: decode::Sender {
                name: Some("Zhang San".into()),
                address: Some("z@example.com".into()),
            },
            subject: "hi".into(),
        };
        assert_eq!(
            HookMail::from(&a),
            HookMail {
                uid: 9,
                from: "Zhang San <z@example.com>".into(),
                subject: "hi".into()
            }
        );
    }
}
