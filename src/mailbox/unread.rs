//! The unread count of a mailbox that a watcher keeps selected, kept current from what
//! the server reports anyway, with no command per change.
//!
//! RFC 3501 section 7.3.1 (EXISTS), 7.4.1 (EXPUNGE), 7.4.2 (FETCH FLAGS, which servers send
//! unsolicited when another client changes a flag) and 7.2.5 (SEARCH). One `SEARCH UNSEEN`
//! after EXAMINE gives the starting point; from then on every change arrives in order on
//! the connection ([`Change`], recorded by src/imap/tolerant.rs beneath the `imap` crate,
//! which drops most of them), and [`Unread::apply`] follows them: new mail counts as
//! unseen until its FLAGS say otherwise, an expunge removes its message, a flag change
//! moves the count. The state is one byte per message (10,000 messages: 10 KB), for at
//! most [`MAX_MESSAGES`]: a mailbox said to hold more (a server's EXISTS is a number it
//! chooses, up to 4,294,967,295) has no count rather than gigabytes of flags. A change
//! that does not fit the model (a sequence number past the end), or expunges that would
//! shift more than [`EXPUNGE_BUDGET`] flags, mark the count lost; the watcher then asks
//! `SEARCH UNSEEN` again.
//!
//! Pure: no I/O, unit-tested here.

pub use crate::imap::Change;

/// Messages the model follows at most (16 MB of flags). Larger mailboxes exist (a Gmail
/// "All Mail" of a few million), larger than this do not: an EXISTS above it is taken as
/// what it says, a mailbox too big to count, and the count is unknown until the mailbox
/// is back under it.
pub const MAX_MESSAGES: usize = 1 << 24;

/// Flags that expunges may shift down, in all, between two `SEARCH UNSEEN` answers (an
/// expunge moves every flag after it: a bulk delete of k messages from n costs k * n).
/// Past it the count is asked for again, one round trip, instead: 65,536 expunges in a
/// mailbox of 16M would otherwise be a terabyte of moves.
const EXPUNGE_BUDGET: usize = 1 << 26;

/// The `\Seen` state of every message of the selected mailbox, by sequence number.
#[derive(Debug, Default, Clone)]
pub struct Unread {
    /// `seen[i]`: message `i + 1` has `\Seen`.
    seen: Vec<bool>,
    /// How many of `seen` are false.
    unseen: usize,
    /// A `SEARCH UNSEEN` answer has been applied.
    known: bool,
    /// A change did not fit since: the count is not to be trusted until the next answer.
    lost: bool,
    /// The last EXISTS said more than [`MAX_MESSAGES`]: nothing is followed (and no
    /// search would help) until an EXISTS says less.
    oversized: bool,
    /// Flags shifted by expunges since the last answer, towards [`EXPUNGE_BUDGET`].
    shifted: usize,
}

impl Unread {
    /// Applies one change, in the order the server sent it.
    pub fn apply(&mut self, change: &Change) {
        if self.oversized && !matches!(change, Change::Exists(_)) {
            // Sequence numbers of a mailbox not followed: nothing to move.
            return;
        }
        match *change {
            Change::Exists(n) => {
                let n = n as usize;
                if n > MAX_MESSAGES {
                    self.seen = Vec::new();
                    self.unseen = 0;
                    self.oversized = true;
                } else if self.oversized {
                    // Which of these messages are unseen is not known: ask again.
                    self.oversized = false;
                    self.seen = vec![false; n];
                    self.unseen = n;
                    self.lost = true;
                } else if n >= self.seen.len() {
                    self.unseen += n - self.seen.len();
                    self.seen.resize(n, false);
                } else {
                    // EXISTS may not shrink the mailbox (RFC 3501 7.3.1): which messages went
                    // is unknown.
                    self.seen.truncate(n);
                    self.recount();
                    self.lost = true;
                }
            }
            Change::Expunge(seq) => match self.index(seq) {
                Some(i) => {
                    self.shifted = self.shifted.saturating_add(self.seen.len() - i);
                    if self.shifted > EXPUNGE_BUDGET {
                        self.lost = true;
                    }
                    if self.lost {
                        // Until the next answer only the number of messages matters (the
                        // answer sets every flag): one fewer, at no cost.
                        self.seen.pop();
                    } else if !self.seen.remove(i) {
                        self.unseen -= 1;
                    }
                }
                None => self.lost = true,
            },
            Change::Flags { seq, seen } => match self.index(seq) {
                Some(i) => {
                    if self.seen[i] != seen {
                        self.seen[i] = seen;
                        if seen {
                            self.unseen -= 1;
                        } else {
                            self.unseen += 1;
                        }
                    }
                }
                None => self.lost = true,
            },
            Change::Unseen(ref seqs) => {
                self.seen.iter_mut().for_each(|s| *s = true);
                self.unseen = 0;
                self.known = true;
                self.lost = false;
                self.shifted = 0;
                for &seq in seqs {
                    match self.index(seq) {
                        Some(i) if self.seen[i] => {
                            self.seen[i] = false;
                            self.unseen += 1;
                        }
                        Some(_) => {}
                        None => self.lost = true,
                    }
                }
            }
        }
    }

    fn index(&self, seq: u32) -> Option<usize> {
        let i = (seq as usize).checked_sub(1)?;
        (i < self.seen.len()).then_some(i)
    }

    fn recount(&mut self) {
        self.unseen = self.seen.iter().filter(|s| !**s).count();
    }

    /// The number of unseen messages, once known and while every change since fitted.
    pub fn count(&self) -> Option<u32> {
        (self.known && !self.lost && !self.oversized)
            .then(|| u32::try_from(self.unseen).unwrap_or(u32::MAX))
    }

    /// Whether a change did not fit (or none was ever known): time for a new
    /// `SEARCH UNSEEN`. Never for a mailbox over [`MAX_MESSAGES`].
    pub fn needs_search(&self) -> bool {
        !self.oversized && (!self.known || self.lost)
    }

    /// Whether the last EXISTS said more than [`MAX_MESSAGES`] (no count, by design).
    pub fn oversized(&self) -> bool {
        self.oversized
    }

    /// Forgets everything: a new mailbox was selected.
    pub fn reset(&mut self) {
        *self = Unread::default();
    }
}

#[cfg(test)]
mod tests {
    use super::Change::*;
    use super::*;

    fn after(changes: &[Change]) -> Unread {
        let mut u = Unread::default();
        for c in changes {
            u.apply(c);
        }
        u
    }

    #[test]
    fn unknown_until_searched() {
        let u = after(&[Exists(3)]);
        assert_eq!(u.count(), None);
        assert!(u.needs_search());
        let u = after(&[Exists(3), Unseen(vec![1, 3])]);
        assert_eq!(u.count(), Some(2));
        assert!(!u.needs_search());
    }

    #[test]
    fn new_mail_counts_until_its_flags_say_seen() {
        let mut u = after(&[Exists(2), Unseen(vec![])]);
        u.apply(&Exists(4));
        assert_eq!(u.count(), Some(2));
        // Delivered already read (a Sieve fileinto of one's own sent mail, say).
        u.apply(&Flags { seq: 4, seen: true });
        assert_eq!(u.count(), Some(1));
    }

    #[test]
    fn read_elsewhere_and_marked_unread_again() {
        let mut u = after(&[Exists(5), Unseen(vec![2, 4, 5])]);
        u.apply(&Flags { seq: 4, seen: true });
        u.apply(&Flags { seq: 4, seen: true });
        assert_eq!(u.count(), Some(2));
        u.apply(&Flags {
            seq: 1,
            seen: false,
        });
        assert_eq!(u.count(), Some(3));
    }

    #[test]
    fn expunges_shift_what_follows() {
        let mut u = after(&[Exists(5), Unseen(vec![2, 5])]);
        // Message 1 (seen) goes: the unseen ones are now 1 and 4.
        u.apply(&Expunge(1));
        assert_eq!(u.count(), Some(2));
        u.apply(&Expunge(4));
        assert_eq!(u.count(), Some(1));
        u.apply(&Flags { seq: 1, seen: true });
        assert_eq!(u.count(), Some(0));
    }

    #[test]
    fn changes_that_do_not_fit_lose_the_count_until_the_next_search() {
        for bad in [Expunge(9), Flags { seq: 0, seen: true }, Exists(1)] {
            let mut u = after(&[Exists(3), Unseen(vec![1])]);
            u.apply(&bad);
            assert_eq!(u.count(), None, "{bad:?}");
            assert!(u.needs_search());
            u.apply(&Unseen(vec![1]));
            assert_eq!(u.count(), Some(1));
        }
    }

    #[test]
    fn a_search_answer_after_an_exists_covers_the_new_ones() {
        // The order on the wire decides: EXISTS then SEARCH (which covers the new message),
        // or SEARCH then EXISTS (new one unseen by default).
        let u = after(&[Exists(2), Unseen(vec![]), Exists(3)]);
        assert_eq!(u.count(), Some(1));
        let u = after(&[Exists(2), Exists(3), Unseen(vec![])]);
        assert_eq!(u.count(), Some(0));
    }

    /// A server's EXISTS is a number it picks: one of 4,294,967,295 costs the count, not
    /// 4 GiB of flags, and no search is asked for (it could not help); back under the
    /// limit, the count is asked for again.
    #[test]
    fn an_absurd_exists_costs_the_count_not_the_memory() {
        let mut u = after(&[Exists(3), Unseen(vec![1])]);
        for change in [
            Exists(u32::MAX),
            Flags {
                seq: 2,
                seen: false,
            },
            Expunge(1),
            Unseen(vec![1, 2]),
        ] {
            u.apply(&change);
            assert_eq!(u.count(), None, "{change:?}");
            assert!(!u.needs_search(), "{change:?}");
            assert!(u.seen.capacity() <= MAX_MESSAGES, "{change:?}");
        }
        u.apply(&Exists(5));
        assert_eq!(u.count(), None);
        assert!(u.needs_search());
        u.apply(&Unseen(vec![2, 5]));
        assert_eq!(u.count(), Some(2));
        let u = after(&[Exists(MAX_MESSAGES as u32), Unseen(vec![])]);
        assert_eq!(u.count(), Some(0));
    }

    /// A bulk expunge from a big mailbox costs a new answer past a budget, not k * n
    /// moves (65,536 expunges of message 1 in a mailbox of 16M: a terabyte), and the count
    /// after the answer is right.
    #[test]
    fn a_bulk_expunge_from_a_big_mailbox_is_bounded() {
        let started = std::time::Instant::now();
        let n = MAX_MESSAGES as u32;
        let mut u = after(&[Exists(n), Unseen(vec![1, 2, n])]);
        for _ in 0..65_536 {
            u.apply(&Expunge(1));
        }
        assert!(u.needs_search());
        assert_eq!(u.seen.len(), MAX_MESSAGES - 65_536);
        u.apply(&Unseen(vec![n - 65_536]));
        assert_eq!(u.count(), Some(1));
        // Small ones stay exact, without asking.
        let mut u = after(&[Exists(10_000), Unseen((1..=10_000).collect())]);
        for _ in 0..5_000 {
            u.apply(&Expunge(1));
        }
        assert_eq!(u.count(), Some(5_000));
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    }

    /// Against a plain list of flags, for random sequences of every kind of change.
    #[test]
    fn agrees_with_a_reference_list() {
        let mut seed = 0x2545_f491_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for _ in 0..200 {
            let mut reference: Vec<bool> = vec![false; (next() % 20) as usize];
            let mut u = after(&[
                Exists(reference.len() as u32),
                Unseen((1..=reference.len() as u32).collect()),
            ]);
            for _ in 0..50 {
                let len = reference.len() as u32;
                match next() % 3 {
                    0 => {
                        let n = len + next() % 3;
                        reference.resize(n as usize, false);
                        u.apply(&Exists(n));
                    }
                    1 if len > 0 => {
                        let seq = 1 + next() % len;
                        reference.remove(seq as usize - 1);
                        u.apply(&Expunge(seq));
                    }
                    _ if len > 0 => {
                        let seq = 1 + next() % len;
                        let seen = next() % 2 == 0;
                        reference[seq as usize - 1] = seen;
                        u.apply(&Flags { seq, seen });
                    }
                    _ => {}
                }
                let want = reference.iter().filter(|s| !**s).count() as u32;
                assert_eq!(u.count(), Some(want));
            }
        }
    }
}
