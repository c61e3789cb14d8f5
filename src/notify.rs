//! Desktop notifications through the freedesktop `org.freedesktop.Notifications` service,
//! on one long-lived session-bus connection (zbus).
//!
//! One connection, not one per popup: notification servers such as GNOME Shell and dunst
//! send `ActionInvoked` and `NotificationClosed` only to the connection that sent the
//! `Notify`, so buttons ("Open", "Mark as read") only work if that connection stays open and
//! is listened to. A listener thread blocks on it (no wakeups while idle) and forwards those
//! two signals to the supervisor. (notify-rust, used before, opens a connection per popup and
//! needs a blocked thread and connection per popup to see its actions.)
//!
//! Mail text is untrusted: the body is markup-escaped when the server renders markup
//! (`body-markup`), so `<b>` or `<a href=...>` in a subject shows literally, and control and
//! bidi characters are removed everywhere so a popup cannot be spoofed.

use std::collections::HashMap;
use std::sync::mpsc::Sender;

use futures_lite::StreamExt;
use zbus::message::Type as MessageType;
use zbus::Variant;
use zbus::{Connection, MatchRule, MessageStream};

use crate::config::{Notifications, Urgency};
use crate::decode;
use crate::event::Event;

const APP_NAME: &str = "mailpushd";
const CATEGORY: &str = "email.arrived";
const DEST: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";

/// Text for one popup, before escaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Popup {
    pub summary: String,
    pub body: String,
}

/// What the notification server can do, asked once per connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Capabilities {
    pub markup: bool,
    pub actions: bool,
}

pub struct DesktopNotifier {
    icon: String,
    urgency: u8,
    conn: Option<(Connection, Capabilities)>,
    /// Where the listener sends actions and closes; `None` in `--check` and tests.
    events: Option<Sender<Event>>,
    /// Whether the last attempt failed, so failures and recovery are logged once each.
    failing: bool,
}

impl DesktopNotifier {
    pub fn new(settings: &Notifications, events: Option<Sender<Event>>) -> Self {
        DesktopNotifier {
            icon: settings.icon.clone(),
            urgency: match settings.urgency {
                Urgency::Low => 0,
                Urgency::Normal => 1,
                Urgency::Critical => 2,
            },
            conn: None,
            events,
            failing: false,
        }
    }

    /// The connection, opened (with its listener) on first use and after a failure.
    fn connection(&mut self) -> zbus::Result<(Connection, Capabilities)> {
        if let Some((c, caps)) = &self.conn {
            return Ok((c.clone(), *caps));
        }
        let conn = zbus::block_on(Connection::session())?;
        let reply =
            zbus::block_on(conn.call_method(Some(DEST), PATH, Some(DEST), "GetCapabilities", &()))?;
        let list: Vec<String> = reply.body().deserialize()?;
        let caps = Capabilities {
            markup: list.iter().any(|c| c == "body-markup"),
            actions: list.iter().any(|c| c == "actions"),
        };
        if let Some(events) = &self.events {
            spawn_listener(conn.clone(), events.clone());
        }
        self.conn = Some((conn.clone(), caps));
        Ok((conn, caps))
    }

    /// Shows a popup, replacing notification `replaces` if non-zero, with `(key, label)`
    /// action buttons where the server supports them. Returns the notification's id. A
    /// missing notification server is logged (once) and otherwise ignored: the syslog line
    /// still goes out.
    pub fn show(&mut self, popup: &Popup, replaces: u32, actions: &[(&str, &str)]) -> Option<u32> {
        match self.try_show(popup, replaces, actions) {
            Ok(id) => {
                if self.failing {
                    self.failing = false;
                    log::info!("desktop notifications work again");
                }
                Some(id)
            }
            Err(e) => {
                // An error reply (no notification server right now) leaves the connection
                // usable; anything else means it is gone. Dropping a live connection would
                // leak it, as its listener thread holds it too.
                if !matches!(e, zbus::Error::MethodError(..)) {
                    self.conn = None;
                }
                if !self.failing {
                    self.failing = true;
                    log::warn!("cannot show desktop notification: {e}");
                }
                None
            }
        }
    }

    fn try_show(
        &mut self,
        popup: &Popup,
        replaces: u32,
        actions: &[(&str, &str)],
    ) -> zbus::Result<u32> {
        let (conn, caps) = self.connection()?;
        let body = if caps.markup {
            decode::markup_escape(&popup.body)
        } else {
            plain(&popup.body)
        };
        let actions: Vec<&str> = if caps.actions {
            actions.iter().flat_map(|(k, l)| [*k, *l]).collect()
        } else {
            Vec::new()
        };
        let mut hints: HashMap<&str, Variant<'_>> = HashMap::new();
        hints.insert("category", Variant::from(CATEGORY));
        hints.insert("urgency", Variant::U8(self.urgency));
        let summary = plain(&popup.summary);
        let reply = zbus::block_on(conn.call_method(
            Some(DEST),
            PATH,
            Some(DEST),
            "Notify",
            &(
                APP_NAME,
                replaces,
                self.icon.as_str(),
                summary.as_str(),
                body.as_str(),
                actions,
                hints,
                -1i32,
            ),
        ))?;
        reply.body().deserialize::<u32>()
    }

    /// Closes a notification (read elsewhere, or its message was deleted).
    pub fn close(&mut self, id: u32) {
        if let Some((conn, _)) = &self.conn {
            let res = zbus::block_on(conn.call_method(
                Some(DEST),
                PATH,
                Some(DEST),
                "CloseNotification",
                &(id,),
            ));
            if let Err(e) = res {
                log::debug!("CloseNotification {id}: {e}");
            }
        }
    }
}

/// Forwards ActionInvoked and NotificationClosed to the supervisor until the connection
/// ends. Blocks on the bus socket: no wakeups while nothing happens.
fn spawn_listener(conn: Connection, events: Sender<Event>) {
    let spawned = std::thread::Builder::new()
        .name("notify-signals".into())
        .spawn(move || {
            zbus::block_on(async move {
                let rule = match MatchRule::builder()
                    .msg_type(MessageType::Signal)
                    .interface(DEST)
                    .path(PATH)
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        log::warn!("notification actions unavailable: {e}");
                        return;
                    }
                };
                let mut stream = match MessageStream::for_match_rule(rule, &conn, None).await {
                    Ok(s) => s,
                    Err(e) => {
                        log::warn!("notification actions unavailable: {e}");
                        return;
                    }
                };
                while let Some(Ok(msg)) = stream.next().await {
                    let header = msg.header();
                    let event = match header.member().map(|m| m.as_str()) {
                        Some("ActionInvoked") => msg
                            .body()
                            .deserialize::<(u32, String)>()
                            .ok()
                            .map(|(id, key)| Event::NotificationAction { id, key }),
                        Some("NotificationClosed") => msg
                            .body()
                            .deserialize::<(u32, u32)>()
                            .ok()
                            .map(|(id, _reason)| Event::NotificationClosed { id }),
                        _ => None,
                    };
                    if let Some(event) = event {
                        if events.send(event).is_err() {
                            return;
                        }
                    }
                }
            });
        });
    if let Err(e) = spawned {
        log::warn!("notification actions unavailable: {e}");
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
