//! Decoded events: what the kernel reported, in userspace types.
use std::net::IpAddr;

use crate::state::TcpState;

/// A process: tgid and command name (the kernel's 16-byte, NUL-padded comm).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    comm: [u8; tracer_common::COMM_LEN],
}

impl Process {
    pub fn new(pid: u32, comm: [u8; tracer_common::COMM_LEN]) -> Self {
        Self { pid, comm }
    }

    pub fn comm(&self) -> &str {
        let end = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.comm.len());
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
}

impl StateChange {
    /// The process to show: the owner, else the task that happened to run.
    pub fn process(&self) -> Process {
        self.owner.unwrap_or(self.current)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    State(StateChange),
}
