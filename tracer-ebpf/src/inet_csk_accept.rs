//! fexit on `inet_csk_accept`: the exact owner of every passive socket.
use aya_ebpf::{macros::fexit, programs::FExitContext};

#[fexit(function = "inet_csk_accept")]
pub fn inet_csk_accept(ctx: FExitContext) -> i32 {
    // The return value through bpf_get_func_ret: its position among the
    // arguments changed in 6.10 (four arguments before, two since).
    let sock: u64 = ctx.ret().unwrap_or(0);
    if sock != 0 {
        crate::owner::claim(sock);
    }
    0
}
