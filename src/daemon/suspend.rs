//! Notices the machine waking from suspend, so every watcher can reconnect at once instead
//! of waiting minutes for TCP keepalive to declare its connection dead.
//!
//! No polling timer: a thread blocks on a `timerfd` armed on CLOCK_REALTIME far in the
//! future with `TFD_TIMER_CANCEL_ON_SET`. The kernel cancels such timers whenever the wall
//! clock jumps, and it does so on resume from suspend; the read then fails with ECANCELED.
//! Whether it was a suspend (and not someone setting the clock) is told by CLOCK_BOOTTIME,
//! which counts time asleep, having moved ahead of CLOCK_MONOTONIC, which does not.

use std::sync::mpsc::Sender;
use std::time::Duration;

use rustix::io::Errno;
use rustix::time::{
    clock_gettime, timerfd_create, timerfd_settime, ClockId, Itimerspec, TimerfdClockId,
    TimerfdFlags, TimerfdTimerFlags, Timespec,
};

use crate::event::Event;

/// Less than this between BOOTTIME and MONOTONIC is clock noise, not a suspend.
const MIN_SLEEP: Duration = Duration::from_secs(1);
/// How far ahead the (never meant to fire) timer is armed.
const FAR: i64 = 365 * 24 * 3600;

/// How long the machine was asleep, given the BOOTTIME − MONOTONIC offset before and after:
/// the offset only grows while suspended.
pub fn slept(before: Duration, after: Duration) -> Option<Duration> {
    after.checked_sub(before).filter(|d| *d >= MIN_SLEEP)
}

fn to_duration(t: Timespec) -> Duration {
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Time spent suspended since boot.
fn sleep_offset() -> Duration {
    to_duration(clock_gettime(ClockId::Boottime))
        .saturating_sub(to_duration(clock_gettime(ClockId::Monotonic)))
}

/// Starts the watcher thread; it sends [`Event::Resumed`] after each suspend. Failing to set
/// it up (an old kernel, a seccomp filter) only loses this feature; keepalive still works.
pub fn spawn(events: Sender<Event>) -> std::io::Result<()> {
    let fd = timerfd_create(TimerfdClockId::Realtime, TimerfdFlags::CLOEXEC)?;
    std::thread::Builder::new()
        .name("suspend".into())
        .spawn(move || loop {
            let now = clock_gettime(ClockId::Realtime);
            let arm = Itimerspec {
                it_interval: Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: Timespec {
                    tv_sec: now.tv_sec + FAR,
                    tv_nsec: 0,
                },
            };
            let flags = TimerfdTimerFlags::ABSTIME | TimerfdTimerFlags::CANCEL_ON_SET;
            if let Err(e) = timerfd_settime(&fd, flags, &arm) {
                log::warn!("suspend detection disabled: timerfd_settime: {e}");
                return;
            }
            let before = sleep_offset();
            let mut buf = [0u8; 8];
            match rustix::io::read(&fd, &mut buf) {
                Ok(_) | Err(Errno::CANCELED) | Err(Errno::INTR) => {}
                Err(e) => {
                    log::warn!("suspend detection disabled: reading timerfd: {e}");
                    return;
                }
            }
            if let Some(d) = slept(before, sleep_offset()) {
                if events.send(Event::Resumed(d)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_real_sleep_counts() {
        let s = Duration::from_secs;
        assert_eq!(slept(s(10), s(10)), None);
        assert_eq!(slept(s(10), s(10) + Duration::from_millis(300)), None);
        assert_eq!(slept(s(10), s(70)), Some(s(60)));
        // A clock set backwards or forwards leaves the offset alone.
        assert_eq!(slept(s(10), s(9)), None);
    }

    #[test]
    fn offset_is_readable_here() {
        // BOOTTIME is never behind MONOTONIC.
        let _ = sleep_offset();
        assert!(to_duration(clock_gettime(ClockId::Boottime)) >= Duration::ZERO);
    }
}
