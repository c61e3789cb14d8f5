//! Flood control for popups: which new mail gets a popup now, which waits to be summed up.
//!
//! A burst rarely arrives in one IMAP wake. A mailing-list dump, a sync from another
//! client or a server storing a big delivery one message at a time reaches the daemon as
//! a trickle of wakes with one or two messages each (measured: 1,000 messages that Dovecot
//! stored over 14 s came as ~80 wakes), so a per-wake rule still showed ~85 popups. Here the
//! rule is per mailbox and per *window*: within `window` of the first popup, up to
//! `threshold` messages get popups of their own, at once; once a window has more, the
//! rest is held and shown as one summary as soon as the mail pauses for [`QUIET`] or the
//! window ends, whichever is first. A window that ends with mail still coming starts the
//! next one held as well, so a long flood costs one summary per window plus one when it
//! stops; a mailbox that was quiet for a window is back to instant single popups.
//!
//! So ordinary mail is never delayed, a flood is summed up within [`QUIET`] of its last
//! message, and while it lasts it costs one popup per window. Syslog lines
//! and hooks are not held: only popups are. Pure logic; `Outputs` does the showing and the
//! supervisor calls [`Bursts::due`] at [`Bursts::next_due`] (no timer runs while nothing is
//! held, so idling still costs no wakeups).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Held mail is shown once no more has come for this long: a burst is over when the server
/// stops reporting new messages, and its summary should not wait for the window's end.
pub const QUIET: Duration = Duration::from_secs(1);

/// What to do with the new mail of one wake.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<T> {
    /// A popup for each.
    Singles(Vec<T>),
    /// One summary popup now (many in one wake at the start of a window).
    Summary(Held<T>),
    /// Held for the summary at the end of the window.
    Held,
}

impl<T> Decision<T> {
    /// One wake judged on its own: more than `limit` messages are one summary (listing
    /// `keep` of them), fewer a popup each. Flood control off, and catch-up after a
    /// reconnect (against `catch_up_max`), decide this way.
    pub fn alone(mails: Vec<T>, limit: usize, keep: usize) -> Self {
        if mails.len() > limit {
            Decision::Summary(Held::of(mails, keep))
        } else {
            Decision::Singles(mails)
        }
    }
}

/// Mail waiting for (or making up) a summary: the first few to list, and how many in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held<T> {
    pub first: Vec<T>,
    pub total: usize,
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Held {
            first: Vec::new(),
            total: 0,
        }
    }
}

impl<T> Held<T> {
    /// `items`, listing `keep` of them.
    fn of(items: Vec<T>, keep: usize) -> Self {
        let mut held = Held::default();
        held.add(items, keep);
        held
    }

    /// Keeps only `keep` items to list, so a flood of any size is held in bounded memory.
    fn add(&mut self, items: Vec<T>, keep: usize) {
        self.total += items.len();
        let room = keep.saturating_sub(self.first.len());
        self.first.extend(items.into_iter().take(room));
    }
}

struct Window<T> {
    ends: Instant,
    /// When mail was last held (for the [`QUIET`] rule).
    last_held: Instant,
    /// Messages given popups of their own in this window.
    singles: usize,
    /// Summarising: every further message of this window is held.
    flooding: bool,
    held: Held<T>,
}

impl<T> Window<T> {
    /// When what is held is to be shown.
    fn due(&self) -> Instant {
        self.ends.min(self.last_held + QUIET)
    }
}

/// Per-mailbox windows. `K` names a mailbox, `T` is one message.
pub struct Bursts<K, T> {
    window: Duration,
    threshold: usize,
    /// How many held messages a summary lists.
    keep: usize,
    windows: HashMap<K, Window<T>>,
}

impl<K: std::hash::Hash + Eq + Clone, T> Bursts<K, T> {
    /// `window` zero turns flood control off: each wake is judged alone (more than
    /// `threshold` messages in it → one summary).
    pub fn new(window: Duration, threshold: usize, keep: usize) -> Self {
        Bursts {
            window,
            threshold: threshold.max(1),
            keep,
            windows: HashMap::new(),
        }
    }

    /// New settings (a config reload); windows in progress keep their end.
    pub fn reconfigure(&mut self, window: Duration, threshold: usize) {
        self.window = window;
        self.threshold = threshold.max(1);
    }

    /// The new mail of one wake of mailbox `key`.
    pub fn arrived(&mut self, key: &K, mails: Vec<T>, now: Instant) -> Decision<T> {
        if mails.is_empty() {
            return Decision::Singles(mails);
        }
        if self.window.is_zero() {
            return Decision::alone(mails, self.threshold, self.keep);
        }
        let expired = self
            .windows
            .get(key)
            .is_some_and(|w| now >= w.ends && w.held.total == 0);
        if expired {
            self.windows.remove(key);
        }
        let w = self.windows.entry(key.clone()).or_insert_with(|| Window {
            ends: now + self.window,
            last_held: now,
            singles: 0,
            flooding: false,
            held: Held::default(),
        });
        if w.flooding {
            w.held.add(mails, self.keep);
            w.last_held = now;
            Decision::Held
        } else if w.singles + mails.len() <= self.threshold {
            w.singles += mails.len();
            Decision::Singles(mails)
        } else if w.singles == 0 {
            // Many at once in a fresh window: the summary need not wait.
            w.flooding = true;
            Decision::Summary(Held::of(mails, self.keep))
        } else {
            w.flooding = true;
            w.held.add(mails, self.keep);
            w.last_held = now;
            Decision::Held
        }
    }

    /// When the next held summary is due, if any is held.
    pub fn next_due(&self) -> Option<Instant> {
        self.windows
            .values()
            .filter(|w| w.held.total > 0)
            .map(Window::due)
            .min()
    }

    /// The summaries due at `now`. One due at the window's end starts a new window that
    /// keeps holding, as mail is still coming; one due because the mail paused leaves the
    /// window as it is.
    pub fn due(&mut self, now: Instant) -> Vec<(K, Held<T>)> {
        let mut out = Vec::new();
        for (key, w) in &mut self.windows {
            if w.held.total > 0 && now >= w.due() {
                out.push((key.clone(), std::mem::take(&mut w.held)));
                if now >= w.ends {
                    w.ends = now + self.window;
                    w.singles = 0;
                    w.flooding = true;
                }
            }
        }
        // Windows that ended with nothing held are over; forget them so the map only holds
        // mailboxes with recent mail.
        self.windows.retain(|_, w| w.held.total > 0 || now < w.ends);
        out
    }
}

impl<K, T> Bursts<K, T> {
    /// Everything held, due or not (at exit).
    pub fn take_all(&mut self) -> Vec<(K, Held<T>)> {
        self.windows
            .drain()
            .filter(|(_, w)| w.held.total > 0)
            .map(|(k, w)| (k, w.held))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(10);

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn ordinary_mail_gets_popups_at_once() {
        let t0 = Instant::now();
        let mut b = Bursts::new(W, 3, 3);
        assert_eq!(b.arrived(&"in", vec![1], t0), Decision::Singles(vec![1]));
        assert_eq!(
            b.arrived(&"in", vec![2, 3], ms(t0, 500)),
            Decision::Singles(vec![2, 3])
        );
        // Another mailbox has its own window.
        assert_eq!(
            b.arrived(&"other", vec![9], ms(t0, 600)),
            Decision::Singles(vec![9])
        );
        assert_eq!(b.next_due(), None, "nothing held, no timer");
        // After the window, the count starts again.
        assert_eq!(
            b.arrived(&"in", vec![4], ms(t0, 10_000)),
            Decision::Singles(vec![4])
        );
    }

    #[test]
    fn a_trickle_beyond_the_threshold_is_held_and_summed_up_once_per_window() {
        let t0 = Instant::now();
        let mut b = Bursts::new(W, 3, 2);
        let mut popups = 0;
        let mut summarised = 0;
        let mut t = t0;
        // 140 wakes of 1..3 messages, 100 ms apart: 14 s of trickle, 280 messages.
        for i in 0..140u64 {
            t = ms(t0, i * 100);
            for (_, held) in b.due(t) {
                popups += 1;
                summarised += held.total;
                assert!(held.first.len() <= 2, "bounded");
            }
            match b.arrived(&"in", vec![i; 2], t) {
                Decision::Singles(v) => {
                    popups += v.len();
                    summarised += v.len();
                }
                Decision::Summary(h) => {
                    popups += 1;
                    summarised += h.total;
                }
                Decision::Held => {}
            }
        }
        let due = b.next_due().expect("the rest is held");
        assert_eq!(due, t + QUIET, "summed up once the mail pauses");
        for (_, held) in b.due(due) {
            popups += 1;
            summarised += held.total;
        }
        assert_eq!(
            summarised, 280,
            "every message is shown or summed up exactly once"
        );
        // The first wake's 2 single popups, one summary at the window's end (10 s) and one
        // when the trickle stops (14.9 s).
        assert_eq!(popups, 4);
        assert_eq!(b.next_due(), None);
        // The flood is over after a quiet window: single popups again.
        let later = ms(t0, 20_000);
        assert!(b.due(later).is_empty());
        assert_eq!(b.arrived(&"in", vec![7], later), Decision::Singles(vec![7]));
    }

    #[test]
    fn many_in_one_wake_are_summed_up_at_once_and_the_window_keeps_summarising() {
        let t0 = Instant::now();
        let mut b = Bursts::new(W, 3, 3);
        match b.arrived(&"in", (0..50).collect(), t0) {
            Decision::Summary(h) => {
                assert_eq!(h.total, 50);
                assert_eq!(h.first, vec![0, 1, 2]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(b.arrived(&"in", vec![50], ms(t0, 100)), Decision::Held);
        assert_eq!(b.arrived(&"in", vec![51], ms(t0, 900)), Decision::Held);
        assert_eq!(b.next_due(), Some(ms(t0, 1_900)), "a second after the last");
        assert!(
            b.due(ms(t0, 1_899)).is_empty(),
            "not while mail is still coming"
        );
        let due = b.due(ms(t0, 1_900));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1.total, 2);
        // Still the same (flooding) window: more mail is held, not popped up singly.
        assert_eq!(b.arrived(&"in", vec![52], ms(t0, 5_000)), Decision::Held);
        // A steady stream is shown at the window's end at the latest.
        for i in 0..10u64 {
            b.arrived(&"in", vec![60], ms(t0, 5_500 + i * 500));
        }
        assert_eq!(b.next_due(), Some(ms(t0, 10_000)));
        // At exit everything held comes out, due or not, once.
        let all = b.take_all();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1.total, 11);
        assert!(b.take_all().is_empty());
        assert_eq!(b.next_due(), None);
    }

    #[test]
    fn window_zero_judges_each_wake_alone() {
        let t0 = Instant::now();
        let mut b = Bursts::new(Duration::ZERO, 3, 3);
        for i in 0..10 {
            assert_eq!(b.arrived(&"in", vec![i], t0), Decision::Singles(vec![i]));
        }
        assert!(matches!(
            b.arrived(&"in", vec![1, 2, 3, 4], t0),
            Decision::Summary(Held { total: 4, .. })
        ));
        assert_eq!(b.next_due(), None);
    }
}
