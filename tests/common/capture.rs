//! A packet capture of the same traffic the tracer sees, by tshark: the
//! independent count the tracer's per-direction counters must match.
use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

/// One captured TCP segment.
#[derive(Clone, Copy, Debug)]
pub struct Captured {
    pub sport: u16,
    pub dport: u16,
    pub len: u64,
    pub flags: u8,
}

pub struct Capture {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<thread::JoinHandle<()>>,
    probe: u16,
    probe_ip: IpAddr,
}

impl Capture {
    /// Captures TCP segments on `iface` to or from any of `ports`, and returns
    /// once it provably sees packets: refused connects to `probe_ip` on a port
    /// of its own, until the capture shows one.
    pub fn start(iface: &str, ports: &[u16], probe_ip: IpAddr) -> Capture {
        let probe = super::free_port();
        let filter = ports
            .iter()
            .chain([&probe])
            .map(|p| format!("tcp port {p}"))
            .collect::<Vec<_>>()
            .join(" or ");
        let mut child = Command::new("tshark")
            .args(["-i", iface, "-f", &filter, "-n", "-l", "-T", "fields"])
            .args([
                "-e",
                "tcp.srcport",
                "-e",
                "tcp.dstport",
                "-e",
                "tcp.len",
                "-e",
                "tcp.flags",
            ])
            .args(["-E", "separator=,"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tshark (apt-get install tshark)");
        let (lines, reader) = super::collect_lines(child.stdout.take().unwrap());
        let capture = Capture {
            child,
            lines,
            reader: Some(reader),
            probe,
            probe_ip,
        };
        capture.probe_until_seen();
        capture
    }

    /// Refused connects to the probe port until the capture shows a new one:
    /// tshark handles packets in order, so everything before it is in too.
    fn probe_until_seen(&self) {
        let probes = || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| parse(l))
                .filter(|s| s.dport == self.probe)
                .count()
        };
        let before = probes();
        let deadline = Instant::now() + Duration::from_secs(15);
        while probes() == before {
            assert!(Instant::now() < deadline, "tshark shows no probe");
            let _ = TcpStream::connect_timeout(&SocketAddr::new(self.probe_ip, self.probe), Duration::from_millis(100));
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the capture and returns every segment it saw (probes excluded).
    pub fn stop(mut self) -> Vec<Captured> {
        self.probe_until_seen();
        super::signal(self.child.id(), libc::SIGINT);
        let _ = self.child.wait();
        self.reader.take().unwrap().join().unwrap();
        let probe = self.probe;
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| parse(l))
            .filter(|s| s.sport != probe && s.dport != probe)
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse(line: &str) -> Option<Captured> {
    let mut f = line.split(',');
    let sport = f.next()?.parse().ok()?;
    let dport = f.next()?.parse().ok()?;
    let len = f.next()?.parse().ok()?;
    let flags = u16::from_str_radix(f.next()?.trim_start_matches("0x"), 16).ok()? as u8;
    Some(Captured {
        sport,
        dport,
        len,
        flags,
    })
}

/// Packets, bytes and per-flag counts (in `FLAG_NAMES` order) of the
/// segments from port `from` to port `to`.
pub fn direction(segments: &[Captured], from: u16, to: u16) -> (u64, u64, [u64; 8]) {
    let mut flags = [0u64; 8];
    let (mut packets, mut bytes) = (0, 0);
    for s in segments.iter().filter(|s| s.sport == from && s.dport == to) {
        packets += 1;
        bytes += s.len;
        for (bit, n) in flags.iter_mut().enumerate() {
            *n += u64::from(s.flags >> bit & 1);
        }
    }
    (packets, bytes, flags)
}
