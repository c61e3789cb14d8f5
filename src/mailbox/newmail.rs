//! Which messages are new: the pure decision behind "never miss a message, never show one
//! twice".
//!
//! A watcher keeps a [`Cursor`] per mailbox: the UIDVALIDITY it was taken under and the
//! lowest UID not yet considered. Every wake-up (EXISTS, IDLE refresh, poll) fetches
//! `UID FETCH <next_uid>:*` and hands the result to [`Cursor::advance`], which says what to
//! announce. Working by UID rather than by counting EXISTS is what keeps an EXPUNGE and a new
//! message in the same wake from cancelling each other out.

pub use crate::imap::Seen;

/// Where a watcher stands in one mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub uid_validity: u32,
    /// Every UID below this has been considered (announced or deliberately skipped). Wider
    /// than a UID: after the highest possible UID (2^32 - 1) it is 2^32, so that UID is
    /// not announced again by every later `UID FETCH 4294967295:*`.
    pub next_uid: u64,
}

/// What to do after EXAMINE on a (re)connect, given the cursor we had (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Continue from the existing cursor: what arrived since will be announced.
    Resume(Cursor),
    /// First look at this mailbox, or the UIDs we knew mean nothing now: mail already there
    /// is not announced.
    Baseline { cursor: Cursor, why: Baseline },
}

/// Why a watcher starts from the server's UIDNEXT rather than its own cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// No cursor yet: the first look at this mailbox.
    First,
    /// UIDVALIDITY changed (RFC 3501 §2.3.1.1): the UIDs we knew are void.
    ValidityChanged,
    /// The server reported a UIDNEXT below our cursor under the same UIDVALIDITY, which
    /// RFC 3501 forbids (UIDs only grow): a server restored from a backup, or a broken
    /// one. Resuming would wait for UIDs we think we passed, and announce nothing until
    /// the server caught up; starting from its UIDNEXT announces what comes next.
    UidNextWentBack,
}

impl Start {
    pub fn cursor(self) -> Cursor {
        match self {
            Start::Resume(c) | Start::Baseline { cursor: c, .. } => c,
        }
    }
}

/// Decides how to start on a mailbox: `previous` is what we knew, `uid_validity` and
/// `uid_next` are what EXAMINE reported. `reported` says the server sent UIDNEXT itself;
/// one derived from the highest UID present (servers that omit it) may lawfully be below
/// the cursor, after the newest messages were expunged.
pub fn start(previous: Option<Cursor>, uid_validity: u32, uid_next: u32, reported: bool) -> Start {
    let cursor = Cursor {
        uid_validity,
        next_uid: u64::from(uid_next.max(1)),
    };
    match previous {
        Some(prev) if prev.uid_validity == uid_validity => {
            if reported && cursor.next_uid < prev.next_uid && prev.next_uid <= u64::from(u32::MAX) {
                Start::Baseline {
                    cursor,
                    why: Baseline::UidNextWentBack,
                }
            } else {
                Start::Resume(prev)
            }
        }
        Some(_) => Start::Baseline {
            cursor,
            why: Baseline::ValidityChanged,
        },
        None => Start::Baseline {
            cursor,
            why: Baseline::First,
        },
    }
}

/// Whether a mailbox watched over the shared connection needs a look (EXAMINE and
/// fetch), given what STATUS or a NOTIFY report said (RFC 3501 section 6.3.10, RFC 5465
/// section 5.1): UIDVALIDITY and UIDNEXT, either possibly missing. `cursor` is where the
/// mailbox's announcements stand; `looked_up_to` is the UIDNEXT the last look saw, which
/// can be above the cursor when the newest mail was expunged before it was fetched (so
/// that mailbox is not looked at again and again for nothing).
///
/// A report without UIDNEXT, a different UIDVALIDITY, a UIDNEXT that went back, or no
/// cursor at all: look. Otherwise only a UIDNEXT past both.
pub fn needs_look(
    cursor: Option<Cursor>,
    looked_up_to: u64,
    uid_validity: Option<u32>,
    uid_next: Option<u32>,
) -> bool {
    let (Some(cursor), Some(uid_next)) = (cursor, uid_next) else {
        return true;
    };
    if uid_validity.is_some_and(|v| v != cursor.uid_validity) {
        return true;
    }
    let uid_next = u64::from(uid_next);
    uid_next < cursor.next_uid.min(u64::from(u32::MAX))
        || uid_next > cursor.next_uid.max(looked_up_to)
}

/// Splits a `UID FETCH next:* (UID FLAGS)` answer into pieces, in ascending UID order, each
/// holding at most `max_unseen` unread messages (and any read ones among them), so that
/// each piece's headers are one bounded fetch and the cursor can be saved after each.
/// [`Cursor::advance`] on each piece in turn gives what it gives on the whole answer.
pub fn pieces(fetched: &[Seen], max_unseen: usize) -> Vec<Vec<Seen>> {
    let mut sorted = fetched.to_vec();
    // Seen-first within a UID, as `advance` wants it.
    sorted.sort_by_key(|m| (m.uid, !m.seen));
    let mut pieces = vec![Vec::new()];
    let mut unseen = 0;
    for m in sorted {
        let last = pieces.last_mut().expect("never empty");
        let repeat = last.last().is_some_and(|p: &Seen| p.uid == m.uid);
        if !m.seen && !repeat && unseen == max_unseen.max(1) {
            pieces.push(Vec::new());
            unseen = 0;
        }
        if !m.seen && !repeat {
            unseen += 1;
        }
        pieces.last_mut().expect("never empty").push(m);
    }
    pieces.retain(|p| !p.is_empty());
    pieces
}

impl Cursor {
    /// Moves the cursor past `highest`, the highest UID in the mailbox: after a re-baseline
    /// on a UIDNEXT that went back, mail still there must not come back as new.
    pub fn pass(&mut self, highest: u32) {
        self.next_uid = self.next_uid.max(u64::from(highest) + 1);
    }

    /// The UID set to fetch on a wake-up.
    pub fn fetch_range(&self) -> String {
        // Past the last possible UID there is nothing new to ask for; asking for the last
        // one keeps the command valid and `advance` drops the answer.
        format!("{}:*", self.next_uid.min(u64::from(u32::MAX)))
    }

    /// Takes a `UID FETCH next:*` answer and returns the UIDs to announce, in ascending
    /// order, moving the cursor past everything it saw.
    ///
    /// `N:*` always includes the highest UID in the mailbox even when it is below N (RFC 3501
    /// §6.4.8: `*` is the largest UID in use), so anything below the cursor is old news and is
    /// dropped. A message already `\Seen` advances the cursor but is not announced. Duplicates
    /// in one answer are announced once.
    pub fn advance(&mut self, fetched: &[Seen]) -> Vec<u32> {
        let mut fresh: Vec<Seen> = fetched
            .iter()
            .copied()
            .filter(|m| u64::from(m.uid) >= self.next_uid)
            .collect();
        // One UID reported twice (its FETCH and a flag update) counts as seen if either
        // report says so: sorted seen-first, the dedup keeps that one.
        fresh.sort_by_key(|m| (m.uid, !m.seen));
        fresh.dedup_by_key(|m| m.uid);
        if let Some(last) = fresh.last() {
            self.next_uid = u64::from(last.uid) + 1;
        }
        fresh
            .into_iter()
            .filter(|m| !m.seen)
            .map(|m| m.uid)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_answer_calls_for_a_look_only_when_something_may_be_new() {
        let c = Cursor {
            uid_validity: 7,
            next_uid: 10,
        };
        // Nothing new.
        assert!(!needs_look(Some(c), 0, Some(7), Some(10)));
        assert!(!needs_look(Some(c), 10, None, Some(10)));
        // New mail.
        assert!(needs_look(Some(c), 0, Some(7), Some(11)));
        // The newest mail was expunged before it was fetched: not looked at again...
        assert!(!needs_look(Some(c), 12, Some(7), Some(12)));
        // ...until more comes.
        assert!(needs_look(Some(c), 12, Some(7), Some(13)));
        // UIDVALIDITY changed, UIDNEXT went back, no UIDNEXT, no cursor: look.
        assert!(needs_look(Some(c), 0, Some(8), Some(10)));
        assert!(needs_look(Some(c), 0, Some(7), Some(9)));
        assert!(needs_look(Some(c), 0, Some(7), None));
        assert!(needs_look(None, 0, Some(7), Some(10)));
        // Past the last UID: the cursor is 2^32 and UIDNEXT cannot follow it.
        let end = Cursor {
            uid_validity: 7,
            next_uid: 1 << 32,
        };
        assert!(!needs_look(Some(end), 0, Some(7), Some(u32::MAX)));
    }

    fn unseen(uid: u32) -> Seen {
        Seen { uid, seen: false }
    }

    #[test]
    fn first_start_baselines_without_announcing() {
        let s = start(None, 7, 42, true);
        assert_eq!(
            s,
            Start::Baseline {
                cursor: Cursor {
                    uid_validity: 7,
                    next_uid: 42
                },
                why: Baseline::First
            }
        );
    }

    #[test]
    fn reconnect_resumes_from_the_old_cursor() {
        let prev = Cursor {
            uid_validity: 7,
            next_uid: 40,
        };
        // Two messages arrived while disconnected: UIDNEXT moved to 42 but we resume at 40,
        // so they get fetched and announced.
        assert_eq!(start(Some(prev), 7, 42, true), Start::Resume(prev));
    }

    #[test]
    fn changed_uidvalidity_rebaselines() {
        let prev = Cursor {
            uid_validity: 7,
            next_uid: 40,
        };
        let s = start(Some(prev), 8, 3, true);
        assert_eq!(
            s,
            Start::Baseline {
                cursor: Cursor {
                    uid_validity: 8,
                    next_uid: 3
                },
                why: Baseline::ValidityChanged
            }
        );
    }

    #[test]
    fn uidnext_below_the_cursor_rebaselines_when_the_server_said_so() {
        let prev = Cursor {
            uid_validity: 7,
            next_uid: 40,
        };
        assert_eq!(
            start(Some(prev), 7, 12, true),
            Start::Baseline {
                cursor: Cursor {
                    uid_validity: 7,
                    next_uid: 12
                },
                why: Baseline::UidNextWentBack
            }
        );
        // Derived from the highest UID (no UIDNEXT): the newest may have been expunged.
        assert_eq!(start(Some(prev), 7, 12, false), Start::Resume(prev));
        assert_eq!(start(Some(prev), 7, 40, true), Start::Resume(prev));
    }

    #[test]
    fn pieces_bound_the_unseen_and_keep_duplicates_together() {
        let all: Vec<Seen> = (1..=7)
            .map(|uid| Seen {
                uid,
                seen: uid == 3,
            })
            .chain([Seen { uid: 2, seen: true }])
            .collect();
        let p = pieces(&all, 2);
        let uids: Vec<Vec<(u32, bool)>> = p
            .iter()
            .map(|p| p.iter().map(|m| (m.uid, m.seen)).collect())
            .collect();
        assert_eq!(
            uids,
            // UID 2 is read (reported both ways: seen wins), 3 is read.
            vec![
                vec![(1, false), (2, true), (2, false), (3, true), (4, false)],
                vec![(5, false), (6, false)],
                vec![(7, false)],
            ]
        );
        // Piece by piece, the cursor announces what the whole answer would.
        let mut whole = Cursor {
            uid_validity: 1,
            next_uid: 1,
        };
        let mut stepwise = whole;
        let expected = whole.advance(&all);
        let got: Vec<u32> = p.iter().flat_map(|p| stepwise.advance(p)).collect();
        assert_eq!(got, expected);
        assert_eq!(stepwise, whole);
        assert!(pieces(&[], 200).is_empty());
    }

    #[test]
    fn empty_mailbox_without_uidnext_starts_at_one() {
        assert_eq!(start(None, 1, 0, false).cursor().next_uid, 1);
    }

    #[test]
    fn star_returns_last_old_message_which_is_dropped() {
        let mut c = Cursor {
            uid_validity: 1,
            next_uid: 11,
        };
        assert_eq!(c.advance(&[unseen(10)]), Vec::<u32>::new());
        assert_eq!(c.next_uid, 11);
        assert_eq!(c.fetch_range(), "11:*");
    }

    #[test]
    fn new_messages_are_announced_once_in_order() {
        let mut c = Cursor {
            uid_validity: 1,
            next_uid: 11,
        };
        assert_eq!(
            c.advance(&[unseen(12), unseen(11), unseen(12)]),
            vec![11, 12]
        );
        assert_eq!(c.next_uid, 13);
        // The same answer again (a spurious wake) announces nothing.
        assert_eq!(c.advance(&[unseen(11), unseen(12)]), Vec::<u32>::new());
    }

    #[test]
    fn seen_messages_advance_but_are_not_announced() {
        let mut c = Cursor {
            uid_validity: 1,
            next_uid: 5,
        };
        let got = c.advance(&[
            Seen { uid: 5, seen: true },
            unseen(6),
            Seen { uid: 7, seen: true },
        ]);
        assert_eq!(got, vec![6]);
        assert_eq!(c.next_uid, 8);
    }

    #[test]
    fn expunge_and_new_mail_in_one_wake_still_announces() {
        // EXISTS stayed at 3 (one expunged, one arrived): counting would miss it, UIDs do not.
        let mut c = Cursor {
            uid_validity: 1,
            next_uid: 4,
        };
        assert_eq!(c.advance(&[unseen(4)]), vec![4]);
    }

    #[test]
    fn gaps_in_uids_are_fine() {
        let mut c = Cursor {
            uid_validity: 1,
            next_uid: 4,
        };
        assert_eq!(c.advance(&[unseen(9), unseen(20)]), vec![9, 20]);
        assert_eq!(c.next_uid, 21);
    }

    #[test]
    fn max_uid_does_not_overflow() {
        let mut c = Cursor {
            uid_validity: 1,
            next_uid: u64::from(u32::MAX),
        };
        assert_eq!(c.advance(&[unseen(u32::MAX)]), vec![u32::MAX]);
        assert_eq!(c.next_uid, 1 << 32);
        assert_eq!(c.fetch_range(), "4294967295:*");
    }

    // Found by fuzz/fuzz_targets/newmail.rs (fuzz/README.md, known bug `uid-max`).
    #[test]
    fn max_uid_is_announced_only_once() {
        let mut c = Cursor {
            uid_validity: 1,
            next_uid: u64::from(u32::MAX),
        };
        assert_eq!(c.advance(&[unseen(u32::MAX)]), vec![u32::MAX]);
        // `4294967295:*` returns it again on every later wake: old news by then.
        assert_eq!(c.advance(&[unseen(u32::MAX)]), Vec::<u32>::new());
        assert_eq!(c.advance(&[unseen(u32::MAX)]), Vec::<u32>::new());
    }

    // Found by fuzz/fuzz_targets/newmail.rs (fuzz/README.md, known bug `seen-dup`).
    #[test]
    fn a_message_reported_seen_is_not_announced_whatever_the_order() {
        // The same UID twice in one answer, e.g. its FETCH and then an unsolicited flag
        // update from another client that just read it.
        for answer in [
            [unseen(5), Seen { uid: 5, seen: true }],
            [Seen { uid: 5, seen: true }, unseen(5)],
        ] {
            let mut c = Cursor {
                uid_validity: 1,
                next_uid: 5,
            };
            assert_eq!(c.advance(&answer), Vec::<u32>::new(), "{answer:?}");
            assert_eq!(c.next_uid, 6);
        }
    }

    /// Review finding: a UIDNEXT below the cursor re-baselines at the server's UIDNEXT, and
    /// the watcher's next check fetches `UIDNEXT:*`. When the low UIDNEXT is stale or wrong
    /// (a broken server, or a hostile one sending `* OK [UIDNEXT 1]`) while the messages
    /// above it still exist, every unread one of them, already announced, is announced
    /// again: the whole unread mailbox for UIDNEXT 1. The log line even says "mail already
    /// there is not announced". Messages present at the re-baseline (here UIDs 10..49,
    /// announced in the previous session) must not come back.
    #[test]
    fn uidnext_went_back_does_not_announce_existing_mail_again() {
        let prev = Cursor {
            uid_validity: 7,
            next_uid: 50,
        };
        let mut cursor = start(Some(prev), 7, 10, true).cursor();
        // The watcher moves a UIDNEXT-went-back baseline past the highest UID present.
        cursor.pass(49);
        // What `UID FETCH 10:* (UID FLAGS)` returns on the next wake: the old unread mail.
        let present: Vec<Seen> = (10..50).map(unseen).collect();
        let again = cursor.advance(&present);
        assert!(again.is_empty(), "announced again: {again:?}");
    }
}
