//! What `mailpushd status` prints, from the interface's mailboxes: a table for people,
//! JSON for scripts, and waybar's `return-type: json` object for bars. Pure.
//!
//! waybar's custom module reads one JSON object per line with `text`, `tooltip`, `class`
//! and `alt` (waybar wiki, Module: Custom, "return-type"); its tooltip is Pango markup, so
//! names in it are escaped (`&`, `<`, `>`): a mailbox named `<b>` is shown, not obeyed.

use serde_json::{json, Value};

use super::Mailbox;
use crate::decode::{controls_escaped, truncate_chars};

/// One line per mailbox, columns aligned: ACCOUNT MAILBOX UNREAD NEW STATE, then the
/// error of a failing one. Control and bidi characters in names are escaped.
pub fn table(mailboxes: &[Mailbox]) -> String {
    let rows: Vec<[String; 6]> = mailboxes
        .iter()
        .map(|m| {
            [
                controls_escaped(&m.account),
                controls_escaped(&m.mailbox),
                m.unread.map_or_else(|| "-".to_owned(), |u| u.to_string()),
                m.new.to_string(),
                m.state.clone(),
                m.last_error
                    .as_deref()
                    .map(controls_escaped)
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let header = ["ACCOUNT", "MAILBOX", "UNREAD", "NEW", "STATE", "ERROR"].map(String::from);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i == 5 {
                line.push_str(cell);
                break;
            }
            let pad = widths[i] - cell.chars().count();
            // Counts right-aligned, words left.
            if i == 2 || i == 3 {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
            line.push_str("  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn object(m: &Mailbox) -> Value {
    json!({
        "account": m.account,
        "mailbox": m.mailbox,
        "unread": m.unread,
        "new": m.new,
        "state": m.state,
        "last_error": m.last_error,
    })
}

/// A JSON array of `{account, mailbox, unread, new, state, last_error}` on one line
/// (`unread` and `last_error` are null when unknown or when all is well).
pub fn json(mailboxes: &[Mailbox]) -> String {
    Value::Array(mailboxes.iter().map(object).collect()).to_string()
}

/// The sum of the known unread counts; empty while none is known.
pub fn total(mailboxes: &[Mailbox]) -> String {
    super::total_unread(mailboxes).map_or_else(String::new, |n| n.to_string())
}

/// Mailboxes named in waybar's tooltip at most (then "and N more").
const TOOLTIP_LINES: usize = 40;
/// Characters of an account or mailbox name in the tooltip at most.
const TOOLTIP_NAME_CHARS: usize = 60;
/// Characters of an error in the tooltip at most.
const TOOLTIP_ERROR_CHARS: usize = 120;

/// Pango markup escaping for waybar's tooltip and text.
fn pango(s: &str) -> String {
    controls_escaped(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// waybar's object, on one line: `text` the total unread count (empty until one is
/// known), `tooltip` one line per mailbox (the first [`TOOLTIP_LINES`], names and errors
/// cut), `class` and `alt` the state for CSS and
/// `format-icons`: "new" (mail announced since the user last looked), "unread", "read"
/// or "unknown"; `class` also has "error" while a mailbox fails.
pub fn waybar(mailboxes: &[Mailbox]) -> String {
    let unread = super::total_unread(mailboxes);
    let new: u32 = mailboxes.iter().map(|m| m.new).fold(0, u32::saturating_add);
    let primary = match unread {
        None => "unknown",
        Some(_) if new > 0 => "new",
        Some(0) => "read",
        Some(_) => "unread",
    };
    let mut class = vec![primary];
    if mailboxes.iter().any(|m| m.state == "retrying") {
        class.push("error");
    }
    // waybar reads the line whole and GTK lays the tooltip out on each hover: names a
    // server lists and errors in its words are cut, and so is the list.
    let short = |s: &str, n: usize| pango(&truncate_chars(&controls_escaped(s), n));
    let mut tooltip: Vec<String> = mailboxes
        .iter()
        .take(TOOLTIP_LINES)
        .map(|m| {
            let what = match (&m.last_error, m.unread) {
                (Some(e), _) if m.state == "retrying" => {
                    format!("{} ({})", m.state, short(e, TOOLTIP_ERROR_CHARS))
                }
                (_, Some(u)) if m.new > 0 => format!("{u} unread, {} new", m.new),
                (_, Some(u)) => format!("{u} unread"),
                (_, None) => short(&m.state, TOOLTIP_NAME_CHARS),
            };
            format!(
                "{}/{}: {what}",
                short(&m.account, TOOLTIP_NAME_CHARS),
                short(&m.mailbox, TOOLTIP_NAME_CHARS)
            )
        })
        .collect();
    if mailboxes.len() > TOOLTIP_LINES {
        tooltip.push(format!("and {} more", mailboxes.len() - TOOLTIP_LINES));
    }
    json!({
        "text": total(mailboxes),
        "tooltip": if tooltip.is_empty() { "no mailboxes watched".to_owned() } else { tooltip.join("\n") },
        "class": class,
        "alt": primary,
    })
    .to_string()
}

/// waybar's object while no mailpushd runs (when following, until one starts again).
pub fn waybar_stopped() -> String {
    json!({
        "text": "",
        "tooltip": "mailpushd is not running",
        "class": ["stopped"],
        "alt": "stopped",
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(account: &str, mailbox: &str, unread: Option<u32>, new: u32, state: &str) -> Mailbox {
        Mailbox {
            account: account.into(),
            mailbox: mailbox.into(),
            unread,
            new,
            state: state.into(),
            last_error: None,
        }
    }

    #[test]
    fn waybar_sums_and_classes() {
        let v: Value = serde_json::from_str(&waybar(&[
            mb("work", "INBOX", Some(3), 1, "idling"),
            mb("home", "<b>&", Some(2), 0, "polling"),
            mb("x", "Lists", None, 0, "connecting"),
        ]))
        .unwrap();
        assert_eq!(v["text"], "5");
        assert_eq!(v["alt"], "new");
        assert_eq!(v["class"], json!(["new"]));
        assert_eq!(
            v["tooltip"],
            "work/INBOX: 3 unread, 1 new\nhome/&lt;b&gt;&amp;: 2 unread\nx/Lists: connecting"
        );
        let mut failing = mb("work", "INBOX", Some(0), 0, "retrying");
        failing.last_error = Some("connection refused".into());
        let v: Value = serde_json::from_str(&waybar(&[failing])).unwrap();
        assert_eq!(
            (v["text"].clone(), v["alt"].clone()),
            (json!("0"), json!("read"))
        );
        assert_eq!(v["class"], json!(["read", "error"]));
        assert_eq!(v["tooltip"], "work/INBOX: retrying (connection refused)");
        let v: Value = serde_json::from_str(&waybar(&[])).unwrap();
        assert_eq!(
            (v["text"].clone(), v["alt"].clone()),
            (json!(""), json!("unknown"))
        );
    }

    #[test]
    fn waybar_lines_are_one_line_each() {
        let out = waybar(&[mb("a\nb", "c\u{202e}d", Some(1), 0, "idling")]);
        assert!(!out.contains('\n'));
        assert!(!out.contains('\u{202e}'));
        assert!(!waybar_stopped().contains('\n'));
    }

    #[test]
    fn waybar_lines_stay_bounded_and_parse_whatever_the_names() {
        let long = "\"\\\u{2028}📬<".repeat(5_000);
        let mut many: Vec<Mailbox> = (0..1_000)
            .map(|i| mb(&long, &format!("{long}{i}"), Some(1), 0, "idling"))
            .collect();
        many[0].state = "retrying".into();
        many[0].last_error = Some("e".repeat(100_000));
        let out = waybar(&many);
        assert!(out.len() < 16 * 1024, "{} bytes", out.len());
        let v: Value = serde_json::from_str(&out).expect("one JSON object");
        assert_eq!(v["text"], "1000");
        let tooltip = v["tooltip"].as_str().unwrap();
        assert!(tooltip.ends_with("and 960 more"), "{tooltip}");
        assert!(!tooltip.contains('\u{2028}'), "{tooltip}");
        assert!(tooltip.contains("📬"), "{tooltip}");
    }

    #[test]
    fn total_sums_the_known_counts() {
        assert_eq!(total(&[]), "");
        assert_eq!(total(&[mb("a", "b", None, 0, "connecting")]), "");
        assert_eq!(
            total(&[
                mb("a", "b", Some(u32::MAX), 0, "idling"),
                mb("a", "c", Some(2), 0, "idling"),
                mb("a", "d", None, 0, "retrying"),
            ]),
            u32::MAX.to_string()
        );
    }

    #[test]
    fn json_has_nulls_for_unknowns() {
        let v: Value =
            serde_json::from_str(&json(&[mb("w", "INBOX", None, 0, "connecting")])).unwrap();
        assert_eq!(
            v,
            json!([{"account": "w", "mailbox": "INBOX", "unread": null, "new": 0,
                    "state": "connecting", "last_error": null}])
        );
    }

    #[test]
    fn table_aligns_and_escapes() {
        let mut bad = mb("work", "Lists/rust", None, 0, "retrying");
        bad.last_error = Some("refused\x1b[31m".into());
        let t = table(&[mb("work", "INBOX", Some(12), 2, "idling"), bad]);
        assert_eq!(
            t,
            "ACCOUNT  MAILBOX     UNREAD  NEW  STATE     ERROR\n\
             work     INBOX           12    2  idling\n\
             work     Lists/rust       -    0  retrying  refused\\x1b[31m\n"
        );
    }
}
