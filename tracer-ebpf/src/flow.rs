//! The kernel's flow table: every segment of a traced flow is counted here,
//! so only the segments that matter one by one cross the ring buffer.
use aya_ebpf::{macros::map, maps::LruHashMap};
use tracer_common::{FlowKey, FlowStats, tcp_flag};

/// Flows by direction-neutral key; userspace sets the size before load.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowStats> = LruHashMap::with_max_entries(65536, 0);

#[inline(always)]
fn add64(dst: *mut u64, v: u64) {
    // SAFETY: `dst` points into a map value; both CPUs of a loopback
    // connection may count the same flow at once, hence an atomic add.
    unsafe { core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(dst, v) };
}

#[inline(always)]
pub fn add32(dst: *mut u32, v: u32) {
    // SAFETY: as in `add64`.
    unsafe { core::intrinsics::atomic_xadd::<u32, u32, { core::intrinsics::AtomicOrdering::Relaxed }>(dst, v) };
}

#[inline(always)]
pub fn or64(dst: *mut u64, v: u64) {
    // SAFETY: as in `add64`.
    unsafe { core::intrinsics::atomic_or::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(dst, v) };
}

/// Counts one segment sent by endpoint `from`.
#[inline(always)]
pub fn count(stats: *mut FlowStats, from: usize, flags: u8, len: u32) {
    // SAFETY: a map value pointer checked for null by the caller; `from` is 0 or 1.
    let d = unsafe { &raw mut (*stats).dir[from & 1] };
    unsafe {
        add64(&raw mut (*d).packets, 1);
        if len > 0 {
            add64(&raw mut (*d).bytes, u64::from(len));
        }
        for bit in 0..8 {
            if flags & (1 << bit) != 0 {
                add32(&raw mut (*d).flags[bit], 1);
            }
        }
    }
}

/// A new flow's record: the first payload head of each direction is wanted.
#[inline(always)]
pub fn fresh(capture: bool) -> FlowStats {
    let mut s = FlowStats::default();
    let c = u32::from(capture);
    s.dir[0].capture = c;
    s.dir[1].capture = c;
    s
}

/// A SYN without ACK opens a connection; one whose sequence number differs
/// from the flow's recorded ISN opens a new connection on a reused 4-tuple.
#[inline(always)]
pub fn is_new_connection(stats: *const FlowStats, from: usize, flags: u8, seq: u32) -> bool {
    if flags & (tcp_flag::SYN | tcp_flag::ACK) != tcp_flag::SYN {
        return false;
    }
    // SAFETY: as in `count`.
    let d = unsafe { &(*stats).dir[from & 1] };
    d.has_isn != 0 && d.isn != seq
}
