//! One bulk transfer over loopback, timed.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    thread,
    time::Instant,
};

use anyhow::Result;

/// Seconds to move `bytes` from a client to a server on `port`.
pub fn transfer(port: u16, bytes: usize) -> Result<f64> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    let server = thread::spawn(move || -> std::io::Result<usize> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    });
    let chunk = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    let mut sent = 0;
    while sent < bytes {
        let n = chunk.len().min(bytes - sent);
        s.write_all(&chunk[..n])?;
        sent += n;
    }
    drop(s);
    let got = server.join().map_err(|_| anyhow::anyhow!("bulk server panicked"))??;
    anyhow::ensure!(got == bytes, "bulk transfer lost bytes: {got} of {bytes}");
    Ok(start.elapsed().as_secs_f64())
}
