//! Rendering events: `text` for people, `json` for programs. Both write into a
//! reused buffer that goes to stdout in large chunks.
mod json;
mod text;

use std::io::{self, Write};

use crate::{clock::WallClock, event::StateChange};

/// Totals printed once at exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub dropped: u64,
    pub evicted: u64,
    pub connections: u64,
    pub decode_errors: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

pub struct Output<W: Write> {
    format: Format,
    clock: WallClock,
    line: String,
    out: W,
}

impl<W: Write> Output<W> {
    pub fn new(format: Format, clock: WallClock, out: W) -> Self {
        Self {
            format,
            clock,
            line: String::with_capacity(512),
            out,
        }
    }

    /// The column header of the text stream (nothing for JSON).
    pub fn header(&mut self) -> io::Result<()> {
        if self.format == Format::Text {
            self.line.clear();
            text::state_header(&mut self.line);
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
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::IpAddr;

    use crate::{
        event::{Family, Process, StateChange},
        state::TcpState,
    };

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
            family: if laddr.is_ipv4() {
                Family::Ipv4
            } else {
                Family::Ipv6
            },
            laddr,
            lport: 43210,
            raddr: raddr.parse().unwrap(),
            rport: 8080,
            old: TcpState(old),
            new: TcpState(new),
            owner: Some(Process::new(4242, comm("cu\"rl"))),
            current: Process::new(1, comm("swapper/0")),
        }
    }
}
