//! fexit on `inet_csk_accept`: the exact owner of every passive socket.
use aya_ebpf::{macros::fexit, programs::FExitContext};

#[fexit(function = "inet_csk_accept")]
pub fn inet_csk_accept(ctx: FExitContext) -> i32 {
    // inet_csk_accept(struct sock *sk, struct proto_accept_arg *arg): the return
    // value follows the two arguments.
    let sock: u64 = ctx.arg(2);
    if sock != 0 {
        crate::owner::claim(sock);
    }
    0
}
