//! Header text decoding and display sanitising.
//!
//! Owns the path from the raw bytes of an IMAP ENVELOPE field (subject, sender
//! name, still RFC 2047 encoded, possibly raw 8-bit GBK) to display text, and
//! the escaping of that text for the two places it is shown: syslog/log lines
//! ([`one_line`]) and freedesktop notification bodies ([`single_line`] for each field,
//! then [`markup_escape`] for the composed body).
//!
//! Everything here is pure: no I/O, no global state.
//!
//! The RFC 2047 encoded-word parser is hand-written rather than taken from
//! `mailparse` because `mailparse` decodes every encoded word on its own, so a
//! multibyte character split across two words (common with GBK and UTF-8
//! subjects from some webmail senders) turns into replacement characters; it
//! also rejects charset labels with an RFC 2231 language suffix and decodes
//! raw 8-bit headers as Latin-1 rather than GB18030.

use encoding_rs::{Encoding, GB18030, GBK};

/// Shown when a message has no subject, or one that decodes to blanks.
const NO_SUBJECT: &str = "(no subject)";
/// Shown when the envelope has neither a usable name nor an address.
const UNKNOWN_SENDER: &str = "(unknown sender)";

/// Decodes a raw header field into display text.
///
/// Steps, in order:
/// 1. Bytes to text: valid UTF-8 as is; otherwise GB18030 when that decodes
///    without errors (raw 8-bit headers in the wild are overwhelmingly GBK,
///    and GB18030 is its superset); otherwise lossy UTF-8.
/// 2. Unfolding: a line break followed by a space or tab is removed (the
///    whitespace stays, as RFC 5322 §2.2.3 says).
/// 3. RFC 2047 encoded words (`=?charset?B|Q?text?=`) are decoded. Whitespace
///    between two encoded words is dropped (§6.2), and consecutive encoded
///    words in the same charset are joined as bytes before charset decoding.
///    Malformed words and unknown charsets stay as literal text.
///
/// Control characters that come out of decoding are kept: sanitising depends
/// on where the text is shown, see [`one_line`] and [`markup_escape`].
pub fn header_text(raw: &[u8]) -> String {
    let text = bytes_to_text(raw);
    let unfolded = unfold(&text);
    decode_encoded_words(&unfolded)
}

/// The display subject: [`header_text`], trimmed, or `(no subject)`.
pub fn subject(raw: Option<&[u8]>) -> String {
    let text = raw.map(header_text).unwrap_or_default();
    let trimmed = text.trim();
    if trimmed.is_empty() {
        NO_SUBJECT.to_string()
    } else {
        trimmed.to_string()
    }
}

/// Who sent a message, as far as the ENVELOPE tells.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sender {
    /// Decoded display name; `None` when absent or blank.
    pub name: Option<String>,
    /// `mailbox@host`; `None` unless both parts are present and non-empty.
    pub address: Option<String>,
}

/// Builds a [`Sender`] from the name, mailbox and host fields of an ENVELOPE
/// address structure.
pub fn sender(name: Option<&[u8]>, mailbox: Option<&[u8]>, host: Option<&[u8]>) -> Sender {
    let name = name
        .map(header_text)
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    // The address is not RFC 2047 encoded (encoded words are not allowed in an
    // addr-spec); it is ASCII or, with SMTPUTF8, UTF-8.
    let address = match (mailbox, host) {
        (Some(m), Some(h)) if !m.is_empty() && !h.is_empty() => Some(format!(
            "{}@{}",
            String::from_utf8_lossy(m),
            String::from_utf8_lossy(h)
        )),
        _ => None,
    };
    Sender { name, address }
}

/// The sender from a raw `From:` header value (RFC 5322 §3.4: a mailbox, a list, or a group
/// such as `Team: alice@example.org, Bob <bob@example.org>;`), as [`Sender`].
///
/// The value is turned into text and unfolded first, then parsed as an address list by
/// `mailparse`, and only then are encoded words in the display name decoded, so that a
/// decoded name with a comma or quote cannot change how the addresses split. The first
/// address is the sender; for a group, the group's name with its first member's address
/// (or the name alone for an empty group). A value that does not parse as addresses is
/// shown as decoded text, so something readable is shown rather than `(unknown sender)`.
pub fn from_header(raw: &[u8]) -> Sender {
    let text = unfold(&bytes_to_text(raw));
    let name = |n: Option<&str>| {
        n.map(decode_encoded_words)
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
    };
    let address = |a: &str| Some(a.trim().to_string()).filter(|a| !a.is_empty() && a.contains('@'));
    match mailparse::addrparse(&text).map(|list| list.into_inner()) {
        Ok(list) => match list.into_iter().next() {
            Some(mailparse::MailAddr::Single(one)) => Sender {
                name: name(one.display_name.as_deref()),
                address: address(&one.addr),
            },
            Some(mailparse::MailAddr::Group(group)) => {
                let first = group.addrs.first();
                Sender {
                    name: name(Some(&group.group_name))
                        .or_else(|| first.and_then(|f| name(f.display_name.as_deref()))),
                    address: first.and_then(|f| address(&f.addr)),
                }
            }
            None => Sender::default(),
        },
        // `<>` (a bounce's null sender) and the like say nothing worth showing.
        Err(_) => Sender {
            name: name(Some(&text)).filter(|n| n.chars().any(char::is_alphanumeric)),
            address: None,
        },
    }
}

impl Sender {
    /// `Name <address>`, or whichever part exists, or `(unknown sender)`.
    ///
    /// When the name is just the address again (`"z@example.com"
    /// <z@example.com>`, common from some clients) it is shown once.
    pub fn display(&self) -> String {
        match (&self.name, &self.address) {
            (Some(n), Some(a)) if n.eq_ignore_ascii_case(a) => a.clone(),
            (Some(n), Some(a)) => format!("{n} <{a}>"),
            (Some(n), None) => n.clone(),
            (None, Some(a)) => a.clone(),
            (None, None) => UNKNOWN_SENDER.to_string(),
        }
    }

    /// The name if any, else the address, else `(unknown sender)`.
    pub fn short(&self) -> String {
        self.name
            .as_ref()
            .or(self.address.as_ref())
            .cloned()
            .unwrap_or_else(|| UNKNOWN_SENDER.to_string())
    }
}

/// Makes text safe to embed in one log line, inside `key="..."`.
///
/// Control characters (C0, DEL, C1) and Unicode bidi controls are escaped so a
/// subject can neither forge extra log lines nor visually reorder the line in
/// a terminal; `\` and `"` are escaped so the quoted value has one reading.
/// All other characters, CJK included, pass through unchanged.
pub fn one_line(s: &str) -> String {
    escape(s, true)
}

/// Like [`one_line`], for free text that is not inside quotes (error messages with a
/// server's words in them): controls and bidi are escaped, `\` and `"` are left alone.
pub fn controls_escaped(s: &str) -> String {
    escape(s, false)
}

fn escape(s: &str, quoted: bool) -> String {
    use std::fmt::Write as _;

    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' if quoted => out.push_str("\\\\"),
            '"' if quoted => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // C0 and DEL: two hex digits, the familiar `\x1b` form.
            '\0'..='\x1f' | '\x7f' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            // C1 and bidi controls and the Unicode line and paragraph separators are not
            // bytes, so use the Rust-style code point escape to avoid confusion with
            // raw-byte `\xNN`.
            c if is_c1(c) || is_bidi_control(c) || is_separator(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Makes one field of a popup (a subject, a sender name) a single line: every run of
/// control characters (CR, LF, TAB, ESC, C1...) becomes one space and bidi controls are
/// dropped, so a subject with an encoded CR/LF cannot forge a second line in the popup,
/// and a crafted one cannot reorder its text. Apply it before the body is composed: the
/// body's own line breaks are ours.
pub fn single_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_controls = false;
    for c in s.chars() {
        if is_bidi_control(c) {
            continue;
        }
        if c.is_control() {
            if !in_controls {
                out.push(' ');
            }
            in_controls = true;
        } else {
            out.push(c);
            in_controls = false;
        }
    }
    out
}

/// Escapes text for a freedesktop notification body (body-markup).
///
/// Only what the markup needs: `&`, `<` and `>` become `&amp;`, `&lt;`, `&gt;`. Quotes
/// and apostrophes stay as they are (they only matter inside attribute values, and the
/// body is never put in one); GNOME Shell's markup filter accepts named entities only, so
/// `&#39;` showed literally there. Line feeds are kept (the body may be multi-line), a
/// tab becomes a space, CR is dropped (so CRLF acts as LF), other control characters
/// become U+FFFD and bidi controls are dropped, so a crafted subject cannot reorder or
/// fake the popup's text.
pub fn markup_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' => out.push('\n'),
            '\t' => out.push(' '),
            '\r' => {}
            c if is_bidi_control(c) => {}
            c if c.is_control() => out.push(char::REPLACEMENT_CHARACTER),
            c => out.push(c),
        }
    }
    out
}

/// Shortens `s` to at most `max_chars` characters, the last being `…` when
/// anything was cut. Cuts between `char`s (code points), so CJK text is never
/// split mid-character; combining sequences may still be split, which only
/// affects the last visible glyph.
pub fn truncate_chars(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        // Fewer than max_chars + 1 chars: nothing to cut.
        None => s.to_string(),
        Some(_) if max_chars == 0 => String::new(),
        Some(_) => {
            // Keep max_chars - 1 chars and the ellipsis.
            let cut = s
                .char_indices()
                .nth(max_chars - 1)
                .map_or(s.len(), |(i, _)| i);
            let mut out = String::with_capacity(cut + '…'.len_utf8());
            out.push_str(&s[..cut]);
            out.push('…');
            out
        }
    }
}

/// C1 controls, U+0080–U+009F.
fn is_c1(c: char) -> bool {
    ('\u{80}'..='\u{9f}').contains(&c)
}

/// Unicode bidi formatting characters: embeddings/overrides (LRE, RLE, PDF,
/// LRO, RLO), isolates (LRI, RLI, FSI, PDI), LRM, RLM and ALM.
/// U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR: line breaks to some terminals and
/// journal viewers.
fn is_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
}

/// Whether `c` would change how a line of text reads where it is shown: a control character
/// (C0, DEL, C1), a bidi control, or a line or paragraph separator. [`one_line`] and
/// [`controls_escaped`] escape exactly these.
pub fn is_line_unsafe(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || is_separator(c)
}

pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
    )
}

/// Step 1 of [`header_text`]: raw bytes to a string.
fn bytes_to_text(raw: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(raw) {
        return s.to_string();
    }
    // Not UTF-8: try GB18030, but only accept a clean decode; a single error
    // means the bytes are something else, and lossy UTF-8 at least keeps the
    // ASCII (and any valid UTF-8 runs) readable.
    match GB18030.decode_without_bom_handling_and_without_replacement(raw) {
        Some(s) => s.into_owned(),
        None => String::from_utf8_lossy(raw).into_owned(),
    }
}

/// Step 2 of [`header_text`]: removes CRLF (or bare LF) before a space or tab.
fn unfold(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        let newline_len = match (b[i], b.get(i + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\n', _) => 1,
            _ => 0,
        };
        if newline_len > 0 && matches!(b.get(i + newline_len), Some(b' ' | b'\t')) {
            // Byte indices at ASCII bytes are always char boundaries.
            out.push_str(&s[start..i]);
            i += newline_len;
            start = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[start..]);
    out
}

/// A piece of a header after encoded-word recognition.
enum Piece<'a> {
    /// Literal text, including malformed or unknown-charset encoded words.
    Text(&'a str),
    /// A well-formed encoded word: its charset and its still-encoded bytes.
    Word(&'static Encoding, Vec<u8>),
}

/// Step 3 of [`header_text`]: decodes RFC 2047 encoded words.
///
/// Encoded words are recognised anywhere, not only between whitespace as RFC
/// 2047 §5 requires: senders that glue them to text (`Re:=?utf-8?...`) exist,
/// and a false positive needs a complete, valid `=?cs?B?...?=` in plain text.
fn decode_encoded_words(s: &str) -> String {
    let mut pieces = Vec::new();
    let mut literal_start = 0;
    let mut search = 0;
    while let Some(offset) = s[search..].find("=?") {
        let start = search + offset;
        match parse_encoded_word(&s[start..]) {
            Some((len, encoding, bytes)) => {
                if literal_start < start {
                    pieces.push(Piece::Text(&s[literal_start..start]));
                }
                pieces.push(Piece::Word(encoding, bytes));
                search = start + len;
                literal_start = search;
            }
            // Advance by one, not two: in `=?=?utf-8?...` the real word starts
            // at the second `=`.
            None => search = start + 1,
        }
    }
    if literal_start < s.len() {
        pieces.push(Piece::Text(&s[literal_start..]));
    }

    let is_word = |i: usize| matches!(pieces.get(i), Some(Piece::Word(..)));
    let mut out = String::with_capacity(s.len());
    // Bytes of consecutive same-charset words, decoded together so that a
    // character split across words comes out whole.
    let mut pending: Option<(&'static Encoding, Vec<u8>)> = None;
    for (i, piece) in pieces.iter().enumerate() {
        match piece {
            Piece::Text(t) => {
                let between_words = i > 0 && is_word(i - 1) && is_word(i + 1);
                if between_words && t.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')) {
                    continue;
                }
                flush(&mut pending, &mut out);
                out.push_str(t);
            }
            Piece::Word(encoding, bytes) => match &mut pending {
                Some((e, buf)) if *e == *encoding => buf.extend_from_slice(bytes),
                _ => {
                    flush(&mut pending, &mut out);
                    pending = Some((encoding, bytes.clone()));
                }
            },
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Decodes and appends the pending run of encoded-word bytes, if any.
fn flush(pending: &mut Option<(&'static Encoding, Vec<u8>)>, out: &mut String) {
    if let Some((encoding, bytes)) = pending.take() {
        // BOM handling off: a BOM inside a header is content, not a signature,
        // and the label already names the charset.
        out.push_str(&encoding.decode_without_bom_handling(&bytes).0);
    }
}

/// Parses one encoded word at the start of `s` (which begins with `=?`).
///
/// Returns its length in bytes, its charset and the transfer-decoded bytes, or
/// `None` when it is malformed or the charset is unknown to encoding_rs.
fn parse_encoded_word(s: &str) -> Option<(usize, &'static Encoding, Vec<u8>)> {
    let rest = s.strip_prefix("=?")?;
    let charset_end = rest.find('?')?;
    let charset = &rest[..charset_end];
    if charset.is_empty() || !charset.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let after_charset = &rest[charset_end + 1..];
    let kind = match after_charset.as_bytes() {
        [k @ (b'B' | b'b' | b'Q' | b'q'), b'?', ..] => k.to_ascii_uppercase(),
        _ => return None,
    };
    let text_and_rest = &after_charset[2..];
    let text_end = encoded_text_len(text_and_rest.as_bytes(), kind)?;
    let text = &text_and_rest[..text_end];

    // RFC 2231 §5 allows `charset*language`; the language is irrelevant here.
    let label = charset.split('*').next().unwrap_or(charset);
    let mut encoding = Encoding::for_label_no_replacement(label.as_bytes())?;
    // GBK and GB18030 decode identically; unify them so that adjacent words
    // labelled gb2312 and gb18030 still join into one run.
    if encoding == GBK {
        encoding = GB18030;
    }
    let bytes = if kind == b'B' {
        decode_b(text)?
    } else {
        decode_q(text)?
    };
    let len = 2 + charset_end + 1 + 2 + text_end + 2;
    Some((len, encoding, bytes))
}

/// Finds the `?=` that ends the encoded text at the start of `s`.
///
/// Encoded text is printable ASCII without spaces (RFC 2047 §2), so the scan
/// gives up at the first space or control character. RFC 2047 also forbids
/// `?` in it; a stray `?` is still accepted in Q text, where broken encoders
/// leave it, but not in B text, where it cannot occur. In Q text every `=`
/// must start a hex escape. Together these stop the scan at the next `=?` at
/// the latest, so scanning stays linear even for hostile input full of
/// unterminated words.
fn encoded_text_len(s: &[u8], kind: u8) -> Option<usize> {
    let mut i = 0;
    loop {
        match *s.get(i)? {
            b'?' if s.get(i + 1) == Some(&b'=') => return Some(i),
            b'?' if kind == b'B' => return None,
            b'=' if kind == b'Q' => {
                hex_value(*s.get(i + 1)?)?;
                hex_value(*s.get(i + 2)?)?;
                i += 3;
                continue;
            }
            b if !b.is_ascii_graphic() => return None,
            _ => {}
        }
        i += 1;
    }
}

/// The "B" encoding: standard base64. Missing padding is tolerated (some
/// senders omit it); characters outside the alphabet, `=` in the middle or an
/// impossible length make the word malformed.
fn decode_b(text: &str) -> Option<Vec<u8>> {
    let data = text.trim_end_matches('=');
    if text.len() - data.len() > 2 || data.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in data.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            // Truncation to the low byte is the point here.
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The "Q" encoding: `_` is a space, `=XX` a hex byte, the rest literal.
fn decode_q(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hi = hex_value(*b.get(i + 1)?)?;
                let lo = hex_value(*b.get(i + 2)?)?;
                out.push((hi << 4) | lo);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    Some(out)
}

/// One hex digit; lower case accepted as RFC 2047 decoders should be lenient.
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_header_reads_mailboxes_groups_and_encoded_names() {
        let s = from_header(b"Team: alice@example.org, Bob <bob@example.org>;");
        assert_eq!(s.display(), "Team <alice@example.org>");
        let s = from_header(b"=?UTF-8?B?5byg5LiJ?= <z@example.com>");
        assert_eq!(s.display(), "\u{5f20}\u{4e09} <z@example.com>");
        let s = from_header(b"\"Doe, John\" <j@example.com>, other@example.com");
        assert_eq!(s.display(), "Doe, John <j@example.com>");
        // A decoded comma in the name does not split the address.
        let s = from_header(b"=?UTF-8?Q?A=2C_B?= <ab@example.com>");
        assert_eq!(s.display(), "A, B <ab@example.com>");
        let s = from_header(b"Folded\r\n Name <f@example.com>");
        assert_eq!(s.display(), "Folded Name <f@example.com>");
        assert_eq!(
            from_header(b"plain@example.com").display(),
            "plain@example.com"
        );
        assert_eq!(from_header(b"").display(), "(unknown sender)");
        assert_eq!(from_header(b"<>").display(), "(unknown sender)");
        assert_eq!(from_header(b"Empty Group:;").display(), "Empty Group");
        // Raw 8-bit GBK: "张三".
        let s = from_header(b"\xd5\xc5\xc8\xfd <z@example.com>");
        assert_eq!(s.display(), "\u{5f20}\u{4e09} <z@example.com>");
    }
    use encoding_rs::{BIG5, EUC_KR, ISO_2022_JP, WINDOWS_1251};

    /// Standard base64 with padding, for building encoded words in tests from
    /// encoding_rs output (independent of the decoder under test).
    fn b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            }
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
        out
    }

    /// `=?label?B?...?=` of `text` encoded with `encoding`.
    fn b_word(label: &str, encoding: &'static Encoding, text: &str) -> String {
        let (bytes, _, unmappable) = encoding.encode(text);
        assert!(!unmappable, "{text} not encodable in {label}");
        format!("=?{label}?B?{}?=", b64(&bytes))
    }

    #[test]
    fn test_helper_matches_known_vectors() {
        assert_eq!(
            b_word("UTF-8", encoding_rs::UTF_8, "测试邮件"),
            "=?UTF-8?B?5rWL6K+V6YKu5Lu2?="
        );
        assert_eq!(b_word("GBK", GBK, "测试邮件"), "=?GBK?B?suLK1NPKvP4=?=");
        assert_eq!(b64(b"\xe6\xb5"), "5rU=");
    }

    #[test]
    fn utf8_b() {
        assert_eq!(header_text(b"=?UTF-8?B?5rWL6K+V6YKu5Lu2?="), "测试邮件");
        // Lower-case label and encoding letter.
        assert_eq!(header_text(b"=?utf-8?b?5rWL6K+V6YKu5Lu2?="), "测试邮件");
    }

    #[test]
    fn utf8_q_with_underscores_and_hex() {
        assert_eq!(
            header_text(b"=?UTF-8?Q?Hello_=E6=B5=8B=e8=af=95_world?="),
            "Hello 测试 world"
        );
    }

    #[test]
    fn gbk_and_gb2312_labels() {
        assert_eq!(header_text(b"=?GBK?B?suLK1NPKvP4=?="), "测试邮件");
        assert_eq!(header_text(b"=?gb2312?B?suLK1NPKvP4=?="), "测试邮件");
        assert_eq!(header_text(b"=?GB2312?Q?=B2=E2=CA=D4?="), "测试");
    }

    #[test]
    fn gb18030_four_byte_character() {
        // U+20000 is outside GBK; GB18030 encodes it in four bytes.
        let (bytes, _, _) = GB18030.encode("𠀀中");
        assert_eq!(&bytes[..], b"\x95\x32\x82\x36\xd6\xd0");
        assert_eq!(header_text(b"=?GB18030?B?lTKCNtbQ?="), "𠀀中");
        // GBK's decoder is GB18030's, so a mislabelled word still decodes.
        assert_eq!(header_text(b"=?gbk?B?lTKCNtbQ?="), "𠀀中");
    }

    #[test]
    fn legacy_charsets() {
        assert_eq!(b_word("big5", BIG5, "繁體"), "=?big5?B?wWPF6Q==?=");
        assert_eq!(header_text(b"=?big5?B?wWPF6Q==?="), "繁體");
        assert_eq!(header_text(b"=?ISO-8859-1?Q?Caf=E9?="), "Café");
        assert_eq!(header_text(b"=?iso-8859-2?Q?=A3=F3d=BC?="), "Łódź");
        assert_eq!(header_text(b"=?ISO-8859-15?Q?5_=A4?="), "5 €");
        assert_eq!(
            header_text(b"=?windows-1252?Q?=93hi=94?="),
            "\u{201c}hi\u{201d}"
        );
        assert_eq!(
            b_word("ISO-2022-JP", ISO_2022_JP, "日本語"),
            "=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?="
        );
        assert_eq!(header_text(b"=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?="), "日本語");
        assert_eq!(b_word("EUC-KR", EUC_KR, "한국어"), "=?EUC-KR?B?x9Gxub7u?=");
        assert_eq!(header_text(b"=?EUC-KR?B?x9Gxub7u?="), "한국어");
        assert_eq!(
            b_word("windows-1251", WINDOWS_1251, "Привет"),
            "=?windows-1251?B?z/Do4uXy?="
        );
        assert_eq!(header_text(b"=?windows-1251?B?z/Do4uXy?="), "Привет");
        assert_eq!(header_text(b"=?KOI8-R?Q?=F0=D2=C9=D7=C5=D4?="), "Привет");
    }

    #[test]
    fn language_suffix_is_ignored() {
        assert_eq!(
            header_text(b"=?UTF-8*zh-cn?B?5rWL6K+V6YKu5Lu2?="),
            "测试邮件"
        );
        assert_eq!(header_text(b"=?gb2312*zh-CN?B?suLK1NPKvP4=?="), "测试邮件");
    }

    #[test]
    fn adjacent_words_drop_whitespace() {
        assert_eq!(header_text(b"=?UTF-8?B?5rWL?= =?UTF-8?B?6K+V?="), "测试");
        assert_eq!(
            header_text(b"=?UTF-8?B?5rWL?=\r\n =?UTF-8?B?6K+V?="),
            "测试"
        );
        assert_eq!(
            header_text(b"=?UTF-8?B?5rWL?=\n\t =?UTF-8?B?6K+V?="),
            "测试"
        );
        // Different charsets still join without the space.
        assert_eq!(
            header_text(b"=?GBK?B?suLK1A==?= =?ISO-8859-1?Q?Caf=E9?="),
            "测试Café"
        );
    }

    #[test]
    fn multibyte_character_split_across_words() {
        // 测 is E6 B5 8B: first word carries E6 B5, second 8B then 试.
        assert_eq!(
            header_text(b"=?UTF-8?B?5rU=?= =?UTF-8?B?i+ivlQ==?="),
            "测试"
        );
        // GBK 测试 is B2 E2 CA D4, split after the first byte.
        assert_eq!(header_text(b"=?GBK?B?sg==?=\r\n =?GB2312?B?4srU?="), "测试");
    }

    #[test]
    fn plain_text_spacing_is_kept() {
        assert_eq!(
            header_text(b"Re:  =?UTF-8?B?5rWL6K+V?= \xe4\xbd\xa0\xe5\xa5\xbd  x"),
            "Re:  测试 你好  x"
        );
        assert_eq!(header_text(b"a =?UTF-8?Q?b?= c"), "a b c");
        assert_eq!(header_text(b"Re:=?UTF-8?B?5rWL?="), "Re:测");
    }

    #[test]
    fn folded_plain_text_is_unfolded() {
        assert_eq!(header_text(b"Hello,\r\n world"), "Hello, world");
        assert_eq!(header_text(b"Hello,\n\tworld"), "Hello,\tworld");
        // A line break without continuation whitespace is not a fold.
        assert_eq!(header_text(b"a\r\nb"), "a\r\nb");
    }

    #[test]
    fn malformed_words_stay_literal() {
        for raw in [
            "=?UTF-8?B?5r!WL?=",
            "=?UTF-8?B?5rWL6?=",
            "=?UTF-8?B?5r=WL?=",
            "=?UTF-8?Q?=E6=B?=",
            "=?UTF-8?X?abc?=",
            "=??B?5rWL?=",
            "=?UTF-8?B?5rWL",
            "=?UTF-8?B?5r WL?=",
            "=?",
        ] {
            assert_eq!(header_text(raw.as_bytes()), raw);
        }
        // The whitespace next to a literal word is not eaten.
        assert_eq!(
            header_text(b"=?UTF-8?B?5rWL?= =?UTF-8?B?!?= =?UTF-8?B?6K+V?="),
            "测 =?UTF-8?B?!?= 试"
        );
        // A stray `=?` before a real word does not hide it.
        assert_eq!(header_text(b"=?=?UTF-8?B?5rWL?="), "=?测");
    }

    #[test]
    fn q_text_tolerates_stray_question_marks() {
        assert_eq!(header_text(b"=?UTF-8?Q?Are_you_there??="), "Are you there?");
        assert_eq!(header_text(b"=?UTF-8?Q?a=3F?="), "a?");
    }

    #[test]
    fn hostile_unterminated_words_are_linear() {
        // Quadratic rescanning would take minutes on this in a debug build.
        let mut raw = Vec::new();
        for _ in 0..100_000 {
            raw.extend_from_slice(b"=?utf-8?Q?aaaa?b=?utf-8?B?AAAA?x");
        }
        assert_eq!(header_text(&raw).len(), raw.len());
    }

    #[test]
    fn unknown_charset_stays_literal() {
        assert_eq!(header_text(b"=?x-unknown?B?5rWL?="), "=?x-unknown?B?5rWL?=");
        // Labels encoding_rs maps to its "replacement" encoding are unknown too.
        assert_eq!(
            header_text(b"=?iso-2022-kr?B?5rWL?="),
            "=?iso-2022-kr?B?5rWL?="
        );
        assert_eq!(
            header_text(b"=?utf-7?Q?+ZeVnLIqe-?="),
            "=?utf-7?Q?+ZeVnLIqe-?="
        );
    }

    #[test]
    fn raw_eight_bit_gbk_is_gb18030() {
        let (gbk, _, _) = GBK.encode("会议通知：明天 10 点");
        assert!(std::str::from_utf8(&gbk).is_err());
        assert_eq!(header_text(&gbk), "会议通知：明天 10 点");
        assert_eq!(header_text(b"\xb2\xe2\xca\xd4 x"), "测试 x");
    }

    #[test]
    fn raw_invalid_bytes_become_replacement_chars() {
        // 0xFF is invalid in both UTF-8 and GB18030.
        assert_eq!(header_text(b"\xff\xfe abc"), "\u{fffd}\u{fffd} abc");
        // Latin-1 "Café" ends in a GB18030 lead byte with no trail.
        assert_eq!(header_text(b"Caf\xe9"), "Caf\u{fffd}");
    }

    #[test]
    fn subject_trims_and_defaults() {
        assert_eq!(subject(None), "(no subject)");
        assert_eq!(subject(Some(b"".as_slice())), "(no subject)");
        assert_eq!(subject(Some(b"  \r\n ".as_slice())), "(no subject)");
        assert_eq!(subject(Some(b"=?UTF-8?Q?_?=".as_slice())), "(no subject)");
        assert_eq!(
            subject(Some(b"  =?UTF-8?B?5rWL6K+V6YKu5Lu2?= \r\n".as_slice())),
            "测试邮件"
        );
    }

    #[test]
    fn sender_fields_and_display() {
        let s = sender(
            Some(b"=?UTF-8?B?5byg5LiJ?=".as_slice()),
            Some(b"zhang".as_slice()),
            Some(b"example.com".as_slice()),
        );
        assert_eq!(s.name.as_deref(), Some("张三"));
        assert_eq!(s.address.as_deref(), Some("zhang@example.com"));
        assert_eq!(s.display(), "张三 <zhang@example.com>");
        assert_eq!(s.short(), "张三");

        let s = sender(
            Some(b"Zhang San".as_slice()),
            Some(b"z".as_slice()),
            Some(b"example.com".as_slice()),
        );
        assert_eq!(s.display(), "Zhang San <z@example.com>");

        let s = sender(
            Some(b"  ".as_slice()),
            Some(b"z".as_slice()),
            Some(b"example.com".as_slice()),
        );
        assert_eq!(s.name, None);
        assert_eq!(s.display(), "z@example.com");
        assert_eq!(s.short(), "z@example.com");

        let s = sender(Some(b"Zhang San".as_slice()), Some(b"z".as_slice()), None);
        assert_eq!(s.address, None);
        assert_eq!(s.display(), "Zhang San");
        assert_eq!(s.short(), "Zhang San");

        let s = sender(None, Some(b"".as_slice()), Some(b"example.com".as_slice()));
        assert_eq!(s, Sender::default());
        assert_eq!(s.display(), "(unknown sender)");
        assert_eq!(s.short(), "(unknown sender)");

        let s = sender(
            Some(b"Z@Example.com".as_slice()),
            Some(b"z".as_slice()),
            Some(b"example.com".as_slice()),
        );
        assert_eq!(s.display(), "z@example.com");
    }

    #[test]
    fn controls_escaped_leaves_quotes_alone() {
        assert_eq!(
            controls_escaped("no \"x\" \\ here\r\n\x1b\u{202e}"),
            "no \"x\" \\ here\\r\\n\\x1b\\u{202e}"
        );
    }

    #[test]
    fn one_line_escapes_controls_and_quotes() {
        assert_eq!(
            one_line("a\r\nb\tc\x1b[31md\x7f\u{85}"),
            "a\\r\\nb\\tc\\x1b[31md\\x7f\\u{85}"
        );
        assert_eq!(one_line("say \"hi\" C:\\x"), "say \\\"hi\\\" C:\\\\x");
        assert_eq!(
            one_line("abc\u{202e}txt.exe\u{2066}\u{200f}\u{61c}"),
            "abc\\u{202e}txt.exe\\u{2066}\\u{200f}\\u{61c}"
        );
        assert_eq!(one_line("测试邮件 ok"), "测试邮件 ok");
    }

    #[test]
    fn single_line_turns_controls_into_one_space() {
        assert_eq!(single_line("a\r\nb\tc"), "a b c");
        assert_eq!(single_line("x\x1b[1my\u{85}z"), "x [1my z");
        assert_eq!(single_line("abc\u{202e}gpj.exe"), "abcgpj.exe");
        assert_eq!(single_line("测试 it's"), "测试 it's");
        assert!(!single_line("\r\n\r\n").contains(['\r', '\n']));
    }

    #[test]
    fn markup_escape_entities_and_controls() {
        assert_eq!(markup_escape("<b>&</b>"), "&lt;b&gt;&amp;&lt;/b&gt;");
        // Apostrophes and quotes need no escaping in a body, and `&#39;` is shown
        // literally by GNOME Shell.
        assert_eq!(markup_escape("\"Don't\""), "\"Don't\"");
        assert_eq!(markup_escape("a\r\nb\tc"), "a\nb c");
        assert_eq!(markup_escape("x\x1b[1my\u{85}"), "x\u{fffd}[1my\u{fffd}");
        assert_eq!(markup_escape("abc\u{202e}gpj.exe"), "abcgpj.exe");
        assert_eq!(markup_escape("测试"), "测试");
    }

    #[test]
    fn truncate_at_char_boundaries() {
        assert_eq!(truncate_chars("测试邮件内容", 4), "测试邮…");
        assert_eq!(truncate_chars("测试邮件", 4), "测试邮件");
        assert_eq!(truncate_chars("测试邮件", 10), "测试邮件");
        assert_eq!(truncate_chars("abcdef", 1), "…");
        assert_eq!(truncate_chars("abcdef", 0), "");
        assert_eq!(truncate_chars("", 0), "");
        assert_eq!(truncate_chars("𠀀𠀀𠀀", 2), "𠀀…");
    }
}
