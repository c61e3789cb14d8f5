//! Config files written by a careless user or a hostile author, from the adversarial review
//! of issue 13: each test states what must hold (no secret echoed, one line per problem,
//! one message per mistake, suggestions that are themselves accepted, linear time).

use std::path::Path;

use super::*;

const ACCOUNT: &str = "[[accounts]]\nname='a'\nhost='h'\nusername='u'\npassword='p'\n";
const NO_SECRET: &str = "[[accounts]]\nname='a'\nhost='h'\nusername='u'\n";

fn problems(text: &str) -> Vec<Problem> {
    parse(text, Path::new("/")).expect_err("invalid config")
}

fn messages(text: &str) -> Vec<String> {
    problems(text).into_iter().map(|p| p.message).collect()
}

/// The `write key = ...` fix of a message, if it has one.
fn suggested_fix(message: &str) -> Option<&str> {
    let fix = message.split(": write ").nth(1)?;
    Some(fix.split(" (without quotes)").next().unwrap_or(fix))
}

// ---- what held up from the start ----------------------------------------------------------

#[test]
fn integer_notations_are_read_as_toml_says() {
    for v in ["0x3E1", "0o1741", "0b1111100001", "+993", "9_93"] {
        let c = parse(&format!("{ACCOUNT}port = {v}\n"), Path::new("/")).unwrap();
        assert_eq!(c.accounts[0].port, 993, "{v}");
    }
}

#[test]
fn a_wrong_typed_password_is_not_echoed() {
    for v in ["12345", "[\"hunter2\"]", "{ x = \"hunter2\" }"] {
        for m in messages(&format!("{NO_SECRET}password = {v}\n")) {
            assert!(!m.contains("12345") && !m.contains("hunter2"), "{m}");
        }
    }
}

// ---- what the review found (each failed before its fix) -----------------------------------

/// F1: a literal secret written where a command is expected is printed back by --check and
/// logged to the journal and syslog on reload.
#[test]
fn a_secret_given_as_a_command_string_is_not_echoed() {
    for key in ["password_command", "oauth2_token_command"] {
        for m in messages(&format!("{NO_SECRET}{key} = \"hunter2\"\n")) {
            assert!(!m.contains("hunter2"), "{m}");
        }
    }
}

/// F2: one problem is one line: a key, table or host name with a line break (or a terminal
/// escape) in it must not start a forged `file:line:col:` line in --check, the journal or
/// syslog, nor make the reload popup count two problems.
#[test]
fn names_from_the_file_cannot_break_or_colour_a_message() {
    for text in [
        format!("{ACCOUNT}\"x\\nfile:1:1: forged\" = 1\n"),
        format!("\"y\\nfile:1:1: forged\" = 1\n{ACCOUNT}"),
        format!("\"\\u001b[2J\" = 1\n{ACCOUNT}"),
        "[[accounts]]\nname='a'\nhost=\"evil\\nfile:1:1: forged\"\ntls='none'\nusername='u'\npassword='p'\n".to_owned(),
    ] {
        for m in messages(&text) {
            assert!(!m.chars().any(char::is_control), "{m:?}");
        }
    }
}

/// F3: one mistake, one message.
#[test]
fn accounts_written_as_one_table_is_one_problem() {
    let text = ACCOUNT.replace("[[accounts]]", "[accounts]");
    assert_eq!(messages(&text).len(), 1, "{:?}", messages(&text));
    assert_eq!(messages("accounts.name = 'a'\n").len(), 1);
    assert_eq!(
        messages("accounts = [1]\n").len(),
        1,
        "{:?}",
        messages("accounts = [1]\n")
    );
}

#[test]
fn a_wrong_mailbox_is_one_problem() {
    for v in ["[1]", "[{ notify = false }]", "[{ name = 1 }]"] {
        let m = messages(&format!("{ACCOUNT}mailboxes = {v}\n"));
        assert_eq!(m.len(), 1, "{v}: {m:?}");
    }
}

#[test]
fn a_syntax_error_is_not_reported_again_as_a_wrong_type() {
    for line in [
        "port = ",
        "port = 99 3",
        "tls = implicit",
        "notify = yes",
        "mailboxes = [INBOX]",
    ] {
        let m = messages(&format!("{ACCOUNT}{line}\n"));
        assert_eq!(m.len(), 1, "{line}: {m:?}");
    }
    let m = messages("[[accounts]]\nname = \nhost='h'\nusername='u'\npassword='p'\n");
    assert_eq!(m.len(), 1, "{m:?}");
}

/// F4: a suggested fix must itself be accepted.
#[test]
fn a_suggested_integer_is_in_range() {
    for (key, v) in [
        ("port", "0"),
        ("port", " 99999 "),
        ("idle_refresh_secs", "5"),
    ] {
        let m = messages(&format!("{ACCOUNT}{key} = \"{v}\"\n"));
        let fix = m.iter().find_map(|m| suggested_fix(m));
        if let Some(fix) = fix {
            assert!(
                parse(&format!("{ACCOUNT}{fix}\n"), Path::new("/")).is_ok(),
                "suggested `{fix}`, which is rejected"
            );
        }
    }
}

/// F4: `password_cmd = [..]` is the command, not the string `password`.
#[test]
fn a_misspelt_key_is_matched_to_a_key_its_value_fits() {
    let m = messages(&format!(
        "{NO_SECRET}password_cmd = ['pass', 'show', 'x']\n"
    ));
    assert!(m[0].contains("`password_command`"), "{m:?}");
}

/// F5: the `write key = [...]` fix must be TOML that reads back as the same words.
#[test]
fn a_suggested_list_is_valid_toml() {
    for s in ["a\\u0000b c", "x \\u001bm", "Cafe\\u0301 -a", "a\\u007f b"] {
        let m = messages(&format!("{ACCOUNT}[hooks]\non_new_mail = \"{s}\"\n"));
        let fix = suggested_fix(&m[0]).expect("a fix");
        assert!(
            toml::from_str::<toml::Table>(fix).is_ok(),
            "not TOML: {fix}"
        );
    }
    let m = messages(&format!("{ACCOUNT}mailboxes = \"Cafe\\u0301\"\n"));
    let fix = suggested_fix(&m[0]).expect("a fix");
    assert!(
        toml::from_str::<toml::Table>(fix).is_ok(),
        "not TOML: {fix}"
    );
}

/// F6: shell syntax split into words changes what runs; mailpushd never runs a shell, so it
/// must not offer such a list as the fix.
#[test]
fn shell_syntax_is_not_turned_into_a_list() {
    for s in [
        "notmuch new | tee log",
        "mbsync -a && notmuch new",
        "$(cat /etc/passwd)",
        "mbsync -a; notmuch new",
        "notify-send > /tmp/x",
        "C:\\\\Program Files\\\\x.exe",
    ] {
        let m = messages(&format!("{ACCOUNT}[hooks]\non_new_mail = \"{s}\"\n"));
        assert!(suggested_fix(&m[0]).is_none(), "{s}: {}", m[0]);
    }
}

/// F7: a value above the range is not "below" it.
#[test]
fn too_big_a_count_says_the_upper_bound() {
    let m = messages(&format!("{ACCOUNT}catch_up_max = 5_000_000_000\n"));
    assert!(!m[0].ends_with("must be 0 or more"), "{m:?}");
    let m = messages(&format!(
        "{ACCOUNT}[notifications]\nsummary_threshold = 5_000_000_000\n"
    ));
    assert!(!m[0].ends_with("must be 1 or more"), "{m:?}");
}

/// F8: a byte-order mark is not a column.
#[test]
fn a_bom_does_not_shift_columns() {
    let p = problems(&format!("\u{feff}prot = 1\n{ACCOUNT}"));
    assert_eq!((p[0].line, p[0].column), (1, 1), "{p:?}");
}

/// F9: many problems take time in proportion to the file, not its square (a reload runs on
/// the supervisor thread).
#[test]
fn many_problems_are_checked_in_linear_time() {
    // The fastest of three runs at each size, and sizes 16 times apart: linear time is 16
    // times as long, quadratic 256 times. The bound sits between with room for a loaded
    // machine.
    let time = |n: usize| {
        let text = format!(
            "{ACCOUNT}{}",
            (0..n).map(|i| format!("k{i} = 1\n")).collect::<String>()
        );
        (0..3)
            .map(|_| {
                let t = std::time::Instant::now();
                assert_eq!(problems(&text).len(), n);
                t.elapsed()
            })
            .min()
            .unwrap()
    };
    let small = time(500);
    let big = time(8_000);
    assert!(
        big < small * 64,
        "16x the problems took {big:?} vs {small:?}"
    );
}

// ---- what the second review found (each failed before its fix) ----------------------------

/// R1: a suggested fix must read back as the value that was written. toml writes a string
/// holding a tab and a `"` as a literal string ('...', raw tab); the line escaping then turns
/// the raw tab into the two characters `\t`, which a literal string keeps as they are.
#[test]
fn a_suggested_fix_reads_back_as_the_same_value() {
    let m = messages(&format!("{ACCOUNT}mailboxes = \"Sent\\tIt\\\"ems\"\n"));
    let fix = suggested_fix(&m[0]).expect("a fix");
    let t: toml::Table = toml::from_str(fix).expect("TOML");
    assert_eq!(
        t["mailboxes"].as_array().unwrap()[0].as_str(),
        Some("Sent\tIt\"ems"),
        "{fix}"
    );
    let m = messages(&format!(
        "{ACCOUNT}[hooks]\non_new_mail = \"notify-send 'It\\\"s\\there'\"\n"
    ));
    let fix = suggested_fix(&m[0]).expect("a fix");
    let t: toml::Table = toml::from_str(fix).expect("TOML");
    assert_eq!(
        t["on_new_mail"].as_array().unwrap()[1].as_str(),
        Some("It\"s\there"),
        "{fix}"
    );
}

/// R1b: a value with a line break is shown as a multi-line string whose first (trimmed)
/// line break becomes an escaped `\n` that TOML does not trim: the message shows a
/// different value from the file's.
#[test]
fn a_value_with_a_line_break_is_shown_as_it_is() {
    let m = messages(&format!("{ACCOUNT}tls = \"imp\\nlicit\"\n"));
    assert!(m[0].contains(r#""imp\nlicit""#), "{}", m[0]);
}

/// R2: one mistake, one message: a top-level key with a syntax error in it is not also an
/// unknown table (the check in `table()` is missing from `root()`).
#[test]
fn a_broken_top_level_key_is_one_problem() {
    let m = messages(&format!("b@d = 1\n{ACCOUNT}"));
    assert_eq!(m.len(), 1, "{m:?}");
}

/// R3: the keys under a table header with a syntax error are not reported as written
/// outside any table: that is the same mistake again.
#[test]
fn keys_under_a_broken_header_are_not_misplaced_too() {
    let m = messages(&format!("{ACCOUNT}[notifications\nenabled = true\n"));
    assert_eq!(m.len(), 1, "{m:?}");
}

/// R4: bidi overrides and Unicode line/paragraph separators in a name are not "plain": they
/// reorder or break the line in a terminal and in journal viewers (decode.rs already
/// escapes bidi controls in mail headers).
#[test]
fn bidi_and_separators_in_names_are_escaped() {
    for name in [
        "pass\\u202Eword",
        "x\\u2028y",
        "x\\u2029y",
        "\\u202Enotifications",
    ] {
        for text in [
            format!("{ACCOUNT}\"{name}\" = 1\n"),
            format!("\"{name}\" = 1\n{ACCOUNT}"),
            format!("{ACCOUNT}[notifications]\nurgency = \"{name}\"\n"),
        ] {
            for m in messages(&text) {
                assert!(
                    !m.contains(['\u{202E}', '\u{2028}', '\u{2029}']),
                    "{text}: {m:?}"
                );
            }
        }
    }
}

/// R5: a name from the file is echoed in full: a 500 KB key gives a 500 KB message, logged
/// up to 20 times per reload to the journal and sent to syslog (where a datagram that size
/// fails). Each message should quote at most a bounded part of it.
#[test]
fn a_huge_name_gives_a_bounded_message() {
    let key = "x".repeat(100_000);
    for text in [
        format!("{ACCOUNT}{key} = 1\n"),
        format!("{key} = 1\n{ACCOUNT}"),
        format!("{ACCOUNT}provider = \"{key}\"\n"),
        format!("{ACCOUNT}mailboxes = \"{key}\"\n"),
    ] {
        for m in messages(&text) {
            assert!(m.len() < 4096, "a message of {} bytes", m.len());
        }
    }
}

/// R6: an unknown key is compared with every key of its table by Damerau-Levenshtein, in
/// time proportional to its length times theirs: a 1 MiB key takes about 20 s in a debug
/// build, on the supervisor thread. A word more than twice as long as every candidate can
/// match none of them (`nearest` requires distance < candidate length).
#[test]
fn a_huge_unknown_key_is_checked_quickly() {
    let text = format!("{ACCOUNT}{} = 1\n", "x".repeat(200_000));
    let t = std::time::Instant::now();
    let _ = problems(&text);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );
}

/// R7: a FIFO as the config file blocks `open` (and then `read`) forever: `--check` hangs,
/// and a reload (SIGHUP) hangs the supervisor thread. Only a regular file should be read.
#[test]
fn a_fifo_is_not_read() {
    let dir = std::env::temp_dir().join(format!("mailpushd-rr13-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("config.toml");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(load(&path).is_err());
    });
    let done = rx.recv_timeout(std::time::Duration::from_secs(3));
    if done.is_err() {
        // Unblock the reader so the thread ends.
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(done, Ok(true), "load() of a FIFO did not return");
}

/// R8: /dev/zero is refused as too big, but the message says "the config file is 0 bytes;
/// one over 1048576 bytes is not read".
#[test]
fn an_endless_device_is_not_called_0_bytes() {
    let e = load(Path::new("/dev/zero")).expect_err("refused");
    assert!(!e.to_string().contains("is 0 bytes"), "{e}");
}

/// R9: control characters (CR LF) in `password` and `username` pass --check, yet every
/// login then fails (the imap crate refuses them): --check should say so, without the value.
#[test]
fn a_line_break_in_a_credential_is_a_problem() {
    for (key, v) in [("password", "hunter2\\r\\nx"), ("username", "me\\n")] {
        let text = format!(
            "[[accounts]]\nname='a'\nhost='h'\n{}{key} = \"{v}\"\n",
            if key == "password" {
                "username='u'\n"
            } else {
                "password='p'\n"
            }
        );
        let m = messages(&text);
        assert_eq!(m.len(), 1, "{key}: {m:?}");
        assert!(!m[0].contains("hunter2"), "{}", m[0]);
    }
}
