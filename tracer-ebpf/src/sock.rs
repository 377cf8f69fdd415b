//! A socket's protocol and endpoints, read from `struct sock` at the offsets
//! userspace found in the running kernel's BTF.
use aya_ebpf::helpers::bpf_probe_read_kernel;
use tracer_common::{AF_INET, AF_INET6, SockLayout};

/// Set by userspace before load; in .rodata, so the verifier knows each
/// offset as a constant and checks every load against the kernel's types.
#[unsafe(no_mangle)]
static SOCK_LAYOUT: SockLayout = SockLayout {
    protocol: 0,
    family: 0,
    num: 0,
    sport: 0,
    dport: 0,
    daddr: 0,
    rcv_saddr: 0,
    v6_daddr: 0,
    v6_rcv_saddr: 0,
    txhash: 0,
    total_retrans: 0,
};

#[inline(always)]
fn offset(field: *const u32) -> usize {
    // SAFETY: a field of a global in .rodata; volatile so the compiler keeps
    // the load that userspace's value replaces at load time.
    unsafe { core::ptr::read_volatile(field) as usize }
}

/// A direct load through the typed socket pointer: the verifier checks it
/// against `struct sock` and the JIT turns a fault into zero. Every field
/// read is naturally aligned, so each is one load instruction.
#[inline(always)]
fn load<T: Copy>(sk: *const u8, at: usize) -> T {
    // SAFETY: see above.
    unsafe { core::ptr::read(sk.add(at).cast::<T>()) }
}

#[inline(always)]
pub fn protocol(sk: *const u8) -> u16 {
    load(sk, offset(&raw const SOCK_LAYOUT.protocol))
}

/// What tells this socket apart from an earlier one at the same address:
/// its ports and its random transmit hash, by direct loads only.
#[inline(always)]
pub fn incarnation(sk: *const u8) -> u64 {
    let num: u16 = load(sk, offset(&raw const SOCK_LAYOUT.num));
    let dport: u16 = load(sk, offset(&raw const SOCK_LAYOUT.dport));
    let txhash: u32 = load(sk, offset(&raw const SOCK_LAYOUT.txhash));
    u64::from(num) | u64::from(dport) << 16 | u64::from(txhash) << 32
}

#[inline(always)]
pub fn family(sk: *const u8) -> u16 {
    load(sk, offset(&raw const SOCK_LAYOUT.family))
}

/// (local, remote) ports in host order, as the tracepoints report them.
#[inline(always)]
pub fn ports(sk: *const u8) -> Option<(u16, u16)> {
    let dport = u16::from_be(load(sk, offset(&raw const SOCK_LAYOUT.dport)));
    let num: u16 = load(sk, offset(&raw const SOCK_LAYOUT.num));
    if num != 0 {
        return Some((num, dport));
    }
    // Before connect() binds it and after close releases it, `skc_num` is 0;
    // `inet_sport` still holds the port on close. It lies past `struct
    // sock`, where the verifier's view of the pointer ends: read through the helper.
    // SAFETY: a kernel read that fails cleanly.
    let sport = unsafe { bpf_probe_read_kernel(sk.add(offset(&raw const SOCK_LAYOUT.sport)).cast::<u16>()) }.ok()?;
    Some((u16::from_be(sport), dport))
}

/// The socket's own count of retransmitted segments, as TCP_INFO reports it.
/// It lies past `struct sock`: read through the helper.
#[inline(always)]
pub fn total_retrans(sk: *const u8) -> Option<u32> {
    let at = offset(&raw const SOCK_LAYOUT.total_retrans);
    // SAFETY: a kernel read that fails cleanly.
    unsafe { bpf_probe_read_kernel(sk.add(at).cast::<u32>()) }.ok()
}

/// (local, remote) addresses of a socket of `family`, IPv4 in the first four bytes.
#[inline(always)]
pub fn addresses(sk: *const u8, family: u16) -> Option<([u8; 16], [u8; 16])> {
    let mut laddr = [0u8; 16];
    let mut raddr = [0u8; 16];
    match family {
        AF_INET => {
            laddr[..4].copy_from_slice(&load::<u32>(sk, offset(&raw const SOCK_LAYOUT.rcv_saddr)).to_ne_bytes());
            raddr[..4].copy_from_slice(&load::<u32>(sk, offset(&raw const SOCK_LAYOUT.daddr)).to_ne_bytes());
        }
        AF_INET6 => {
            laddr = v6(sk, offset(&raw const SOCK_LAYOUT.v6_rcv_saddr));
            raddr = v6(sk, offset(&raw const SOCK_LAYOUT.v6_daddr));
        }
        _ => return None,
    }
    Some((laddr, raddr))
}

/// `struct in6_addr` is 4-byte aligned: four word loads.
#[inline(always)]
fn v6(sk: *const u8, at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    for i in 0..4 {
        a[i * 4..i * 4 + 4].copy_from_slice(&load::<u32>(sk, at + i * 4).to_ne_bytes());
    }
    a
}
