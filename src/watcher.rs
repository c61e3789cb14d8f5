//! One watched mailbox: the loop that connects, examines, catches up, IDLEs (or polls) and
//! announces, and reconnects after any failure, forever, until told to stop.
//!
//! Each watcher runs on its own thread named `account/mailbox` and owns its connection. The
//! supervisor holds a [`Control`] to stop it or to make it reconnect at once (after a
//! resume from suspend): flags, a condition variable for the sleeps, and the socket's
//! interrupter for a thread blocked in IDLE. Progress is persisted through [`StateStore`]
//! after every announcement, so neither a reconnect nor a restart misses or repeats mail.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::backoff::Backoff;
use crate::config::Account;
use crate::credentials::{self, CredentialError};
use crate::decode;
use crate::imap::{self, Connection, ImapError, Interrupter, Message, Wake};
use crate::mutf7;
use crate::newmail::{self, Cursor, Seen, Start};
use crate::outputs::{Announcement, SharedOutputs};
use crate::state::{Loaded, StateStore};
use crate::status::{Phase, Row, StatusTable};
use crate::supervisor::Event;

/// First reconnect delay; the cap is the account's `reconnect_max_secs`.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// A connection that stayed up this long counts as healthy: the next failure starts the
/// backoff from the beginning again.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Flags {
    stop: bool,
    reconnect: bool,
}

/// The supervisor's handle on a running watcher.
#[derive(Debug, Default)]
pub struct Control {
    flags: Mutex<Flags>,
    wake: Condvar,
    socket: Mutex<Option<Interrupter>>,
}

/// Why a [`Control::sleep`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Sleep {
    Elapsed,
    Stop,
    Reconnect,
}

impl Control {
    fn flags(&self) -> std::sync::MutexGuard<'_, Flags> {
        self.flags.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn interrupt(&self) {
        if let Some(s) = self
            .socket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            s.interrupt();
        }
    }

    /// Asks the watcher to stop: ends any sleep at once and shuts down its socket, which
    /// ends a blocked IDLE read.
    pub fn stop(&self) {
        self.flags().stop = true;
        self.wake.notify_all();
        self.interrupt();
    }

    /// Asks the watcher to drop its connection and reconnect now, skipping any backoff
    /// (the machine just woke up: the old connection is most likely dead).
    pub fn reconnect(&self) {
        self.flags().reconnect = true;
        self.wake.notify_all();
        self.interrupt();
    }

    pub fn stopping(&self) -> bool {
        self.flags().stop
    }

    /// Takes a pending reconnect request.
    fn take_reconnect(&self) -> bool {
        std::mem::take(&mut self.flags().reconnect)
    }

    /// Sleeps for `d` unless stopped or asked to reconnect first.
    fn sleep(&self, d: Duration) -> Sleep {
        let guard = self.flags();
        let (mut flags, _) = self
            .wake
            .wait_timeout_while(guard, d, |f| !f.stop && !f.reconnect)
            .unwrap_or_else(|e| e.into_inner());
        if flags.stop {
            Sleep::Stop
        } else if std::mem::take(&mut flags.reconnect) {
            Sleep::Reconnect
        } else {
            Sleep::Elapsed
        }
    }

    fn register(&self, interrupter: Interrupter) {
        let mut slot = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        // A stop that raced with the connect must still cut this new socket.
        if self.stopping() {
            interrupter.interrupt();
        }
        *slot = Some(interrupter);
    }
}

#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error(transparent)]
    Imap(#[from] ImapError),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error("asked to reconnect (resume from suspend)")]
    Reconnect,
}

/// The state a failure puts a watcher in, for "log once per change of state".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Imap(std::mem::Discriminant<ImapError>),
    Credentials,
    Reconnect,
    Panic,
}

/// How a failure is handled: how soon to retry and how loudly to say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Network trouble and the like: backoff from 1 s.
    Transient,
    /// Wrong credentials: straight to the backoff cap (retrying every second would only
    /// lock the account), error level, one popup per account.
    Login,
    /// The mailbox is gone or renamed: straight to the cap, logged once.
    Mailbox,
}

impl WatchError {
    /// What went wrong, without the details that change from one attempt to the next
    /// (server timings, addresses): two failures of the same kind are the same state.
    fn kind(&self) -> Kind {
        match self {
            WatchError::Imap(e) => Kind::Imap(std::mem::discriminant(e)),
            WatchError::Credentials(_) => Kind::Credentials,
            WatchError::Reconnect => Kind::Reconnect,
        }
    }

    fn failure(&self) -> Failure {
        match self {
            WatchError::Imap(ImapError::Auth(_)) => Failure::Login,
            WatchError::Imap(ImapError::Mailbox { .. }) => Failure::Mailbox,
            _ => Failure::Transient,
        }
    }
}

/// What every watcher shares with the others and the supervisor.
#[derive(Clone)]
pub struct Shared {
    pub outputs: SharedOutputs,
    pub status: StatusTable,
    pub store: StateStore,
    pub events: Sender<Event>,
}

pub struct Watcher {
    account: Arc<Account>,
    /// As configured (UTF-8), for logs and popups.
    mailbox: String,
    /// Modified UTF-7, for the wire.
    wire_mailbox: String,
    outputs: SharedOutputs,
    status: StatusTable,
    events: Sender<Event>,
    control: Arc<Control>,
    store: StateStore,
    state_path: PathBuf,
    /// `None` until the saved state has been read (on the first connect).
    cursor: Option<Cursor>,
    state_loaded: bool,
    backoff: Backoff,
    /// The kind of the last failure, so a repeat is not logged again at full volume, and
    /// how many failures in a row there have been.
    last_failure: Option<Kind>,
    failures_in_a_row: u32,
}

impl Watcher {
    pub fn new(
        account: Arc<Account>,
        mailbox: String,
        shared: Shared,
        control: Arc<Control>,
    ) -> Self {
        let state_path =
            shared
                .store
                .path_migrated(&account.username, &account.host, account.port, &mailbox);
        Watcher {
            wire_mailbox: mutf7::encode(&mailbox),
            backoff: Backoff::new(BACKOFF_FIRST, account.reconnect_max),
            account,
            mailbox,
            outputs: shared.outputs,
            status: shared.status,
            events: shared.events,
            control,
            store: shared.store,
            state_path,
            cursor: None,
            state_loaded: false,
            last_failure: None,
            failures_in_a_row: 0,
        }
    }

    /// `account/mailbox`: the thread name and the prefix of every log line.
    pub fn key(&self) -> String {
        format!("{}/{}", self.account.name, self.mailbox)
    }

    /// Updates this watcher's row in the status table; a change of phase is worth a new
    /// systemd STATUS= line.
    fn set_status(&self, f: impl FnOnce(&mut Row)) {
        if self.status.update(&self.key(), f) {
            let _ = self.events.send(Event::StatusChanged);
        }
    }

    /// Runs until stopped. A failed or panicking session is logged and retried after a
    /// backoff delay; nothing here ends the process or touches other watchers.
    pub fn run(mut self) {
        let key = self.key();
        while !self.control.stopping() {
            let started = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| self.session()));
            if self.control.stopping() {
                break;
            }
            if started.elapsed() >= HEALTHY_AFTER {
                self.backoff.reset();
            }
            let (message, failure, kind) = match outcome {
                Ok(Ok(())) => break,
                Ok(Err(WatchError::Reconnect)) => (None, Failure::Transient, Kind::Reconnect),
                // Server text (NO responses, SASL errors) is untrusted: one escaped line.
                Ok(Err(e)) => (
                    Some(format!(
                        "{key}: {}",
                        decode::controls_escaped(&e.to_string())
                    )),
                    e.failure(),
                    e.kind(),
                ),
                Err(panic) => (
                    Some(format!("{key}: internal error: {}", panic_message(&*panic))),
                    Failure::Transient,
                    Kind::Panic,
                ),
            };
            // A resume makes every watcher reconnect at once, without backoff.
            let delay = if self.control.take_reconnect() || message.is_none() {
                self.backoff.reset();
                log::info!("{key}: reconnecting after resume from suspend");
                Duration::ZERO
            } else if failure == Failure::Transient {
                self.backoff.next_delay()
            } else {
                self.account.reconnect_max
            };
            if let Some(message) = &message {
                self.report_failure(message, failure, kind, delay);
            }
            self.set_status(|r| {
                r.phase = Phase::Retrying;
                r.connected_since = None;
                r.next_retry = Some(SystemTime::now() + delay);
                if let Some(m) = message {
                    r.last_error = Some((SystemTime::now(), m));
                }
            });
            if self.control.sleep(delay) == Sleep::Stop {
                break;
            }
        }
        self.status.remove(&key);
        log::debug!("{key}: stopped");
    }

    /// Logs a failure: in full the first time and whenever its kind changes, then at
    /// doubling intervals (2nd, 4th, 8th... repeat) so a long outage does not flood the
    /// journal. Kinds, not texts, are compared: servers put timings and counters in their
    /// error text ("Mailbox doesn't exist (0.002 + 0.000 secs)").
    fn report_failure(&mut self, message: &str, failure: Failure, kind: Kind, delay: Duration) {
        let same = self.last_failure == Some(kind);
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        self.last_failure = Some(kind);
        let retry = format!("retrying in {:.1}s", delay.as_secs_f64());
        let mut outputs = self.outputs.lock();
        match failure {
            Failure::Login if !same => {
                let reason = match message.split_once("login failed: ") {
                    Some((_, r)) => r,
                    None => message,
                };
                outputs.login_failed(&self.account.name, &format!("{message}; {retry}"), reason);
            }
            _ if !same => {
                log::warn!("{message}; {retry}");
                outputs.warning(&format!("{message}; {retry}"));
            }
            Failure::Transient if self.failures_in_a_row.is_power_of_two() => {
                let line = format!(
                    "{message} (still failing, {} attempts); {retry}",
                    self.failures_in_a_row
                );
                log::warn!("{line}");
                outputs.warning(&line);
            }
            _ => log::debug!("{message}; {retry}"),
        }
    }

    /// The connection works: forget failures, say so once if there were any.
    fn report_recovery(&mut self) {
        if self.last_failure.take().is_some() {
            log::info!(
                "{}: connected again after {} failed attempt(s)",
                self.key(),
                self.failures_in_a_row
            );
        }
        self.failures_in_a_row = 0;
    }

    /// The cursor saved by an earlier run, read once per watcher.
    fn saved_cursor(&mut self) -> Option<Cursor> {
        if std::mem::replace(&mut self.state_loaded, true) {
            return self.cursor;
        }
        let key = self.key();
        match self.store.load(&self.state_path) {
            Loaded::Missing => None,
            Loaded::Found(c) => Some(c),
            Loaded::Corrupt { reason, set_aside } => {
                let where_to = set_aside.map_or_else(
                    || "could not be moved aside".to_owned(),
                    |p| format!("moved to {}", p.display()),
                );
                log::warn!(
                    "{key}: state file {} is corrupt ({reason}); {where_to}; starting afresh",
                    self.state_path.display()
                );
                None
            }
            Loaded::Unreadable(e) => {
                log::warn!(
                    "{key}: cannot read state file {}: {e}; starting afresh",
                    self.state_path.display()
                );
                None
            }
        }
    }

    fn save(&self) {
        let Some(cursor) = self.cursor else { return };
        let description = format!(
            "{} on {}, mailbox {}",
            self.account.username, self.account.host, self.mailbox
        );
        if let Err(e) = self.store.save(&self.state_path, cursor, &description) {
            // Not fatal: in memory the cursor is right; only a restart could repeat mail.
            log::warn!(
                "{}: cannot save state to {}: {e}",
                self.key(),
                self.state_path.display()
            );
        }
    }

    /// One connection, from connect to failure (Err) or stop (Ok).
    fn session(&mut self) -> Result<(), WatchError> {
        let key = self.key();
        self.set_status(|r| {
            r.phase = Phase::Connecting;
            r.next_retry = None;
        });
        let password =
            credentials::resolve_until(&self.account.secret, || self.control.stopping())?;
        let control = Arc::clone(&self.control);
        let mut conn = imap::connect(&self.account, &password, |i| control.register(i))?;
        drop(password);
        self.outputs.lock().login_ok(&self.account.name);

        let status = conn.examine(&self.wire_mailbox, &self.mailbox)?;
        self.report_recovery();
        // UIDVALIDITY is mandatory (RFC 3501); a server that omits it gets a constant, which
        // still lets a reconnect resume.
        let uid_validity = status.uid_validity.unwrap_or(0);
        let uid_next = match status.uid_next {
            Some(n) => n,
            None if status.exists == 0 => 1,
            None => highest_uid(&mut conn)?.map_or(1, |u| u.saturating_add(1)),
        };
        let previous = self.saved_cursor();
        let start = newmail::start(previous, uid_validity, uid_next);
        self.cursor = Some(start.cursor());
        let mode = if conn.capabilities.idle {
            "IDLE".to_owned()
        } else {
            format!(
                "no IDLE on this server, polling every {}s",
                self.account.poll_interval.as_secs()
            )
        };
        match start {
            Start::Baseline {
                validity_changed, ..
            } => {
                if validity_changed {
                    log::warn!(
                        "{key}: UIDVALIDITY changed ({} -> {uid_validity}); mail already there is not announced again",
                        previous.map_or(0, |c| c.uid_validity)
                    );
                }
                self.save();
            }
            Start::Resume(_) => self.check(&mut conn, Instant::now(), true)?,
        }
        log::info!("watching {key} ({mode})");
        let idle = conn.capabilities.idle;
        self.set_status(|r| {
            r.phase = if idle { Phase::Idling } else { Phase::Polling };
            r.connected_since = Some(SystemTime::now());
        });

        loop {
            let woke = if conn.capabilities.idle {
                if self.control.stopping() {
                    conn.logout();
                    return Ok(());
                }
                // A change reported while we were busy (mail that arrived during the last
                // UID FETCH) would not be reported again in IDLE: look now instead.
                if conn.take_changed() {
                    self.check(&mut conn, Instant::now(), false)?;
                    continue;
                }
                let wake_on_flags = !self.open_popups().is_empty();
                match conn.idle(self.account.idle_refresh, wake_on_flags)? {
                    Wake::Changed { at } => {
                        log::debug!("{key}: woken by the server");
                        at
                    }
                    Wake::Refresh => {
                        log::debug!("{key}: refreshing IDLE");
                        Instant::now()
                    }
                    Wake::Unexpected(line) => {
                        log::warn!(
                            "{key}: unexpected server response during IDLE: {}",
                            decode::one_line(&line)
                        );
                        Instant::now()
                    }
                }
            } else {
                match self.control.sleep(self.account.poll_interval) {
                    Sleep::Stop => {
                        conn.logout();
                        return Ok(());
                    }
                    Sleep::Reconnect => return Err(WatchError::Reconnect),
                    Sleep::Elapsed => {}
                }
                conn.noop()?;
                Instant::now()
            };
            // Any wake-up is only a hint: responses after the one that woke us were
            // discarded by the crate, so ask the server what is new since the cursor.
            self.check(&mut conn, woke, false)?;
        }
    }

    /// Fetches everything from the cursor on, announces what is new and unread, and saves
    /// the new position. Right after a (re)connect (`catching_up`), more than
    /// `catch_up_max` messages become one summary popup (every syslog line still goes out).
    fn check(
        &mut self,
        conn: &mut Connection,
        woke: Instant,
        catching_up: bool,
    ) -> Result<(), ImapError> {
        let Some(cursor) = self.cursor.as_mut() else {
            return Ok(());
        };
        let before = *cursor;
        let messages = conn.fetch(&cursor.fetch_range())?;
        let seen: Vec<Seen> = messages
            .iter()
            .map(|m| Seen {
                uid: m.uid,
                seen: m.seen,
            })
            .collect();
        let fresh = cursor.advance(&seen);
        let moved = *cursor != before;
        let announcements: Vec<Announcement> = fresh
            .iter()
            .filter_map(|uid| messages.iter().find(|m| m.uid == *uid))
            .map(|m| self.announcement(m))
            .collect();
        if let Some(last) = announcements.last() {
            let event = format!(
                "{} new message(s), last uid {}",
                announcements.len(),
                last.uid
            );
            self.status.update(&self.key(), |r| {
                r.last_event = Some((SystemTime::now(), event));
            });
            self.outputs.lock().announce(
                &self.account,
                &self.mailbox,
                &announcements,
                catching_up,
                woke,
            );
        }
        // Saved after announcing: a crash in between repeats a popup rather than losing one.
        if moved {
            self.save();
        }
        self.close_popups_read_elsewhere(conn)
    }

    /// UIDs of this mailbox's messages that have a popup on screen.
    fn open_popups(&self) -> Vec<u32> {
        self.outputs
            .lock()
            .open_uids(&self.account.name, &self.mailbox)
    }

    /// Closes the popups of messages that were read (`\Seen`) or deleted elsewhere since
    /// they were shown. Asks the server about just those UIDs; nothing when none are open.
    fn close_popups_read_elsewhere(&mut self, conn: &mut Connection) -> Result<(), ImapError> {
        let open = self.open_popups();
        if open.is_empty() {
            return Ok(());
        }
        let set = open
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let still_unread: Vec<u32> = conn
            .fetch(&set)?
            .iter()
            .filter(|m| !m.seen)
            .map(|m| m.uid)
            .collect();
        let gone: Vec<u32> = open
            .into_iter()
            .filter(|u| !still_unread.contains(u))
            .collect();
        if !gone.is_empty() {
            self.outputs
                .lock()
                .close_messages(&self.account.name, &self.mailbox, &gone);
        }
        Ok(())
    }

    fn announcement(&self, m: &Message) -> Announcement {
        let from = m.from.clone().unwrap_or_default();
        Announcement {
            account: self.account.name.clone(),
            mailbox: self.mailbox.clone(),
            uid: m.uid,
            sender: decode::sender(
                from.name.as_deref(),
                from.mailbox.as_deref(),
                from.host.as_deref(),
            ),
            subject: decode::subject(m.subject.as_deref()),
        }
    }
}

/// The highest UID in the mailbox, for servers whose EXAMINE omits UIDNEXT.
fn highest_uid(conn: &mut Connection) -> Result<Option<u32>, ImapError> {
    Ok(conn.fetch("*")?.iter().map(|m| m.uid).max())
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}
