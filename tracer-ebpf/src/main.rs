//! tracer's kernel programs: one module per hook, the maps they share in `maps`.
#![no_std]
#![no_main]
// Atomic adds on map values: core's atomics do not exist on bpfel.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod flow;
mod inet_csk_accept;
mod inet_sock_set_state;
mod maps;
mod owner;
mod sock;
mod tc;
mod tcp_retransmit_skb;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic, so this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
