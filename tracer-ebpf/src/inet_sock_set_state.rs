//! Tracepoint `sock:inet_sock_set_state`: every TCP state change, filtered by
//! port and owner in the kernel, one `StateEvent` each on the ring buffer.
use aya_ebpf::{
    EbpfContext, helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext,
};
use aya_log_ebpf::debug;
use tracer_common::{
    AF_INET, EventHeader, IPPROTO_TCP, StateEvent, kind, set_state_format as f, tcp_state,
};

use crate::{maps, owner};

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
    if !maps::port_traced(sport, dport) {
        return;
    }
    let sock: u64 = field(ctx, f::SKADDR);
    let old = field::<i32>(ctx, f::OLDSTATE) as u8;
    let new = field::<i32>(ctx, f::NEWSTATE) as u8;
    let current = owner::current_task();
    let owner = owner::resolve(sock, old, new, sport, &current);
    if new == tcp_state::CLOSE {
        owner::forget(sock, old, sport, &owner);
    }
    if !maps::pid_traced(owner.pid) {
        return;
    }
    let Some(mut entry) = maps::EVENTS.reserve::<StateEvent>(0) else {
        maps::count_drop();
        debug!(
            ctx,
            "ring buffer full: transition {} -> {} of port {} dropped", old, new, sport
        );
        return;
    };
    let family: u16 = field(ctx, f::FAMILY);
    let (saddr, daddr) = if family == AF_INET {
        (v4(ctx, f::SADDR), v4(ctx, f::DADDR))
    } else {
        (v6(ctx, f::SADDR_V6), v6(ctx, f::DADDR_V6))
    };
    entry.write(StateEvent {
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
    });
    entry.submit(maps::submit_flags());
}
