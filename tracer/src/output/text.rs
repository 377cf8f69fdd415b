//! Aligned, readable lines: a tcplife-style line per connection, and in
//! `--events` mode a line per state change and per segment.
use std::{fmt::Write, net::IpAddr};

use tracer_common::FLAG_NAMES;

use crate::{
    clock::WallClock,
    connection::Connection,
    event::{Segment, StateChange},
    output::{Layout, Summary},
};

const ENDPOINT_WIDTH: usize = 22;

fn addr_width(layout: &Layout) -> usize {
    if layout.wide { 39 } else { 15 }
}

pub fn connection_header(layout: &Layout, out: &mut String) {
    if layout.time {
        out.push_str("TIME(UTC) ");
    }
    let w = addr_width(layout);
    let _ = write!(
        out,
        "{:<7} {:<15} {:<w$} {:>5} {:<w$} {:>5} {:<6} {:>10} {:>10} {:>10} {:<12} PROTO",
        "PID", "COMM", "LADDR", "LPORT", "RADDR", "RPORT", "ROLE", "TX_BYTES", "RX_BYTES", "MS", "CLOSE"
    );
}

pub fn connection(clock: &WallClock, layout: &Layout, c: &Connection, redact: bool, out: &mut String) {
    if layout.time {
        let mut t = String::new();
        clock.time_of_day(c.start_ns + c.duration_ns, &mut t);
        let _ = write!(out, "{:<10}", &t[..8]);
        out.push(' ');
    }
    let w = addr_width(layout);
    let _ = write!(
        out,
        "{:<7} {:<15} {:<w$} {:>5} {:<w$} {:>5} {:<6} {:>10} {:>10} {:>10.3} {:<12} {}",
        c.process.pid,
        c.process.comm(),
        c.laddr.to_string(),
        c.lport,
        c.raddr.to_string(),
        c.rport,
        c.role.name(),
        Counted(c.counted, c.tx.bytes),
        Counted(c.counted, c.rx.bytes),
        c.duration_ns as f64 / 1e6,
        c.close.name(),
        c.protocol
    );
    if let Some(app) = &c.app {
        super::app::text(out, app, redact);
    }
}

/// A kernel count, or `-` where the kernel's flow table lost it.
pub struct Counted(pub bool, pub u64);

impl std::fmt::Display for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 { self.1.fmt(f) } else { "-".fmt(f) }
    }
}

pub fn state(clock: &WallClock, s: &StateChange, out: &mut String) {
    out.push_str("state  ");
    clock.time_of_day(s.ts_ns, out);
    let p = s.process();
    let _ = write!(out, " {:>7} {:<15} ", p.pid, p.comm());
    endpoint(out, s.laddr, s.lport);
    out.push(' ');
    endpoint(out, s.raddr, s.rport);
    let _ = write!(out, " {} -> {}", s.old, s.new);
}

pub fn packet(clock: &WallClock, iface: &str, seg: &Segment, out: &mut String) {
    out.push_str("packet ");
    clock.time_of_day(seg.ts_ns, out);
    let _ = write!(out, " {iface:<7} {:<7} ", seg.hook.name());
    let (s, sp) = seg.src();
    let (d, dp) = seg.dst();
    endpoint(out, s, sp);
    out.push_str(" > ");
    endpoint(out, d, dp);
    out.push_str(" [");
    flags(out, seg.flags, ",");
    let _ = write!(out, "] seq={} ack={} win={} len={}", seg.seq, seg.ack, seg.win, seg.len);
}

/// Names of the flags set in `bits`, joined by `sep`.
pub fn flags(out: &mut String, bits: u8, sep: &str) {
    let mut first = true;
    for (i, name) in FLAG_NAMES.iter().enumerate() {
        if bits & (1 << i) != 0 {
            if !first {
                out.push_str(sep);
            }
            out.push_str(name);
            first = false;
        }
    }
}

/// `addr:port` (`[addr]:port` for IPv6), padded to the column width.
pub fn endpoint(out: &mut String, addr: IpAddr, port: u16) {
    let start = out.len();
    let _ = match addr {
        IpAddr::V4(a) => write!(out, "{a}:{port}"),
        IpAddr::V6(a) => write!(out, "[{a}]:{port}"),
    };
    let used = out.len() - start;
    out.extend(std::iter::repeat_n(' ', ENDPOINT_WIDTH.saturating_sub(used)));
}

pub fn summary(s: &Summary, out: &mut String) {
    let _ = write!(
        out,
        "# {} connections; {} events ({} bytes) read, {} dropped (ring buffer full), {} sockets evicted, {} undecodable, {} payload gaps, {} payload requests refused, {} state changes and {} retransmissions missed, {} sockets unfinished, {} sockets uncounted",
        s.connections,
        s.events,
        s.ring_bytes,
        s.dropped,
        s.evicted,
        s.decode_errors,
        s.payload_gaps,
        s.payload_requests_refused,
        s.missed_state_changes,
        s.missed_retransmits,
        s.unfinished_sockets,
        s.uncounted_sockets
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::{change, sample_connection};
    use tracer_common::tcp_state::*;

    #[test]
    fn a_connection_is_one_line_under_its_header() {
        let clock = WallClock::fixed(1_000, 1_795_313_100_000_000_000);
        let layout = Layout::default();
        let (mut header, mut line) = (String::new(), String::new());
        connection_header(&layout, &mut header);
        connection(&clock, &layout, &sample_connection(), true, &mut line);
        assert_eq!(
            line,
            "4242    cu\"rl           127.0.0.1       43210 127.0.0.1        8080 client         37         40      0.061 local_fin    unknown"
        );
        for col in ["LPORT", "RPORT", "TX_BYTES", "RX_BYTES", "MS"] {
            let end = header.find(col).unwrap() + col.len();
            assert!(line.as_bytes()[end - 1].is_ascii_digit(), "{col} right-aligned");
        }
        assert_eq!(header.find("CLOSE"), line.find("local_fin"));
    }

    #[test]
    fn wide_and_time_columns() {
        let clock = WallClock::fixed(1_000, 1_795_313_100_000_000_000);
        let layout = Layout { wide: true, time: true };
        let mut line = String::new();
        connection(&clock, &layout, &sample_connection(), true, &mut line);
        assert!(line.starts_with("02:05:00   4242"), "{line}");
        assert!(line.contains(&format!("{:<39} 43210", "127.0.0.1")), "{line}");
    }

    #[test]
    fn a_transition_is_one_aligned_line() {
        let clock = WallClock::fixed(1_000, 1_795_313_100_000_000_000);
        let mut line = String::new();
        state(&clock, &change("127.0.0.1", "127.0.0.1", CLOSE, SYN_SENT), &mut line);
        assert_eq!(
            line,
            "state  02:05:00.001500    4242 cu\"rl           127.0.0.1:43210        127.0.0.1:8080         CLOSE -> SYN_SENT"
        );
    }

    #[test]
    fn a_segment_line_names_its_flags_and_direction() {
        let clock = WallClock::fixed(0, 0);
        let seg = &sample_connection().segments[1];
        let mut line = String::new();
        packet(&clock, "lo", seg, &mut line);
        assert_eq!(
            line,
            "packet 00:00:00.000021 lo      egress  127.0.0.1:8080         > 127.0.0.1:43210        [SYN,ACK] seq=5000 ack=1001 win=512 len=0"
        );
        let mut v6 = String::new();
        endpoint(&mut v6, "fd00::2".parse().unwrap(), 80);
        assert_eq!(v6.trim_end(), "[fd00::2]:80");
    }
}
