//! How deep the server's parenthesised lists go, tracked over the raw bytes as they are
//! read, so that a response nested too deeply is refused before it reaches the parser.
//!
//! Why: the `imap` crate parses with imap-proto, whose grammar recurses once per nesting
//! level (`body`, `body_extension`: `((((...`) with no limit. A server that sends a few
//! hundred thousand `(` in one answer (well within the 16 MiB answer bound) overflows the
//! watcher thread's stack, and a stack overflow aborts the whole process: one broken or
//! hostile server would take every account's notifications down. Real responses nest a
//! few levels (a BODYSTRUCTURE of deeply nested MIME parts maybe twenty), so
//! [`MAX_DEPTH`] costs nothing legitimate.
//!
//! The lexer knows just enough IMAP syntax to count honestly: parentheses inside quoted
//! strings and literals (`{n}` CRLF and n bytes) are data, and a line end outside both
//! ends the response, so the count starts again at zero. Status responses (`* OK`, `* NO`,
//! `* BAD`, `* BYE`, `* PREAUTH`, tagged `OK`/`NO`/`BAD`, `+` continuations) end in free
//! text that the parser reads as characters up to the line end: there `{n}` is no literal
//! and parentheses are no lists, so the rest of such a line is skipped. (Treating `{n}` in
//! that text as a literal would let a server hide a deep list from the count behind
//! `* OK {99999999}`.) Pure: fed bytes, it answers.

/// Deepest list nesting accepted. Measured with imap-proto 0.16.7 in a thread with a 2 MiB
/// stack (Rust's default): a debug build overflows at about 650 levels (~3 KiB per
/// level), a release build at about 5,500 (~0.4 KiB), so 100 stays far inside either.
pub const MAX_DEPTH: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The start of a response line: its first two words, to tell status responses apart.
    Head(Head),
    /// The free text of a status response, up to the line end.
    StatusText,
    Normal,
    Quoted,
    QuotedEscape,
    /// Digits of a literal's length: `{123` so far.
    LiteralLength(u64),
    /// After the closing `}`: the CRLF before the literal's bytes.
    LiteralStart(u64),
    /// Bytes of a literal still to come.
    Literal(u64),
}

/// The first bytes of a line, up to the end of its second word (`* OK`, `a12 NO`, `* 12`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    bytes: [u8; HEAD_MAX],
    len: u8,
}

/// Enough for a tag and `PREAUTH`; a longer head is no status response of ours to skip.
const HEAD_MAX: usize = 24;

impl Head {
    const EMPTY: Head = Head {
        bytes: [0; HEAD_MAX],
        len: 0,
    };

    /// Whether the line is a status response (or a continuation request), whose text the
    /// parser does not look into.
    fn is_status(&self) -> bool {
        let head = &self.bytes[..usize::from(self.len)];
        if head.first() == Some(&b'+') {
            return true;
        }
        let second = head.split(|&b| b == b' ').nth(1).unwrap_or_default();
        ["OK", "NO", "BAD", "BYE", "PREAUTH"]
            .iter()
            .any(|w| second.eq_ignore_ascii_case(w.as_bytes()))
    }
}

#[derive(Debug, Clone)]
pub struct Nesting {
    state: State,
    depth: u32,
}

/// The answer nests deeper than [`MAX_DEPTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep;

impl Default for Nesting {
    fn default() -> Self {
        Nesting {
            state: State::Head(Head::EMPTY),
            depth: 0,
        }
    }
}

impl Nesting {
    /// Takes the next bytes the server sent.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), TooDeep> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            i += 1;
            self.state = match self.state {
                State::Head(mut head) => {
                    let spaces = head.bytes[..usize::from(head.len)]
                        .iter()
                        .filter(|&&c| c == b' ')
                        .count();
                    let ends = matches!(b, b'(' | b'{' | b'"' | b'[' | b'\r' | b'\n')
                        || (b == b' ' && spaces == 1)
                        || usize::from(head.len) == HEAD_MAX;
                    if !ends {
                        head.bytes[usize::from(head.len)] = b;
                        head.len += 1;
                        State::Head(head)
                    } else if head.is_status() {
                        // The delimiter is part of the skipped text; a line end ends it.
                        if b == b'\n' {
                            State::Head(Head::EMPTY)
                        } else {
                            State::StatusText
                        }
                    } else {
                        // Not a status line: the head held nothing that counts, so the
                        // delimiter is the first byte for the ordinary rules.
                        i -= 1;
                        State::Normal
                    }
                }
                State::StatusText => match b {
                    b'\n' => State::Head(Head::EMPTY),
                    _ => State::StatusText,
                },
                State::Normal => match b {
                    b'(' => {
                        self.depth += 1;
                        if self.depth > MAX_DEPTH {
                            return Err(TooDeep);
                        }
                        State::Normal
                    }
                    b')' => {
                        self.depth = self.depth.saturating_sub(1);
                        State::Normal
                    }
                    b'"' => State::Quoted,
                    b'{' => State::LiteralLength(0),
                    b'\n' => {
                        // End of the response (or of a garbled one): start over.
                        self.depth = 0;
                        State::Head(Head::EMPTY)
                    }
                    _ => State::Normal,
                },
                State::Quoted => match b {
                    b'\\' => State::QuotedEscape,
                    b'"' => State::Normal,
                    // A quoted string cannot hold a line end; the response is over.
                    b'\n' => {
                        self.depth = 0;
                        State::Head(Head::EMPTY)
                    }
                    _ => State::Quoted,
                },
                State::QuotedEscape => State::Quoted,
                State::LiteralLength(n) => match b {
                    b'0'..=b'9' => State::LiteralLength(
                        n.saturating_mul(10).saturating_add(u64::from(b - b'0')),
                    ),
                    // LITERAL+ / LITERAL- (RFC 7888) in case a server echoes one.
                    b'+' | b'-' => State::LiteralLength(n),
                    b'}' => State::LiteralStart(n),
                    // Not a literal after all: an ordinary `{` in text.
                    b'\n' => {
                        self.depth = 0;
                        State::Head(Head::EMPTY)
                    }
                    _ => State::Normal,
                },
                State::LiteralStart(n) => match b {
                    b'\r' => State::LiteralStart(n),
                    b'\n' if n == 0 => State::Normal,
                    b'\n' => State::Literal(n),
                    // Not a literal after all; this byte gets the ordinary rules.
                    _ => {
                        i -= 1;
                        State::Normal
                    }
                },
                State::Literal(n) => {
                    // Skip the literal's bytes in one step.
                    // try_from: on a 32-bit target a length past usize must not wrap to 0.
                    let take = usize::try_from(n)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - i + 1);
                    i += take - 1;
                    let left = n - take as u64;
                    if left == 0 {
                        State::Normal
                    } else {
                        State::Literal(left)
                    }
                }
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deepest_ok(input: &[u8]) -> Result<(), TooDeep> {
        Nesting::default().feed(input)
    }

    fn open(n: u32) -> Vec<u8> {
        vec![b'('; n as usize]
    }

    #[test]
    fn real_responses_pass() {
        let fetch =
            b"* 12 FETCH (UID 4711 FLAGS (\\Seen) ENVELOPE (\"Mon, 1 Jan 2024 00:00:00 +0000\" \
\"hi (there)\" ((\"Zhang\" NIL \"z\" \"example.com\")) NIL NIL NIL NIL NIL NIL \"<id@x>\"))\r\n";
        assert_eq!(deepest_ok(fetch), Ok(()));
        let mut n = Nesting::default();
        for _ in 0..10_000 {
            n.feed(fetch).unwrap();
        }
        assert_eq!(n.depth, 0, "balanced answers leave nothing behind");
    }

    #[test]
    fn too_deep_is_refused_even_split_over_reads() {
        let mut n = Nesting::default();
        let mut bytes = b"* 1 FETCH (BODYSTRUCTURE ".to_vec();
        bytes.extend(open(MAX_DEPTH));
        let (a, b) = bytes.split_at(17);
        assert_eq!(n.feed(a), Ok(()));
        assert_eq!(n.feed(b), Err(TooDeep));
        assert_eq!(deepest_ok(&open(MAX_DEPTH)), Ok(()));
        assert_eq!(deepest_ok(&open(MAX_DEPTH + 1)), Err(TooDeep));
    }

    #[test]
    fn parentheses_in_strings_and_literals_are_data() {
        let mut quoted = b"* 1 FETCH (ENVELOPE (\"".to_vec();
        quoted.extend(open(1000));
        quoted.extend(b"\\\" still quoted ((((\" NIL))\r\n");
        assert_eq!(deepest_ok(&quoted), Ok(()));

        let body = open(5000);
        let mut literal = format!("* 1 FETCH (BODY[] {{{}}}\r\n", body.len()).into_bytes();
        literal.extend(&body);
        literal.extend(b")\r\n");
        // Split inside the literal, and byte by byte, to test the skipping across reads.
        let mut n = Nesting::default();
        for chunk in literal.chunks(7) {
            n.feed(chunk).unwrap();
        }
        assert_eq!(n.depth, 0);
        let mut n = Nesting::default();
        for b in &literal {
            n.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(n.depth, 0);
        // And after the literal, parentheses count again.
        let mut after = literal.clone();
        after.extend(open(MAX_DEPTH + 1));
        assert_eq!(deepest_ok(&after), Err(TooDeep));
    }

    /// The reviewer's bypass: `{n}` in a status response's text is no literal (the parser
    /// reads that text up to the line end), so it must not hide what follows from the count.
    #[test]
    fn braces_in_status_text_are_no_literal() {
        for status in [
            &b"* OK x {99999999}\r\n"[..],
            b"* NO [ALERT] {99999999}\r\n",
            b"a7 BAD {99999999}\r\n",
            b"+ {99999999}\r\n",
            b"* bye {5}\r\n",
        ] {
            let mut bytes = status.to_vec();
            bytes.extend(b"* 1 FETCH (ENVELOPE ");
            bytes.extend(open(MAX_DEPTH + 1));
            assert_eq!(
                deepest_ok(&bytes),
                Err(TooDeep),
                "{:?}",
                String::from_utf8_lossy(status)
            );
        }
        // Parentheses in status text are no lists either (the parser does not recurse).
        let mut text = b"* OK ".to_vec();
        text.extend(open(1000));
        text.extend(b"\r\n");
        assert_eq!(deepest_ok(&text), Ok(()));
        // But a FETCH is no status line, whatever its number.
        let mut fetch = b"* 3 FETCH ".to_vec();
        fetch.extend(open(MAX_DEPTH + 1));
        assert_eq!(deepest_ok(&fetch), Err(TooDeep));
        // Nor is a tagged line whose second word only starts like one.
        let mut odd = b"a1 OKAY ".to_vec();
        odd.extend(open(MAX_DEPTH + 1));
        assert_eq!(deepest_ok(&odd), Err(TooDeep));
    }

    #[test]
    fn a_line_end_starts_over() {
        let mut n = Nesting::default();
        for _ in 0..1000 {
            // Unbalanced garbage, one line at a time, never accumulates.
            n.feed(b"* garbage ((((((\r\n").unwrap();
        }
        assert_eq!(n.depth, 0);
        // A brace that is not a literal does not swallow what follows.
        n.feed(b"* OK {not a literal\r\n").unwrap();
        assert_eq!(n.feed(&open(MAX_DEPTH + 1)), Err(TooDeep));
    }
}
