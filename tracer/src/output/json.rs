//! One JSON object per line, keys as `shared/DESIGN.md` specifies.
use std::fmt::Write;

use tracer_common::FLAG_NAMES;

use crate::{
    clock::WallClock,
    connection::Connection,
    event::{Segment, StateChange},
    output::{Summary, ip, micros, num},
};

/// The socket address is a kernel pointer: a string, as JSON numbers lose
/// its low bits. `{:#x}`'s form, written without `fmt` (one per state line
/// and per record).
fn sock(out: &mut String, sock: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (64 - sock.leading_zeros()).div_ceil(4).max(1) as usize;
    let mut buf = *b"\"0x0000000000000000\"";
    for i in 0..digits {
        buf[2 + digits - i] = HEX[(sock >> (4 * i) & 0xf) as usize];
    }
    buf[3 + digits] = b'"';
    out.push_str(std::str::from_utf8(&buf[..4 + digits]).expect("ASCII"));
}

pub fn state(clock: &WallClock, s: &StateChange, out: &mut String) {
    let p = s.process();
    out.push_str("{\"type\":\"state\",\"ts\":\"");
    clock.rfc3339(s.ts_ns, out);
    out.push('"');
    key(out, "sock");
    sock(out, s.sock);
    key(out, "pid");
    num(out, p.pid);
    key(out, "comm");
    string(out, p.comm());
    key(out, "family");
    plain(out, s.family.name());
    endpoints(out, (s.laddr, s.lport), (s.raddr, s.rport));
    key(out, "old");
    plain(out, s.old.name());
    key(out, "new");
    plain(out, s.new.name());
    out.push('}');
}

pub fn packet(clock: &WallClock, iface: &str, seg: &Segment, out: &mut String) {
    out.push_str("{\"type\":\"packet\",\"ts\":\"");
    clock.rfc3339(seg.ts_ns, out);
    out.push('"');
    key(out, "iface");
    string(out, iface);
    key(out, "hook");
    plain(out, seg.hook.name());
    let ((s, sp), (d, dp)) = (seg.src(), seg.dst());
    key(out, "saddr");
    quoted_ip(out, s);
    key(out, "sport");
    num(out, sp);
    key(out, "daddr");
    quoted_ip(out, d);
    key(out, "dport");
    num(out, dp);
    key(out, "seq");
    num(out, seg.seq);
    key(out, "ack");
    num(out, seg.ack);
    key(out, "flags");
    let set = FLAG_NAMES.iter().enumerate().filter(|(i, _)| seg.flags & (1 << i) != 0);
    array(out, set, |out, (_, name)| plain(out, name));
    key(out, "win");
    num(out, seg.win);
    key(out, "len");
    num(out, seg.len);
    out.push('}');
}

/// `,"name":` (the first key of an object is written by hand).
#[inline(always)]
pub(crate) fn key(out: &mut String, name: &str) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
}

/// `"s"` for strings that need no escaping (names this program chose).
#[inline(always)]
pub(crate) fn plain(out: &mut String, s: &str) {
    out.push('"');
    out.push_str(s);
    out.push('"');
}

#[inline(always)]
fn quoted_ip(out: &mut String, addr: std::net::IpAddr) {
    out.push('"');
    ip(out, addr);
    out.push('"');
}

/// `,"laddr":..,"lport":..,"raddr":..,"rport":..`, as states and connections share them.
#[inline(always)]
fn endpoints(out: &mut String, local: (std::net::IpAddr, u16), remote: (std::net::IpAddr, u16)) {
    for ((addr, port), (a, p)) in [(local, ("laddr", "lport")), (remote, ("raddr", "rport"))] {
        key(out, a);
        quoted_ip(out, addr);
        key(out, p);
        num(out, port);
    }
}

#[inline(always)]
fn pair(out: &mut String, name: &str, tx: u64, rx: u64) {
    key(out, name);
    tx_rx(out, tx, rx, num);
}

/// `{"tx":..,"rx":..}`, each direction written by `each`.
#[inline(always)]
pub(crate) fn tx_rx<T>(out: &mut String, tx: T, rx: T, mut each: impl FnMut(&mut String, T)) {
    out.push_str("{\"tx\":");
    each(out, tx);
    out.push_str(",\"rx\":");
    each(out, rx);
    out.push('}');
}

/// `[..]`, each item written by `each`.
pub(crate) fn array<T>(out: &mut String, items: impl IntoIterator<Item = T>, mut each: impl FnMut(&mut String, T)) {
    out.push('[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        each(out, item);
    }
    out.push(']');
}

/// `{"name":n,..}`: counts by name.
pub(crate) fn counts<'a>(out: &mut String, named: impl IntoIterator<Item = (&'a str, u64)>) {
    out.push('{');
    for (i, (name, n)) in named.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        plain(out, name);
        out.push(':');
        num(out, n);
    }
    out.push('}');
}

/// `{"FIN":n,..}` in `FLAG_NAMES` order: each key written whole, as one
/// of these is printed twice for every socket.
fn flag_counts(out: &mut String, t: &crate::connection::Traffic) {
    const KEYS: [&str; 8] = [
        "{\"FIN\":",
        ",\"SYN\":",
        ",\"RST\":",
        ",\"PSH\":",
        ",\"ACK\":",
        ",\"URG\":",
        ",\"ECE\":",
        ",\"CWR\":",
    ];
    for (k, n) in KEYS.into_iter().zip(t.flags) {
        out.push_str(k);
        num(out, n);
    }
    out.push('}');
}

/// Built piece by piece rather than with `write!`: one of these is printed
/// for every socket, and formatting machinery was most of the tracer's time.
pub fn connection(clock: &WallClock, c: &Connection, redact: bool, out: &mut String) {
    out.push_str("{\"type\":\"connection\",\"sock\":");
    sock(out, c.sock);
    key(out, "pid");
    num(out, c.process.pid);
    key(out, "comm");
    string(out, c.process.comm());
    key(out, "role");
    plain(out, c.role.name());
    key(out, "family");
    plain(out, c.family.name());
    endpoints(out, (c.laddr, c.lport), (c.raddr, c.rport));
    key(out, "start");
    out.push('"');
    clock.rfc3339(c.start_ns, out);
    out.push('"');
    key(out, "duration_us");
    micros(out, c.duration_ns);
    key(out, "handshake_us");
    match c.handshake_ns {
        Some(ns) => micros(out, ns),
        None => out.push_str("null"),
    }
    key(out, "states");
    array(out, &c.states, |out, s| {
        out.push_str("{\"state\":");
        plain(out, s.state.name());
        key(out, "at_us");
        micros(out, s.at_ns);
        out.push('}');
    });
    if c.counted {
        pair(out, "packets", c.tx.packets, c.rx.packets);
        pair(out, "bytes", c.tx.bytes, c.rx.bytes);
        key(out, "flags");
        tx_rx(out, &c.tx, &c.rx, flag_counts);
        key(out, "retransmits");
        num(out, c.retransmits);
    } else {
        // Unknown is not zero: a consumer summing bytes must see the gap.
        out.push_str(",\"packets\":null,\"bytes\":null,\"flags\":null,\"retransmits\":null");
    }
    key(out, "close");
    plain(out, c.close.name());
    key(out, "protocol");
    plain(out, c.protocol);
    if let Some(app) = &c.app {
        super::app::json(out, app, redact, c.close != crate::connection::CloseKind::OpenAtExit);
    }
    out.push('}');
}

pub fn summary(s: &Summary, out: &mut String) {
    let _ = write!(
        out,
        "{{\"type\":\"summary\",\"events\":{},\"dropped\":{},\"evicted\":{},\"connections\":{},\"decode_errors\":{},\"ring_bytes\":{},\"payload_gaps\":{},\"payload_requests_refused\":{},\"missed_state_changes\":{},\"missed_retransmits\":{},\"unfinished_sockets\":{},\"uncounted_sockets\":{}}}",
        s.events,
        s.dropped,
        s.evicted,
        s.connections,
        s.decode_errors,
        s.ring_bytes,
        s.payload_gaps,
        s.payload_requests_refused,
        s.missed_state_changes,
        s.missed_retransmits,
        s.unfinished_sockets,
        s.uncounted_sockets
    );
}

/// A JSON string literal: quotes, backslashes and control characters escaped.
pub fn string(out: &mut String, s: &str) {
    out.push('"');
    // Most strings (commands, methods, paths) need no escape: pushed whole.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::{change, sample_connection};
    use tracer_common::tcp_state::*;

    fn keys(v: &serde_json::Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort();
        k
    }

    fn sorted(mut v: Vec<&str>) -> Vec<&str> {
        v.sort();
        v
    }

    #[test]
    fn a_state_record_has_exactly_the_design_keys() {
        let clock = WallClock::fixed(1_000, 1_795_313_100_000_000_000);
        let mut line = String::new();
        state(&clock, &change("::1", "::1", SYN_SENT, ESTABLISHED), &mut line);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            keys(&v),
            sorted(vec![
                "type", "ts", "sock", "pid", "comm", "family", "laddr", "lport", "raddr", "rport", "old", "new"
            ])
        );
        assert_eq!(v["ts"], "2026-11-22T02:05:00.001500000Z");
        assert_eq!(v["sock"], "0xffff88800abc0000");
        assert_eq!(v["comm"], "cu\"rl");
        assert_eq!(v["family"], "ipv6");
        assert_eq!(v["lport"], 43210);
        assert_eq!(v["old"], "SYN_SENT");
        assert_eq!(v["new"], "ESTABLISHED");
    }

    #[test]
    fn a_connection_record_has_the_design_keys_and_values() {
        let clock = WallClock::fixed(1_000, 1_795_313_100_000_000_000);
        let mut line = String::new();
        connection(&clock, &sample_connection(), true, &mut line);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            keys(&v),
            sorted(vec![
                "type",
                "sock",
                "pid",
                "comm",
                "role",
                "family",
                "laddr",
                "lport",
                "raddr",
                "rport",
                "start",
                "duration_us",
                "handshake_us",
                "states",
                "packets",
                "bytes",
                "flags",
                "retransmits",
                "close",
                "protocol"
            ])
        );
        assert_eq!(v["start"], "2026-11-22T02:05:00.000000000Z");
        assert_eq!(v["duration_us"], 61.0);
        assert_eq!(v["handshake_us"], 20.5);
        assert_eq!(v["states"][4]["state"], "TIME_WAIT");
        assert_eq!(v["states"][1]["at_us"], 20.0);
        assert_eq!(v["packets"]["tx"], 5);
        assert_eq!(v["packets"]["rx"], 3);
        assert_eq!(v["bytes"]["tx"], 37);
        assert_eq!(v["bytes"]["rx"], 40);
        assert_eq!(v["flags"]["tx"]["ACK"], 4);
        assert_eq!(v["flags"]["rx"]["SYN"], 1);
        assert_eq!(v["flags"]["rx"]["FIN"], 1);
        assert_eq!(v["close"], "local_fin");
        assert_eq!(v["role"], "client");
        assert_eq!(v["protocol"], "unknown");
    }

    #[test]
    fn a_packet_record_lists_its_flags() {
        let clock = WallClock::fixed(0, 0);
        let mut line = String::new();
        packet(&clock, "lo", &sample_connection().segments[1], &mut line);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            keys(&v),
            sorted(vec![
                "type", "ts", "iface", "hook", "saddr", "sport", "daddr", "dport", "seq", "ack", "flags", "win", "len"
            ])
        );
        assert_eq!(v["flags"], serde_json::json!(["SYN", "ACK"]));
        assert_eq!((v["sport"].as_u64(), v["dport"].as_u64()), (Some(8080), Some(43210)));
    }

    #[test]
    fn flag_counts_name_every_flag_in_order() {
        let t = crate::connection::Traffic {
            flags: [1, 2, 3, 4, 5, 6, 7, 8],
            ..Default::default()
        };
        let (mut fast, mut named) = (String::new(), String::new());
        flag_counts(&mut fast, &t);
        counts(&mut named, FLAG_NAMES.iter().copied().zip(t.flags));
        assert_eq!(fast, named);
    }

    #[test]
    fn socket_addresses_are_hex_as_fmt_writes_them() {
        for v in [0, 1, 0xf, 0x10, 0xffff_8880_0abc_0000, u64::MAX] {
            let mut s = String::new();
            sock(&mut s, v);
            assert_eq!(s, format!("\"{v:#x}\""));
        }
    }

    #[test]
    fn strings_escape_control_characters() {
        let mut s = String::new();
        string(&mut s, "a\"b\\c\n\u{1}");
        assert_eq!(s, r#""a\"b\\c\n\u0001""#);
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "a\"b\\c\n\u{1}");
    }

    #[test]
    fn the_summary_counts_every_loss() {
        let mut s = String::new();
        summary(
            &Summary {
                events: 5,
                dropped: 2,
                evicted: 1,
                connections: 3,
                decode_errors: 4,
                ring_bytes: 640,
                payload_gaps: 6,
                payload_requests_refused: 7,
                missed_state_changes: 8,
                missed_retransmits: 9,
                unfinished_sockets: 10,
                uncounted_sockets: 11,
            },
            &mut s,
        );
        assert_eq!(
            s,
            r#"{"type":"summary","events":5,"dropped":2,"evicted":1,"connections":3,"decode_errors":4,"ring_bytes":640,"payload_gaps":6,"payload_requests_refused":7,"missed_state_changes":8,"missed_retransmits":9,"unfinished_sockets":10,"uncounted_sockets":11}"#
        );
    }
}
