//! One watched mailbox: the loop that connects, examines, catches up, IDLEs (or polls) and
//! announces, and reconnects after any failure, forever, until told to stop. Or an
//! account's shared connection (`account/(shared)`): one connection for several mailboxes,
//! each still with its own cursor, state file and failure reports, told of new mail by
//! NOTIFY (RFC 5465) or found by STATUS, and looked at in turn (EXAMINE, fetch, UNSELECT).
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

use crate::announce::outputs::{Announcement, SharedOutputs};
use crate::config::patterns;
use crate::config::Account;
use crate::decode;
use crate::event::Event;
use crate::imap::mutf7;
use crate::imap::stream::StopSignal;
use crate::imap::tolerant::Note;
use crate::imap::{
    self, Connection, Headers, ImapError, Interrupter, MailboxStatus, Wake, HEADER_BATCH,
};
use crate::mailbox::backoff::Backoff;
use crate::mailbox::credentials::{self, CredentialError};
use crate::mailbox::newmail::{self, Baseline, Cursor, Seen, Start};
use crate::mailbox::state::{Loaded, StateStore};
use crate::mailbox::unread::Unread;
use crate::status::{Phase, Row, StatusTable};

/// First reconnect delay; the cap is the account's `reconnect_max_secs`.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// A connection that stayed up this long counts as healthy: the next failure starts the
/// backoff from the beginning again.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// An IDLE the server ends sooner than this after it began counts as ended at once...
const QUICK_END: Duration = Duration::from_secs(2);
/// ...and this many in a row make the watcher poll that connection instead of spinning.
const QUICK_ENDS_TO_POLL: u32 = 3;
/// Attempts at reading one message's headers before it is announced as unreadable and
/// passed: one in its batch, then alone, then alone once more (on a later session if the
/// failure took the connection down).
const MAX_READ_ATTEMPTS: u32 = 3;
/// Distinct server warnings remembered per watcher, so each is logged at warning level
/// once and at debug level after that.
const WARNED_TEXTS: usize = 64;
/// Messages remembered as failing to read, at most (a bound on hostile servers).
const FAILING_UIDS: usize = 1024;

#[derive(Debug, Default)]
struct Flags {
    stop: bool,
    reconnect: bool,
    /// Logged in: a stop can end IDLE cleanly (DONE, LOGOUT) rather than cut the socket.
    in_session: bool,
}

/// The supervisor's handle on a running watcher.
#[derive(Debug, Default)]
pub struct Control {
    flags: Mutex<Flags>,
    wake: Condvar,
    socket: Mutex<Option<Interrupter>>,
    /// Ends a blocked IDLE read without cutting the connection (src/imap/stream.rs).
    stop_signal: Arc<StopSignal>,
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
    ///
    /// A watcher that is logged in ends its IDLE, sends DONE and LOGOUT (RFC 3501 §6.1.3),
    /// each answer awaited at most [`STOP_ANSWER`](crate::imap::stream::STOP_ANSWER); one that is
    /// still connecting (lookup, TCP, TLS, login) has its socket cut at once. A server
    /// that does not answer in time is cut by [`Control::cut`].
    pub fn stop(&self) {
        let in_session = {
            let mut flags = self.flags();
            flags.stop = true;
            flags.in_session
        };
        self.wake.notify_all();
        self.stop_signal.raise();
        if !in_session || !self.stop_signal.wakes_reads() {
            self.interrupt();
        }
    }

    /// Cuts the connection now: for a stopped watcher whose server did not answer its
    /// goodbye in time.
    pub fn cut(&self) {
        self.interrupt();
    }

    fn set_in_session(&self, yes: bool) {
        self.flags().in_session = yes;
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

    /// Closes and forgets the socket of a session that ended. The clone held here would
    /// otherwise keep the connection open (and holding one of the server's per-user
    /// connection slots) through the whole backoff.
    fn release(&self) {
        self.set_in_session(false);
        if let Some(s) = self.socket.lock().unwrap_or_else(|e| e.into_inner()).take() {
            s.interrupt();
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
    /// Refused for the server's per-user connection limit, whatever the error's form.
    Limit,
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
    /// The server allows this account no more connections (how many, if it said):
    /// straight to the cap (retrying sooner only knocks on a full door, and some providers
    /// lock out an account that does), said once per account, no "login failed" popup: the
    /// password is fine.
    Limit(Option<u32>),
}

/// The [`Kind`] of an IMAP failure, for "log once per change of state".
fn e_kind(e: &ImapError) -> Kind {
    if e.is_connection_limit() {
        Kind::Limit
    } else {
        Kind::Imap(std::mem::discriminant(e))
    }
}

impl WatchError {
    /// What went wrong, without the details that change from one attempt to the next
    /// (server timings, addresses): two failures of the same kind are the same state.
    fn kind(&self) -> Kind {
        match self {
            WatchError::Imap(e) => e_kind(e),
            WatchError::Credentials(_) => Kind::Credentials,
            WatchError::Reconnect => Kind::Reconnect,
        }
    }

    fn failure(&self) -> Failure {
        match self {
            WatchError::Imap(e) if e.is_connection_limit() => Failure::Limit(e.connection_cap()),
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
    /// Waiting for a connection the server refused for its per-user limit (reported to
    /// the outputs, which say it once per account).
    limited: bool,
    /// Lines already logged at warning level (server warnings, unreadable answers).
    warned: Vec<String>,
    /// Messages whose headers failed to read, with the attempts so far and the last reason.
    failing: std::collections::BTreeMap<u32, (u32, String)>,
    /// UIDs whose headers are being fetched right now: if the session dies meanwhile, each
    /// has used an attempt.
    in_flight: Vec<u32>,
    /// The shared connection's mailboxes (none for a mailbox with a connection of its
    /// own): each keeps its own cursor, state file and failure reports; this watcher
    /// only owns the connection they take turns on. See [`Watcher::shared_session`].
    members: Vec<Watcher>,
    /// This is an account's shared connection (possibly with no members yet: the one that
    /// lists the account's patterns before anything matched).
    is_shared: bool,
    /// Expands the account's `mailboxes` patterns (LIST) at each login, and every
    /// [`NOTIFY_SWEEP`] on a shared connection, for the supervisor
    /// ([`Event::Mailboxes`]).
    lists: bool,
    /// The UIDNEXT this mailbox's last look saw (shared connection only): see
    /// [`newmail::needs_look`].
    looked_up_to: u64,
    /// Until when a member whose mailbox the server refused is left alone.
    absent_until: Option<Instant>,
    /// A member watched through NOTIFY (else checked by STATUS every
    /// `poll_interval_secs`).
    by_notify: bool,
    /// Sweeps in a row that found mail in this member that NOTIFY had not reported.
    unreported: u32,
    /// Members (wire names) still with news after [`LOOKS_IN_A_ROW`] looks: looked at
    /// again before the shared connection waits.
    again: Vec<String>,
    /// NOTIFY stayed silent about this member's new mail: checked by STATUS for the rest
    /// of the watcher's life.
    notify_distrusted: bool,
    /// What the shared connection asks NOTIFY for: less after a server refused more
    /// ([`Watcher::renew_notify`]). Without `FlagChange`, the counts of members watched by
    /// NOTIFY are asked by STATUS every `poll_interval_secs`.
    notify_events: imap::session::SharedEvents,
    /// The unread count of a mailbox with a connection of its own, kept from what the
    /// server reports (src/mailbox/unread.rs). Shared members count by STATUS instead.
    unread: Unread,
    /// The server answered `SEARCH UNSEEN` in this session: `unread` is kept.
    counting: bool,
}

/// The thread and log name of an account's shared connection: `account/(shared)`. The
/// supervisor keys it apart from any mailbox ([`crate::event::SHARED_KEY`]).
pub const SHARED_LABEL: &str = "(shared)";
/// How often the shared connection asks STATUS of every mailbox even though NOTIFY would
/// report news: some servers advertise NOTIFY and never send a thing (imapfilter PR
/// #314). A mailbox found twice in a row with mail NOTIFY did not report is polled.
const NOTIFY_SWEEP: Duration = Duration::from_secs(15 * 60);
/// Looks in a row at one mailbox when mail keeps arriving while it is being looked at.
const LOOKS_IN_A_ROW: u32 = 3;

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
            limited: false,
            warned: Vec::new(),
            failing: std::collections::BTreeMap::new(),
            in_flight: Vec::new(),
            members: Vec::new(),
            is_shared: false,
            lists: false,
            looked_up_to: 0,
            absent_until: None,
            by_notify: false,
            unreported: 0,
            again: Vec::new(),
            notify_distrusted: false,
            notify_events: imap::session::SharedEvents::Counts,
            unread: Unread::default(),
            counting: false,
        }
    }

    /// The watcher of an account's shared connection: one connection, one thread, for
    /// every mailbox in `mailboxes` (at least one). New mail is heard of through NOTIFY
    /// (RFC 5465) where the server offers it and IDLE, else by STATUS every
    /// `poll_interval_secs`; either way a mailbox with news is EXAMINEd, its new mail
    /// fetched and announced as by a watcher of its own, and left again.
    pub fn shared(
        account: Arc<Account>,
        mailboxes: Vec<String>,
        shared: Shared,
        control: Arc<Control>,
    ) -> Self {
        // The members share the connection's Control: a Control of their own would each
        // hold an eventfd they never use (1,000 mailboxes: 1,000 descriptors).
        let members = mailboxes
            .into_iter()
            .map(|m| {
                Watcher::new(
                    Arc::clone(&account),
                    m,
                    shared.clone(),
                    Arc::clone(&control),
                )
            })
            .collect();
        Watcher {
            members,
            is_shared: true,
            ..Watcher::new(account, SHARED_LABEL.to_owned(), shared, control)
        }
    }

    /// Makes this watcher the one that expands the account's `mailboxes` patterns.
    pub fn listing(mut self) -> Self {
        self.lists = true;
        self
    }

    /// LISTs each of the account's patterns and tells the supervisor what they stand for
    /// (src/mailbox/patterns.rs). A pattern the server refuses is logged and matches
    /// nothing this time; a failure of the connection ends the session as any.
    fn list_patterns(&mut self, conn: &mut Connection) -> Result<(), ImapError> {
        let mut listed = Vec::new();
        let account = Arc::clone(&self.account);
        let name = decode::controls_escaped(&account.name);
        for pattern in account.mailboxes.iter().filter(|m| patterns::is_pattern(m)) {
            let got = conn.list(&mutf7::encode(pattern));
            self.report_notes(conn);
            match got {
                Ok(listing) => {
                    for dropped in listing.dropped {
                        self.warn_once(format!(
                            "{name}: the server listed a mailbox named {dropped}, which cannot be named back to it the same way (not valid modified UTF-7, or a line break or NUL in it); not watched"
                        ));
                    }
                    listed.extend(patterns::matching(pattern, listing.listed));
                }
                Err(ImapError::Refused { reason, .. }) => {
                    // What the patterns stood for at the last listing that worked holds.
                    self.warn_once(format!(
                        "{name}: the server refused to list {}: {}; watching what it listed before",
                        decode::controls_escaped(pattern),
                        decode::one_line(&reason)
                    ));
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        let _ = self.events.send(Event::Mailboxes {
            account: self.account.name.clone(),
            mailboxes: patterns::expand(&self.account.mailboxes, &listed),
        });
        Ok(())
    }

    /// `account/mailbox`: the thread name and the prefix of every log line.
    pub fn key(&self) -> String {
        crate::status::row_key(&self.account.name, &self.mailbox)
    }

    /// Updates this watcher's row in the status table; a change of phase is worth a new
    /// systemd STATUS= line.
    fn set_status(&self, f: impl Fn(&mut Row)) {
        let changed = if self.is_shared {
            self.members
                .iter()
                .fold(false, |changed, m| m.update_row(&f) | changed)
        } else {
            self.update_row(&f)
        };
        if changed {
            let _ = self.events.send(Event::StatusChanged);
        }
    }

    /// Updates this mailbox's row (named with its account and mailbox); returns whether
    /// its phase changed.
    ///
    /// Not once stopped: the row may be carried over to the watcher that replaces this
    /// one (src/daemon/supervisor.rs, `retire`), which writes it from then on.
    fn update_row(&self, f: impl FnOnce(&mut Row)) -> bool {
        if self.control.stopping() {
            return false;
        }
        self.status.update(&self.key(), |r| {
            if r.account.is_empty() {
                r.account.clone_from(&self.account.name);
                r.mailbox.clone_from(&self.mailbox);
            }
            f(r)
        })
    }

    /// Runs until stopped. A failed or panicking session is logged and retried after a
    /// backoff delay; nothing here ends the process or touches other watchers.
    pub fn run(mut self) {
        let key = self.key();
        while !self.control.stopping() {
            let started = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| self.session()));
            // Whatever ended the session, its connection goes now, not after the backoff.
            self.control.release();
            self.session_died_reading();
            for member in &mut self.members {
                member.session_died_reading();
            }
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
                if let Some(m) = &message {
                    r.last_error = Some((SystemTime::now(), m.clone()));
                }
            });
            if self.control.sleep(delay) == Sleep::Stop {
                break;
            }
        }
        // Its rows are the supervisor's now: kept for the watcher that replaces this one,
        // removed where none does.
        if self.limited {
            // Stopped while waiting for a connection: no longer waiting, nothing to announce.
            self.outputs
                .lock()
                .connection_free(&self.account.name, &key, false);
        }
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
            Failure::Limit(cap) => {
                // The supervisor may make room: fewer connections, more mailboxes on the
                // shared one (src/daemon/budget.rs).
                let unit = if !self.is_shared {
                    self.mailbox.clone()
                } else {
                    crate::event::SHARED_KEY.to_owned()
                };
                let _ = self.events.send(Event::ConnectionLimit {
                    key: (self.account.name.clone(), unit),
                    cap,
                });
                self.limited = true;
                outputs.connection_limited(&self.account.name, &self.key(), message, &retry, cap);
            }
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
        if std::mem::take(&mut self.limited) {
            self.outputs
                .lock()
                .connection_free(&self.account.name, &self.key(), true);
        } else {
            self.outputs.lock().account_connected(&self.account.name);
        }
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
        let mut conn = imap::connect(
            &self.account,
            &password,
            Arc::clone(&self.control.stop_signal),
            |i| control.register(i),
        )?;
        self.control.set_in_session(true);
        if self.control.stopping() {
            // A stop that came during the login found no session to end cleanly.
            conn.logout();
            return Ok(());
        }
        drop(password);
        self.outputs.lock().login_ok(&self.account.name);
        // What the server offers decides how the account's mailboxes share connections.
        let _ = self.events.send(Event::Capabilities {
            account: self.account.name.clone(),
            notify: conn.capabilities.notify && conn.capabilities.idle,
            idle: conn.capabilities.idle,
        });
        if self.lists {
            self.list_patterns(&mut conn)?;
        }
        if self.is_shared {
            return self.shared_session(conn);
        }

        // Every EXISTS, EXPUNGE and FLAGS from EXAMINE's answer on: the unread count.
        conn.record_changes();
        let status = conn.examine(&self.wire_mailbox, &self.mailbox);
        self.report_notes(&mut conn);
        let status = status?;
        self.report_recovery();
        self.unread.reset();
        let searched = Instant::now();
        self.counting = self.search_unseen(&mut conn)?;
        self.publish_unread(&mut conn)?;
        if let Some(n) = self.unread.count() {
            log::debug!(
                "{key}: {n} unread (SEARCH UNSEEN in {:.3} ms)",
                searched.elapsed().as_secs_f64() * 1e3
            );
        }
        self.examined(&mut conn, status, Instant::now(), true)?;
        let mode = if conn.capabilities.idle {
            "IDLE".to_owned()
        } else {
            format!(
                "no IDLE on this server, polling every {}s",
                self.account.poll_interval.as_secs()
            )
        };
        log::info!("watching {key} ({mode})");
        let idle = conn.capabilities.idle;
        self.set_status(|r| {
            r.phase = if idle { Phase::Idling } else { Phase::Polling };
            r.connected_since = Some(SystemTime::now());
        });

        // IDLEs in a row that the server ended within QUICK_END of their start.
        let mut quick_ends = 0u32;
        let mut last_list = Instant::now();
        loop {
            self.publish_unread(&mut conn)?;
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
                // Flag changes and expunges move the unread count, and may close popups.
                let wake_on_flags = self.counting || !self.open_popups().is_empty();
                let idle_started = Instant::now();
                let wake = conn.idle(self.account.idle_refresh, wake_on_flags);
                self.report_notes(&mut conn);
                if self.control.stopping() && wake.is_ok() {
                    // The stop ended IDLE (DONE is answered): say goodbye, look no further.
                    conn.logout();
                    return Ok(());
                }
                if !matches!(wake, Ok(Wake::EndedByServer)) {
                    quick_ends = 0;
                }
                match wake? {
                    Wake::Changed { at } => {
                        log::debug!("{key}: woken by the server");
                        at
                    }
                    Wake::Refresh => {
                        log::debug!("{key}: refreshing IDLE");
                        Instant::now()
                    }
                    Wake::Silence => {
                        log::debug!(
                            "{key}: no word from the server for {}s; it answered DONE, so the link is alive",
                            self.account.idle_silence.as_secs()
                        );
                        Instant::now()
                    }
                    Wake::EndedByServer => {
                        // Some servers end IDLE on their own schedule: normal, not news.
                        // One that ends every IDLE at once would have us spin: poll it.
                        quick_ends = if idle_started.elapsed() < QUICK_END {
                            quick_ends + 1
                        } else {
                            0
                        };
                        if quick_ends >= QUICK_ENDS_TO_POLL {
                            log::warn!(
                                "{key}: the server ends every IDLE at once; checking every {}s instead",
                                self.account.poll_interval.as_secs()
                            );
                            conn.capabilities.idle = false;
                            self.set_status(|r| r.phase = Phase::Polling);
                        } else {
                            log::debug!("{key}: the server ended IDLE; re-issuing it");
                        }
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
                let noop = conn.noop();
                self.report_notes(&mut conn);
                noop?;
                Instant::now()
            };
            // Any wake-up is only a hint: responses after the one that woke us were
            // discarded by the crate, so ask the server what is new since the cursor.
            self.check(&mut conn, woke, false)?;
            if self.lists && last_list.elapsed() >= NOTIFY_SWEEP {
                // Mailboxes created or deleted on the server since (at the next IDLE
                // refresh at the latest).
                self.list_patterns(&mut conn)?;
                last_list = Instant::now();
            }
        }
    }

    /// The shared connection's session, once logged in: every member is looked at (a
    /// catch-up, as after any reconnect), then news is awaited: through NOTIFY and IDLE
    /// where the server offers both, else by STATUS of every member every
    /// `poll_interval_secs`. A member NOTIFY is not trusted with (see
    /// [`Watcher::by_notify`]) is checked by STATUS on that schedule alongside. A member
    /// whose mailbox the server refuses is left alone for `reconnect_max_secs` and costs
    /// only itself; a failure of the connection ends the session for all, to be retried as
    /// any watcher's.
    fn shared_session(&mut self, mut conn: Connection) -> Result<(), WatchError> {
        let key = self.key();
        // NOTIFY first, then one STATUS of every member (the catch-up): mail that comes
        // after its STATUS is reported, none falls in between. A mailbox that turns out
        // to be gone stays named in NOTIFY until the set next changes (Dovecot takes a name
        // that does not exist, and reports the others).
        let offered = conn.capabilities.notify && conn.capabilities.idle;
        for m in &mut self.members {
            m.by_notify = offered && m.notify_trusted();
        }
        let mut notified: Vec<String> = Vec::new();
        self.renew_notify(&mut conn, &mut notified, false)?;
        self.sweep(&mut conn, true, |_| true)?;
        // Once more, unchanged: Dovecot 2.3 watches its mailbox list index with inotify
        // from NOTIFY SET on, and the sweep's STATUS of many mailboxes can rotate that
        // index's log twice; the watch is then gone and Dovecot finds new mail only by its
        // `mailbox_idle_check_interval` timer (30 s by default). A new NOTIFY SET watches
        // the current log (measured at 1,000 mailboxes, docs/PERFORMANCE.md).
        self.refresh_notify(&mut conn, &mut notified)?;
        // Only now: a server at its limit may accept the login and refuse every command
        // after it (Outlook's "User is authenticated but not connected").
        self.report_recovery();
        for m in self.members.iter().filter(|m| m.absent_until.is_none()) {
            log::info!(
                "watching {} (shared connection, {})",
                m.key(),
                m.how(&self.account)
            );
        }
        self.set_member_phases();
        let mut last_sweep = Instant::now();
        let mut last_poll = Instant::now();
        let mut last_list = Instant::now();
        let mut quick_ends = 0u32;
        loop {
            if self.control.stopping() {
                conn.logout();
                return Ok(());
            }
            let notify = self.members.iter().any(|m| m.by_notify);
            // Without FlagChange, NOTIFY does not say when mail is read elsewhere: the
            // counts of its members are asked by STATUS on the polling schedule.
            let flags = self.notify_events == imap::session::SharedEvents::Counts;
            let polled = self.members.iter().any(|m| !m.by_notify || !flags);
            let mut woke = Instant::now();
            let mut reported = conn.take_statuses();
            for wire in std::mem::take(&mut self.again) {
                reported.entry(wire).or_insert(None);
            }
            if reported.is_empty() {
                // Never longer than a sweep: a shared connection with nothing to poll
                // (NOTIFY for all, or no member yet) still lists its patterns again.
                let until_poll = if polled {
                    self.account
                        .poll_interval
                        .saturating_sub(last_poll.elapsed())
                } else {
                    NOTIFY_SWEEP.saturating_sub(last_list.elapsed())
                }
                .min(NOTIFY_SWEEP);
                if notify {
                    let until_sweep = NOTIFY_SWEEP.saturating_sub(last_sweep.elapsed());
                    let wait = self
                        .account
                        .idle_refresh
                        .min(until_sweep)
                        .min(until_poll)
                        .max(Duration::from_secs(1));
                    let idle_started = Instant::now();
                    let wake = conn.idle(wait, false);
                    self.report_notes(&mut conn);
                    if self.control.take_reconnect() {
                        return Err(WatchError::Reconnect);
                    }
                    match wake? {
                        Wake::Changed { at } => woke = at,
                        Wake::Unexpected(line) => self.warn_once(format!(
                            "{key}: unexpected server response during IDLE: {}",
                            decode::one_line(&line)
                        )),
                        Wake::EndedByServer if idle_started.elapsed() < QUICK_END => {
                            quick_ends += 1;
                            if quick_ends >= QUICK_ENDS_TO_POLL {
                                log::warn!(
                                    "{key}: the server ends every IDLE at once; checking every {}s instead",
                                    self.account.poll_interval.as_secs()
                                );
                                for m in &mut self.members {
                                    m.by_notify = false;
                                }
                                self.set_member_phases();
                            }
                        }
                        Wake::EndedByServer | Wake::Refresh | Wake::Silence => quick_ends = 0,
                    }
                    reported = conn.take_statuses();
                } else {
                    match self.control.sleep(until_poll) {
                        Sleep::Stop => {
                            conn.logout();
                            return Ok(());
                        }
                        Sleep::Reconnect => return Err(WatchError::Reconnect),
                        Sleep::Elapsed => {}
                    }
                }
            }
            for (wire, uid_next) in reported {
                let Some(i) = self
                    .members
                    .iter()
                    .position(|m| imap::session::wire_key(&m.wire_mailbox) == wire)
                else {
                    continue;
                };
                let m = &mut self.members[i];
                m.unreported = 0;
                if m.absent_until.is_some() {
                    continue;
                }
                // A report with a UIDNEXT past the cursor is new mail: look. Any other
                // (an expunge, a flag change, a look to finish) is worth one STATUS,
                // which says the unread count and whether to look after all.
                if uid_next.is_some() && m.wants_look(None, uid_next) {
                    self.look(i, &mut conn, woke, false)?;
                } else {
                    self.recount(i, &mut conn, woke)?;
                }
            }
            if self.lists && last_list.elapsed() >= NOTIFY_SWEEP {
                // Mailboxes created or deleted on the server since: the supervisor moves
                // them in or out.
                self.list_patterns(&mut conn)?;
                last_list = Instant::now();
            }
            if notify && last_sweep.elapsed() >= NOTIFY_SWEEP {
                // Every member: NOTIFY's too, to catch a server that stays silent.
                let found = self.sweep(&mut conn, false, |_| true)?;
                last_sweep = Instant::now();
                last_poll = last_sweep;
                self.distrust_silent(&found);
                self.renew_notify(&mut conn, &mut notified, true)?;
                self.refresh_notify(&mut conn, &mut notified)?;
            } else if polled && last_poll.elapsed() >= self.account.poll_interval {
                self.sweep(&mut conn, false, |m| !m.by_notify || !flags)?;
                last_poll = Instant::now();
                if notify {
                    // A member that came back is watched by NOTIFY from now on.
                    self.renew_notify(&mut conn, &mut notified, true)?;
                }
            }
        }
    }

    /// After a sweep that found mail in `found` (mailbox names): a member watched by
    /// NOTIFY that had mail NOTIFY never reported, at two sweeps in a row (one could be
    /// a report still on its way), is checked by STATUS from now on, and that is said.
    fn distrust_silent(&mut self, found: &[String]) {
        let key = self.key();
        let poll = self.account.poll_interval.as_secs();
        let mut changed = false;
        for m in self.members.iter_mut().filter(|m| m.by_notify) {
            if !found.contains(&m.mailbox) {
                m.unreported = 0;
                continue;
            }
            m.unreported += 1;
            if m.unreported >= 2 {
                log::warn!(
                    "{key}: the server offers NOTIFY but did not report new mail in {}; checking it every {poll}s instead",
                    m.key()
                );
                m.by_notify = false;
                m.notify_distrusted = true;
                changed = true;
            }
        }
        if changed {
            self.set_member_phases();
        }
    }

    /// Sends NOTIFY SET for the members watched by NOTIFY that the server did not
    /// refuse, if that set changed since `notified` (none: nothing sent), then, with
    /// `then_sweep`, asks STATUS of each once more: mail that came between their last
    /// STATUS and the new setting would be reported by nobody. Past
    /// [`imap::session::NOTIFY_NAMES_MAX`] names the session asks for `personal`. A
    /// refusal with more than one name halves the set (the others are checked by STATUS)
    /// until the server takes it. False when no member is watched by NOTIFY any more.
    fn renew_notify(
        &mut self,
        conn: &mut Connection,
        notified: &mut Vec<String>,
        then_sweep: bool,
    ) -> Result<bool, ImapError> {
        let key = self.key();
        let mut first_refusal: Option<(usize, String)> = None;
        // A refusal of the events (not of the names): the first reason, and what was asked.
        let mut events_refused: Option<(imap::session::SharedEvents, String)> = None;
        loop {
            let present: Vec<String> = self
                .members
                .iter()
                .filter(|m| m.by_notify && m.absent_until.is_none())
                // INBOX as INBOX: Dovecot's NOTIFY matches names as written, and "Inbox"
                // is never reported.
                .map(|m| imap::session::wire_key(&m.wire_mailbox))
                .collect();
            if present == *notified {
                return Ok(self.members.iter().any(|m| m.by_notify));
            }
            let names: Vec<&str> = present.iter().map(String::as_str).collect();
            let result = conn.notify_mailboxes(&names, self.notify_events);
            self.report_notes(conn);
            match result {
                Ok(()) => {
                    *notified = present;
                    if let Some((asked, reason)) = events_refused.take() {
                        log::warn!(
                            "{key}: the server refused NOTIFY {} ({}) and took {}; the unread counts of the mailboxes it reports follow mail read elsewhere every {}s",
                            asked.list(),
                            decode::one_line(&reason),
                            self.notify_events.list(),
                            self.account.poll_interval.as_secs()
                        );
                    }
                    if let Some((asked, reason)) = first_refusal {
                        log::warn!(
                            "{key}: the server refused NOTIFY for {asked} mailboxes ({}) and took {}; the others are checked every {}s",
                            decode::one_line(&reason),
                            notified.len(),
                            self.account.poll_interval.as_secs()
                        );
                        self.set_member_phases();
                    }
                    if then_sweep {
                        self.sweep(conn, false, |m| m.by_notify)?;
                    }
                    return Ok(self.members.iter().any(|m| m.by_notify));
                }
                // Refused for the events (RFC 5465 section 5.3: `BAD [BADEVENT ...]`; a
                // server may say less): the same names with fewer events first, unless the
                // server says it was the names (`[NOTIFICATIONOVERFLOW]`).
                Err(ImapError::Refused { ref reason, .. })
                    if !reason.to_ascii_uppercase().contains("NOTIFICATIONOVERFLOW")
                        && self.notify_events.weaker().is_some() =>
                {
                    events_refused.get_or_insert((self.notify_events, reason.clone()));
                    self.notify_events = self.notify_events.weaker().unwrap_or(self.notify_events);
                }
                Err(ImapError::Refused { reason, .. }) => {
                    // Not the events after all: ask for them all again, with fewer names
                    // (below) or none.
                    if let Some((asked, first)) = events_refused.take() {
                        self.notify_events = asked;
                        first_refusal.get_or_insert((present.len(), first));
                    }
                    if present.len() > 1 {
                        first_refusal.get_or_insert((present.len(), reason));
                        // The second half is checked by STATUS from now on.
                        let keep = present.len() / 2;
                        for m in self
                            .members
                            .iter_mut()
                            .filter(|m| m.by_notify && m.absent_until.is_none())
                            .skip(keep)
                        {
                            m.by_notify = false;
                        }
                        continue;
                    }
                    log::warn!(
                        "{key}: the server refused NOTIFY ({}); checking every {}s instead",
                        decode::one_line(&first_refusal.map_or(reason, |(_, r)| r)),
                        self.account.poll_interval.as_secs()
                    );
                    for m in &mut self.members {
                        m.by_notify = false;
                    }
                    *notified = Vec::new();
                    self.set_member_phases();
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends the NOTIFY SET in force again, after a sweep (see the start of
    /// [`Watcher::shared_session`]): coverage is continuous, as the new setting replaces
    /// the old one.
    fn refresh_notify(
        &mut self,
        conn: &mut Connection,
        notified: &mut Vec<String>,
    ) -> Result<(), ImapError> {
        if notified.is_empty() {
            return Ok(());
        }
        notified.clear();
        self.renew_notify(conn, notified, false)?;
        Ok(())
    }

    /// Whether NOTIFY can be trusted to report new mail in this member's mailbox. Not
    /// after it stayed silent about some ([`Watcher::distrust_silent`]), and not for a
    /// name outside printable ASCII (modified UTF-7 on the wire, RFC 3501 section 5.1.3):
    /// Dovecot 2.3.19 accepts such a name in NOTIFY SET and never reports it (with
    /// `personal` it reports it under a garbled name), as tested here.
    fn notify_trusted(&self) -> bool {
        !self.notify_distrusted && !self.wire_mailbox.contains('&')
    }

    /// How this member is watched, for the log.
    fn how(&self, account: &Account) -> String {
        let poll = account.poll_interval.as_secs();
        if self.by_notify {
            "new mail reported by NOTIFY".to_owned()
        } else if self.wire_mailbox.contains('&') && !self.notify_distrusted {
            format!("checked by STATUS every {poll}s: NOTIFY is not relied on for non-ASCII names")
        } else {
            format!("checked by STATUS every {poll}s")
        }
    }

    /// Marks each member the server did not refuse as watched: by NOTIFY (idling) or by
    /// STATUS (polling).
    fn set_member_phases(&self) {
        for m in self.members.iter().filter(|m| m.absent_until.is_none()) {
            let notify = m.by_notify;
            m.set_status(|r| {
                r.phase = if notify {
                    Phase::Idling
                } else {
                    Phase::Polling
                };
                r.next_retry = None;
                if r.connected_since.is_none() {
                    r.connected_since = Some(SystemTime::now());
                }
            });
        }
    }

    /// STATUS of the members `which` selects and the server did not refuse, and a look at
    /// each that has news. Returns the members that had some. `catching_up`: the first
    /// sweep of a session, whose finds are a catch-up (one summary past `catch_up_max`).
    fn sweep(
        &mut self,
        conn: &mut Connection,
        catching_up: bool,
        which: impl Fn(&Watcher) -> bool,
    ) -> Result<Vec<String>, ImapError> {
        let mut found = Vec::new();
        for i in 0..self.members.len() {
            if self.control.stopping() {
                // The session's loop says goodbye; the rest waits for the next start.
                break;
            }
            let m = &self.members[i];
            if !which(m) || m.absent_until.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            let status = conn.status(&m.wire_mailbox, &m.mailbox);
            self.report_notes(conn);
            let Some(status) = self.member_answer(i, status)? else {
                continue;
            };
            let m = &mut self.members[i];
            m.update_row(|r| r.unread = status.unseen);
            if m.absent_until.take().is_some() {
                m.report_recovery();
                log::info!(
                    "watching {} (shared connection, {})",
                    m.key(),
                    m.how(&self.account)
                );
                let notify = m.by_notify;
                m.set_status(|r| {
                    r.phase = if notify {
                        Phase::Idling
                    } else {
                        Phase::Polling
                    }
                });
            }
            if m.wants_look(status.uid_validity, status.uid_next) {
                found.push(m.mailbox.clone());
                self.look(i, conn, Instant::now(), catching_up)?;
            }
        }
        Ok(found)
    }

    /// Looks at member `i`: EXAMINE, catch up from its cursor, leave it. Then asks STATUS
    /// again, because mail that arrives while a mailbox is selected may be reported for
    /// the selected mailbox only (RFC 5465 section 5.2), not as the STATUS NOTIFY sends
    /// for the others; while there is more, looks again, at most [`LOOKS_IN_A_ROW`]
    /// times (the next sweep or report brings the rest).
    fn look(
        &mut self,
        i: usize,
        conn: &mut Connection,
        woke: Instant,
        catching_up: bool,
    ) -> Result<(), ImapError> {
        for _ in 0..LOOKS_IN_A_ROW {
            let m = &mut self.members[i];
            let status = conn.examine(&m.wire_mailbox, &m.mailbox);
            m.report_notes(conn);
            let Some(status) = self.member_answer(i, status)? else {
                return Ok(());
            };
            let m = &mut self.members[i];
            m.report_recovery();
            m.examined(conn, status, woke, catching_up)?;
            match conn.unselect() {
                Ok(()) => {}
                Err(ImapError::Refused { reason, .. }) => {
                    let line = format!(
                        "{}: the server refused UNSELECT and CLOSE ({}); the mailbox stays selected",
                        self.key(),
                        decode::one_line(&reason)
                    );
                    self.warn_once(line);
                }
                Err(e) => return Err(e),
            }
            let m = &self.members[i];
            let after = conn.status(&m.wire_mailbox, &m.mailbox);
            self.report_notes(conn);
            let Some(after) = self.member_answer(i, after)? else {
                return Ok(());
            };
            self.members[i].update_row(|r| r.unread = after.unseen);
            if !self.members[i].wants_look(after.uid_validity, after.uid_next) {
                return Ok(());
            }
        }
        // Mail keeps coming: the rest after the others had their turn.
        let wire = imap::session::wire_key(&self.members[i].wire_mailbox);
        if !self.again.contains(&wire) {
            self.again.push(wire);
        }
        Ok(())
    }

    /// One STATUS of member `i`: its unread count, and a look if it has news.
    fn recount(&mut self, i: usize, conn: &mut Connection, woke: Instant) -> Result<(), ImapError> {
        let m = &self.members[i];
        let status = conn.status(&m.wire_mailbox, &m.mailbox);
        self.report_notes(conn);
        let Some(status) = self.member_answer(i, status)? else {
            return Ok(());
        };
        let m = &mut self.members[i];
        m.update_row(|r| r.unread = status.unseen);
        if m.wants_look(status.uid_validity, status.uid_next) {
            self.look(i, conn, woke, false)?;
        }
        Ok(())
    }

    /// `SEARCH UNSEEN` for the unread count: whether the server answered. A refusal costs
    /// the count only (said once), not the connection.
    fn search_unseen(&mut self, conn: &mut Connection) -> Result<bool, ImapError> {
        match conn.search_unseen() {
            Ok(()) => Ok(true),
            Err(ImapError::Refused { reason, .. }) => {
                let line = format!(
                    "{}: the server refused SEARCH UNSEEN ({}); no unread count for this mailbox",
                    self.key(),
                    decode::one_line(&reason)
                );
                self.warn_once(line);
                self.update_row(|r| r.unread = None);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Follows what the server reported since the last call (src/mailbox/unread.rs) and
    /// puts the unread count in the status table. A change that did not fit costs one
    /// more `SEARCH UNSEEN`; a record that overflowed (a bulk change of more than
    /// 65,536 messages between two wakes) one more EXAMINE as well, for the number of
    /// messages.
    fn publish_unread(&mut self, conn: &mut Connection) -> Result<(), ImapError> {
        if !self.counting {
            return Ok(());
        }
        for attempt in 0..2 {
            let (changes, overflowed) = conn.take_changes();
            if overflowed {
                self.unread.reset();
                conn.record_changes();
                let status = conn.examine(&self.wire_mailbox, &self.mailbox);
                self.report_notes(conn);
                status?;
                self.counting = self.search_unseen(conn)?;
                continue;
            }
            for change in &changes {
                self.unread.apply(change);
            }
            if !self.unread.needs_search() || attempt == 1 {
                break;
            }
            self.counting = self.search_unseen(conn)?;
            if !self.counting {
                return Ok(());
            }
        }
        if self.unread.oversized() {
            self.warn_once(format!(
                "{}: the server says this mailbox holds more than {} messages; no unread count for it",
                self.key(),
                crate::mailbox::unread::MAX_MESSAGES
            ));
        }
        let count = self.unread.count();
        self.update_row(|r| r.unread = count);
        Ok(())
    }

    /// The answer to a command about member `i`'s mailbox: `None` when the server refused
    /// that mailbox (it costs only that member: [`Watcher::member_absent`]); an error of
    /// the connection, or a refusal in the words of the connection limit, is the
    /// session's.
    fn member_answer<T>(
        &mut self,
        i: usize,
        answer: Result<T, ImapError>,
    ) -> Result<Option<T>, ImapError> {
        match answer {
            Ok(t) => Ok(Some(t)),
            Err(e @ ImapError::Mailbox { .. }) if !e.is_connection_limit() => {
                self.member_absent(i, &e);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Member `i`'s mailbox was refused (gone, renamed, not allowed): said as for a watcher
    /// of its own, and the member is left alone for `reconnect_max_secs`; the others carry
    /// on.
    fn member_absent(&mut self, i: usize, e: &ImapError) {
        let delay = self.account.reconnect_max;
        let m = &mut self.members[i];
        let message = format!("{}: {}", m.key(), decode::controls_escaped(&e.to_string()));
        m.report_failure(&message, Failure::Mailbox, e_kind(e), delay);
        m.absent_until = Some(Instant::now() + delay);
        m.set_status(|r| {
            r.phase = Phase::Retrying;
            r.next_retry = Some(SystemTime::now() + delay);
            r.last_error = Some((SystemTime::now(), message.clone()));
        });
    }

    /// Whether this member needs a look, given what STATUS or NOTIFY said.
    fn wants_look(&mut self, uid_validity: Option<u32>, uid_next: Option<u32>) -> bool {
        if !self.state_loaded {
            self.cursor = self.saved_cursor();
        }
        newmail::needs_look(self.cursor, self.looked_up_to, uid_validity, uid_next)
    }

    /// After EXAMINE: where to start from (the saved cursor, or a baseline), then the
    /// catch-up: what arrived while nobody watched is announced (as one summary past
    /// `catch_up_max`).
    fn examined(
        &mut self,
        conn: &mut Connection,
        status: MailboxStatus,
        woke: Instant,
        catching_up: bool,
    ) -> Result<(), ImapError> {
        let key = self.key();
        // UIDVALIDITY is mandatory (RFC 3501); a server that omits it gets a constant, which
        // still lets a reconnect resume.
        let uid_validity = status.uid_validity.unwrap_or(0);
        let uid_next = match status.uid_next {
            Some(n) => n,
            None if status.exists == 0 => 1,
            None => highest_uid(conn)?.map_or(1, |u| u.saturating_add(1)),
        };
        let previous = self.saved_cursor();
        let start = newmail::start(previous, uid_validity, uid_next, status.uid_next.is_some());
        self.cursor = Some(start.cursor());
        match start {
            Start::Baseline { why, .. } => {
                match why {
                    Baseline::First => {}
                    Baseline::ValidityChanged => log::warn!(
                        "{key}: UIDVALIDITY changed ({} -> {uid_validity}); mail already there is not announced again",
                        previous.map_or(0, |c| c.uid_validity)
                    ),
                    Baseline::UidNextWentBack => log::warn!(
                        "{key}: the server's UIDNEXT ({uid_next}) is below the next UID mailpushd expected ({}) with UIDVALIDITY unchanged (a server restored from a backup?); starting afresh from UIDNEXT, mail already there is not announced",
                        previous.map_or(0, |c| c.next_uid)
                    ),
                }
                self.failing.clear();
                self.save();
            }
            Start::Resume(_) => self.check(conn, woke, catching_up)?,
        }
        if let Some(uid_next) = status.uid_next {
            self.looked_up_to = u64::from(uid_next);
        }
        Ok(())
    }

    /// Fetches everything from the cursor on, announces what is new and unread, and saves
    /// the new position. Right after a (re)connect (`catching_up`), more than
    /// `catch_up_max` messages become one summary popup (every syslog line still goes out).
    ///
    /// Flags first (`UID FLAGS`, the least structure to misread), then the From and
    /// Subject lines of the unread ones, [`HEADER_BATCH`] at a time; the cursor moves and
    /// is saved after each batch, so a bulk arrival is announced piece by piece and a
    /// failure costs at most the batch in hand. A message whose headers cannot be read
    /// is tried again alone, and after [`MAX_READ_ATTEMPTS`] announced as unreadable and
    /// passed: the cursor never waits for it.
    fn check(
        &mut self,
        conn: &mut Connection,
        woke: Instant,
        catching_up: bool,
    ) -> Result<(), ImapError> {
        let Some(cursor) = self.cursor else {
            return Ok(());
        };
        let range = cursor.fetch_range();
        let flags = conn.fetch_flags(&range);
        let unreadable = self.report_notes(conn);
        let mut flags = flags?;
        if !unreadable.is_empty() {
            // Some FETCH lines could not be read: the UIDs they were about are learnt from
            // SEARCH (a list of numbers) and treated as unread, so none is passed over.
            let listed = conn.search_uids(&range);
            self.report_notes(conn);
            for uid in listed? {
                if !flags.iter().any(|f| f.uid == uid) {
                    flags.push(Seen { uid, seen: false });
                }
            }
        }
        for piece in newmail::pieces(&flags, HEADER_BATCH) {
            self.check_piece(conn, &piece, woke, catching_up)?;
        }
        self.close_popups_read_elsewhere(conn)
    }

    /// One batch of [`Watcher::check`]: headers, announcements, cursor.
    fn check_piece(
        &mut self,
        conn: &mut Connection,
        piece: &[Seen],
        woke: Instant,
        catching_up: bool,
    ) -> Result<(), ImapError> {
        let Some(mut cursor) = self.cursor else {
            return Ok(());
        };
        let fresh = cursor.advance(piece);
        let mut read: Vec<Headers> = Vec::with_capacity(fresh.len());
        // In the batch, unless they failed before: those are fetched alone.
        let (alone, batch): (Vec<u32>, Vec<u32>) = fresh
            .iter()
            .copied()
            .filter(|uid| self.attempts(*uid) < MAX_READ_ATTEMPTS)
            .partition(|uid| self.attempts(*uid) > 0);
        if !batch.is_empty() {
            read.extend(self.fetch_headers(conn, &batch)?);
        }
        let missing: Vec<u32> = batch
            .iter()
            .copied()
            .filter(|uid| !read.iter().any(|h| h.uid == *uid))
            .chain(alone)
            .collect();
        for uid in missing {
            // Alone, until it is read or its attempts run out.
            while self.attempts(uid) < MAX_READ_ATTEMPTS {
                let got = self.fetch_headers(conn, &[uid])?;
                if let Some(h) = got.into_iter().find(|h| h.uid == uid) {
                    read.push(h);
                    break;
                }
            }
        }
        let announcements: Vec<Announcement> = fresh
            .iter()
            .map(|uid| match read.iter().find(|h| h.uid == *uid) {
                Some(h) => self.announcement(h),
                None => self.unreadable_announcement(*uid),
            })
            .collect();
        for uid in &fresh {
            self.failing.remove(uid);
        }
        if let Some(last) = announcements.last() {
            let event = format!(
                "{} new message(s), last uid {}",
                announcements.len(),
                last.uid
            );
            let announced = u32::try_from(announcements.len()).unwrap_or(u32::MAX);
            self.outputs.lock().announce(
                &self.account,
                &self.mailbox,
                &announcements,
                catching_up,
                woke,
            );
            // After the popup: what the D-Bus interface then sends does not delay it.
            self.update_row(|r| {
                r.last_event = Some((SystemTime::now(), event));
                r.new = r.new.saturating_add(announced);
            });
        }
        // Saved after announcing: a crash in between repeats a popup rather than losing one.
        let moved = Some(cursor) != self.cursor;
        self.cursor = Some(cursor);
        if moved {
            self.save();
        }
        Ok(())
    }

    /// `fetch_headers` for `uids`, counting an attempt for each one it does not return
    /// (and, through `in_flight`, for each if the session dies on the way).
    fn fetch_headers(
        &mut self,
        conn: &mut Connection,
        uids: &[u32],
    ) -> Result<Vec<Headers>, ImapError> {
        self.in_flight = uids.to_vec();
        let got = conn.fetch_headers(&uid_set(uids));
        self.report_notes(conn);
        self.in_flight.clear();
        let (got, reason) = match got {
            Ok(got) => (
                got,
                "the server's answer for it could not be read, or it was missing".to_owned(),
            ),
            // A tagged NO (Gmail: "Some messages could not be FETCHed") fails the command,
            // not the session: each message in it has used an attempt.
            Err(ImapError::Refused { reason, .. }) => (
                Vec::new(),
                format!(
                    "the server refused to fetch it: {}",
                    decode::one_line(&reason)
                ),
            ),
            Err(e) => {
                self.in_flight = uids.to_vec();
                return Err(e);
            }
        };
        for uid in uids {
            if !got.iter().any(|h| h.uid == *uid) {
                self.attempt_failed(*uid, reason.clone());
            }
        }
        Ok(got)
    }

    /// After a session that died while headers were being fetched: each has used an
    /// attempt, so a message that takes the connection down every time is passed in the
    /// end.
    fn session_died_reading(&mut self) {
        for uid in std::mem::take(&mut self.in_flight) {
            self.attempt_failed(uid, "the connection failed while reading it".to_owned());
        }
    }

    fn attempts(&self, uid: u32) -> u32 {
        self.failing.get(&uid).map_or(0, |(n, _)| *n)
    }

    fn attempt_failed(&mut self, uid: u32, reason: String) {
        if self.failing.len() >= FAILING_UIDS && !self.failing.contains_key(&uid) {
            // A bound for hostile servers: forget the oldest (lowest) entry.
            self.failing.pop_first();
        }
        let entry = self.failing.entry(uid).or_insert((0, String::new()));
        entry.0 += 1;
        entry.1 = reason;
    }

    /// The announcement for a message that could not be read after every attempt, logged
    /// once with its UID and why.
    fn unreadable_announcement(&mut self, uid: u32) -> Announcement {
        let reason = self
            .failing
            .get(&uid)
            .map_or_else(|| "unknown".to_owned(), |(_, r)| r.clone());
        log::warn!(
            "{}: message uid {uid} could not be read after {MAX_READ_ATTEMPTS} attempts ({reason}); announcing it without sender and subject and moving on",
            self.key()
        );
        Announcement {
            account: self.account.name.clone(),
            mailbox: self.mailbox.clone(),
            uid,
            sender: decode::Sender::default(),
            subject: UNREADABLE_SUBJECT.to_owned(),
        }
    }

    /// Logs what the tolerant layer did during the last command and returns the notes
    /// about lines it could not read. A server's warning (untagged NO/BAD) is logged at
    /// warning level the first time its text is seen, at debug level after that.
    fn report_notes(&mut self, conn: &mut Connection) -> Vec<Note> {
        let key = self.key();
        let mut unreadable = Vec::new();
        for note in conn.take_notes() {
            match &note {
                Note::Warning(text) => {
                    let line = format!("{key}: the server says: {}", decode::one_line(text));
                    self.warn_once(line);
                }
                Note::Unreadable {
                    context, excerpt, ..
                } => {
                    self.warn_once(format!(
                        "{key}: could not parse the server's answer to {context}: {excerpt}; skipped that line"
                    ));
                    unreadable.push(note);
                }
                Note::Dropped { context, excerpt } => log::debug!(
                    "{key}: set aside a response the {context} command does not expect: {excerpt}"
                ),
                Note::Normalised { context, excerpt } => log::debug!(
                    "{key}: mended a response to {context} that bends the grammar: {excerpt}"
                ),
                Note::IdleEndedByServer | Note::Bye(_) => {}
            }
        }
        unreadable
    }

    /// Logs `line` at warning level the first time, at debug level after that: a server
    /// that repeats a warning (a quota notice at every EXAMINE, an unreadable newest
    /// message at every look) is heard once.
    fn warn_once(&mut self, line: String) {
        if self.warned.contains(&line) {
            log::debug!("{line}");
            return;
        }
        log::warn!("{line}");
        if self.warned.len() >= WARNED_TEXTS {
            self.warned.remove(0);
        }
        self.warned.push(line);
    }

    /// UIDs of this mailbox's messages that have a popup on screen.
    fn open_popups(&self) -> Vec<u32> {
        self.outputs
            .lock()
            .open_uids(&self.account.name, &self.mailbox)
    }

    /// Closes the popups of messages that were read (`\Seen`) or deleted elsewhere since
    /// they were shown. Asks the server for just those UIDs' flags; nothing when none are
    /// open.
    fn close_popups_read_elsewhere(&mut self, conn: &mut Connection) -> Result<(), ImapError> {
        let open = self.open_popups();
        if open.is_empty() {
            return Ok(());
        }
        let flags = conn.fetch_flags(&uid_set(&open));
        self.report_notes(conn);
        let still_unread: Vec<u32> = flags?.iter().filter(|m| !m.seen).map(|m| m.uid).collect();
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

    fn announcement(&self, h: &Headers) -> Announcement {
        let (from, subject) = header_fields(&h.block);
        Announcement {
            account: self.account.name.clone(),
            mailbox: self.mailbox.clone(),
            uid: h.uid,
            sender: from.as_deref().map(decode::from_header).unwrap_or_default(),
            subject: decode::subject(subject.as_deref()),
        }
    }
}

/// Shown as the subject of a message that could not be read.
const UNREADABLE_SUBJECT: &str = "(could not be read)";

/// `1,3,7`: a UID set for a command.
fn uid_set(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The raw values of the first From and Subject fields in a header block, still folded and
/// encoded (RFC 5322 §2.2, parsed by `mailparse`). A block cut short by the partial fetch
/// still yields the fields it holds; one that does not parse yields none (the message is
/// then shown with `(unknown sender)` and `(no subject)`, not skipped).
fn header_fields(block: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let Ok((headers, _)) = mailparse::parse_headers(block) else {
        return (None, None);
    };
    let raw = |name: &str| {
        headers
            .iter()
            .find(|h| h.get_key_ref().eq_ignore_ascii_case(name))
            .map(|h| h.get_value_raw().to_vec())
    };
    (raw("From"), raw("Subject"))
}

/// The highest UID in the mailbox, for servers whose EXAMINE omits UIDNEXT.
fn highest_uid(conn: &mut Connection) -> Result<Option<u32>, ImapError> {
    Ok(conn.fetch_flags("*")?.iter().map(|m| m.uid).max())
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}
