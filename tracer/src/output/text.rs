//! Aligned, readable lines: one per transition.
use std::fmt::Write;

use crate::{clock::WallClock, event::StateChange, output::Summary};

const ENDPOINT_WIDTH: usize = 22;

pub fn state_header(out: &mut String) {
    let _ = write!(
        out,
        "{:<15} {:>7} {:<15} {:<w$} {:<w$} TRANSITION",
        "TIME(UTC)",
        "PID",
        "COMM",
        "LOCAL",
        "REMOTE",
        w = ENDPOINT_WIDTH
    );
}

pub fn state(clock: &WallClock, s: &StateChange, out: &mut String) {
    clock.time_of_day(s.ts_ns, out);
    let p = s.process();
    let _ = write!(out, " {:>7} {:<15} ", p.pid, p.comm());
    endpoint(out, s.laddr, s.lport);
    out.push(' ');
    endpoint(out, s.raddr, s.rport);
    let _ = write!(out, " {} -> {}", s.old, s.new);
}

/// `addr:port` (`[addr]:port` for IPv6), padded to the column width.
fn endpoint(out: &mut String, addr: std::net::IpAddr, port: u16) {
    let start = out.len();
    let _ = match addr {
        std::net::IpAddr::V4(a) => write!(out, "{a}:{port}"),
        std::net::IpAddr::V6(a) => write!(out, "[{a}]:{port}"),
    };
    let used = out.len() - start;
    out.extend(std::iter::repeat_n(
        ' ',
        ENDPOINT_WIDTH.saturating_sub(used),
    ));
}

pub fn summary(s: &Summary, out: &mut String) {
    let _ = write!(
        out,
        "# {} events, {} dropped (ring buffer full), {} undecodable",
        s.events, s.dropped, s.decode_errors
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::change;
    use tracer_common::tcp_state::*;

    #[test]
    fn a_transition_is_one_aligned_line() {
        let clock = WallClock::fixed(1_000, 1_795_313_100_000_000_000);
        let mut line = String::new();
        state(
            &clock,
            &change("127.0.0.1", "127.0.0.1", CLOSE, SYN_SENT),
            &mut line,
        );
        assert_eq!(
            line,
            "02:05:00.001500    4242 cu\"rl           127.0.0.1:43210        127.0.0.1:8080         CLOSE -> SYN_SENT"
        );
        let mut header = String::new();
        state_header(&mut header);
        assert_eq!(
            header.find("PID").unwrap() + 3,
            line.find("4242").unwrap() + 4
        );
        assert_eq!(header.find("LOCAL"), line.find("127.0.0.1:43210"));
        assert_eq!(header.find("TRANSITION"), line.find("CLOSE"));
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        let clock = WallClock::fixed(0, 0);
        let mut line = String::new();
        state(
            &clock,
            &change("::1", "fd00::2", ESTABLISHED, FIN_WAIT1),
            &mut line,
        );
        assert!(line.contains("[::1]:43210"), "{line}");
        assert!(line.contains("[fd00::2]:8080"), "{line}");
        assert!(line.ends_with("ESTABLISHED -> FIN_WAIT1"), "{line}");
    }
}
