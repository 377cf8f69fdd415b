//! Tracepoint `sock:inet_sock_set_state`: every TCP state change, filtered in
//! the kernel, one event each on the ring buffer; a transition to CLOSE
//! carries the flow's counters, so userspace needs no map read per connection.
use aya_ebpf::{EbpfContext, helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use aya_log_ebpf::debug;
use tracer_common::{
    AF_INET, CloseEvent, EventHeader, FlowKey, FlowStats, IPPROTO_TCP, StateEvent, filter, flow_mark, kind,
    set_state_format as f, tcp_state,
};

use crate::{flow, maps, owner};

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    on_transition(&ctx);
    0
}

/// Reads a field of the tracepoint record in place (direct context access,
/// cheaper than a probe-read helper call).
#[inline(always)]
fn field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: offsets come from the tracepoint's format, which userspace checks
    // against the running kernel before loading; the verifier bounds ctx access.
    unsafe { core::ptr::read_unaligned(ctx.as_ptr().cast::<u8>().add(offset).cast::<T>()) }
}

/// Addresses are read as whole words: the verifier refuses byte loops over the
/// context, which is what copying a byte array from it compiles to.
#[inline(always)]
fn v4(ctx: &TracePointContext, offset: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&field::<u32>(ctx, offset).to_ne_bytes());
    a
}

#[inline(always)]
fn v6(ctx: &TracePointContext, offset: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&field::<u64>(ctx, offset).to_ne_bytes());
    a[8..].copy_from_slice(&field::<u64>(ctx, offset + 8).to_ne_bytes());
    a
}

#[inline(always)]
fn on_transition(ctx: &TracePointContext) {
    if field::<u16>(ctx, f::PROTOCOL) != IPPROTO_TCP {
        return;
    }
    let sport: u16 = field(ctx, f::SPORT);
    let dport: u16 = field(ctx, f::DPORT);
    let family: u16 = field(ctx, f::FAMILY);
    if !maps::ports_traced(sport, dport) {
        return;
    }
    let sock: u64 = field(ctx, f::SKADDR);
    let old = field::<i32>(ctx, f::OLDSTATE) as u8;
    let new = field::<i32>(ctx, f::NEWSTATE) as u8;
    let (saddr, daddr) = if family == AF_INET {
        (v4(ctx, f::SADDR), v4(ctx, f::DADDR))
    } else {
        (v6(ctx, f::SADDR_V6), v6(ctx, f::DADDR_V6))
    };
    // -4/-6 mean the traffic's family: a dual-stack socket talking to an IPv4
    // peer carries IPv4 packets, as the classifier sees them.
    if !maps::family_traced(FlowKey::of_socket(family, saddr, sport, daddr, dport).0.family) {
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
    let event = StateEvent {
        // SAFETY: no preconditions.
        header: EventHeader {
            kind: kind::STATE,
            _pad: 0,
            ts_ns: unsafe { bpf_ktime_get_ns() },
        },
        sock,
        saddr,
        daddr,
        sport,
        dport,
        family,
        oldstate: old,
        newstate: new,
        owner,
        current,
    };
    let shipped = if new == tcp_state::CLOSE {
        ship_close(&event, key.as_ref())
    } else {
        ship_state(&event)
    };
    if !shipped {
        maps::count_drop();
        debug!(
            ctx,
            "ring buffer full: transition {} -> {} of port {} dropped", old, new, sport
        );
    }
}

#[inline(always)]
fn ship_state(event: &StateEvent) -> bool {
    let Some(mut entry) = maps::EVENTS.reserve::<StateEvent>(0) else {
        return false;
    };
    entry.write(*event);
    entry.submit(maps::submit_flags());
    true
}

#[inline(always)]
fn ship_close(event: &StateEvent, key: Option<&FlowKey>) -> bool {
    let Some(mut entry) = maps::EVENTS.reserve::<CloseEvent>(0) else {
        return false;
    };
    let p = entry.as_mut_ptr();
    // SAFETY: `p` is a reserved CloseEvent, written in place to keep the
    // 248-byte event off the 512-byte BPF stack.
    unsafe {
        (*p).state = *event;
        (*p).state.header.kind = kind::CLOSE;
        let marks = flow_mark::TRACED | flow_mark::CLOSED;
        let found = key.is_some_and(|k| flow::mark_and_total(k, marks, &raw mut (*p).stats));
        if !found {
            (*p).stats = FlowStats::default();
        }
        (*p).has_stats = u32::from(found);
        // Stamped after the sum: a segment stamped later (segments are stamped
        // before they are counted) is not in these totals.
        (*p).state.header.ts_ns = bpf_ktime_get_ns();
        (*p)._pad = 0;
    }
    entry.submit(maps::submit_flags());
    true
}
