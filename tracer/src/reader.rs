//! Draining the ring buffer. The kernel wakes us only when much data waits
//! (see `WAKEUP_BYTES`), so we also drain on a tick: short while events come,
//! longer while none do. No busy polling, no wake-up per event on a busy
//! host, and a daemon with nothing to read wakes a few times a second.
use std::{io, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, time::Instant};

/// The tick while events come.
pub const TICK: Duration = Duration::from_millis(20);
/// The longest tick, reached by doubling after each tick-driven drain that
/// found nothing: how long the first events after a lull may wait (a burst
/// wakes us at once).
pub const IDLE_TICK: Duration = Duration::from_millis(160);
/// A tick this long means two ticks found nothing: the reader is quiet.
const QUIET_TICK: Duration = Duration::from_millis(4 * TICK.as_millis() as u64);

pub struct Reader {
    ring: AsyncFd<RingBuf<MapData>>,
    period: Duration,
    next: Instant,
    /// Whether the tick, not the kernel, ended the last wait: only an empty
    /// drain on the tick stretches it.
    ticked: bool,
}

impl Reader {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the ring buffer owns its map fd, which stays open and unchanged
        // for as long as the AsyncFd owns the ring buffer.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }?;
        Ok(Self {
            ring,
            period: TICK,
            next: Instant::now() + TICK,
            ticked: false,
        })
    }

    /// Until the kernel signals data or the tick comes round.
    pub async fn ready(&mut self) {
        self.ticked = tokio::select! {
            guard = self.ring.readable_mut() => {
                if let Ok(mut g) = guard {
                    // Cleared before draining: data that lands after the drain re-arms it.
                    g.clear_ready();
                }
                false
            }
            _ = tokio::time::sleep_until(self.next) => true,
        };
    }

    /// Hands every waiting record to `each`, and sets the next tick by how
    /// many there were; returns that number.
    pub fn drain(&mut self, mut each: impl FnMut(&[u8])) -> u64 {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while let Some(record) = ring.next() {
            each(&record);
            n += 1;
        }
        self.period = next_period(self.period, n, self.ticked);
        self.next = Instant::now() + self.period;
        n
    }

    /// Something is due `after` from now (a closed socket's grace period
    /// ends): the next tick comes no later.
    pub fn tick_within(&mut self, after: Duration) {
        self.next = self.next.min(Instant::now() + after);
    }

    /// Whether no events came for the last two ticks.
    pub fn quiet(&self) -> bool {
        self.period >= QUIET_TICK
    }

    /// How long until the next tick.
    pub fn next_tick_in(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }
}

fn next_period(period: Duration, drained: u64, ticked: bool) -> Duration {
    match (drained, ticked) {
        (0, true) => (period * 2).min(IDLE_TICK),
        (0, false) => period,
        _ => TICK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_stretches_while_nothing_comes_and_snaps_back_when_something_does() {
        let mut p = TICK;
        let mut seen = Vec::new();
        for _ in 0..4 {
            p = next_period(p, 0, true);
            seen.push(p.as_millis());
        }
        assert_eq!(seen, [40, 80, 160, 160]);
        assert_eq!(next_period(p, 1, true), TICK);
        assert_eq!(next_period(p, 1, false), TICK);
    }

    #[test]
    fn a_wake_up_that_finds_nothing_leaves_the_tick_as_it_was() {
        assert_eq!(next_period(TICK, 0, false), TICK);
        assert_eq!(next_period(IDLE_TICK, 0, false), IDLE_TICK);
    }
}
