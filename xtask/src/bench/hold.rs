//! Many connections held open at once, by helper processes (the file
//! descriptor limit here is 20,000 per process and cannot be raised).
use std::{
    io::{BufRead, Read},
    net::{Ipv4Addr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
};

use anyhow::{Context, Result};

/// Connections one helper holds: both ends are its own fds.
pub const PER_PROCESS: usize = 9_000;

/// `cargo xtask hold PORT N`: listen on PORT, connect to it N times, keep
/// every socket until stdin closes.
pub fn serve(port: u16, n: usize) -> Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    let mut held = Vec::with_capacity(2 * n);
    for _ in 0..n {
        held.push(TcpStream::connect((Ipv4Addr::LOCALHOST, port))?);
        held.push(listener.accept()?.0);
    }
    println!("holding {n}");
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    Ok(())
}

/// Helpers holding `total` connections on the given ports, ready when this returns.
pub struct Holders(Vec<Child>);

impl Holders {
    pub fn start(ports: &[u16]) -> Result<Holders> {
        let me = std::env::current_exe()?;
        let mut children = Vec::new();
        for port in ports {
            let mut c = Command::new(&me)
                .args(["hold", &port.to_string(), &PER_PROCESS.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .context("start a connection holder")?;
            let mut line = String::new();
            std::io::BufReader::new(c.stdout.as_mut().unwrap()).read_line(&mut line)?;
            anyhow::ensure!(line.starts_with("holding"), "holder on port {port} failed");
            children.push(c);
        }
        Ok(Holders(children))
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        for c in &mut self.0 {
            drop(c.stdin.take());
            let _ = c.wait();
        }
    }
}
