//! Header decoding and display sanitising (`mailpushd::decode`) on arbitrary bytes, as an
//! IMAP server may send them in an ENVELOPE.
//!
//! The whole input is the raw header field. Properties checked:
//! - `header_text` is the identity on UTF-8 text without encoded words or folding;
//! - `subject` and `sender` give non-empty, trimmed display text;
//! - `one_line` leaves no control or bidi character and can be read back unambiguously;
//! - `controls_escaped` leaves no control or bidi character, and changes nothing else;
//! - `markup_escape` leaves no markup-significant character unescaped, no control
//!   character but `\n`, and no bidi control;
//! - `truncate_chars` keeps a prefix, at most `max` chars, ending in `…` when it cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailpushd::decode;

fuzz_target!(|data: &[u8]| {
    let text = decode::header_text(data);
    if let Ok(s) = std::str::from_utf8(data) {
        if !s.contains("=?") && !s.contains('\n') {
            assert_eq!(text, s, "plain UTF-8 must pass through unchanged");
        }
    }

    let subject = decode::subject(Some(data));
    assert!(!subject.is_empty());
    assert_eq!(subject.trim(), subject);

    // The sender: name from the whole input, address from its two halves at the last `@`.
    let (mailbox, host) = match data.iter().rposition(|&b| b == b'@') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let sender = decode::sender(Some(data), Some(mailbox), Some(host));
    if let Some(name) = &sender.name {
        assert!(!name.is_empty() && name.trim() == name, "{name:?}");
    }
    assert_eq!(
        sender.address.is_some(),
        !mailbox.is_empty() && !host.is_empty()
    );
    assert!(!sender.display().is_empty());
    assert!(!sender.short().is_empty());

    let lossy = String::from_utf8_lossy(data);
    for s in [text.as_str(), &lossy, &subject, &sender.display()] {
        check_one_line(s);
        check_controls_escaped(s);
        check_markup(s);
        let n = data.first().map_or(0, |&b| usize::from(b % 64));
        for max in [0, 1, 2, n] {
            check_truncate(s, max);
        }
    }
});

fn check_one_line(s: &str) {
    let out = decode::one_line(s);
    for c in out.chars() {
        assert!(
            !c.is_control() && !decode::is_bidi_control(c),
            "one_line left {c:?} in {out:?}"
        );
    }
    assert_eq!(unescape_one_line(&out), s, "one_line is not reversible");
}

/// Reads back what `one_line` wrote; panics on anything it would not write, such as a
/// lone `"` (which would end the quoted value early in a log line).
fn unescape_one_line(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => panic!("unescaped quote in {s:?}"),
            '\\' => match chars.next() {
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('x') => {
                    let hex: String = chars.by_ref().take(2).collect();
                    let v = u32::from_str_radix(&hex, 16).expect("two hex digits");
                    out.push(char::from_u32(v).unwrap());
                }
                Some('u') => {
                    assert_eq!(chars.next(), Some('{'));
                    let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    let v = u32::from_str_radix(&hex, 16).expect("hex code point");
                    out.push(char::from_u32(v).unwrap());
                }
                other => panic!("bad escape \\{other:?} in {s:?}"),
            },
            c => out.push(c),
        }
    }
    out
}

fn check_controls_escaped(s: &str) {
    let out = decode::controls_escaped(s);
    for c in out.chars() {
        assert!(
            !c.is_control() && !decode::is_bidi_control(c),
            "controls_escaped left {c:?} in {out:?}"
        );
    }
    if !s
        .chars()
        .any(|c| c.is_control() || decode::is_bidi_control(c))
    {
        assert_eq!(out, s, "nothing to escape");
    }
}

fn check_markup(s: &str) {
    let out = decode::markup_escape(s);
    for c in out.chars() {
        assert!(
            !matches!(c, '<' | '>' | '\r' | '\t'),
            "{c:?} in {out:?}"
        );
        assert!(c == '\n' || !c.is_control(), "control {c:?} in {out:?}");
        assert!(!decode::is_bidi_control(c), "bidi {c:?} in {out:?}");
    }
    for (i, _) in out.match_indices('&') {
        let rest = &out[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;"]
                .iter()
                .any(|e| rest.starts_with(e)),
            "bare & in {out:?}"
        );
    }
}

fn check_truncate(s: &str, max: usize) {
    let out = decode::truncate_chars(s, max);
    let n = s.chars().count();
    let got = out.chars().count();
    if n <= max {
        assert_eq!(out, s);
    } else if max == 0 {
        assert_eq!(out, "");
    } else {
        assert_eq!(got, max, "{s:?} cut to {max}: {out:?}");
        let kept = out.strip_suffix('…').expect("ends with an ellipsis");
        assert!(s.starts_with(kept));
    }
}
