//! The tolerant layer between the socket and the `imap` crate (`mailpushd::imap::tolerant`), over
//! a conversation: client writes and server reads, in the order the input gives them.
//!
//! Input: one byte for the chunk size (1–255), then segments separated by NUL bytes:
//! - `>bytes`: the client writes `bytes` (a line ending in CRLF is written as the line, then
//!   the CRLF, as the crate does);
//! - `!k`: the client writes the canned command `k % 8` (EXAMINE, UID FETCH, UID SEARCH,
//!   NOOP, IDLE, DONE, CAPABILITY, LOGIN), with the next tag `a1`, `a2`, ...;
//! - `?k`: the server sends the canned fragment `k % n` (realistic responses, some tagged
//!   with the last canned command's tag, and pieces of them);
//! - anything else: the server sends these bytes.
//!
//! Consecutive server segments make one read. The conversation runs twice: each read fed
//! whole, and cut into chunks of the chunk size (output drained in reads of that size).
//!
//! Invariants:
//! 1. the output, cut with `tolerant::frame`, is whole responses only, and each parses with
//!    `imap_proto::parser::parse_response` consuming exactly it (alone, and at the front of
//!    the rest of the output, as the crate reads it);
//! 2. output, notes, wakes and write verdicts do not depend on where reads are cut;
//! 3. no output without input: in total at most 2 × the bytes read + 128 per line read,
//!    and a write hands on nothing but a held tagged answer;
//! 4. a write is swallowed exactly when `swallows()` said so before it; after the server
//!    ends IDLE (`Note::IdleEndedByServer`, with a wake) the IDLE's tagged answer is held:
//!    writes are swallowed until a line (the DONE) is complete, and that write hands on
//!    exactly that tagged answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailpushd::imap::tolerant::{frame, Note, Tolerant, Write};

/// Canned client commands (the tag is prepended, but not to DONE).
const COMMANDS: [&str; 8] = [
    "EXAMINE INBOX",
    "UID FETCH 1:* (UID FLAGS)",
    "UID SEARCH UNSEEN",
    "NOOP",
    "IDLE",
    "DONE",
    "CAPABILITY",
    "LOGIN \"me\" \"secret\"",
];

/// Canned server fragments; `@` stands for the tag of the last canned command.
const FRAGMENTS: [&[u8]; 40] = [
    b"* OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS] Dovecot ready.\r\n",
    b"* CAPABILITY IMAP4rev1 IDLE\r\n",
    b"* 3 EXISTS\r\n",
    b"* 0 RECENT\r\n",
    b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n",
    b"* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n",
    b"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n",
    b"* OK [UIDNEXT 4711] Predicted next UID\r\n",
    b"* OK [HIGHESTMODSEQ 5]\r\n",
    b"* NO Disk is 98% full, please delete unnecessary data\r\n",
    b"* BAD  odd\r\n",
    b"* BYE going away\r\n",
    b"+ idling\r\n",
    b"+\r\n",
    b"* 1 FETCH (UID 5 FLAGS (\\Seen))\r\n",
    b"* 2 FETCH (UID 6 FLAGS ())\r\n",
    b"* 1 FETCH (UID 7 ENVELOPE (NIL \"s\" ((\"undisclosed-recipients\" NIL \"\\\"undisclosed-recipients\\\"\" NIL )) NIL NIL NIL NIL NIL NIL NIL))\r\n",
    b"* 1 FETCH (UID 5 FLAGS (\\Seen) BODY[HEADER.FIELDS (FROM)] {11}\r\nFrom: a@b\r\n)\r\n",
    b"* 2 FETCH (UID 8 BODY[] {5}\r\n(((\r\n)\r\n",
    b"* SEARCH 1 2 3\r\n",
    b"* SEARCH\r\n",
    b"* 2 EXPUNGE\r\n",
    b"* 4 EXISTS\n",
    b"* STATUS INBOX (MESSAGES 3)\r\n",
    b"* LIST (\\HasNoChildren) \"/\" INBOX\r\n",
    b"@ OK done\r\n",
    b"@ OK [READ-ONLY] EXAMINE completed\r\n",
    b"@ NO nope\r\n",
    b"@ BAD no idle\r\n",
    b"@ OK IDLE terminated\r\n",
    b"@ OK \xe5\xae\x8c\xe6\x88\x90  \r\n",
    b"@ (((\r\n",
    b"* 1 FETCH (",
    b"UID 9 ",
    b"FLAGS (\\Seen) ",
    b"BODY[] {3}\r\n",
    b" )\r\n",
    b"\"a  ( b )\"",
    b"\r\n",
    b"\n",
];

enum Step {
    Write(Vec<u8>),
    Read(Vec<u8>),
}

fn steps(data: &[u8]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut tag = String::from("a0");
    let mut n = 0u32;
    for segment in data.split(|&b| b == 0) {
        let write = match segment {
            [b'>', rest @ ..] => Some(rest.to_vec()),
            [b'!', k, ..] => {
                let command = COMMANDS[usize::from(*k) % COMMANDS.len()];
                if command == "DONE" {
                    Some(b"DONE\r\n".to_vec())
                } else {
                    n += 1;
                    tag = format!("a{n}");
                    Some(format!("{tag} {command}\r\n").into_bytes())
                }
            }
            _ => None,
        };
        if let Some(bytes) = write {
            steps.push(Step::Write(bytes));
            continue;
        }
        let read = match segment {
            [b'?', k, ..] => {
                let fragment = FRAGMENTS[usize::from(*k) % FRAGMENTS.len()];
                let mut bytes = Vec::new();
                for &b in fragment {
                    if b == b'@' {
                        bytes.extend_from_slice(tag.as_bytes());
                    } else {
                        bytes.push(b);
                    }
                }
                bytes
            }
            _ => segment.to_vec(),
        };
        match steps.last_mut() {
            Some(Step::Read(bytes)) => bytes.extend(read),
            _ => steps.push(Step::Read(read)),
        }
    }
    steps
}

/// What one step did, for comparing the two runs.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    writes: Vec<Write>,
    output: Vec<u8>,
    notes: Vec<Note>,
    wake: bool,
    swallows: bool,
}

/// The whole conversation through one layer; `chunk` cuts reads (and drains output) in
/// pieces of that size, `None` feeds and drains them whole.
fn run(steps: &[Step], chunk: Option<usize>) -> Vec<Outcome> {
    let mut t = Tolerant::default();
    let mut outcomes = Vec::with_capacity(steps.len());
    // The line being sent (what went to the server), and the tag and verb of the last
    // complete one that was a command (a DONE, or a line without a tag, is none).
    let mut sending = Vec::new();
    let mut last_command: Option<(Vec<u8>, Vec<u8>)> = None;
    // The IDLE tag whose tagged answer the layer holds until the DONE.
    let mut held: Option<Vec<u8>> = None;
    for step in steps {
        let mut writes = Vec::new();
        // The tag of the held answer a swallowed line released in this step.
        let mut released: Option<Vec<u8>> = None;
        match step {
            Step::Write(bytes) => {
                let pieces: Vec<&[u8]> = match bytes.strip_suffix(b"\r\n") {
                    Some(line) if !line.is_empty() => vec![line, b"\r\n"],
                    _ => vec![bytes],
                };
                for piece in pieces {
                    let before = t.swallows();
                    let verdict = t.wrote(piece);
                    assert_eq!(
                        verdict == Write::Swallow,
                        before,
                        "write verdict vs swallows()"
                    );
                    writes.push(verdict);
                    if verdict == Write::Send {
                        assert!(held.is_none(), "sent while an ended IDLE's answer is held");
                        sending.extend_from_slice(piece);
                        if sending.ends_with(b"\n") {
                            let line = std::mem::take(&mut sending);
                            let mut words = line.split(|&b| b == b' ' || b == b'\r' || b == b'\n');
                            if let (Some(tag), Some(verb)) = (words.next(), words.next()) {
                                if !tag.is_empty()
                                    && tag.iter().all(u8::is_ascii_alphanumeric)
                                    && !verb.is_empty()
                                {
                                    last_command = Some((tag.to_vec(), verb.to_vec()));
                                }
                            }
                        }
                    } else if piece.ends_with(b"\n") {
                        released = held.take();
                        // The layer forgets the whole line, also a start of it that was sent
                        // before the server ended IDLE (the crate never reads between the
                        // pieces of a line, so that start is never there in practice).
                        sending.clear();
                    }
                }
            }
            Step::Read(bytes) => match chunk {
                None => t.feed(bytes),
                Some(size) => bytes.chunks(size).for_each(|c| t.feed(c)),
            },
        }
        let mut output = Vec::new();
        let mut buf = vec![0; chunk.unwrap_or(1 << 16)];
        loop {
            let n = t.read(&mut buf);
            if n == 0 {
                break;
            }
            output.extend_from_slice(&buf[..n]);
        }
        assert!(!t.has_output());
        let notes = t.take_notes();
        let wake = t.take_wake();
        let swallows = t.swallows();

        // Invariant 4: the ended IDLE's tagged answer is held until the DONE, then handed on.
        if matches!(step, Step::Write(_)) {
            if let Some(tag) = &released {
                let end = frame(&output).expect("the held answer is a whole response");
                assert_eq!(end, output.len(), "a swallowed DONE hands on one response");
                match imap_proto::parser::parse_response(&output) {
                    Ok((_, imap_proto::Response::Done { tag: t, .. })) => {
                        assert_eq!(t.0.as_bytes(), &tag[..], "the held answer's tag");
                    }
                    other => panic!("the held answer is no tagged response: {other:?}"),
                }
            }
            // Invariant 3: a write hands on nothing but the held answer.
            assert!(
                released.is_some() || output.is_empty(),
                "output on a write: {:?}",
                String::from_utf8_lossy(&output)
            );
        }
        if notes.contains(&Note::IdleEndedByServer) {
            assert!(held.is_none(), "IDLE ended twice");
            assert!(wake, "IDLE ended by the server without a wake");
            let Some((tag, verb)) = &last_command else {
                panic!("IDLE ended before any command");
            };
            assert!(
                verb.eq_ignore_ascii_case(b"IDLE"),
                "IDLE ended, but the last command was {:?}",
                String::from_utf8_lossy(verb)
            );
            held = Some(tag.clone());
        }
        if held.is_some() {
            assert!(
                swallows,
                "an ended IDLE's answer is held but writes are sent"
            );
        }
        outcomes.push(Outcome {
            writes,
            output,
            notes,
            wake,
            swallows,
        });
    }
    outcomes
}

/// Invariant 1: the output is whole responses that parse, alone and in the stream.
fn check_output(output: &[u8]) {
    let mut rest = output;
    while !rest.is_empty() {
        let Some(len) = frame(rest) else {
            panic!(
                "output ends in a partial response: {:?}",
                String::from_utf8_lossy(rest)
            );
        };
        let response = &rest[..len];
        match imap_proto::parser::parse_response(response) {
            Ok((left, _)) if left.is_empty() => {}
            other => panic!(
                "unparseable response handed on: {:?}: {other:?}",
                String::from_utf8_lossy(response)
            ),
        }
        match imap_proto::parser::parse_response(rest) {
            Ok((left, _)) if left.len() == rest.len() - len => {}
            other => panic!(
                "the crate reads {:?} differently in the stream: {other:?}",
                String::from_utf8_lossy(response)
            ),
        }
        rest = &rest[len..];
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    let size = usize::from(size).max(1);
    let steps = steps(rest);
    let whole = run(&steps, None);
    let chunked = run(&steps, Some(size));
    // Invariant 2.
    for (i, (w, c)) in whole.iter().zip(&chunked).enumerate() {
        assert_eq!(w, c, "step {i}: fed whole vs in chunks of {size}");
    }
    let output: Vec<u8> = whole
        .iter()
        .flat_map(|o| o.output.iter().copied())
        .collect();
    check_output(&output);
    // Invariant 3.
    let read: Vec<u8> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Read(b) => Some(b.as_slice()),
            Step::Write(_) => None,
        })
        .flatten()
        .copied()
        .collect();
    let lines = read.iter().filter(|&&b| b == b'\n').count();
    assert!(
        output.len() <= 2 * read.len() + 128 * lines,
        "{} bytes out for {} bytes and {lines} lines read",
        output.len(),
        read.len()
    );
});
