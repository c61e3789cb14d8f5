//! A real Dovecot IMAP server per test, on random loopback ports, from a generated config.
//!
//! Owns: the scratch directory (config, self-signed certificate, passwd-file, maildirs,
//! Dovecot's base_dir/state_dir and log), the `dovecot -F` master process, and the IMAP
//! client helpers that put mail into it through real `APPEND`s.
//!
//! Nothing outside the temp dir is read or written except Dovecot's own binaries and
//! `/usr/share/dovecot/dh.pem`; no system users or system authentication are involved.
//! Users come from a passwd-file; mail processes run as:
//! - root (CI): the `dovecot` system user that the package creates, with the maildir
//!   chowned to it. Dovecot refuses mail processes with uid 0, and the login processes run
//!   as `dovenull`, so the temp dir is made world-traversable (0755);
//! - non-root: the current user for everything (login, internal and mail processes), since
//!   an unprivileged master cannot switch users at all.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use super::{
    merge, run_command, signal_all, spawn_tracked, stop_leftovers, toml_string, wait_until,
    TrackedChild,
};

/// How long `start` waits for both listeners to greet. Startup is normally well under a
/// second; the margin is for a loaded 2-core CI machine running tests in parallel.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Socket timeout for the helper IMAP sessions, so a wedged server fails a test instead of
/// hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts at starting with fresh ports: ports are picked by binding port 0 and releasing
/// it, so another process can grab one before Dovecot binds it.
const START_ATTEMPTS: usize = 4;

/// How the generated Dovecot behaves.
#[derive(Clone, Debug)]
pub struct DovecotOptions {
    /// Advertise IDLE in CAPABILITY (greeting and post-login). With `false` the server
    /// still answers an IDLE command (Dovecot cannot switch it off), but a well-behaved
    /// client must not use it, which is what the tests check. `false` hides NOTIFY too,
    /// whatever [`DovecotOptions::notify`] says: a server "without IDLE" leaves the client
    /// nothing but polling.
    pub idle: bool,
    /// Advertise NOTIFY (RFC 5465) in the post-login CAPABILITY. With `false` (and `idle`
    /// left on) the server advertises its usual list minus NOTIFY, IDLE included: a server
    /// with IDLE as its only push mechanism. As with `idle: false`, the server still answers
    /// a NOTIFY command, and the pre-login greeting then carries the full list too (plus
    /// STARTTLS and AUTH=, as usual), since Dovecot has one setting for both.
    pub notify: bool,
    /// `imap_idle_notify_interval`: how often Dovecot sends "* OK Still here" to an idling
    /// client (whole seconds, at least 1). Default 10 s, short so that tests see keepalives
    /// without waiting Dovecot's default 2 minutes.
    pub idle_notify_interval: Duration,
    /// `mail_max_userip_connections` (Dovecot's default 10 per user and IP). Above 10, the
    /// per-service process limits are raised to match, so that many accounts of the one
    /// test user can idle at once (benchmarks with 100 accounts).
    pub mail_max_userip_connections: u32,
    /// `mail_fsync = never` when false. Dovecot's default fsyncs every delivered message,
    /// which caps APPEND at ~70 per second here; benchmarks that need mail "as fast as
    /// possible" (bursts, a 10,000-message prefill) turn it off.
    pub fsync: bool,
}

impl Default for DovecotOptions {
    fn default() -> Self {
        Self {
            idle: true,
            notify: true,
            idle_notify_interval: Duration::from_secs(10),
            mail_max_userip_connections: 10,
            fsync: true,
        }
    }
}

/// Post-login capabilities of Dovecot 2.3.19 as shipped, in its order, minus NOTIFY (which
/// it lists last): used when `notify == false`, and minus IDLE too when `idle == false`.
/// Setting `imap_capability` replaces the whole list (also in the pre-login greeting, where
/// Dovecot adds STARTTLS and AUTH= itself), so it must be spelled out. Checked against the
/// `CAPABILITY` response of this launcher's Dovecot after LOGIN.
const CAPABILITIES_WITHOUT_NOTIFY: &str = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE \
     SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND \
     URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 \
     CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SPECIAL-USE \
     SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+";

pub type TlsSession = imap::Session<native_tls::TlsStream<TcpStream>>;

pub struct Dovecot {
    /// Implicit-TLS IMAP (the "imaps" listener).
    pub imaps_port: u16,
    /// Plain IMAP with STARTTLS advertised; plaintext LOGIN is allowed too.
    pub imap_port: u16,
    /// Self-signed certificate (CN=localhost, SAN DNS:localhost, IP:127.0.0.1), to be used
    /// as the client's trust anchor.
    pub ca_file: PathBuf,
    pub user: String,
    pub password: String,
    pub options: DovecotOptions,
    log_path: PathBuf,
    config_path: PathBuf,
    // Field order matters: the process must be stopped before its directory is removed.
    process: TrackedChild,
    dir: TempDir,
}

impl Dovecot {
    pub fn start_default() -> Dovecot {
        Dovecot::start(DovecotOptions::default())
    }

    /// Generates the config and certificate, runs `dovecot -F`, and returns once both
    /// listeners greet with Dovecot's "ready" banner (i.e. the auth process is up too).
    pub fn start(options: DovecotOptions) -> Dovecot {
        let dir = tempfile::Builder::new()
            .prefix("mailpushd-dovecot.")
            .tempdir()
            .expect("create dovecot temp dir");
        let root = dir.path().to_path_buf();
        let ca_file = root.join("cert.pem");
        let key_file = root.join("key.pem");
        generate_certificate(&ca_file, &key_file);

        let user = "alice".to_owned();
        let password = "correct horse".to_owned();
        // Plain scheme: the file is test data and the password must round-trip verbatim.
        fs::write(
            root.join("passwd"),
            format!("{user}:{{PLAIN}}{password}::::::\n"),
        )
        .expect("write passwd-file");

        let ids = ProcessIds::detect();
        for sub in ["run", "state", "mail"] {
            fs::create_dir(root.join(sub)).expect("create dovecot subdir");
        }
        if super::is_root() {
            // dovenull (login) and the mail user must traverse into the temp dir, which
            // tempfile creates 0700.
            fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
                .expect("chmod dovecot temp dir");
            std::os::unix::fs::chown(root.join("mail"), Some(ids.mail_uid), Some(ids.mail_gid))
                .expect("chown maildir root to the mail user");
        }

        let log_path = root.join("dovecot.log");
        let config_path = root.join("dovecot.conf");
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let (imap_port, imaps_port) = free_ports();
            let config = render_config(&root, &ids, &options, imap_port, imaps_port);
            fs::write(&config_path, config).expect("write dovecot.conf");
            let _ = fs::remove_file(&log_path);
            match launch(&root, imap_port, imaps_port) {
                Ok(process) => {
                    return Dovecot {
                        imaps_port,
                        imap_port,
                        ca_file,
                        user,
                        password,
                        options,
                        log_path,
                        config_path,
                        process,
                        dir,
                    };
                }
                Err(e) => {
                    last_error = e;
                    // A lost port race shows up as "Address already in use": retry with new
                    // ports. Anything else will fail the same way again.
                    if !last_error.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        panic!("dovecot did not start: {last_error}");
    }

    /// Stops Dovecot and starts it again on the same ports, config, certificate and
    /// maildir (the log is kept, so `login_count` keeps counting). Connected clients see
    /// their connections closed, as with a real server restart.
    pub fn restart(&mut self) {
        self.stop();
        self.process = launch(self.dir.path(), self.imap_port, self.imaps_port)
            .unwrap_or_else(|e| panic!("dovecot did not restart: {e}"));
    }

    /// Disconnects every session of [`Dovecot::user`] (`doveadm kick`), leaving the server
    /// running: what a client sees when the server drops it, e.g. on a timeout.
    pub fn kick(&self) {
        let out = run_command(
            "doveadm kick",
            Command::new(doveadm_binary())
                .arg("-c")
                .arg(&self.config_path)
                .args(["kick", &self.user]),
            Duration::from_secs(20),
        );
        // Exit code 68 (EX_NOUSER) just means nobody was connected.
        assert!(
            out.status.success() || out.status.code() == Some(68),
            "doveadm kick failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// How many IMAP sessions of [`Dovecot::user`] are logged in right now, from
    /// `doveadm who -1` (one line per connection, as Dovecot's anvil process counts them).
    ///
    /// A session that logged out or was dropped is counted until its imap process has told
    /// anvil, slightly after the client saw the connection close: wait for an expected count
    /// with [`wait_until`] rather than asserting right after a client connected or left.
    /// Panics with doveadm's stderr if doveadm fails.
    pub fn connections(&self) -> usize {
        let out = run_command(
            "doveadm who",
            Command::new(doveadm_binary())
                .arg("-c")
                .arg(&self.config_path)
                // Tab-separated "username proto pid ip", after a header line.
                .args(["-f", "tab", "who", "-1", &self.user]),
            Duration::from_secs(20),
        );
        assert!(
            out.status.success(),
            "doveadm who failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| {
                let mut fields = line.split('\t');
                fields.next() == Some(self.user.as_str()) && fields.next() == Some("imap")
            })
            .count()
    }

    /// Delivers `message` to `mailbox` locally (`doveadm save`, as a delivery agent would),
    /// without an IMAP connection: mail still arrives when the user's connection limit is
    /// full.
    pub fn deliver(&self, mailbox: &str, message: &[u8]) {
        let file = tempfile::NamedTempFile::new_in(self.dir.path()).expect("temp file");
        fs::write(file.path(), message).expect("writing the message");
        let mut cmd = Command::new(doveadm_binary());
        cmd.arg("-c")
            .arg(&self.config_path)
            .args(["save", "-u", &self.user, "-m", mailbox])
            .stdin(fs::File::open(file.path()).expect("the message"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = crate::support::spawn_tracked("doveadm save", &mut cmd).expect("doveadm save");
        let status = child
            .wait_timeout(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("doveadm save did not finish within 20 s"));
        assert!(
            status.success(),
            "doveadm save into {mailbox} failed: {status}\n{}",
            self.log()
        );
    }

    /// Dovecot's log (master, login, auth and mail processes all write here).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Number of successful logins of [`Dovecot::user`] so far, from the log.
    ///
    /// The log is written by Dovecot's log process, slightly after the login itself
    /// completes: wait for an expected count with [`Dovecot::wait_for_logins`] rather than
    /// asserting right after a client logged in.
    pub fn login_count(&self) -> usize {
        let needle = format!(": Login: user=<{}>", self.user);
        self.log()
            .lines()
            .filter(|l| l.contains("imap-login:") && l.contains(&needle))
            .count()
    }

    /// Waits until at least `n` logins are in the log; returns the count.
    pub fn wait_for_logins(&self, n: usize, timeout: Duration) -> usize {
        wait_until(timeout, &format!("{n} dovecot logins"), || {
            let c = self.login_count();
            (c >= n).then_some(c)
        })
    }

    /// An authenticated session over implicit TLS, verified against [`Dovecot::ca_file`]
    /// with the host name "localhost". Each call is a new login (counted by `login_count`).
    pub fn session(&self) -> TlsSession {
        let tls = connect_tls(self.imaps_port, "localhost", &self.ca_file)
            .unwrap_or_else(|e| panic!("TLS connect to dovecot: {e}\n{}", self.log()));
        let mut client = imap::Client::new(tls);
        client
            .read_greeting()
            .unwrap_or_else(|e| panic!("read dovecot greeting: {e}\n{}", self.log()));
        client
            .login(&self.user, &self.password)
            .unwrap_or_else(|(e, _)| panic!("login to dovecot: {e}\n{}", self.log()))
    }

    /// Delivers `message` to `mailbox` by IMAP APPEND, with no flags (so it is unseen).
    pub fn append(&self, mailbox: &str, message: &[u8]) {
        self.append_with_flags(mailbox, message, &[]);
    }

    /// Delivers `message` by IMAP APPEND with the given flags, e.g. `&["\\Seen"]`.
    pub fn append_with_flags(&self, mailbox: &str, message: &[u8], flags: &[&str]) {
        let mut session = self.session();
        session
            .append(mailbox, message)
            .flags(flags.iter().map(|f| imap::types::Flag::from(*f)))
            .finish()
            .unwrap_or_else(|e| panic!("APPEND to {mailbox}: {e}\n{}", self.log()));
        let _ = session.logout();
    }

    /// APPENDs `count` messages (`make(i)` for each) on one pipelined plain connection
    /// with LITERAL+, as fast as Dovecot stores them; returns when the last was stored.
    pub fn bulk_append(
        &self,
        mailbox: &str,
        count: usize,
        make: impl Fn(usize) -> Vec<u8> + Send + 'static,
    ) -> Instant {
        let dovecot = self;
        use std::io::{BufRead, BufReader};
        let stream = TcpStream::connect(("127.0.0.1", dovecot.imap_port)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut w = stream.try_clone().unwrap();
        write!(
            w,
            "L LOGIN \"{}\" \"{}\"\r\n",
            dovecot.user, dovecot.password
        )
        .unwrap();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line.starts_with("L ") {
                assert!(line.starts_with("L OK"), "bulk login: {line}");
                break;
            }
        }
        let mailbox = mailbox.to_owned();
        // Written from a thread so a long pipeline cannot deadlock against unread responses.
        let writer = std::thread::spawn(move || {
            let mut out = std::io::BufWriter::with_capacity(1 << 16, w);
            for i in 0..count {
                let msg = make(i);
                write!(out, "A{i} APPEND \"{mailbox}\" {{{}+}}\r\n", msg.len()).unwrap();
                out.write_all(&msg).unwrap();
                out.write_all(b"\r\n").unwrap();
            }
            out.flush().unwrap();
            out.into_inner().ok()
        });
        let mut done = 0;
        let mut last = Instant::now();
        while done < count {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                panic!("bulk append: connection closed after {done} of {count}");
            }
            if line.starts_with('A') {
                assert!(line.contains(" OK "), "bulk APPEND failed: {line}");
                done += 1;
                last = Instant::now();
            }
        }
        let w = writer.join().unwrap();
        if let Some(mut w) = w {
            let _ = w.write_all(b"Z LOGOUT\r\n");
        }
        last
    }

    pub fn create_mailbox(&self, name: &str) {
        let mut session = self.session();
        session
            .create(name)
            .unwrap_or_else(|e| panic!("CREATE {name}: {e}\n{}", self.log()));
        let _ = session.logout();
    }

    /// Number of messages in `mailbox`, by IMAP STATUS.
    pub fn message_count(&self, mailbox: &str) -> u32 {
        let mut session = self.session();
        let status = session
            .status(mailbox, "(MESSAGES)")
            .unwrap_or_else(|e| panic!("STATUS {mailbox}: {e}\n{}", self.log()));
        let _ = session.logout();
        status.exists
    }

    /// An `[[accounts]]` table for mailpushd's config pointing at this server.
    /// `tls` is the daemon's setting: "implicit" uses the imaps port, anything else
    /// ("starttls", "none") the plain port.
    pub fn account_toml(&self, name: &str, tls: &str) -> String {
        let port = if tls == "implicit" {
            self.imaps_port
        } else {
            self.imap_port
        };
        format!(
            "[[accounts]]\n\
             name = {name}\n\
             host = \"localhost\"\n\
             port = {port}\n\
             tls = {tls}\n\
             ca_file = {ca}\n\
             username = {user}\n\
             password = {password}\n\
             mailboxes = [\"INBOX\"]\n",
            name = toml_string(name),
            tls = toml_string(tls),
            ca = toml_string(&self.ca_file.to_string_lossy()),
            user = toml_string(&self.user),
            password = toml_string(&self.password),
        )
    }

    /// Stops Dovecot now, e.g. to test how the daemon handles a server going away: the
    /// master gets SIGTERM (SIGKILL after a grace period), then any of its processes still
    /// running get the same treatment. Returns once they are all gone. The temp dir stays
    /// until drop.
    ///
    /// The second step is needed because Dovecot 2.3's master, despite
    /// `shutdown_clients = yes`, leaves imap processes that serve a logged-in client running
    /// after it exits: a connected client would otherwise never notice the "restart".
    pub fn stop(&self) {
        // Dovecot's processes are reparented once the master exits, so collect them while
        // it is alive: before the signal, and again while it shuts down (it forks nothing
        // new after SIGTERM, so this sees every process it had).
        let mut family = self.process.descendants();
        if self.process.signal("TERM") {
            // Signalling the children too, rather than leaving it to the master, cuts its
            // shutdown from ~1.1 s to ~0.1 s, which adds up over a test suite.
            signal_all(&family, "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.process.is_running() && Instant::now() < deadline {
                merge(&mut family, self.process.descendants());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.process.stop(); // reaps; SIGKILL if the master ignored SIGTERM
        stop_leftovers(&family);
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // Before the fields drop: `process` is then already reaped, and `dir` goes last.
        self.stop();
    }
}

/// Builds an RFC 5322 message with CRLF line endings, addressed to alice@localhost.
/// Header values are inserted verbatim, so tests can pass encoded words or raw 8-bit text.
pub fn message(subject_header_value: &str, from_header_value: &str) -> Vec<u8> {
    message_with_body(
        subject_header_value,
        from_header_value,
        "This is a test message from the mailpushd test suite.\r\n",
    )
}

/// Like [`message`] with a given body (line endings are normalised to CRLF).
pub fn message_with_body(subject: &str, from: &str, body: &str) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let body = body.replace("\r\n", "\n").replace('\n', "\r\n");
    format!(
        "Date: {date}\r\n\
         From: {from}\r\n\
         To: alice@localhost\r\n\
         Subject: {subject}\r\n\
         Message-ID: <{secs}.{nanos}.{pid}.{n}@mailpushd.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         {body}",
        date = rfc5322_date(now.as_secs()),
        secs = now.as_secs(),
        nanos = now.subsec_nanos(),
        pid = std::process::id(),
    )
    .into_bytes()
}

/// `Tue, 25 Nov 2025 18:55:25 +0000` for a Unix time, without a date crate.
pub fn rfc5322_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (non-negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Opens a TLS connection to 127.0.0.1:`port`, verifying the certificate for `host`
/// ("localhost" or "127.0.0.1") against `ca_file`.
pub fn connect_tls(
    port: u16,
    host: &str,
    ca_file: &Path,
) -> Result<native_tls::TlsStream<TcpStream>, String> {
    let tcp = connect_tcp(port)?;
    tls_connector(ca_file)
        .connect(host, tcp)
        .map_err(|e| format!("TLS handshake for {host}: {e}"))
}

/// A TLS connector trusting `ca_file` (in addition to the system store; the self-signed
/// certificate is what matters here).
pub fn tls_connector(ca_file: &Path) -> native_tls::TlsConnector {
    let pem = fs::read(ca_file).expect("read dovecot CA file");
    let cert = native_tls::Certificate::from_pem(&pem).expect("parse dovecot CA file");
    native_tls::TlsConnector::builder()
        .add_root_certificate(cert)
        .build()
        .expect("build TLS connector")
}

/// A TCP connection to 127.0.0.1:`port` with read/write timeouts set.
pub fn connect_tcp(port: u16) -> Result<TcpStream, String> {
    let tcp = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), IO_TIMEOUT)
        .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
    tcp.set_read_timeout(Some(IO_TIMEOUT)).ok();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).ok();
    Ok(tcp)
}

fn dovecot_binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/dovecot");
    if sbin.exists() {
        sbin
    } else {
        // Other layouts: rely on PATH.
        PathBuf::from("dovecot")
    }
}

fn doveadm_binary() -> PathBuf {
    let bin = PathBuf::from("/usr/bin/doveadm");
    if bin.exists() {
        bin
    } else {
        PathBuf::from("doveadm")
    }
}

/// Which users Dovecot's processes run as; see the module docs.
struct ProcessIds {
    /// (user, group) for default_login_user / default_internal_user /
    /// default_internal_group; `None` keeps Dovecot's defaults (dovenull, dovecot), which is
    /// only possible as root.
    service_user: Option<(String, String)>,
    mail_uid: u32,
    mail_gid: u32,
}

impl ProcessIds {
    fn detect() -> ProcessIds {
        let (uid, gid) = super::current_ids();
        if uid == 0 {
            let (_, mail_uid, mail_gid) = super::lookup_user("dovecot")
                .expect("the dovecot-core package's 'dovecot' system user is missing");
            ProcessIds {
                service_user: None,
                mail_uid,
                mail_gid,
            }
        } else {
            let (name, _, _) = super::lookup_user(&uid.to_string())
                .unwrap_or_else(|| panic!("uid {uid} has no passwd entry"));
            let group =
                super::lookup_group(gid).unwrap_or_else(|| panic!("gid {gid} has no group entry"));
            ProcessIds {
                service_user: Some((name, group)),
                mail_uid: uid,
                mail_gid: gid,
            }
        }
    }
}

fn render_config(
    root: &Path,
    ids: &ProcessIds,
    options: &DovecotOptions,
    imap_port: u16,
    imaps_port: u16,
) -> String {
    let r = root.display();
    let mut c = format!(
        "# Generated by tests/it/support/dovecot.rs for one test.\n\
         base_dir = {r}/run\n\
         state_dir = {r}/state\n\
         log_path = {r}/dovecot.log\n\
         info_log_path = {r}/dovecot.log\n\
         debug_log_path = {r}/dovecot.log\n\
         protocols = imap\n\
         listen = 127.0.0.1\n\
         ssl = yes\n\
         ssl_cert = <{r}/cert.pem\n\
         ssl_key = <{r}/key.pem\n\
         # Tests use tls = \"none\" too; loopback only, so plaintext LOGIN is fine.\n\
         disable_plaintext_auth = no\n\
         auth_mechanisms = plain login xoauth2 oauthbearer\n\
         # Failed logins are logged with the reason, for debugging auth tests.\n\
         auth_verbose = yes\n\
         # Mail processes run as {mail_uid}:{mail_gid}; Dovecot's default (500) would reject\n\
         # the 'dovecot' system user used as root.\n\
         first_valid_uid = {mail_uid}\n\
         last_valid_uid = 0\n\
         first_valid_gid = {mail_gid}\n\
         mail_location = maildir:{r}/mail/%u\n\
         # Dovecot's default also passes NOTIFY_SOCKET and LISTEN_*: never wanted here.\n\
         import_environment = TZ CORE_OUTOFMEM CORE_ERROR\n\
         # Short intervals keep IDLE tests fast: \"* OK Still here\" often, and a change\n\
         # missed by inotify is still noticed within a second.\n\
         imap_idle_notify_interval = {notify} secs\n\
         mailbox_idle_check_interval = 1 secs\n\
         # Log what clients send with ID (RFC 2971), so tests can see that it was sent.\n\
         imap_id_log = *\n\
         namespace inbox {{\n\
         \x20 inbox = yes\n\
         \x20 separator = /\n\
         \x20 # Special uses (RFC 6154), for mailboxes of these names once created.\n\
         \x20 mailbox Trash {{\n\
         \x20   special_use = \\Trash\n\
         \x20 }}\n\
         \x20 mailbox Sent {{\n\
         \x20   special_use = \\Sent\n\
         \x20 }}\n\
         \x20 mailbox Junk {{\n\
         \x20   special_use = \\Junk\n\
         \x20 }}\n\
         \x20 mailbox Drafts {{\n\
         \x20   special_use = \\Drafts\n\
         \x20 }}\n\
         }}\n\
         passdb {{\n\
         \x20 driver = passwd-file\n\
         \x20 args = scheme=PLAIN username_format=%u {r}/passwd\n\
         }}\n\
         userdb {{\n\
         \x20 driver = static\n\
         \x20 args = uid={mail_uid} gid={mail_gid} home={r}/mail/%u\n\
         }}\n\
         service imap-login {{\n\
         \x20 # No chroot: impossible without root, and pointless for a test server.\n\
         \x20 chroot =\n\
         \x20 inet_listener imap {{\n\
         \x20   address = 127.0.0.1\n\
         \x20   port = {imap_port}\n\
         \x20 }}\n\
         \x20 inet_listener imaps {{\n\
         \x20   address = 127.0.0.1\n\
         \x20   port = {imaps_port}\n\
         \x20   ssl = yes\n\
         \x20 }}\n\
         }}\n\
         service anvil {{\n\
         \x20 chroot =\n\
         }}\n",
        mail_uid = ids.mail_uid,
        mail_gid = ids.mail_gid,
        notify = options.idle_notify_interval.as_secs().max(1),
    );
    let dh = Path::new("/usr/share/dovecot/dh.pem");
    if dh.exists() {
        // Without it Dovecot logs an error for clients that offer only DHE ciphers.
        c.push_str(&format!("ssl_dh = <{}\n", dh.display()));
    }
    if let Some((user, group)) = &ids.service_user {
        c.push_str(&format!(
            "# Unprivileged master: every process runs as the current user, and its unix\n\
             # sockets get the current group (it cannot chown them to 'dovecot').\n\
             default_login_user = {user}\n\
             default_internal_user = {user}\n\
             default_internal_group = {group}\n"
        ));
    }
    if options.mail_max_userip_connections != 10 {
        let n = options.mail_max_userip_connections;
        // Each IMAP session is an imap process, and each TLS one an imap-login process
        // too (it proxies the decrypted stream): both limits default to 100.
        c.push_str(&format!(
            "protocol imap {{\n\x20 mail_max_userip_connections = {n}\n}}\n\
             default_process_limit = {limit}\n",
            limit = n.max(100) + 50
        ));
    }
    if !options.fsync {
        c.push_str("mail_fsync = never\n");
    }
    if !options.idle {
        c.push_str(&format!(
            "# DovecotOptions {{ idle: false }}: the full list minus IDLE (and NOTIFY).\n\
             imap_capability = {}\n",
            CAPABILITIES_WITHOUT_NOTIFY.replace(" IDLE ", " ")
        ));
    } else if !options.notify {
        c.push_str(&format!(
            "# DovecotOptions {{ notify: false }}: the full list minus NOTIFY.\n\
             imap_capability = {CAPABILITIES_WITHOUT_NOTIFY}\n"
        ));
    }
    c
}

/// Self-signed certificate valid for "localhost" and 127.0.0.1, via the openssl CLI.
fn generate_certificate(cert: &Path, key: &Path) {
    let out = run_command(
        "openssl",
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
            .args(["-days", "2", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            // Also usable as a CA: some verifiers want basicConstraints CA:TRUE on an anchor.
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .arg("-keyout")
            .arg(key)
            .arg("-out")
            .arg(cert),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Dovecot's config process reads the key as root, or as the current user otherwise.
    fs::set_permissions(key, fs::Permissions::from_mode(0o600)).expect("chmod key");
}

/// Two distinct ports that were free a moment ago on 127.0.0.1 (both listeners are held
/// until both are known, so the kernel cannot hand out the same port twice).
fn free_ports() -> (u16, u16) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("local_addr").port();
    (port(&a), port(&b))
}

/// Runs `dovecot -F -c <root>/dovecot.conf` and waits for both listeners.
fn launch(root: &Path, imap_port: u16, imaps_port: u16) -> Result<TrackedChild, String> {
    let stderr_path = root.join("dovecot.stderr");
    let mut process = spawn_tracked(
        "dovecot",
        Command::new(dovecot_binary())
            .arg("-F")
            .arg("-c")
            .arg(root.join("dovecot.conf"))
            // Never let a test server talk to systemd, even when tests run inside a unit.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Errors before the log file is open (config errors) go to stderr; `wait_ready`
            // reports them.
            .stderr(fs::File::create(&stderr_path).expect("create dovecot.stderr")),
    )
    .map_err(|e| format!("spawn dovecot: {e}"))?;
    // Dovecot's master stops its children on SIGTERM and exits promptly.
    process.set_grace(Duration::from_secs(10));

    let spawned = Instant::now();
    match wait_ready(
        &process,
        root,
        imap_port,
        imaps_port,
        &root.join("cert.pem"),
    ) {
        Ok(()) => {
            eprintln!(
                "[dovecot] ready in {:?}: imap 127.0.0.1:{imap_port}, imaps \
                 127.0.0.1:{imaps_port}, dir {}",
                spawned.elapsed(),
                root.display()
            );
            Ok(process)
        }
        Err(e) => {
            process.stop();
            Err(e)
        }
    }
}

/// Waits until Dovecot greets on both ports, or fails early if the master exited.
fn wait_ready(
    process: &TrackedChild,
    root: &Path,
    imap_port: u16,
    imaps_port: u16,
    ca_file: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut ready = [false, false];
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(status) = process.try_wait() {
            return Err(format!("dovecot exited with {status}; {}", logs(root)));
        }
        if !ready[0] {
            match connect_tcp(imap_port).and_then(|s| greeting(s, "plain")) {
                Ok(()) => ready[0] = true,
                Err(e) => last = e,
            }
        }
        if !ready[1] {
            match connect_tls(imaps_port, "localhost", ca_file).and_then(|s| greeting(s, "tls")) {
                Ok(()) => ready[1] = true,
                Err(e) => last = e,
            }
        }
        if ready == [true, true] {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "not ready after {START_TIMEOUT:?} (last error: {last}); {}",
        logs(root)
    ))
}

/// Dovecot's stderr and log file, for startup failure messages.
fn logs(root: &Path) -> String {
    let read = |name: &str| fs::read_to_string(root.join(name)).unwrap_or_default();
    format!(
        "stderr:\n{}\nlog:\n{}",
        read("dovecot.stderr"),
        read("dovecot.log")
    )
}

/// Reads greeting lines until Dovecot's final "* OK [...] ... ready." banner, then logs out.
///
/// A connection made while the auth process is still starting first gets "* OK Waiting for
/// authentication process to respond.."; waiting for the real banner here means clients
/// connecting after `start` returns see a normal single-line greeting.
fn greeting(stream: impl Read + Write, what: &str) -> Result<(), String> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| format!("read {what} greeting: {e}"))?;
        if n == 0 {
            return Err(format!("{what} connection closed before greeting"));
        }
        if !line.starts_with("* OK") {
            return Err(format!("unexpected {what} greeting {line:?}"));
        }
        if line.contains("ready.") {
            let _ = reader.get_mut().write_all(b"z LOGOUT\r\n");
            return Ok(());
        }
    }
}
