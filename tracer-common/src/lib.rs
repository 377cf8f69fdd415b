//! The ABI between tracer's kernel programs and its userspace: every type here
//! crosses a BPF map or the ring buffer, so each is `#[repr(C)]`, plain data and
//! laid out without implicit padding.
#![no_std]

/// Which event follows the header in a ring-buffer record.
pub mod kind {
    pub const STATE: u32 = 1;
}

/// Every ring-buffer record starts with this, so one buffer carries several kinds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns`: CLOCK_MONOTONIC in nanoseconds.
    pub ts_ns: u64,
}

pub const COMM_LEN: usize = 16;

/// A process as the kernel saw it: tgid (the user's "pid") and its command name.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Task {
    pub pid: u32,
    pub comm: [u8; COMM_LEN],
}

/// One `sock:inet_sock_set_state` transition of a TCP socket.
///
/// Addresses are 16 bytes for both families; IPv4 uses the first four.
/// Ports are in host byte order, as the tracepoint reports them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateEvent {
    pub header: EventHeader,
    pub sock: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub oldstate: u8,
    pub newstate: u8,
    /// The socket's owner when known (connect, listen, accept), else pid 0.
    pub owner: Task,
    /// Whatever task was running when the transition fired (softirq included).
    pub current: Task,
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Kernel TCP states (`include/net/tcp_states.h`).
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
}

/// Bits of the `FILTERS` global: which filter maps the kernel must consult.
pub mod filter {
    pub const PORTS: u32 = 1;
    pub const PIDS: u32 = 2;
}

/// Offsets of `sock:inet_sock_set_state`'s fields, as its tracefs `format`
/// file states them; userspace checks the running kernel's format against these.
pub mod set_state_format {
    pub const SKADDR: usize = 8;
    pub const OLDSTATE: usize = 16;
    pub const NEWSTATE: usize = 20;
    pub const SPORT: usize = 24;
    pub const DPORT: usize = 26;
    pub const FAMILY: usize = 28;
    pub const PROTOCOL: usize = 30;
    pub const SADDR: usize = 32;
    pub const DADDR: usize = 36;
    pub const SADDR_V6: usize = 40;
    pub const DADDR_V6: usize = 56;
}

pub const IPPROTO_TCP: u16 = 6;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data with explicit padding; any bit pattern is valid.
    unsafe impl aya::Pod for super::Task {}
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::StateEvent {}
}
