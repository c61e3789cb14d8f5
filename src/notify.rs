//! Desktop notifications through the freedesktop `org.freedesktop.Notifications` service on
//! the user's session bus (notify-rust, pure-Rust zbus).
//!
//! Mail text is untrusted: the body is markup-escaped when the server renders markup
//! (`body-markup` capability), so `<b>` or `<a href=...>` in a subject shows literally, and
//! control and bidi characters are removed everywhere so a popup cannot be spoofed.

use notify_rust::{Hint, Notification, Timeout};

use crate::decode;

const APP_NAME: &str = "mailpushd";
const ICON: &str = "mail-unread";
const CATEGORY: &str = "email.arrived";

/// Text for one popup, before escaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Popup {
    pub summary: String,
    pub body: String,
}

pub struct DesktopNotifier {
    /// Whether the server renders markup in bodies; asked once, asked again after a failure
    /// (the notification daemon may have been replaced).
    markup: Option<bool>,
    /// Whether the last attempt failed, so failures and recovery are logged once each.
    failing: bool,
}

impl Default for DesktopNotifier {
    fn default() -> Self {
        Self::new()
    }
}

impl DesktopNotifier {
    pub fn new() -> Self {
        DesktopNotifier {
            markup: None,
            failing: false,
        }
    }

    /// Shows a popup. A missing notification server is logged (once) and otherwise ignored:
    /// the syslog line still goes out.
    pub fn show(&mut self, popup: &Popup) {
        match self.try_show(popup) {
            Ok(()) => {
                if self.failing {
                    self.failing = false;
                    log::info!("desktop notifications work again");
                }
            }
            Err(e) => {
                self.markup = None;
                if !self.failing {
                    self.failing = true;
                    log::warn!("cannot show desktop notification: {e}");
                }
            }
        }
    }

    fn try_show(&mut self, popup: &Popup) -> Result<(), notify_rust::error::Error> {
        let markup = match self.markup {
            Some(m) => m,
            None => {
                let m = notify_rust::get_capabilities()?
                    .iter()
                    .any(|c| c == "body-markup");
                *self.markup.insert(m)
            }
        };
        let body = if markup {
            decode::markup_escape(&popup.body)
        } else {
            plain(&popup.body)
        };
        Notification::new()
            .appname(APP_NAME)
            .summary(&plain(&popup.summary))
            .body(&body)
            .icon(ICON)
            .hint(Hint::Category(CATEGORY.to_owned()))
            .timeout(Timeout::Default)
            .show()?;
        Ok(())
    }
}

/// Text for servers that show it as is: no control characters (except line breaks in the
/// body) and no bidi overrides.
fn plain(s: &str) -> String {
    s.chars()
        .filter(|&c| c == '\n' || !(c.is_control() || decode::is_bidi_control(c)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_drops_controls_and_bidi() {
        assert_eq!(plain("a\x1b[31mb\u{202e}c\nd\r"), "a[31mbc\nd");
    }
}
