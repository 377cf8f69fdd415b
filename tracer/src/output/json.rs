//! One JSON object per line, keys as `shared/DESIGN.md` specifies.
use std::fmt::Write;

use crate::{clock::WallClock, event::StateChange, output::Summary};

pub fn state(clock: &WallClock, s: &StateChange, out: &mut String) {
    let p = s.process();
    out.push_str("{\"type\":\"state\",\"ts\":\"");
    clock.rfc3339(s.ts_ns, out);
    // The socket address is a kernel pointer: a string, as JSON numbers lose its low bits.
    let _ = write!(
        out,
        "\",\"sock\":\"{:#x}\",\"pid\":{},\"comm\":",
        s.sock, p.pid
    );
    string(out, p.comm());
    let _ = write!(
        out,
        ",\"family\":\"{}\",\"laddr\":\"{}\",\"lport\":{},\"raddr\":\"{}\",\"rport\":{},\"old\":\"{}\",\"new\":\"{}\"}}",
        s.family.name(),
        s.laddr,
        s.lport,
        s.raddr,
        s.rport,
        s.old.name(),
        s.new.name()
    );
}

pub fn summary(s: &Summary, out: &mut String) {
    let _ = write!(
        out,
        "{{\"type\":\"summary\",\"events\":{},\"dropped\":{},\"evicted\":{},\"connections\":{},\"decode_errors\":{}}}",
        s.events, s.dropped, s.evicted, s.connections, s.decode_errors
    );
}

/// A JSON string literal: quotes, backslashes and control characters escaped.
pub fn string(out: &mut String, s: &str) {
    out.push('"');
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
    use crate::output::tests::change;
    use tracer_common::tcp_state::*;

    #[test]
    fn a_state_record_has_exactly_the_design_keys() {
        let clock = WallClock::fixed(1_000, 1_795_313_100_000_000_000);
        let mut line = String::new();
        state(
            &clock,
            &change("::1", "::1", SYN_SENT, ESTABLISHED),
            &mut line,
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = [
            "type", "ts", "sock", "pid", "comm", "family", "laddr", "lport", "raddr", "rport",
            "old", "new",
        ];
        expected.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, expected);
        assert_eq!(v["ts"], "2026-11-22T02:05:00.001500000Z");
        assert_eq!(v["sock"], "0xffff88800abc0000");
        assert_eq!(v["comm"], "cu\"rl");
        assert_eq!(v["family"], "ipv6");
        assert_eq!(v["lport"], 43210);
        assert_eq!(v["old"], "SYN_SENT");
        assert_eq!(v["new"], "ESTABLISHED");
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
            },
            &mut s,
        );
        assert_eq!(
            s,
            r#"{"type":"summary","events":5,"dropped":2,"evicted":1,"connections":3,"decode_errors":4}"#
        );
    }
}
