//! `ws-server` and `ws-client`: tokio-tungstenite over plain TCP.
//!
//! tungstenite answers a ping with a pong by itself (only while no close was
//! sent), and answers a close with a close that repeats its code and reason.
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::{
    Message,
    client::IntoClientRequest,
    handshake::server::{Request, Response},
    http::HeaderValue,
    protocol::{CloseFrame, frame::coding::CloseCode},
};

use crate::say;

const PROTOCOL: &str = "sec-websocket-protocol";

pub async fn server(listener: TcpListener, close_first: bool) -> Result<()> {
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            if let Err(e) = serve(tcp, close_first).await {
                crate::warn("websocket connection", format!("{e:#}"));
            }
        });
    }
}

async fn serve(tcp: tokio::net::TcpStream, close_first: bool) -> Result<()> {
    #[allow(clippy::result_large_err)] // the callback's type is tungstenite's
    let chat = |req: &Request, mut resp: Response| {
        let offered = req
            .headers()
            .get_all(PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == "chat");
        if offered {
            resp.headers_mut().insert(PROTOCOL, HeaderValue::from_static("chat"));
        }
        Ok(resp)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async(tcp, chat).await?;
    let mut echoed = 0;
    // Pings are answered by tungstenite; a close is answered by it too, and
    // the stream then ends.
    while let Some(msg) = ws.next().await {
        if let m @ (Message::Text(_) | Message::Binary(_)) = msg? {
            ws.send(m).await?;
            echoed += 1;
            if close_first && echoed == 2 {
                ws.close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "server done".into(),
                }))
                .await?;
            }
        }
    }
    Ok(())
}

/// What the client received.
#[derive(Default)]
struct Seen {
    text: bool,
    binary: bool,
    pong: bool,
}

impl Seen {
    fn all(&self) -> bool {
        self.text && self.binary && self.pong
    }
}

pub async fn client(url: &str, protocol: Option<&str>, wait_close: bool) -> Result<()> {
    let mut req = url.into_client_request().context("url")?;
    if let Some(p) = protocol {
        req.headers_mut().insert(PROTOCOL, HeaderValue::from_str(p)?);
    }
    let (mut ws, resp) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(req))
        .await
        .context("connect timed out")??;
    if let Ok(tcp) = match ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => Ok(s),
        _ => Err(()),
    } {
        let _ = tcp.set_nodelay(true);
    }
    let sub = resp.headers().get(PROTOCOL).and_then(|v| v.to_str().ok());
    say(format_args!(
        "status {} subprotocol {}",
        resp.status().as_u16(),
        sub.unwrap_or("-")
    ));
    ws.send(Message::Ping(b"are you there".to_vec().into())).await?;
    ws.send(Message::Text("hello".into())).await?;
    ws.send(Message::Binary(vec![1u8, 2, 3].into())).await?;
    let mut seen = Seen::default();
    let got_close = loop {
        if !wait_close && seen.all() {
            break false;
        }
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .context("timed out waiting for the server")?;
        match msg {
            Some(Ok(Message::Text(t))) if t.as_str() == "hello" => seen.text = true,
            Some(Ok(Message::Binary(b))) if b[..] == [1, 2, 3] => seen.binary = true,
            Some(Ok(Message::Pong(_))) => seen.pong = true,
            Some(Ok(Message::Close(frame))) => {
                report_close(&frame);
                break true;
            }
            Some(Ok(other)) => bail!("unexpected message {other:?}"),
            Some(Err(e)) => return Err(e.into()),
            None => bail!("the server ended the connection without a close"),
        }
    };
    say(format_args!(
        "echoes text {} binary {} pong {}",
        seen.text, seen.binary, seen.pong
    ));
    if wait_close {
        if !got_close {
            bail!("no close from the server");
        }
        // tungstenite has queued its reply to the server's close: flush it,
        // then the stream ends.
        drain(&mut ws).await?;
    } else {
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await?;
        let mut replied = false;
        while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .context("timed out waiting for the close reply")?
        {
            match msg {
                Ok(Message::Close(frame)) => {
                    report_close(&frame);
                    replied = true;
                }
                Ok(_) => {}
                Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => break,
                Err(e) => return Err(e.into()),
            }
        }
        if !replied {
            bail!("the server did not answer the close");
        }
    }
    if !seen.all() {
        bail!(
            "missing echoes: text {} binary {} pong {}",
            seen.text,
            seen.binary,
            seen.pong
        );
    }
    Ok(())
}

/// Reads until the stream ends, sending whatever tungstenite has queued.
async fn drain<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.flush().await.or_else(ignore_closed)?;
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .context("timed out waiting for the end")?
    {
        msg.map(drop).or_else(ignore_closed)?;
    }
    Ok(())
}

fn ignore_closed(e: tokio_tungstenite::tungstenite::Error) -> Result<()> {
    match e {
        tokio_tungstenite::tungstenite::Error::ConnectionClosed => Ok(()),
        e => Err(e.into()),
    }
}

fn report_close(frame: &Option<CloseFrame>) {
    match frame {
        Some(f) => say(format_args!("close {} {}", u16::from(f.code), f.reason)),
        None => say(format_args!("close -")),
    }
}
