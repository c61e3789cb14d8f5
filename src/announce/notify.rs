//! Desktop notifications through the freedesktop `org.freedesktop.Notifications` service:
//! one thread (`notify`) owns the session-bus connection (zbus) and does all D-Bus traffic;
//! everyone else hands it work through a [`Notifier`] and never waits for it.
//!
//! Why one thread: a notification server can stop answering (a frozen compositor, dunst
//! under SIGSTOP, or a D-Bus-activated service that never takes its name, which costs the
//! bus's 25 s activation timeout per call). zbus has no method timeout by default, and the
//! calls used to run under the lock all watchers share, so one stuck server silenced every
//! account and even SIGTERM. Now:
//! - Every method call has a timeout of [`CALL_TIMEOUT`] (zbus's
//!   `connection::Builder::method_timeout`).
//! - Requests queue on a channel, at most [`QUEUE_LIMIT`] at a time; what does not fit is
//!   counted per mailbox and summed up in one popup later, never queued without bound.
//! - A call that times out puts the thread in a *stalled* state, logged once in plain words
//!   and shown in systemd's `STATUS=` (through the status table). While stalled, popups are
//!   not sent but counted per mailbox, and closes are remembered (bounded); the server is
//!   probed every [`PROBE_EVERY`]. When it answers again, the pending closes are done and
//!   each mailbox's missed popups become one summary. (The call that timed out is not
//!   counted: a server that was only frozen still has it and shows it when it thaws.)
//!
//! Signals: a listener thread per connection forwards `ActionInvoked`, `ActivationToken`,
//! `NotificationClosed` and the bus's `NameOwnerChanged` for the service. Its messages
//! carry the connection's generation, and the connection is closed (ending the listener)
//! when it is replaced, so a listener cannot outlive its connection's turn. An action is
//! acted on only when it comes from the current owner of the name and names a popup that
//! mailpushd showed there: some servers (GNOME Shell) send `ActionInvoked` to every
//! listener, so a click on another application's popup must not run `open_command`. When
//! the name's owner changes (the server restarted, or another took over), the ids of the
//! old server's popups are forgotten (they now belong to other applications: never close
//! them, never replace them, never count them in a summary) and the capabilities are read
//! again. The owner is also taken from every reply's sender, so a restart is noticed even
//! before its signal arrives. An `ActivationToken` (spec 1.2) is kept under the same checks
//! for the click that follows it on the same popup, and handed on with that click only
//! (src/announce/activation.rs).
//!
//! Hints (spec 1.2, "Hints"): every popup names the application's desktop entry
//! (`desktop-entry`, so the desktop can place it, list it in its notification settings and
//! keep its history) and says `category` and `urgency`; popups about new mail also carry
//! the configured `sound-name` (see [`Worker::notify`]).
//!
//! Mail text is untrusted: the body is markup-escaped when the server renders markup
//! (`body-markup`), so `<b>` or `<a href=...>` in a subject shows literally, and control and
//! bidi characters are removed everywhere so a popup cannot be spoofed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, MessageStream, Variant};

use super::activation::Tokens;
use crate::config::{Notifications, Urgency};
use crate::decode;
use crate::event::{Event, Shown};
use crate::status::StatusTable;

/// How long any D-Bus method call may take before the server counts as not answering.
/// Local servers answer in about a millisecond; a few seconds allow for a loaded desktop.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// While the server does not answer, how often it is asked again.
pub const PROBE_EVERY: Duration = Duration::from_secs(10);
/// Requests (popups, closes) waiting for the notification thread, at most.
pub const QUEUE_LIMIT: usize = 256;
/// Open popups remembered per mailbox (to close them when read elsewhere); older ones are
/// forgotten, not closed.
const OPEN_PER_MAILBOX: usize = 50;
/// Closes remembered while the server does not answer, at most.
const PENDING_CLOSE_LIMIT: usize = 1000;

const APP_NAME: &str = "mailpushd";
/// The `desktop-entry` hint: the basename of packaging/mailpushd.desktop without
/// `.desktop` (Desktop Notifications spec 1.2, "Standard Hints").
const DESKTOP_ENTRY: &str = "mailpushd";
const CATEGORY: &str = "email.arrived";
const DEST: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";
const BUS: &str = "org.freedesktop.DBus";
/// Our source name in the status table.
const NOTICE: &str = "notifications";

/// Text for one popup, before escaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Popup {
    pub summary: String,
    pub body: String,
}

/// Popup buttons: `(key, label)`.
pub type Actions = Vec<(&'static str, &'static str)>;

/// Renders a summary popup once the notification thread knows its `total` (the messages
/// it sums up plus those of the summary it replaces).
pub type Render = Box<dyn FnOnce(usize) -> Popup + Send>;

/// What the notification server can do, read again whenever its owner changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub markup: bool,
    pub actions: bool,
}

/// The `[notifications]` settings the notification thread needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub icon: String,
    /// 0 low, 1 normal, 2 critical (the spec's byte).
    pub urgency: u8,
    /// The `sound-name` hint of popups about new mail (a name from the freedesktop sound
    /// naming spec); `None`: no sound asked for.
    pub sound: Option<String>,
}

impl Settings {
    pub fn of(n: &Notifications) -> Self {
        Settings {
            icon: n.icon.clone(),
            sound: n.sound.clone(),
            urgency: match n.urgency {
                Urgency::Low => 0,
                Urgency::Normal => 1,
                Urgency::Critical => 2,
            },
        }
    }
}

/// Why a D-Bus call did not work.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// No connection to the session bus.
    #[error("cannot connect to the session bus: {source}")]
    Connect {
        #[source]
        source: zbus::Error,
    },
    /// No answer within [`CALL_TIMEOUT`]: the server (or the bus) is frozen or stuck.
    #[error("{method}: no answer within {} s", CALL_TIMEOUT.as_secs())]
    Unanswered { method: &'static str },
    /// An error reply (no notification server, the call refused) or a malformed reply; the
    /// connection itself is fine.
    #[error("{method}: {source}")]
    Refused {
        method: &'static str,
        #[source]
        source: zbus::Error,
    },
    /// The connection broke; the next call opens a new one.
    #[error("{method}: connection lost: {source}")]
    Lost {
        method: &'static str,
        #[source]
        source: zbus::Error,
    },
}

impl NotifyError {
    fn of(method: &'static str, e: zbus::Error) -> Self {
        match e {
            zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                NotifyError::Unanswered { method }
            }
            e @ (zbus::Error::InputOutput(_)
            | zbus::Error::Connection(..)
            | zbus::Error::Handshake(_)
            | zbus::Error::Address(_)) => NotifyError::Lost { method, source: e },
            // Error replies, and replies we cannot read: the connection is fine.
            e => NotifyError::Refused { method, source: e },
        }
    }
}

/// The popups on screen that mailpushd showed, by the server's id. Pure bookkeeping.
#[derive(Debug, Default)]
pub struct Popups {
    shown: BTreeMap<u32, Shown>,
    /// Message popups handed to the notification thread and not yet sent (at most
    /// [`QUEUE_LIMIT`]): a watcher deciding whether to watch flags counts them as open.
    pending: Vec<Shown>,
}

impl Popups {
    /// Records popup `id`. Bounded: the oldest message popups of a mailbox beyond
    /// [`OPEN_PER_MAILBOX`] are forgotten (ids grow, so the map's order is age).
    pub fn remember(&mut self, id: u32, shown: Shown) {
        if let Shown::Message {
            account, mailbox, ..
        } = &shown
        {
            let of_mailbox: Vec<u32> = self
                .shown
                .iter()
                .filter(|(k, s)| **k != id && s.message_in(account, mailbox).is_some())
                .map(|(id, _)| *id)
                .collect();
            let excess = (of_mailbox.len() + 1).saturating_sub(OPEN_PER_MAILBOX);
            for old in &of_mailbox[..excess] {
                self.shown.remove(old);
            }
        }
        self.shown.insert(id, shown);
    }

    /// The mailbox's summary popup on screen (to be replaced by the next one) and how many
    /// messages it counts; `(0, 0)` when there is none.
    pub fn summary_of(&self, account: &str, mailbox: &str) -> (u32, usize) {
        self.shown
            .iter()
            .find_map(|(id, s)| match s {
                Shown::Summary {
                    account: a,
                    mailbox: m,
                    total,
                } if a == account && m == mailbox => Some((*id, *total)),
                _ => None,
            })
            .unwrap_or((0, 0))
    }

    /// UIDs with a popup on screen in this mailbox, or on its way there.
    pub fn open_uids(&self, account: &str, mailbox: &str) -> Vec<u32> {
        self.shown
            .values()
            .chain(&self.pending)
            .filter_map(|s| s.message_in(account, mailbox))
            .collect()
    }

    /// A message popup was queued.
    fn queued(&mut self, about: &Shown) {
        self.pending.push(about.clone());
    }

    /// A queued message popup was taken off the queue (sent, or counted as missed).
    fn dequeued(&mut self, about: &Shown) {
        if let Some(i) = self.pending.iter().position(|p| p == about) {
            self.pending.remove(i);
        }
    }

    /// Forgets the popups of these messages and returns their ids (to close them).
    pub fn take_messages(&mut self, account: &str, mailbox: &str, uids: &[u32]) -> Vec<u32> {
        let ids: Vec<u32> = self
            .shown
            .iter()
            .filter(|(_, s)| {
                s.message_in(account, mailbox)
                    .is_some_and(|uid| uids.contains(&uid))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.shown.remove(id);
        }
        ids
    }

    pub fn get(&self, id: u32) -> Option<&Shown> {
        self.shown.get(&id)
    }

    /// The server closed popup `id` (expired, dismissed, closed by us).
    pub fn closed(&mut self, id: u32) {
        self.shown.remove(&id);
    }

    /// Forgets every id (the server that issued them is gone); returns how many.
    pub fn forget_all(&mut self) -> usize {
        std::mem::take(&mut self.shown).len()
    }
}

/// What a popup is about, for the hints it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A message or a summary of messages: the configured sound.
    NewMail,
    /// mailpushd's own notice about a problem: silent.
    Notice,
}

/// What the notification thread is asked to do.
enum Msg {
    Show {
        popup: Popup,
        actions: Actions,
        about: Option<Shown>,
    },
    Summary {
        account: String,
        mailbox: String,
        count: usize,
        actions: Actions,
        render: Render,
    },
    Close {
        account: String,
        mailbox: String,
        uids: Vec<u32>,
    },
    Configure(Settings),
    /// From a connection's listener, tagged with that connection's generation.
    Signal {
        generation: u64,
        sender: Option<String>,
        signal: Signal,
    },
    Stop,
}

enum Signal {
    ActionInvoked {
        id: u32,
        key: String,
    },
    /// Spec 1.2: comes before the `ActionInvoked` of the same popup.
    ActivationToken {
        id: u32,
        token: String,
    },
    Closed {
        id: u32,
    },
    OwnerChanged {
        new: String,
    },
}

/// What the handles and the thread share: bookkeeping only, never held across a call.
#[derive(Default)]
struct Shared {
    popups: Mutex<Popups>,
    /// Requests sent and not yet taken by the thread.
    queued: AtomicUsize,
    /// Messages whose popups did not fit in the queue, per (account, mailbox).
    overflow: Mutex<BTreeMap<(String, String), usize>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The handle everyone else uses: every method returns at once (a channel send or a short
/// bookkeeping lock), whatever the notification server does.
#[derive(Clone)]
pub struct Notifier {
    tx: Sender<Msg>,
    shared: Arc<Shared>,
}

impl Notifier {
    /// Starts the notification thread. The session bus is connected on first use (and
    /// again after the connection broke). `events` receives popup actions and status
    /// changes; `status` gets a notice while the server does not answer.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn spawn(
        settings: Settings,
        events: Option<Sender<Event>>,
        status: StatusTable,
    ) -> std::io::Result<(Notifier, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let worker = Worker {
            settings,
            events,
            status,
            shared: Arc::clone(&shared),
            tx: tx.clone(),
            link: None,
            next_generation: 1,
            failing: false,
            stall: None,
            retired: Vec::new(),
            tokens: Tokens::default(),
        };
        let thread = std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || worker.run(&rx))?;
        Ok((Notifier { tx, shared }, thread))
    }

    /// Queues a request that counts against [`QUEUE_LIMIT`]; false if it did not fit.
    fn enqueue(&self, msg: Msg) -> bool {
        if self.shared.queued.fetch_add(1, Ordering::SeqCst) >= QUEUE_LIMIT {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        if self.tx.send(msg).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn overflowed(&self, account: &str, mailbox: &str, count: usize) {
        *lock(&self.shared.overflow)
            .entry((account.to_owned(), mailbox.to_owned()))
            .or_default() += count;
    }

    /// Shows a popup for one message, with `actions`; remembered as `about` so that its
    /// buttons work and it can be closed when the message is read elsewhere.
    pub fn show_message(&self, popup: Popup, actions: Actions, about: Shown) {
        let (account, mailbox) = match &about {
            Shown::Message {
                account, mailbox, ..
            }
            | Shown::Summary {
                account, mailbox, ..
            } => (account.clone(), mailbox.clone()),
        };
        lock(&self.shared.popups).queued(&about);
        let pending = about.clone();
        let queued = self.enqueue(Msg::Show {
            popup,
            actions,
            about: Some(about),
        });
        if !queued {
            lock(&self.shared.popups).dequeued(&pending);
            self.overflowed(&account, &mailbox, 1);
        }
    }

    /// Shows a popup that nothing refers to later (a failed login, a rejected config),
    /// without buttons. Dropped when the queue is full.
    pub fn show(&self, popup: Popup) {
        if !self.enqueue(Msg::Show {
            popup,
            actions: Vec::new(),
            about: None,
        }) {
            log::debug!("a status popup was dropped: the notification queue is full");
        }
    }

    /// Shows a summary of `count` messages of `account`/`mailbox`, replacing the mailbox's
    /// summary on screen and counting its messages too: `render` gets the total.
    pub fn summary(
        &self,
        account: &str,
        mailbox: &str,
        count: usize,
        actions: Actions,
        render: Render,
    ) {
        let queued = self.enqueue(Msg::Summary {
            account: account.to_owned(),
            mailbox: mailbox.to_owned(),
            count,
            actions,
            render,
        });
        if !queued {
            self.overflowed(account, mailbox, count);
        }
    }

    /// Closes the popups of these messages (read or deleted elsewhere).
    pub fn close_messages(&self, account: &str, mailbox: &str, uids: &[u32]) {
        self.enqueue(Msg::Close {
            account: account.to_owned(),
            mailbox: mailbox.to_owned(),
            uids: uids.to_vec(),
        });
    }

    /// UIDs of this mailbox with a popup on screen.
    pub fn open_uids(&self, account: &str, mailbox: &str) -> Vec<u32> {
        lock(&self.shared.popups).open_uids(account, mailbox)
    }

    /// New icon and urgency after a reload. The connection, its listener and the popups
    /// on screen stay as they are.
    pub fn configure(&self, settings: Settings) {
        let _ = self.tx.send(Msg::Configure(settings));
    }

    /// Asks the thread to finish what is queued before this and end. Does not wait: join
    /// the thread's handle with a deadline of your own.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

struct Link {
    conn: Connection,
    generation: u64,
    /// The unique name that owns `org.freedesktop.Notifications`, as far as we know.
    owner: Option<String>,
    /// Read from the current owner; `None` until read (and after the owner changed).
    caps: Option<Capabilities>,
    listener: JoinHandle<()>,
}

/// The server stopped answering: what waits for it.
struct Stall {
    since: Instant,
    next_probe: Instant,
    /// Popups not shown, per (account, mailbox): one summary each when it answers again.
    missed: BTreeMap<(String, String), usize>,
    /// Other popups (status, errors) not shown.
    dropped: usize,
    pending_close: Vec<u32>,
}

struct Worker {
    settings: Settings,
    events: Option<Sender<Event>>,
    status: StatusTable,
    shared: Arc<Shared>,
    /// Handed to each connection's listener.
    tx: Sender<Msg>,
    link: Option<Link>,
    next_generation: u64,
    /// Whether the last call failed with an error reply (no server): logged once each way.
    failing: bool,
    stall: Option<Stall>,
    /// Listeners of closed connections, joined once they have ended.
    retired: Vec<JoinHandle<()>>,
    /// Activation tokens of our popups, waiting for their click. Only this thread touches
    /// them, so they need no lock.
    tokens: Tokens,
}

impl Worker {
    fn run(mut self, rx: &Receiver<Msg>) {
        loop {
            let msg = match &self.stall {
                None => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
                Some(stall) => {
                    match rx
                        .recv_timeout(stall.next_probe.saturating_duration_since(Instant::now()))
                    {
                        Ok(m) => m,
                        Err(RecvTimeoutError::Timeout) => {
                            self.probe();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            match msg {
                Msg::Stop => break,
                Msg::Configure(settings) => self.settings = settings,
                Msg::Signal {
                    generation,
                    sender,
                    signal,
                } => self.signal(generation, sender, signal),
                Msg::Show {
                    popup,
                    actions,
                    about,
                } => {
                    self.took_request();
                    self.show(popup, actions, about);
                }
                Msg::Summary {
                    account,
                    mailbox,
                    count,
                    actions,
                    render,
                } => {
                    self.took_request();
                    self.summary(account, mailbox, count, actions, render);
                }
                Msg::Close {
                    account,
                    mailbox,
                    uids,
                } => {
                    self.took_request();
                    self.close_messages(&account, &mailbox, &uids);
                }
            }
            self.retired.retain(|t| !t.is_finished());
        }
        if let Some(link) = self.link.take() {
            self.retire(link);
        }
    }

    /// One queued request taken; popups that did not fit in the queue meanwhile are
    /// summed up (now, or when a stalled server answers again).
    fn took_request(&mut self) {
        self.shared.queued.fetch_sub(1, Ordering::SeqCst);
        let overflow = std::mem::take(&mut *lock(&self.shared.overflow));
        if overflow.is_empty() {
            return;
        }
        let n: usize = overflow.values().sum();
        log::warn!("{n} popup(s) did not fit in the notification queue; summing them up");
        match &mut self.stall {
            Some(stall) => {
                for (k, n) in overflow {
                    *stall.missed.entry(k).or_default() += n;
                }
            }
            None => self.show_missed(overflow),
        }
    }

    fn show(&mut self, popup: Popup, actions: Actions, about: Option<Shown>) {
        if let Some(stall) = &mut self.stall {
            match about {
                Some(about @ Shown::Message { .. }) => {
                    lock(&self.shared.popups).dequeued(&about);
                    if let Shown::Message {
                        account, mailbox, ..
                    } = about
                    {
                        *stall.missed.entry((account, mailbox)).or_default() += 1;
                    }
                }
                _ => stall.dropped += 1,
            }
            return;
        }
        // Only message popups are about new mail (`about` is set by `show_message` alone);
        // the rest are mailpushd's notices about problems (a failed login, a rejected
        // config), which must not sound like mail.
        let kind = if about.is_some() {
            Kind::NewMail
        } else {
            Kind::Notice
        };
        let result = self.notify(&popup, 0, &actions, kind);
        let id = self.outcome(result);
        if let Some(about) = about {
            // Pending until now, so a watcher never sees it neither pending nor shown.
            let mut popups = lock(&self.shared.popups);
            popups.dequeued(&about);
            if let Some(id) = id {
                popups.remember(id, about);
            }
        }
    }

    fn summary(
        &mut self,
        account: String,
        mailbox: String,
        count: usize,
        actions: Actions,
        render: Render,
    ) {
        if let Some(stall) = &mut self.stall {
            *stall.missed.entry((account, mailbox)).or_default() += count;
            return;
        }
        let (replaces, before) = lock(&self.shared.popups).summary_of(&account, &mailbox);
        let total = before + count;
        let popup = render(total);
        let result = self.notify(&popup, replaces, &actions, Kind::NewMail);
        if let Some(id) = self.outcome(result) {
            let mut popups = lock(&self.shared.popups);
            // Gone from the server if it was replaced; a new id otherwise, and the old
            // summary is then no longer ours to replace either.
            popups.closed(replaces);
            popups.remember(
                id,
                Shown::Summary {
                    account,
                    mailbox,
                    total,
                },
            );
        }
    }

    /// Sums up popups that were not shown: one summary per mailbox (replacing and counting
    /// the one on screen, like any summary).
    fn show_missed(&mut self, missed: BTreeMap<(String, String), usize>) {
        for ((account, mailbox), n) in missed {
            let place =
                decode::truncate_chars(&decode::single_line(&format!("{account}/{mailbox}")), 120);
            let render: Render = Box::new(move |total| Popup {
                summary: match total {
                    1 => format!("1 new message in {place}"),
                    n => format!("{n} new messages in {place}"),
                },
                body: "Some arrived while desktop notifications were not answering.".into(),
            });
            self.summary(account, mailbox, n, Vec::new(), render);
        }
    }

    fn close_messages(&mut self, account: &str, mailbox: &str, uids: &[u32]) {
        let ids = lock(&self.shared.popups).take_messages(account, mailbox, uids);
        for (i, id) in ids.iter().enumerate() {
            if let Some(stall) = &mut self.stall {
                let room = PENDING_CLOSE_LIMIT.saturating_sub(stall.pending_close.len());
                stall
                    .pending_close
                    .extend(ids[i..].iter().copied().take(room));
                return;
            }
            log::debug!("{account}/{mailbox}: closing popup {id} (read elsewhere)");
            let result = self.call_close(*id);
            self.outcome(result);
        }
    }

    /// Sorts a call's outcome: success ends a failure streak, a timeout starts a stall, an
    /// error reply is logged once, a broken connection is dropped.
    fn outcome<T>(&mut self, result: Result<T, NotifyError>) -> Option<T> {
        match result {
            Ok(v) => {
                if self.failing {
                    self.failing = false;
                    log::info!("desktop notifications work again");
                }
                Some(v)
            }
            Err(e @ NotifyError::Unanswered { .. }) => {
                self.stalled(&e);
                None
            }
            Err(e) => {
                if matches!(e, NotifyError::Lost { .. } | NotifyError::Connect { .. }) {
                    if let Some(link) = self.link.take() {
                        self.retire(link);
                    }
                }
                if !self.failing {
                    self.failing = true;
                    log::warn!("cannot show desktop notification: {e}");
                }
                None
            }
        }
    }

    fn stalled(&mut self, e: &NotifyError) {
        if self.stall.is_some() {
            return;
        }
        let who = self
            .link
            .as_ref()
            .and_then(|l| l.owner.clone())
            .unwrap_or_else(|| "not yet running".into());
        log::warn!(
            "the desktop notification server ({DEST}, {who}) does not answer ({e}); popups \
             are held back and summed up when it answers again; syslog lines and hooks \
             carry on"
        );
        let now = Instant::now();
        self.stall = Some(Stall {
            since: now,
            next_probe: now + PROBE_EVERY,
            missed: BTreeMap::new(),
            dropped: 0,
            pending_close: Vec::new(),
        });
        self.notice(Some(
            "desktop notifications not answering (popups held back)".into(),
        ));
    }

    /// Asks a stalled server again (its capabilities, which also tells us who owns the
    /// name now).
    fn probe(&mut self) {
        if let Some(link) = &mut self.link {
            link.caps = None;
        }
        match self.capabilities() {
            Ok(_) => self.recovered(),
            Err(NotifyError::Unanswered { .. }) => {
                if let Some(stall) = &mut self.stall {
                    stall.next_probe = Instant::now() + PROBE_EVERY;
                    log::debug!(
                        "notification server still not answering after {:.0} s",
                        stall.since.elapsed().as_secs_f64()
                    );
                }
            }
            Err(e) => {
                // Not frozen but gone (no server at all now): nothing to wait for.
                if let Some(stall) = self.stall.take() {
                    let missed: usize = stall.missed.values().sum();
                    log::warn!(
                        "desktop notification server gone ({e}); {missed} popup(s) not shown"
                    );
                    self.notice(None);
                }
                self.outcome::<()>(Err(e));
            }
        }
    }

    /// The server answers again: close what was read meanwhile, sum up what was missed.
    fn recovered(&mut self) {
        let Some(stall) = self.stall.take() else {
            return;
        };
        let missed: usize = stall.missed.values().sum();
        log::info!(
            "the desktop notification server answers again after {:.0} s; {missed} popup(s) \
             not shown meanwhile are summed up, {} other popup(s) were dropped",
            stall.since.elapsed().as_secs_f64(),
            stall.dropped
        );
        self.notice(None);
        for (i, id) in stall.pending_close.iter().enumerate() {
            let result = self.call_close(*id);
            self.outcome(result);
            if let Some(again) = &mut self.stall {
                again
                    .pending_close
                    .extend_from_slice(&stall.pending_close[i + 1..]);
                break;
            }
        }
        match &mut self.stall {
            Some(again) => {
                for (k, n) in stall.missed {
                    *again.missed.entry(k).or_default() += n;
                }
            }
            None => self.show_missed(stall.missed),
        }
    }

    fn notice(&self, text: Option<String>) {
        if self.status.set_notice(NOTICE, text) {
            if let Some(events) = &self.events {
                let _ = events.send(Event::StatusChanged);
            }
        }
    }

    fn signal(&mut self, generation: u64, sender: Option<String>, signal: Signal) {
        let Some(link) = &self.link else { return };
        if link.generation != generation {
            log::debug!("signal from an old notification connection ignored");
            return;
        }
        match signal {
            Signal::OwnerChanged { new } => {
                let new = (!new.is_empty()).then_some(new);
                if self.owner_is(new) {
                    self.reread_capabilities();
                }
            }
            Signal::ActivationToken { id, token } => {
                if sender.is_none() || sender != link.owner {
                    log::debug!(
                        "ActivationToken({id}) from {sender:?} ignored: not from the \
                         notification server we use ({:?})",
                        link.owner
                    );
                    return;
                }
                // Only for our popups: a token for another application's popup is theirs
                // (some servers send signals to every listener).
                if lock(&self.shared.popups).get(id).is_none() {
                    log::debug!("ActivationToken({id}) ignored: not a popup mailpushd shows");
                    return;
                }
                // The token itself is not logged: it is a one-time permission to take focus.
                if !self.tokens.given(id, token) {
                    log::debug!(
                        "ActivationToken({id}) ignored: not usable as an environment value"
                    );
                }
            }
            Signal::ActionInvoked { id, key } => {
                if sender.is_none() || sender != link.owner {
                    log::debug!(
                        "ActionInvoked({id}, {key:?}) from {sender:?} ignored: not from the \
                         notification server we use ({:?})",
                        link.owner
                    );
                    return;
                }
                let about = lock(&self.shared.popups).get(id).cloned();
                match about {
                    Some(about) => {
                        // Taken whatever the action: a token is used for this one click or
                        // not at all.
                        let activation_token = self.tokens.take(id);
                        if let Some(events) = &self.events {
                            let _ = events.send(Event::NotificationAction {
                                id,
                                key,
                                about,
                                activation_token,
                            });
                        }
                    }
                    None => log::debug!(
                        "ActionInvoked({id}, {key:?}) ignored: not a popup mailpushd shows"
                    ),
                }
            }
            Signal::Closed { id } => {
                if sender.is_some() && sender == link.owner {
                    lock(&self.shared.popups).closed(id);
                    self.tokens.forget(id);
                }
            }
        }
    }

    /// Notes who owns the service name now; returns whether that changed. A server that
    /// went away (or was replaced) takes its popups' ids with it: they are forgotten. A
    /// server appearing where there was none (activation) issued the ids we hold.
    fn owner_is(&mut self, new: Option<String>) -> bool {
        let Some(link) = &mut self.link else {
            return false;
        };
        if link.owner == new {
            return false;
        }
        let old = std::mem::replace(&mut link.owner, new.clone());
        link.caps = None;
        // Tokens, like ids, belong to the server that issued them.
        self.tokens.clear();
        if old.is_some() {
            let forgotten = lock(&self.shared.popups).forget_all();
            if let Some(stall) = &mut self.stall {
                stall.pending_close.clear();
            }
            log::info!(
                "the desktop notification server changed ({} -> {}); forgetting {forgotten} \
                 popup id(s) of the old one",
                old.as_deref().unwrap_or("none"),
                new.as_deref().unwrap_or("none")
            );
        } else {
            log::debug!(
                "desktop notification server is {}",
                new.as_deref().unwrap_or("none")
            );
        }
        true
    }

    /// After an owner change: what the new server can do (buttons, markup), at once.
    fn reread_capabilities(&mut self) {
        let has_owner = self.link.as_ref().is_some_and(|l| l.owner.is_some());
        if !has_owner {
            return;
        }
        match self.capabilities() {
            Ok(_) => {
                if self.stall.is_some() {
                    self.recovered();
                }
            }
            Err(e) => {
                self.outcome::<()>(Err(e));
            }
        }
    }

    fn link(&mut self) -> Result<&mut Link, NotifyError> {
        if self.link.is_none() {
            let link = self.open()?;
            self.link = Some(link);
        }
        Ok(self.link.as_mut().expect("just set"))
    }

    /// Connects (with the method timeout) and starts the listener, subscribed before any
    /// call so that no signal about our popups is missed.
    fn open(&mut self) -> Result<Link, NotifyError> {
        let conn = zbus::block_on(
            zbus::connection::Builder::session()
                .method_timeout(CALL_TIMEOUT)
                .build(),
        )
        .map_err(|source| match NotifyError::of("Hello", source) {
            NotifyError::Lost { source, .. } => NotifyError::Connect { source },
            other => other,
        })?;
        let generation = self.next_generation;
        self.next_generation += 1;
        let ours = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .interface(DEST)
            .path(PATH)
            .build();
        let owner = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(BUS)
            .interface(BUS)
            .member("NameOwnerChanged")
            .arg(0, DEST)
            .build();
        let streams = zbus::block_on(async {
            let ours = MessageStream::for_match_rule(ours?, &conn, None).await?;
            let owner = MessageStream::for_match_rule(owner?, &conn, None).await?;
            Ok::<_, zbus::Error>(ours.or(owner))
        });
        let stream = match streams {
            Ok(s) => s,
            Err(e) => {
                let _ = zbus::block_on(conn.close());
                return Err(NotifyError::of("AddMatch", e));
            }
        };
        let tx = self.tx.clone();
        let listener = std::thread::Builder::new()
            .name("notify-signals".into())
            .spawn(move || zbus::block_on(forward(stream, generation, tx)));
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                let _ = zbus::block_on(conn.close());
                return Err(NotifyError::Lost {
                    method: "spawn listener",
                    source: zbus::Error::InputOutput(Arc::new(e)),
                });
            }
        };
        Ok(Link {
            conn,
            generation,
            owner: None,
            caps: None,
            listener,
        })
    }

    /// Closes a connection, which ends its listener (its stream ends with the socket).
    fn retire(&mut self, link: Link) {
        let _ = zbus::block_on(link.conn.close());
        self.retired.push(link.listener);
    }

    /// The current owner's capabilities, read once per owner.
    fn capabilities(&mut self) -> Result<Capabilities, NotifyError> {
        let link = self.link()?;
        if let Some(caps) = link.caps {
            return Ok(caps);
        }
        let reply = zbus::block_on(link.conn.call_method(
            Some(DEST),
            PATH,
            Some(DEST),
            "GetCapabilities",
            &(),
        ))
        .map_err(|e| NotifyError::of("GetCapabilities", e))?;
        let sender = reply.header().sender().map(|s| s.to_string());
        let list: Vec<String> = reply
            .body()
            .deserialize()
            .map_err(|e| NotifyError::of("GetCapabilities", e))?;
        let caps = Capabilities {
            markup: list.iter().any(|c| c == "body-markup"),
            actions: list.iter().any(|c| c == "actions"),
        };
        self.owner_is(sender);
        let link = self.link()?;
        link.caps = Some(caps);
        log::debug!(
            "desktop notification server {}: capabilities {list:?}",
            link.owner.as_deref().unwrap_or("?")
        );
        Ok(caps)
    }

    /// Sends one popup, replacing notification `replaces` if non-zero; returns its id.
    ///
    /// Hints, Desktop Notifications spec 1.2 "Standard Hints": `desktop-entry` on every
    /// popup; `sound-name` (a name from the freedesktop sound naming spec) on new-mail
    /// popups when configured. The sound is the server's to play: servers that play sounds
    /// advertise the `sound` capability, and the spec lets any other ignore a hint it does
    /// not know, so it is sent whatever the capabilities say (a server may play
    /// `sound-name` without advertising `sound`, which only promises `sound-file` and
    /// `suppress-sound`). With the sound off, no sound hint is sent at all: the server's
    /// own default for the category applies.
    fn notify(
        &mut self,
        popup: &Popup,
        replaces: u32,
        actions: &[(&str, &str)],
        kind: Kind,
    ) -> Result<u32, NotifyError> {
        let caps = self.capabilities()?;
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
        let hints = hints(&self.settings, kind);
        let summary = plain(&popup.summary);
        let icon = self.settings.icon.clone();
        let link = self.link()?;
        let reply = zbus::block_on(link.conn.call_method(
            Some(DEST),
            PATH,
            Some(DEST),
            "Notify",
            &(
                APP_NAME,
                replaces,
                icon.as_str(),
                summary.as_str(),
                body.as_str(),
                actions,
                hints,
                -1i32,
            ),
        ))
        .map_err(|e| NotifyError::of("Notify", e))?;
        let sender = reply.header().sender().map(|s| s.to_string());
        let id = reply
            .body()
            .deserialize::<u32>()
            .map_err(|e| NotifyError::of("Notify", e))?;
        // A reply from another owner than we knew: the server restarted and its signal
        // has not come yet. The ids we hold are the old server's.
        if self.owner_is(sender) {
            self.reread_capabilities();
        }
        Ok(id)
    }

    fn call_close(&mut self, id: u32) -> Result<(), NotifyError> {
        let link = self.link()?;
        zbus::block_on(link.conn.call_method(
            Some(DEST),
            PATH,
            Some(DEST),
            "CloseNotification",
            &(id,),
        ))
        .map(|_| ())
        .map_err(|e| NotifyError::of("CloseNotification", e))
    }
}

/// The hints of a popup of this kind (see [`Worker::notify`]).
fn hints(settings: &Settings, kind: Kind) -> HashMap<&'static str, Variant<'static>> {
    let mut hints = HashMap::new();
    hints.insert("category", Variant::from(CATEGORY));
    hints.insert("urgency", Variant::U8(settings.urgency));
    hints.insert("desktop-entry", Variant::from(DESKTOP_ENTRY));
    if let (Kind::NewMail, Some(sound)) = (kind, &settings.sound) {
        hints.insert("sound-name", Variant::from(sound.clone()));
    }
    hints
}

/// Forwards the notification server's signals and the bus's owner changes to the
/// notification thread until the connection closes. Blocks on the bus socket: no wakeups
/// while nothing happens.
async fn forward(
    mut stream: impl futures_lite::Stream<Item = zbus::Result<zbus::Message>> + Unpin,
    generation: u64,
    tx: Sender<Msg>,
) {
    while let Some(Ok(msg)) = stream.next().await {
        let header = msg.header();
        let sender = header.sender().map(|s| s.to_string());
        let signal = match header.member().map(|m| m.as_str()) {
            Some("ActionInvoked") => msg
                .body()
                .deserialize::<(u32, String)>()
                .ok()
                .map(|(id, key)| Signal::ActionInvoked { id, key }),
            Some("ActivationToken") => msg
                .body()
                .deserialize::<(u32, String)>()
                .ok()
                .map(|(id, token)| Signal::ActivationToken { id, token }),
            Some("NotificationClosed") => msg
                .body()
                .deserialize::<(u32, u32)>()
                .ok()
                .map(|(id, _reason)| Signal::Closed { id }),
            Some("NameOwnerChanged") => msg
                .body()
                .deserialize::<(String, String, String)>()
                .ok()
                .filter(|(name, _, _)| name == DEST)
                .map(|(_, _, new)| Signal::OwnerChanged { new }),
            _ => None,
        };
        if let Some(signal) = signal {
            let msg = Msg::Signal {
                generation,
                sender,
                signal,
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
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

    fn message(uid: u32) -> Shown {
        Shown::Message {
            account: "work".into(),
            mailbox: "INBOX".into(),
            uid,
        }
    }

    #[test]
    fn every_popup_names_its_desktop_entry_and_only_new_mail_sounds() {
        let settings = |sound: Option<&str>| Settings {
            icon: "mail-unread".into(),
            urgency: 1,
            sound: sound.map(String::from),
        };
        let on = settings(Some("message-new-email"));
        let mail = hints(&on, Kind::NewMail);
        assert_eq!(mail["desktop-entry"], Variant::from("mailpushd"));
        assert_eq!(mail["sound-name"], Variant::from("message-new-email"));
        assert_eq!(mail["category"], Variant::from("email.arrived"));
        assert_eq!(mail["urgency"], Variant::U8(1));
        let notice = hints(&on, Kind::Notice);
        assert_eq!(notice["desktop-entry"], Variant::from("mailpushd"));
        assert!(
            !notice.contains_key("sound-name"),
            "a problem is not new mail"
        );
        let off = hints(&settings(None), Kind::NewMail);
        assert!(
            !off.contains_key("sound-name"),
            "off sends no sound hint at all"
        );
        assert!(!off.contains_key("suppress-sound"));
        assert_eq!(off["desktop-entry"], Variant::from("mailpushd"));
    }

    #[test]
    fn plain_drops_controls_and_bidi() {
        assert_eq!(plain("a\x1b[31mb\u{202e}c\nd\r"), "a[31mbc\nd");
    }

    #[test]
    fn popups_are_bounded_per_mailbox_and_forgotten_with_their_server() {
        let mut p = Popups::default();
        for uid in 1..=(OPEN_PER_MAILBOX as u32 + 10) {
            p.remember(uid, message(uid));
        }
        let open = p.open_uids("work", "INBOX");
        assert_eq!(open.len(), OPEN_PER_MAILBOX);
        assert!(!open.contains(&1), "the oldest are forgotten");
        p.remember(
            1000,
            Shown::Summary {
                account: "work".into(),
                mailbox: "INBOX".into(),
                total: 7,
            },
        );
        assert_eq!(p.summary_of("work", "INBOX"), (1000, 7));
        assert_eq!(p.summary_of("work", "Sent"), (0, 0));
        assert_eq!(p.take_messages("work", "INBOX", &[60, 59, 3]), vec![59, 60]);
        assert!(p.get(60).is_none());
        assert_eq!(p.forget_all(), OPEN_PER_MAILBOX - 2 + 1);
        assert_eq!(
            p.summary_of("work", "INBOX"),
            (0, 0),
            "no stale replaces_id"
        );
        assert!(p.get(11).is_none(), "no stale id acted on");
    }

    #[test]
    fn a_timeout_is_unanswered_and_an_error_reply_is_refused() {
        let timed_out = zbus::Error::InputOutput(Arc::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out",
        )));
        assert!(matches!(
            NotifyError::of("Notify", timed_out),
            NotifyError::Unanswered { method: "Notify" }
        ));
        let refused = zbus::Error::FDO(Box::new(zbus::fdo::Error::ServiceUnknown("x".into())));
        assert!(matches!(
            NotifyError::of("Notify", refused),
            NotifyError::Refused { .. }
        ));
        let broken = zbus::Error::InputOutput(Arc::new(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "gone",
        )));
        assert!(matches!(
            NotifyError::of("Notify", broken),
            NotifyError::Lost { .. }
        ));
    }

    #[test]
    fn a_full_queue_counts_per_mailbox_and_never_blocks() {
        // A handle whose thread never takes anything: the queue fills, then overflows.
        let (tx, _rx) = mpsc::channel();
        let n = Notifier {
            tx,
            shared: Arc::new(Shared::default()),
        };
        for uid in 0..(QUEUE_LIMIT as u32 + 5) {
            n.show_message(
                Popup {
                    summary: "s".into(),
                    body: String::new(),
                },
                Vec::new(),
                message(uid),
            );
        }
        assert_eq!(n.shared.queued.load(Ordering::SeqCst), QUEUE_LIMIT);
        assert_eq!(
            n.open_uids("work", "INBOX").len(),
            QUEUE_LIMIT,
            "queued popups count as open, dropped ones do not"
        );
        let overflow = lock(&n.shared.overflow).clone();
        assert_eq!(
            overflow.get(&("work".to_owned(), "INBOX".to_owned())),
            Some(&5)
        );
    }
}
