//! Ring-buffer records to `Event`s. Records are read in place; nothing is
//! copied beyond the fixed-size event itself.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracer_common::{
    AF_INET, AF_INET6, CloseEvent, EventHeader, FlowStats, MAX_CAPTURE, OwnerEvent, SegmentEvent, StateEvent,
    header_flag, hook, kind, syn_seen,
};

use crate::{
    event::{Close, Event, Family, Handshake, Hook, Process, Segment, StateChange},
    state::TcpState,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("record of kind {kind} has {len} bytes, expected {expected}")]
    Length { kind: u32, len: usize, expected: usize },
    #[error("unknown record kind {0}")]
    Kind(u32),
    #[error("unknown address family {0}")]
    Family(u16),
}

/// The flow's counters with the closing socket's own retransmission count in
/// its direction. The larger of the two: a failed read in the kernel leaves 0.
fn with_own_retransmits(raw: CloseEvent, state: &StateChange) -> FlowStats {
    let mut stats = raw.stats;
    let own = &mut stats.dir[state.flow().1 & 1].retransmits;
    *own = (*own).max(raw.retransmits);
    stats
}

pub fn decode(record: &[u8]) -> Result<Event<'_>, DecodeError> {
    let header: EventHeader = read(record).ok_or(DecodeError::Short(record.len()))?;
    match header.kind {
        kind::STATE => state_change(&exact::<StateEvent>(record, header.kind)?).map(Event::State),
        kind::CLOSE => {
            let raw: CloseEvent = exact(record, header.kind)?;
            let state = state_change(&raw.state)?;
            Ok(Event::Close(Close {
                stats: (raw.has_stats != 0).then(|| with_own_retransmits(raw, &state)),
                state,
            }))
        }
        kind::SEGMENT => Ok(Event::Segment(
            segment(&exact::<SegmentEvent>(record, header.kind)?),
            None,
        )),
        kind::PAYLOAD => {
            // A segment followed by as many payload bytes as were captured.
            let head: SegmentEvent = exact(record, header.kind)?;
            let data = &record[size_of::<SegmentEvent>()..];
            let n = usize::from(head.captured).min(data.len()).min(MAX_CAPTURE);
            Ok(Event::Segment(segment(&head), Some(&data[..n])))
        }
        kind::OWNER => {
            let raw: OwnerEvent = exact(record, header.kind)?;
            Ok(Event::Owner {
                sock: raw.sock,
                process: Process::new(raw.owner.pid, raw.owner.comm),
            })
        }
        other => Err(DecodeError::Kind(other)),
    }
}

/// A record of kind `kind` read as a `T`, which it must be large enough for.
fn exact<T: aya::Pod>(record: &[u8], kind: u32) -> Result<T, DecodeError> {
    read(record).ok_or(DecodeError::Length {
        kind,
        len: record.len(),
        expected: size_of::<T>(),
    })
}

fn segment(raw: &SegmentEvent) -> Segment {
    Segment {
        ts_ns: raw.header.ts_ns,
        key: raw.key,
        from: usize::from(raw.from & 1),
        seq: raw.seq,
        ack: raw.ack,
        ifindex: raw.ifindex,
        hook: if raw.hook == hook::EGRESS {
            Hook::Egress
        } else {
            Hook::Ingress
        },
        flags: raw.flags,
        win: raw.win,
        len: raw.len,
        head_off: raw.head_off,
        late: raw.late != 0,
        handshake: handshake(raw),
    }
}

fn handshake(raw: &SegmentEvent) -> Handshake {
    Handshake {
        isn: [0, 1].map(|i| (u32::from(raw.syn[i]) != syn_seen::NO).then_some(raw.isn[i])),
        opener: (0..2).find(|&i| u32::from(raw.syn[i]) == syn_seen::OPENER),
    }
}

/// A `T` from the start of `bytes`, when there are enough of them.
fn read<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= size_of::<T>())
        // SAFETY: length checked; `T: Pod` accepts any bit pattern; unaligned read.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

fn state_change(raw: &StateEvent) -> Result<StateChange, DecodeError> {
    let (family, laddr, raddr) = match raw.family {
        AF_INET => (Family::Ipv4, v4(&raw.saddr), v4(&raw.daddr)),
        AF_INET6 => (
            Family::Ipv6,
            IpAddr::V6(Ipv6Addr::from(raw.saddr)),
            IpAddr::V6(Ipv6Addr::from(raw.daddr)),
        ),
        other => return Err(DecodeError::Family(other)),
    };
    Ok(StateChange {
        ts_ns: raw.header.ts_ns,
        sock: raw.sock,
        family,
        laddr,
        lport: raw.sport,
        raddr,
        rport: raw.dport,
        old: TcpState(raw.oldstate),
        new: TcpState(raw.newstate),
        owner: (raw.owner.pid != 0).then(|| Process::new(raw.owner.pid, raw.owner.comm)),
        current: Process::new(raw.current.pid, raw.current.comm),
        recovered: raw.header.flags & header_flag::RECOVERED != 0,
    })
}

fn v4(addr: &[u8; 16]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{Task, tcp_state};

    pub fn comm(name: &str) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..name.len()].copy_from_slice(name.as_bytes());
        c
    }

    fn bytes_of<T: aya::Pod>(v: &T) -> Vec<u8> {
        // SAFETY: Pod types are plain bytes.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn raw_v4() -> StateEvent {
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        StateEvent {
            header: EventHeader {
                kind: kind::STATE,
                flags: 0,
                ts_ns: 42,
            },
            sock: 0xffff_8880_1234_5678,
            saddr,
            daddr,
            sport: 43210,
            dport: 8080,
            family: AF_INET,
            oldstate: tcp_state::CLOSE,
            newstate: tcp_state::SYN_SENT,
            owner: Task {
                pid: 77,
                comm: comm("curl"),
            },
            current: Task {
                pid: 77,
                comm: comm("curl"),
            },
        }
    }

    #[test]
    fn decodes_an_ipv4_transition() {
        let Ok(Event::State(s)) = decode(&bytes_of(&raw_v4())) else {
            panic!()
        };
        assert_eq!(s.ts_ns, 42);
        assert_eq!(s.sock, 0xffff_8880_1234_5678);
        assert_eq!(s.family, Family::Ipv4);
        assert_eq!(s.laddr.to_string(), "127.0.0.1");
        assert_eq!(s.raddr.to_string(), "10.1.2.3");
        assert_eq!((s.lport, s.rport), (43210, 8080));
        assert_eq!((s.old.name(), s.new.name()), ("CLOSE", "SYN_SENT"));
        assert_eq!(s.process().pid, 77);
        assert_eq!(s.process().comm(), "curl");
    }

    #[test]
    fn decodes_ipv6_and_an_unknown_owner() {
        let mut raw = raw_v4();
        raw.family = AF_INET6;
        raw.saddr = Ipv6Addr::LOCALHOST.octets();
        raw.daddr = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
        raw.owner = Task::default();
        raw.current = Task {
            pid: 9,
            comm: comm("ksoftirqd/0"),
        };
        let Ok(Event::State(s)) = decode(&bytes_of(&raw)) else {
            panic!()
        };
        assert_eq!(s.family, Family::Ipv6);
        assert_eq!(s.laddr.to_string(), "::1");
        assert_eq!(s.raddr.to_string(), "fd00::2");
        assert_eq!(s.owner, None);
        assert_eq!(s.process().comm(), "ksoftirqd/0");
    }

    #[test]
    fn decodes_a_close_with_counters_and_a_payload_segment() {
        let mut close = CloseEvent {
            state: raw_v4(),
            ..Default::default()
        };
        close.state.header.kind = kind::CLOSE;
        close.has_stats = 1;
        close.stats.dir[1].bytes = 1234;
        close.stats.dir[0].retransmits = 2;
        close.stats.dir[1].retransmits = 3;
        close.retransmits = 5;
        let Ok(Event::Close(c)) = decode(&bytes_of(&close)) else {
            panic!()
        };
        let local = c.state.flow().1;
        let stats = c.stats.unwrap();
        assert_eq!(stats.dir[1].bytes, 1234);
        // The socket's own count replaces the hook's in its direction only.
        assert_eq!(stats.dir[local].retransmits, 5);
        assert_eq!(stats.dir[1 - local].retransmits, [2, 3][1 - local]);
        assert_eq!(c.state.lport, 43210);

        let mut data = [0u8; MAX_CAPTURE];
        data[..3].copy_from_slice(b"GET");
        let seg = SegmentEvent {
            header: EventHeader {
                kind: kind::PAYLOAD,
                flags: 0,
                ts_ns: 7,
            },
            from: 1,
            len: 100,
            captured: 3,
            hook: hook::EGRESS,
            ..Default::default()
        };
        let raw = tracer_common::PayloadEvent { segment: seg, data };
        let bytes = bytes_of(&raw);
        let Ok(Event::Segment(_, payload)) = decode(&bytes) else {
            panic!()
        };
        assert_eq!(payload, Some(&b"GET"[..]));
        // As the kernel ships it: the segment and just the captured bytes.
        let mut short = bytes_of(&seg);
        short.extend_from_slice(b"GET");
        let Ok(Event::Segment(s, payload)) = decode(&short) else {
            panic!()
        };
        assert_eq!(payload, Some(&b"GET"[..]));
        assert_eq!((s.from, s.len, s.hook), (1, 100, Hook::Egress));
    }

    #[test]
    fn rejects_short_unknown_and_malformed_records() {
        let bytes = bytes_of(&raw_v4());
        assert_eq!(decode(&bytes[..8]), Err(DecodeError::Short(8)));
        assert!(matches!(decode(&bytes[..40]), Err(DecodeError::Length { len: 40, .. })));
        let mut unknown = raw_v4();
        unknown.header.kind = 99;
        assert_eq!(decode(&bytes_of(&unknown)), Err(DecodeError::Kind(99)));
        let mut family = raw_v4();
        family.family = 1;
        assert_eq!(decode(&bytes_of(&family)), Err(DecodeError::Family(1)));
    }
}
