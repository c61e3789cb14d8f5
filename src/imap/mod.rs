//! The IMAP side: one session with a server and everything between it and the socket.
//!
//! - [`session`]: connect (TCP, TLS or STARTTLS, ID, authentication), EXAMINE, the fetches
//!   the watcher needs, IDLE and LOGOUT, on top of the `imap` crate, with typed errors;
//! - [`stream`]: the socket under the session: deadlines, the stop signal that interrupts any
//!   blocking read, the silence limit;
//! - [`tolerant`]: the layer that mends, sets aside or reports the server lines the crate
//!   would fail on, so one odd line costs only that line;
//! - [`nesting`]: the bound on parenthesis depth checked before the crate's parser sees bytes;
//! - [`tls`]: the TLS connector (system trust store, optional extra CA, minimum version);
//! - [`mutf7`]: modified UTF-7 mailbox names (RFC 3501 section 5.1.3).
//!
//! Depends on `config` (what to connect to) and nothing above it: the watcher, the probe
//! and the popup actions drive it.

pub mod mutf7;
pub mod nesting;
pub mod session;
pub mod stream;
pub mod tls;
pub mod tolerant;

pub use tolerant::Change;

pub use session::{
    choose_auth, connect, Capabilities, Connection, Headers, ImapError, Interrupter, Listed,
    Listing, MailboxStatus, Offered, Seen, Wake, HEADER_BATCH, HEADER_BYTES,
};
