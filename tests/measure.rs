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

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::daemon::Daemon;
use support::dbus::{NotificationServer, SessionBus};
use support::dovecot::{message, Dovecot, DovecotOptions};
use support::{lock, wait_until};

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
         username = {:?}\npassword = {:?}\n\n[syslog]\nenabled = false\n",
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
    let proxy = support::proxy::FaultProxy::start(dovecot.imap_port);
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
