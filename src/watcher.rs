//! One watched mailbox: the loop that connects, examines, catches up, IDLEs (or polls) and
//! announces, and reconnects after any failure, forever, until told to stop.
//!
//! Each watcher runs on its own thread named `account/mailbox` and owns its connection. The
//! supervisor holds a [`Control`] to stop it: a flag, a condition variable for the sleeps,
//! and the socket's interrupter for a thread blocked in IDLE.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::config::Account;
use crate::credentials::{self, CredentialError};
use crate::decode;
use crate::imap::{self, Connection, ImapError, Interrupter, Message, Wake};
use crate::mutf7;
use crate::newmail::{self, Cursor, Seen, Start};
use crate::outputs::{Announcement, SharedOutputs};

/// First reconnect delay and its cap (the cap becomes configurable with the reconnect work).
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// A connection that stayed up this long counts as healthy: the next failure starts the
/// backoff from the beginning again.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// The supervisor's handle on a running watcher.
#[derive(Debug, Default)]
pub struct Control {
    stop: AtomicBool,
    /// Guarded flag + condvar: wakes a watcher sleeping between polls or reconnects.
    wake: (Mutex<bool>, Condvar),
    socket: Mutex<Option<Interrupter>>,
}

impl Control {
    /// Asks the watcher to stop: ends any sleep at once and shuts down its socket, which
    /// ends a blocked IDLE read.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let (lock, cv) = &self.wake;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
        if let Some(s) = self
            .socket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            s.interrupt();
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps for `d` unless stopped first; returns whether the watcher should stop.
    fn sleep(&self, d: Duration) -> bool {
        let (lock, cv) = &self.wake;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cv
            .wait_timeout_while(guard, d, |woken| !*woken)
            .unwrap_or_else(|e| e.into_inner());
        *guard
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
}

pub struct Watcher {
    account: Arc<Account>,
    /// As configured (UTF-8), for logs and popups.
    mailbox: String,
    /// Modified UTF-7, for the wire.
    wire_mailbox: String,
    outputs: SharedOutputs,
    control: Arc<Control>,
    cursor: Option<Cursor>,
    backoff: Backoff,
}

impl Watcher {
    pub fn new(
        account: Arc<Account>,
        mailbox: String,
        outputs: SharedOutputs,
        control: Arc<Control>,
    ) -> Self {
        Watcher {
            wire_mailbox: mutf7::encode(&mailbox),
            account,
            mailbox,
            outputs,
            control,
            cursor: None,
            backoff: Backoff::new(BACKOFF_FIRST, BACKOFF_CAP),
        }
    }

    /// `account/mailbox`: the thread name and the prefix of every log line.
    pub fn key(&self) -> String {
        format!("{}/{}", self.account.name, self.mailbox)
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
            let delay = self.backoff.next_delay();
            let (message, auth) = match outcome {
                Ok(Ok(())) => break,
                Ok(Err(e)) => (
                    format!("{key}: {e}"),
                    matches!(&e, WatchError::Imap(e) if e.is_auth()),
                ),
                Err(panic) => (
                    format!("{key}: internal error: {}", panic_message(&*panic)),
                    false,
                ),
            };
            let full = format!("{message}; reconnecting in {:.1}s", delay.as_secs_f64());
            if auth {
                log::error!("{full}");
            } else {
                log::warn!("{full}");
            }
            self.outputs.lock().warning(&full);
            if self.control.sleep(delay) {
                break;
            }
        }
        log::debug!("{key}: stopped");
    }

    /// One connection, from connect to failure (Err) or stop (Ok).
    fn session(&mut self) -> Result<(), WatchError> {
        let key = self.key();
        let password = credentials::resolve(&self.account.secret)?;
        let control = Arc::clone(&self.control);
        let mut conn = imap::connect(&self.account, &password, |i| control.register(i))?;
        drop(password);

        let status = conn.examine(&self.wire_mailbox, &self.mailbox)?;
        // UIDVALIDITY is mandatory (RFC 3501); a server that omits it gets a constant, which
        // still lets a reconnect resume.
        let uid_validity = status.uid_validity.unwrap_or(0);
        let uid_next = match status.uid_next {
            Some(n) => n,
            None if status.exists == 0 => 1,
            None => highest_uid(&mut conn)?.map_or(1, |u| u.saturating_add(1)),
        };
        let start = newmail::start(self.cursor, uid_validity, uid_next);
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
                validity_changed: true,
                ..
            } => {
                log::warn!("{key}: UIDVALIDITY changed; mail already there is not announced again")
            }
            Start::Resume(_) => self.check(&mut conn, Instant::now())?,
            Start::Baseline { .. } => {}
        }
        log::info!("watching {key} ({mode})");

        loop {
            if self.control.stopping() {
                conn.logout();
                return Ok(());
            }
            let woke = if conn.capabilities.idle {
                match conn.idle(self.account.idle_refresh)? {
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
                if self.control.sleep(self.account.poll_interval) {
                    conn.logout();
                    return Ok(());
                }
                conn.noop()?;
                Instant::now()
            };
            // Any wake-up is only a hint: responses after the one that woke us were
            // discarded by the crate, so ask the server what is new since the cursor.
            self.check(&mut conn, woke)?;
        }
    }

    /// Fetches everything from the cursor on and announces what is new and unread.
    fn check(&mut self, conn: &mut Connection, woke: Instant) -> Result<(), ImapError> {
        let Some(cursor) = self.cursor.as_mut() else {
            return Ok(());
        };
        let messages = conn.fetch(&cursor.fetch_range())?;
        let seen: Vec<Seen> = messages
            .iter()
            .map(|m| Seen {
                uid: m.uid,
                seen: m.seen,
            })
            .collect();
        let fresh = cursor.advance(&seen);
        if fresh.is_empty() {
            return Ok(());
        }
        let announcements: Vec<Announcement> = fresh
            .iter()
            .filter_map(|uid| messages.iter().find(|m| m.uid == *uid))
            .map(|m| self.announcement(m))
            .collect();
        let mut outputs = self.outputs.lock();
        for a in &announcements {
            outputs.announce(a, woke);
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
