//! The words of an announcement: one new message ([`Announcement`]) rendered as a syslog
//! line, a popup or a summary popup for a burst. Pure: every field is made one line and
//! bounded here, so nothing a sender writes can forge a line or push the rest out of view.

use super::notify::Popup;
use crate::config::Account;
use crate::decode::{self, Sender};

/// Longest subject shown in a popup, in characters; syslog gets more.
const POPUP_SUBJECT_CHARS: usize = 200;
/// Longest sender name in a popup's title, in characters.
const POPUP_SENDER_CHARS: usize = 80;
/// Longest sender and subject in one line of a summary popup, in characters.
const SUMMARY_SENDER_CHARS: usize = 40;
const SUMMARY_SUBJECT_CHARS: usize = 80;
/// Longest `account/mailbox` in a popup, in characters (both come from the config, but a
/// mailbox name can be long).
pub(super) const POPUP_PLACE_CHARS: usize = 120;
/// Longest server-supplied reason (a failed login) in a popup, in characters.
pub(super) const POPUP_REASON_CHARS: usize = 300;
const SYSLOG_SUBJECT_CHARS: usize = 1000;
/// How many senders and subjects a summary popup lists before "and N more".
pub(super) const SUMMARY_LINES: usize = 3;

/// One new message, decoded and ready to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub account: String,
    /// Mailbox name as the user wrote it (decoded, UTF-8).
    pub mailbox: String,
    pub uid: u32,
    pub sender: Sender,
    pub subject: String,
}

/// `new mail account=work mailbox=INBOX uid=4711 from="Zhang San <z@example.com>"
/// subject="测试邮件"`: one line whatever the mail holds, parseable as key=value.
pub fn syslog_line(a: &Announcement) -> String {
    format!(
        "new mail account={} mailbox={} uid={} from=\"{}\" subject=\"{}\"",
        value(&a.account),
        value(&a.mailbox),
        a.uid,
        decode::one_line(&a.sender.display()),
        decode::one_line(&decode::truncate_chars(&a.subject, SYSLOG_SUBJECT_CHARS)),
    )
}

/// A value that stays bare when it is a single plain token and is quoted otherwise.
fn value(s: &str) -> String {
    let escaped = decode::one_line(s);
    if !s.is_empty() && escaped == s && !s.contains(char::is_whitespace) {
        escaped
    } else {
        format!("\"{escaped}\"")
    }
}

/// What a popup may reveal (an account's `show_sender` / `show_subject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privacy {
    pub sender: bool,
    pub subject: bool,
}

impl Privacy {
    pub const ALL: Privacy = Privacy {
        sender: true,
        subject: true,
    };

    pub fn of(account: &Account) -> Self {
        Privacy {
            sender: account.show_sender,
            subject: account.show_subject,
        }
    }
}

/// One field of a popup: a single line (see [`decode::single_line`]) of at most `max`
/// characters, so no field can forge a line or push the rest out of view.
pub(super) fn field(s: &str, max: usize) -> String {
    decode::truncate_chars(&decode::single_line(s), max)
}

/// `account/mailbox`, bounded.
fn place(a: &Announcement) -> String {
    field(&format!("{}/{}", a.account, a.mailbox), POPUP_PLACE_CHARS)
}

/// Popup text: the sender as the title, the subject and where it arrived in the body; with
/// privacy settings, only what may be shown ("New mail in work/INBOX" at the least). Every
/// field is one line and bounded (sender 80, subject 200, place 120 characters).
pub fn popup(a: &Announcement, privacy: Privacy) -> Popup {
    let place = place(a);
    let subject = field(&a.subject, POPUP_SUBJECT_CHARS);
    let sender = field(&a.sender.short(), POPUP_SENDER_CHARS);
    match (privacy.sender, privacy.subject) {
        (true, true) => Popup {
            summary: sender,
            body: format!("{subject}\n{place}"),
        },
        (true, false) => Popup {
            summary: sender,
            body: place,
        },
        (false, true) => Popup {
            summary: format!("New mail in {place}"),
            body: subject,
        },
        (false, false) => Popup {
            summary: format!("New mail in {place}"),
            body: String::new(),
        },
    }
}

/// One popup for many messages: "12 new messages in work/INBOX" (plus `suffix`, e.g.
/// " while disconnected"), listing the first few senders and subjects as far as privacy
/// allows, each line bounded (sender 40, subject 80 characters). `mails` are the first
/// few of `total`.
pub fn burst_popup(mails: &[Announcement], total: usize, privacy: Privacy, suffix: &str) -> Popup {
    let place = mails.first().map(place).unwrap_or_default();
    let mut body: Vec<String> = Vec::new();
    if privacy.sender || privacy.subject {
        body = mails
            .iter()
            .take(SUMMARY_LINES)
            .map(|a| {
                let sender = || field(&a.sender.short(), SUMMARY_SENDER_CHARS);
                let subject = || field(&a.subject, SUMMARY_SUBJECT_CHARS);
                match (privacy.sender, privacy.subject) {
                    (true, true) => format!("{}: {}", sender(), subject()),
                    (true, false) => sender(),
                    _ => subject(),
                }
            })
            .collect();
        let listed = body.len();
        if total > listed {
            body.push(format!("and {} more", total - listed));
        }
    }
    Popup {
        summary: format!("{total} new messages in {place}{suffix}"),
        body: body.join("\n"),
    }
}

/// The popup for a config file that could not be reloaded: its first problem, how many
/// more there are (of `count` in all), and that the daemon carries on.
pub fn config_rejected_popup(first: &str, count: usize) -> Popup {
    let mut body = field(first, POPUP_REASON_CHARS);
    match count.saturating_sub(1) {
        0 => {}
        1 => body.push_str("\nand 1 more problem (mailpushd --check lists them)"),
        n => body.push_str(&format!(
            "\nand {n} more problems (mailpushd --check lists them)"
        )),
    }
    body.push_str("\nStill running with the previous configuration.");
    Popup {
        summary: "mailpushd: configuration not reloaded".to_owned(),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(subject: &str) -> Announcement {
        Announcement {
            account: "work".into(),
            mailbox: "INBOX".into(),
            uid: 4711,
            sender: Sender {
                name: Some("Zhang San".into()),
                address: Some("z@example.com".into()),
            },
            subject: subject.into(),
        }
    }

    #[test]
    fn syslog_line_shape() {
        assert_eq!(
            syslog_line(&mail("测试邮件")),
            "new mail account=work mailbox=INBOX uid=4711 from=\"Zhang San <z@example.com>\" subject=\"测试邮件\""
        );
    }

    #[test]
    fn syslog_line_is_one_line_whatever_the_subject() {
        let mut m = mail("a\r\nfake: line\x1b[2J \"quoted\"");
        m.mailbox = "Sent Items".into();
        let line = syslog_line(&m);
        assert!(!line.contains(['\r', '\n', '\x1b']), "{line}");
        assert!(line.contains("mailbox=\"Sent Items\""), "{line}");
        assert!(
            line.contains("subject=\"a\\r\\nfake: line\\x1b[2J \\\"quoted\\\"\""),
            "{line}"
        );
    }

    #[test]
    fn popup_shows_sender_subject_and_place() {
        let p = popup(&mail("<b>&</b>"), Privacy::ALL);
        assert_eq!(p.summary, "Zhang San");
        assert_eq!(p.body, "<b>&</b>\nwork/INBOX");
    }

    #[test]
    fn privacy_hides_what_it_should() {
        let m = mail("secret plans");
        let none = Privacy {
            sender: false,
            subject: false,
        };
        assert_eq!(
            popup(&m, none),
            Popup {
                summary: "New mail in work/INBOX".into(),
                body: String::new()
            }
        );
        let no_subject = Privacy {
            sender: true,
            subject: false,
        };
        let p = popup(&m, no_subject);
        assert!(!p.body.contains("secret") && !p.summary.contains("secret"));
        let no_sender = Privacy {
            sender: false,
            subject: true,
        };
        let p = popup(&m, no_sender);
        assert!(!p.body.contains("Zhang") && !p.summary.contains("Zhang"));
        let b = burst_popup(&[m.clone(), m.clone()], 2, none, "");
        assert_eq!(b.summary, "2 new messages in work/INBOX");
        assert_eq!(b.body, "");
    }

    #[test]
    fn a_line_break_in_a_subject_or_name_cannot_forge_a_line() {
        let mut m = mail("Invoice\r\nFrom: your bank\tpay now");
        m.sender.name = Some("Eve\nAdmin".into());
        let p = popup(&m, Privacy::ALL);
        assert_eq!(p.summary, "Eve Admin");
        assert_eq!(p.body, "Invoice From: your bank pay now\nwork/INBOX");
        let b = burst_popup(&[m.clone(), m], 2, Privacy::ALL, "");
        assert_eq!(b.body.lines().count(), 2, "{}", b.body);
    }

    #[test]
    fn every_popup_field_is_bounded() {
        let mut m = mail(&"s".repeat(5000));
        m.sender.name = Some("N".repeat(5000));
        m.mailbox = "M".repeat(500);
        let p = popup(&m, Privacy::ALL);
        assert_eq!(p.summary.chars().count(), POPUP_SENDER_CHARS);
        assert!(p.summary.ends_with('…'));
        let mut lines = p.body.lines();
        assert_eq!(lines.next().unwrap().chars().count(), POPUP_SUBJECT_CHARS);
        assert_eq!(lines.next().unwrap().chars().count(), POPUP_PLACE_CHARS);
        let b = burst_popup(&[m.clone(), m.clone(), m.clone()], 9, Privacy::ALL, "");
        assert!(
            b.summary.chars().count() <= POPUP_PLACE_CHARS + 30,
            "{}",
            b.summary
        );
        for line in b.body.lines() {
            assert!(
                line.chars().count() <= SUMMARY_SENDER_CHARS + 2 + SUMMARY_SUBJECT_CHARS,
                "{line}"
            );
        }
    }

    #[test]
    fn burst_popup_lists_a_few_and_counts_the_rest() {
        let mails: Vec<_> = (0..23).map(|i| mail(&format!("s{i}"))).collect();
        let p = burst_popup(&mails[..3], 23, Privacy::ALL, " while disconnected");
        assert_eq!(
            p.summary,
            "23 new messages in work/INBOX while disconnected"
        );
        assert_eq!(
            p.body,
            "Zhang San: s0\nZhang San: s1\nZhang San: s2\nand 20 more"
        );
    }

    #[test]
    fn a_rejected_config_popup_counts_the_other_problems() {
        let p = config_rejected_popup("f:4:8: one", 3);
        assert_eq!(p.summary, "mailpushd: configuration not reloaded");
        assert_eq!(
            p.body,
            "f:4:8: one\nand 2 more problems (mailpushd --check lists them)\n\
             Still running with the previous configuration."
        );
        let p = config_rejected_popup("f:1:1: only", 1);
        assert_eq!(
            p.body,
            "f:1:1: only\nStill running with the previous configuration."
        );
    }
}
