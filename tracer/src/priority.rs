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
    last: Cell<Beat>,
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
        let first = beat.read();
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
            last: Cell::new(first),
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
    /// `next_tick` from now; `quiet` when no events came for a while. The
    /// watchdog sleeps until the due time it last read, or through a quiet
    /// spell: it is woken when the new beat is due sooner, or ends the spell
    /// (and it then moves the thread back to `SCHED_IDLE`).
    pub fn beat(&self, next_tick: Duration, quiet: bool) {
        let now = self.beat.record(next_tick, quiet);
        let before = self.last.replace(now);
        if ((before.quiet && !now.quiet) || now.due() < before.due())
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

/// One beat: when it was, how long after it the next tick comes, and
/// whether the drain loop was quiet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Beat {
    at: Duration,
    next: Duration,
    quiet: bool,
}

impl Beat {
    /// When the next beat is late.
    fn due(&self) -> Duration {
        self.at + self.next + SLACK
    }
}

/// The last beat in one word: the watchdog never reads one beat's time with
/// another's tick.
struct Heartbeat {
    start: Instant,
    /// Microseconds since `start` (48 bits: nine years) << 16 | quiet << 15 |
    /// milliseconds to the next tick.
    word: AtomicU64,
}

const QUIET_BIT: u64 = 1 << 15;
const NEXT_MASK: u64 = QUIET_BIT - 1;

impl Heartbeat {
    fn new() -> Self {
        let h = Self {
            start: Instant::now(),
            word: AtomicU64::new(0),
        };
        let _ = h.record(TICK, false);
        h
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Returns the beat as recorded, which is what the watchdog reads.
    fn record(&self, next_tick: Duration, quiet: bool) -> Beat {
        let at = self.now().as_micros() as u64;
        // Rounded up: a due time is never early.
        let next = (next_tick.as_micros() as u64).div_ceil(1000).min(NEXT_MASK);
        let word = at << 16 | if quiet { QUIET_BIT } else { 0 } | next;
        self.word.store(word, Ordering::Relaxed);
        Self::unpack(word)
    }

    fn read(&self) -> Beat {
        Self::unpack(self.word.load(Ordering::Relaxed))
    }

    fn unpack(word: u64) -> Beat {
        Beat {
            at: Duration::from_micros(word >> 16),
            next: Duration::from_millis(word & NEXT_MASK),
            quiet: word & QUIET_BIT != 0,
        }
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
        let b = beat.read();
        let step = policy.step(now >= b.due(), now);
        let yield_now = !b.quiet && policy.promoted_at.is_none();
        let settled = yield_now == idle || move_thread(tid, yield_now, b.quiet);
        if settled {
            idle = yield_now;
        }
        match step {
            Step::Promote => log::debug!(
                "daemon thread starved: held at the normal CPU policy for {:?}",
                policy.hold
            ),
            Step::Demote => log::debug!("daemon thread kept up: hold over"),
            Step::Stay => {}
        }
        wait = if !settled {
            PERIOD
        } else if b.quiet && policy.promoted_at.is_none() {
            QUIET_WAIT
        } else {
            b.due().saturating_sub(now).max(PERIOD)
        };
    }
    let _ = move_thread(tid, false, false);
}

/// Moves the drain thread to `SCHED_IDLE` or back; false if it could not.
fn move_thread(tid: libc::pid_t, idle: bool, quiet: bool) -> bool {
    if idle {
        // Logged first: once idle, the drain thread may hold stderr's lock
        // while it waits for the CPU, and the log would wait with it.
        log::debug!("daemon thread keeping up: at SCHED_IDLE");
        move_to(tid, libc::SCHED_IDLE, "SCHED_IDLE")
    } else {
        // Moved first, for the same reason: a starved thread may hold the lock.
        let moved = move_to(tid, libc::SCHED_OTHER, "normal");
        log::debug!("daemon thread at the normal CPU policy (quiet: {quiet})");
        moved
    }
}

fn move_to(tid: libc::pid_t, to: libc::c_int, name: &str) -> bool {
    let moved = set_policy(tid, to);
    if let Err(e) = &moved {
        log::warn!("cannot move the daemon thread to the {name} CPU policy: {e}");
    }
    moved.is_ok()
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
    fn a_beat_keeps_its_time_its_next_tick_and_its_quiet_together() {
        let h = Heartbeat::new();
        assert_eq!((h.read().next, h.read().quiet), (TICK, false));
        thread::sleep(2 * MS);
        let next = crate::reader::IDLE_TICK - Duration::from_micros(1);
        let recorded = h.record(next, true);
        assert_eq!(recorded, h.read());
        assert!(recorded.at >= 2 * MS && recorded.at < h.now() + MS, "{recorded:?}");
        // Rounded up, so that a due time is never early.
        assert_eq!(recorded.next, crate::reader::IDLE_TICK);
        assert!(recorded.quiet);
        assert_eq!(recorded.due(), recorded.at + crate::reader::IDLE_TICK + SLACK);
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
