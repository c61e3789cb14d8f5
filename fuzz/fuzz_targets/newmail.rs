//! The "never miss, never repeat" decision (`mailpushd::mailbox::newmail`) over arbitrary sequences
//! of reconnects (EXAMINE answers) and `UID FETCH next:*` answers.
//!
//! Invariants, within one UIDVALIDITY epoch (a baseline starts a new one):
//! - `advance` never announces a UID below the cursor it was called with;
//! - announced UIDs are strictly ascending, within a call and across calls;
//! - no UID is announced twice;
//! - `next_uid` never decreases, and never drops to 0;
//! - a message the answer reports as `\Seen` is never announced;
//! - only UIDs that were in the answer are announced;
//! - `start` resumes the cursor it was given when UIDVALIDITY is unchanged, and baselines
//!   at `max(UIDNEXT, 1)` otherwise.
#![no_main]

use std::collections::HashSet;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mailpushd::mailbox::newmail::{self, Baseline, Cursor, Seen, Start};

/// A UID in a fetch answer: anywhere, or near the cursor (where the interesting cases are).
#[derive(Debug, Arbitrary)]
enum Uid {
    Absolute(u32),
    Relative(i8),
}

#[derive(Debug, Arbitrary)]
struct Message {
    uid: Uid,
    seen: bool,
}

#[derive(Debug, Arbitrary)]
enum Step {
    /// A wake-up: the answer to `UID FETCH <next_uid>:*`.
    Fetch(Vec<Message>),
    /// A (re)connect: EXAMINE reported these; `forget` drops the cursor first (state lost).
    Reconnect {
        uid_validity: u32,
        uid_next: u32,
        forget: bool,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    /// A cursor from the state file (its `next_uid` is at least 1 there).
    saved: Option<(u32, u32)>,
    uid_validity: u32,
    uid_next: u32,
    steps: Vec<Step>,
}

/// What has been announced in the current UIDVALIDITY epoch.
#[derive(Default)]
struct Epoch {
    announced: HashSet<u32>,
    highest: Option<u32>,
}

fn connect(
    previous: Option<Cursor>,
    uid_validity: u32,
    uid_next: u32,
    epoch: &mut Epoch,
) -> Cursor {
    let s = newmail::start(previous, uid_validity, uid_next, true);
    match (previous, s) {
        (Some(p), Start::Resume(c)) => {
            assert_eq!(p.uid_validity, uid_validity);
            assert_eq!(c, p, "resume must keep the cursor");
        }
        (None, Start::Resume(_)) => panic!("resumed without a cursor"),
        (
            prev,
            Start::Baseline { cursor, why },
        ) => {
            match (prev, why) {
                (None, Baseline::First) => {}
                (Some(p), Baseline::ValidityChanged) => assert_ne!(
                    p.uid_validity, uid_validity,
                    "baselined with unchanged UIDVALIDITY"
                ),
                (Some(p), Baseline::UidNextWentBack) => {
                    assert_eq!(p.uid_validity, uid_validity);
                    assert!(u64::from(uid_next.max(1)) < p.next_uid);
                }
                (prev, why) => panic!("baseline {why:?} with previous {prev:?}"),
            }
            assert_eq!(
                cursor,
                Cursor {
                    uid_validity,
                    next_uid: u64::from(uid_next.max(1))
                }
            );
            // New epoch: old UIDs mean nothing now.
            *epoch = Epoch::default();
        }
    }
    s.cursor()
}

fuzz_target!(|input: Input| {
    let mut epoch = Epoch::default();
    let saved = input.saved.map(|(v, n)| Cursor {
        uid_validity: v,
        next_uid: u64::from(n.max(1)),
    });
    let mut cursor = connect(saved, input.uid_validity, input.uid_next, &mut epoch);

    for step in input.steps {
        match step {
            Step::Reconnect {
                uid_validity,
                uid_next,
                forget,
            } => {
                let previous = (!forget).then_some(cursor);
                cursor = connect(previous, uid_validity, uid_next, &mut epoch);
            }
            Step::Fetch(messages) => {
                let mut answer: Vec<Seen> = messages
                    .iter()
                    .map(|m| Seen {
                        uid: match m.uid {
                            Uid::Absolute(u) => u,
                            Uid::Relative(d) => u32::try_from(
                                cursor.next_uid.saturating_add_signed(i64::from(d)),
                            )
                            .unwrap_or(u32::MAX),
                        },
                        seen: m.seen,
                    })
                    .collect();
                if skip_known("uid-max") {
                    // Known: after UID 4294967295 the cursor cannot move past it.
                    answer.retain(|m| m.uid != u32::MAX);
                }
                let before = cursor;
                let got = cursor.advance(&answer);

                assert_eq!(cursor.uid_validity, before.uid_validity);
                assert!(
                    cursor.next_uid >= before.next_uid,
                    "next_uid went back: {before:?} -> {cursor:?}"
                );
                assert!(cursor.next_uid >= 1);
                assert_eq!(
                    cursor.fetch_range(),
                    format!("{}:*", cursor.next_uid.min(u64::from(u32::MAX)))
                );
                assert!(
                    got.windows(2).all(|w| w[0] < w[1]),
                    "not ascending: {got:?}"
                );
                for &uid in &got {
                    assert!(
                        u64::from(uid) >= before.next_uid,
                        "announced {uid} below cursor {before:?}"
                    );
                    assert!(
                        answer.iter().any(|m| m.uid == uid),
                        "announced {uid}, not in the answer"
                    );
                    // Known: with the same UID twice in one answer, the first report wins.
                    let reports = answer.iter().filter(|m| m.uid == uid);
                    let mut reports = reports.take(if skip_known("seen-dup") {
                        1
                    } else {
                        usize::MAX
                    });
                    assert!(
                        !reports.any(|m| m.seen),
                        "announced {uid}, reported \\Seen in {answer:?}"
                    );
                    assert!(
                        epoch.highest.is_none_or(|h| uid > h),
                        "announced {uid} after {:?}",
                        epoch.highest
                    );
                    assert!(epoch.announced.insert(uid), "announced {uid} twice");
                    epoch.highest = Some(uid);
                }
                // Everything new in the answer was considered: the next fetch starts past it.
                for m in &answer {
                    if u64::from(m.uid) >= before.next_uid {
                        assert!(
                            u64::from(m.uid) < cursor.next_uid,
                            "UID {} seen but cursor stays at {cursor:?}: it will be fetched again",
                            m.uid
                        );
                    }
                }
            }
        }
    }
});

/// Whether the run was asked to step over a known, reported bug (`FUZZ_SKIP_KNOWN`, a comma
/// list of the names in README.md, or `all`), so that fuzzing can go on past it.
fn skip_known(bug: &str) -> bool {
    static LIST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LIST.get_or_init(|| std::env::var("FUZZ_SKIP_KNOWN").unwrap_or_default())
        .split(',')
        .any(|b| b.trim() == bug || b.trim() == "all")
}
