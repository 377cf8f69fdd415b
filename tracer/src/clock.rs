//! Kernel timestamps (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) to wall-clock time.
use std::fmt::Write;

/// Wall-clock nanoseconds = monotonic nanoseconds + offset, sampled once at start.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    offset_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_MONOTONIC now, in the kernel programs' time base.
pub fn monotonic_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC) as u64
}

impl WallClock {
    pub fn sample() -> Self {
        Self {
            offset_ns: now_ns(libc::CLOCK_REALTIME) - now_ns(libc::CLOCK_MONOTONIC),
        }
    }

    /// A fixed offset, for tests: `mono` ns corresponds to `unix_ns`.
    pub fn fixed(mono: u64, unix_ns: i128) -> Self {
        Self {
            offset_ns: unix_ns - i128::from(mono),
        }
    }

    fn unix_ns(&self, mono: u64) -> i128 {
        i128::from(mono) + self.offset_ns
    }

    /// RFC 3339 in UTC with nanoseconds: `2026-11-22T02:05:00.123456789Z`.
    /// Filled into a fixed buffer and pushed once: this runs for every line
    /// of `--events` and every record.
    pub fn rfc3339(&self, mono: u64, out: &mut String) {
        let (days, secs, nanos) = split(self.unix_ns(mono));
        let (y, m, d) = civil_from_days(days);
        let mut b = *b"0000-00-00T00:00:00.000000000Z";
        put(&mut b[0..4], y as u64);
        put(&mut b[5..7], u64::from(m));
        put(&mut b[8..10], u64::from(d));
        put(&mut b[11..13], (secs / 3600) as u64);
        put(&mut b[14..16], (secs / 60 % 60) as u64);
        put(&mut b[17..19], (secs % 60) as u64);
        put(&mut b[20..29], nanos as u64);
        out.push_str(std::str::from_utf8(&b).expect("ASCII digits"));
    }

    /// Local-day time of day in UTC with microseconds: `02:05:00.123456`.
    pub fn time_of_day(&self, mono: u64, out: &mut String) {
        let (_, secs, nanos) = split(self.unix_ns(mono));
        let _ = write!(
            out,
            "{:02}:{:02}:{:02}.{:06}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            nanos / 1000
        );
    }
}

/// `v` as exactly `width` decimal digits, zero-padded (higher digits dropped).
pub fn digits(out: &mut String, mut v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend(buf[..width].iter().map(|&b| char::from(b)));
}

/// `v`'s last `slot.len()` decimal digits into `slot`, zero-padded.
fn put(slot: &mut [u8], mut v: u64) {
    for c in slot.iter_mut().rev() {
        *c = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Unix ns -> (days since epoch, seconds into the day, nanoseconds), in
/// 64-bit arithmetic (years 1678 to 2261; 128-bit division is slow).
fn split(unix_ns: i128) -> (i64, i64, i64) {
    let ns = i64::try_from(unix_ns).unwrap_or(if unix_ns < 0 { i64::MIN } else { i64::MAX });
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    (secs.div_euclid(86_400), secs.rem_euclid(86_400), nanos)
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_and_time_of_day() {
        // 2026-11-22T02:05:00.000000123Z
        let clock = WallClock::fixed(1_000, 1_795_313_100_000_000_000);
        let mut s = String::new();
        clock.rfc3339(1_123, &mut s);
        assert_eq!(s, "2026-11-22T02:05:00.000000123Z");
        s.clear();
        clock.time_of_day(1_000 + 1_500_000, &mut s);
        assert_eq!(s, "02:05:00.001500");
    }

    #[test]
    fn civil_dates_cross_leap_years_and_the_epoch() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
