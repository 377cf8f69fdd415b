//! BTF tracepoint `tcp_retransmit_skb`: retransmissions, counted per direction
//! in the flow's record.
//!
//! A BTF tracepoint, not the classic one: the kernel skips a classic
//! tracepoint's program whenever any other tracing program runs on that CPU
//! (the state program interrupted by a retransmit timer, say), and a skipped
//! run is a retransmission missing from the count. A BTF tracepoint is
//! skipped only when this same program is already running there.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::FlowKey;

use crate::{flow, sock};

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: BtfTracePointContext) -> i32 {
    let _ = on_retransmit(ctx.arg(0));
    0
}

#[inline(always)]
fn on_retransmit(sk: *const u8) -> Option<()> {
    let family = sock::family(sk);
    let (lport, rport) = sock::ports(sk)?;
    let (laddr, raddr) = sock::addresses(sk, family)?;
    let (key, from) = FlowKey::of_socket(family, laddr, lport, raddr, rport);
    let stats = flow::FLOWS.get_ptr_mut(key)?;
    // SAFETY: map value pointer, checked for null; `from` is 0 or 1.
    flow::add32(unsafe { &raw mut (*stats).dir[from & 1].retransmits }, 1);
    Some(())
}
