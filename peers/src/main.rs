//! `peers`: the real servers and clients that the end-to-end tests trace.
//!
//! Each server binds the address it is given (port 0 picks a free one), prints
//! `ready <port>` on stdout once it listens, and serves until it is killed.
//! Each client does its exchange and exits 0, printing what it saw. Any failure
//! exits 1 with one line on stderr. Everything runs on one thread, so the
//! kernel reports every socket of a peer under the comm `peers`.
mod h2c;
mod http1;
mod http2;
mod tls;
mod ws;

use std::{io::Write, net::SocketAddr};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(name = "peers", about = "Servers and clients for the tracer's end-to-end tests")]
struct Cli {
    #[command(subcommand)]
    command: Peer,
}

#[derive(Subcommand)]
enum Peer {
    /// HTTP/1.x server (hyper, keep-alive): `/` 200 "hello\n", `/missing` 404,
    /// `/chunked` 200 in three chunks sent apart; HEAD has headers only.
    HttpServer {
        #[arg(long)]
        addr: SocketAddr,
    },
    /// WebSocket echo server (tokio-tungstenite): echoes text and binary
    /// messages, accepts the subprotocol `chat` when offered.
    WsServer {
        #[arg(long)]
        addr: SocketAddr,
        /// After echoing two data messages, send Close(1000, "server done") first.
        #[arg(long)]
        close_first: bool,
    },
    /// WebSocket client: ping, text "hello", binary [1,2,3], reads the pong and
    /// the echoes, then closes with Close(1000, "bye") or waits for the
    /// server's close (`--wait-close`).
    WsClient {
        #[arg(long)]
        url: String,
        #[arg(long)]
        protocol: Option<String>,
        #[arg(long)]
        wait_close: bool,
    },
    /// HTTP/2 cleartext server: prior knowledge, and h2c upgrade from HTTP/1.1.
    H2Server {
        #[arg(long)]
        addr: SocketAddr,
    },
    /// HTTP/2 cleartext client: one connection, one GET stream per path.
    H2Client {
        #[arg(long)]
        addr: SocketAddr,
        /// Comma-separated paths; with `--upgrade` the first is the upgraded request.
        #[arg(long, value_delimiter = ',', required = true)]
        paths: Vec<String>,
        /// h2c upgrade from HTTP/1.1 instead of prior knowledge.
        #[arg(long)]
        upgrade: bool,
    },
    /// TLS echo server (rustls, ring, self-signed certificate).
    TlsServer {
        #[arg(long)]
        addr: SocketAddr,
        /// ALPN protocols offered, comma-separated, in preference order.
        #[arg(long, value_delimiter = ',')]
        alpn: Vec<String>,
        /// TLS 1.2 only.
        #[arg(long)]
        tls12: bool,
    },
    /// TLS client (rustls): handshake, writes a few bytes, reads the echo, closes.
    /// Accepts any certificate.
    TlsClient {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        sni: String,
        #[arg(long, value_delimiter = ',')]
        alpn: Vec<String>,
        #[arg(long)]
        tls12: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(cli.command)) {
        eprintln!("peers: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

async fn run(peer: Peer) -> Result<()> {
    match peer {
        Peer::HttpServer { addr } => http1::server(listen(addr).await?).await,
        Peer::WsServer { addr, close_first } => ws::server(listen(addr).await?, close_first).await,
        Peer::WsClient {
            url,
            protocol,
            wait_close,
        } => ws::client(&url, protocol.as_deref(), wait_close).await,
        Peer::H2Server { addr } => http2::server(listen(addr).await?).await,
        Peer::H2Client { addr, paths, upgrade } => {
            if upgrade {
                h2c::client(addr, &paths).await
            } else {
                http2::client(addr, &paths).await
            }
        }
        Peer::TlsServer { addr, alpn, tls12 } => tls::server(listen(addr).await?, &alpn, tls12).await,
        Peer::TlsClient { addr, sni, alpn, tls12 } => tls::client(addr, &sni, &alpn, tls12).await,
    }
}

/// Binds `addr` and tells the test which port it got.
async fn listen(addr: SocketAddr) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?;
    let port = listener.local_addr()?.port();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {port}")?;
    out.flush()?;
    Ok(listener)
}

/// Prints one line of a client's report, at once.
fn say(line: std::fmt::Arguments) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Logs a failed connection of a server, which keeps serving.
fn warn(what: &str, e: impl std::fmt::Display) {
    eprintln!("peers: {what}: {e}");
}
