//! Turns process signals into supervisor events on a dedicated thread.
//!
//! signal-hook's iterator blocks on a self-pipe, so the thread costs nothing while idle and
//! no work happens inside a signal handler.

use std::sync::mpsc::Sender;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use crate::event::{Event, ReloadQueue};

/// Starts the signal thread. It lives as long as the process. A SIGHUP while a reload is
/// waiting adds none ([`ReloadQueue`]).
pub fn spawn(events: Sender<Event>, reloads: ReloadQueue) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let event = match sig {
                    SIGHUP if !reloads.ask() => continue,
                    SIGHUP => Event::Reload,
                    SIGUSR1 => Event::DumpState,
                    _ => Event::Terminate,
                };
                if events.send(event).is_err() {
                    break;
                }
            }
        })?;
    Ok(())
}
