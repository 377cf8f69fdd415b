//! BTF tracepoint `tcp_retransmit_skb`: keeps the flow's record of a
//! socket's retransmissions current.
//!
//! It copies the socket's own count (`total_retrans`, what TCP_INFO reports)
//! rather than counting its runs. Since Linux 6.x the hook also runs for
//! attempts the kernel gave up on before sending (a segment still in a host
//! queue, no memory) and does not count, while a send the device then refused
//! counts. And a skipped run (the kernel does not run a program on a CPU
//! where it is already running) leaves nothing missing: the next run, or the
//! close, copies the count whole.
//!
//! A BTF tracepoint, not the classic one: the kernel skips a classic
//! tracepoint's program whenever any other tracing program runs on that CPU
//! (the state program interrupted by a retransmit timer, say).
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
    // Looked up first: most retransmissions on a host are of flows not traced.
    let stats = flow::FLOWS.get_ptr_mut(key)?;
    let total = sock::total_retrans(sk)?;
    // SAFETY: map value pointer, checked for null; `from` is 0 or 1. Only
    // this socket writes its direction's count, under its own lock.
    unsafe { (*stats).dir[from & 1].retransmits = total };
    Some(())
}
