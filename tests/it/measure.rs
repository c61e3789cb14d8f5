//! Measurements, not tests: latency from the server's EXISTS line to the Notify call,
//! resident memory, and what the daemon costs while idle. Ignored by `cargo test`; run with
//! `scripts/measure` (release build, one at a time) and quote the printed figures.
//!
//! The rig is the same as the end-to-end tests (real Dovecot, private bus, recording
//! notification server), plus a timestamping TCP proxy between mailpushd and Dovecot: it
//! notes the moment each `* N EXISTS` line passes, on the same monotonic clock the
//! notification recorder uses, so the difference is mailpushd's own share (plus a few
//! microseconds of proxy forwarding). The connection is plain IMAP on loopback so the proxy
//! can read it; TLS would add a decrypt of one short line.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::daemon::Daemon;
use crate::support::dbus::{NotificationServer, SessionBus};
use crate::support::dovecot::{message, Dovecot, DovecotOptions};
use crate::support::{lock, wait_until};

const WAIT: Duration = Duration::from_secs(20);

/// Forwards one client to `upstream`, recording when each EXISTS line goes downstream.
struct ExistsProxy {
    port: u16,
    exists_at: Arc<Mutex<Vec<Instant>>>,
}

impl ExistsProxy {
    fn start(upstream: u16) -> ExistsProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let exists_at = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&exists_at);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                client.set_nodelay(true).unwrap();
                server.set_nodelay(true).unwrap();
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || pump(c2, s2, None));
                let record = Arc::clone(&record);
                thread::spawn(move || pump(server, client, Some(record)));
            }
        });
        ExistsProxy { port, exists_at }
    }

    fn exists_times(&self) -> Vec<Instant> {
        lock(&self.exists_at).clone()
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, record: Option<Arc<Mutex<Vec<Instant>>>>) {
    let mut buf = [0u8; 16384];
    let mut line = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = Instant::now();
        if let Some(rec) = &record {
            for &b in &buf[..n] {
                line.push(b);
                if b == b'\n' {
                    if line.starts_with(b"* ") && line.ends_with(b" EXISTS\r\n") {
                        lock(rec).push(now);
                    }
                    line.clear();
                }
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn stats(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = ms[ms.len() / 2];
    let p99 = ms[((ms.len() as f64) * 0.99).ceil() as usize - 1];
    println!(
        "{name:<44} n={:<4} min={:>8.3} median={:>8.3} p99={:>8.3} max={:>8.3} ms",
        ms.len(),
        ms[0],
        median,
        p99,
        ms[ms.len() - 1]
    );
}

fn proc_status(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .map(|l| l[key.len() + 1..].trim().to_owned())
        .unwrap_or_default()
}

/// (user+system CPU in clock ticks, context switches summed over all threads)
fn cpu_and_switches(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may contain spaces) start at ") ".
    let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks = rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap();
    let mut switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        for l in status.lines() {
            if l.starts_with("voluntary_ctxt_switches:")
                || l.starts_with("nonvoluntary_ctxt_switches:")
            {
                switches += l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
            }
        }
    }
    (ticks, switches)
}

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "measurement: run scripts/measure"]
fn measure_latency_memory_and_idle_cost() {
    let messages = env_u64("MEASURE_MESSAGES", 20) as usize;
    let idle_secs = env_u64("MEASURE_IDLE_SECS", 60);

    // Dovecot's default keepalive interval (2 minutes) so the idle figure is realistic.
    let dovecot = Dovecot::start(DovecotOptions {
        idle_notify_interval: Duration::from_secs(120),
        ..DovecotOptions::default()
    });
    let bus = SessionBus::start();
    let notifications = NotificationServer::start(&bus);
    let proxy = ExistsProxy::start(dovecot.imap_port);
    let config = format!(
        "[[accounts]]\nname = \"m\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         username = {:?}\npassword = {:?}\n\n[syslog]\nenabled = false\n\
         # Flood control off: messages one after another would be held after the third.\n\
         [notifications]\nburst_window_secs = 0\n",
        proxy.port, dovecot.user, dovecot.password
    );
    let daemon = Daemon::start(&config, Some(&bus));
    daemon.wait_for_output(WAIT, "watching m/INBOX ");
    let pid = daemon.pid();

    let mut client_share = Vec::new();
    let mut end_to_end = Vec::new();
    for i in 0..messages {
        let before = proxy.exists_times().len();
        let t0 = Instant::now();
        dovecot.append(
            "INBOX",
            &message(&format!("latency probe {i}"), "p@example.com"),
        );
        let notes = notifications.wait_for_count(i + 1, WAIT);
        let notified = notes[i].at;
        let exists = wait_until(WAIT, "the EXISTS timestamp", || {
            proxy.exists_times().get(before).copied()
        });
        client_share.push(notified.duration_since(exists).as_secs_f64() * 1e3);
        end_to_end.push(notified.duration_since(t0).as_secs_f64() * 1e3);
    }
    let internal: Vec<f64> = daemon
        .output_lines()
        .iter()
        .filter_map(|l| {
            let rest = l.split("announced m/INBOX uid=").nth(1)?;
            rest.split_whitespace().nth(1)?.parse().ok()
        })
        .collect();

    println!("\n== mailpushd measurements ({messages} messages, one at a time, loopback) ==");
    stats("EXISTS at proxy -> Notify at server", client_share);
    stats("EXISTS parsed -> popup sent (daemon's own log)", internal);
    stats("APPEND start -> Notify (incl. Dovecot delay)", end_to_end);
    println!(
        "after latency run: VmRSS {} VmHWM {} Threads {}",
        proc_status(pid, "VmRSS"),
        proc_status(pid, "VmHWM"),
        proc_status(pid, "Threads")
    );

    let (cpu0, sw0) = cpu_and_switches(pid);
    // The point of this measurement is to do nothing for a while and look at the cost.
    thread::sleep(Duration::from_secs(idle_secs));
    let (cpu1, sw1) = cpu_and_switches(pid);
    println!(
        "idle {idle_secs} s: CPU {} clock ticks (1 tick = 10 ms at CLK_TCK 100), context switches {} (Dovecot keepalive every 120 s)",
        cpu1 - cpu0,
        sw1 - sw0
    );
    println!(
        "after idle: VmRSS {} VmHWM {} Threads {}",
        proc_status(pid, "VmRSS"),
        proc_status(pid, "VmHWM"),
        proc_status(pid, "Threads")
    );
}

#[test]
#[ignore = "measurement: run scripts/measure"]
fn measure_memory_across_forced_reconnects() {
    let reconnects = env_u64("MEASURE_RECONNECTS", 1000) as usize;
    let dovecot = Dovecot::start(DovecotOptions::default());
    let bus = SessionBus::start();
    let _notifications = NotificationServer::start(&bus);
    let proxy = crate::support::proxy::FaultProxy::start(dovecot.imap_port);
    let config = format!(
        "[[accounts]]\nname = \"m\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         username = {:?}\npassword = {:?}\nreconnect_max_secs = 1\n\n[syslog]\nenabled = false\n",
        proxy.port, dovecot.user, dovecot.password
    );
    let daemon = Daemon::start(&config, Some(&bus));
    daemon.wait_for_output(WAIT, "watching m/INBOX ");
    let pid = daemon.pid();
    let rss = || proc_status(pid, "VmRSS");
    let mut at_10 = String::new();
    let before = rss();
    let started = Instant::now();
    for i in 1..=reconnects {
        proxy.reset_all();
        wait_until(WAIT, "the reconnect", || {
            (daemon.count_output("watching m/INBOX ") > i).then_some(())
        });
        if i == 10 {
            at_10 = rss();
        }
    }
    println!(
        "\n== {reconnects} forced reconnects (connection reset mid-IDLE) in {:.0?} ==",
        started.elapsed()
    );
    println!(
        "reconnects: VmRSS before {before}, after 10 {at_10}, after {reconnects} {}; VmHWM {}; Threads {}",
        rss(),
        proc_status(pid, "VmHWM"),
        proc_status(pid, "Threads")
    );
}

// ---------------------------------------------------------------------------------------
// bench/run: one run per test invocation, figures printed as `BENCH <name> key=value ...`
// lines that bench/run collects over several runs and aggregates (min/median/max).
// ---------------------------------------------------------------------------------------

use crate::support::rig::Rig;

/// Percentile (0..=100) of an unsorted list, nearest-rank.
fn percentile(ms: &[f64], p: f64) -> f64 {
    let mut v = ms.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((v.len() as f64) * p / 100.0).ceil().max(1.0) as usize - 1;
    v[rank.min(v.len() - 1)]
}

fn bench_line(name: &str, pairs: &[(&str, String)]) {
    let kv: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("BENCH {name} {}", kv.join(" "));
}

fn dist(prefix: &str, ms: &[f64]) -> Vec<(String, String)> {
    vec![
        (
            format!("{prefix}_median_ms"),
            format!("{:.3}", percentile(ms, 50.0)),
        ),
        (
            format!("{prefix}_p99_ms"),
            format!("{:.3}", percentile(ms, 99.0)),
        ),
        (
            format!("{prefix}_max_ms"),
            format!("{:.3}", percentile(ms, 100.0)),
        ),
    ]
}

/// kB figure of a /proc/PID/status field ("1234 kB" -> 1234).
fn status_kib(pid: u32, key: &str) -> u64 {
    proc_status(pid, key)
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn mem_pairs(pid: u32, prefix: &str) -> Vec<(String, String)> {
    vec![
        (
            format!("{prefix}rss_mib"),
            format!("{:.2}", status_kib(pid, "VmRSS") as f64 / 1024.0),
        ),
        (
            format!("{prefix}hwm_mib"),
            format!("{:.2}", status_kib(pid, "VmHWM") as f64 / 1024.0),
        ),
        // VmRSS = anonymous (the daemon's own heap and stacks) + file-backed (code of the
        // binary and shared libraries, shared with every other process mapping them).
        (
            format!("{prefix}anon_mib"),
            format!("{:.2}", status_kib(pid, "RssAnon") as f64 / 1024.0),
        ),
        (
            format!("{prefix}file_mib"),
            format!("{:.2}", status_kib(pid, "RssFile") as f64 / 1024.0),
        ),
        (format!("{prefix}threads"), proc_status(pid, "Threads")),
        (
            format!("{prefix}stack_max_kib"),
            deepest_thread_stack_kib(pid).to_string(),
        ),
    ]
}

/// One mapping of `/proc/PID/smaps`: its header line and two of its sizes.
struct Mapping {
    /// "start-end perms offset dev inode [path]".
    header: String,
    size_kib: u64,
    rss_kib: u64,
}

fn mappings(pid: u32) -> Vec<Mapping> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut maps: Vec<Mapping> = Vec::new();
    for l in smaps.lines() {
        let fields: Vec<&str> = l.split_whitespace().collect();
        let kib = || fields.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        match fields.first() {
            // A header's first field is the address range; field lines end in ':'.
            Some(f) if f.contains('-') && !f.ends_with(':') => maps.push(Mapping {
                header: l.to_owned(),
                size_kib: 0,
                rss_kib: 0,
            }),
            Some(&"Size:") => maps.last_mut().into_iter().for_each(|m| m.size_kib = kib()),
            Some(&"Rss:") => maps.last_mut().into_iter().for_each(|m| m.rss_kib = kib()),
            _ => {}
        }
    }
    maps
}

/// The most any thread has touched of its stack: the largest resident size among the
/// threads' 2 MiB stack mappings (Rust's default size, anonymous, `rw-p`; touched pages
/// stay resident), i.e. the deepest stack any thread has reached so far.
fn deepest_thread_stack_kib(pid: u32) -> u64 {
    mappings(pid)
        .iter()
        .filter(|m| {
            let fields: Vec<&str> = m.header.split_whitespace().collect();
            m.size_kib == 2048 && fields.len() == 5 && fields[1] == "rw-p"
        })
        .map(|m| m.rss_kib)
        .max()
        .unwrap_or(0)
}

fn emit(name: &str, pairs: Vec<(String, String)>) {
    let p: Vec<(&str, String)> = pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    bench_line(name, &p);
}

/// Polls `f` every millisecond (finer than support's 20 ms) until it is true; returns when.
fn poll_fine(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// `[[accounts]]` tables for `n` accounts of the one Dovecot user, all on INBOX, over
/// implicit TLS (what a real user has).
/// MEASURE_TLS=none: plain IMAP on loopback instead, to separate TLS's share.
fn many_accounts(rig: &Rig, n: usize) -> String {
    let tls = std::env::var("MEASURE_TLS").unwrap_or_else(|_| "implicit".into());
    (0..n)
        .map(|i| {
            rig.dovecot
                .account_toml(&format!("a{i}"), &tls)
                .replace("host = \"localhost\"", "host = \"127.0.0.1\"")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// MEASURE_FSYNC=0 runs Dovecot with `mail_fsync = never` (bursts and prefills that are
/// not capped by Dovecot's ~70 fsynced APPENDs per second).
fn rig_for(accounts: usize, keepalive_secs: u64) -> Rig {
    Rig::start(DovecotOptions {
        idle_notify_interval: Duration::from_secs(keepalive_secs),
        mail_max_userip_connections: (accounts as u32 + 20).max(10),
        fsync: env_u64("MEASURE_FSYNC", 1) != 0,
        ..DovecotOptions::default()
    })
}

/// Items 1 and 7: EXISTS (at the proxy) -> Notify, APPEND -> Notify, and the daemon's own
/// "announced ... ms after wake", over MEASURE_MESSAGES (default 200) messages one at a
/// time; MEASURE_PREFILL (default 0) messages are put into INBOX before the daemon starts.
#[test]
#[ignore = "benchmark: run bench/run"]
fn bench_latency() {
    let messages = env_u64("MEASURE_MESSAGES", 200) as usize;
    let prefill = env_u64("MEASURE_PREFILL", 0) as usize;
    let rig = rig_for(1, 120);
    if prefill > 0 {
        let t = Instant::now();
        rig.dovecot.bulk_append("INBOX", prefill, |i| {
            message(&format!("prefill {i}"), "bulk@example.com")
        });
        eprintln!("prefilled {prefill} messages in {:?}", t.elapsed());
    }
    let proxy = ExistsProxy::start(rig.dovecot.imap_port);
    let account = format!(
        "[[accounts]]\nname = \"m\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         username = {:?}\npassword = {:?}\n",
        proxy.port, rig.dovecot.user, rig.dovecot.password
    );
    // Flood control off: 200 messages half a second apart are a flood by its rule (more
    // than summary_threshold within burst_window_secs), and the held ones would measure its
    // one-second pause, not the daemon's processing.
    let config = rig.config_with(&account, "burst_window_secs = 0\n");
    let daemon = rig.daemon_with_config(&config, &["m/INBOX"]);
    let pid = daemon.pid();
    // One persistent APPEND session (TLS, like any mail client), so each APPEND is just
    // the command and not a login.
    let mut session = rig.dovecot.session();
    // A pause between messages (MEASURE_GAP_MS, default 100), so that each is measured
    // alone and not queued behind the previous one's FETCH. (Without it, the measurement
    // once found EXISTS responses being dropped; fixed, see docs/PERFORMANCE.md.)
    let gap = Duration::from_millis(env_u64("MEASURE_GAP_MS", 100));
    let mut client_share = Vec::new();
    let mut end_to_end = Vec::new();
    for i in 0..messages {
        thread::sleep(gap);
        let before = proxy.exists_times().len();
        let t0 = Instant::now();
        session
            .append(
                "INBOX",
                &message(&format!("latency probe {i}"), "p@example.com"),
            )
            .finish()
            .unwrap();
        let notes = rig.notifications.wait_for_count(i + 1, WAIT);
        let notified = notes[i].at;
        let exists = wait_until(WAIT, "the EXISTS timestamp", || {
            proxy.exists_times().get(before).copied()
        });
        client_share.push(notified.duration_since(exists).as_secs_f64() * 1e3);
        end_to_end.push(notified.duration_since(t0).as_secs_f64() * 1e3);
    }
    let _ = session.logout();
    let internal: Vec<f64> = daemon
        .output_lines()
        .iter()
        .filter_map(|l| {
            let rest = l.split("announced m/INBOX uid=").nth(1)?;
            rest.split_whitespace().nth(1)?.parse().ok()
        })
        .collect();
    let mut pairs = vec![
        // MEASURE_LABEL: the build, e.g. one from before issue 15 run through
        // MAILPUSHD_WRAP (bench/run's BEFORE_BIN).
        (
            "build".to_owned(),
            std::env::var("MEASURE_LABEL").unwrap_or_else(|_| "this".to_owned()),
        ),
        ("messages".to_owned(), messages.to_string()),
        ("prefill".to_owned(), prefill.to_string()),
    ];
    pairs.extend(dist("exists_notify", &client_share));
    pairs.extend(dist("wake_announced", &internal));
    pairs.extend(dist("append_notify", &end_to_end));
    pairs.extend(mem_pairs(pid, ""));
    emit(
        if prefill > 0 {
            "latency_prefilled"
        } else {
            "latency"
        },
        pairs,
    );
}

/// Items 2 and 4: MEASURE_ACCOUNTS (default 100) accounts: spawn -> all watching, then
/// memory and threads after MEASURE_SETTLE_SECS (default 5) idling.
#[test]
#[ignore = "benchmark: run bench/run"]
fn bench_accounts() {
    let n = env_u64("MEASURE_ACCOUNTS", 100) as usize;
    let settle = env_u64("MEASURE_SETTLE_SECS", 5);
    let prefill = env_u64("MEASURE_PREFILL", 0) as usize;
    let rig = rig_for(n, 120);
    if prefill > 0 {
        rig.dovecot.bulk_append("INBOX", prefill, |i| {
            message(&format!("prefill {i}"), "bulk@example.com")
        });
    }
    let config = rig.config(&many_accounts(&rig, n));
    let spawned = Instant::now();
    let daemon = Daemon::start_with_state(&config, Some(&rig.bus), rig.state.path());
    let all = poll_fine(Duration::from_secs(60), "all accounts watching", || {
        daemon.count_output("watching ") >= n
    });
    let startup_ms = all.duration_since(spawned).as_secs_f64() * 1e3;
    let pid = daemon.pid();
    let at_start = mem_pairs(pid, "start_");
    thread::sleep(Duration::from_secs(settle));
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    if std::env::var_os("MEASURE_SMAPS").is_some() {
        // Where the resident memory is: the rollup, then the largest mappings.
        println!(
            "{}",
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap()
        );
        let mut maps = mappings(pid);
        maps.sort_by_key(|m| std::cmp::Reverse(m.rss_kib));
        for m in maps.iter().take(15) {
            println!("SMAPS {:>8} kB  {}", m.rss_kib, m.header);
        }
    }
    let mut pairs = vec![
        ("accounts".to_owned(), n.to_string()),
        ("prefill".to_owned(), prefill.to_string()),
        ("startup_ms".to_owned(), format!("{startup_ms:.1}")),
        ("fds".to_owned(), fds.to_string()),
    ];
    pairs.extend(at_start);
    pairs.extend(mem_pairs(pid, ""));
    emit(
        &format!(
            "accounts_{n}{}",
            if prefill > 0 { "_prefilled" } else { "" }
        ),
        pairs,
    );
}

/// Item 3: MEASURE_ACCOUNTS (default 100) accounts idling for MEASURE_IDLE_SECS (default
/// 300) with Dovecot's default 2-minute keepalive: CPU ticks and context switches of the
/// whole process (all threads).
#[test]
#[ignore = "benchmark: run bench/run"]
fn bench_idle() {
    let n = env_u64("MEASURE_ACCOUNTS", 100) as usize;
    let secs = env_u64("MEASURE_IDLE_SECS", 300);
    let rig = rig_for(n, 120);
    let config = rig.config(&many_accounts(&rig, n));
    let daemon = Daemon::start_with_state(&config, Some(&rig.bus), rig.state.path());
    daemon.wait_for_output_count(Duration::from_secs(60), "watching ", n);
    let pid = daemon.pid();
    thread::sleep(Duration::from_secs(5));
    let (cpu0, sw0) = cpu_and_switches(pid);
    let lines0 = daemon.output_lines().len();
    thread::sleep(Duration::from_secs(secs));
    let (cpu1, sw1) = cpu_and_switches(pid);
    let lines1 = daemon.output_lines().len();
    // Keepalives Dovecot sent meanwhile: one "* OK Still here" per connection every 120 s.
    let keepalives = n as u64 * secs / 120;
    emit(
        "idle",
        vec![
            ("accounts".into(), n.to_string()),
            ("secs".into(), secs.to_string()),
            ("cpu_ticks".into(), (cpu1 - cpu0).to_string()),
            ("ctx_switches".into(), (sw1 - sw0).to_string()),
            ("expected_keepalives".into(), keepalives.to_string()),
            ("log_lines".into(), (lines1 - lines0).to_string()),
        ]
        .into_iter()
        .chain(mem_pairs(pid, ""))
        .collect(),
    );
}

/// Item 5: MEASURE_BURST (default 1000) messages APPENDed as fast as one pipelined session
/// can into the watched INBOX.
#[test]
#[ignore = "benchmark: run bench/run"]
fn bench_burst() {
    let n = env_u64("MEASURE_BURST", 1000) as usize;
    let rig = rig_for(1, 120);
    // MEASURE_NOTIFICATIONS: extra `[notifications]` lines, e.g. "burst_window_secs = 0"
    // for the figures without flood control.
    let extra = std::env::var("MEASURE_NOTIFICATIONS").unwrap_or_default();
    let config = rig.config_with(
        &rig.dovecot.account_toml("m", "implicit"),
        &format!("{}\n", extra.replace("\\n", "\n")),
    );
    let daemon = rig.daemon_with_config(&config, &["m/INBOX"]);
    let pid = daemon.pid();
    let before = mem_pairs(pid, "before_");
    let t0 = Instant::now();
    let last_append = rig.dovecot.bulk_append("INBOX", n, |i| {
        message(&format!("burst {i}"), "bulk@example.com")
    });
    let all = poll_fine(Duration::from_secs(60), "all new-mail syslog lines", || {
        rig.new_mail_lines().len() >= n
    });
    // Flood control holds popups past the threshold until the mail pauses (a second) or
    // its window ends: wait until the popups account for every message.
    let counted = |p: &crate::support::dbus::Notify| -> usize {
        match p.summary.split_once(" new messages in ") {
            Some((count, _)) => count.parse().unwrap_or(1),
            None => 1,
        }
    };
    poll_fine(
        Duration::from_secs(60),
        "popups covering every message",
        || {
            rig.notifications
                .notifications()
                .iter()
                .map(counted)
                .sum::<usize>()
                >= n
        },
    );
    let lines = rig.new_mail_lines().len();
    let notes = rig.notifications.notifications();
    let popups = notes.len();
    let summaries = notes
        .iter()
        .filter(|p| p.summary.contains("new messages"))
        .count();
    let last_popup = notes.iter().map(|p| p.at).max().unwrap_or(last_append);
    let mut pairs = vec![
        ("messages".to_owned(), n.to_string()),
        (
            "last_popup_after_last_append_ms".to_owned(),
            format!(
                "{:.1}",
                last_popup
                    .saturating_duration_since(last_append)
                    .as_secs_f64()
                    * 1e3
            ),
        ),
        (
            "append_secs".to_owned(),
            format!("{:.3}", last_append.duration_since(t0).as_secs_f64()),
        ),
        (
            "after_last_append_ms".to_owned(),
            format!(
                "{:.1}",
                all.saturating_duration_since(last_append).as_secs_f64() * 1e3
            ),
        ),
        ("syslog_lines".to_owned(), lines.to_string()),
        ("popups".to_owned(), popups.to_string()),
        ("summary_popups".to_owned(), summaries.to_string()),
    ];
    pairs.extend(before);
    pairs.extend(mem_pairs(pid, ""));
    emit("burst", pairs);
}

/// Item 6: MEASURE_BURST (default 1000) messages arrive while the daemon is stopped; the
/// next daemon (same state dir) catches up.
#[test]
#[ignore = "benchmark: run bench/run"]
fn bench_catchup() {
    let n = env_u64("MEASURE_BURST", 1000) as usize;
    let rig = rig_for(1, 120);
    let account = rig.dovecot.account_toml("m", "implicit");
    {
        let mut first = rig.daemon(&account, &["m/INBOX"]);
        first.terminate();
    }
    rig.dovecot.bulk_append("INBOX", n, |i| {
        message(&format!("waiting {i}"), "bulk@example.com")
    });
    let spawned = Instant::now();
    let daemon = rig.start_daemon(&account);
    let all = poll_fine(Duration::from_secs(60), "all new-mail syslog lines", || {
        rig.new_mail_lines().len() >= n
    });
    daemon.wait_for_output(WAIT, "watching m/INBOX ");
    thread::sleep(Duration::from_millis(500));
    let pid = daemon.pid();
    let mut pairs = vec![
        ("messages".to_owned(), n.to_string()),
        (
            "spawn_to_all_ms".to_owned(),
            format!("{:.1}", all.duration_since(spawned).as_secs_f64() * 1e3),
        ),
        (
            "syslog_lines".to_owned(),
            rig.new_mail_lines().len().to_string(),
        ),
        (
            "popups".to_owned(),
            rig.notifications.notifications().len().to_string(),
        ),
    ];
    pairs.extend(mem_pairs(pid, ""));
    emit("catchup", pairs);
}

/// Issue 12's figures (`scripts/measure-containment`), with default settings and Dovecot's
/// default 2-minute keepalive: what a talking server costs (DONEs sent while nothing
/// happens), how soon a frozen link is replaced (`idle_silence_secs` 125 + 20 s for the
/// answer to DONE; target 150 s), and how soon syslog lines come with the notification
/// server frozen (target 1 s) and how long SIGTERM then takes (target 2 s).
/// MEASURE_TALK_SECS (default 300) is how long the talking server is watched.
#[test]
#[ignore = "measurement: run scripts/measure-containment"]
fn measure_containment() {
    let talk_secs = env_u64("MEASURE_TALK_SECS", 300);
    let rig = crate::support::rig::Rig::start(DovecotOptions {
        idle_notify_interval: Duration::from_secs(120),
        ..DovecotOptions::default()
    });
    let (proxy, mut daemon) = rig.proxied("");
    let dones = |proxy: &crate::support::proxy::FaultProxy| {
        proxy
            .client_lines()
            .iter()
            .filter(|l| l.eq_ignore_ascii_case("DONE"))
            .count()
    };
    let before = dones(&proxy);
    thread::sleep(Duration::from_secs(talk_secs));
    println!(
        "containment: talking server (keepalive every 120 s), {talk_secs} s idle: {} DONE sent, {} connection(s)",
        dones(&proxy) - before,
        proxy.accepted()
    );

    let frozen = Instant::now();
    proxy.freeze_all();
    rig.append("sent into the freeze");
    rig.wait_syslog_within(Duration::from_secs(300), "subject=\"sent into the freeze\"");
    println!(
        "containment: frozen link (defaults: idle_silence_secs 125, timeout_secs 30) -> mail announced on a new connection after {:.1} s ({} connections)",
        frozen.elapsed().as_secs_f64(),
        proxy.accepted()
    );

    rig.notifications.freeze();
    let mut took = Vec::new();
    for i in 0..10 {
        let subject = format!("frozen popups {i}");
        let sent = Instant::now();
        rig.append(&subject);
        rig.wait_syslog(&format!("subject=\"{subject}\""));
        took.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    took.sort_by(f64::total_cmp);
    println!(
        "containment: notification server frozen: APPEND start -> syslog line, 10 messages: min {:.0} ms, median {:.0} ms, max {:.0} ms (Dovecot reports new mail to IDLE about 0.5 s after the APPEND)",
        took[0],
        took[5],
        took[9]
    );
    let (status, stop) = daemon.terminate();
    println!(
        "containment: SIGTERM with the notification server frozen: exit {:?} after {:.0} ms",
        status.code(),
        stop.as_secs_f64() * 1e3
    );
    rig.notifications.thaw();
}

/// Issue 14's row: one account watching MEASURE_MAILBOXES (default 100) mailboxes, INBOX
/// and M001.., in the mode MEASURE_MODE says:
/// - `notify` (default): Dovecot as shipped, NOTIFY offered: INBOX on its own connection,
///   the rest over the shared one, told of new mail by NOTIFY;
/// - `status`: NOTIFY not offered, `max_connections = 5`: INBOX and M001..M003 on their own
///   connections, the rest over the shared one, checked by STATUS every MEASURE_POLL
///   (default 10) seconds;
/// - `own`: NOTIFY not offered and `max_connections = 100`: every mailbox on an IDLE
///   connection of its own, as every mailbox was watched before the shared connection.
///
/// (`own` is that only up to 100 mailboxes, `max_connections`' maximum.)
///
/// Spawn -> every mailbox "watching"; then, after MEASURE_SETTLE_SECS (default 5), the IMAP
/// sessions Dovecot counts, threads, memory and fds; the daemon's CPU ticks and context
/// switches over MEASURE_QUIET_SECS (default 60) without mail (in `status` mode: the
/// sweeps); then MEASURE_SAMPLES (default 20) messages delivered locally (`doveadm save`,
/// no IMAP connection) one at a time to different mailboxes from M005 on (past the ones
/// `status` gives connections of their own), each waited for: delivery returned -> its
/// Notify at the notification server, and the daemon's own "announced ... ms after wake".
/// Before each delivery a pause that varies over [0, MEASURE_GAP_MS) (default: the poll
/// interval in `status` mode, 1 s otherwise), so that polled deliveries land all over the
/// poll cycle rather than always just after a sweep.
#[test]
#[ignore = "benchmark: run bench/run"]
fn bench_mailboxes() {
    let n = (env_u64("MEASURE_MAILBOXES", 100) as usize).max(2);
    let mode = std::env::var("MEASURE_MODE").unwrap_or_else(|_| "notify".into());
    let poll = env_u64("MEASURE_POLL", 10);
    let settle = env_u64("MEASURE_SETTLE_SECS", 5);
    let samples = env_u64("MEASURE_SAMPLES", 20) as usize;
    let quiet = env_u64("MEASURE_QUIET_SECS", 60);
    let (notify, max_connections) = match mode.as_str() {
        "notify" => (true, 5),
        "status" => (false, 5),
        "own" => (false, n.min(100)),
        other => panic!("MEASURE_MODE={other}: want notify, status or own"),
    };
    let gap_max = Duration::from_millis(env_u64(
        "MEASURE_GAP_MS",
        if mode == "status" { poll * 1000 } else { 1000 },
    ));
    // The same server in every mode but for NOTIFY: room for a connection per mailbox
    // (Dovecot's process limits follow, see DovecotOptions).
    let rig = Rig::start(DovecotOptions {
        notify,
        idle_notify_interval: Duration::from_secs(120),
        mail_max_userip_connections: (n as u32 + 20).max(10),
        fsync: env_u64("MEASURE_FSYNC", 1) != 0,
        ..DovecotOptions::default()
    });
    let mailboxes: Vec<String> = std::iter::once("INBOX".to_owned())
        .chain((1..n).map(|i| format!("M{i:03}")))
        .collect();
    {
        let mut session = rig.dovecot.session();
        for m in &mailboxes[1..] {
            session.create(m).unwrap();
        }
        let _ = session.logout();
    }
    let list: Vec<String> = mailboxes.iter().map(|m| format!("{m:?}")).collect();
    let account = rig
        .dovecot
        .account_toml("mb", "implicit")
        .replace("host = \"localhost\"", "host = \"127.0.0.1\"")
        .replace(
            "mailboxes = [\"INBOX\"]",
            &format!(
                "mailboxes = [{}]\nmax_connections = {max_connections}\npoll_interval_secs = {poll}",
                list.join(", ")
            ),
        );
    // Flood control off: messages a second apart would be held after the third.
    let config = rig.config_with(&account, "burst_window_secs = 0\n");
    let spawned = Instant::now();
    let daemon = Daemon::start_with_state(&config, Some(&rig.bus), rig.state.path());
    let all = poll_fine(Duration::from_secs(120), "every mailbox watching", || {
        daemon.count_output("watching mb/") >= n
    });
    let startup_ms = all.duration_since(spawned).as_secs_f64() * 1e3;
    let pid = daemon.pid();
    thread::sleep(Duration::from_secs(settle));
    let connections = rig.dovecot.connections();
    // Open files, and of them sockets and eventfds (each watcher's stop signal).
    let links: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|l| l.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let fds_like = |prefix: &str| links.iter().filter(|l| l.starts_with(prefix)).count();
    let at_rest = mem_pairs(pid, "");
    // What watching costs with no mail coming: in `status` mode the sweeps.
    let (cpu0, sw0) = cpu_and_switches(pid);
    thread::sleep(Duration::from_secs(quiet));
    let (cpu1, sw1) = cpu_and_switches(pid);

    // Mailboxes M005.. evenly spread, as many as asked for (repeats if there are fewer).
    let first = 5.min(n - 1);
    let span = n - 1 - first;
    let mut deliver_ms = Vec::new();
    let mut latency = Vec::new();
    let mut woke_to_announced = Vec::new();
    for k in 0..samples {
        let idx = first
            + if samples > 1 {
                k * span / (samples - 1)
            } else {
                0
            };
        let mailbox = &mailboxes[idx];
        // Golden-ratio steps: spread evenly over [0, gap_max) whatever the sample count.
        let frac = ((k + 1) as f64 * 0.618_033_988_75).fract();
        thread::sleep(gap_max.mul_f64(frac));
        let subject = format!("mailboxes probe {k} to {mailbox}");
        let lines_before = daemon.output_lines().len();
        let t0 = Instant::now();
        rig.dovecot
            .deliver(mailbox, &message(&subject, "p@example.com"));
        let delivered = Instant::now();
        let wait = Duration::from_secs(poll + 30);
        let mut at = None;
        poll_fine(wait, &format!("the popup for {subject:?}"), || {
            at = rig
                .notifications
                .notifications()
                .iter()
                .find(|p| p.body.contains(&subject) || p.summary.contains(&subject))
                .map(|p| p.at);
            at.is_some()
        });
        let at = at.expect("found above");
        deliver_ms.push(delivered.duration_since(t0).as_secs_f64() * 1e3);
        latency.push(at.saturating_duration_since(delivered).as_secs_f64() * 1e3);
        // The daemon logs it right after the popup went out; its reader may be a moment
        // behind the notification server.
        let needle = format!("announced mb/{mailbox} uid=");
        let ms: f64 = wait_until(WAIT, "the daemon's \"announced\" line", || {
            daemon
                .output_lines()
                .iter()
                .skip(lines_before)
                .find_map(|l| {
                    l.split(&needle)
                        .nth(1)?
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()
                })
        });
        woke_to_announced.push(ms);
    }
    let connections_after = rig.dovecot.connections();
    let mut pairs = vec![
        // MEASURE_LABEL: another name for the variant, e.g. for another build of the
        // daemon run through MAILPUSHD_WRAP (bench/run's BEFORE_BIN).
        (
            "mode".to_owned(),
            std::env::var("MEASURE_LABEL").unwrap_or(mode.clone()),
        ),
        ("mailboxes".to_owned(), n.to_string()),
        ("max_connections".to_owned(), max_connections.to_string()),
        ("poll_secs".to_owned(), poll.to_string()),
        ("connections".to_owned(), connections.to_string()),
        (
            "connections_after".to_owned(),
            connections_after.to_string(),
        ),
        ("startup_ms".to_owned(), format!("{startup_ms:.1}")),
        ("fds".to_owned(), links.len().to_string()),
        ("fds_socket".to_owned(), fds_like("socket:").to_string()),
        (
            "fds_eventfd".to_owned(),
            fds_like("anon_inode:[eventfd]").to_string(),
        ),
        ("quiet_secs".to_owned(), quiet.to_string()),
        ("quiet_cpu_ticks".to_owned(), (cpu1 - cpu0).to_string()),
        ("quiet_ctx_switches".to_owned(), (sw1 - sw0).to_string()),
        ("samples".to_owned(), latency.len().to_string()),
    ];
    pairs.extend(at_rest);
    pairs.extend(dist("deliver_notify", &latency));
    pairs.extend(dist("wake_announced", &woke_to_announced));
    pairs.extend(dist("doveadm_save", &deliver_ms));
    emit("mailboxes", pairs);
}

/// Issue 15: the unread count with MEASURE_PREFILL (default 10,000) unseen messages in
/// INBOX. Start-up: the one SEARCH UNSEEN (its time, from the daemon's debug line). Then
/// MEASURE_CHANGES (default 50) messages marked `\Seen` by another client, one at a time,
/// then as many new messages APPENDed one at a time, and 10 expunged at once: each from the
/// client's STORE/APPEND/EXPUNGE to the new total printed by
/// `mailpushd status --total --follow` (the Changed signal). Then MEASURE_QUIET_SECS
/// (default 30) without a change: the lines the follower printed (0: nothing polls) and
/// the daemon's CPU ticks. Memory at the end. MEASURE_LABEL names the build (bench/run's
/// BEFORE_BIN runs bench_latency instead: an older build has no count to measure).
#[test]
#[ignore = "benchmark: run bench/run"]
fn bench_unread() {
    use std::io::BufRead;
    let prefill = env_u64("MEASURE_PREFILL", 10_000) as usize;
    let changes = env_u64("MEASURE_CHANGES", 50) as usize;
    let quiet = env_u64("MEASURE_QUIET_SECS", 30);
    let rig = rig_for(1, 120);
    rig.dovecot.bulk_append("INBOX", prefill, |i| {
        message(&format!("prefill {i}"), "bulk@example.com")
    });
    let account = rig.dovecot.account_toml("m", "implicit");
    let spawned = Instant::now();
    let daemon = Daemon::start_with_state(&rig.config(&account), Some(&rig.bus), rig.state.path());
    let searched = daemon.wait_for_output(WAIT, "unread (SEARCH UNSEEN in ");
    let search_ms: f64 = searched
        .split("SEARCH UNSEEN in ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let pid = daemon.pid();

    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mailpushd"));
    cmd.args(["status", "--total", "--follow"])
        .env("DBUS_SESSION_BUS_ADDRESS", &rig.bus.address)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let follower = crate::support::spawn_tracked("status --follow", &mut cmd).unwrap();
    let stdout = follower.take_stdio(|c| c.stdout.take()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, String)>();
    thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let until = |want: usize| -> Instant {
        loop {
            let (at, line) = rx.recv_timeout(WAIT).expect("a follow line");
            if line == want.to_string() {
                return at;
            }
        }
    };
    until(prefill);
    let ready_ms = spawned.elapsed().as_secs_f64() * 1e3;

    let mut session = rig.dovecot.session();
    session.select("INBOX").unwrap();
    let mut read = Vec::new();
    for i in 1..=changes {
        let t0 = Instant::now();
        session.store(i.to_string(), "+FLAGS (\\Seen)").unwrap();
        read.push(until(prefill - i).duration_since(t0).as_secs_f64() * 1e3);
    }
    // New mail: APPEND (another client) to the follower's line with the new total.
    let mut arrived = Vec::new();
    let mut unread = prefill - changes;
    for i in 0..changes {
        let t0 = Instant::now();
        session
            .append(
                "INBOX",
                &message(&format!("count probe {i}"), "p@example.com"),
            )
            .finish()
            .unwrap();
        unread += 1;
        arrived.push(until(unread).duration_since(t0).as_secs_f64() * 1e3);
    }
    // Ten unread ones expunged at once (the last ten of the prefill).
    let t0 = Instant::now();
    session
        .store(format!("{}:{}", prefill - 9, prefill), "+FLAGS (\\Deleted)")
        .unwrap();
    session.expunge().unwrap();
    let expunge_ms = until(unread - 10).duration_since(t0).as_secs_f64() * 1e3;
    let _ = session.logout();

    thread::sleep(Duration::from_secs(2));
    while rx.try_recv().is_ok() {}
    let (cpu0, sw0) = cpu_and_switches(pid);
    thread::sleep(Duration::from_secs(quiet));
    let (cpu1, sw1) = cpu_and_switches(pid);
    let quiet_lines = rx.try_iter().count();
    follower.kill();

    let mut pairs = vec![
        (
            "build".to_owned(),
            std::env::var("MEASURE_LABEL").unwrap_or_else(|_| "this".to_owned()),
        ),
        ("prefill".to_owned(), prefill.to_string()),
        ("search_unseen_ms".to_owned(), format!("{search_ms:.3}")),
        ("spawn_to_count_ms".to_owned(), format!("{ready_ms:.1}")),
        ("expunge10_ms".to_owned(), format!("{expunge_ms:.3}")),
        ("quiet_secs".to_owned(), quiet.to_string()),
        ("quiet_lines".to_owned(), quiet_lines.to_string()),
        ("quiet_cpu_ticks".to_owned(), (cpu1 - cpu0).to_string()),
        ("quiet_ctx_switches".to_owned(), (sw1 - sw0).to_string()),
    ];
    pairs.extend(dist("seen_elsewhere", &read));
    pairs.extend(dist("append_line", &arrived));
    pairs.extend(mem_pairs(pid, ""));
    emit("unread", pairs);
}
