//! The ABI between tracer's kernel programs and its userspace: every type here
//! crosses a BPF map or the ring buffer, so each is `#[repr(C)]`, plain data and
//! laid out without implicit padding.
#![no_std]

/// Which event follows the header in a ring-buffer record.
pub mod kind {
    pub const STATE: u32 = 1;
    /// A segment that matters on its own (RST or late; every one in full mode).
    pub const SEGMENT: u32 = 2;
    /// A segment with the head of its payload.
    pub const PAYLOAD: u32 = 3;
    /// A transition to CLOSE, with the flow's counters as of that moment.
    pub const CLOSE: u32 = 4;
    /// `accept` returned a socket: its owner.
    pub const OWNER: u32 = 5;
}

/// Bits of `EventHeader::flags`.
pub mod header_flag {
    /// A state change shipped by the state program's second copy, for a
    /// transition the kernel skipped the first copy for. Only such an event
    /// can be a copy of one the first copy shipped too.
    pub const RECOVERED: u32 = 1;
}

/// The process that accepted a socket (fexit on `inet_csk_accept`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnerEvent {
    pub header: EventHeader,
    pub sock: u64,
    pub owner: Task,
    pub _pad: [u8; 4],
}

/// Every ring-buffer record starts with this, so one buffer carries several kinds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u32,
    /// `header_flag` bits.
    pub flags: u32,
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

/// A TCP flow, direction-neutral: endpoint 0 is the lesser of the two
/// (address words, then port), so both directions and both local sockets of a
/// loopback connection find the same record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub addr: [[u8; 16]; 2],
    pub port: [u16; 2],
    pub family: u16,
    pub _pad: u16,
}

impl FlowKey {
    /// The key of the flow between (`a`, `a_port`) and (`b`, `b_port`), and the
    /// index of endpoint `a` in it (0 or 1).
    #[inline(always)]
    pub fn new(family: u16, a: [u8; 16], a_port: u16, b: [u8; 16], b_port: u16) -> (Self, usize) {
        let a_first = endpoint_le(&a, a_port, &b, b_port);
        let (addr, port) = if a_first {
            ([a, b], [a_port, b_port])
        } else {
            ([b, a], [b_port, a_port])
        };
        (
            Self {
                addr,
                port,
                family,
                _pad: 0,
            },
            if a_first { 0 } else { 1 },
        )
    }
}

#[inline(always)]
fn words(a: &[u8; 16]) -> (u64, u64) {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&a[..8]);
    lo.copy_from_slice(&a[8..]);
    (u64::from_be_bytes(hi), u64::from_be_bytes(lo))
}

#[inline(always)]
fn endpoint_le(a: &[u8; 16], a_port: u16, b: &[u8; 16], b_port: u16) -> bool {
    let (a0, a1) = words(a);
    let (b0, b1) = words(b);
    if a0 != b0 {
        return a0 < b0;
    }
    if a1 != b1 {
        return a1 < b1;
    }
    a_port <= b_port
}

impl FlowKey {
    /// The key of a socket's flow from the addresses a tracepoint reports. A
    /// dual-stack socket reports IPv4 peers as v4-mapped IPv6 addresses while
    /// its packets are IPv4, so such addresses are keyed as IPv4. Returns the
    /// index of the socket's own (local) endpoint.
    #[inline(always)]
    pub fn of_socket(family: u16, laddr: [u8; 16], lport: u16, raddr: [u8; 16], rport: u16) -> (Self, usize) {
        if family == AF_INET6 && v4_mapped(&laddr) && v4_mapped(&raddr) {
            return Self::new(AF_INET, unmap(&laddr), lport, unmap(&raddr), rport);
        }
        Self::new(family, laddr, lport, raddr, rport)
    }

    /// The family of the packets a socket of `family` with these addresses
    /// sends: the family `of_socket` keys it by.
    #[inline(always)]
    pub fn traffic_family(family: u16, laddr: &[u8; 16], raddr: &[u8; 16]) -> u16 {
        if family == AF_INET6 && v4_mapped(laddr) && v4_mapped(raddr) {
            AF_INET
        } else {
            family
        }
    }
}

#[inline(always)]
fn v4_mapped(a: &[u8; 16]) -> bool {
    a[..10] == [0u8; 10] && a[10] == 0xff && a[11] == 0xff
}

#[inline(always)]
fn unmap(a: &[u8; 16]) -> [u8; 16] {
    let mut v4 = [0u8; 16];
    v4[..4].copy_from_slice(&a[12..]);
    v4
}

/// TCP flags in header bit order: index `i` counts segments with bit `1 << i`.
pub const FLAG_NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
pub mod tcp_flag {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// One direction of a flow (from endpoint `i` to the other), counted in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirCounters {
    pub packets: u64,
    pub bytes: u64,
    pub flags: [u32; 8],
    /// The sending socket's own count of retransmitted segments
    /// (`total_retrans`), as the retransmit hook last copied it.
    pub retransmits: u32,
    /// Sequence number of this direction's first SYN (valid unless `has_isn`
    /// is `syn_seen::NO`).
    pub isn: u32,
    /// A `syn_seen` value.
    pub has_isn: u32,
    /// Payload heads shipped without a `Want` entry.
    pub captured: u32,
    /// When this direction's first SYN was seen (kernel monotonic ns).
    pub syn_ts: u64,
    /// This direction's `WANTS` entry as the classifier last read it.
    pub want: WantSeen,
}

/// A direction's payload request, cached in its flow's record so that a
/// long flow's segments do not each look `WANTS` up: valid while `WANTS_GEN`
/// still holds its generation. Written and read as one 8-byte word, because
/// the two CPUs a loopback flow's segments run on can both refresh it, and a
/// mix of their writes must not pass for the current generation.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WantSeen {
    /// `generation << 8 | mode` (a `want` value; `want::DEFAULT` when the
    /// flow had no entry). Generation 0 is never valid.
    pub tag: u32,
    pub from_seq: u32,
}

/// `WANTS_GEN` values wrap within the bits `WantSeen::tag` leaves them.
pub const WANTS_GEN_MASK: u32 = 0x00ff_ffff;

/// What a flow's direction has shown of its SYN (`DirCounters::has_isn`).
pub mod syn_seen {
    pub const NO: u32 = 0;
    /// A SYN without ACK: this direction opened the connection.
    pub const OPENER: u32 = 1;
    /// A SYN with ACK: this direction answered.
    pub const ANSWER: u32 = 2;
}

/// A flow's record in the kernel's flow table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub dir: [DirCounters; 2],
    /// `flow_mark` bits, set by the state program (64-bit: BPF's atomic OR
    /// needs it without cpu v3).
    pub marks: u64,
}

/// Bits of `FlowStats::marks`.
pub mod flow_mark {
    /// A traced socket owns one end: ship this flow's segments.
    pub const TRACED: u64 = 1;
    /// A socket of this flow closed: ship every later segment (they are not in its counters).
    pub const CLOSED: u64 = 2;
    /// A socket outside the pid/comm filters owns one end.
    pub const IGNORED: u64 = 4;
}

/// Where the classifier saw a segment.
pub mod hook {
    pub const INGRESS: u8 = 0;
    pub const EGRESS: u8 = 1;
}

/// One TCP segment seen by the classifier.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentEvent {
    pub header: EventHeader,
    pub key: FlowKey,
    pub seq: u32,
    pub ack: u32,
    pub ifindex: u32,
    /// TCP payload length.
    pub len: u32,
    pub win: u16,
    pub flags: u8,
    pub hook: u8,
    /// The sender: endpoint index in `key`.
    pub from: u8,
    /// 1 when a socket of this flow had closed: the segment is not in the
    /// counters its close event carried.
    pub late: u8,
    /// Payload bytes that follow (PAYLOAD events only).
    pub captured: u16,
    /// Where in the payload the captured bytes start (PAYLOAD events only):
    /// userspace may ask for bytes from the middle of a segment on.
    pub head_off: u32,
    /// Each endpoint's `syn_seen` value and ISN, as the flow's record has
    /// them (PAYLOAD events only): SYNs do not cross the ring buffer unless
    /// every segment does, and protocol detection needs the handshake.
    pub syn: [u8; 2],
    pub _pad2: [u8; 2],
    pub isn: [u32; 2],
}

pub const MAX_CAPTURE: usize = 2048;

/// Payload heads a flow's direction ships before userspace says
/// what it wants: enough for a short exchange that ends before userspace
/// has read its first bytes, few enough that a bulk transfer costs nothing.
pub const DEFAULT_HEADS: u32 = 16;

/// What userspace wants of a flow's payload, per direction (endpoint index
/// of the sender), in the `WANTS` map. Flows without an entry ship their
/// first `DEFAULT_HEADS` payload heads per direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Want {
    /// With `want::FROM`: the sequence number of the first byte wanted.
    pub from_seq: [u32; 2],
    pub mode: [u8; 2],
    pub _pad: [u8; 2],
}

/// `Want::mode` values.
pub mod want {
    /// As if there were no entry.
    pub const DEFAULT: u8 = 0;
    /// Ship every segment that carries bytes at or after `from_seq`.
    pub const FROM: u8 = 1;
    /// Ship no payload heads.
    pub const NONE: u8 = 2;
}

/// A segment and the head of its payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadEvent {
    pub segment: SegmentEvent,
    pub data: [u8; MAX_CAPTURE],
}

/// A socket's transition to CLOSE and its flow's counters at that moment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloseEvent {
    pub state: StateEvent,
    pub stats: FlowStats,
    /// 1 when the flow had a record (its counters are meaningful).
    pub has_stats: u32,
    /// The closing socket's own retransmission count (`total_retrans`), read
    /// when the flow had a record: it takes the place of the last one the
    /// retransmit hook copied into the flow.
    pub retransmits: u32,
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
    pub const COMMS: u32 = 4;
    pub const LOCAL_PORTS: u32 = 8;
    pub const REMOTE_PORTS: u32 = 16;
    pub const IPV4_ONLY: u32 = 32;
    pub const IPV6_ONLY: u32 = 64;
    /// Ship every segment of traced flows (`--events`, `--diagram`).
    pub const ALL_SEGMENTS: u32 = 128;
}

/// The `PORTS` map's port sets, each a bitmap of every port: which ports are
/// traced, and how.
pub mod port_set {
    /// Traced in any way: the classifier's gate.
    pub const ANY: u32 = 0;
    /// `--port`: either end.
    pub const EITHER: u32 = 1;
    /// `-L`: the local end.
    pub const LOCAL: u32 = 2;
    /// `-D`: the remote end.
    pub const REMOTE: u32 = 3;
    pub const COUNT: u32 = 4;
    /// 64-bit words in one set: a bit for each of the 65,536 ports.
    pub const WORDS: usize = 1024;
}

/// One port set: bit `p % 64` of word `p / 64` is port `p`.
pub type PortBits = [u64; port_set::WORDS];

/// Where the running kernel keeps a socket's protocol and endpoints, in bytes
/// from the start of `struct sock`, read from its BTF by userspace before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockLayout {
    pub protocol: u32,
    pub family: u32,
    /// Local port, host order; 0 once the socket released its port on close.
    pub num: u32,
    /// Local port, network order (`inet_sock.inet_sport`: it keeps its value
    /// on close, but lies past `struct sock`, so costs a helper call).
    pub sport: u32,
    /// Remote port, network order.
    pub dport: u32,
    pub daddr: u32,
    pub rcv_saddr: u32,
    pub v6_daddr: u32,
    pub v6_rcv_saddr: u32,
    /// `sk_txhash`: random per connection, so a socket reborn at the same
    /// address with the same ports is still told apart.
    pub txhash: u32,
    /// `tcp_sock.total_retrans`: the socket's own count of retransmitted
    /// segments, what TCP_INFO reports (past `struct sock`: a helper call).
    pub total_retrans: u32,
}

pub const IPPROTO_TCP: u16 = 6;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data with explicit padding; any bit pattern is valid.
    unsafe impl aya::Pod for super::Task {}
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::StateEvent {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowStats {}
    unsafe impl aya::Pod for super::SegmentEvent {}
    unsafe impl aya::Pod for super::PayloadEvent {}
    unsafe impl aya::Pod for super::CloseEvent {}
    unsafe impl aya::Pod for super::OwnerEvent {}
    unsafe impl aya::Pod for super::Want {}
    unsafe impl aya::Pod for super::SockLayout {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<StateEvent>(), 104);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<DirCounters>(), 80);
        assert_eq!(size_of::<FlowStats>(), 168);
        assert_eq!(size_of::<SegmentEvent>(), 96);
        assert_eq!(size_of::<Want>(), 12);
        assert_eq!(size_of::<CloseEvent>(), 280);
        assert_eq!(size_of::<OwnerEvent>(), 48);
    }

    #[test]
    fn both_directions_share_one_key() {
        let a = [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let (k1, i1) = FlowKey::new(AF_INET, a, 8080, a, 40000);
        let (k2, i2) = FlowKey::new(AF_INET, a, 40000, a, 8080);
        assert_eq!(k1, k2);
        assert_eq!((i1, i2), (0, 1));
        assert_eq!(k1.port, [8080, 40000]);
    }

    #[test]
    fn v4_mapped_sockets_key_like_their_ipv4_packets() {
        let mut mapped = [0u8; 16];
        mapped[10..].copy_from_slice(&[0xff, 0xff, 127, 0, 0, 1]);
        let v4 = [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let (k, local) = FlowKey::of_socket(AF_INET6, mapped, 8080, mapped, 40000);
        assert_eq!((k, local), FlowKey::new(AF_INET, v4, 8080, v4, 40000));
        assert_eq!(k.family, AF_INET);
    }
}
