//! The command line's side of the interface: `mailpushd status` reads the `Mailboxes`
//! property, and with `--follow` prints again on each `Changed` signal, and when the
//! daemon goes or comes back (`NameOwnerChanged`): driven by the bus, no timer.
//! `mailpushd mark-seen` calls `MarkSeenByUser`.
//!
//! Every call has a deadline ([`CALL_TIMEOUT`]); following waits for signals for as long
//! as the bus lasts.

use std::time::Duration;

use futures_lite::StreamExt;

use super::{Mailbox, NAME};

/// How long a method call or property read may take before the command gives up.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the command could not talk to the daemon: each a one-line message.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("mailpushd is not running (nothing owns {NAME} on the session bus)")]
    NotRunning,
    #[error("cannot reach the session bus: {0}")]
    NoBus(#[source] zbus::Error),
    #[error("{NAME} did not answer as expected: {0}")]
    Call(#[source] zbus::Error),
    #[error("the session bus went away (the desktop session ended?)")]
    BusGone,
}

impl ClientError {
    fn of(e: zbus::Error) -> Self {
        match &e {
            zbus::Error::FDO(f)
                if matches!(
                    **f,
                    zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_)
                ) =>
            {
                ClientError::NotRunning
            }
            zbus::Error::MethodError(name, _, _)
                if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown"
                    || name.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner" =>
            {
                ClientError::NotRunning
            }
            _ => ClientError::Call(e),
        }
    }
}

#[zbus::proxy(
    interface = "org.mailpushd.Mailpushd1",
    default_service = "org.mailpushd.Mailpushd",
    default_path = "/org/mailpushd/Mailpushd"
)]
trait Mailpushd {
    #[zbus(property(emits_changed_signal = "false"))]
    fn mailboxes(&self) -> zbus::Result<Vec<Mailbox>>;

    fn mark_seen_by_user(&self, account: &str, mailbox: &str) -> zbus::Result<u32>;

    #[zbus(signal)]
    fn changed(&self, mailboxes: Vec<Mailbox>) -> zbus::Result<()>;
}

async fn connect() -> Result<zbus::Connection, ClientError> {
    zbus::connection::Builder::session()
        .method_timeout(CALL_TIMEOUT)
        .build()
        .await
        .map_err(ClientError::NoBus)
}

async fn proxy(conn: &zbus::Connection) -> Result<MailpushdProxy<'static>, ClientError> {
    MailpushdProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(ClientError::Call)
}

/// Every watched mailbox, as the daemon has them now.
pub fn mailboxes() -> Result<Vec<Mailbox>, ClientError> {
    zbus::block_on(async {
        let conn = connect().await?;
        let mailboxes = proxy(&conn)
            .await?
            .mailboxes()
            .await
            .map_err(ClientError::of);
        let _ = conn.close().await;
        mailboxes
    })
}

/// `MarkSeenByUser(account, mailbox)` ("" for all); how many mailboxes matched.
pub fn mark_seen(account: &str, mailbox: &str) -> Result<u32, ClientError> {
    zbus::block_on(async {
        let conn = connect().await?;
        let matched = proxy(&conn)
            .await?
            .mark_seen_by_user(account, mailbox)
            .await
            .map_err(ClientError::of);
        let _ = conn.close().await;
        matched
    })
}

enum Heard {
    Changed(Vec<Mailbox>),
    Owner(bool),
}

/// Calls `each` with the mailboxes now, then again on every change: `Some` with the
/// mailboxes, `None` while no daemon runs (it stopped; following goes on until it comes
/// back). Returns when `each` fails (the reader went away).
///
/// Errors: [`ClientError::NotRunning`] if no daemon runs at the start;
/// [`ClientError::BusGone`] when the bus connection ends, after `each(None)`: a bar must
/// not go on showing the last count as if it were live.
pub fn follow(
    mut each: impl FnMut(Option<&[Mailbox]>) -> std::io::Result<()>,
) -> Result<(), ClientError> {
    zbus::block_on(async {
        let conn = connect().await?;
        let proxy = proxy(&conn).await?;
        // Listening first, then reading: no change falls in between.
        let changed = proxy
            .receive_changed()
            .await
            .map_err(ClientError::Call)?
            .map(|signal| signal.args().map(|a| a.mailboxes).ok());
        let dbus = zbus::fdo::DBusProxy::new(&conn)
            .await
            .map_err(ClientError::Call)?;
        let owners = dbus
            .receive_name_owner_changed_with_args(&[(0, NAME)])
            .await
            .map_err(ClientError::Call)?
            .map(|signal| {
                signal
                    .args()
                    .ok()
                    .map(|a| Heard::Owner(a.new_owner().is_some()))
            });
        let mut heard = changed
            .map(|m| m.map(Heard::Changed))
            .or(owners)
            .filter_map(|h| h);
        let now = proxy.mailboxes().await.map_err(ClientError::of)?;
        if each(Some(&now)).is_err() {
            return Ok(());
        }
        loop {
            let Some(h) = heard.next().await else {
                // The bus is gone, and with it any way to hear of the daemon.
                let _ = each(None);
                return Err(ClientError::BusGone);
            };
            let written = match h {
                Heard::Changed(mailboxes) => each(Some(&mailboxes)),
                Heard::Owner(false) => each(None),
                Heard::Owner(true) => match proxy.mailboxes().await {
                    Ok(m) => each(Some(&m)),
                    // Started and not serving yet, or gone again: the next signal tells.
                    Err(_) => Ok(()),
                },
            };
            if written.is_err() {
                return Ok(());
            }
        }
    })
}
