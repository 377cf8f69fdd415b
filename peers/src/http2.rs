//! `h2-server` and the prior-knowledge `h2-client`, by the h2 crate.
//!
//! The server tells the two ways into cleartext HTTP/2 apart by the first
//! bytes: the client preface means prior knowledge; anything else is HTTP/1.1,
//! served by hyper, and a request with `Upgrade: h2c` is answered `101
//! Switching Protocols`. The h2 crate has no server-side h2c, so after the 101
//! the upgraded request is handed to it as the HEADERS frame of stream 1 that
//! RFC 7540 §3.2 says it implicitly is (see `Upgraded`): h2 then answers it on
//! stream 1 like any other, and the client's next streams are 3, 5, ...
use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};

use crate::{
    h2c::{self, PREFACE},
    http1::{HELLO, NOT_FOUND},
    say,
};

pub async fn server(listener: TcpListener) -> Result<()> {
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let served = match sniff(&tcp).await {
                Ok(true) => serve_h2(tcp).await,
                Ok(false) => serve_http1(tcp).await,
                Err(e) => Err(e),
            };
            if let Err(e) = served {
                crate::warn("h2 connection", format!("{e:#}"));
            }
        });
    }
}

/// Whether the connection starts with the HTTP/2 client preface.
async fn sniff(tcp: &TcpStream) -> Result<bool> {
    let mut buf = [0u8; PREFACE.len()];
    for _ in 0..1000 {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            bail!("closed before a request");
        }
        if buf[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("no whole preface in 5 s")
}

fn body_of(path: &str) -> (StatusCode, &'static [u8]) {
    match path {
        "/missing" => (StatusCode::NOT_FOUND, NOT_FOUND),
        _ => (StatusCode::OK, HELLO),
    }
}

/// Serves one HTTP/2 connection whose client preface is next on `io`.
async fn serve_h2<T: AsyncRead + AsyncWrite + Unpin>(io: T) -> Result<()> {
    let mut conn = h2::server::handshake(io).await.context("h2 handshake")?;
    while let Some(req) = conn.accept().await {
        let (req, mut respond) = req?;
        let (status, body) = body_of(req.uri().path());
        let resp = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/plain")
            .header(header::CONTENT_LENGTH, body.len())
            .body(())
            .unwrap();
        let head_only = req.method() == Method::HEAD;
        let mut send = respond.send_response(resp, head_only)?;
        if !head_only {
            send.send_data(Bytes::from_static(body), true)?;
        }
    }
    Ok(())
}

async fn serve_http1(tcp: TcpStream) -> Result<()> {
    http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(tcp), service_fn(answer_http1))
        .with_upgrades()
        .await?;
    Ok(())
}

async fn answer_http1(mut req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let wants_h2c = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("h2c")))
        && req.headers().contains_key("http2-settings");
    if wants_h2c {
        let method = req.method().clone();
        let path = req.uri().path_and_query().map_or("/".into(), |p| p.to_string());
        let authority = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost")
            .to_owned();
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let served = async {
                let upgraded = on_upgrade.await.context("upgrade")?;
                let io = Upgraded::new(
                    TokioIo::new(upgraded),
                    h2c::request_headers(1, &method, &path, &authority),
                );
                serve_h2(io).await
            };
            if let Err(e) = served.await {
                crate::warn("h2c connection", format!("{e:#}"));
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "h2c")
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    let _ = req.body_mut().collect().await;
    let (status, body) = body_of(req.uri().path());
    Ok(Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, body.len())
        .body(Full::new(Bytes::from_static(body)))
        .unwrap())
}

/// The connection after the 101, as h2 reads it: the client's preface and
/// first SETTINGS frame, then the upgraded request as a HEADERS frame on
/// stream 1 (END_STREAM; its header block adds nothing to the HPACK table, so
/// the client's own blocks decode as the client meant them), then the rest of
/// what the client sends. Writes go straight through.
struct Upgraded<T> {
    io: T,
    /// The HEADERS frame to hand over once the preface and SETTINGS are through.
    headers: Option<Vec<u8>>,
    /// Bytes read ahead (preface, SETTINGS, then the HEADERS), not yet given out.
    pending: Vec<u8>,
    given: usize,
    /// Bytes of the preface + first SETTINGS frame still to read, once known.
    head_left: Option<usize>,
}

impl<T> Upgraded<T> {
    fn new(io: T, headers: Vec<u8>) -> Self {
        Upgraded {
            io,
            headers: Some(headers),
            pending: Vec::new(),
            given: 0,
            head_left: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Upgraded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        // Until the preface and the first frame are read whole, collect them.
        while this.headers.is_some() {
            let need = PREFACE.len() + 9;
            if this.pending.len() >= need && this.head_left.is_none() {
                if this.pending[..PREFACE.len()] != PREFACE[..] || this.pending[PREFACE.len() + 3] != 0x4 {
                    return Poll::Ready(Err(std::io::Error::other("no client preface after the upgrade")));
                }
                let f = &this.pending[PREFACE.len()..];
                let len = u32::from_be_bytes([0, f[0], f[1], f[2]]) as usize;
                this.head_left = Some(need + len);
            }
            if let Some(total) = this.head_left
                && this.pending.len() >= total
            {
                // Whatever came after the SETTINGS frame goes after the HEADERS.
                let rest = this.pending.split_off(total);
                this.pending.extend(this.headers.take().unwrap());
                this.pending.extend(rest);
                break;
            }
            let want = this.head_left.unwrap_or(need).max(this.pending.len() + 1) - this.pending.len();
            let mut chunk = vec![0u8; want];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    return Poll::Ready(Err(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    this.pending.extend_from_slice(&chunk[..n]);
                }
            }
        }
        if this.given < this.pending.len() {
            let n = buf.remaining().min(this.pending.len() - this.given);
            buf.put_slice(&this.pending[this.given..this.given + n]);
            this.given += n;
            if this.given == this.pending.len() {
                this.pending = Vec::new();
                this.given = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Upgraded<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Prior knowledge: the paths as concurrent streams 1, 3, 5... on one connection.
pub async fn client(addr: SocketAddr, paths: &[String]) -> Result<()> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    let _ = tcp.set_nodelay(true);
    let (send, conn) = h2::client::handshake(tcp).await.context("h2 handshake")?;
    let driver = tokio::spawn(conn);
    let mut pending = Vec::new();
    for path in paths {
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{addr}{path}"))
            .body(())?;
        let mut send = send.clone().ready().await?;
        let (resp, _) = send.send_request(req, true)?;
        pending.push((resp.stream_id(), path, resp));
    }
    drop(send);
    for (id, path, resp) in pending {
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .context("timed out")??;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut len = 0;
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            len += chunk.len();
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        say(format_args!("stream {} {path} {status} {len}", u32::from(id)));
    }
    // With every handle gone, the connection says GOAWAY and ends.
    tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .context("timed out closing")???;
    Ok(())
}
