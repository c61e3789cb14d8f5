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
//! ends the response, so the count starts again at zero. Pure: fed bytes, it answers.

/// Deepest list nesting accepted. Measured with imap-proto 0.16.7 in a thread with a 2 MiB
/// stack (Rust's default): a debug build overflows at about 650 levels (~3 KiB per
/// level), a release build at about 5,500 (~0.4 KiB), so 100 stays far inside either.
pub const MAX_DEPTH: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
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
            state: State::Normal,
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
                        State::Normal
                    }
                    _ => State::Normal,
                },
                State::Quoted => match b {
                    b'\\' => State::QuotedEscape,
                    b'"' => State::Normal,
                    // A quoted string cannot hold a line end; the response is over.
                    b'\n' => {
                        self.depth = 0;
                        State::Normal
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
                        State::Normal
                    }
                    _ => State::Normal,
                },
                State::LiteralStart(n) => match b {
                    b'\r' => State::LiteralStart(n),
                    b'\n' if n == 0 => State::Normal,
                    b'\n' => State::Literal(n),
                    _ => State::Normal,
                },
                State::Literal(n) => {
                    // Skip the literal's bytes in one step.
                    let take = (n as usize).min(bytes.len() - i + 1);
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
