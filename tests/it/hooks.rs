//! The hook runner with real processes, through the library API (`mailpushd::announce::hooks`): what a
//! hook receives (environment and JSON, verbatim and inert), debouncing, one run at a time,
//! the timeout, `on_new_mail_post`, and that every child is reaped.
//!
//! The hooks here are small `sh` scripts that record their environment and stdin into a
//! scratch directory. That the recorder is a shell script is beside the point: what matters
//! is that mailpushd never builds a shell command out of mail data.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{logs, tracked_pids, wait_until, with_timeout};
use mailpushd::announce::hooks::{HookMail, Hooks};
use mailpushd::config::HookConfig;

const LIMIT: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(15);

/// Records run N of a hook into `$1`: `started.N`, `env.N` (NUL-separated, so any value
/// survives), `stdin.N`, then `done.N`; appends `<$2> N start` and `<$2> N end` to
/// `$1/../order`. With `$1/hold` present it waits for `$1/release.N` before finishing; with
/// `$1/fail` present it complains on stderr and exits 3.
const RECORDER: &str = r#"#!/bin/sh
set -e
dir="$1"
n=$(( $(cat "$dir/count" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$dir/count"
echo "$2 $n start" >> "$dir/../order"
touch "$dir/started.$n"
env -0 > "$dir/env.$n"
cat > "$dir/stdin.$n"
if [ -e "$dir/hold" ]; then
    while [ ! -e "$dir/release.$n" ]; do sleep 0.01; done
fi
echo "$2 $n end" >> "$dir/../order"
touch "$dir/done.$n"
if [ -e "$dir/fail" ]; then
    echo "boom" >&2
    echo "second line" >&2
    exit 3
fi
"#;

/// Never finishes by itself: records its pid and its background child's pid, then waits.
const HANGER: &str = r#"#!/bin/sh
sleep 100 &
echo "$!" > "$1/sleeppid"
echo "$$" > "$1/pid"
wait
"#;

// ---- log capture ------------------------------------------------------------------------

/// Waits for a log line of `account` containing `needle`; returns its level and text. The
/// recorder is the binary's one logger ([`crate::support::logs`]): account names here are
/// unique in the binary, so each test reads only its own lines.
fn wait_for_log(account: &str, needle: &str) -> (log::Level, String) {
    logs::wait_for(account, needle, WAIT)
}

fn logs_of(account: &str) -> Vec<String> {
    logs::of(account)
}

// ---- scratch directories and scripts ----------------------------------------------------

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        logs::capture();
        Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An executable script `name` in the scratch directory.
    fn script(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// A recorder hook writing into the subdirectory `label`: its argv.
    fn recorder(&self, label: &str) -> Vec<String> {
        let program = self.script("recorder.sh", RECORDER);
        let dir = self.path(label);
        fs::create_dir_all(&dir).unwrap();
        vec![program, dir.to_str().unwrap().to_owned(), label.to_owned()]
    }

    fn order(&self) -> Vec<String> {
        fs::read_to_string(self.path("order"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn config(on_new_mail: Option<Vec<String>>, debounce_ms: u64, timeout_secs: u64) -> HookConfig {
    HookConfig {
        on_new_mail,
        on_new_mail_post: None,
        debounce: Duration::from_millis(debounce_ms),
        timeout: Duration::from_secs(timeout_secs),
    }
}

fn mail(uid: u32, from: &str, subject: &str) -> HookMail {
    HookMail {
        uid,
        from: from.to_owned(),
        subject: subject.to_owned(),
    }
}

fn wait_for_file(path: &Path) {
    wait_until(WAIT, &format!("{}", path.display()), || {
        path.exists().then_some(())
    });
}

/// The `MAILPUSHD_*` variables of a recorded run, as raw bytes.
fn recorded_env(dir: &Path, run: u32) -> HashMap<String, Vec<u8>> {
    let raw = fs::read(dir.join(format!("env.{run}"))).unwrap();
    raw.split(|&b| b == 0)
        .filter_map(|entry| {
            let eq = entry.iter().position(|&b| b == b'=')?;
            let name = String::from_utf8(entry[..eq].to_vec()).ok()?;
            name.starts_with("MAILPUSHD_")
                .then(|| (name, entry[eq + 1..].to_vec()))
        })
        .collect()
}

fn recorded_json(dir: &Path, run: u32) -> serde_json::Value {
    let raw = fs::read(dir.join(format!("stdin.{run}"))).unwrap();
    assert_eq!(raw.last(), Some(&b'\n'), "stdin ends with a newline");
    serde_json::from_slice(&raw).expect("stdin is JSON")
}

fn env_str(env: &HashMap<String, Vec<u8>>, name: &str) -> String {
    String::from_utf8(
        env.get(name)
            .unwrap_or_else(|| panic!("{name} not set"))
            .clone(),
    )
    .unwrap()
}

fn read_pid(path: &Path) -> u32 {
    wait_until(WAIT, &format!("a pid in {}", path.display()), || {
        fs::read_to_string(path)
            .ok()?
            .strip_suffix('\n')?
            .parse()
            .ok()
    })
}

// ---- /proc ------------------------------------------------------------------------------

/// (state, ppid) of `pid`, zombies included; `None` once it is gone.
fn state_and_parent(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split at the last ')'.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// Gone, or dead and waiting for a parent other than us to reap it.
fn is_dead(pid: u32) -> bool {
    match state_and_parent(pid) {
        None => true,
        Some((state, _)) => state == 'Z' || state == 'X',
    }
}

/// Zombie children of this test process that are not support code's: the tests of every
/// module share the process, and a daemon or server another test started and that has
/// exited is a zombie until that test reaps it (the hook runner's children are never
/// tracked, so they all count).
fn our_zombies() -> Vec<u32> {
    let me = std::process::id();
    let zombies: Vec<u32> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| state_and_parent(pid) == Some(('Z', me)))
        .collect();
    let tracked = tracked_pids();
    zombies
        .into_iter()
        .filter(|pid| !tracked.contains(pid))
        .collect()
}

// ---- tests ------------------------------------------------------------------------------

#[test]
fn one_message_arrives_in_env_and_json_verbatim_and_inert() {
    with_timeout(LIMIT, || {
        let s = Scratch::new();
        let canary = s.path("canary");
        fs::write(&canary, "still here").unwrap();
        let pwned_subst = s.path("pwned-subst");
        let pwned_quote = s.path("pwned-quote");
        let pwned_tick = s.path("pwned-tick");
        // Each would create a file (or remove the canary) if any shell ever interpreted it.
        let subject = format!(
            "$(touch {}); rm -rf {} `touch {}`\n\t'x' 测试 \u{202e}",
            pwned_subst.display(),
            canary.display(),
            pwned_tick.display()
        );
        let from = format!("\"; touch {}; \" <evil@example.com>", pwned_quote.display());

        let hooks = Hooks::new();
        let argv = s.recorder("main");
        hooks.new_mail(
            "inert",
            "Sent Items",
            &config(Some(argv), 0, 10),
            vec![mail(4711, &from, &subject)],
        );
        let dir = s.path("main");
        wait_for_file(&dir.join("done.1"));
        wait_for_log("inert", "exited 0");
        hooks.shutdown();

        let env = recorded_env(&dir, 1);
        assert_eq!(env_str(&env, "MAILPUSHD_ACCOUNT"), "inert");
        assert_eq!(env_str(&env, "MAILPUSHD_MAILBOX"), "Sent Items");
        assert_eq!(env_str(&env, "MAILPUSHD_COUNT"), "1");
        assert_eq!(env_str(&env, "MAILPUSHD_UID"), "4711");
        assert_eq!(env["MAILPUSHD_SUBJECT"], subject.as_bytes());
        assert_eq!(env["MAILPUSHD_FROM"], from.as_bytes());

        let json = recorded_json(&dir, 1);
        assert_eq!(
            json,
            serde_json::json!([{
                "account": "inert",
                "mailbox": "Sent Items",
                "uid": 4711,
                "from": from,
                "subject": subject,
            }])
        );

        for pwned in [&pwned_subst, &pwned_quote, &pwned_tick] {
            assert!(!pwned.exists(), "{} was created", pwned.display());
        }
        assert_eq!(fs::read_to_string(&canary).unwrap(), "still here");
    });
}

#[test]
fn nul_bytes_are_dropped_from_the_env_but_kept_in_the_json() {
    with_timeout(LIMIT, || {
        let s = Scratch::new();
        let hooks = Hooks::new();
        hooks.new_mail(
            "nul",
            "INBOX",
            &config(Some(s.recorder("main")), 0, 10),
            vec![mail(1, "a\0b <c@example.com>", "x\0y")],
        );
        let dir = s.path("main");
        wait_for_file(&dir.join("done.1"));
        hooks.shutdown();
        let env = recorded_env(&dir, 1);
        assert_eq!(env_str(&env, "MAILPUSHD_SUBJECT"), "xy");
        assert_eq!(env_str(&env, "MAILPUSHD_FROM"), "ab <c@example.com>");
        assert_eq!(recorded_json(&dir, 1)[0]["subject"], "x\0y");
    });
}

#[test]
fn ten_messages_within_the_window_make_one_run() {
    with_timeout(LIMIT, || {
        let s = Scratch::new();
        let hooks = Hooks::new();
        let cfg = config(Some(s.recorder("main")), 500, 10);
        for uid in 1..=10 {
            let mailbox = if uid <= 5 { "INBOX" } else { "Lists" };
            hooks.new_mail(
                "burst",
                mailbox,
                &cfg,
                vec![mail(uid, "a@example.com", &format!("s{uid}"))],
            );
        }
        let dir = s.path("main");
        wait_for_file(&dir.join("done.1"));
        // Joins the thread: no run can start after this.
        hooks.shutdown();

        assert_eq!(fs::read_to_string(dir.join("count")).unwrap(), "1\n");
        let env = recorded_env(&dir, 1);
        assert_eq!(env_str(&env, "MAILPUSHD_COUNT"), "10");
        // Two mailboxes in one batch: the variable is set, and empty.
        assert_eq!(env_str(&env, "MAILPUSHD_MAILBOX"), "");
        for single in ["MAILPUSHD_UID", "MAILPUSHD_FROM", "MAILPUSHD_SUBJECT"] {
            assert!(!env.contains_key(single), "{single} set for a batch of 10");
        }
        let json = recorded_json(&dir, 1);
        let list = json.as_array().unwrap();
        assert_eq!(list.len(), 10);
        for (i, m) in list.iter().enumerate() {
            let uid = i as u64 + 1;
            assert_eq!(m["uid"], uid);
            assert_eq!(m["mailbox"], if uid <= 5 { "INBOX" } else { "Lists" });
            assert_eq!(m["subject"], format!("s{uid}"));
        }
        assert_eq!(s.order(), ["main 1 start", "main 1 end"]);
    });
}

#[test]
fn mail_during_a_run_makes_exactly_one_more_run() {
    with_timeout(LIMIT, || {
        let s = Scratch::new();
        let hooks = Hooks::new();
        let cfg = config(Some(s.recorder("main")), 50, 20);
        let dir = s.path("main");
        fs::write(dir.join("hold"), "").unwrap();

        hooks.new_mail("busy", "INBOX", &cfg, vec![mail(1, "a", "first")]);
        wait_for_file(&dir.join("started.1"));
        for uid in 2..=6 {
            hooks.new_mail("busy", "INBOX", &cfg, vec![mail(uid, "a", "during")]);
        }
        assert!(
            !dir.join("started.2").exists(),
            "a second run while the first runs"
        );
        fs::remove_file(dir.join("hold")).unwrap();
        fs::write(dir.join("release.1"), "").unwrap();
        wait_for_file(&dir.join("done.2"));
        hooks.shutdown();

        assert_eq!(fs::read_to_string(dir.join("count")).unwrap(), "2\n");
        assert_eq!(env_str(&recorded_env(&dir, 1), "MAILPUSHD_COUNT"), "1");
        assert_eq!(env_str(&recorded_env(&dir, 2), "MAILPUSHD_COUNT"), "5");
        let uids: Vec<u64> = recorded_json(&dir, 2)
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["uid"].as_u64().unwrap())
            .collect();
        assert_eq!(uids, [2, 3, 4, 5, 6]);
        assert_eq!(
            s.order(),
            ["main 1 start", "main 1 end", "main 2 start", "main 2 end"]
        );
    });
}

#[test]
fn a_hanging_hook_is_killed_at_its_timeout_with_its_children_and_reaped() {
    with_timeout(LIMIT, || {
        let s = Scratch::new();
        let hooks = Hooks::new();
        let hanger = s.script("hanger.sh", HANGER);
        let dir = s.dir.path().to_str().unwrap().to_owned();
        let started = Instant::now();
        hooks.new_mail(
            "hang",
            "INBOX",
            &config(Some(vec![hanger, dir]), 0, 1),
            vec![mail(1, "a", "s")],
        );
        let pid = read_pid(&s.path("pid"));
        let sleep_pid = read_pid(&s.path("sleeppid"));

        let (level, line) = wait_for_log("hang", "still running after 1s: killed");
        let elapsed = started.elapsed();
        assert_eq!(level, log::Level::Warn, "{line}");
        assert!(
            elapsed >= Duration::from_secs(1),
            "killed after {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_secs(5),
            "killed only after {elapsed:?}"
        );

        // The hook was waited for before the line was logged: no zombie, not even briefly.
        assert_eq!(state_and_parent(pid), None, "hook {pid} still in /proc");
        // Its background child went with it (the whole process group is killed); whoever
        // adopted it reaps it.
        wait_until(WAIT, "the hook's background sleep to die", || {
            is_dead(sleep_pid).then_some(())
        });
        wait_until(WAIT, "no zombie children of the test process", || {
            our_zombies().is_empty().then_some(())
        });
        hooks.shutdown();
    });
}

#[test]
fn a_hook_that_ignores_a_large_stdin_and_floods_stderr_still_times_out() {
    with_timeout(LIMIT, || {
        let s = Scratch::new();
        let hooks = Hooks::new();
        // Never reads stdin; writes to stderr as fast as it can.
        let flood = s.script("flood.sh", "#!/bin/sh\nexec yes stderr-flood >&2\n");
        // Far more JSON than a pipe holds (64 KiB).
        let mails: Vec<HookMail> = (1..=5000)
            .map(|uid| {
                mail(
                    uid,
                    "someone <someone@example.com>",
                    "a subject of some length",
                )
            })
            .collect();
        let started = Instant::now();
        hooks.new_mail("flood", "INBOX", &config(Some(vec![flood]), 0, 1), mails);
        let (_, line) = wait_for_log(
            "flood",
            "for 5000 message(s) still running after 1s: killed",
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // Bounded, one line, escaped.
        assert!(
            line.contains(": stderr: stderr-flood\\nstderr-flood"),
            "{line}"
        );
        assert!(line.len() < 1000, "{} bytes", line.len());
        assert!(!line.contains('\n'));
        hooks.shutdown();
    });
}

#[test]
fn post_runs_after_new_mail_with_the_same_input() {
    with_timeout(LIMIT, || {
        let s = Scratch::new();
        let hooks = Hooks::new();
        let mut cfg = config(Some(s.recorder("main")), 0, 10);
        cfg.on_new_mail_post = Some(s.recorder("post"));
        hooks.new_mail(
            "post",
            "INBOX",
            &cfg,
            vec![mail(1, "a", "one"), mail(2, "b", "two")],
        );
        wait_for_file(&s.path("post").join("done.1"));
        hooks.shutdown();

        assert_eq!(
            s.order(),
            ["main 1 start", "main 1 end", "post 1 start", "post 1 end"]
        );
        let (main, post) = (s.path("main"), s.path("post"));
        assert_eq!(recorded_env(&main, 1), recorded_env(&post, 1));
        assert_eq!(
            fs::read(main.join("stdin.1")).unwrap(),
            fs::read(post.join("stdin.1")).unwrap()
        );
        assert_eq!(env_str(&recorded_env(&post, 1), "MAILPUSHD_COUNT"), "2");
        wait_for_log("post", "on_new_mail_post");
    });
}

#[test]
fn post_is_skipped_when_new_mail_fails_and_the_failure_is_logged() {
    with_timeout(LIMIT, || {
        let s = Scratch::new();
        let hooks = Hooks::new();
        let mut cfg = config(Some(s.recorder("main")), 0, 10);
        cfg.on_new_mail_post = Some(s.recorder("post"));
        let main = s.path("main");
        fs::write(main.join("fail"), "").unwrap();
        hooks.new_mail("failing", "INBOX", &cfg, vec![mail(1, "a", "s")]);
        let (level, line) = wait_for_log("failing", "failed (exit status: 3)");
        assert_eq!(level, log::Level::Warn);
        assert!(line.ends_with(": stderr: boom\\nsecond line"), "{line}");

        fs::remove_file(main.join("fail")).unwrap();
        hooks.new_mail("failing", "INBOX", &cfg, vec![mail(2, "a", "s")]);
        wait_for_file(&s.path("post").join("done.1"));
        hooks.shutdown();
        assert_eq!(
            s.order(),
            [
                "main 1 start",
                "main 1 end",
                "main 2 start",
                "main 2 end",
                "post 1 start",
                "post 1 end"
            ]
        );
        let post_env = recorded_env(&s.path("post"), 1);
        assert_eq!(env_str(&post_env, "MAILPUSHD_UID"), "2");
    });
}

#[test]
fn post_alone_runs_when_it_is_the_only_hook() {
    with_timeout(LIMIT, || {
        let s = Scratch::new();
        let hooks = Hooks::new();
        let mut cfg = config(None, 0, 10);
        cfg.on_new_mail_post = Some(s.recorder("post"));
        hooks.new_mail("postonly", "INBOX", &cfg, vec![mail(1, "a", "s")]);
        wait_for_file(&s.path("post").join("done.1"));
        hooks.shutdown();
        assert_eq!(s.order(), ["post 1 start", "post 1 end"]);
    });
}

#[test]
fn a_missing_program_is_logged_and_later_mail_still_runs() {
    with_timeout(LIMIT, || {
        let s = Scratch::new();
        let hooks = Hooks::new();
        let missing = s.path("no-such-hook").to_str().unwrap().to_owned();
        hooks.new_mail(
            "missing",
            "INBOX",
            &config(Some(vec![missing]), 0, 10),
            vec![mail(1, "a", "s")],
        );
        let (level, line) = wait_for_log("missing", "could not be started");
        assert_eq!(level, log::Level::Warn, "{line}");
        hooks.new_mail(
            "missing",
            "INBOX",
            &config(Some(s.recorder("main")), 0, 10),
            vec![mail(2, "a", "s")],
        );
        wait_for_file(&s.path("main").join("done.1"));
        hooks.shutdown();
    });
}

#[test]
fn shutdown_kills_a_running_hook_promptly_and_drops_pending_mail() {
    with_timeout(LIMIT, || {
        let s = Scratch::new();
        let hooks = Hooks::new();
        let hanger = s.script("hanger.sh", HANGER);
        let dir = s.dir.path().to_str().unwrap().to_owned();
        let cfg = config(Some(vec![hanger, dir]), 0, 600);
        hooks.new_mail("stopping", "INBOX", &cfg, vec![mail(1, "a", "s")]);
        let pid = read_pid(&s.path("pid"));
        let sleep_pid = read_pid(&s.path("sleeppid"));
        hooks.new_mail("stopping", "INBOX", &cfg, vec![mail(2, "a", "s")]);

        let started = Instant::now();
        hooks.shutdown();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1500), "shutdown took {took:?}");
        assert_eq!(state_and_parent(pid), None, "hook {pid} still in /proc");
        wait_until(WAIT, "the hook's background sleep to die", || {
            is_dead(sleep_pid).then_some(())
        });
        wait_for_log("stopping", "mailpushd is shutting down");
        wait_for_log("stopping", "hooks not run for 1 pending message(s)");

        // After shutdown, new mail is ignored: no thread, no run.
        hooks.new_mail("stopping", "INBOX", &cfg, vec![mail(3, "a", "s")]);
        assert_eq!(
            logs_of("stopping")
                .iter()
                .filter(|l| l.contains("on_new_mail"))
                .count(),
            1,
            "{:?}",
            logs_of("stopping")
        );
    });
}
