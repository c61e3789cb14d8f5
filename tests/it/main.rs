//! mailpushd's integration tests, as one test binary: every module below used to be a
//! binary of its own (`tests/<name>.rs`), each compiling and linking `support/` again. One
//! binary builds the shared support code once and links once (the layout ripgrep uses).
//! Test names carry their module: `cargo test --test it quirks::` runs the quirky-server
//! tests, `cargo test --test it -- --ignored measure::` the measurements.
//!
//! All modules now share one process, so nothing here may assume it has the process to
//! itself: the `log` logger is installed once, by [`support::logs`], for every test that
//! reads the library's log lines; the child-process registry in [`support`] is keyed by each
//! test's [`support::with_timeout`] scope; environment variables and the working directory
//! are never changed (children get theirs through `Command`), and every server listens on a
//! port the kernel picked.

mod support;

mod e2e;
mod hints;
mod hooks;
mod layers;
mod lifecycle;
mod limits;
mod live_config;
mod measure;
mod notifications;
mod notify;
mod patterns;
mod quirks;
mod resilience;
mod review14;
mod review14b;
mod review15;
mod review15b;
mod scripted_logins;
mod scripted_server;
mod security;
mod support_selftest;
mod unread;
