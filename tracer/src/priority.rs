//! The daemon's CPU priority: below the service it traces. Its thread runs at
//! `SCHED_IDLE`, so a thread of the traced service that wakes takes the CPU at
//! once instead of waiting on the run queue until a drain of the ring buffer
//! has used up its time slice. (In a loopback storm the storm's threads waited
//! 15.5 us per connection on the run queue with the daemon at the normal
//! policy, 5.2 with it at `SCHED_IDLE`, 4.9 untraced.)
//!
//! An idle-policy thread gets almost no CPU on a saturated host, and a starved
//! daemon would fill the ring buffer until the kernel drops events. So a
//! watchdog thread at the normal policy watches the drain loop's heartbeat:
//! when it stops, the daemon goes back to the normal policy until it has kept
//! up for a while. While no events come, the drain loop's tick stretches and
//! its drains are short: it then runs at the normal policy, where it cannot
//! starve, and the watchdog sleeps until events come again. Only a daemon that
//! starts at the normal policy yields, and only where the watchdog proved it
//! may move a thread back from `SCHED_IDLE`.
use std::{
    cell::Cell,
    io,
    marker::PhantomData,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant},
};

use crate::reader::TICK;

/// How often the watchdog looks while events come, at most.
const PERIOD: Duration = Duration::from_millis(25);
/// How late a heartbeat may be, after the reader's next tick, before the
/// drain loop counts as unable to get the CPU: it beats after every tick
/// when it can.
const SLACK: Duration = Duration::from_millis(40);
/// A next tick this far off means no events came for two ticks: a quiet
/// spell, spent at the normal policy.
const QUIET: Duration = Duration::from_millis(4 * TICK.as_millis() as u64);
/// How long the watchdog sleeps in a quiet spell if nothing wakes it first.
const QUIET_WAIT: Duration = Duration::from_secs(1);
/// How long the daemon stays at the normal policy after its last stale
/// heartbeat; doubled, up to `MAX_HOLD`, each time it starves again within
/// as long after returning to `SCHED_IDLE`, so that a host that stays
/// saturated does not starve it every second.
const HOLD: Duration = Duration::from_secs(1);
const MAX_HOLD: Duration = Duration::from_secs(64);

/// The calling thread at `SCHED_IDLE` while events come, watched; back at
/// the normal policy when dropped. It names that thread, so it must stay on it.
pub struct Yielding {
    beat: Arc<Heartbeat>,
    /// Wakes the watchdog when a quiet spell ends; dropped to stop it.
    wake: Option<mpsc::Sender<()>>,
    quiet: Cell<bool>,
    watchdog: Option<thread::JoinHandle<()>>,
    _on_this_thread: PhantomData<*const ()>,
}

impl Yielding {
    /// Moves the calling thread to `SCHED_IDLE` under a watchdog. `None`, and
    /// the policy left as it is, where it is not the normal one or the
    /// watchdog could not move the thread back.
    pub fn start() -> Option<Self> {
        // SAFETY: no preconditions.
        if unsafe { libc::sched_getscheduler(0) } != libc::SCHED_OTHER {
            log::debug!("not at the normal CPU policy: the daemon keeps its own");
            return None;
        }
        // SAFETY: no preconditions.
        let tid = unsafe { libc::gettid() };
        let beat = Arc::new(Heartbeat::new());
        let (wake, woken) = mpsc::channel();
        let (ready, probed) = mpsc::channel();
        // Spawned first: a thread inherits its creator's policy.
        let watched = Arc::clone(&beat);
        let watchdog = thread::Builder::new()
            .name("tracer-watchdog".into())
            .spawn(move || {
                // The watchdog sets the drain thread's policy from the start,
                // so that nothing else sets it behind its back.
                let can = can_leave_idle().and_then(|()| set_policy(tid, libc::SCHED_IDLE));
                let _ = ready.send(can.as_ref().map_err(io::Error::kind).copied());
                if can.is_ok() {
                    watch(tid, &watched, &woken);
                }
            })
            .map_err(|e| log::debug!("no watchdog thread ({e}): the daemon keeps the normal CPU policy"))
            .ok()?;
        let y = Self {
            beat,
            wake: Some(wake),
            quiet: Cell::new(false),
            watchdog: Some(watchdog),
            _on_this_thread: PhantomData,
        };
        match probed.recv() {
            Ok(Ok(())) => Some(y),
            Ok(Err(kind)) => {
                log::debug!(
                    "cannot move between SCHED_IDLE and the normal CPU policy ({kind}): the daemon keeps the normal one"
                );
                None
            }
            Err(_) => None,
        }
    }

    /// The drain loop is alive, and will beat again after its next tick,
    /// `next_tick` from now. The end of a quiet spell wakes the watchdog,
    /// which moves the thread back to `SCHED_IDLE` and watches it again.
    pub fn beat(&self, next_tick: Duration) {
        let quiet = self.beat.record(next_tick) >= QUIET;
        if self.quiet.replace(quiet)
            && !quiet
            && let Some(w) = &self.wake
        {
            let _ = w.send(());
        }
    }
}

impl Drop for Yielding {
    /// The watchdog, told to stop, moves the thread back to the normal policy
    /// before it returns: a thread still at `SCHED_IDLE` could wait long for
    /// the CPU to do it itself on a saturated host.
    fn drop(&mut self) {
        self.wake.take();
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
    }
}

/// Whether this thread can go back from `SCHED_IDLE` to the normal policy
/// (`CAP_SYS_NICE` in the initial user namespace, or RLIMIT_NICE): tried on
/// the watchdog's own thread, which is no loss if it stays idle.
fn can_leave_idle() -> io::Result<()> {
    set_policy(0, libc::SCHED_IDLE)?;
    set_policy(0, libc::SCHED_OTHER)
}

/// When the drain loop last beat, and how long after that its next tick
/// comes, in one word: the watchdog never reads one beat's time with
/// another's tick.
struct Heartbeat {
    start: Instant,
    /// Microseconds since `start` (48 bits: nine years) << 16 | milliseconds to the next tick.
    word: AtomicU64,
}

const TICK_BITS: u32 = 16;

impl Heartbeat {
    fn new() -> Self {
        let h = Self {
            start: Instant::now(),
            word: AtomicU64::new(0),
        };
        let _ = h.record(TICK);
        h
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Returns the next tick as recorded, which is what the watchdog reads.
    fn record(&self, next_tick: Duration) -> Duration {
        let at = self.now().as_micros() as u64;
        // Rounded up: a tick 79.9 ms off is as quiet as one 80 ms off, and a
        // due time is never early.
        let next = (next_tick.as_micros() as u64).div_ceil(1000).min((1 << TICK_BITS) - 1);
        self.word.store(at << TICK_BITS | next, Ordering::Relaxed);
        Duration::from_millis(next)
    }

    /// (when the last beat was, how long after it the next tick comes)
    fn read(&self) -> (Duration, Duration) {
        let w = self.word.load(Ordering::Relaxed);
        (
            Duration::from_micros(w >> TICK_BITS),
            Duration::from_millis(w & ((1 << TICK_BITS) - 1)),
        )
    }
}

/// The one place the drain thread's policy is set, after the daemon's start.
fn watch(tid: libc::pid_t, beat: &Heartbeat, woken: &mpsc::Receiver<()>) {
    let mut policy = Policy::default();
    let mut idle = true;
    let mut wait = PERIOD;
    loop {
        if let Err(RecvTimeoutError::Disconnected) = woken.recv_timeout(wait) {
            break;
        }
        let now = beat.now();
        let (last, next) = beat.read();
        let due = last + next + SLACK;
        match policy.step(now >= due, now) {
            Step::Promote => log::debug!(
                "daemon thread starved: held at the normal CPU policy for {:?}",
                policy.hold
            ),
            Step::Demote => log::debug!("daemon thread kept up: hold over"),
            Step::Stay => {}
        }
        let quiet = next >= QUIET;
        let yield_now = !quiet && policy.promoted_at.is_none();
        if yield_now != idle {
            idle = yield_now;
            if idle {
                // Logged first: once idle, the drain thread may hold stderr's
                // lock while it waits for the CPU, and the log would wait with it.
                log::debug!("daemon thread keeping up: at SCHED_IDLE");
                move_to(tid, libc::SCHED_IDLE, "SCHED_IDLE");
            } else {
                move_to(tid, libc::SCHED_OTHER, "normal");
                log::debug!("daemon thread at the normal CPU policy (quiet: {quiet})");
            }
        }
        wait = if quiet && policy.promoted_at.is_none() {
            QUIET_WAIT
        } else {
            due.saturating_sub(now).max(PERIOD)
        };
    }
    move_to(tid, libc::SCHED_OTHER, "normal");
}

fn move_to(tid: libc::pid_t, to: libc::c_int, name: &str) {
    if let Err(e) = set_policy(tid, to) {
        log::warn!("cannot move the daemon thread to the {name} CPU policy: {e}");
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Stay,
    Promote,
    Demote,
}

/// When the daemon's thread is held at the normal policy for having starved,
/// and when that hold ends.
struct Policy {
    /// While held: when the heartbeat was last seen stale.
    promoted_at: Option<Duration>,
    /// When the last hold ended.
    demoted_at: Option<Duration>,
    hold: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            promoted_at: None,
            demoted_at: None,
            hold: HOLD,
        }
    }
}

impl Policy {
    /// What to do at time `now`, the heartbeat overdue (`stale`) or not.
    fn step(&mut self, stale: bool, now: Duration) -> Step {
        match self.promoted_at {
            None if stale => {
                let again_soon = self.demoted_at.is_some_and(|d| now.saturating_sub(d) < self.hold);
                self.hold = if again_soon {
                    (self.hold * 2).min(MAX_HOLD)
                } else {
                    HOLD
                };
                self.promoted_at = Some(now);
                Step::Promote
            }
            None => Step::Stay,
            Some(_) if stale => {
                self.promoted_at = Some(now);
                Step::Stay
            }
            Some(at) if now.saturating_sub(at) >= self.hold => {
                self.promoted_at = None;
                self.demoted_at = Some(now);
                Step::Demote
            }
            Some(_) => Step::Stay,
        }
    }
}

fn set_policy(tid: libc::pid_t, policy: libc::c_int) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a valid sched_param; the kernel checks the thread id.
    if unsafe { libc::sched_setscheduler(tid, policy, &param) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_stale_heartbeat_promotes_and_a_second_of_keeping_up_demotes() {
        let mut p = Policy::default();
        assert_eq!(p.step(false, 100 * MS), Step::Stay);
        assert_eq!(p.step(true, 200 * MS), Step::Promote);
        assert_eq!(p.step(false, 700 * MS), Step::Stay);
        assert_eq!(p.step(false, 200 * MS + HOLD), Step::Demote);
        assert_eq!(p.step(false, 300 * MS + HOLD), Step::Stay);
    }

    #[test]
    fn starving_again_while_promoted_holds_the_normal_policy_longer() {
        let mut p = Policy::default();
        assert_eq!(p.step(true, Duration::ZERO), Step::Promote);
        assert_eq!(p.step(true, 900 * MS), Step::Stay);
        assert_eq!(p.step(false, HOLD), Step::Stay);
        assert_eq!(p.step(false, 900 * MS + HOLD), Step::Demote);
    }

    #[test]
    fn a_beat_keeps_its_time_and_its_next_tick_together() {
        let h = Heartbeat::new();
        assert_eq!(h.read().1, TICK);
        thread::sleep(2 * MS);
        assert_eq!(
            h.record(crate::reader::IDLE_TICK - Duration::from_micros(1)),
            crate::reader::IDLE_TICK
        );
        let (at, next) = h.read();
        assert!(at >= 2 * MS && at < h.now() + MS, "{at:?}");
        assert_eq!(next, crate::reader::IDLE_TICK);
        assert!(
            crate::reader::IDLE_TICK >= QUIET,
            "the longest tick must count as quiet"
        );
    }

    #[test]
    fn starving_soon_after_each_return_doubles_the_hold_and_a_calm_spell_resets_it() {
        let mut p = Policy::default();
        let mut now = Duration::ZERO;
        for hold in [1, 2, 4, 8, 16, 32, 64, 64].map(Duration::from_secs) {
            assert_eq!(p.step(true, now), Step::Promote);
            assert_eq!(p.hold, hold);
            now += hold;
            assert_eq!(p.step(false, now), Step::Demote);
            now += 100 * MS;
        }
        now += MAX_HOLD;
        assert_eq!(p.step(true, now), Step::Promote);
        assert_eq!(p.hold, HOLD);
    }
}
