//! Popups the desktop can place (issue 15, part 4), through the real binary, Dovecot and the
//! recording notification server: every popup names the `desktop-entry` "mailpushd"; popups
//! about new mail carry the configured `sound-name` (none when it is off, none on notices
//! about problems); and a click's `ActivationToken` reaches `open_command`, for that
//! popup's click only, while a token the daemon inherited never does.

use std::path::Path;
use std::time::Duration;

use crate::support::daemon::Daemon;
use crate::support::dbus::Notify;
use crate::support::dovecot::{message, DovecotOptions};
use crate::support::rig::{Rig, WAIT};
use crate::support::{toml_string, wait_until, with_timeout};

const LIMIT: Duration = Duration::from_secs(90);

/// The first recorded popup that `pick` accepts, waited for.
fn popup_where(rig: &Rig, what: &str, pick: impl Fn(&Notify) -> bool) -> Notify {
    wait_until(WAIT, what, || {
        rig.notifications.notifications().into_iter().find(&pick)
    })
}

#[test]
fn popups_name_the_desktop_entry_and_only_new_mail_asks_for_the_sound() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let good = rig.dovecot.account_toml("main", "implicit");
        // A wrong password: mailpushd's own notice about a problem.
        let bad = rig
            .dovecot
            .account_toml("bad", "implicit")
            .replace(&rig.dovecot.password, "wrong-password-91c2");
        // One message of its own, the rest of a burst summed up.
        let config = rig.config_with(&format!("{bad}\n{good}"), "summary_threshold = 1\n");
        let _daemon = rig.daemon_with_config(&config, &["main/INBOX"]);

        let notice = popup_where(&rig, "the login-failed notice", |n| {
            n.summary.contains("login failed")
        });
        assert_eq!(notice.desktop_entry.as_deref(), Some("mailpushd"));
        assert_eq!(notice.sound_name, None, "{}", notice.hints_debug);

        rig.append("one of its own");
        let single = popup_where(&rig, "the single popup", |n| {
            n.body.contains("one of its own")
        });
        assert_eq!(single.desktop_entry.as_deref(), Some("mailpushd"));
        assert_eq!(single.sound_name.as_deref(), Some("message-new-email"));
        assert_eq!(single.app_name, "mailpushd");
        assert_eq!(single.category.as_deref(), Some("email.arrived"));

        let mut s = rig.dovecot.session();
        for i in 0..3 {
            s.append("INBOX", &message(&format!("burst {i}"), "b@example.com"))
                .finish()
                .unwrap();
        }
        let _ = s.logout();
        let summary = popup_where(&rig, "a summary", |n| {
            n.summary.contains("new messages in main/INBOX")
        });
        assert_eq!(summary.desktop_entry.as_deref(), Some("mailpushd"));
        assert_eq!(summary.sound_name.as_deref(), Some("message-new-email"));
    });
}

#[test]
fn no_sound_hint_when_off_and_a_configured_sound_after_a_reload() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let account = rig.dovecot.account_toml("main", "implicit");
        let daemon = rig.daemon_with_config(
            &rig.config_with(&account, "sound = \"\"\n"),
            &["main/INBOX"],
        );
        rig.append("quiet");
        let quiet = rig.notifications.wait_for_count(1, WAIT).remove(0);
        assert_eq!(quiet.desktop_entry.as_deref(), Some("mailpushd"));
        assert_eq!(quiet.sound_name, None);
        assert!(
            !quiet.hints_debug.contains("sound"),
            "off means no sound hint of any kind: {}",
            quiet.hints_debug
        );

        std::fs::write(
            daemon.config_path(),
            rig.config_with(&account, "sound = \"message-new-instant\"\n"),
        )
        .unwrap();
        assert!(daemon.signal("HUP"));
        daemon.wait_for_output(WAIT, "configuration reloaded");
        rig.append("with a sound");
        let loud = rig.notifications.wait_for_count(2, WAIT).remove(1);
        assert!(loud.body.contains("with a sound"), "{loud:#?}");
        assert_eq!(loud.sound_name.as_deref(), Some("message-new-instant"));
        assert_eq!(loud.desktop_entry.as_deref(), Some("mailpushd"));
    });
}

/// The lines `open_command` wrote so far: one per run, `XDG_ACTIVATION_TOKEN|DESKTOP_STARTUP_ID`
/// as the child saw them (`unset` for a variable it did not have).
fn runs(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// Waits for `open_command`'s run number `n` (from 1) and returns what it saw.
fn run(path: &Path, n: usize) -> String {
    wait_until(WAIT, &format!("open_command's run {n}"), || {
        let all = runs(path);
        (all.len() >= n).then(|| all[n - 1].clone())
    })
}

#[test]
fn open_command_gets_the_activation_token_of_its_own_click_only() {
    with_timeout(LIMIT, || {
        let rig = Rig::start(DovecotOptions::default());
        let record = rig.state.path().join("open-runs");
        // The test's own argv: sh prints what it was given, appending to $0 (the file).
        let open = format!(
            "open_command = [\"sh\", \"-c\", {}, {}]\n",
            toml_string(
                "printf '%s|%s\\n' \"${XDG_ACTIVATION_TOKEN-unset}\" \
                 \"${DESKTOP_STARTUP_ID-unset}\" >> \"$0\""
            ),
            toml_string(&record.to_string_lossy())
        );
        let config = rig.config_with(&rig.dovecot.account_toml("main", "implicit"), &open);
        // The daemon itself was started with a token (say, by a launcher): long spent, it
        // must never reach a child.
        let daemon = Daemon::start_with_env(
            &config,
            Some(&rig.bus),
            rig.state.path(),
            &[
                ("XDG_ACTIVATION_TOKEN", "inherited-token"),
                ("DESKTOP_STARTUP_ID", "inherited-id"),
            ],
        );
        daemon.wait_for_output(WAIT, "watching main/INBOX ");
        rig.append("first");
        rig.append("second");
        let notes = rig.notifications.wait_for_count(2, WAIT);
        assert!(notes[0].body.contains("first"), "{notes:#?}");
        let (first, second) = (notes[0].id, notes[1].id);

        // A click with its token: the child gets it, in both variables.
        rig.notifications
            .click_with_token(first, "default", "token-for-first");
        assert_eq!(run(&record, 1), "token-for-first|token-for-first");

        // A token given for the second popup is not used for a click on the first, and a
        // click without a token leaves both variables unset, the inherited ones included.
        rig.notifications
            .emit_activation_token(second, "token-for-second");
        rig.notifications.emit_action_invoked(first, "default");
        assert_eq!(run(&record, 2), "unset|unset");

        // The second popup's own click gets its token, once.
        rig.notifications.emit_action_invoked(second, "default");
        assert_eq!(run(&record, 3), "token-for-second|token-for-second");
        rig.notifications.emit_action_invoked(second, "default");
        assert_eq!(run(&record, 4), "unset|unset");

        daemon.wait_for_output_count(WAIT, "open_command \"sh\" started", 4);
        assert_eq!(runs(&record).len(), 4, "{:?}", runs(&record));
        assert!(
            !daemon.output().contains("token-for-"),
            "tokens are not logged: {}",
            daemon.output()
        );
    });
}
