//! Draining the ring buffer. The kernel wakes us only when much data waits
//! (see `WAKEUP_BYTES`), so we also drain on a tick: short while events come,
//! longer while none do. No busy polling, no wake-up per event on a busy
//! host, and an idle daemon wakes a dozen times a second rather than ninety.
use std::{io, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, time::Instant};

/// The tick while events come.
pub const TICK: Duration = Duration::from_millis(20);
/// The longest tick, reached by doubling after each drain that found
/// nothing: how long the first events after a lull may wait (a burst wakes
/// us at once).
pub const IDLE_TICK: Duration = Duration::from_millis(160);

pub struct Reader {
    ring: AsyncFd<RingBuf<MapData>>,
    period: Duration,
    next: Instant,
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
        })
    }

    /// Until the kernel signals data or the tick comes round.
    pub async fn ready(&mut self) {
        tokio::select! {
            guard = self.ring.readable_mut() => {
                if let Ok(mut g) = guard {
                    // Cleared before draining: data that lands after the drain re-arms it.
                    g.clear_ready();
                }
            }
            _ = tokio::time::sleep_until(self.next) => {}
        }
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
        self.period = next_period(self.period, n);
        self.next = Instant::now() + self.period;
        n
    }

    /// How long until the next tick, as of the last drain.
    pub fn period(&self) -> Duration {
        self.period
    }
}

fn next_period(period: Duration, drained: u64) -> Duration {
    if drained > 0 { TICK } else { (period * 2).min(IDLE_TICK) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_stretches_while_nothing_comes_and_snaps_back_when_something_does() {
        let mut p = TICK;
        let mut seen = Vec::new();
        for _ in 0..4 {
            p = next_period(p, 0);
            seen.push(p.as_millis());
        }
        assert_eq!(seen, [40, 80, 160, 160]);
        assert_eq!(next_period(p, 1), TICK);
    }
}
