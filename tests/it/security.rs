//! Secure by default, through the real binary against a real Dovecot: OAuth2 logins,
//! STARTTLS that a man in the middle strips, the tls_verify escape hatch, secrets that
//! never leak, hostile mail text neutralised everywhere, and a server that tries to
//! exhaust memory.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use crate::support::dovecot::{message, DovecotOptions};
use crate::support::proxy::FaultProxy;
use crate::support::rig::{subjects, Rig, WAIT};
use crate::support::{toml_string, wait_until, with_timeout};

const LIMIT: Duration = Duration::from_secs(90);

/// `account_toml` with the password replaced by an OAuth2 token command (Dovecot checks a
/// token against the passdb like a password, so the test user's password is the token).
fn oauth_account(rig: &Rig, name: &str, auth: &str) -> String {
    rig.dovecot.account_toml(name, "implicit").replace(
        &format!("password = {}", toml_string(&rig.dovecot.password)),
        &format!(
            "oauth2_token_command = [\"printf\", \"%s\\\\n\", {}]\nauth = \"{auth}\"",
            toml_string(&rig.dovecot.password)
        ),
    )
}

#[test]
fn xoauth2_and_oauthbearer_log_in() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let accounts = format!(
            "{}\n{}",
            oauth_account(&rig, "x", "xoauth2"),
            oauth_account(&rig, "o", "oauthbearer")
        );
        let daemon = rig.daemon(&accounts, &["x/INBOX", "o/INBOX"]);
        rig.append("via oauth");
        let lines = rig.wait_new_mail(2);
        assert_eq!(subjects(&lines), vec!["via oauth", "via oauth"]);
        let log = rig.dovecot.log();
        assert!(log.contains("method=XOAUTH2"), "{log}");
        assert!(log.contains("method=OAUTHBEARER"), "{log}");
        assert!(daemon.output().contains("logging in with Xoauth2"));
    });
}

#[test]
fn a_rejected_token_is_reported_with_the_servers_words() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = oauth_account(&rig, "x", "xoauth2").replace(
            &toml_string(&rig.dovecot.password),
            "\"expired-token-6d1e\"",
        );
        let daemon = rig.start_daemon(&account);
        let line = daemon.wait_for_output(WAIT, "x/INBOX: login failed");
        assert!(line.contains("ERROR"), "{line}");
        assert!(!daemon.output().contains("expired-token-6d1e"));
    });
}

/// A man in the middle that renames STARTTLS in everything the server says, so the client
/// never sees it offered. Plain bytes: before STARTTLS there is no encryption to break.
fn starttls_stripper(upstream: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(Shutdown::Write);
            });
            let (mut s_in, mut c_out) = (server, client);
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s_in.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]).replace("STARTTLS", "NOTHING!");
                    if c_out.write_all(text.as_bytes()).is_err() {
                        break;
                    }
                }
                let _ = c_out.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

#[test]
fn stripped_starttls_means_no_credentials_are_sent() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let port = starttls_stripper(rig.dovecot.imap_port);
        let account = format!(
            "{}reconnect_max_secs = 1\n",
            rig.dovecot.account_toml("main", "starttls").replace(
                &format!("port = {}", rig.dovecot.imap_port),
                &format!("port = {port}")
            )
        );
        let daemon = rig.start_daemon(&account);
        daemon.wait_for_output_count(WAIT, "does not offer STARTTLS; refusing to log in", 2);
        // The server saw connections, but no login attempt of any kind.
        let log = rig.dovecot.log();
        assert_eq!(rig.dovecot.login_count(), 0, "{log}");
        assert!(!log.contains("auth failed"), "{log}");
        assert!(!log.contains("method="), "{log}");
    });
}

#[test]
fn tls_verify_false_connects_and_warns_at_every_connect() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let proxy = FaultProxy::start(rig.dovecot.imaps_port);
        let account = rig
            .dovecot
            .account_toml("lax", "implicit")
            .lines()
            .filter(|l| !l.starts_with("ca_file"))
            .map(|l| {
                if l.starts_with("port") {
                    format!("port = {}", proxy.port)
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\ntls_verify = false\nreconnect_max_secs = 1\n";
        let daemon = rig.daemon(&account, &["lax/INBOX"]);
        proxy.reset_all();
        daemon.wait_for_output_count(WAIT, "watching lax/INBOX ", 2);
        assert_eq!(
            daemon.count_output("tls_verify = false: NOT checking localhost's certificate"),
            2,
            "{}",
            daemon.output()
        );
    });
}

#[test]
fn secrets_never_appear_anywhere() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        const WRONG: &str = "wrong-Secr3t-b41f";
        let secret_file = rig.state.path().join("pw");
        std::fs::write(&secret_file, format!("{WRONG}\n")).unwrap();
        let account = rig.dovecot.account_toml("main", "starttls").replace(
            &format!("password = {}", toml_string(&rig.dovecot.password)),
            &format!(
                "password_command = [\"cat\", {}]\nreconnect_max_secs = 1",
                toml_string(&secret_file.to_string_lossy())
            ),
        );
        let config_path = rig.state.path().join("config.toml");
        std::fs::write(&config_path, rig.config(&account)).unwrap();
        let daemon = rig.start_daemon(&account);
        daemon.wait_for_output_count(WAIT, "login failed", 2);
        // Fixed: the real password is secret too from here on.
        std::fs::write(&secret_file, format!("{}\n", rig.dovecot.password)).unwrap();
        daemon.wait_for_output(WAIT, "watching main/INBOX ");
        rig.append("after the fix");
        rig.wait_new_mail(1);
        assert!(daemon.signal("USR1"));
        daemon.wait_for_output(WAIT, "state: main/INBOX");

        let check = |args: &[&str]| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailpushd"))
                .args(args)
                .arg("--config")
                .arg(&config_path)
                .output()
                .unwrap();
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        let everything = [
            daemon.output(),
            rig.syslog.lines().join("\n"),
            format!("{:?}", rig.notifications.notifications()),
            check(&["--check"]),
            check(&["--check", "--connect", "-vv"]),
        ]
        .join("\n");
        assert!(
            everything.contains("login failed"),
            "the test saw no failure"
        );
        for secret in [WRONG, rig.dovecot.password.as_str()] {
            assert!(
                !everything.contains(secret),
                "{secret:?} leaked:\n{everything}"
            );
        }
    });
}

#[test]
fn hostile_mail_text_is_neutralised_in_every_output() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let daemon = rig.daemon(
            &rig.dovecot.account_toml("main", "implicit"),
            &["main/INBOX"],
        );
        // CR LF, an ANSI escape, a right-to-left override and markup, all inside encoded
        // words so they survive the trip through the message header.
        let subject = "=?UTF-8?Q?line1=0D=0Aforged:_line=1B[31m_red_=E2=80=AEevil_<a_href=3Dx>&?=";
        let from = "=?UTF-8?Q?Eve=1B]0;title=07?= <eve@example.com>";
        rig.dovecot.append("INBOX", &message(subject, from));
        let line = rig.wait_new_mail(1).remove(0);
        let note = rig.notifications.wait_for_count(1, WAIT).remove(0);
        daemon.wait_for_output(WAIT, "new mail account=main");

        let bad = ['\r', '\n', '\x1b', '\x07', '\u{202e}'];
        assert!(!line.contains(bad), "syslog: {line:?}");
        assert!(line.contains("line1\\r\\nforged:"), "{line}");
        assert!(line.contains("\\u{202e}evil"), "{line}");
        for l in daemon.output_lines() {
            assert!(!l.contains(&bad[2..]), "log: {l:?}");
        }
        let shown = format!("{}{}", note.summary, note.body);
        assert!(!shown.contains(&bad[2..]), "popup: {shown:?}");
        assert!(note.body.contains("&lt;a href=x&gt;&amp;"), "{}", note.body);
    });
}

#[test]
fn an_endless_answer_costs_the_connection_not_the_memory() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let (proxy, daemon) = rig.proxied("");
        // A literal that announces 4 GiB, then 40 MiB of it: a line that never ends.
        let mut flood = b"* 1 FETCH (BODY[] {4294967295}\r\n".to_vec();
        flood.extend(std::iter::repeat_n(b'x', 40 << 20));
        proxy.inject_to_client(&flood);
        daemon.wait_for_output(WAIT, "server sent more than 16 MiB in one answer");
        daemon.wait_for_output_count(WAIT, "watching main/INBOX ", 2);
        let hwm = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid()))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap();
        eprintln!("FIGURE VmHWM after a 40 MiB flood: {hwm} kB");
        assert!(hwm < 64 * 1024, "peak resident memory {hwm} kB");
        rig.append("still here");
        let got = wait_until(WAIT, "mail after the flood", || {
            rig.new_mail_lines()
                .into_iter()
                .find(|l| l.contains("still here"))
        });
        assert!(got.contains("account=main"));
    });
}
