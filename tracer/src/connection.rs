//! One socket's whole life, as the `connection` record reports it.
use std::net::IpAddr;

use tracer_common::DirCounters;

use crate::{
    event::{Family, Process, Segment},
    state::TcpState,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Active open: this socket connected.
    Client,
    /// Passive open: this socket was accepted.
    Server,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

/// Who ended the connection and how, from this socket's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseKind {
    LocalFin,
    RemoteFin,
    LocalRst,
    RemoteRst,
    /// A connect answered by a reset.
    Refused,
    /// A connect that was never answered.
    Timeout,
    OpenAtExit,
}

impl CloseKind {
    pub fn name(self) -> &'static str {
        match self {
            CloseKind::LocalFin => "local_fin",
            CloseKind::RemoteFin => "remote_fin",
            CloseKind::LocalRst => "local_rst",
            CloseKind::RemoteRst => "remote_rst",
            CloseKind::Refused => "refused",
            CloseKind::Timeout => "timeout",
            CloseKind::OpenAtExit => "open_at_exit",
        }
    }
}

/// Segments, payload bytes and flag counts in one direction of one socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    /// Segments carrying each flag, in `tracer_common::FLAG_NAMES` order.
    pub flags: [u64; 8],
}

impl Traffic {
    pub fn from_kernel(d: &DirCounters) -> Self {
        Self {
            packets: d.packets,
            bytes: d.bytes,
            flags: d.flags.map(u64::from),
        }
    }

    /// Segments that carried `flag` (one of `tracer_common::tcp_flag`).
    pub fn with(&self, flag: u8) -> u64 {
        self.flags[flag.trailing_zeros() as usize & 7]
    }

    pub fn add(&mut self, seg: &Segment) {
        self.packets += 1;
        self.bytes += u64::from(seg.len);
        for (bit, n) in self.flags.iter_mut().enumerate() {
            *n += u64::from(seg.flags >> bit & 1);
        }
    }
}

/// A state the socket entered, `at_ns` after the connection's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateAt {
    pub state: TcpState,
    pub at_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub sock: u64,
    pub process: Process,
    pub role: Role,
    pub family: Family,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    /// Kernel monotonic ns of the first event.
    pub start_ns: u64,
    pub duration_ns: u64,
    pub handshake_ns: Option<u64>,
    pub states: Vec<StateAt>,
    pub tx: Traffic,
    pub rx: Traffic,
    pub retransmits: u64,
    /// The kernel's flow table held this socket's counters. Without them
    /// (its flow was evicted from the LRU table, see `--max-flows`, or its
    /// segments crossed no traced interface) `tx`, `rx` and `retransmits`
    /// are unknown, not zero.
    pub counted: bool,
    pub close: CloseKind,
    pub protocol: &'static str,
    /// Segments that crossed the ring buffer, for the diagram (empty unless asked).
    pub segments: Vec<Segment>,
    /// Segments of this connection that were not kept for the diagram.
    pub segments_omitted: u64,
    /// Initial sequence numbers (tx, rx), to draw relative seq/ack.
    pub isn: (Option<u32>, Option<u32>),
    /// This socket's endpoint index in its flow key: segments `from` it are tx.
    pub local: usize,
    /// The application protocol, once payload proved one.
    pub app: Option<Box<App>>,
}

/// What a connection carried, and which side of it this socket is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    pub summary: crate::protocol::Summary,
    pub local: crate::protocol::Side,
    /// Where each message started (for `--diagram`; empty otherwise).
    pub marks: Vec<crate::protocol::marks::Mark>,
}
