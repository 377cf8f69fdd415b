//! HTTP/2 framing by hand, for what the h2 crate does not do: h2c upgrade
//! (RFC 7540 §3.2, RFC 9113). The client sends an HTTP/1.1 request with
//! `Upgrade: h2c` and `HTTP2-Settings`; after `101 Switching Protocols` that
//! request is stream 1, answered over HTTP/2, and the other paths follow as
//! streams 3, 5, ... sent all at once. Request header blocks use literals
//! without indexing (no HPACK state); responses are decoded with loona-hpack.
use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result, bail};
use base64::Engine;
use http::Method;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::say;

pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// The client's settings: SETTINGS_MAX_CONCURRENT_STREAMS 100, SETTINGS_ENABLE_PUSH 0.
const CLIENT_SETTINGS: [u8; 12] = [0, 3, 0, 0, 0, 100, 0, 2, 0, 0, 0, 0];

/// One frame: 9-byte header and payload.
pub fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an N-bit prefix (RFC 7541 §5.1), `first` holding
/// the bits above the prefix.
fn hpack_int(out: &mut Vec<u8>, prefix: u8, first: u8, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// "Literal Header Field without Indexing — Indexed Name" (RFC 7541 §6.2.2),
/// the value a plain string: it leaves the decoder's dynamic table alone.
fn literal(out: &mut Vec<u8>, name_index: usize, value: &str) {
    hpack_int(out, 4, 0x00, name_index);
    hpack_int(out, 7, 0x00, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// A request's header block: :method, :scheme http, :path, :authority.
fn request_block(method: &Method, path: &str, authority: &str) -> Vec<u8> {
    let mut b = Vec::new();
    match *method {
        Method::GET => b.push(0x82),
        Method::POST => b.push(0x83),
        ref m => literal(&mut b, 2, m.as_str()),
    }
    b.push(0x86);
    literal(&mut b, 4, path);
    literal(&mut b, 1, authority);
    b
}

/// A request without a body as one HEADERS frame (END_STREAM, END_HEADERS).
/// On stream 1, the upgraded request as the server's HTTP/2 side must see it.
pub fn request_headers(stream: u32, method: &Method, path: &str, authority: &str) -> Vec<u8> {
    frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        stream,
        &request_block(method, path, authority),
    )
}

struct Stream {
    id: u32,
    path: String,
    status: Option<u16>,
    len: usize,
    done: bool,
}

/// Reads from `tcp` until `buf` holds at least `n` bytes.
async fn fill(tcp: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> Result<()> {
    while buf.len() < n {
        let mut chunk = [0u8; 16384];
        let got = tcp.read(&mut chunk).await?;
        if got == 0 {
            bail!("the server closed the connection early");
        }
        buf.extend_from_slice(&chunk[..got]);
    }
    Ok(())
}

pub async fn client(addr: SocketAddr, paths: &[String]) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(10), exchange(addr, paths))
        .await
        .context("timed out")?
}

async fn exchange(addr: SocketAddr, paths: &[String]) -> Result<()> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    let _ = tcp.set_nodelay(true);
    let authority = addr.to_string();
    let settings = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(CLIENT_SETTINGS);
    let upgrade = format!(
        "GET {} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
         HTTP2-Settings: {settings}\r\nUser-Agent: peers\r\n\r\n",
        paths[0]
    );
    tcp.write_all(upgrade.as_bytes()).await?;

    // The 101 response; whatever follows its head is HTTP/2 already.
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = buf.len() + 1;
        fill(&mut tcp, &mut buf, n).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status_line = head.lines().next().unwrap_or_default();
    if !status_line.starts_with("HTTP/1.1 101") {
        bail!("no upgrade: {status_line}");
    }
    say(format_args!("upgrade {status_line}"));
    buf.drain(..head_end);

    let mut streams: Vec<Stream> = paths
        .iter()
        .enumerate()
        .map(|(i, path)| Stream {
            id: 1 + 2 * i as u32,
            path: path.clone(),
            status: None,
            len: 0,
            done: false,
        })
        .collect();
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &CLIENT_SETTINGS));
    for s in &streams[1..] {
        out.extend(request_headers(s.id, &Method::GET, &s.path, &authority));
    }
    tcp.write_all(&out).await?;

    let mut decoder = loona_hpack::Decoder::new();
    // A header block waiting for its CONTINUATION frames: stream, block, END_STREAM.
    let mut block: Option<(u32, Vec<u8>, bool)> = None;
    while !streams.iter().all(|s| s.done) {
        fill(&mut tcp, &mut buf, 9).await?;
        let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
        fill(&mut tcp, &mut buf, 9 + len).await?;
        let (ty, flags) = (buf[3], buf[4]);
        let id = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
        let payload: Vec<u8> = buf[9..9 + len].to_vec();
        buf.drain(..9 + len);
        let unpadded = |mut p: &[u8], priority: bool| -> Result<Vec<u8>> {
            let mut pad = 0;
            if flags & PADDED != 0 {
                pad = *p.first().context("padded frame without a length")? as usize;
                p = &p[1..];
            }
            if priority && flags & PRIORITY != 0 {
                p = p.get(5..).context("short PRIORITY fields")?;
            }
            Ok(p.get(..p.len().checked_sub(pad).context("padding beyond the frame")?)
                .unwrap()
                .to_vec())
        };
        let stream = |streams: &mut Vec<Stream>, id: u32| -> Result<usize> {
            streams
                .iter()
                .position(|s| s.id == id)
                .context(format!("a frame on stream {id}"))
        };
        match ty {
            SETTINGS if flags & ACK == 0 => tcp.write_all(&frame(SETTINGS, ACK, 0, &[])).await?,
            PING if flags & ACK == 0 => tcp.write_all(&frame(PING, ACK, 0, &payload)).await?,
            GOAWAY => bail!("GOAWAY from the server before every answer"),
            PUSH_PROMISE => bail!("a push promise, though push is off"),
            RST_STREAM => bail!("stream {id} reset by the server"),
            DATA => {
                let i = stream(&mut streams, id)?;
                streams[i].len += unpadded(&payload, false)?.len();
                streams[i].done |= flags & END_STREAM != 0;
            }
            HEADERS => block = Some((id, unpadded(&payload, true)?, flags & END_STREAM != 0)),
            CONTINUATION => match &mut block {
                Some((on, b, _)) if *on == id => b.extend_from_slice(&payload),
                _ => bail!("CONTINUATION out of place"),
            },
            _ => {}
        }
        if matches!(ty, HEADERS | CONTINUATION) && flags & END_HEADERS != 0 {
            let (id, b, end) = block.take().unwrap();
            let headers = decoder.decode(&b).map_err(|e| anyhow::anyhow!("HPACK: {e:?}"))?;
            let i = stream(&mut streams, id)?;
            for (name, value) in headers {
                if name == b":status" {
                    streams[i].status = Some(String::from_utf8_lossy(&value).parse()?);
                }
            }
            streams[i].done |= end;
        }
    }
    for s in &streams {
        let status = s.status.map_or("-".into(), |c| c.to_string());
        say(format_args!("stream {} {} {status} {}", s.id, s.path, s.len));
    }
    // GOAWAY (no error, no stream of the server's processed), then end it.
    let mut goaway = vec![0u8; 8];
    goaway[..4].copy_from_slice(&0u32.to_be_bytes());
    tcp.write_all(&frame(GOAWAY, 0, 0, &goaway)).await?;
    tcp.shutdown().await?;
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest).await;
    Ok(())
}
