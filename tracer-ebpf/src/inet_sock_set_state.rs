//! BTF tracepoint `inet_sock_set_state`: every TCP state change, filtered in
//! the kernel, one event each on the ring buffer; a transition to CLOSE
//! carries the flow's counters, so userspace needs no map read per connection.
//!
//! The kernel skips a tracing program that is already running on the CPU: a
//! transition in softirq that interrupts this program's run for a transition
//! in process context would be lost. So the program is attached twice. The
//! first copy notes each transition it takes in `TAKEN`; the second, which
//! runs after it, handles a transition only when the first did not take it.
//! Two notes, not one: the first copy may handle a transition nested inside
//! the second copy's run, after which the second copy must still recognise
//! the outer transition as taken. The order matters: programs attached to
//! one tracepoint run in the order they were attached (the kernel appends
//! probes of equal priority), and userspace attaches the first copy first.
//! Rare cases this does not settle: more than one nested transition in the
//! moment before the second copy reads the notes yields a copy (userspace
//! drops it); a skipped transition identical to a stale note (same socket
//! address, states, ports and transmit hash) is not made up. Its skip should
//! show in `missed_state_changes`, which has been seen to undercount.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::PerCpuArray,
    programs::BtfTracePointContext,
};
use aya_log_ebpf::debug;
use tracer_common::{
    CloseEvent, EventHeader, FlowKey, FlowStats, IPPROTO_TCP, StateEvent, Task, filter, flow_mark, header_flag, kind,
    tcp_state,
};

use crate::{flow, maps, owner, sock};

/// Per CPU: the last two transitions the first copy took, newest first.
#[map]
static TAKEN: PerCpuArray<[TransitionId; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Per CPU: transitions the second copy handled for the first. Userspace
/// subtracts them from the first copy's skipped runs: the rest are lost.
#[map]
pub static RECOVERED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let id = transition_id(&ctx);
    if let Some(p) = TAKEN.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, checked for null; this copy does not nest.
        unsafe { *p = [id, (*p)[0]] };
    }
    on_transition(&ctx, 0);
    0
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn set_state_nested(ctx: BtfTracePointContext) -> i32 {
    let id = transition_id(&ctx);
    let Some(taken) = TAKEN.get(0) else {
        return 0;
    };
    if taken.contains(&id) {
        return 0;
    }
    on_transition(&ctx, header_flag::RECOVERED);
    if let Some(n) = RECOVERED.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, checked for null.
        unsafe { *n += 1 };
    }
    0
}

/// A transition: the socket, both states, and what tells the socket apart
/// from an earlier one at the same address (sockets are freed and reused at
/// once, so a stale note would otherwise match a new socket's transition).
/// Separate words, as the verifier allows no arithmetic on the socket pointer.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C)]
struct TransitionId {
    sock: u64,
    states: u64,
    incarnation: u64,
}

#[inline(always)]
fn transition_id(ctx: &BtfTracePointContext) -> TransitionId {
    TransitionId {
        sock: ctx.arg(0),
        states: u64::from(ctx.arg::<u32>(1)) | u64::from(ctx.arg::<u32>(2)) << 32,
        incarnation: sock::incarnation(ctx.arg(0)),
    }
}

/// A BPF function of its own, called by both copies: inlined into each,
/// its locals and the copy's own would not fit one 512-byte stack frame.
/// `flags`: the event header's `header_flag` bits.
#[inline(never)]
fn on_transition(ctx: &BtfTracePointContext, flags: u32) {
    let sk: *const u8 = ctx.arg(0);
    if sock::protocol(sk) != IPPROTO_TCP {
        return;
    }
    let Some((sport, dport)) = sock::ports(sk) else {
        return;
    };
    if !maps::ports_traced(sport, dport) {
        return;
    }
    let family = sock::family(sk);
    let Some((saddr, daddr)) = sock::addresses(sk, family) else {
        return;
    };
    let sock = sk as u64;
    let old = ctx.arg::<i32>(1) as u8;
    let new = ctx.arg::<i32>(2) as u8;
    // -4/-6 mean the traffic's family: a dual-stack socket talking to an IPv4
    // peer carries IPv4 packets, as the classifier sees them.
    if !maps::family_traced(FlowKey::traffic_family(family, &saddr, &daddr)) {
        return;
    }
    // Without --pid or --comm the kernel keeps no owner table: the owner is
    // shipped where it is taken (connect, listen, accept) and userspace
    // remembers it, which keeps map updates off every connection's path.
    let by_owner = maps::filters() & (filter::PIDS | filter::COMMS) != 0;
    let (owner, current) = if by_owner {
        let current = owner::current_task();
        let owner = owner::resolve(sock, old, new, sport, &current);
        if new == tcp_state::CLOSE {
            owner::forget(sock, old, sport, &owner);
        }
        (owner, current)
    } else {
        owner::in_process_context(old, new)
    };
    let traced = !by_owner || maps::owner_traced(&owner);
    // Until connect() binds it, an active socket has no local port: no flow yet.
    // Without owner filters, the flow matters only to a closing socket.
    // Recomputed rather than kept from the family check: holding the 40-byte
    // key across the owner lookups overflows the 512-byte BPF stack.
    let key = (sport != 0 && dport != 0 && (by_owner || new == tcp_state::CLOSE))
        .then(|| FlowKey::of_socket(family, saddr, sport, daddr, dport).0);
    let closing = traced && new == tcp_state::CLOSE;
    if let Some(key) = key.as_ref().filter(|_| !closing) {
        flow::mark(key, if traced { flow_mark::TRACED } else { flow_mark::IGNORED });
    }
    if !traced {
        return;
    }
    let t = Transition {
        sock,
        saddr: &saddr,
        daddr: &daddr,
        sport,
        dport,
        family,
        old,
        new,
        owner: &owner,
        current: &current,
        flags,
    };
    let shipped = if new == tcp_state::CLOSE {
        ship_close(&t, key.as_ref())
    } else {
        ship_state(&t)
    };
    if !shipped {
        maps::count_drop();
        debug!(
            ctx,
            "ring buffer full: transition {} -> {} of port {} dropped", old, new, sport
        );
    }
}

/// One transition's fields, by reference: copies would not fit the stack.
struct Transition<'a> {
    sock: u64,
    saddr: &'a [u8; 16],
    daddr: &'a [u8; 16],
    sport: u16,
    dport: u16,
    family: u16,
    old: u8,
    new: u8,
    owner: &'a Task,
    current: &'a Task,
    flags: u32,
}

/// Writes the event in place in the ring buffer: built on the stack it
/// would overflow the 512-byte BPF stack.
#[inline(always)]
fn write_state(p: *mut StateEvent, t: &Transition, kind: u32) {
    // SAFETY: `p` points to a reserved ring-buffer entry.
    unsafe {
        (*p).header = EventHeader {
            kind,
            flags: t.flags,
            ts_ns: bpf_ktime_get_ns(),
        };
        (*p).sock = t.sock;
        (*p).saddr = *t.saddr;
        (*p).daddr = *t.daddr;
        (*p).sport = t.sport;
        (*p).dport = t.dport;
        (*p).family = t.family;
        (*p).oldstate = t.old;
        (*p).newstate = t.new;
        (*p).owner = *t.owner;
        (*p).current = *t.current;
    }
}

#[inline(always)]
fn ship_state(t: &Transition) -> bool {
    let Some(mut entry) = maps::EVENTS.reserve::<StateEvent>(0) else {
        return false;
    };
    write_state(entry.as_mut_ptr(), t, kind::STATE);
    entry.submit(maps::submit_flags());
    true
}

#[inline(always)]
fn ship_close(t: &Transition, key: Option<&FlowKey>) -> bool {
    let Some(mut entry) = maps::EVENTS.reserve::<CloseEvent>(0) else {
        return false;
    };
    let p = entry.as_mut_ptr();
    // SAFETY: `p` is a reserved CloseEvent, written in place to keep the
    // 280-byte event off the 512-byte BPF stack.
    unsafe {
        // Stamped before the flow is marked closed: the classifier calls a
        // segment late only once it sees the mark, after counting it, and
        // stamps it after that, so every segment counted after the copy is
        // late and stamped after the close. Userspace adds only those: one
        // counted just before the copy and late too (its count and its read
        // of the mark straddle the mark and the copy) is the one it adds twice.
        write_state(&raw mut (*p).state, t, kind::CLOSE);
        let marks = flow_mark::TRACED | flow_mark::CLOSED;
        let found = key.is_some_and(|k| flow::mark_and_copy(k, marks, &raw mut (*p).stats));
        if !found {
            (*p).stats = FlowStats::default();
        }
        (*p).has_stats = u32::from(found);
        (*p).retransmits = if found {
            sock::total_retrans(t.sock as *const u8).unwrap_or(0)
        } else {
            0
        };
    }
    entry.submit(maps::submit_flags());
    true
}
