//! How an account's mailboxes share the connections the server allows: which get an IMAP
//! connection of their own (IDLE, the fastest), and which are watched over the account's
//! one shared connection (NOTIFY, RFC 5465, or STATUS polling). Pure, so the rules are
//! unit-tested; the supervisor applies them.
//!
//! The rules, in order:
//! - While the server's capabilities are unknown (nothing has logged in yet), only the
//!   first mailbox (INBOX, if watched) starts; the rest wait for that login, so a server
//!   with NOTIFY never sees a connection per mailbox.
//! - A budget of 1: one shared connection for every mailbox.
//! - NOTIFY (with IDLE): the first mailbox on its own connection, every other one on the
//!   shared connection: two connections, however many mailboxes.
//! - No NOTIFY: as many mailboxes as the budget allows get their own connection, INBOX
//!   first; when they do not all fit, the budget's last connection is the shared one,
//!   checking the rest by STATUS every `poll_interval_secs`.
//! - No IDLE (NetEase): every mailbox is polled anyway, so the supervisor passes a budget
//!   of 1 and one connection polls them all.

/// Which of an account's mailboxes go where.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Mailboxes with a connection of their own, in order (INBOX first).
    pub own: Vec<String>,
    /// Mailboxes on the shared connection (none: no shared connection).
    pub shared: Vec<String>,
    /// Mailboxes not started yet: waiting for the first login to tell what the server
    /// offers.
    pub waiting: Vec<String>,
}

impl Assignment {
    /// Connections this assignment holds at most.
    pub fn connections(&self) -> usize {
        self.own.len() + usize::from(!self.shared.is_empty())
    }
}

/// Splits `mailboxes` (as configured) given whether the server offers NOTIFY (`None`:
/// not known yet) and the account's connection `budget` (at least 1; 0 is taken as 1).
pub fn assign(mailboxes: &[String], notify: Option<bool>, budget: u32) -> Assignment {
    let mut order: Vec<String> = mailboxes
        .iter()
        .filter(|m| m.eq_ignore_ascii_case("INBOX"))
        .chain(
            mailboxes
                .iter()
                .filter(|m| !m.eq_ignore_ascii_case("INBOX")),
        )
        .cloned()
        .collect();
    let budget = usize::try_from(budget.max(1)).unwrap_or(usize::MAX);
    if order.len() <= 1 {
        return Assignment {
            own: order,
            ..Assignment::default()
        };
    }
    if budget == 1 {
        return Assignment {
            shared: order,
            ..Assignment::default()
        };
    }
    match notify {
        None => {
            let rest = order.split_off(1);
            Assignment {
                own: order,
                waiting: rest,
                ..Assignment::default()
            }
        }
        Some(true) => {
            let rest = order.split_off(1);
            Assignment {
                own: order,
                shared: rest,
                ..Assignment::default()
            }
        }
        Some(false) if order.len() <= budget => Assignment {
            own: order,
            ..Assignment::default()
        },
        Some(false) => {
            let rest = order.split_off(budget - 1);
            Assignment {
                own: order,
                shared: rest,
                ..Assignment::default()
            }
        }
    }
}

/// The budget after the server refused one of `units` connections (own and shared) for
/// its limit: one fewer than were running, never below 1, and never above what the
/// server said it allows.
pub fn lowered(units: usize, cap: Option<u32>) -> u32 {
    let fewer = u32::try_from(units.saturating_sub(1)).unwrap_or(u32::MAX);
    fewer.min(cap.unwrap_or(u32::MAX)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        let mut v: Vec<String> = (1..n).map(|i| format!("F{i}")).collect();
        v.insert(v.len() / 2, "INBOX".to_owned());
        v
    }

    #[test]
    fn inbox_goes_first_wherever_it_is_listed() {
        let a = assign(&names(4), Some(false), 10);
        assert_eq!(a.own, ["INBOX", "F1", "F2", "F3"]);
        assert!(a.shared.is_empty() && a.waiting.is_empty());
    }

    #[test]
    fn until_the_server_is_known_only_the_first_mailbox_starts() {
        let a = assign(&names(12), None, 5);
        assert_eq!(a.own, ["INBOX"]);
        assert_eq!(a.waiting.len(), 11);
        assert_eq!(a.connections(), 1);
    }

    #[test]
    fn with_notify_twelve_mailboxes_take_two_connections() {
        let a = assign(&names(12), Some(true), 5);
        assert_eq!(a.own, ["INBOX"]);
        assert_eq!(a.shared.len(), 11);
        assert_eq!(a.connections(), 2);
    }

    #[test]
    fn without_notify_the_budget_is_filled_and_the_rest_shared() {
        let a = assign(&names(12), Some(false), 4);
        assert_eq!(a.own, ["INBOX", "F1", "F2"]);
        assert_eq!(a.shared.len(), 9);
        assert_eq!(a.connections(), 4);
        // What fits is all on connections of its own.
        let a = assign(&names(4), Some(false), 4);
        assert_eq!(a.connections(), 4);
        assert!(a.shared.is_empty());
        // One over: the last connection is the shared one, for two mailboxes.
        let a = assign(&names(5), Some(false), 4);
        assert_eq!((a.own.len(), a.shared.len()), (3, 2));
    }

    #[test]
    fn a_budget_of_one_shares_everything() {
        for notify in [None, Some(false), Some(true)] {
            let a = assign(&names(3), notify, 1);
            assert!(a.own.is_empty());
            assert_eq!(a.shared.len(), 3);
            assert_eq!(assign(&names(3), notify, 0), a);
        }
    }

    #[test]
    fn one_mailbox_always_has_its_own_connection() {
        for notify in [None, Some(false), Some(true)] {
            assert_eq!(assign(&names(1), notify, 1).own, ["INBOX"]);
        }
    }

    #[test]
    fn every_mailbox_is_placed_exactly_once() {
        for n in 1..20 {
            for budget in 0..8 {
                for notify in [None, Some(false), Some(true)] {
                    let a = assign(&names(n), notify, budget);
                    let mut all: Vec<&String> =
                        a.own.iter().chain(&a.shared).chain(&a.waiting).collect();
                    all.sort();
                    let mut want = names(n);
                    want.sort();
                    assert_eq!(all, want.iter().collect::<Vec<_>>());
                    assert!(a.connections() <= usize::try_from(budget.max(1)).unwrap());
                }
            }
        }
    }

    #[test]
    fn a_refusal_lowers_the_budget_by_one_down_to_one() {
        assert_eq!(lowered(5, None), 4);
        assert_eq!(lowered(5, Some(2)), 2);
        assert_eq!(lowered(1, None), 1);
        assert_eq!(lowered(0, Some(0)), 1);
    }
}
