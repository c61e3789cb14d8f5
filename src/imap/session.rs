//! One IMAP connection to one mailbox: TCP with timeouts and keepalive, TLS (implicit or
//! STARTTLS, never silently skipped), ID, login, EXAMINE, UID FETCH, IDLE, NOOP, LOGOUT.
//!
//! This is the only module that uses the `imap` crate; its pitfalls (see shared/DESIGN.md)
//! are handled here so the watcher sees a small, honest API: every wait returns a [`Wake`],
//! every failure an [`ImapError`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

use imap::extensions::idle::WaitOutcome;
use imap::types::{Flag, UnsolicitedResponse};
use socket2::{SockRef, TcpKeepalive};

use crate::config::{Account, AuthMethod, TlsMode};
use crate::imap::stream::{SharedTolerant, StopSignal, Stream, StreamEvents, Transport};
use crate::imap::tolerant::Note;

/// How long a TCP connect may take per resolved address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// TCP keepalive: first probe after this much silence...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(45);
/// ...then one probe every interval, and the kernel gives up after this many unanswered, so
/// a link that died silently (NAT timeout, Wi-Fi change, suspended peer) errors out of a
/// blocked IDLE read within 45 + 6 * 10 = 105 seconds. The probes are sent by the kernel:
/// they cost the daemon no wakeups.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 6;
/// The same bound for data we sent that is never acknowledged (DONE into a dead link).
const USER_TIMEOUT: Duration = Duration::from_secs(105);
/// Longest line accepted in the hand-written STARTTLS negotiation.
const MAX_PRE_TLS_LINE: usize = 8192;

/// Why a connection failed. `Auth` is kept apart because retrying it every second would
/// only lock the account.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot read ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    #[error("{host} does not offer STARTTLS; refusing to log in without TLS")]
    NoStartTls { host: String },
    #[error("login failed: {0}")]
    Auth(String),
    /// The login was refused for the server's per-user connection limit (see
    /// [`is_connection_limit`]): the credentials are fine.
    #[error("the server refused another connection: {0}")]
    Limit(String),
    #[error("cannot open mailbox {mailbox:?}: {reason}")]
    Mailbox { mailbox: String, reason: String },
    #[error("server closed the connection: {0}")]
    Bye(String),
    #[error("{context}: the server did not answer in time (timeout_secs)")]
    Timeout { context: &'static str },
    /// The server answered the command with a tagged NO: the command failed, the session
    /// is fine.
    #[error("{context}: the server refused: {reason}")]
    Refused {
        context: &'static str,
        reason: String,
    },
    #[error("{context}: {source}")]
    Protocol {
        context: &'static str,
        // Boxed: imap::Error is large and this travels through every Result here.
        #[source]
        source: Box<imap::Error>,
    },
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: io::Error,
    },
}

impl ImapError {
    fn protocol(context: &'static str) -> impl FnOnce(imap::Error) -> ImapError {
        move |source| match source {
            imap::Error::Bye(b) => ImapError::Bye(b.information),
            // A read timeout surfaces as EAGAIN ("Resource temporarily unavailable"), which
            // tells a user nothing: say what happened.
            imap::Error::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                ImapError::Timeout { context }
            }
            source => ImapError::Protocol {
                context,
                source: Box::new(source),
            },
        }
    }

    /// A failure the user has to fix (credentials), as opposed to one that heals by itself.
    /// A refusal for a per-user connection limit is not one, whatever command it answered.
    pub fn is_auth(&self) -> bool {
        matches!(self, ImapError::Auth(_)) && !self.is_connection_limit()
    }

    /// Whether the server refused this connection because the account (or user and IP)
    /// has too many already; see [`is_connection_limit`].
    /// Only the server's own words are read, never ours or a name from the config: a
    /// missing mailbox called "Rate limit" is a missing mailbox.
    pub fn is_connection_limit(&self) -> bool {
        match self {
            ImapError::Limit(_) => true,
            ImapError::Auth(text) | ImapError::Bye(text) => is_connection_limit(text),
            ImapError::Refused { reason, .. } => is_connection_limit(reason),
            // A NO or BAD answer to a command after the login (Outlook's EXAMINE).
            ImapError::Protocol { source, .. } => match source.as_ref() {
                imap::Error::No(no) => is_connection_limit(&no.information),
                imap::Error::Bad(bad) => is_connection_limit(&bad.information),
                _ => false,
            },
            // Servers repeat the mailbox's name in their answer ("Mailbox doesn't exist:
            // NAME"): it is not the server's words.
            ImapError::Mailbox { mailbox, reason } => {
                is_connection_limit(&reason.replace(mailbox.as_str(), ""))
            }
            _ => false,
        }
    }

    /// How many connections the server said it allows, when it refused one and said so.
    pub fn connection_cap(&self) -> Option<u32> {
        match self {
            ImapError::Limit(text) | ImapError::Auth(text) | ImapError::Bye(text) => {
                connection_cap(text)
            }
            _ => None,
        }
    }
}

/// `NOTIFY SET` for [`Connection::notify_set`]: the selected mailbox's new mail (with its
/// UID, so that no FETCH is needed to learn it), expunges and flag changes, and the other
/// mailboxes' new mail and expunges (RFC 5465 section 5.1). Names are quoted strings.
fn notify_set_command(others: &[&str]) -> String {
    let mut command =
        "NOTIFY SET (selected (MessageNew (UID) MessageExpunge FlagChange))".to_owned();
    if !others.is_empty() {
        let names: Vec<String> = others.iter().map(|m| quoted(m)).collect();
        command.push_str(&format!(
            " (mailboxes ({}) (MessageNew MessageExpunge))",
            names.join(" ")
        ));
    }
    command
}

/// Mailboxes named in one NOTIFY SET at most; past this, `personal` (every mailbox of the
/// user) is asked for, and reports about others dropped. Dovecot 2.3 refuses more than 100
/// names (`IMAP_NOTIFY_MAX_NAMES_PER_NS`, src/imap/cmd-notify.c: `[NOTIFICATIONOVERFLOW]
/// Too many mailbox names`).
pub const NOTIFY_NAMES_MAX: usize = 100;

/// `NOTIFY SET (mailboxes (...) <events>)` (RFC 5465 section 6): the events of `events`
/// in any of `mailboxes` (wire names), reported as `* STATUS`, for a connection that keeps
/// no mailbox selected between looks. None: `NOTIFY NONE`, no reports at all. More than
/// [`NOTIFY_NAMES_MAX`]: `personal` instead of the names.
fn notify_mailboxes_command(mailboxes: &[&str], events: SharedEvents) -> String {
    if mailboxes.is_empty() {
        return "NOTIFY NONE".to_owned();
    }
    let events = events.list();
    if mailboxes.len() > NOTIFY_NAMES_MAX {
        return format!("NOTIFY SET (personal {events})");
    }
    let names: Vec<String> = mailboxes.iter().map(|m| quoted(m)).collect();
    format!("NOTIFY SET (mailboxes ({}) {events})", names.join(" "))
}

/// The events a shared connection asks NOTIFY for (RFC 5465 section 5), from the most
/// useful down: a server that refuses an event (`BAD [BADEVENT ...]`, section 5.3) is
/// asked for less, not given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedEvents {
    /// New mail, and what changes a mailbox's unread count (expunges, mail read
    /// elsewhere).
    Counts,
    /// New mail and expunges: mail read elsewhere is not reported.
    NewAndExpunge,
    /// New mail only (what mailpushd asked before unread counts; Dovecot takes it).
    New,
}

impl SharedEvents {
    /// The event list on the wire.
    pub fn list(self) -> &'static str {
        match self {
            SharedEvents::Counts => "(MessageNew MessageExpunge FlagChange)",
            SharedEvents::NewAndExpunge => "(MessageNew MessageExpunge)",
            SharedEvents::New => "(MessageNew)",
        }
    }

    /// The next list to ask a server that refused this one, if any.
    pub fn weaker(self) -> Option<Self> {
        match self {
            SharedEvents::Counts => Some(SharedEvents::NewAndExpunge),
            SharedEvents::NewAndExpunge => Some(SharedEvents::New),
            SharedEvents::New => None,
        }
    }
}

/// An IMAP quoted string (RFC 3501 section 4.3): `"` and `\` escaped.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// NOTIFY reports kept at most, one per mailbox (see `Connection::remember_status`).
const MAX_STATUSES: usize = 4096;

/// A mailbox name as a server's `* STATUS` gives it, made comparable with the wire name
/// mailpushd sent: a quoted string's escapes (`\"`, `\\`) undone (imap-proto leaves
/// them), and INBOX in any case is INBOX (RFC 3501 section 5.1).
pub fn name_key(name: &str) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        return "INBOX".to_owned();
    }
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// A wire name mailpushd sends, in the form [`name_key`] gives the server's: INBOX in any
/// case is INBOX.
pub fn wire_key(wire: &str) -> String {
    if wire.eq_ignore_ascii_case("INBOX") {
        "INBOX".to_owned()
    } else {
        wire.to_owned()
    }
}

/// The UIDNEXT in a `* STATUS` answer, if it has one.
fn uid_next_of(attributes: &[imap_proto::StatusAttribute]) -> Option<u32> {
    attributes.iter().find_map(|a| match a {
        imap_proto::StatusAttribute::UidNext(n) => Some(*n),
        _ => None,
    })
}

/// The number of connections a refusal says the server allows, where it says one: Dovecot
/// names its setting, "... exceeded (mail_max_userip_connections=10)".
pub fn connection_cap(text: &str) -> Option<u32> {
    let (_, rest) = text.split_once("mail_max_userip_connections=")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Whether a server's words refuse a connection for a per-user limit rather than for
/// wrong credentials or a broken link: RFC 5530's `[LIMIT]` response code (which imap-proto
/// leaves in the text), or the words real servers send (shared/FIELD.md): Dovecot "Maximum
/// number of connections from user+IP exceeded" (with `[UNAVAILABLE]` or `[LIMIT]`), Gmail
/// "Too many simultaneous connections", Outlook "User is authenticated but not connected",
/// Yahoo "Rate limit hit". `[UNAVAILABLE]` alone is not enough: RFC 5530 gives it to any
/// subsystem that is down (Dovecot's "Temporary authentication failure").
pub fn is_connection_limit(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    [
        "[limit]",
        "maximum number of connections",
        "too many simultaneous connections",
        "too many connections",
        "user is authenticated but not connected",
        "rate limit",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// A clone of the connection's socket, held by the supervisor: shutting it down is the only
/// way to wake a thread blocked in IDLE (a read timeout set from another thread does not
/// affect a read already in progress).
#[derive(Debug)]
pub struct Interrupter(TcpStream);

impl Interrupter {
    pub fn interrupt(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

/// What the server supports that changes how we watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub idle: bool,
    pub id: bool,
    /// NOTIFY (RFC 5465): one connection hears of new mail in every mailbox
    /// ([`Connection::notify_mailboxes`]).
    pub notify: bool,
    /// UNSELECT (RFC 3691): leave a mailbox without CLOSE's implied expunge.
    pub unselect: bool,
    /// LIST-EXTENDED and SPECIAL-USE (RFC 5258, RFC 6154): LIST can be asked for special
    /// uses (`RETURN (SPECIAL-USE)`), which a server may give only when asked.
    pub list_special_use: bool,
}

pub use crate::config::patterns::{Listed, Listing};

/// EXAMINE's answer, reduced to what the new-mail logic needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxStatus {
    pub exists: u32,
    pub uid_validity: Option<u32>,
    pub uid_next: Option<u32>,
    /// The number of messages without `\Seen`: from STATUS (UNSEEN), `None` from EXAMINE
    /// (whose UNSEEN response code is the first unseen message's number, not a count).
    pub unseen: Option<u32>,
}

/// What the server says about one message in a `UID FETCH` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub uid: u32,
    /// Already read (`\Seen`), e.g. filed by a client or a filter: not announced.
    pub seen: bool,
}

/// The header fields a notification needs, as fetched: the raw block of `From:` and
/// `Subject:` lines (RFC 5322 §2.2), at most [`HEADER_BYTES`] of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    pub uid: u32,
    pub block: Vec<u8>,
}

/// The most of a message's From and Subject lines fetched (a partial fetch, RFC 3501
/// §6.4.5 `<0.n>`): the popup shows 200 characters of a subject and syslog 1,000, and a
/// batch of [`HEADER_BATCH`] such blocks stays far inside the 16 MiB answer bound however
/// hostile the message.
pub const HEADER_BYTES: usize = 16 * 1024;
/// Messages whose headers are fetched in one `UID FETCH`.
pub const HEADER_BATCH: usize = 200;

/// Why an IDLE (or poll sleep) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// EXISTS: something may have arrived. `at` is when the line was read, for latency
    /// figures.
    Changed { at: Instant },
    /// The refresh interval passed without news; IDLE is re-issued.
    Refresh,
    /// The server said nothing for `idle_silence_secs` and answered the DONE that checked
    /// the link: it is alive; IDLE is re-issued.
    Silence,
    /// The server ended IDLE by itself with a tagged answer (some do, routinely): IDLE is
    /// re-issued.
    EndedByServer,
    /// An untagged line the crate does not know: the session is still usable, but anything
    /// after it in the same burst was discarded, so re-query.
    Unexpected(String),
}

/// An authenticated session with one mailbox examined (read-only).
pub struct Connection {
    session: imap::Session<Stream>,
    /// What the tolerant layer under the session did (src/imap/tolerant.rs).
    tolerant: SharedTolerant,
    /// What the stream saw that the crate does not report (silence, a timed-out answer).
    events: Arc<Mutex<StreamEvents>>,
    pub capabilities: Capabilities,
    /// The server reported a change (EXISTS, EXPUNGE, FETCH) in the answer to one of our
    /// commands. It will not say so again once IDLE starts, so the watcher must look
    /// before idling (see [`Connection::take_changed`]).
    changed: bool,
    /// Mailboxes other than the selected one that NOTIFY (RFC 5465) reported a change in,
    /// by wire name, with the UIDNEXT the `* STATUS` said (if it did): the latest per
    /// mailbox, so it stays bounded. See [`Connection::notify_set`].
    statuses: BTreeMap<String, Option<u32>>,
    /// The mailboxes NOTIFY was asked about (`None`: not asked yet): reports about any
    /// other are dropped, so junk cannot crowd out the ones that matter.
    report_filter: Option<std::collections::BTreeSet<String>>,
}

/// Connects, secures, identifies and logs in.
///
/// Every step is bounded and can be stopped: the name lookup by `timeout_secs` and
/// `stop`; each TCP connect by [`CONNECT_TIMEOUT`] (or `timeout_secs`, if shorter), and
/// `register` receives each socket's interrupter before its connect starts, so a stop or
/// reload cuts a connect, a hanging TLS handshake or login short. Once connected, `stop`
/// ends a blocked IDLE so that DONE and LOGOUT can be sent (src/imap/stream.rs).
pub fn connect(
    account: &Account,
    password: &str,
    stop: Arc<StopSignal>,
    mut register: impl FnMut(Interrupter),
) -> Result<Connection, ImapError> {
    let addrs = resolve(&account.host, account.port, account.timeout, &stop)?;
    let tcp = tcp_connect(
        &account.host,
        account.port,
        &addrs,
        account.timeout,
        &mut register,
    )?;

    let transport = match account.tls {
        TlsMode::Implicit => Transport::Tls(Box::new(tls_wrap(account, tcp)?)),
        TlsMode::Starttls => {
            let mut tcp = tcp;
            starttls_negotiate(&mut tcp, &account.host)?;
            Transport::Tls(Box::new(tls_wrap(account, tcp)?))
        }
        TlsMode::None => Transport::Plain(tcp),
    };
    let mut stream = Stream::new(transport, account.timeout, stop);
    stream.set_silence_limit(Some(account.idle_silence));
    let tolerant = stream.tolerant();
    let events = Arc::clone(&stream.events);

    let mut client = imap::Client::new(stream);
    if account.tls != TlsMode::Starttls {
        // After STARTTLS there is no second greeting; it was read before the upgrade.
        let greeting = client
            .read_greeting()
            .map_err(ImapError::protocol("reading greeting"))?;
        if greeting.starts_with(b"* BYE") {
            return Err(ImapError::Bye(
                String::from_utf8_lossy(&greeting).trim_end().to_owned(),
            ));
        }
    }

    let offered = client
        .capabilities()
        .map_err(ImapError::protocol("reading capabilities"))?;
    let offered = Offered {
        login_disabled: offered.has_str("LOGINDISABLED"),
        plain: offered.has_str("AUTH=PLAIN"),
        xoauth2: offered.has_str("AUTH=XOAUTH2"),
        oauthbearer: offered.has_str("AUTH=OAUTHBEARER"),
    };
    let method = choose_auth(account.auth, account.secret.is_token(), offered)?;
    log::debug!("{}: logging in with {method:?}", account.name);
    let sasl = Sasl {
        method,
        user: &account.username,
        secret: password,
        host: &account.host,
        port: account.port,
        server_error: RefCell::new(None),
    };
    let result = match method {
        AuthMethod::Login => client.login(&account.username, password),
        AuthMethod::Plain => client.authenticate("PLAIN", &sasl),
        AuthMethod::Xoauth2 => client.authenticate("XOAUTH2", &sasl),
        AuthMethod::Oauthbearer => client.authenticate("OAUTHBEARER", &sasl),
    };
    let mut session = result.map_err(|(e, _)| {
        // The server's SASL error challenge (OAuth2: a JSON status) says more than its NO.
        let detail = sasl
            .server_error
            .borrow()
            .as_ref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        match e {
            imap::Error::No(no) if is_connection_limit(&no.information) => {
                ImapError::Limit(no.information)
            }
            imap::Error::Bad(bad) if is_connection_limit(&bad.information) => {
                ImapError::Limit(bad.information)
            }
            imap::Error::No(no) => ImapError::Auth(format!("{}{detail}", no.information)),
            imap::Error::Bad(bad) => ImapError::Auth(format!("{}{detail}", bad.information)),
            // Gmail: `* NO [ALERT] Too many simultaneous connections.`, then the socket
            // closes: the warning, not the closed socket, is what happened.
            e => match tolerant
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .said(is_connection_limit)
            {
                Some(text) => ImapError::Limit(text),
                None => ImapError::protocol("logging in")(e),
            },
        }
    })?;

    let caps = session
        .capabilities()
        .map_err(ImapError::protocol("reading capabilities"))?;
    let capabilities = Capabilities {
        idle: caps.has_str("IDLE"),
        id: caps.has_str("ID"),
        notify: caps.has_str("NOTIFY"),
        unselect: caps.has_str("UNSELECT"),
        list_special_use: caps.has_str("LIST-EXTENDED") && caps.has_str("SPECIAL-USE"),
    };
    drop(caps);

    if capabilities.id {
        // NetEase (163/126/yeah) answers SELECT/EXAMINE with "Unsafe Login" unless the
        // client identifies itself first (RFC 2971). Harmless everywhere else.
        let id = format!(
            "ID (\"name\" \"mailpushd\" \"version\" \"{}\" \"vendor\" \"mailpushd\")",
            env!("CARGO_PKG_VERSION")
        );
        if let Err(e) = session.run_command_and_check_ok(id) {
            log::debug!("{}: ID command refused: {e}", account.name);
        }
    }

    Ok(Connection {
        session,
        tolerant,
        events,
        capabilities,
        changed: false,
        statuses: BTreeMap::new(),
        report_filter: None,
    })
}

/// The login mechanisms a server advertises before authentication.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offered {
    pub login_disabled: bool,
    pub plain: bool,
    pub xoauth2: bool,
    pub oauthbearer: bool,
}

/// Which mechanism to log in with: the configured one, or the best the server offers for
/// what we have (a token: XOAUTH2, else OAUTHBEARER; a password: AUTHENTICATE PLAIN, which
/// carries any UTF-8 password intact, else LOGIN).
pub fn choose_auth(
    configured: Option<AuthMethod>,
    token: bool,
    offered: Offered,
) -> Result<AuthMethod, ImapError> {
    let method = match configured {
        Some(m) => m,
        None if token && !offered.xoauth2 && offered.oauthbearer => AuthMethod::Oauthbearer,
        None if token => AuthMethod::Xoauth2,
        None if offered.plain => AuthMethod::Plain,
        None => AuthMethod::Login,
    };
    if method == AuthMethod::Login && offered.login_disabled {
        return Err(ImapError::Auth(
            "the server disables LOGIN (LOGINDISABLED) and offers no AUTH=PLAIN".to_owned(),
        ));
    }
    Ok(method)
}

/// The SASL exchanges of AUTHENTICATE PLAIN, XOAUTH2 and OAUTHBEARER (RFC 4616, Google's
/// XOAUTH2, RFC 7628). The first challenge is empty; a second one is the server's error
/// (OAuth2: a JSON status), which must be answered (XOAUTH2: empty; OAUTHBEARER: a single
/// %x01) before the server sends its tagged NO. The error is kept for the message.
struct Sasl<'a> {
    method: AuthMethod,
    user: &'a str,
    secret: &'a str,
    host: &'a str,
    port: u16,
    server_error: RefCell<Option<String>>,
}

impl imap::Authenticator for Sasl<'_> {
    type Response = Vec<u8>;

    fn process(&self, challenge: &[u8]) -> Vec<u8> {
        if !challenge.is_empty() {
            // Kept raw: the watcher escapes error text once, for every output.
            *self.server_error.borrow_mut() = Some(String::from_utf8_lossy(challenge).into_owned());
            return match self.method {
                AuthMethod::Oauthbearer => vec![0x01],
                _ => Vec::new(),
            };
        }
        sasl_initial(self.method, self.user, self.secret, self.host, self.port)
    }
}

/// The client's first SASL message.
fn sasl_initial(method: AuthMethod, user: &str, secret: &str, host: &str, port: u16) -> Vec<u8> {
    match method {
        AuthMethod::Plain | AuthMethod::Login => format!("\0{user}\0{secret}").into_bytes(),
        AuthMethod::Xoauth2 => format!("user={user}\x01auth=Bearer {secret}\x01\x01").into_bytes(),
        AuthMethod::Oauthbearer => {
            // The gs2 header escapes ',' and '=' in the authzid (RFC 5801).
            let authzid = user.replace('=', "=3D").replace(',', "=2C");
            format!("n,a={authzid},\x01host={host}\x01port={port}\x01auth=Bearer {secret}\x01\x01")
                .into_bytes()
        }
    }
}

/// The host's addresses, looked up on a thread of its own (`getaddrinfo` cannot be
/// interrupted), waited for at most `timeout` and given up at once on a stop. A lookup
/// given up on finishes on its own thread and is dropped.
fn resolve(
    host: &str,
    port: u16,
    timeout: Duration,
    stop: &StopSignal,
) -> Result<Vec<SocketAddr>, ImapError> {
    let failed = |source| ImapError::Resolve {
        host: host.to_owned(),
        source,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let target = (host.to_owned(), port);
    std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let _ = tx.send(
                target
                    .to_socket_addrs()
                    .map(|a| a.collect::<Vec<SocketAddr>>()),
            );
        })
        .map_err(failed)?;
    let deadline = Instant::now() + timeout;
    loop {
        // Slices of 100 ms, only while a lookup is under way: a stop is seen promptly.
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(result) => return result.map_err(failed),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(failed(io::Error::other("the lookup thread ended")))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if stop.raised() {
                    return Err(failed(io::Error::new(
                        io::ErrorKind::Interrupted,
                        "stopped",
                    )));
                }
                if left.is_zero() {
                    return Err(failed(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no answer within timeout_secs",
                    )));
                }
            }
        }
    }
}

/// Connects to the first of `addrs` that answers. `timeout` bounds every read and write
/// outside IDLE (greeting, TLS handshake, commands): a server slower than that is treated
/// as gone. Each socket is handed to `register` before its connect, so that shutting it
/// down (stop, reload) aborts the connect (Linux disconnects a socket in SYN-SENT on
/// shutdown).
fn tcp_connect(
    host: &str,
    port: u16,
    addrs: &[SocketAddr],
    timeout: Duration,
    register: &mut impl FnMut(Interrupter),
) -> Result<TcpStream, ImapError> {
    let io_err = |context| move |source| ImapError::Io { context, source };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
    for addr in addrs {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(*addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .map_err(io_err("creating socket"))?;
        let tcp: TcpStream = socket.into();
        register(Interrupter(
            tcp.try_clone().map_err(io_err("clone socket"))?,
        ));
        let socket = socket2::SockRef::from(&tcp);
        match socket.connect_timeout(&(*addr).into(), CONNECT_TIMEOUT.min(timeout)) {
            Ok(()) => {
                configure_socket(&tcp, timeout).map_err(io_err("configuring socket"))?;
                return Ok(tcp);
            }
            Err(e) => last = e,
        }
    }
    Err(ImapError::Connect {
        addr: format!("{host}:{port}"),
        source: last,
    })
}

fn configure_socket(tcp: &TcpStream, timeout: Duration) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    let sock = SockRef::from(tcp);
    sock.set_tcp_keepalive(&keepalive)?;
    sock.set_tcp_user_timeout(Some(USER_TIMEOUT))
}

fn tls_wrap(
    account: &Account,
    tcp: TcpStream,
) -> Result<native_tls::TlsStream<TcpStream>, ImapError> {
    if !account.tls_verify {
        // The documented escape hatch: said at every connect, so it is never forgotten.
        log::warn!(
            "{}: tls_verify = false: NOT checking {}'s certificate; anyone on the path can \
             read the password",
            account.name,
            account.host
        );
    }
    let extra_root_pem = match &account.ca_file {
        // Read at every connect: the shared context is keyed by the contents, so a
        // replaced certificate takes effect at the next connect.
        Some(path) => Some(std::fs::read(path).map_err(|e| ImapError::CaFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?),
        None => None,
    };
    let trust = crate::imap::tls::Trust {
        verify: account.tls_verify,
        extra_root_pem,
    };
    let connector = crate::imap::tls::connector(&trust).map_err(|e| match &account.ca_file {
        // Building fails on a bad ca_file; native-tls only logs problems with the system
        // store, so without a ca_file it is a TLS setup error.
        Some(path) => ImapError::CaFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        },
        None => ImapError::Tls {
            host: account.host.clone(),
            reason: e.to_string(),
        },
    })?;
    let tls_err = |reason: String| ImapError::Tls {
        host: account.host.clone(),
        reason,
    };
    // Brackets around an IPv6 literal are URL syntax, not part of the name to verify.
    let domain = account.host.trim_start_matches('[').trim_end_matches(']');
    connector.connect(domain, tcp).map_err(|e| match e {
        native_tls::HandshakeError::Failure(e) => tls_err(e.to_string()),
        native_tls::HandshakeError::WouldBlock(_) => tls_err("handshake timed out".to_owned()),
    })
}

/// The plaintext part of STARTTLS (RFC 3501 §6.2.1), done by hand because the crate's
/// `Client` has no public way to send a raw command before login. Fails, rather than
/// continuing in the clear, if the server does not advertise STARTTLS or refuses it.
fn starttls_negotiate(tcp: &mut TcpStream, host: &str) -> Result<(), ImapError> {
    let greeting = read_line(tcp)?;
    if !greeting.starts_with("* OK") {
        return Err(ImapError::Bye(greeting));
    }
    let mut advertised = capability_has_starttls(&greeting);
    if !advertised {
        write_all(tcp, b"S1 CAPABILITY\r\n")?;
        loop {
            let line = read_line(tcp)?;
            if line.starts_with("* ") {
                advertised |= capability_has_starttls(&line);
            } else if line.starts_with("S1 ") {
                break;
            }
        }
    }
    if !advertised {
        return Err(ImapError::NoStartTls {
            host: host.to_owned(),
        });
    }
    write_all(tcp, b"S2 STARTTLS\r\n")?;
    loop {
        let line = read_line(tcp)?;
        if let Some(rest) = line.strip_prefix("S2 ") {
            if rest.to_ascii_uppercase().starts_with("OK") {
                return Ok(());
            }
            return Err(ImapError::Tls {
                host: host.to_owned(),
                reason: format!("server refused STARTTLS: {rest}"),
            });
        }
    }
}

fn capability_has_starttls(line: &str) -> bool {
    let upper = line.to_ascii_uppercase();
    upper.contains("CAPABILITY")
        && upper
            .split(|c: char| c.is_whitespace() || c == '[' || c == ']')
            .any(|w| w == "STARTTLS")
}

fn read_line(tcp: &mut TcpStream) -> Result<String, ImapError> {
    // One byte at a time: nothing after the server's STARTTLS answer may be consumed, as the
    // TLS handshake starts right there. These are a handful of short lines.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = tcp.read(&mut byte).map_err(|source| ImapError::Io {
            context: "reading before STARTTLS",
            source,
        })?;
        if n == 0 {
            return Err(ImapError::Bye("connection closed before STARTTLS".into()));
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
        if line.len() > MAX_PRE_TLS_LINE {
            return Err(ImapError::Bye("overlong line before STARTTLS".into()));
        }
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_owned())
}

fn write_all(tcp: &mut TcpStream, bytes: &[u8]) -> Result<(), ImapError> {
    tcp.write_all(bytes).map_err(|source| ImapError::Io {
        context: "writing before STARTTLS",
        source,
    })
}

impl Connection {
    /// EXAMINE (read-only SELECT): the daemon never changes a flag on its own.
    ///
    /// A NO or BAD answer is about this mailbox ([`ImapError::Mailbox`]: gone, renamed, a
    /// name the server will not take), not the connection; whether its words are the
    /// server's connection limit is for [`ImapError::is_connection_limit`] to say.
    pub fn examine(&mut self, wire_name: &str, display: &str) -> Result<MailboxStatus, ImapError> {
        let mb = match self.session.examine(wire_name) {
            Ok(mb) => mb,
            Err(imap::Error::No(imap::error::No { information, .. }))
            | Err(imap::Error::Bad(imap::error::Bad { information, .. })) => {
                return Err(ImapError::Mailbox {
                    mailbox: display.to_owned(),
                    reason: information,
                })
            }
            Err(e) => return Err(self.failed("EXAMINE", e)),
        };
        self.drain_unsolicited()?;
        Ok(MailboxStatus {
            exists: mb.exists,
            uid_validity: mb.uid_validity,
            uid_next: mb.uid_next,
            unseen: None,
        })
    }

    /// From now on, records every EXISTS, EXPUNGE, FETCH FLAGS and SEARCH answer the server
    /// sends, in order, for [`Connection::take_changes`] (src/mailbox/unread.rs keeps the
    /// unread count from them). Call before EXAMINE, so its EXISTS is the first; for a
    /// connection that keeps one mailbox selected.
    pub fn record_changes(&mut self) {
        self.tolerant
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record_changes(true);
    }

    /// `SEARCH UNSEEN` (RFC 3501 section 6.4.4): the unseen messages of the selected
    /// mailbox, by sequence number. The answer is not returned but recorded in order with
    /// the changes around it (see [`Connection::record_changes`]): one round trip, and an
    /// answer of about 6 bytes per unseen message (10,000 unseen: about 60 KB), once per
    /// connection and after a change that did not fit.
    ///
    /// Errors: [`ImapError::Refused`] when the server answers NO or BAD: that costs the
    /// count only, not the connection.
    pub fn search_unseen(&mut self) -> Result<(), ImapError> {
        match self.session.search("UNSEEN") {
            Ok(_) => {}
            Err(imap::Error::Bad(bad)) => {
                self.drain_unsolicited()?;
                return Err(ImapError::Refused {
                    context: "SEARCH",
                    reason: bad.information,
                });
            }
            Err(e) => return Err(self.failed("SEARCH", e)),
        }
        self.drain_unsolicited()
    }

    /// The changes recorded since the last call, in order, and whether some were left out
    /// (more than the layer keeps between two takes: ask [`Connection::search_unseen`]
    /// again).
    pub fn take_changes(&mut self) -> (Vec<crate::imap::Change>, bool) {
        self.tolerant
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_changes()
    }

    /// `UID FETCH <set> (UID FLAGS)`: which messages there are and which are read. The
    /// least structure there is to a message, so the least that can go wrong reading it.
    pub fn fetch_flags(&mut self, uid_set: &str) -> Result<Vec<Seen>, ImapError> {
        let fetches = match self.session.uid_fetch(uid_set, "(UID FLAGS)") {
            Ok(f) => f,
            Err(e) => return Err(self.failed("UID FETCH", e)),
        };
        let flags = fetches
            .iter()
            .filter_map(|f| {
                Some(Seen {
                    uid: f.uid?,
                    seen: f.flags().contains(&Flag::Seen),
                })
            })
            .collect();
        drop(fetches);
        self.drain_unsolicited()?;
        Ok(flags)
    }

    /// The From and Subject lines of the messages in `uid_set` (at most [`HEADER_BYTES`]
    /// each), without setting `\Seen` (BODY.PEEK). A message the server leaves out, or
    /// whose answer could not be read (see [`Connection::take_notes`]), is missing from
    /// the result.
    pub fn fetch_headers(&mut self, uid_set: &str) -> Result<Vec<Headers>, ImapError> {
        let items = format!("(UID BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]<0.{HEADER_BYTES}>)");
        let fetches = match self.session.uid_fetch(uid_set, items) {
            Ok(f) => f,
            Err(e) => return Err(self.failed("UID FETCH", e)),
        };
        let headers = fetches
            .iter()
            .filter_map(|f| {
                Some(Headers {
                    uid: f.uid?,
                    block: f.header()?.to_vec(),
                })
            })
            .collect();
        drop(fetches);
        self.drain_unsolicited()?;
        Ok(headers)
    }

    /// `UID SEARCH UID <set>`: the UIDs in a range, for when a FETCH answer had lines that
    /// could not be read (a SEARCH answer is a list of numbers).
    pub fn search_uids(&mut self, uid_set: &str) -> Result<Vec<u32>, ImapError> {
        let uids = match self.session.uid_search(format!("UID {uid_set}")) {
            Ok(u) => u,
            Err(e) => return Err(self.failed("UID SEARCH", e)),
        };
        self.drain_unsolicited()?;
        let mut uids: Vec<u32> = uids.into_iter().collect();
        uids.sort_unstable();
        Ok(uids)
    }

    /// What the tolerant layer did since the last call: server warnings, lines it mended,
    /// set aside or could not read (src/imap/tolerant.rs).
    pub fn take_notes(&mut self) -> Vec<Note> {
        self.tolerant
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_notes()
    }

    /// A failed command, said as plainly as what happened allows: the BYE the server sent
    /// (which the crate may only see as a closed connection), or the answer's deadline.
    fn failed(&mut self, context: &'static str, e: imap::Error) -> ImapError {
        let bye = self
            .tolerant
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .peek_bye();
        if let Some(text) = bye {
            return ImapError::Bye(text);
        }
        if std::mem::take(&mut self.events().timed_out) {
            return ImapError::Timeout { context };
        }
        if let imap::Error::No(no) = e {
            return ImapError::Refused {
                context,
                reason: no.information,
            };
        }
        ImapError::protocol(context)(e)
    }

    fn events(&self) -> std::sync::MutexGuard<'_, StreamEvents> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// NOOP: lets the server report changes; used when polling a server without IDLE.
    pub fn noop(&mut self) -> Result<(), ImapError> {
        if let Err(e) = self.session.noop() {
            return Err(self.failed("NOOP", e));
        }
        self.drain_unsolicited()
    }

    /// IDLE until the server reports a change or `refresh` has passed.
    ///
    /// `keepalive(false)`: the crate's own refresh recurses and overflows the stack after a
    /// few hundred rounds, so the caller loops instead. `refresh` is a real deadline (see
    /// `stream.rs`), not a silence timeout; TCP keepalive finds dead links sooner. After
    /// `wait_while` the stream is back on the command timeout, so the DONE that dropping
    /// the handle sends cannot wait forever either.
    ///
    /// With `wake_on_flags`, flag changes and expunges end the IDLE too (there are popups
    /// on screen that may need closing); otherwise only EXISTS does.
    pub fn idle(&mut self, refresh: Duration, wake_on_flags: bool) -> Result<Wake, ImapError> {
        let mut bye: Option<String> = None;
        let mut changed_at: Option<Instant> = None;
        let mut layer_woke = false;
        let mut statuses = BTreeMap::new();
        let tolerant = Arc::clone(&self.tolerant);
        self.events().timed_out = false;
        let outcome = {
            let mut handle = self.session.idle();
            handle.timeout(refresh).keepalive(false);
            handle.wait_while(|resp| match resp {
                UnsolicitedResponse::Exists(_) => {
                    changed_at = Some(Instant::now());
                    false
                }
                UnsolicitedResponse::Bye { information, .. } => {
                    bye = Some(information.unwrap_or_default());
                    false
                }
                // NOTIFY: news from a mailbox that is not selected.
                UnsolicitedResponse::Status {
                    mailbox,
                    attributes,
                } => {
                    statuses.insert(mailbox, uid_next_of(&attributes));
                    changed_at = Some(Instant::now());
                    false
                }
                UnsolicitedResponse::Fetch { .. } | UnsolicitedResponse::Expunge(_)
                    if wake_on_flags =>
                {
                    changed_at = Some(Instant::now());
                    false
                }
                // The tolerant layer's own line: the server ended IDLE, or sent a line
                // that could not be read (it may have been the EXISTS we wait for).
                UnsolicitedResponse::Ok { .. }
                    if tolerant
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take_wake() =>
                {
                    layer_woke = true;
                    false
                }
                // RECENT, and flag changes nobody is waiting for: nothing to do.
                _ => true,
            })
            // Dropping the handle sends DONE and reads its answer, within `timeout_secs`
            // (or the shorter probe bound after a silence).
        };
        for (mailbox, uid_next) in statuses {
            self.remember_status(name_key(&mailbox), uid_next);
        }
        // The reports the crate did not hand on: after the first of a burst, and with the
        // answer to DONE.
        let reports = self
            .tolerant
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_reports();
        for (mailbox, uid_next) in reports {
            self.remember_status(mailbox, uid_next);
        }
        if let Some(info) = bye {
            return Err(ImapError::Bye(info));
        }
        let events = std::mem::take(&mut *self.events());
        if events.timed_out {
            // The DONE went unanswered: the link is dead, whatever the crate made of it.
            return Err(ImapError::Timeout {
                context: "ending IDLE",
            });
        }
        let ended_by_server = self.take_notes_where(|n| matches!(n, Note::IdleEndedByServer));
        match outcome {
            Ok(WaitOutcome::MailboxChanged) if layer_woke && ended_by_server => {
                Ok(Wake::EndedByServer)
            }
            Ok(WaitOutcome::MailboxChanged) => Ok(Wake::Changed {
                at: changed_at.unwrap_or_else(Instant::now),
            }),
            Ok(WaitOutcome::TimedOut) if events.silent => Ok(Wake::Silence),
            Ok(WaitOutcome::TimedOut) => Ok(Wake::Refresh),
            Err(imap::Error::Unexpected(resp)) => Ok(Wake::Unexpected(format!("{resp:?}"))),
            Err(e) => Err(self.failed("IDLE", e)),
        }
    }

    /// Whether a note matching `pred` is pending; such notes are taken, the rest stay.
    fn take_notes_where(&mut self, pred: impl Fn(&Note) -> bool) -> bool {
        self.tolerant
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_notes_where(pred)
    }

    /// Sets `\Seen` on one message ("Mark as read" on a popup). Opens the mailbox
    /// read-write: call on a connection of its own, not a watcher's (whose mailbox is
    /// EXAMINEd read-only and which is busy in IDLE).
    pub fn mark_seen(&mut self, wire_name: &str, display: &str, uid: u32) -> Result<(), ImapError> {
        self.session.select(wire_name).map_err(|e| match e {
            imap::Error::No(no) => ImapError::Mailbox {
                mailbox: display.to_owned(),
                reason: no.information,
            },
            e => ImapError::protocol("SELECT")(e),
        })?;
        if let Err(e) = self
            .session
            .uid_store(uid.to_string(), "+FLAGS.SILENT (\\Seen)")
        {
            return Err(self.failed("UID STORE", e));
        }
        self.drain_unsolicited()
    }

    /// LOGOUT, best effort: the connection is being dropped either way.
    pub fn logout(mut self) {
        let _ = self.session.logout();
    }

    /// Whether the server reported a change while answering our commands since the last
    /// call: new mail that arrived during a UID FETCH is announced as `* N EXISTS` in that
    /// FETCH's answer, and not again in the IDLE that follows.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Unsolicited responses pile up in the session between commands. Only what they mean
    /// is kept (a change happened; BYE ends the session), not the responses themselves, so
    /// memory stays bounded on a session that lives for weeks.
    fn drain_unsolicited(&mut self) -> Result<(), ImapError> {
        for resp in self.session.take_all_unsolicited() {
            match resp {
                UnsolicitedResponse::Bye { information, .. } => {
                    return Err(ImapError::Bye(information.unwrap_or_default()));
                }
                UnsolicitedResponse::Exists(_)
                | UnsolicitedResponse::Expunge(_)
                | UnsolicitedResponse::Fetch { .. } => self.changed = true,
                UnsolicitedResponse::Status {
                    mailbox,
                    attributes,
                } => {
                    self.remember_status(name_key(&mailbox), uid_next_of(&attributes));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Asks the server (RFC 5465, which it must offer: [`Capabilities::notify`]) to report
    /// new mail and expunges in the selected mailbox as usual, and new mail in each of
    /// `others` (wire names) as `* STATUS`, during IDLE too. Such a report ends IDLE with
    /// [`Wake::Changed`]; [`Connection::take_statuses`] then says which mailboxes. The
    /// setting lasts for the session and follows whichever mailbox is selected.
    ///
    /// Errors: [`ImapError::Refused`] if the server answers NO (RFC 5465 section 5.3:
    /// `[NOTIFICATIONOVERFLOW]` or a mailbox it cannot watch), as for any command.
    pub fn notify_set(&mut self, others: &[&str]) -> Result<(), ImapError> {
        let command = notify_set_command(others);
        let result = self.session.run_command_and_check_ok(&command);
        self.drain_unsolicited()?;
        result.map_err(|e| match e {
            imap::Error::No(no) => ImapError::Refused {
                context: "NOTIFY SET",
                reason: no.information,
            },
            e => self.failed("NOTIFY SET", e),
        })
    }

    /// Asks the server (RFC 5465, which it must offer: [`Capabilities::notify`]) to report
    /// new mail in each of `mailboxes` (wire names) as `* STATUS` with UIDNEXT, during IDLE
    /// too, while no mailbox is selected: the shared connection's way of hearing of every
    /// mailbox at once. A report ends IDLE with [`Wake::Changed`];
    /// [`Connection::take_statuses`] says which mailboxes.
    ///
    /// Errors: [`ImapError::Refused`] if the server answers NO or BAD (RFC 5465 section
    /// 5.3: `[NOTIFICATIONOVERFLOW]`, or a mailbox it cannot watch; Dovecot takes at most
    /// 100 names).
    pub fn notify_mailboxes(
        &mut self,
        mailboxes: &[&str],
        events: SharedEvents,
    ) -> Result<(), ImapError> {
        let command = notify_mailboxes_command(mailboxes, events);
        let filter: std::collections::BTreeSet<String> =
            mailboxes.iter().map(|m| wire_key(m)).collect();
        self.tolerant
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .filter_reports(filter.clone());
        self.report_filter = Some(filter);
        match self.session.run_command_and_read_response(&command) {
            Ok(data) => {
                self.drain_unsolicited()?;
                self.absorb(&data, None)?;
                Ok(())
            }
            Err(imap::Error::No(imap::error::No { information, .. }))
            | Err(imap::Error::Bad(imap::error::Bad { information, .. })) => {
                self.drain_unsolicited()?;
                Err(ImapError::Refused {
                    context: "NOTIFY SET",
                    reason: information,
                })
            }
            Err(e) => Err(self.failed("NOTIFY SET", e)),
        }
    }

    /// `STATUS <mailbox> (UIDNEXT UIDVALIDITY UNSEEN)` (RFC 3501 section 6.3.10): whether
    /// a mailbox that is not selected has new mail, and how many of its messages are
    /// unread, without selecting it. `exists` is left 0. A mailbox the server refuses (NO or BAD: gone, renamed, a name it will not take)
    /// is [`ImapError::Mailbox`], as for [`Connection::examine`].
    pub fn status(&mut self, wire_name: &str, display: &str) -> Result<MailboxStatus, ImapError> {
        let command = format!("STATUS {} (UIDNEXT UIDVALIDITY UNSEEN)", quoted(wire_name));
        let data = match self.session.run_command_and_read_response(&command) {
            Ok(data) => data,
            Err(imap::Error::No(imap::error::No { information, .. }))
            | Err(imap::Error::Bad(imap::error::Bad { information, .. })) => {
                return Err(ImapError::Mailbox {
                    mailbox: display.to_owned(),
                    reason: information,
                })
            }
            Err(e) => return Err(self.failed("STATUS", e)),
        };
        self.drain_unsolicited()?;
        match self.absorb(&data, Some(&wire_key(wire_name)))? {
            Some(status) => Ok(status),
            // Answered OK without the mailbox's status: nothing to go by for this mailbox
            // (and no reason to doubt the connection).
            None => Err(ImapError::Mailbox {
                mailbox: display.to_owned(),
                reason: "the server answered STATUS without the mailbox's status".to_owned(),
            }),
        }
    }

    /// Reads the untagged responses of one command's answer, as the `imap` crate would not
    /// for STATUS, UNSELECT and NOTIFY (it compares STATUS names byte for byte, so
    /// `"Inbox"` or a name with a quote never matched, and it drops what came with a plain
    /// OK): the STATUS of `wanted` (a [`name_key`]) is returned; any other STATUS is a
    /// NOTIFY report, kept for [`Connection::take_statuses`]; EXISTS, EXPUNGE and FETCH
    /// are a change; BYE ends the session. A line that does not parse ends the reading
    /// (the tolerant layer under the session has reported it).
    fn absorb(
        &mut self,
        data: &[u8],
        wanted: Option<&str>,
    ) -> Result<Option<MailboxStatus>, ImapError> {
        use imap_proto::{MailboxDatum, Response, StatusAttribute};
        let mut rest = data;
        let mut found = None;
        while !rest.is_empty() {
            let Ok((next, response)) = imap_proto::parser::parse_response(rest) else {
                break;
            };
            rest = next;
            match response {
                Response::MailboxData(MailboxDatum::Status { mailbox, status }) => {
                    let key = name_key(&mailbox);
                    if wanted == Some(key.as_str()) {
                        found = Some(MailboxStatus {
                            exists: 0,
                            uid_validity: status.iter().find_map(|a| match a {
                                StatusAttribute::UidValidity(v) => Some(*v),
                                _ => None,
                            }),
                            uid_next: uid_next_of(&status),
                            unseen: status.iter().find_map(|a| match a {
                                StatusAttribute::Unseen(n) => Some(*n),
                                _ => None,
                            }),
                        });
                    } else {
                        self.remember_status(key, uid_next_of(&status));
                    }
                }
                Response::MailboxData(MailboxDatum::Exists(_))
                | Response::Expunge(_)
                | Response::Fetch(..) => self.changed = true,
                Response::Data {
                    status: imap_proto::Status::Bye,
                    information,
                    ..
                } => {
                    return Err(ImapError::Bye(
                        information.map(|i| i.into_owned()).unwrap_or_default(),
                    ))
                }
                _ => {}
            }
        }
        Ok(found)
    }

    /// Keeps a NOTIFY report: the latest UIDNEXT per mailbox, for at most
    /// [`MAX_STATUSES`] mailboxes (a server that reports thousands of names it was not
    /// asked about costs bounded memory; the reports beyond are dropped, and a sweep finds
    /// what they were about).
    fn remember_status(&mut self, key: String, uid_next: Option<u32>) {
        if self
            .report_filter
            .as_ref()
            .is_some_and(|f| !f.contains(&key))
        {
            return;
        }
        if self.statuses.len() < MAX_STATUSES || self.statuses.contains_key(&key) {
            self.statuses.insert(key, uid_next);
        }
    }

    /// Leaves the selected mailbox: UNSELECT (RFC 3691) where offered, else CLOSE, which
    /// expunges nothing in a mailbox opened with EXAMINE (RFC 3501 section 6.4.2).
    ///
    /// Errors: [`ImapError::Refused`] when the server refuses both (NO or BAD): the
    /// mailbox stays selected, which costs nothing but the STATUS that follows (RFC 3501
    /// section 6.3.10 advises against STATUS on the selected mailbox; servers answer it).
    pub fn unselect(&mut self) -> Result<(), ImapError> {
        // Read as answers, not with the crate's UNSELECT and CLOSE, which drop what came
        // with the OK: a NOTIFY report for another mailbox may.
        let mut result = if self.capabilities.unselect {
            self.session.run_command_and_read_response("UNSELECT")
        } else {
            self.session.run_command_and_read_response("CLOSE")
        };
        if self.capabilities.unselect
            && matches!(result, Err(imap::Error::No(_)) | Err(imap::Error::Bad(_)))
        {
            // Advertised and refused: CLOSE does the same for a mailbox opened read-only.
            result = self.session.run_command_and_read_response("CLOSE");
        }
        match result {
            Ok(data) => {
                self.absorb(&data, None)?;
            }
            Err(imap::Error::No(imap::error::No { information, .. }))
            | Err(imap::Error::Bad(imap::error::Bad { information, .. })) => {
                self.drain_unsolicited()?;
                return Err(ImapError::Refused {
                    context: "UNSELECT",
                    reason: information,
                });
            }
            Err(e) => return Err(self.failed("UNSELECT", e)),
        }
        self.drain_unsolicited()?;
        // What was reported about the mailbox just left is not about the next one.
        self.changed = false;
        Ok(())
    }

    /// `LIST "" <pattern>` (RFC 3501 section 6.3.8; `pattern` on the wire, modified UTF-7
    /// with `*` and `%` as they are): the mailboxes a `mailboxes` pattern stands for, with
    /// whether each can be selected and its special use (RFC 6154). A name that is not
    /// valid modified UTF-7 is left out (it could not be named back to the server the same
    /// way), as is one with a line break or NUL. Errors: [`ImapError::Refused`] for a NO.
    pub fn list(&mut self, pattern: &str) -> Result<Listing, ImapError> {
        use imap_proto::NameAttribute as A;
        // RFC 6154 section 5.1: a server may give special uses only when asked.
        let mut arguments = quoted(pattern);
        if self.capabilities.list_special_use {
            arguments.push_str(" RETURN (SPECIAL-USE)");
        }
        let names = match self.session.list(Some(""), Some(&arguments)) {
            Ok(n) => n,
            Err(imap::Error::No(imap::error::No { information, .. }))
            | Err(imap::Error::Bad(imap::error::Bad { information, .. })) => {
                self.drain_unsolicited()?;
                return Err(ImapError::Refused {
                    context: "LIST",
                    reason: information,
                });
            }
            Err(e) => return Err(self.failed("LIST", e)),
        };
        let mut listing = Listing::default();
        for n in names.iter() {
            let name = match super::mutf7::decode(n.name()) {
                Ok(name) if !name.contains(['\r', '\n', '\0']) => name,
                _ => {
                    listing
                        .dropped
                        .push(crate::decode::controls_escaped(n.name()));
                    continue;
                }
            };
            let attrs = n.attributes();
            let selectable = !attrs.iter().any(|a| match a {
                A::NoSelect => true,
                A::Extension(x) => x.eq_ignore_ascii_case("\\NonExistent"),
                _ => false,
            });
            let special_use = attrs.iter().find_map(|a| match a {
                A::All => Some("\\All".to_owned()),
                A::Archive => Some("\\Archive".to_owned()),
                A::Drafts => Some("\\Drafts".to_owned()),
                A::Flagged => Some("\\Flagged".to_owned()),
                A::Junk => Some("\\Junk".to_owned()),
                A::Sent => Some("\\Sent".to_owned()),
                A::Trash => Some("\\Trash".to_owned()),
                _ => None,
            });
            listing.listed.push(Listed {
                name,
                selectable,
                special_use,
                separator: n.delimiter().and_then(|d| d.chars().next()),
            });
        }
        drop(names);
        self.drain_unsolicited()?;
        Ok(listing)
    }

    /// The mailboxes NOTIFY reported new mail in since the last call (names as
    /// [`name_key`] gives them, to compare with [`wire_key`]s, with the UIDNEXT they
    /// reported, if any), and forgets them.
    pub fn take_statuses(&mut self) -> BTreeMap<String, Option<u32>> {
        std::mem::take(&mut self.statuses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_names_compare_with_the_names_sent() {
        assert_eq!(name_key("Inbox"), wire_key("INBOX"));
        assert_eq!(name_key("INBOX"), wire_key("inbox"));
        assert_eq!(name_key("q\\\"uote"), wire_key("q\"uote"));
        assert_eq!(name_key("back\\\\slash"), wire_key("back\\slash"));
        assert_eq!(name_key("&XeVO3A-"), wire_key("&XeVO3A-"));
        assert_ne!(name_key("Lists"), wire_key("lists"));
    }

    #[test]
    fn notify_for_a_shared_connection_asks_for_what_moves_counts() {
        assert_eq!(
            notify_mailboxes_command(&["Lists", "a\"b"], SharedEvents::Counts),
            "NOTIFY SET (mailboxes (\"Lists\" \"a\\\"b\") (MessageNew MessageExpunge FlagChange))"
        );
        assert_eq!(
            notify_mailboxes_command(&["Lists"], SharedEvents::NewAndExpunge),
            "NOTIFY SET (mailboxes (\"Lists\") (MessageNew MessageExpunge))"
        );
        assert_eq!(
            notify_mailboxes_command(&["Lists"], SharedEvents::New),
            "NOTIFY SET (mailboxes (\"Lists\") (MessageNew))"
        );
        assert_eq!(SharedEvents::New.weaker(), None);
        assert_eq!(
            notify_mailboxes_command(&[], SharedEvents::Counts),
            "NOTIFY NONE"
        );
        let many: Vec<String> = (0..=NOTIFY_NAMES_MAX).map(|i| format!("M{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            notify_mailboxes_command(&many, SharedEvents::Counts),
            "NOTIFY SET (personal (MessageNew MessageExpunge FlagChange))"
        );
        assert!(notify_mailboxes_command(&many[1..], SharedEvents::Counts)
            .starts_with("NOTIFY SET (mailboxes ("));
    }

    #[test]
    fn notify_set_names_the_other_mailboxes_quoted() {
        assert_eq!(
            notify_set_command(&["Lists", "a\"b\\c", "&ZeVO3A-"]),
            "NOTIFY SET (selected (MessageNew (UID) MessageExpunge FlagChange)) \
             (mailboxes (\"Lists\" \"a\\\"b\\\\c\" \"&ZeVO3A-\") (MessageNew MessageExpunge))"
        );
        assert_eq!(
            notify_set_command(&[]),
            "NOTIFY SET (selected (MessageNew (UID) MessageExpunge FlagChange))"
        );
    }

    #[test]
    fn connection_limits_are_told_from_wrong_passwords() {
        for refused in [
            "[UNAVAILABLE] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)",
            "[LIMIT] Maximum number of connections from user+IP exceeded",
            "[ALERT] Too many simultaneous connections. (Failure)",
            "User is authenticated but not connected.",
            "[LIMIT] IMAP Rate limit hit.",
        ] {
            assert!(is_connection_limit(refused), "{refused}");
            for e in [
                ImapError::Auth(refused.to_owned()),
                ImapError::Limit(refused.to_owned()),
                ImapError::Bye(refused.to_owned()),
            ] {
                assert!(e.is_connection_limit() && !e.is_auth(), "{refused}");
            }
        }
        assert_eq!(
            connection_cap("[LIMIT] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=4)"),
            Some(4)
        );
        assert_eq!(
            connection_cap("[ALERT] Too many simultaneous connections."),
            None
        );
        for wrong in [
            "[AUTHENTICATIONFAILED] Authentication failed.",
            "Invalid credentials (Failure)",
            "LOGIN failed.",
        ] {
            assert!(!is_connection_limit(wrong), "{wrong}");
            assert!(ImapError::Auth(wrong.to_owned()).is_auth(), "{wrong}");
        }
    }

    #[test]
    fn auth_choice() {
        let dovecot = Offered {
            plain: true,
            ..Offered::default()
        };
        let gmail = Offered {
            plain: true,
            xoauth2: true,
            oauthbearer: true,
            ..Offered::default()
        };
        let bare = Offered::default();
        let login_disabled = Offered {
            login_disabled: true,
            ..Offered::default()
        };
        assert_eq!(
            choose_auth(None, false, dovecot).unwrap(),
            AuthMethod::Plain
        );
        assert_eq!(choose_auth(None, false, bare).unwrap(), AuthMethod::Login);
        assert_eq!(choose_auth(None, true, gmail).unwrap(), AuthMethod::Xoauth2);
        let bearer_only = Offered {
            oauthbearer: true,
            ..Offered::default()
        };
        assert_eq!(
            choose_auth(None, true, bearer_only).unwrap(),
            AuthMethod::Oauthbearer
        );
        assert_eq!(
            choose_auth(Some(AuthMethod::Login), false, gmail).unwrap(),
            AuthMethod::Login
        );
        assert!(choose_auth(None, false, login_disabled).is_err());
        assert!(choose_auth(Some(AuthMethod::Login), false, login_disabled).is_err());
    }

    #[test]
    fn sasl_messages() {
        assert_eq!(
            sasl_initial(AuthMethod::Plain, "me", "pw", "h", 993),
            b"\0me\0pw".to_vec()
        );
        assert_eq!(
            sasl_initial(AuthMethod::Xoauth2, "me@x", "tok", "h", 993),
            b"user=me@x\x01auth=Bearer tok\x01\x01".to_vec()
        );
        assert_eq!(
            sasl_initial(AuthMethod::Oauthbearer, "a,b=c", "tok", "imap.x", 993),
            b"n,a=a=2Cb=3Dc,\x01host=imap.x\x01port=993\x01auth=Bearer tok\x01\x01".to_vec()
        );
        let s = Sasl {
            method: AuthMethod::Oauthbearer,
            user: "u",
            secret: "t",
            host: "h",
            port: 1,
            server_error: RefCell::new(None),
        };
        use imap::Authenticator;
        assert_eq!(s.process(b"{\"status\":\"invalid_token\"}"), vec![0x01]);
        assert_eq!(
            s.server_error.borrow().as_deref(),
            Some("{\"status\":\"invalid_token\"}")
        );
    }

    #[test]
    fn starttls_capability_detection() {
        assert!(capability_has_starttls(
            "* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] ready"
        ));
        assert!(capability_has_starttls("* CAPABILITY IMAP4rev1 starttls"));
        assert!(!capability_has_starttls(
            "* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] ready"
        ));
        assert!(!capability_has_starttls("* OK STARTTLS is great"));
        assert!(!capability_has_starttls("* CAPABILITY IMAP4rev1 XSTARTTLS"));
    }
}

#[cfg(test)]
mod connection_limit_false_alarms {
    use super::*;

    /// A watched mailbox whose *name* holds limit words is not a connection limit when it
    /// cannot be opened: `is_connection_limit` matches the whole Display text, which names
    /// the mailbox (and Dovecot echoes the name in its NO).
    #[test]
    fn a_missing_mailbox_named_rate_limit_is_not_a_connection_limit() {
        let e = ImapError::Mailbox {
            mailbox: "Alerts/Rate limit".to_owned(),
            reason: "Mailbox doesn't exist: Alerts/Rate limit (0.001 + 0.000 secs).".to_owned(),
        };
        assert!(!e.is_connection_limit(), "{e}");
    }

    /// RFC 5530: [UNAVAILABLE] is "a subsystem is down"; Dovecot sends it for a passdb that
    /// is unreachable ("Temporary authentication failure"), Gmail for "Temporary System
    /// Error". Neither is the per-user connection cap.
    #[test]
    fn a_temporary_auth_failure_is_not_a_connection_limit() {
        for text in [
            "[UNAVAILABLE] Temporary authentication failure. [host:2024-01-01 00:00:00]",
            "[UNAVAILABLE] Temporary System Error",
        ] {
            assert!(!is_connection_limit(text), "{text}");
        }
    }
}
