//! Maps shared by the programs, and the read-only settings userspace fills at load time.
use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::Task;

/// Every event of every kind; userspace sets the real size before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Events lost because `EVENTS` was full, per CPU.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Traced ports (either end), when `filter::PORTS` is set.
#[map]
pub static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(1024, 0);

/// Traced processes (tgid), when `filter::PIDS` is set.
#[map]
pub static PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// Socket address -> the process that owns it (connect, listen, accept).
#[map]
pub static OWNERS: LruHashMap<u64, Task> = LruHashMap::with_max_entries(65536, 0);

/// Listening port -> the process that listens, the provisional owner of the
/// sockets it will accept: they change state in softirq before `accept` returns.
#[map]
pub static LISTENERS: LruHashMap<u16, Task> = LruHashMap::with_max_entries(4096, 0);

/// Which filter maps apply (`tracer_common::filter` bits).
#[unsafe(no_mangle)]
static FILTERS: u32 = 0;

/// Bytes waiting in `EVENTS` above which a submit wakes userspace; below it,
/// userspace drains on its own tick, so a busy host is not woken per event.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;

#[inline(always)]
pub fn filters() -> u32 {
    // SAFETY: a global in .rodata; volatile so the compiler keeps the load that
    // userspace's value replaces at load time.
    unsafe { core::ptr::read_volatile(&FILTERS) }
}

/// Flags for `submit`: wake the reader only when enough data waits.
#[inline(always)]
pub fn submit_flags() -> u64 {
    // SAFETY: as in `filters`.
    let threshold = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    if EVENTS.query(aya_ebpf::bindings::BPF_RB_AVAIL_DATA as u64) >= threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
pub fn count_drop() {
    if let Some(n) = DROPS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *n += 1 };
    }
}

#[inline(always)]
pub fn port_traced(sport: u16, dport: u16) -> bool {
    filters() & tracer_common::filter::PORTS == 0
        || PORTS.get_ptr(sport).is_some()
        || PORTS.get_ptr(dport).is_some()
}

#[inline(always)]
pub fn pid_traced(pid: u32) -> bool {
    filters() & tracer_common::filter::PIDS == 0 || (pid != 0 && PIDS.get_ptr(pid).is_some())
}
