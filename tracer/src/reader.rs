//! Draining the ring buffer. The kernel wakes us only when much data waits
//! (see `WAKEUP_BYTES`), so we also drain on a short tick: no busy polling, and
//! no wake-up per event on a busy host.
use std::{io, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, time::Interval};

pub const TICK: Duration = Duration::from_millis(20);

pub struct Reader {
    ring: AsyncFd<RingBuf<MapData>>,
    tick: Interval,
}

impl Reader {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // SAFETY: the ring buffer owns its map fd, which stays open and unchanged
        // for as long as the AsyncFd owns the ring buffer.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }?;
        Ok(Self { ring, tick })
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
            _ = self.tick.tick() => {}
        }
    }

    /// Hands every waiting record to `each`; returns how many there were.
    pub fn drain(&mut self, mut each: impl FnMut(&[u8])) -> u64 {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while let Some(record) = ring.next() {
            each(&record);
            n += 1;
        }
        n
    }
}
