//! Decoded events: what the kernel reported, in userspace types.
use std::net::IpAddr;

use tracer_common::{FlowKey, FlowStats};

use crate::state::TcpState;

/// A process: tgid and command name (the kernel's 16-byte, NUL-padded comm).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    comm: [u8; tracer_common::COMM_LEN],
}

/// A command name in the kernel's form: at most 15 bytes, NUL-padded.
pub fn comm_bytes(name: &str) -> [u8; tracer_common::COMM_LEN] {
    let mut comm = [0u8; tracer_common::COMM_LEN];
    let n = name.len().min(tracer_common::COMM_LEN - 1);
    comm[..n].copy_from_slice(&name.as_bytes()[..n]);
    comm
}

impl Process {
    pub fn new(pid: u32, comm: [u8; tracer_common::COMM_LEN]) -> Self {
        Self { pid, comm }
    }

    pub fn comm(&self) -> &str {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(self.comm.len());
        std::str::from_utf8(&self.comm[..end]).unwrap_or("?")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// One TCP state transition of one socket, endpoints from that socket's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateChange {
    pub ts_ns: u64,
    pub sock: u64,
    pub family: Family,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    pub old: TcpState,
    pub new: TcpState,
    /// The owner (connect, listen, accept) when the kernel knew it.
    pub owner: Option<Process>,
    /// The task that ran the transition: softirq may run on any task's time.
    pub current: Process,
    /// Shipped by the state program's second copy (see `header_flag::RECOVERED`).
    pub recovered: bool,
}

impl StateChange {
    /// The process to show: the owner, else the task that happened to run.
    pub fn process(&self) -> Process {
        self.owner.unwrap_or(self.current)
    }

    /// This socket's flow and the index of its own endpoint in it.
    pub fn flow(&self) -> (FlowKey, usize) {
        let family = match self.family {
            Family::Ipv4 => tracer_common::AF_INET,
            Family::Ipv6 => tracer_common::AF_INET6,
        };
        FlowKey::of_socket(family, octets(self.laddr), self.lport, octets(self.raddr), self.rport)
    }
}

/// The 16-byte form the kernel uses: IPv4 in the first four bytes.
fn octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&a.octets());
            o
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// One TCP segment seen by the classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub ts_ns: u64,
    pub key: FlowKey,
    /// The sender's endpoint index in `key`.
    pub from: usize,
    pub seq: u32,
    pub ack: u32,
    pub ifindex: u32,
    pub hook: Hook,
    pub flags: u8,
    pub win: u16,
    /// TCP payload length.
    pub len: u32,
    /// Where the captured payload bytes (`Event::Segment`'s) start in the payload.
    pub head_off: u32,
    /// Shipped after a socket of its flow closed: counted by userspace.
    pub late: bool,
    /// What the flow's kernel record knew of the handshake (payload heads only).
    pub handshake: Handshake,
}

/// A flow's handshake as the kernel's record has it: each endpoint's ISN and
/// which endpoint opened. SYNs cross the ring buffer only when every segment
/// does, so payload heads carry what protocol detection needs of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handshake {
    pub isn: [Option<u32>; 2],
    pub opener: Option<usize>,
}

impl Segment {
    pub fn src(&self) -> (IpAddr, u16) {
        endpoint(&self.key, self.from)
    }

    pub fn dst(&self) -> (IpAddr, u16) {
        endpoint(&self.key, 1 - self.from)
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Endpoint `i` of a flow key as an address and port.
pub fn endpoint(key: &FlowKey, i: usize) -> (IpAddr, u16) {
    let a = key.addr[i];
    let ip = if key.family == tracer_common::AF_INET {
        IpAddr::V4(std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    } else {
        IpAddr::V6(std::net::Ipv6Addr::from(a))
    };
    (ip, key.port[i])
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        }
    }
}

/// A socket's transition to CLOSE, with its flow's counters at that moment
/// (none when the flow was not counted: it opened before the tracer started).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Close {
    pub state: StateChange,
    pub stats: Option<FlowStats>,
}

/// One decoded record. A segment's captured payload bytes, if the kernel
/// shipped any, are borrowed from the ring buffer's record: a head is parsed
/// where it lies, never copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    State(StateChange),
    Segment(Segment, Option<&'a [u8]>),
    Close(Close),
    /// `accept` returned `sock` to this process.
    Owner {
        sock: u64,
        process: Process,
    },
}
