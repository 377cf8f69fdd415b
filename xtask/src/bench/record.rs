//! `cargo xtask record`: the realistic event streams that the userspace
//! benchmark replays, recorded from the real tracer while this traffic runs,
//! once in the default mode (`tracer/benches/data/stream.bin`: what the
//! daemon sees unless asked for more) and once with `--events` (every
//! segment, `stream-events.bin`):
//! short storm connections, keep-alive exchanges, a bulk transfer, aborts
//! with RST and refused connects, WebSocket echoes, HTTP/2 streams and TLS
//! handshakes, 1.3 and 1.2 (the `peers` crate's real servers and clients).
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::Path,
    thread,
    time::Duration,
};

use anyhow::Result;

use super::{
    bulk,
    pipeline::STREAMS,
    storm,
    tools::{Running, Tool},
};

/// Both streams, or neither: each is recorded beside its file and moved
/// into place once both are, so the two always come from one recording run.
pub fn run(tracer: &Path, dir: &Path) -> Result<()> {
    let fresh = |file: &str| dir.join(format!("{file}.new"));
    for stream in &STREAMS {
        record(tracer, stream.tool, &fresh(stream.file))?;
    }
    for stream in &STREAMS {
        std::fs::rename(fresh(stream.file), dir.join(stream.file))?;
    }
    Ok(())
}

fn record(tracer: &Path, tool: Tool, out: &Path) -> Result<()> {
    let ports: Vec<u16> = (0..9).map(|_| storm::free_port()).collect::<Result<_>>()?;
    let dir = std::env::temp_dir();
    let running = Running::start_with(tool, tracer, &ports, &dir, &["--record", &out.display().to_string()])?;
    storm::run_count(ports[0], 200)?;
    keep_alive(ports[1], 30, 5)?;
    bulk::transfer(ports[2], 4 << 20)?;
    aborts(ports[3], 30)?;
    for _ in 0..30 {
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, ports[4]));
    }
    let peers = tracer.with_file_name("peers");
    let url = format!("ws://127.0.0.1:{}/chat", ports[5]);
    peer_exchanges(
        &peers,
        ports[5],
        ["ws-server"],
        ["ws-client", "--url", &url, "--protocol", "chat"],
        20,
    )?;
    let addr = format!("127.0.0.1:{}", ports[6]);
    let paths = ["h2-client", "--addr", &addr, "--paths", "/,/missing,/a,/b"];
    peer_exchanges(&peers, ports[6], ["h2-server"], paths, 20)?;
    for (port, alpn, version) in [(ports[7], "h2,http/1.1", None), (ports[8], "h2", Some("--tls12"))] {
        let addr = format!("127.0.0.1:{port}");
        let server = ["tls-server", "--alpn", alpn].into_iter().chain(version);
        let client = ["tls-client", "--addr", &addr, "--sni", "bench.example", "--alpn", alpn];
        peer_exchanges(&peers, port, server, client.into_iter().chain(version), 20)?;
    }
    thread::sleep(Duration::from_millis(200));
    running.stop_ref()?;
    println!("recorded {} bytes to {}", std::fs::metadata(out)?.len(), out.display());
    Ok(())
}

/// A `peers` server on `port`, and `times` runs of a `peers` client against it.
fn peer_exchanges<'a>(
    peers: &Path,
    port: u16,
    server: impl IntoIterator<Item = &'a str>,
    client: impl IntoIterator<Item = &'a str> + Clone,
    times: usize,
) -> Result<()> {
    let mut server = std::process::Command::new(peers)
        .args(server)
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    // It prints `ready <port>` once it listens.
    let mut ready = [0u8; 6];
    server.stdout.take().map(|mut o| o.read_exact(&mut ready)).transpose()?;
    let result = (0..times).try_for_each(|_| crate::status(std::process::Command::new(peers).args(client.clone())));
    let _ = server.kill();
    let _ = server.wait();
    result
}

const REQUEST: &[u8] = b"GET /item HTTP/1.1\r\nHost: bench\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

fn keep_alive(port: u16, connections: usize, requests: usize) -> Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    let server = thread::spawn(move || -> std::io::Result<()> {
        for _ in 0..connections {
            let (mut s, _) = listener.accept()?;
            let mut req = vec![0u8; REQUEST.len()];
            for _ in 0..requests {
                s.read_exact(&mut req)?;
                s.write_all(RESPONSE)?;
            }
            s.read_to_end(&mut Vec::new())?;
        }
        Ok(())
    });
    for _ in 0..connections {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        let mut resp = vec![0u8; RESPONSE.len()];
        for _ in 0..requests {
            s.write_all(REQUEST)?;
            s.read_exact(&mut resp)?;
        }
    }
    server
        .join()
        .map_err(|_| anyhow::anyhow!("keep-alive server panicked"))??;
    Ok(())
}

/// Connections the client aborts with SO_LINGER 0: its close sends RST.
fn aborts(port: u16, connections: usize) -> Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    for _ in 0..connections {
        let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        let (mut s, _) = listener.accept()?;
        c.write_all(REQUEST)?;
        let mut req = vec![0u8; REQUEST.len()];
        s.read_exact(&mut req)?;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket and a correctly sized option value.
        unsafe {
            libc::setsockopt(
                c.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        drop(c);
        let _ = s.read_to_end(&mut Vec::new());
    }
    Ok(())
}
