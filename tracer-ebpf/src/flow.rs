//! The kernel's flow table: every segment of a traced flow is counted here,
//! so only the segments that matter one by one cross the ring buffer.
//!
//! One record per flow, counted with atomic adds: both ends of a loopback
//! connection count into it from their own CPUs. Per-CPU records measured no
//! cheaper in the classifier (the hash lookup costs the same), and they made
//! every close sum a share per CPU and every payload head blind to the other
//! CPU's handshake.
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns, macros::map, maps::LruHashMap};
use tracer_common::{FlowKey, FlowStats, syn_seen, tcp_flag};

/// Flows by direction-neutral key; userspace sets the size before load.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowStats> = LruHashMap::with_max_entries(65536, 0);

#[inline(always)]
fn add64(dst: *mut u64, v: u64) {
    // SAFETY: a field of a checked map value; another CPU may count the same flow.
    unsafe { core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(dst, v) };
}

#[inline(always)]
pub fn add32(dst: *mut u32, v: u32) {
    // SAFETY: as in `add64`.
    unsafe { core::intrinsics::atomic_xadd::<u32, u32, { core::intrinsics::AtomicOrdering::Relaxed }>(dst, v) };
}

#[inline(always)]
fn or_marks(p: *mut FlowStats, bits: u64) {
    // SAFETY: a checked map value; two closing sockets may mark at once.
    unsafe {
        core::intrinsics::atomic_or::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            &raw mut (*p).marks,
            bits,
        )
    };
}

/// Marks a flow, where the classifier reads it.
#[inline(always)]
pub fn mark(key: &FlowKey, bits: u64) {
    if let Some(p) = FLOWS.get_ptr_mut(key) {
        or_marks(p, bits);
    }
}

/// Marks a flow and copies its counters into `into`. False if the flow has
/// no record.
#[inline(always)]
pub fn mark_and_copy(key: &FlowKey, bits: u64, into: *mut FlowStats) -> bool {
    let Some(p) = FLOWS.get_ptr_mut(key) else {
        return false;
    };
    or_marks(p, bits);
    // SAFETY: a checked map value and a writable destination.
    unsafe { *into = *p };
    true
}

/// Counts one segment sent by endpoint `from`: an add per flag it carries,
/// not per flag there is.
#[inline(always)]
pub fn count(stats: *mut FlowStats, from: usize, flags: u8, len: u32) {
    // SAFETY: checked for null by the caller; `from` is 0 or 1.
    let d = unsafe { &raw mut (*stats).dir[from & 1] };
    // SAFETY: fields of a checked map value.
    unsafe {
        add64(&raw mut (*d).packets, 1);
        if len > 0 {
            add64(&raw mut (*d).bytes, u64::from(len));
        }
        for bit in 0..8 {
            if flags >> bit & 1 != 0 {
                add32(&raw mut (*d).flags[bit], 1);
            }
        }
    }
}

/// Keeps what a direction's first SYN says: its sequence number, when it was
/// seen and whether it opened the connection. Userspace learns the handshake
/// from these, so SYNs need not cross the ring buffer.
#[inline(always)]
pub fn note_syn(stats: *mut FlowStats, from: usize, flags: u8, seq: u32) {
    // SAFETY: checked for null by the caller; `from` is 0 or 1.
    let d = unsafe { &mut (*stats).dir[from & 1] };
    if d.has_isn != syn_seen::NO {
        return;
    }
    d.isn = seq;
    // SAFETY: no preconditions.
    d.syn_ts = unsafe { bpf_ktime_get_ns() };
    d.has_isn = if flags & tcp_flag::ACK == 0 {
        syn_seen::OPENER
    } else {
        syn_seen::ANSWER
    };
}

/// Opens a flow's record. Only if none exists: two CPUs may open one flow at
/// once (a simultaneous open), and replacing the first's record would lose
/// what it counted; the loser counts into the winner's.
#[inline(always)]
pub fn open(key: &FlowKey) -> Option<*mut FlowStats> {
    let _ = FLOWS.insert(key, FlowStats::default(), u64::from(BPF_NOEXIST));
    FLOWS.get_ptr_mut(key)
}

/// Starts a reused 4-tuple's record afresh, in place: another CPU may hold
/// a pointer into it.
#[inline(always)]
pub fn reset(p: *mut FlowStats) -> *mut FlowStats {
    // SAFETY: a checked map value.
    unsafe { *p = FlowStats::default() };
    p
}

/// A SYN without ACK opens a connection; one whose sequence number differs
/// from the flow's recorded ISN opens a new connection on a reused 4-tuple.
#[inline(always)]
pub fn is_new_connection(p: *const FlowStats, from: usize, flags: u8, seq: u32) -> bool {
    if flags & (tcp_flag::SYN | tcp_flag::ACK) != tcp_flag::SYN {
        return false;
    }
    // SAFETY: a checked map value.
    let d = unsafe { &(*p).dir[from & 1] };
    d.has_isn != syn_seen::NO && d.isn != seq
}
