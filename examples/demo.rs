//! A demo that needs no mail account: mailpushd watching a throwaway Dovecot on 127.0.0.1,
//! announcing three messages on the user's own desktop. `scripts/demo` builds and runs it;
//! by hand, after `cargo build --release --bin mailpushd`:
//! `cargo run --release --example demo -- target/release/mailpushd [--linger SECS] [--syslog]`.
//!
//! Owns: the demo's config file (in a temp dir), the mailpushd child process and the echo of
//! its log, the three demo messages (including their RFC 2047 encoding), and the demo's own
//! signal handling, so that Ctrl-C still stops both servers and removes every temp dir.
//!
//! The IMAP server is the end-to-end tests' Dovecot launcher, included by path rather than
//! copied, so the demo exercises exactly the setup the tests do.

// The demo uses only the Dovecot launcher and the child registry of the tests' support code.
#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use support::dovecot::{message_with_body, Dovecot};
use support::{spawn_tracked, TrackedChild};

/// How long mailpushd may take from start to idling on INBOX. Normally well under a second;
/// generous because a first TLS handshake on a slow machine can take a while.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long, after the last delivery, all three announcements may take.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between deliveries, so each popup can be seen on its own.
const DELIVERY_GAP: Duration = Duration::from_secs(2);
/// How often waits look at signals and at whether mailpushd is still running.
const TICK: Duration = Duration::from_millis(50);

/// Runs mailpushd against a throwaway local IMAP server (Dovecot on 127.0.0.1) and delivers
/// three messages to it, so its desktop notifications can be seen without a mail account.
#[derive(Debug, Parser)]
#[command(name = "demo")]
struct Args {
    /// The mailpushd binary to run, e.g. target/release/mailpushd
    mailpushd: PathBuf,

    /// Seconds to keep everything running after the three announcements, e.g. to deliver
    /// more messages by hand
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    linger: u64,

    /// Also send mailpushd's lines to the system log (/dev/log). Off by default, so the demo
    /// leaves nothing in the user's real syslog
    #[arg(long)]
    syslog: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Everything that must be cleaned up lives inside `run`, so it is dropped (servers
    // stopped, temp dirs removed) before the process exits, whichever way it ends.
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            say(&format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    preflight(&args.mailpushd)?;
    let stop = install_signal_flag()?;

    say("starting a throwaway Dovecot IMAP server on 127.0.0.1 (self-signed TLS, user alice)");
    let dovecot = Dovecot::start_default();

    let dir = tempfile::Builder::new()
        .prefix("mailpushd-demo.")
        .tempdir()
        .context("creating the demo's temp dir")?;
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config(&dovecot, args.syslog))
        .with_context(|| format!("writing {}", config_path.display()))?;
    say(&format!(
        "wrote {} (account \"demo\", tls = \"implicit\", syslog {})",
        config_path.display(),
        if args.syslog { "on" } else { "off" }
    ));

    let mut demo = Demo::start(
        &args.mailpushd,
        &config_path,
        &dir.path().join("state"),
        stop,
    )?;
    // Errors are reported before the cleanup, so they sit right below the log they are about.
    let mut code = demo.script(&dovecot, args.linger).unwrap_or_else(|e| {
        say(&format!("error: {e:#}"));
        ExitCode::FAILURE
    });
    // mailpushd first: stopping Dovecot under it would make it log a reconnect warning.
    if let Err(e) = demo.shut_down() {
        say(&format!("error: {e:#}"));
        code = ExitCode::FAILURE;
    }
    say("stopping Dovecot");
    drop(dovecot);
    drop(dir);
    say("done; temporary files removed");
    Ok(code)
}

/// Fails early, with what to do about it, when a prerequisite is missing: better than a
/// panic from deep inside the Dovecot launcher.
fn preflight(mailpushd: &Path) -> anyhow::Result<()> {
    if !mailpushd.is_file() {
        bail!(
            "{} is not a file; build it with `cargo build --release --bin mailpushd` \
             (or just run scripts/demo)",
            mailpushd.display()
        );
    }
    if !Path::new("/usr/sbin/dovecot").exists() && find_in_path("dovecot").is_none() {
        bail!("Dovecot is not installed: `sudo apt-get install dovecot-imapd` (scripts/demo does this)");
    }
    if find_in_path("openssl").is_none() {
        bail!("openssl is not installed (it makes Dovecot's certificate): `sudo apt-get install openssl`");
    }
    Ok(())
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A flag set by SIGINT, SIGTERM and SIGHUP (closing the terminal). The demo polls it and
/// cleans up; a second signal while cleaning up exits at once, as users expect of a second
/// Ctrl-C.
fn install_signal_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        // The conditional shutdown must be registered first: it looks at the flag before the
        // second action sets it, so only a repeated signal exits.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

/// mailpushd's config: one account on the demo server, popups on, syslog as asked.
fn config(dovecot: &Dovecot, syslog: bool) -> String {
    format!(
        "# Written by examples/demo.rs for one run; removed when the demo ends.\n\
         {account}\n\
         [notifications]\n\
         enabled = true\n\
         \n\
         [syslog]\n\
         enabled = {syslog}\n",
        account = dovecot.account_toml("demo", "implicit"),
    )
}

/// What the demo has seen in mailpushd's log so far.
#[derive(Default)]
struct Seen {
    watching: bool,
    announced: usize,
    notify_failed: bool,
}

impl Seen {
    fn note(&mut self, line: &str) {
        if line.contains("watching demo/INBOX") {
            self.watching = true;
        }
        if line.contains("new mail account=demo ") {
            self.announced += 1;
        }
        if line.contains("cannot show desktop notification") {
            self.notify_failed = true;
        }
    }
}

/// How a wait ended when its condition did not come true.
enum Interrupted {
    /// Ctrl-C or another stop signal.
    Signal,
    Exited(ExitStatus),
    TimedOut,
}

struct Demo {
    mailpushd: TrackedChild,
    lines: Receiver<String>,
    reader: Option<thread::JoinHandle<()>>,
    seen: Seen,
    stop: Arc<AtomicBool>,
    /// mailpushd's unexpected exit has been reported; stopping it has nothing to add.
    exit_reported: bool,
}

impl Demo {
    fn start(
        binary: &Path,
        config: &Path,
        state: &Path,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Demo> {
        say(&format!(
            "starting {} --config {}",
            binary.display(),
            config.display()
        ));
        let mut cmd = Command::new(binary);
        cmd.arg("--config")
            .arg(config)
            // The user's own environment, session bus included: that is where the popups
            // should appear. Except JOURNAL_STREAM: inherited from a terminal that systemd
            // started, it would make mailpushd write journal-style lines into our pipe.
            .env_remove("JOURNAL_STREAM")
            // And the state dir: mailpushd remembers each mailbox's last UID there, by user,
            // host and mailbox. In ~/.local/state the demo would leave files behind, and the
            // next run would find this run's alice@localhost/INBOX and warn that its
            // UIDVALIDITY changed (a new Dovecot, a new mailbox).
            .env("XDG_STATE_HOME", state)
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        let mailpushd = spawn_tracked("mailpushd", &mut cmd)
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = mailpushd.take_stdio(|c| c.stderr.take());
        let (tx, lines) = mpsc::channel();
        let reader = thread::Builder::new()
            .name("mailpushd stderr".into())
            .spawn(move || echo_lines(stderr, &tx))
            .context("starting the log reader thread")?;
        Ok(Demo {
            mailpushd,
            lines,
            reader: Some(reader),
            seen: Seen::default(),
            stop,
            exit_reported: false,
        })
    }

    /// The demo proper, from "wait for mailpushd to idle" to the end of the linger time.
    fn script(&mut self, dovecot: &Dovecot, linger: u64) -> anyhow::Result<ExitCode> {
        if let Err(why) = self.wait(READY_TIMEOUT, |s| s.watching) {
            return self.fail(why, "idling on demo/INBOX");
        }
        say("mailpushd is idling on INBOX; delivering three messages by IMAP APPEND");
        for (i, (what, message)) in messages().into_iter().enumerate() {
            if i > 0 {
                if let Err(why) = self.wait(DELIVERY_GAP, |_| false) {
                    if !matches!(why, Interrupted::TimedOut) {
                        return self.fail(why, "the next delivery");
                    }
                }
            }
            say(&format!("delivering {}/3: {what}", i + 1));
            dovecot.append("INBOX", &message);
        }
        if let Err(why) = self.wait(ANNOUNCE_TIMEOUT, |s| s.announced >= 3) {
            return self.fail(why, "three `new mail` lines");
        }

        // Typed lines become more messages while lingering, but only from a terminal: a
        // pipe or /dev/null on stdin (scripts, CI) just lingers.
        let typed = std::io::stdin().is_terminal().then(read_typed_lines);
        let next = match linger {
            0 => String::new(),
            1 => "; press Ctrl-C to stop, or wait 1 second".to_owned(),
            n => format!("; press Ctrl-C to stop, or wait {n} seconds"),
        };
        say(&format!(
            "3 messages delivered, {} announced{next}",
            self.seen.announced
        ));
        if self.seen.notify_failed {
            say(
                "mailpushd could not show desktop notifications (see its warning above): no \
                 session bus, or no notification server on it. The log lines above are what \
                 it announced.",
            );
        }
        if typed.is_some() && linger > 0 {
            say(
                "meanwhile, type a subject and press Enter to deliver another message (each one \
                 restarts the wait)",
            );
        }
        let linger = Duration::from_secs(linger);
        let mut deadline = Instant::now() + linger;
        let mut extra = 0;
        let lingered = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(Interrupted::TimedOut);
            }
            match self.wait(left.min(TICK * 4), |_| false) {
                Err(Interrupted::TimedOut) => {}
                other => break other,
            }
            while let Some(subject) = typed.as_ref().and_then(|t| t.try_recv().ok()) {
                extra += 1;
                let subject = match subject.trim() {
                    "" => format!("Message #{} from the demo", 3 + extra),
                    s => s.to_owned(),
                };
                say(&format!("delivering {}: {subject:?}", 3 + extra));
                dovecot.append(
                    "INBOX",
                    &message_with_body(
                        &encode_header(&subject),
                        "You <you@localhost>",
                        "Typed into the mailpushd demo.\n",
                    ),
                );
                deadline = Instant::now() + linger;
            }
        };
        if extra > 0 {
            // The last ones may still be on their way: a short grace rather than a
            // guarantee, since the user asked to stop.
            let _ = self.wait(Duration::from_secs(3), |s| s.announced >= 3 + extra);
            say(&format!(
                "{} delivered, {} announced in all",
                3 + extra,
                self.seen.announced
            ));
        }
        match lingered {
            // Ctrl-C is how the summary told the user to stop, so it is a success here.
            Err(Interrupted::TimedOut) | Err(Interrupted::Signal) | Ok(()) => Ok(ExitCode::SUCCESS),
            Err(why) => self.fail(why, "the end of the linger time"),
        }
    }

    /// Reports why the demo could not go on. Stop signals end it quietly with the shell's
    /// usual 130; everything else is an error.
    fn fail(&mut self, why: Interrupted, waiting_for: &str) -> anyhow::Result<ExitCode> {
        match why {
            Interrupted::Signal => {
                say("interrupted; cleaning up");
                Ok(ExitCode::from(130))
            }
            Interrupted::Exited(status) => {
                // Its log is complete once the reader has hit end of file.
                self.join_reader();
                self.exit_reported = true;
                bail!("mailpushd exited with {status} before {waiting_for}; its log is above")
            }
            Interrupted::TimedOut => bail!(
                "mailpushd has not logged {waiting_for} in time ({} announced so far); its \
                 log is above",
                self.seen.announced
            ),
        }
    }

    /// Reads mailpushd's log until `done` holds, a stop signal arrives, mailpushd exits, or
    /// `timeout` passes.
    fn wait(&mut self, timeout: Duration, done: impl Fn(&Seen) -> bool) -> Result<(), Interrupted> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(TICK) {
                Ok(line) => self.seen.note(&line),
                Err(RecvTimeoutError::Timeout) => {}
                // The reader is done: mailpushd closed stderr, so it is exiting.
                Err(RecvTimeoutError::Disconnected) => thread::sleep(TICK),
            }
            if done(&self.seen) {
                return Ok(());
            }
            if self.stop.load(Ordering::SeqCst) {
                return Err(Interrupted::Signal);
            }
            if let Some(status) = self.mailpushd.try_wait() {
                // A terminal's Ctrl-C reaches mailpushd too, and it may exit before this
                // process has run its own handler: give the flag a moment to be set.
                thread::sleep(Duration::from_millis(200));
                if self.stop.load(Ordering::SeqCst) {
                    return Err(Interrupted::Signal);
                }
                return Err(Interrupted::Exited(status));
            }
            if Instant::now() >= deadline {
                return Err(Interrupted::TimedOut);
            }
        }
    }

    /// SIGTERM, the way systemd stops it, and a check that it exits cleanly.
    fn shut_down(&mut self) -> anyhow::Result<()> {
        // A Ctrl-C in the terminal reached mailpushd as well (same process group), and it
        // is already stopping: a SIGTERM now would be its "second stop signal", which skips
        // the orderly logout. Give it a moment first.
        if self.stop.load(Ordering::SeqCst) {
            self.mailpushd.wait_timeout(Duration::from_secs(1));
        }
        let status = match self.mailpushd.try_wait() {
            Some(status) => status,
            None => {
                say("stopping mailpushd (SIGTERM)");
                self.mailpushd.stop()
            }
        };
        self.join_reader();
        if self.exit_reported {
            Ok(())
        } else if status.success() {
            say("mailpushd exited cleanly");
            Ok(())
        } else {
            bail!("mailpushd exited with {status} when stopped")
        }
    }

    /// Waits for the reader to echo mailpushd's last lines. Bounded: something else holding
    /// the pipe open must not hang the demo.
    fn join_reader(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.reader.as_ref().is_some_and(|r| !r.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if let Some(reader) = self.reader.take_if(|r| r.is_finished()) {
            let _ = reader.join();
        }
    }
}

/// Echoes each line of mailpushd's stderr to ours, as it comes, and hands it on.
fn echo_lines(stderr: Option<impl Read>, tx: &mpsc::Sender<String>) {
    let Some(stderr) = stderr else { return };
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned();
                print_line(&format!("[mailpushd] {line}"));
                // The main thread may have stopped listening; echoing still matters.
                let _ = tx.send(line);
            }
        }
    }
}

/// The three demo messages, each with a description for the demo's own log.
fn messages() -> Vec<(String, Vec<u8>)> {
    // A legacy-charset subject, as Chinese mail clients still send: the GBK bytes in base64
    // inside an RFC 2047 encoded word. Computed here so the source shows the plain text.
    let subject_zh = "你好，世界：测试邮件";
    let (gbk, _, unmappable) = encoding_rs::GBK.encode(subject_zh);
    assert!(!unmappable, "{subject_zh} is all GBK");
    let subject_zh_header = format!("=?GBK?B?{}?=", base64(&gbk));
    let from_zh_header = format!(
        "=?UTF-8?B?{}?= <zhangsan@localhost>",
        base64("张三".as_bytes())
    );
    let markup = "Escaping test: <b>markup</b> & ampersands";
    vec![
        (
            "plain English, \"Welcome to mailpushd\"".to_owned(),
            message_with_body(
                "Welcome to mailpushd",
                "mailpushd demo <demo@localhost>",
                "This message was delivered by examples/demo.rs to a throwaway Dovecot.\n\
                 mailpushd was idling on the mailbox and announced it at once.\n",
            ),
        ),
        (
            format!("Chinese, subject \"{subject_zh}\" in GBK as {subject_zh_header}, from 张三"),
            message_with_body(
                &subject_zh_header,
                &from_zh_header,
                "主题使用 GBK 编码（RFC 2047），发件人姓名使用 UTF-8 编码。\n",
            ),
        ),
        (
            format!("markup that must show literally, subject {markup:?}"),
            message_with_body(
                markup,
                "Escaping test <escape@localhost>",
                "Notification servers that render markup must show the subject's tags as text.\n",
            ),
        ),
    ]
}

/// Standard base64 with padding (RFC 4648), for the encoded words above: not worth a crate.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Lines typed on stdin, read on their own thread (it blocks in `read`, and is simply left
/// behind when the demo exits).
fn read_typed_lines() -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let spawned = thread::Builder::new().name("stdin".into()).spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    if let Err(e) = spawned {
        say(&format!(
            "cannot read the terminal, typed subjects are ignored: {e}"
        ));
    }
    rx
}

/// A header value as RFC 2047 UTF-8 encoded words when it is not plain ASCII, split so each
/// word stays within the RFC's 75 characters without cutting a character in two.
fn encode_header(value: &str) -> String {
    if value.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return value.to_owned();
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in value.chars() {
        // 45 bytes of UTF-8 are 60 characters of base64, plus 12 for "=?UTF-8?B?" "?=".
        if chunk.len() + c.len_utf8() > 45 {
            words.push(format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    words.push(format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes())));
    // Folded: whitespace between encoded words is not part of the text.
    words.join("\r\n ")
}

fn say(message: &str) {
    print_line(&format!("[demo] {message}"));
}

/// One line on stderr. Unlike `eprintln!` it does not panic when the terminal is gone (a
/// closed window sends SIGHUP and then fails writes): the cleanup must still run.
fn print_line(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
