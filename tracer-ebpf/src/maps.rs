//! Maps shared by the programs, and the read-only settings userspace fills at load time.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    AF_INET, AF_INET6, COMM_LEN, FlowKey, MAX_CAPTURE, PortBits, Task, WANTS_GEN_MASK, Want, filter, port_set,
};

/// Every event of every kind; userspace sets the real size before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Events lost because `EVENTS` was full, per CPU.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Port sets by `port_set` index, as bitmaps: the set the classifier's gate
/// reads is 8 KiB of cache lines that stay warm, where a byte per port spread
/// over an array's 8-byte slots took 512 KiB and missed the cache for each
/// new ephemeral port.
#[map]
pub static PORTS: Array<PortBits> = Array::with_max_entries(port_set::COUNT, 0);

/// Traced processes (tgid), when `filter::PIDS` is set.
#[map]
pub static PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// Traced command names, when `filter::COMMS` is set.
#[map]
pub static COMMS: HashMap<[u8; COMM_LEN], u8> = HashMap::with_max_entries(64, 0);

/// Socket address -> the process that owns it (connect, listen, accept).
#[map]
pub static OWNERS: LruHashMap<u64, Task> = LruHashMap::with_max_entries(65536, 0);

/// Listening port -> the process that listens, the provisional owner of the
/// sockets it will accept: they change state in softirq before `accept` returns.
#[map]
pub static LISTENERS: LruHashMap<u16, Task> = LruHashMap::with_max_entries(4096, 0);

/// Flow -> the payload its protocol detector wants, written by userspace
/// (a plain hash: entries are few, and userspace deletes each with its flow).
#[map]
pub static WANTS: HashMap<FlowKey, Want> = HashMap::with_max_entries(65536, 0);

/// 0 while `WANTS` is empty, so a storm of short connections, which never
/// needs an entry, skips the hash lookups; otherwise a number userspace
/// changes whenever it changes `WANTS`, so a flow's cached entry stays
/// good until then (`WantSeen`).
#[map]
pub static WANTS_GEN: Array<u32> = Array::with_max_entries(1, 0);

/// Which filters apply (`tracer_common::filter` bits).
#[unsafe(no_mangle)]
static FILTERS: u32 = 0;

/// Bytes waiting in `EVENTS` above which a submit wakes userspace; below it,
/// userspace drains on its own tick, so a busy host is not woken per event.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;

/// Payload bytes shipped with a segment whose head userspace wants (0: none).
#[unsafe(no_mangle)]
static CAPTURE_BYTES: u32 = 0;

#[inline(always)]
pub fn filters() -> u32 {
    // SAFETY: a global in .rodata; volatile so the compiler keeps the load that
    // userspace's value replaces at load time.
    unsafe { core::ptr::read_volatile(&FILTERS) }
}

#[inline(always)]
pub fn capture_bytes() -> usize {
    // SAFETY: as in `filters`.
    let n = unsafe { core::ptr::read_volatile(&CAPTURE_BYTES) } as usize;
    if n > MAX_CAPTURE { MAX_CAPTURE } else { n }
}

/// Flags for `submit`: wake the reader only when enough data waits.
#[inline(always)]
pub fn submit_flags() -> u64 {
    // SAFETY: as in `filters`.
    let threshold = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
pub fn count_drop() {
    if let Some(n) = DROPS.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; atomic because the classifier (softirq) can
        // interrupt the tracepoint on the same CPU mid-increment.
        unsafe { core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(n, 1) };
    }
}

const PORT_FILTERS: u32 = filter::PORTS | filter::LOCAL_PORTS | filter::REMOTE_PORTS;

#[inline(always)]
fn in_set(set: u32, port: u16) -> bool {
    PORTS
        .get(set)
        .is_some_and(|bits| bits[usize::from(port >> 6) & (port_set::WORDS - 1)] >> (port & 63) & 1 != 0)
}

/// Whether a socket with these ports is traced: `--port` either end, `-L`
/// local, `-D` remote, all that are given must hold.
#[inline(always)]
pub fn ports_traced(sport: u16, dport: u16) -> bool {
    let f = filters();
    if f & PORT_FILTERS == 0 {
        return true;
    }
    (f & filter::PORTS == 0 || in_set(port_set::EITHER, sport) || in_set(port_set::EITHER, dport))
        && (f & filter::LOCAL_PORTS == 0 || in_set(port_set::LOCAL, sport))
        && (f & filter::REMOTE_PORTS == 0 || in_set(port_set::REMOTE, dport))
}

/// Whether the classifier counts a segment: either end on any traced port.
/// Segments have no "local" side on loopback, where both ends are local.
#[inline(always)]
pub fn port_gate(sport: u16, dport: u16) -> bool {
    filters() & PORT_FILTERS == 0 || in_set(port_set::ANY, sport) || in_set(port_set::ANY, dport)
}

/// `WANTS`' generation: 0 when no flow has a payload request.
#[inline(always)]
pub fn wants_gen() -> u32 {
    // SAFETY: read only; userspace writes it between runs of ours.
    WANTS_GEN
        .get(0)
        .map_or(0, |n| unsafe { core::ptr::read_volatile(n) } & WANTS_GEN_MASK)
}

#[inline(always)]
pub fn family_traced(family: u16) -> bool {
    let f = filters();
    (f & filter::IPV4_ONLY == 0 || family == AF_INET) && (f & filter::IPV6_ONLY == 0 || family == AF_INET6)
}

/// Whether the owner passes `--pid` and `--comm`; an unknown owner passes
/// neither.
#[inline(always)]
pub fn owner_traced(owner: &Task) -> bool {
    let f = filters();
    (f & filter::PIDS == 0 || (owner.pid != 0 && PIDS.get_ptr(owner.pid).is_some()))
        && (f & filter::COMMS == 0 || (owner.pid != 0 && COMMS.get_ptr(owner.comm).is_some()))
}
