//! A connection drawn as a ladder between its two endpoints, as one sketches a
//! TCP exchange: one arrow per segment (flags, seq/ack relative to each side's
//! initial sequence number, payload length), time down the left, this
//! socket's state changes beside the arrows.
use std::fmt::Write;

use tracer_common::tcp_flag;

use crate::{
    connection::Connection,
    event::Segment,
    output::text::{endpoint, flags},
};

/// Width of an arrow between the two rails.
const SPAN: usize = 46;
const TIME_WIDTH: usize = 10;
const STATE_WIDTH: usize = 12;

pub fn draw(c: &Connection, redact: bool, out: &mut String) {
    title(c, redact, out);
    rails_header(c, out);
    let mut states = c.states.iter().peekable();
    for seg in &c.segments {
        let at = seg.ts_ns.saturating_sub(c.start_ns);
        while let Some(s) = states.next_if(|s| s.at_ns < at) {
            state_row(s.at_ns, s.state.name(), out);
        }
        arrow_row(c, seg, at, out);
        message_rows(c, seg, redact, out);
    }
    for s in states {
        state_row(s.at_ns, s.state.name(), out);
    }
    if c.segments_omitted > 0 {
        let _ = writeln!(
            out,
            "{:>w$}  ... {} more segments not drawn",
            "",
            c.segments_omitted,
            w = TIME_WIDTH
        );
    }
    out.push('\n');
}

fn title(c: &Connection, redact: bool, out: &mut String) {
    out.push_str("connection ");
    let mut ends = String::new();
    endpoint(&mut ends, c.laddr, c.lport);
    out.push_str(ends.trim_end());
    out.push_str(" <-> ");
    ends.clear();
    endpoint(&mut ends, c.raddr, c.rport);
    out.push_str(ends.trim_end());
    let _ = writeln!(
        out,
        ": {} of pid {} ({}), {}, {:.3} ms, {} B sent, {} B received",
        c.role.name(),
        c.process.pid,
        c.process.comm(),
        c.close.name(),
        c.duration_ns as f64 / 1e6,
        super::text::Counted(c.counted, c.tx.bytes),
        super::text::Counted(c.counted, c.rx.bytes)
    );
    if let Some(app) = &c.app {
        out.push_str(c.protocol);
        out.push(':');
        super::app::text(out, app, redact);
        out.push('\n');
    }
}

fn rails_header(c: &Connection, out: &mut String) {
    let (mut local, mut remote) = (String::new(), String::new());
    endpoint(&mut local, c.laddr, c.lport);
    endpoint(&mut remote, c.raddr, c.rport);
    let (local, remote) = (local.trim_end(), remote.trim_end());
    let _ = writeln!(
        out,
        "{:>tw$}  {:<sw$} {:<lw$}{:>rw$}",
        "ms",
        "state",
        local,
        remote,
        tw = TIME_WIDTH,
        sw = STATE_WIDTH,
        lw = SPAN / 2 + 1,
        rw = SPAN / 2 + 1
    );
}

fn time(at_ns: u64, out: &mut String) {
    let _ = write!(out, "{:>w$.3}", at_ns as f64 / 1e6, w = TIME_WIDTH);
}

fn state_row(at_ns: u64, state: &str, out: &mut String) {
    time(at_ns, out);
    let _ = writeln!(out, "  {state:<sw$} |{:span$}|", "", sw = STATE_WIDTH, span = SPAN);
}

fn arrow_row(c: &Connection, seg: &Segment, at_ns: u64, out: &mut String) {
    time(at_ns, out);
    let _ = write!(out, "  {:<sw$} |", "", sw = STATE_WIDTH);
    let label = label(c, seg);
    let fill = SPAN.saturating_sub(label.len() + 6);
    if seg.from == c.local {
        let _ = write!(out, "-- {label} {}->", "-".repeat(fill));
    } else {
        let _ = write!(out, "<- {label} {}--", "-".repeat(fill));
    }
    out.push_str("|\n");
}

/// Under a segment's arrow, the messages that start in it, on its sender's side.
fn message_rows(c: &Connection, seg: &Segment, redact: bool, out: &mut String) {
    let Some(app) = &c.app else { return };
    let side = if seg.from == c.local {
        app.local
    } else {
        app.local.other()
    };
    for mark in &app.marks {
        if mark.side != side || mark.seq.wrapping_sub(seg.seq) >= seg.len {
            continue;
        }
        let mut label = String::new();
        super::app::mark(&mut label, app, mark, redact);
        let label: String = label.chars().take(SPAN - 4).collect();
        let _ = write!(out, "{:>tw$}  {:<sw$} |", "", "", tw = TIME_WIDTH, sw = STATE_WIDTH);
        if seg.from == c.local {
            let _ = write!(out, "   {label:<w$}", w = SPAN - 3);
        } else {
            let _ = write!(out, "{label:>w$}   ", w = SPAN - 3);
        }
        out.push_str("|\n");
    }
}

/// `SYN,ACK seq=0 ack=1 len=0`: seq relative to the sender's ISN, ack to the receiver's.
fn label(c: &Connection, seg: &Segment) -> String {
    let tx = seg.from == c.local;
    let (own, peer) = if tx { (c.isn.0, c.isn.1) } else { (c.isn.1, c.isn.0) };
    let rel = |v: u32, isn: Option<u32>| isn.map_or(v, |i| v.wrapping_sub(i));
    let mut s = String::new();
    flags(&mut s, seg.flags, ",");
    let _ = write!(s, " seq={}", rel(seg.seq, own));
    if seg.has(tcp_flag::ACK) {
        let _ = write!(s, " ack={}", rel(seg.ack, peer));
    }
    if seg.len > 0 {
        let _ = write!(s, " len={}", seg.len);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::sample_connection;

    #[test]
    fn a_handshake_request_response_and_fin_teardown() {
        let mut out = String::new();
        draw(&sample_connection(), true, &mut out);
        let expected = "\
connection 127.0.0.1:43210 <-> 127.0.0.1:8080: client of pid 4242 (cu\"rl), local_fin, 0.061 ms, 37 B sent, 40 B received
        ms  state        127.0.0.1:43210                   127.0.0.1:8080
     0.000  SYN_SENT     |                                              |
     0.010               |-- SYN seq=0 -------------------------------->|
     0.020               |<- SYN,ACK seq=0 ack=1 -----------------------|
     0.020  ESTABLISHED  |                                              |
     0.021               |-- ACK seq=1 ack=1 -------------------------->|
     0.030               |-- PSH,ACK seq=1 ack=1 len=37 --------------->|
     0.040               |<- PSH,ACK seq=1 ack=38 len=40 ---------------|
     0.050               |-- FIN,ACK seq=38 ack=41 -------------------->|
     0.050  FIN_WAIT1    |                                              |
     0.055  FIN_WAIT2    |                                              |
     0.060               |<- FIN,ACK seq=41 ack=39 ---------------------|
     0.060  TIME_WAIT    |                                              |
     0.061               |-- ACK seq=39 ack=42 ------------------------>|

";
        assert_eq!(out, expected, "\n{out}");
    }
}
