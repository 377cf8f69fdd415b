//! Application protocols, detected from the payload heads the kernel ships:
//! HTTP/1.x, WebSocket, HTTP/2 and TLS. A flow gets a protocol only once its
//! bytes prove it; anything else stays `unknown`.
//!
//! Each parser is a state machine fed the contiguous bytes of one direction
//! (`Side`) by the reassembler (`stream`). It answers with a `Feed`: how many
//! bytes it parsed, and how many that follow it does not need to see (a body,
//! a frame's payload), so that the kernel stops shipping them. No input may
//! make a parser panic, loop or grow without bound.
use std::{cell::RefCell, sync::Arc};

use spare::Lists;

pub mod http1;
pub mod http2;
pub mod marks;
pub mod redact;
pub mod replay;
pub mod spare;
pub mod tls;
pub mod websocket;

/// A request method, shared: the common ones are made once per process.
pub(crate) fn method(m: &str) -> Arc<str> {
    static COMMON: std::sync::LazyLock<[Arc<str>; 9]> = std::sync::LazyLock::new(|| {
        [
            "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
        ]
        .map(Arc::from)
    });
    COMMON
        .iter()
        .find(|c| ***c == *m)
        .map_or_else(|| Arc::from(m), Arc::clone)
}

/// Strings kept by their hash, the latest in each slot.
const SHARED_SLOTS: usize = 256;

thread_local! {
    /// Strings seen lately: a service asked the same paths (or speaking the
    /// same subprotocol, closing with the same reason) over and over then
    /// shares one copy of each across its flows' records.
    static SHARED: RefCell<Vec<Option<Arc<str>>>> = const { RefCell::new(Vec::new()) };
}

/// A request path (or subprotocol, or close reason), shared with the last
/// flow that had it when that one is still remembered.
pub(crate) fn shared(s: &str) -> Arc<str> {
    use std::hash::BuildHasher;
    let slot = foldhash::fast::FixedState::default().hash_one(s) as usize % SHARED_SLOTS;
    SHARED.with_borrow_mut(|kept| {
        if kept.is_empty() {
            kept.resize(SHARED_SLOTS, None);
        }
        match &kept[slot] {
            Some(known) if **known == *s => Arc::clone(known),
            _ => Arc::clone(kept[slot].insert(Arc::from(s))),
        }
    })
}

/// At most `max` bytes of `bytes` as text (invalid UTF-8 replaced), shared.
pub(crate) fn shared_prefix(bytes: &[u8], max: usize) -> Arc<str> {
    shared(&String::from_utf8_lossy(&bytes[..bytes.len().min(max)]))
}

/// Who sent the bytes: the endpoint that opened the connection, or the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a parser did with the bytes it was given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Feed {
    /// Bytes parsed, no longer needed.
    pub used: usize,
    /// Bytes right after `used` that the parser does not need to see; may
    /// reach beyond what it was given.
    pub skip: u64,
}

impl Feed {
    pub const WAIT: Feed = Feed { used: 0, skip: 0 };

    pub fn progressed(&self) -> bool {
        self.used > 0 || self.skip > 0
    }
}

/// At most this many bytes wait for a parser in one direction: a message
/// head larger than this is not parsed (the parser is told it lost sync).
/// Servers refuse larger heads anyway (8 KiB is common), and it bounds what
/// a slow client can make the tracer hold per connection.
pub const MAX_PENDING: usize = 16 * 1024;

/// At most this many requests are kept per connection; more are counted.
pub const MAX_REQUESTS: usize = 1024;

/// One HTTP/1.x request and its response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpRequest {
    /// Shared, as `path` is: each socket's record of the flow holds a copy
    /// of the request list, which then costs no allocation per string.
    pub method: Arc<str>,
    /// As sent, query string included: output redacts it (see `redact`).
    pub path: Arc<str>,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The final response's status (interim 1xx responses other than 101 are skipped).
    pub status: Option<u16>,
    /// From the request's first byte to the response's first byte.
    pub ttfb_ns: Option<u64>,
    /// Whether the connection stays open after this exchange.
    pub keep_alive: bool,
}

/// WebSocket frames sent by one side, by opcode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameCounts {
    pub text: u64,
    pub binary: u64,
    pub ping: u64,
    pub pong: u64,
    pub close: u64,
    pub continuation: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H2Mode {
    PriorKnowledge,
    H2cUpgrade,
    Alpn,
}

impl H2Mode {
    pub fn name(self) -> &'static str {
        match self {
            H2Mode::PriorKnowledge => "prior-knowledge",
            H2Mode::H2cUpgrade => "h2c-upgrade",
            H2Mode::Alpn => "alpn",
        }
    }
}

/// One HTTP/2 stream's request and response pseudo-headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct H2Request {
    pub stream: u32,
    pub method: Option<Arc<str>>,
    /// Query string included: output redacts it.
    pub path: Option<Arc<str>>,
    pub status: Option<u16>,
}

mod stream;
mod track;

pub use track::{Control, Tracker};
pub use websocket::CloseFrame;

/// What one flow carried, sides named by who sent (client: the opener).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub protocol: &'static str,
    pub http: Option<HttpSummary>,
    pub websocket: Option<WsSummary>,
    pub http2: Option<H2Summary>,
    pub tls: Option<TlsSummary>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpSummary {
    pub requests: Vec<HttpRequest>,
    pub omitted: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsSummary {
    pub key_ok: bool,
    pub subprotocol: Option<Arc<str>>,
    /// By `Side::index`.
    pub frames: [FrameCounts; 2],
    pub close: Option<CloseFrame>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Summary {
    pub mode: H2Mode,
    /// Frames by type (`http2::FRAME_TYPES` order), by `Side::index`; none
    /// when the frames are encrypted.
    pub frames: Option<[[u64; http2::FRAME_TYPES.len()]; 2]>,
    /// Unknown when the frames are encrypted (`alpn`).
    pub streams: Option<u64>,
    pub requests: Vec<H2Request>,
    pub omitted: u64,
    pub headers_readable: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSummary {
    pub version: Option<&'static str>,
    pub sni: Option<Arc<str>>,
    pub alpn: Vec<Arc<str>>,
    pub alpn_selected: Option<Arc<str>>,
}

thread_local! {
    /// Request lists of finished parsers and printed records, for the next
    /// parsers' lists and records' copies.
    pub(crate) static HTTP_REQUESTS: RefCell<Lists<HttpRequest>> = const { RefCell::new(Lists::new()) };
    pub(crate) static H2_REQUESTS: RefCell<Lists<H2Request>> = const { RefCell::new(Lists::new()) };
}

impl Summary {
    pub const UNKNOWN: &'static str = "unknown";

    /// Hands the request lists on to the next summaries, once this one is printed.
    pub fn recycle(self) {
        if let Some(h) = self.http {
            spare::give_list(&HTTP_REQUESTS, h.requests);
        }
        if let Some(h) = self.http2 {
            spare::give_list(&H2_REQUESTS, h.requests);
        }
        if let Some(t) = self.tls {
            spare::give_list(&tls::PROTOCOLS, t.alpn);
        }
    }

    fn of(t: &Tracker) -> Summary {
        let parts = t.parts();
        let http = parts.http.filter(|h| h.proven());
        let mut s = Summary {
            protocol: Self::UNKNOWN,
            http: http.map(|h| HttpSummary {
                requests: spare::copy_of(&HTTP_REQUESTS, h.requests()),
                omitted: h.omitted(),
            }),
            ..Summary::default()
        };
        if let Some(h) = http {
            let v0 = h.requests().first().is_some_and(|r| r.version == 0);
            s.protocol = if v0 { "http/1.0" } else { "http/1.1" };
        }
        if let Some(w) = parts.websocket {
            s.protocol = "websocket";
            let (key_ok, subprotocol) = match http.and_then(|h| h.upgrade()) {
                Some(http1::Upgrade::WebSocket { key_ok, subprotocol }) => (*key_ok, subprotocol.clone()),
                _ => (false, None),
            };
            s.websocket = Some(WsSummary {
                key_ok,
                subprotocol,
                frames: [w.frames(Side::Client), w.frames(Side::Server)],
                close: w.close().cloned(),
            });
        }
        if let Some(p) = parts.http2.filter(|p| p.proven()) {
            s.protocol = "http/2";
            s.http2 = Some(H2Summary {
                mode: p.mode(),
                frames: Some([*p.frames(Side::Client), *p.frames(Side::Server)]),
                streams: Some(p.streams()),
                requests: spare::copy_of(&H2_REQUESTS, p.requests()),
                omitted: p.omitted(),
                headers_readable: p.headers_readable(),
            });
        }
        if let Some(t) = parts.tls.filter(|t| t.proven()) {
            s.protocol = "tls";
            s.tls = Some(TlsSummary {
                version: t.version(),
                sni: t.sni().cloned(),
                alpn: spare::copy_of(&tls::PROTOCOLS, t.alpn()),
                alpn_selected: t.alpn_selected().cloned(),
            });
            // Proven only when the server's hello shows it (TLS 1.2): in 1.3
            // the choice travels encrypted.
            if t.alpn_selected().is_some_and(|p| &**p == "h2") {
                s.protocol = "http/2";
                s.http2 = Some(H2Summary {
                    mode: H2Mode::Alpn,
                    frames: None,
                    streams: None,
                    requests: Vec::new(),
                    omitted: 0,
                    headers_readable: false,
                });
            }
        }
        s
    }
}
