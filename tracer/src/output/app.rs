//! What a connection carried, as JSON objects and as short text: sides and
//! directions named from the reporting socket's point of view, query strings
//! redacted unless asked otherwise.
use std::fmt::Write;

use crate::{
    connection::App,
    output::{
        json::{self, array, key, plain, string, tx_rx},
        micros, num,
    },
    protocol::{
        FrameCounts, H2Summary, HttpRequest, HttpSummary, Side, TlsSummary, WsSummary,
        http2::FRAME_TYPES,
        marks::{Mark, What},
        redact,
    },
};

/// `,"http":{..}` and the other protocol objects this connection proved.
/// `closed`: the TCP connection ended (it was not open at exit).
pub fn json(out: &mut String, app: &App, redact: bool, closed: bool) {
    let s = &app.summary;
    if let Some(h) = &s.http {
        key(out, "http");
        http_json(out, h, redact);
    }
    if let Some(w) = &s.websocket {
        key(out, "websocket");
        ws_json(out, w, app.local, closed);
    }
    if let Some(h) = &s.http2 {
        key(out, "http2");
        h2_json(out, h, app.local, redact);
    }
    if let Some(t) = &s.tls {
        key(out, "tls");
        tls_json(out, t);
    }
}

fn opt_string(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.push_str("null"),
    }
}

fn opt_num(out: &mut String, n: Option<impl itoa::Integer>) {
    match n {
        Some(n) => num(out, n),
        None => out.push_str("null"),
    }
}

fn bool_(out: &mut String, b: bool) {
    out.push_str(if b { "true" } else { "false" });
}

fn http_json(out: &mut String, h: &HttpSummary, redact: bool) {
    out.push_str("{\"requests\":");
    array(out, &h.requests, |out, r| request_json(out, r, redact));
    key(out, "omitted");
    num(out, h.omitted);
    out.push('}');
}

fn request_json(out: &mut String, r: &HttpRequest, redact: bool) {
    out.push_str("{\"method\":");
    string(out, &r.method);
    key(out, "path");
    string(out, &redact::path(&r.path, redact));
    key(out, "version");
    plain(out, if r.version == 0 { "HTTP/1.0" } else { "HTTP/1.1" });
    key(out, "status");
    opt_num(out, r.status);
    key(out, "ttfb_us");
    match r.ttfb_ns {
        Some(ns) => micros(out, ns),
        None => out.push_str("null"),
    }
    key(out, "keep_alive");
    bool_(out, r.keep_alive);
    out.push('}');
}

fn ws_json(out: &mut String, w: &WsSummary, local: Side, closed: bool) {
    out.push_str("{\"key_ok\":");
    bool_(out, w.key_ok);
    key(out, "subprotocol");
    opt_string(out, w.subprotocol.as_deref());
    key(out, "frames");
    let (tx, rx) = (&w.frames[local.index()], &w.frames[local.other().index()]);
    tx_rx(out, tx, rx, frames_json);
    let close = w.close.as_ref();
    key(out, "close_code");
    opt_num(out, close.and_then(|c| c.code));
    key(out, "close_reason");
    opt_string(out, close.map(|c| &*c.reason));
    key(out, "close_initiator");
    match close {
        Some(c) => plain(out, if c.initiator == local { "local" } else { "remote" }),
        None => out.push_str("null"),
    }
    // The closing handshake is complete when TCP closes after it.
    key(out, "tcp_closed_after");
    bool_(out, close.is_some() && closed);
    out.push('}');
}

fn frames_json(out: &mut String, f: &FrameCounts) {
    let counts = [
        ("text", f.text),
        ("binary", f.binary),
        ("ping", f.ping),
        ("pong", f.pong),
        ("close", f.close),
        ("continuation", f.continuation),
    ];
    json::counts(out, counts);
}

fn h2_json(out: &mut String, h: &H2Summary, local: Side, redact: bool) {
    out.push_str("{\"mode\":");
    plain(out, h.mode.name());
    key(out, "frames");
    match &h.frames {
        Some(f) => tx_rx(out, &f[local.index()], &f[local.other().index()], |out, by_type| {
            json::counts(out, FRAME_TYPES.iter().copied().zip(by_type.iter().copied()))
        }),
        None => out.push_str("null"),
    }
    key(out, "streams");
    opt_num(out, h.streams);
    key(out, "requests");
    array(out, &h.requests, |out, r| {
        out.push_str("{\"stream\":");
        num(out, r.stream);
        key(out, "method");
        opt_string(out, r.method.as_deref());
        key(out, "path");
        opt_string(out, r.path.as_deref().map(|p| redact::path(p, redact)).as_deref());
        key(out, "status");
        opt_num(out, r.status);
        out.push('}');
    });
    key(out, "omitted");
    num(out, h.omitted);
    key(out, "headers_readable");
    bool_(out, h.headers_readable);
    out.push('}');
}

fn tls_json(out: &mut String, t: &TlsSummary) {
    out.push_str("{\"version\":");
    opt_string(out, t.version);
    key(out, "sni");
    opt_string(out, t.sni.as_deref());
    key(out, "alpn");
    array(out, &t.alpn, |out, a| string(out, a));
    key(out, "alpn_selected");
    opt_string(out, t.alpn_selected.as_deref());
    out.push('}');
}

/// Exchanges shown on a text line before the rest is summed up.
const TEXT_ITEMS: usize = 3;

/// A short account for the text line: `GET / 200, GET /missing 404`.
pub fn text(out: &mut String, app: &App, redact: bool) {
    let s = &app.summary;
    let mut items: Vec<String> = Vec::new();
    if let Some(h) = &s.http {
        items.extend(h.requests.iter().map(|r| {
            let status = r.status.map_or("-".to_owned(), |s| s.to_string());
            format!("{} {} {status}", r.method, redact::path(&r.path, redact))
        }));
    }
    if let Some(w) = &s.websocket {
        items.push(ws_text(w, app.local));
    }
    if let Some(h) = &s.http2 {
        items.extend(h2_text(h, redact));
    }
    if let Some(t) = &s.tls {
        items.push(tls_text(t));
    }
    for (i, item) in items.iter().take(TEXT_ITEMS).enumerate() {
        out.push_str(if i == 0 { " " } else { ", " });
        printable(out, item);
    }
    if items.len() > TEXT_ITEMS {
        let _ = write!(out, " (+{} more)", items.len() - TEXT_ITEMS);
    }
}

/// Wire bytes (an SNI, an HTTP/2 path) must not drive the terminal.
fn printable(out: &mut String, s: &str) {
    out.extend(s.chars().map(|c| if c.is_control() { '?' } else { c }));
}

fn ws_text(w: &WsSummary, local: Side) -> String {
    let count = |f: &FrameCounts| f.text + f.binary + f.ping + f.pong + f.close + f.continuation;
    let mut s = format!(
        "ws{} {} frames out, {} in",
        if w.key_ok { "" } else { " (bad accept key)" },
        count(&w.frames[local.index()]),
        count(&w.frames[local.other().index()])
    );
    if let Some(c) = &w.close {
        let who = if c.initiator == local { "local" } else { "remote" };
        let _ = write!(s, ", closed by {who}");
        if let Some(code) = c.code {
            let _ = write!(s, " {code}");
        }
    }
    s
}

fn h2_text(h: &H2Summary, redact: bool) -> Vec<String> {
    if !h.headers_readable || h.requests.is_empty() {
        let streams = h.streams.map_or("?".to_owned(), |n| n.to_string());
        return vec![format!("h2 {} {streams} streams", h.mode.name())];
    }
    h.requests
        .iter()
        .map(|r| {
            let path = r.path.as_deref().map(|p| redact::path(p, redact));
            format!(
                "#{} {} {} {}",
                r.stream,
                r.method.as_deref().unwrap_or("?"),
                path.as_deref().unwrap_or("?"),
                r.status.map_or("-".to_owned(), |s| s.to_string())
            )
        })
        .collect()
}

fn tls_text(t: &TlsSummary) -> String {
    let mut s = format!("TLS {}", t.version.unwrap_or("?"));
    if let Some(sni) = &t.sni {
        let _ = write!(s, " sni={sni}");
    }
    if !t.alpn.is_empty() {
        let _ = write!(s, " alpn={}", t.alpn.join(","));
    }
    if let Some(sel) = &t.alpn_selected {
        let _ = write!(s, " selected={sel}");
    }
    s
}

/// The message a mark points at, as one short line: `GET /x HTTP/1.1`,
/// `HTTP/1.1 404`, `ws ping`, `HEADERS #3 GET /`, `ClientHello sni=a`.
pub fn mark(out: &mut String, app: &App, m: &Mark, redact: bool) {
    let s = &app.summary;
    let http = |i: usize| s.http.as_ref().and_then(|h| h.requests.get(i));
    let h2 = |i: usize| s.http2.as_ref().and_then(|h| h.requests.get(i));
    let version = |r: &HttpRequest| if r.version == 0 { "HTTP/1.0" } else { "HTTP/1.1" };
    let line = match m.what {
        What::Request(i) => http(i).map(|r| format!("{} {} {}", r.method, redact::path(&r.path, redact), version(r))),
        What::Response(i) => http(i).map(|r| format!("{} {}", version(r), r.status.unwrap_or_default())),
        What::Frame(name) => Some(format!("ws {name}")),
        What::H2Request(i) => h2(i).map(|r| {
            let path = r.path.as_deref().map(|p| redact::path(p, redact));
            format!(
                "HEADERS #{} {} {}",
                r.stream,
                r.method.as_deref().unwrap_or("?"),
                path.as_deref().unwrap_or("?")
            )
        }),
        What::H2Response(i) => h2(i).map(|r| format!("HEADERS #{} :status {}", r.stream, r.status.unwrap_or_default())),
        What::ClientHello => s.tls.as_ref().map(|t| {
            let mut l = "ClientHello".to_owned();
            if let Some(sni) = &t.sni {
                let _ = write!(l, " sni={sni}");
            }
            if !t.alpn.is_empty() {
                let _ = write!(l, " alpn={}", t.alpn.join(","));
            }
            l
        }),
        What::ServerHello => s
            .tls
            .as_ref()
            .map(|t| format!("ServerHello TLS {}", t.version.unwrap_or("?"))),
    };
    printable(out, line.as_deref().unwrap_or("?"));
}
