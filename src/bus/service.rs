//! The daemon's side of the interface (see the module above): owns
//! `org.mailpushd.Mailpushd` on the session bus and serves the status table's mailboxes.
//!
//! One thread of its own waits on the table ([`StatusTable::wait_change`]: no timer, no
//! wakeup while nothing changes), takes a copy, and emits `Changed` and the
//! `PropertiesChanged` of `Mailboxes` and `Unread`; the table's lock is never held across
//! D-Bus I/O. Method calls and property reads are answered on zbus's own thread, from the
//! table. A session bus that is missing, or a name another process owns, costs this
//! interface only: said once, and the daemon watches mail as before.

use std::sync::mpsc::Sender;
use std::sync::Mutex;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use zbus::object_server::SignalEmitter;

use super::{Mailbox, INTERFACE, NAME, PATH};
use crate::event::{Event, ReloadQueue};
use crate::status::StatusTable;

/// How long after a change the interface waits for more before it says so (a burst of
/// changes is one `Changed`).
const COALESCE: Duration = Duration::from_millis(100);

/// The interface's implementation: a view of the status table.
struct Service {
    status: StatusTable,
    events: Mutex<Sender<Event>>,
    reloads: ReloadQueue,
}

impl Service {
    fn snapshot(&self) -> Vec<Mailbox> {
        snapshot(&self.status)
    }
}

fn snapshot(status: &StatusTable) -> Vec<Mailbox> {
    status
        .mailboxes()
        .into_iter()
        .filter(|v| !v.account.is_empty())
        .map(Mailbox::from)
        .collect()
}

#[zbus::interface(name = "org.mailpushd.Mailpushd1")]
impl Service {
    /// One dict per watched mailbox: account, mailbox, unread (absent until known), new,
    /// state, last_error (absent unless failing).
    #[zbus(property)]
    fn mailboxes(&self) -> Vec<Mailbox> {
        self.snapshot()
    }

    /// The sum of the known unread counts of every watched mailbox.
    #[zbus(property)]
    fn unread(&self) -> u32 {
        super::total_unread(&self.snapshot()).unwrap_or(0)
    }

    /// mailpushd's version.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    /// The user has looked at `account`'s `mailbox` ("" for every account, every
    /// mailbox): its "new" count goes to 0. `\Seen` on the server is not touched. Returns
    /// how many mailboxes matched.
    #[zbus(out_args("matched"))]
    fn mark_seen_by_user(&self, account: &str, mailbox: &str) -> u32 {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let (account, mailbox) = (some(account), some(mailbox));
        let matched = self
            .status
            .mark_seen_by_user(account.as_deref(), mailbox.as_deref());
        u32::try_from(matched).unwrap_or(u32::MAX)
    }

    /// Reloads the config file, as SIGHUP does. A call while a reload is waiting is
    /// served by that one.
    fn reload(&self) -> zbus::fdo::Result<()> {
        if !self.reloads.ask() {
            return Ok(());
        }
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Event::Reload)
            .map_err(|_| zbus::fdo::Error::Failed("mailpushd is stopping".to_owned()))
    }

    /// Sent after every change to `Mailboxes`, with its new value.
    #[zbus(signal)]
    async fn changed(emitter: &SignalEmitter<'_>, mailboxes: Vec<Mailbox>) -> zbus::Result<()>;
}

/// Starts the interface's thread. It ends after [`StatusTable::close`]. `Reload` sends
/// [`Event::Reload`] through `reloads`.
pub fn spawn(
    status: StatusTable,
    events: Sender<Event>,
    reloads: ReloadQueue,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("dbus-interface".to_owned())
        .spawn(move || serve(status, events, reloads))
}

fn serve(status: StatusTable, events: Sender<Event>, reloads: ReloadQueue) {
    let service = Service {
        status: status.clone(),
        events: Mutex::new(events),
        reloads,
    };
    let built = zbus::block_on(
        zbus::connection::Builder::session()
            .serve_at(PATH, service)
            .name(NAME)
            .build(),
    );
    let conn = match built {
        Ok(conn) => conn,
        Err(zbus::Error::NameTaken) => {
            log::warn!(
                "another program owns {NAME} on the session bus: unread counts are not published there (mail is watched as usual)"
            );
            return;
        }
        Err(e) => {
            // A machine with no desktop session (syslog and hooks only) is a setup, not a
            // fault: said, not warned.
            log::info!(
                "unread counts are not published on the session bus ({e}); mail is watched as usual"
            );
            return;
        }
    };
    log::debug!("{NAME}: serving {INTERFACE} at {PATH}");
    let mut generation = status.generation();
    while status.wait_change(generation).is_some() {
        // Changes that come together go out together: at most one Changed per
        // COALESCE, however fast a server reports flag changes, and never on the heels of
        // the popup that the same new mail is sending on the other connection.
        if !status.linger(COALESCE) {
            break;
        }
        generation = status.generation();
        let mailboxes = snapshot(&status);
        if let Err(e) = zbus::block_on(emit(&conn, mailboxes)) {
            log::debug!("{NAME}: could not emit Changed: {e}");
        }
    }
    let _ = zbus::block_on(conn.close());
}

async fn emit(conn: &zbus::Connection, mailboxes: Vec<Mailbox>) -> zbus::Result<()> {
    let iface = conn.object_server().interface::<_, Service>(PATH).await?;
    let emitter = iface.signal_emitter();
    Service::changed(emitter, mailboxes).await?;
    let service = iface.get().await;
    service.mailboxes_changed(emitter).await?;
    service.unread_changed(emitter).await
}
