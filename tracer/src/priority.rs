//! The daemon's CPU priority: below the service it traces. Its thread runs at
//! `SCHED_IDLE`, so a thread of the traced service that wakes takes the CPU at
//! once instead of waiting on the run queue behind a drain of the ring buffer.
//! (At the normal policy the scheduler lets a running drain finish its slice
//! first: in a loopback storm the storm's threads then waited 12-13 us more per
//! connection on the run queue, 3-5 us at `SCHED_IDLE`, as much as untraced.)
//!
//! An idle-policy thread gets almost no CPU on a saturated host, and a starved
//! daemon would fill the ring buffer until the kernel drops events. So a
//! watchdog thread at the normal policy watches the drain loop's heartbeat:
//! when it stops, the daemon is put back at the normal policy until it has
//! kept up for a while. The watchdog can only do that with `CAP_SYS_NICE`
//! (leaving `SCHED_IDLE` needs it); without it the daemon keeps the normal policy.
use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant},
};

/// How often the watchdog looks.
const PERIOD: Duration = Duration::from_millis(25);
/// A heartbeat older than this means the drain loop cannot get the CPU: it
/// beats at least every reader tick (20 ms) when it can.
const STALE: Duration = Duration::from_millis(60);
/// How long the daemon stays at the normal policy after its last stale heartbeat.
const HOLD: Duration = Duration::from_secs(1);

const CAP_SYS_NICE: u32 = 23;

/// The daemon's thread at `SCHED_IDLE`, watched; back at the normal policy when dropped.
pub struct Yielding {
    beat: Arc<Heartbeat>,
    stop: Option<mpsc::Sender<()>>,
    watchdog: Option<thread::JoinHandle<()>>,
    tid: libc::pid_t,
}

impl Yielding {
    /// Moves the calling thread to `SCHED_IDLE` under a watchdog. `None`, and
    /// the normal policy kept, where the watchdog could not move it back.
    pub fn start() -> Option<Self> {
        if crate::preflight::effective_caps() & (1 << CAP_SYS_NICE) == 0 {
            log::debug!("no CAP_SYS_NICE: the daemon keeps the normal CPU policy");
            return None;
        }
        // SAFETY: no preconditions.
        let tid = unsafe { libc::gettid() };
        let beat = Arc::new(Heartbeat::new());
        let (stop, stopped) = mpsc::channel();
        // Spawned first: a thread inherits its creator's policy.
        let watched = Arc::clone(&beat);
        let watchdog = thread::Builder::new()
            .name("tracer-watchdog".into())
            .spawn(move || watch(tid, &watched, &stopped))
            .map_err(|e| log::debug!("no watchdog thread ({e}): the daemon keeps the normal CPU policy"))
            .ok()?;
        let mut y = Self {
            beat,
            stop: Some(stop),
            watchdog: Some(watchdog),
            tid,
        };
        if let Err(e) = set_policy(tid, libc::SCHED_IDLE) {
            log::debug!("cannot move to SCHED_IDLE ({e}): the daemon keeps the normal CPU policy");
            y.stop_watchdog();
            return None;
        }
        Some(y)
    }

    /// The drain loop is alive.
    pub fn beat(&self) {
        self.beat.now();
    }

    fn stop_watchdog(&mut self) {
        // Disconnects the watchdog's channel: it returns at once.
        self.stop.take();
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Yielding {
    /// Back to the normal policy for the last drain and the summary.
    fn drop(&mut self) {
        self.stop_watchdog();
        if let Err(e) = set_policy(self.tid, libc::SCHED_OTHER) {
            log::debug!("cannot leave SCHED_IDLE: {e}");
        }
    }
}

/// Milliseconds since a start, of the drain loop's last beat.
struct Heartbeat {
    start: Instant,
    last_ms: AtomicU64,
}

impl Heartbeat {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn now(&self) {
        self.last_ms.store(self.elapsed_ms(), Ordering::Relaxed);
    }

    fn age(&self) -> Duration {
        Duration::from_millis(self.elapsed_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    fn elapsed_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

fn watch(tid: libc::pid_t, beat: &Heartbeat, stop: &mpsc::Receiver<()>) {
    let mut policy = Policy::default();
    loop {
        match stop.recv_timeout(PERIOD) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let (to, name) = match policy.step(beat.age(), beat.start.elapsed()) {
            Step::Stay => continue,
            Step::Promote => (libc::SCHED_OTHER, "normal"),
            Step::Demote => (libc::SCHED_IDLE, "SCHED_IDLE"),
        };
        match set_policy(tid, to) {
            Ok(()) => log::debug!("daemon thread moved to the {name} CPU policy"),
            Err(e) => log::warn!("cannot move the daemon thread to the {name} CPU policy: {e}"),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Stay,
    Promote,
    Demote,
}

/// When the daemon's thread leaves `SCHED_IDLE`, and when it returns.
#[derive(Default)]
struct Policy {
    /// While at the normal policy: when the heartbeat was last seen stale.
    promoted_at: Option<Duration>,
}

impl Policy {
    /// What to do when the heartbeat is `age` old at time `now`.
    fn step(&mut self, age: Duration, now: Duration) -> Step {
        let stale = age >= STALE;
        match self.promoted_at {
            None if stale => {
                self.promoted_at = Some(now);
                Step::Promote
            }
            None => Step::Stay,
            Some(_) if stale => {
                self.promoted_at = Some(now);
                Step::Stay
            }
            Some(at) if now.saturating_sub(at) >= HOLD => {
                self.promoted_at = None;
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
        assert_eq!(p.step(20 * MS, 100 * MS), Step::Stay);
        assert_eq!(p.step(STALE, 200 * MS), Step::Promote);
        assert_eq!(p.step(5 * MS, 700 * MS), Step::Stay);
        assert_eq!(p.step(5 * MS, 200 * MS + HOLD), Step::Demote);
        assert_eq!(p.step(5 * MS, 300 * MS + HOLD), Step::Stay);
    }

    #[test]
    fn starving_again_while_promoted_holds_the_normal_policy_longer() {
        let mut p = Policy::default();
        assert_eq!(p.step(100 * MS, Duration::ZERO), Step::Promote);
        assert_eq!(p.step(100 * MS, 900 * MS), Step::Stay);
        assert_eq!(p.step(5 * MS, HOLD), Step::Stay);
        assert_eq!(p.step(5 * MS, 900 * MS + HOLD), Step::Demote);
    }
}
