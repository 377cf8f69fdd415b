//! `tracer demo`: the newcomer's first look. The tracer traces its own
//! loopback exchanges, one after another, and prints what the kernel reported:
//! how connections open and close, then what HTTP/1.1, WebSocket, HTTP/2 and
//! TLS look like on the wire.
mod scripts;
use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    thread,
};

use anyhow::{Context, Result};

use scripts::{Says, Script};

use crate::{
    app::{self, DiagramFor, Session, Show},
    cli::OutputArgs,
    iface,
    loader::Settings,
    preflight,
};

const REQUEST: &[u8] = b"GET /hello HTTP/1.1\r\nHost: demo\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
const CLOSING_REQUEST: &[u8] = b"GET /bye HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n";
const CLOSING_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbye";

pub async fn run(args: OutputArgs) -> Result<()> {
    preflight::check_all()?;
    let port = free_port()?;
    let refused_port = free_port()?;
    let lo = iface::by_name("lo").context("the demo runs on loopback")?;
    let settings = Settings {
        ports: vec![port, refused_port],
        all_segments: true,
        ..app::settings(&args, vec![lo])
    };
    let show = Show {
        events: args.events,
        diagrams: (!args.json).then_some(DiagramFor::Clients),
        connections: true,
    };
    let mut session = Session::start(&settings, &args, show, app::stdout())?;
    let out = session.output();
    out.note(&format!(
        "tracer demo: the kernel's view of TCP connections to 127.0.0.1:{port}, traced by this process itself."
    ))?;
    out.note(
        "Each socket gets one line when it closes (client and server each own one), and each connection a ladder",
    )?;
    out.note("drawn from its client's side: every segment with its flags, seq/ack relative to the sender's first")?;
    out.note("sequence number, payload length and time, beside the states the client's socket went through.")?;
    out.note("demo-client and demo-server are this process's threads.")?;
    out.header()?;

    let listener = on_thread("demo-server", move || TcpListener::bind((Ipv4Addr::LOCALHOST, port)))
        .context("the demo server cannot listen")?;
    let addr = listener.local_addr()?;
    let l = listener.try_clone()?;
    step(
        &mut session,
        "1. request and response, then the client closes first",
        move || exchange(&l, addr, client_closes_first, server_answers_then_waits),
    )
    .await?;
    let l = listener.try_clone()?;
    step(
        &mut session,
        "2. \"Connection: close\": the server closes first",
        move || exchange(&l, addr, client_reads_to_end, server_answers_and_closes),
    )
    .await?;
    let refused = SocketAddr::from((Ipv4Addr::LOCALHOST, refused_port));
    step(
        &mut session,
        &format!("3. nothing listens on port {refused_port}: the connection is refused"),
        move || {
            on_thread("demo-client", move || match TcpStream::connect(refused) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
                Err(e) => Err(e),
                Ok(_) => Err(io::Error::other(format!("{refused} unexpectedly accepted"))),
            })
        },
    )
    .await?;
    for (heading, script) in PROTOCOL_STEPS {
        let l = listener.try_clone()?;
        step(&mut session, heading, move || play(&l, addr, script)).await?;
    }
    drop(listener);
    session.finish()?;
    Ok(())
}

/// Each protocol's exchange, and what to look for in it.
const PROTOCOL_STEPS: [(&str, Script); 4] = [
    (
        "4. HTTP/1.1 keep-alive: three requests on one connection (a 404, a chunked body); the query string and cookie are never shown",
        scripts::KEEP_ALIVE,
    ),
    (
        "5. WebSocket: an HTTP Upgrade answered by 101, then frames (text, ping/pong) and the closing handshake",
        scripts::WEBSOCKET,
    ),
    (
        "6. HTTP/2 with prior knowledge: the preface, SETTINGS, two streams whose headers HPACK compresses",
        scripts::HTTP2,
    ),
    (
        "7. TLS: the ClientHello names the server (SNI) and offers protocols (ALPN); the rest is encrypted",
        scripts::TLS,
    ),
];

/// Plays a script over one connection: each side writes its lines and reads
/// the other's, then the client closes first.
fn play(listener: &TcpListener, addr: SocketAddr, script: Script) -> io::Result<()> {
    let listener = listener.try_clone()?;
    let server = thread::Builder::new()
        .name("demo-server".into())
        .spawn(move || say(listener.accept()?.0, Says::Server, script))?;
    let client_result = on_thread("demo-client", move || {
        say(TcpStream::connect(addr)?, Says::Client, script)
    });
    let server_result = server.join().map_err(|_| io::Error::other("demo-server panicked"))?;
    client_result.and(server_result)
}

fn say(mut s: TcpStream, me: Says, script: Script) -> io::Result<()> {
    for (who, bytes) in script {
        if *who == me {
            s.write_all(bytes)?;
        } else {
            let mut heard = vec![0u8; bytes.len()];
            s.read_exact(&mut heard)?;
        }
    }
    if me == Says::Server {
        // Until the client's FIN, then close our side.
        s.read_to_end(&mut Vec::new())?;
    }
    Ok(())
}

/// Print a heading, run one blocking step, then print every event it caused.
async fn step<T: Send + 'static>(
    session: &mut Session<impl Write>,
    heading: &str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    session.output().note("")?;
    session.output().note(heading)?;
    let value = tokio::task::spawn_blocking(f)
        .await?
        .with_context(|| format!("demo step \"{heading}\" failed"))?;
    // Events fire inside the syscalls the step made (loopback runs the peer's
    // softirq work on the same CPU); a closed socket's record waits out its
    // grace period for late segments, then prints on the next drain.
    session.settle().await?;
    Ok(value)
}

/// A port nothing listens on right now.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot find a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Runs `f` on a thread named `name`: the kernel reports a thread's name as its comm.
fn on_thread<T: Send + 'static>(name: &str, f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)?
        .join()
        .map_err(|_| io::Error::other(format!("{name} panicked")))?
}

fn exchange(
    listener: &TcpListener,
    addr: SocketAddr,
    client: fn(SocketAddr) -> io::Result<()>,
    server: fn(TcpStream) -> io::Result<()>,
) -> io::Result<()> {
    let listener = listener.try_clone()?;
    let server = thread::Builder::new()
        .name("demo-server".into())
        .spawn(move || server(listener.accept()?.0))?;
    let client_result = on_thread("demo-client", move || client(addr));
    let server_result = server.join().map_err(|_| io::Error::other("demo-server panicked"))?;
    client_result.and(server_result)
}

fn client_closes_first(addr: SocketAddr) -> io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.write_all(REQUEST)?;
    let mut response = [0u8; RESPONSE.len()];
    s.read_exact(&mut response)?;
    drop(s);
    Ok(())
}

fn server_answers_then_waits(mut s: TcpStream) -> io::Result<()> {
    let mut request = [0u8; REQUEST.len()];
    s.read_exact(&mut request)?;
    s.write_all(RESPONSE)?;
    // Read until the client's FIN, then close our side.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    Ok(())
}

fn client_reads_to_end(addr: SocketAddr) -> io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.write_all(CLOSING_REQUEST)?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)?;
    Ok(())
}

fn server_answers_and_closes(mut s: TcpStream) -> io::Result<()> {
    let mut request = [0u8; CLOSING_REQUEST.len()];
    s.read_exact(&mut request)?;
    s.write_all(CLOSING_RESPONSE)
}
