//! Tracepoint `tcp:tcp_retransmit_skb`: retransmissions, counted per direction
//! in the flow's record.
use aya_ebpf::{EbpfContext, macros::tracepoint, programs::TracePointContext};
use tracer_common::{AF_INET, FlowKey, retransmit_format as f};

use crate::flow;

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let _ = on_retransmit(&ctx);
    0
}

/// Fields at `offset`, read as aligned u16 words: the addresses of this
/// tracepoint sit at offsets the verifier will not read as u32.
#[inline(always)]
fn u16_at(ctx: &TracePointContext, offset: usize) -> u16 {
    // SAFETY: offsets come from the tracepoint's format, checked by userspace.
    unsafe { core::ptr::read(ctx.as_ptr().cast::<u8>().add(offset).cast::<u16>()) }
}

#[inline(always)]
fn addr(ctx: &TracePointContext, offset: usize, words: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    for i in 0..8 {
        if i < words {
            a[i * 2..i * 2 + 2].copy_from_slice(&u16_at(ctx, offset + i * 2).to_ne_bytes());
        }
    }
    a
}

#[inline(always)]
fn on_retransmit(ctx: &TracePointContext) -> Option<()> {
    let family = u16_at(ctx, f::FAMILY);
    let (saddr, daddr) = if family == AF_INET {
        (addr(ctx, f::SADDR, 2), addr(ctx, f::DADDR, 2))
    } else {
        (addr(ctx, f::SADDR_V6, 8), addr(ctx, f::DADDR_V6, 8))
    };
    let (key, from) = FlowKey::of_socket(family, saddr, u16_at(ctx, f::SPORT), daddr, u16_at(ctx, f::DPORT));
    let stats = flow::FLOWS.get_ptr_mut(&key)?;
    // SAFETY: map value pointer, checked for null; `from` is 0 or 1.
    flow::add32(unsafe { &raw mut (*stats).dir[from & 1].retransmits }, 1);
    Some(())
}
