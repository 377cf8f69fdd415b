//! The connection storm: short loopback connections as fast as one client
//! thread and one server thread can make them (connect, small request, small
//! response, the server closes first), for a fixed time.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: storm\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

pub struct Storm {
    pub connections: u64,
    pub secs: f64,
    /// Nanoseconds its two threads waited on a run queue, ready but not
    /// running: how much the tool in place made the storm wait for a CPU.
    pub wait_ns: u64,
}

impl Storm {
    pub fn rate(&self) -> f64 {
        self.connections as f64 / self.secs
    }
}

/// A free loopback port.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// As many connections as `duration` allows.
pub fn run(port: u16, duration: Duration) -> Result<Storm> {
    storm(port, |n, start| n < u64::MAX && start.elapsed() < duration)
}

/// Exactly `count` connections.
pub fn run_count(port: u16, count: u64) -> Result<Storm> {
    storm(port, |n, _| n < count)
}

fn storm(port: u16, more: impl Fn(u64, Instant) -> bool) -> Result<Storm> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).context("storm listener")?;
    let stop = Arc::new(AtomicBool::new(false));
    let server_stop = stop.clone();
    let server = thread::spawn(move || -> std::io::Result<u64> {
        let waited = run_delay_ns();
        let mut buf = [0u8; 256];
        while !server_stop.load(Ordering::Relaxed) {
            let (mut s, _) = listener.accept()?;
            let mut got = 0;
            while got < REQUEST.len() {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            s.write_all(RESPONSE)?;
        }
        Ok(run_delay_ns().saturating_sub(waited))
    });
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let waited = run_delay_ns();
    let start = Instant::now();
    let mut connections = 0;
    let mut buf = [0u8; 256];
    while more(connections, start) {
        let mut s = TcpStream::connect(to)?;
        s.write_all(REQUEST)?;
        while s.read(&mut buf)? > 0 {}
        connections += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let client_wait = run_delay_ns().saturating_sub(waited);
    stop.store(true, Ordering::Relaxed);
    // Wake the server's accept so it sees the stop flag.
    drop(TcpStream::connect(to));
    let server_wait = server.join().map_err(|_| anyhow::anyhow!("storm server panicked"))??;
    Ok(Storm {
        connections,
        secs,
        wait_ns: client_wait + server_wait,
    })
}

/// The calling thread's time on a run queue so far (schedstat's second field).
fn run_delay_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| super::stats::schedstat_field(&s, 1))
        .unwrap_or(0)
}
