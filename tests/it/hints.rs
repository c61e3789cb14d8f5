//! Popups the desktop can place (issue 15, part 4), through the real binary, Dovecot and the
//! recording notification server: every popup names the `desktop-entry` "mailpushd"; popups
//! about new mail carry the configured `sound-name` (none when it is off, none on notices
//! about problems).

use std::time::Duration;

use crate::support::dbus::Notify;
use crate::support::dovecot::{message, DovecotOptions};
use crate::support::rig::{Rig, WAIT};
use crate::support::{wait_until, with_timeout};

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
