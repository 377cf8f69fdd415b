//! The kernel's flow table: every segment of a traced flow is counted here,
//! so only the segments that matter one by one cross the ring buffer.
//!
//! Records are per CPU. Both ends of a loopback connection send from their
//! own CPUs; a shared record would bounce its cache line between them on
//! every segment and need atomic adds. Each CPU counts into its own share,
//! and the rare readers (a socket's close, userspace at exit) sum the shares.
use aya_ebpf::{helpers::bpf_map_lookup_percpu_elem, macros::map, maps::LruPerCpuHashMap};
use tracer_common::{FlowKey, FlowStats, tcp_flag};

/// Flows by direction-neutral key; userspace sets the size before load.
#[map]
pub static FLOWS: LruPerCpuHashMap<FlowKey, FlowStats> = LruPerCpuHashMap::with_max_entries(65536, 0);

/// Possible CPUs, set by userspace: how many shares a flow has.
#[unsafe(no_mangle)]
static NR_CPUS: u32 = 1;
/// A bound the verifier can see; hosts with more CPUs see only this many shares.
const MAX_CPUS: u32 = 512;

/// CPU `cpu`'s share of a flow.
#[inline(always)]
fn share(key: &FlowKey, cpu: u32) -> Option<*mut FlowStats> {
    // SAFETY: FLOWS is a map definition (the helper takes its address) and
    // `key` a valid key; the result is checked for null.
    let p = unsafe {
        bpf_map_lookup_percpu_elem(
            (&raw const FLOWS).cast_mut().cast(),
            (key as *const FlowKey).cast(),
            cpu,
        )
    };
    (!p.is_null()).then_some(p.cast())
}

/// Calls `f` with every CPU's share of a flow.
#[inline(always)]
pub fn for_each_share(key: &FlowKey, mut f: impl FnMut(*mut FlowStats)) {
    // SAFETY: a global in .rodata, set by userspace before load.
    let n = unsafe { core::ptr::read_volatile(&NR_CPUS) };
    for cpu in 0..MAX_CPUS {
        if cpu >= n {
            break;
        }
        if let Some(p) = share(key, cpu) {
            f(p);
        }
    }
}

/// Marks a flow on every CPU's share and sums the shares into `into`, in
/// one pass (each share is a hash lookup, so the flow's existence is not
/// looked up on its own). False if the flow has no record.
#[inline(always)]
pub fn mark_and_total(key: &FlowKey, bits: u64, into: *mut FlowStats) -> bool {
    // SAFETY: `into` points to a writable FlowStats.
    unsafe { *into = FlowStats::default() };
    let mut found = false;
    for_each_share(key, |p| {
        found = true;
        or_marks(p, bits);
        // SAFETY: a checked map value and a writable destination.
        unsafe { (*into).merge(&*p) };
    });
    found
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

#[inline(always)]
pub fn add32(dst: *mut u32, v: u32) {
    // SAFETY: `dst` points into this CPU's share; no other writer runs here.
    unsafe { *dst += v };
}

/// Marks a flow on every CPU's share, where each CPU's classifier reads them.
#[inline(always)]
pub fn mark(key: &FlowKey, bits: u64) {
    for_each_share(key, |p| or_marks(p, bits));
}

/// Counts one segment sent by endpoint `from` in this CPU's share.
#[inline(always)]
pub fn count(stats: *mut FlowStats, from: usize, flags: u8, len: u32) {
    // SAFETY: this CPU's share, checked for null by the caller; `from` is 0 or 1.
    let d = unsafe { &mut (*stats).dir[from & 1] };
    d.packets += 1;
    d.bytes += u64::from(len);
    for bit in 0..8 {
        d.flags[bit] += u32::from(flags >> bit & 1);
    }
}

/// Opens a flow's record. Every share starts zeroed: each CPU may ship its
/// own `DEFAULT_HEADS` payload heads per direction until userspace says more.
#[inline(always)]
pub fn open(key: &FlowKey) -> Option<*mut FlowStats> {
    FLOWS.insert(key, FlowStats::default(), 0).ok()?;
    FLOWS.get_ptr_mut(key)
}

/// Starts a reused 4-tuple's record afresh. Updating an existing per-CPU
/// element only rewrites this CPU's share, so every share is zeroed in place
/// (another CPU may hold a pointer into the element: it is not replaced).
#[inline(always)]
pub fn reset(key: &FlowKey) -> Option<*mut FlowStats> {
    for_each_share(key, |p| {
        // SAFETY: a checked map value.
        unsafe { *p = FlowStats::default() };
    });
    FLOWS.get_ptr_mut(key)
}

/// A SYN without ACK opens a connection; one whose sequence number differs
/// from the flow's recorded ISN opens a new connection on a reused 4-tuple.
#[inline(always)]
pub fn is_new_connection(key: &FlowKey, from: usize, flags: u8, seq: u32) -> bool {
    if flags & (tcp_flag::SYN | tcp_flag::ACK) != tcp_flag::SYN {
        return false;
    }
    let mut reused = false;
    for_each_share(key, |p| {
        // SAFETY: a checked map value.
        let d = unsafe { &(*p).dir[from & 1] };
        reused |= d.has_isn != 0 && d.isn != seq;
    });
    reused
}
