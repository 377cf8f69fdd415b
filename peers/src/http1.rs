//! `http-server`: hyper, HTTP/1 only, keep-alive on.
use std::{convert::Infallible, time::Duration};

use anyhow::Result;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{body::Frame, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub const HELLO: &[u8] = b"hello\n";
pub const NOT_FOUND: &[u8] = b"not found\n";
/// The chunks of `/chunked`, each written on its own.
pub const CHUNKS: [&[u8]; 3] = [b"chunk one\n", b"chunk two\n", b"chunk three\n"];

type Body = BoxBody<Bytes, Infallible>;

pub async fn server(listener: TcpListener) -> Result<()> {
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), service_fn(answer));
            if let Err(e) = conn.await {
                crate::warn("http connection", e);
            }
        });
    }
}

/// A whole body with its Content-Length, or headers only for HEAD.
fn full(status: StatusCode, head: bool, body: &'static [u8]) -> Response<Body> {
    sized(status, head, body.len(), if head { &[] } else { body })
}

fn sized(status: StatusCode, head: bool, len: usize, body: &'static [u8]) -> Response<Body> {
    let body = if head {
        Full::new(Bytes::new())
    } else {
        Full::new(Bytes::from_static(body))
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::CONTENT_LENGTH, len)
        .body(body.boxed())
        .unwrap()
}

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Body>, Infallible> {
    let head = req.method() == Method::HEAD;
    let path = req.uri().path().to_owned();
    // Read the request's body, if any, before answering.
    let _ = req.into_body().collect().await;
    Ok(match path.as_str() {
        "/missing" => full(StatusCode::NOT_FOUND, head, NOT_FOUND),
        "/chunked" if head => sized(StatusCode::OK, true, CHUNKS.iter().map(|c| c.len()).sum(), &[]),
        "/chunked" => {
            // No length: hyper sends HTTP/1.1 chunked, each chunk as it comes.
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(3);
            tokio::spawn(async move {
                for chunk in CHUNKS {
                    if tx.send(Ok(Frame::data(Bytes::from_static(chunk)))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap()
        }
        _ => full(StatusCode::OK, head, HELLO),
    })
}
