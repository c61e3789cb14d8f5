//! Activation tokens the notification server hands out for our popups, kept from the
//! `ActivationToken` signal until the click that follows it.
//!
//! Desktop Notifications spec 1.2, "Signals": `ActivationToken(u id, s activation_token)`
//! "can be emitted before a ActionInvoked signal" for the same `id`. The token lets the
//! program the click starts take focus (on Wayland through xdg-activation; on X11 it is a
//! startup-notification id), so `open_command` gets it in its environment.
//!
//! A token is only ever used for the popup it was given for: it is taken (and so forgotten)
//! by that popup's next `ActionInvoked`, and dropped when the popup closes or the server
//! that issued it goes. Pure bookkeeping, owned by the notification thread alone.

use std::collections::VecDeque;

/// Tokens kept at most. A token normally lives from its signal to the `ActionInvoked` right
/// after it; a few allow for servers that send one without the other.
pub const TOKEN_LIMIT: usize = 16;
/// Longest token accepted, in bytes. xdg-activation tokens and X11 startup ids are well
/// under 200 bytes; anything longer is not a token we want in a child's environment.
pub const TOKEN_MAX_LEN: usize = 1024;

/// Popup id -> activation token, oldest first, at most [`TOKEN_LIMIT`].
#[derive(Debug, Default)]
pub struct Tokens {
    kept: VecDeque<(u32, String)>,
}

impl Tokens {
    /// Keeps `token` for popup `id` (replacing an earlier one for the same popup); the
    /// oldest token goes when more than [`TOKEN_LIMIT`] are kept. Returns false, and keeps
    /// nothing for the popup, for a token that cannot go into an environment variable:
    /// empty, with a NUL or another control character, or longer than [`TOKEN_MAX_LEN`].
    /// (An earlier token for the popup is dropped then too: the server meant this one.)
    pub fn given(&mut self, id: u32, token: String) -> bool {
        self.forget(id);
        if !usable(&token) {
            return false;
        }
        self.kept.push_back((id, token));
        while self.kept.len() > TOKEN_LIMIT {
            self.kept.pop_front();
        }
        true
    }

    /// The token for popup `id`, if one was given; forgotten by this call (a token is used
    /// once, for the one click it came with).
    pub fn take(&mut self, id: u32) -> Option<String> {
        let i = self.kept.iter().position(|(k, _)| *k == id)?;
        self.kept.remove(i).map(|(_, token)| token)
    }

    /// Popup `id` closed: its token, if any, is of no use any more.
    pub fn forget(&mut self, id: u32) {
        self.kept.retain(|(k, _)| *k != id);
    }

    /// The server that issued the tokens is gone; its popup ids mean nothing now.
    pub fn clear(&mut self) {
        self.kept.clear();
    }

    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

/// Whether `token` can be put in an environment variable as it is.
fn usable(token: &str) -> bool {
    !token.is_empty() && token.len() <= TOKEN_MAX_LEN && !token.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_taken_once_and_only_by_its_popup() {
        let mut t = Tokens::default();
        assert!(t.given(7, "tok-7".into()));
        assert_eq!(t.take(8), None, "another popup's click gets nothing");
        assert_eq!(t.take(7).as_deref(), Some("tok-7"));
        assert_eq!(t.take(7), None, "used once");
        assert!(t.is_empty());
    }

    #[test]
    fn a_new_token_for_the_same_popup_replaces_the_old_one() {
        let mut t = Tokens::default();
        t.given(1, "old".into());
        t.given(1, "new".into());
        assert_eq!(t.len(), 1);
        assert_eq!(t.take(1).as_deref(), Some("new"));
    }

    #[test]
    fn closing_a_popup_or_losing_the_server_forgets_tokens() {
        let mut t = Tokens::default();
        t.given(1, "a".into());
        t.given(2, "b".into());
        t.forget(1);
        assert_eq!(t.take(1), None);
        t.clear();
        assert_eq!(t.take(2), None);
    }

    #[test]
    fn tokens_are_bounded_oldest_first() {
        let mut t = Tokens::default();
        for id in 0..(TOKEN_LIMIT as u32 + 5) {
            t.given(id, format!("tok-{id}"));
        }
        assert_eq!(t.len(), TOKEN_LIMIT);
        assert_eq!(t.take(0), None, "the oldest went first");
        assert_eq!(t.take(4), None);
        assert_eq!(t.take(5).as_deref(), Some("tok-5"));
        let last = TOKEN_LIMIT as u32 + 4;
        assert_eq!(t.take(last), Some(format!("tok-{last}")));
    }

    #[test]
    fn tokens_unfit_for_an_environment_are_refused() {
        let mut t = Tokens::default();
        assert!(!t.given(1, String::new()));
        assert!(!t.given(1, "a\0b".into()));
        assert!(!t.given(1, "a\nb".into()));
        assert!(!t.given(1, "x".repeat(TOKEN_MAX_LEN + 1)));
        assert!(t.is_empty());
        assert!(t.given(1, "x".repeat(TOKEN_MAX_LEN)));
        // A refused token replaces an earlier good one for that popup: the server meant
        // the newer one, and the older may no longer be valid.
        assert!(!t.given(1, String::new()));
        assert_eq!(t.take(1), None);
    }
}
