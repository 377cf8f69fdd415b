//! Rendering: `text` for people, `json` for programs, `diagram` for ladders.
//! Each record is built in a reused buffer and written to a buffered stdout.
mod app;
mod diagram;
mod json;
mod text;

use std::{
    collections::HashMap,
    io::{self, Write},
};

use crate::{
    clock::WallClock,
    connection::Connection,
    event::{Segment, StateChange},
};

/// Totals printed once at exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub dropped: u64,
    pub evicted: u64,
    pub connections: u64,
    pub decode_errors: u64,
    /// Bytes of ring-buffer records read.
    pub ring_bytes: u64,
    /// Times protocol detection lost payload it needed.
    pub payload_gaps: u64,
    /// Payload requests the kernel's table refused.
    pub payload_requests_refused: u64,
    /// State changes and retransmissions the kernel skipped the programs for.
    pub missed_state_changes: u64,
    pub missed_retransmits: u64,
    /// Sockets dropped without a record: their close never came.
    pub unfinished_sockets: u64,
    /// Records without counters: the kernel's flow table no longer (or never)
    /// held their flow.
    pub uncounted_sockets: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// How text is laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Address columns wide enough for IPv6.
    pub wide: bool,
    /// A time column on connection lines.
    pub time: bool,
}

pub struct Output<W: Write> {
    format: Format,
    layout: Layout,
    clock: WallClock,
    ifnames: HashMap<u32, String>,
    line: String,
    /// Query strings hidden (header values are never shown).
    redact: bool,
    out: W,
}

impl<W: Write> Output<W> {
    pub fn new(format: Format, layout: Layout, clock: WallClock, out: W) -> Self {
        Self {
            format,
            layout,
            clock,
            ifnames: HashMap::new(),
            line: String::with_capacity(1024),
            redact: true,
            out,
        }
    }

    pub fn set_redact(&mut self, redact: bool) {
        self.redact = redact;
    }

    /// Interface names for packet records, by index.
    pub fn set_ifnames(&mut self, names: HashMap<u32, String>) {
        self.ifnames = names;
    }

    /// The column header of connection lines (nothing for JSON).
    pub fn header(&mut self) -> io::Result<()> {
        if self.format == Format::Text {
            self.line.clear();
            text::connection_header(&self.layout, &mut self.line);
            self.emit()?;
        }
        Ok(())
    }

    pub fn state(&mut self, s: &StateChange) -> io::Result<()> {
        self.line.clear();
        match self.format {
            Format::Text => text::state(&self.clock, s, &mut self.line),
            Format::Json => json::state(&self.clock, s, &mut self.line),
        }
        self.emit()
    }

    pub fn packet(&mut self, seg: &Segment) -> io::Result<()> {
        self.line.clear();
        let iface = self.ifnames.get(&seg.ifindex).map_or("?", String::as_str);
        match self.format {
            Format::Text => text::packet(&self.clock, iface, seg, &mut self.line),
            Format::Json => json::packet(&self.clock, iface, seg, &mut self.line),
        }
        self.emit()
    }

    pub fn connection(&mut self, c: &Connection) -> io::Result<()> {
        self.line.clear();
        match self.format {
            Format::Text => text::connection(&self.clock, &self.layout, c, self.redact, &mut self.line),
            Format::Json => json::connection(&self.clock, c, self.redact, &mut self.line),
        }
        self.emit()
    }

    /// The connection as a ladder of its segments (text only).
    pub fn diagram(&mut self, c: &Connection) -> io::Result<()> {
        self.line.clear();
        diagram::draw(c, self.redact, &mut self.line);
        self.out.write_all(self.line.as_bytes())
    }

    /// A free-form note: a `# ` comment line in text (an empty note is a blank
    /// line), nothing in JSON.
    pub fn note(&mut self, note: &str) -> io::Result<()> {
        if self.format == Format::Text {
            self.line.clear();
            if !note.is_empty() {
                self.line.push_str("# ");
                self.line.push_str(note);
            }
            self.emit()?;
        }
        Ok(())
    }

    pub fn summary(&mut self, s: &Summary) -> io::Result<()> {
        self.line.clear();
        match self.format {
            Format::Text => text::summary(s, &mut self.line),
            Format::Json => json::summary(s, &mut self.line),
        }
        self.emit()?;
        self.flush()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn emit(&mut self) -> io::Result<()> {
        self.line.push('\n');
        self.out.write_all(self.line.as_bytes())
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

/// Microseconds from nanoseconds, with three decimals: `12.345`.
#[inline(always)]
pub(crate) fn micros(out: &mut String, ns: u64) {
    num(out, ns / 1000);
    out.push('.');
    crate::clock::digits(out, ns % 1000, 3);
}

/// An integer in decimal, without `fmt`'s machinery.
#[inline(always)]
pub(crate) fn num(out: &mut String, v: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// An address in its usual text form; IPv4, the common case, without `fmt`.
pub(crate) fn ip(out: &mut String, addr: std::net::IpAddr) {
    match addr {
        std::net::IpAddr::V4(a) => {
            // Into a buffer, pushed once: one of these is in every line.
            let mut b = [0u8; 15];
            let mut n = 0;
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    b[n] = b'.';
                    n += 1;
                }
                let mut digits = itoa::Buffer::new();
                let s = digits.format(o).as_bytes();
                b[n..n + s.len()].copy_from_slice(s);
                n += s.len();
            }
            out.push_str(std::str::from_utf8(&b[..n]).expect("ASCII digits"));
        }
        std::net::IpAddr::V6(a) => {
            use std::fmt::Write;
            let _ = write!(out, "{a}");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::IpAddr;

    use tracer_common::{tcp_flag, tcp_state::*};

    use crate::{
        connection::{CloseKind, Connection, Role, StateAt, Traffic},
        event::{Family, Hook, Process, Segment, StateChange},
        state::TcpState,
    };

    #[test]
    fn addresses_print_in_their_usual_form() {
        for a in ["0.0.0.0", "255.255.255.255", "10.1.2.3", "127.0.0.1", "::1", "fd00::2"] {
            let mut s = String::new();
            super::ip(&mut s, a.parse().unwrap());
            assert_eq!(s, a);
        }
    }

    pub fn comm(name: &str) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..name.len()].copy_from_slice(name.as_bytes());
        c
    }

    pub fn change(laddr: &str, raddr: &str, old: u8, new: u8) -> StateChange {
        let laddr: IpAddr = laddr.parse().unwrap();
        StateChange {
            ts_ns: 1_000 + 1_500_000,
            sock: 0xffff_8880_0abc_0000,
            family: if laddr.is_ipv4() { Family::Ipv4 } else { Family::Ipv6 },
            laddr,
            lport: 43210,
            raddr: raddr.parse().unwrap(),
            rport: 8080,
            old: TcpState(old),
            new: TcpState(new),
            owner: Some(Process::new(4242, comm("cu\"rl"))),
            current: Process::new(1, comm("swapper/0")),
            recovered: false,
        }
    }

    /// A client that sends a 37-byte request, gets a 40-byte response, closes first.
    pub fn sample_connection() -> Connection {
        let s = change("127.0.0.1", "127.0.0.1", CLOSE, SYN_SENT);
        let (key, local) = s.flow();
        let seg = |at_us: u64, from_local: bool, flags: u8, seq: u32, ack: u32, len: u32| Segment {
            ts_ns: 1_000 + at_us * 1000,
            key,
            from: if from_local { local } else { 1 - local },
            seq,
            ack,
            ifindex: 1,
            hook: Hook::Egress,
            flags,
            win: 512,
            len,
            head_off: 0,
            late: false,
            handshake: Default::default(),
        };
        let (syn, ack, psh, fin) = (tcp_flag::SYN, tcp_flag::ACK, tcp_flag::PSH, tcp_flag::FIN);
        let segments = vec![
            seg(10, true, syn, 1000, 0, 0),
            seg(20, false, syn | ack, 5000, 1001, 0),
            seg(21, true, ack, 1001, 5001, 0),
            seg(30, true, psh | ack, 1001, 5001, 37),
            seg(40, false, psh | ack, 5001, 1038, 40),
            seg(50, true, fin | ack, 1038, 5041, 0),
            seg(60, false, fin | ack, 5041, 1039, 0),
            seg(61, true, ack, 1039, 5042, 0),
        ];
        let mut tx = Traffic::default();
        let mut rx = Traffic::default();
        for sg in &segments {
            if sg.from == local { tx.add(sg) } else { rx.add(sg) }
        }
        let at = |state: u8, us: u64| StateAt {
            state: TcpState(state),
            at_ns: us * 1000,
        };
        Connection {
            sock: s.sock,
            process: s.owner.unwrap(),
            role: Role::Client,
            family: s.family,
            laddr: s.laddr,
            lport: s.lport,
            raddr: s.raddr,
            rport: s.rport,
            start_ns: 1_000,
            duration_ns: 61_000,
            handshake_ns: Some(20_500),
            states: vec![
                at(SYN_SENT, 0),
                at(ESTABLISHED, 20),
                at(FIN_WAIT1, 50),
                at(FIN_WAIT2, 55),
                at(TIME_WAIT, 60),
            ],
            tx,
            rx,
            retransmits: 0,
            counted: true,
            close: CloseKind::LocalFin,
            protocol: "unknown",
            segments,
            segments_omitted: 0,
            isn: (Some(1000), Some(5000)),
            app: None,
            local,
        }
    }
}
