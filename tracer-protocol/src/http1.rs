//! HTTP/1.x (RFC 9112): request and response heads are parsed, bodies are
//! skipped by their framing, and responses are matched to requests in order
//! (pipelining included). Only the headers that frame messages or negotiate
//! an upgrade are looked at, and no header value outlives the head it came in.
use std::{cell::RefCell, collections::VecDeque};

use httparse::Status;

use super::{
    Feed, HTTP_REQUESTS, HttpRequest, MAX_REQUESTS, Side,
    spare::{self, Spares},
    websocket,
};

thread_local! {
    /// Finished flows' queues (those of up to `SPARE_QUEUE` entries),
    /// emptied, for the next flows.
    static QUEUES: RefCell<Spares<VecDeque<Awaiting>>> = const { RefCell::new(Spares::new(spare::KEEP)) };
}

/// Queues longer than this are freed, not kept.
const SPARE_QUEUE: usize = 16;

/// More headers than this and the head is taken as not HTTP.
const MAX_HEADERS: usize = 64;

/// Requests whose response has not come yet; more are only counted.
const MAX_AWAITING: usize = 64;

const MAX_PATH: usize = 2048;
const MAX_METHOD: usize = 64;
const MAX_SUBPROTOCOL: usize = 128;

/// The protocol a 101 response switched the connection to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upgrade {
    WebSocket {
        /// The server's `Sec-WebSocket-Accept` answers the client's key.
        key_ok: bool,
        subprotocol: Option<std::sync::Arc<str>>,
    },
    H2c,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Http1 {
    flow: Flow,
    halves: [Half; 2],
    awaiting: VecDeque<Awaiting>,
    requests: Vec<HttpRequest>,
    omitted: u64,
    proven: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Flow {
    #[default]
    Http,
    /// The bytes that follow belong to another parser.
    Upgraded(Upgrade),
    /// Not HTTP, or no longer: a tunnel, or a switch to a protocol we do not know.
    Over,
}

/// One direction's position in its message stream.
#[derive(Debug, Default, PartialEq, Eq)]
struct Half {
    phase: Phase,
    /// When the first bytes of a head still incomplete came.
    started: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Head,
    ChunkSize,
    Trailers,
    /// Lost sync: only a message start lets parsing resume.
    Resync,
    /// The body runs until the connection closes.
    Done,
}

#[derive(Debug, PartialEq, Eq)]
enum Awaiting {
    Request(Pending),
    /// Requests not kept (over `MAX_AWAITING`, or lost in a gap): their
    /// responses must still be matched, to nothing, to keep the order.
    Unseen(u64),
}

/// What answering a request needs to know about it.
#[derive(Debug, PartialEq, Eq)]
struct Pending {
    /// In `requests`, unless over `MAX_REQUESTS`.
    index: Option<usize>,
    /// The response to a HEAD has no body, whatever its headers say.
    head: bool,
    /// A 2xx to a CONNECT turns the connection into a tunnel.
    connect: bool,
    ts: u64,
    keep_alive: bool,
    offer: Offer,
}

/// The upgrades a request asked for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Offer {
    /// The `Sec-WebSocket-Accept` that proves the server read the key.
    websocket: Option<[u8; websocket::ACCEPT_LEN]>,
    h2c: bool,
}

impl Default for Http1 {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Http1 {
    fn drop(&mut self) {
        let mut awaiting = std::mem::take(&mut self.awaiting);
        // A queue grown by pipelining is let go: spares stay small.
        if (1..=SPARE_QUEUE).contains(&awaiting.capacity()) {
            awaiting.clear();
            spare::give(&QUEUES, awaiting);
        }
        spare::give_list(&HTTP_REQUESTS, std::mem::take(&mut self.requests));
    }
}

/// How a message's body is delimited.
enum Body {
    Length(u64),
    Chunked,
    UntilClose,
}

/// A head whose framing cannot be trusted.
struct Malformed;

/// The header values the parser needs, borrowed from the head being parsed.
#[derive(Default)]
struct Fields<'a> {
    close: bool,
    keep_alive: bool,
    websocket: bool,
    h2c: bool,
    length: Option<u64>,
    /// Present with Transfer-Encoding: whether `chunked` is the final coding.
    chunked: Option<bool>,
    key: Option<&'a [u8]>,
    accept: Option<&'a [u8]>,
    protocol: Option<&'a [u8]>,
}

impl Http1 {
    pub fn new() -> Self {
        Self {
            flow: Flow::Http,
            halves: Default::default(),
            awaiting: spare::take(&QUEUES).unwrap_or_default(),
            requests: spare::list(&HTTP_REQUESTS),
            omitted: 0,
            proven: false,
        }
    }

    pub fn feed(&mut self, side: Side, data: &[u8], ts_ns: u64) -> Feed {
        match self.flow {
            // The caller hands what follows to the next parser.
            Flow::Upgraded(_) => return Feed::WAIT,
            Flow::Over => return all(data),
            Flow::Http => {}
        }
        if data.is_empty() {
            return Feed::WAIT;
        }
        match self.half(side).phase {
            Phase::Head | Phase::Resync => self.head(side, data, ts_ns),
            Phase::ChunkSize => self.chunk_size(side, data),
            Phase::Trailers => self.trailer(side, data),
            Phase::Done => all(data),
        }
    }

    pub fn gap(&mut self, side: Side) {
        if self.flow != Flow::Http {
            return;
        }
        match side {
            // Bytes lost where a request would start held at least that
            // request, whose response must not be taken for the next one's
            // (unless they followed an upgrade request: those are not HTTP).
            Side::Client if self.half(side).phase == Phase::Head && !self.upgrade_asked() => self.push_unseen(),
            Side::Client => {}
            // How many responses went missing is unknown: rather than match
            // the next ones to the wrong requests, match none of those waiting.
            Side::Server => self.awaiting.clear(),
        }
        *self.half_mut(side) = Half {
            phase: Phase::Resync,
            started: None,
        };
    }

    pub fn wants(&self, side: Side) -> bool {
        self.flow == Flow::Http && self.half(side).phase != Phase::Done
    }

    pub fn requests(&self) -> &[HttpRequest] {
        &self.requests
    }

    pub fn omitted(&self) -> u64 {
        self.omitted
    }

    pub fn proven(&self) -> bool {
        self.proven
    }

    pub fn upgrade(&self) -> Option<&Upgrade> {
        match &self.flow {
            Flow::Upgraded(upgrade) => Some(upgrade),
            _ => None,
        }
    }

    fn half(&self, side: Side) -> &Half {
        &self.halves[side.index()]
    }

    fn half_mut(&mut self, side: Side) -> &mut Half {
        &mut self.halves[side.index()]
    }

    fn head(&mut self, side: Side, data: &[u8], ts_ns: u64) -> Feed {
        if side == Side::Client && self.upgrade_asked() {
            return Feed::WAIT;
        }
        // Stray line ends between messages would otherwise start a head early.
        let blank = data.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
        if blank > 0 {
            return Feed { used: blank, skip: 0 };
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match side {
            Side::Client => {
                let mut request = httparse::Request::new(&mut headers);
                let parsed = request.parse(data);
                self.parsed(side, data, ts_ns, parsed, |this, started| {
                    this.request(&request, started)
                })
            }
            Side::Server => {
                let mut response = httparse::Response::new(&mut headers);
                let parsed = response.parse(data);
                self.parsed(side, data, ts_ns, parsed, |this, started| {
                    this.response(&response, started)
                })
            }
        }
    }

    /// Common handling of a head parse: `accept` takes a complete head, given
    /// the time of its first byte, and returns the bytes to skip after it.
    fn parsed(
        &mut self,
        side: Side,
        data: &[u8],
        ts_ns: u64,
        parsed: httparse::Result<usize>,
        accept: impl FnOnce(&mut Self, u64) -> Result<u64, Malformed>,
    ) -> Feed {
        match parsed {
            Ok(Status::Partial) => {
                self.half_mut(side).started.get_or_insert(ts_ns);
                Feed::WAIT
            }
            Ok(Status::Complete(used)) => {
                let started = self.half_mut(side).started.take().unwrap_or(ts_ns);
                match accept(self, started) {
                    Ok(skip) => Feed { used, skip },
                    Err(Malformed) => self.desync(side, data),
                }
            }
            Err(_) => self.desync(side, data),
        }
    }

    /// Drops `data`: parsing resumes at the next message start, if any.
    fn desync(&mut self, side: Side, data: &[u8]) -> Feed {
        if side == Side::Client && !self.proven {
            self.flow = Flow::Over;
        } else {
            self.gap(side);
        }
        all(data)
    }

    fn upgrade_asked(&self) -> bool {
        self.awaiting
            .iter()
            .any(|a| matches!(a, Awaiting::Request(p) if p.offer.asked()))
    }

    fn request(&mut self, request: &httparse::Request, ts: u64) -> Result<u64, Malformed> {
        let fields = Fields::scan(request.headers)?;
        let body = match fields.chunked {
            Some(true) => Body::Chunked,
            // A request body must be delimited (RFC 9112 §6.3): the server answers 400.
            Some(false) => return Err(Malformed),
            None => Body::Length(fields.length.unwrap_or(0)),
        };
        self.proven = true;
        let method = request.method.unwrap_or_default();
        let version = request.version.unwrap_or(1);
        let keep_alive = fields.keeps_alive(version);
        let record = HttpRequest {
            method: crate::method(bounded(method, MAX_METHOD)),
            path: crate::shared(bounded(request.path.unwrap_or_default(), MAX_PATH)),
            version,
            keep_alive,
            ..HttpRequest::default()
        };
        let pending = Pending {
            index: None,
            head: method == "HEAD",
            connect: method == "CONNECT",
            ts,
            keep_alive,
            offer: fields.offer(),
        };
        self.enqueue(pending, record);
        Ok(self.start_body(Side::Client, body))
    }

    fn response(&mut self, response: &httparse::Response, ts: u64) -> Result<u64, Malformed> {
        let fields = Fields::scan(response.headers)?;
        let code = response.code.unwrap_or_default();
        self.first_response_byte(ts);
        if (100..200).contains(&code) && code != 101 {
            return Ok(0);
        }
        let pending = self.pop_awaiting();
        if code == 101 {
            self.answer(pending.as_ref(), code, true);
            self.switch(pending.as_ref(), &fields);
            return Ok(0);
        }
        let tunnel = pending.as_ref().is_some_and(|p| p.connect) && (200..300).contains(&code);
        let bodiless = tunnel || pending.as_ref().is_some_and(|p| p.head) || code == 204 || code == 304;
        let body = if bodiless {
            Body::Length(0)
        } else {
            fields.response_body()
        };
        let keep_alive = pending.as_ref().is_some_and(|p| p.keep_alive)
            && fields.keeps_alive(response.version.unwrap_or(1))
            && !matches!(body, Body::UntilClose);
        self.answer(pending.as_ref(), code, keep_alive);
        if tunnel {
            self.flow = Flow::Over;
            return Ok(0);
        }
        Ok(self.start_body(Side::Server, body))
    }

    fn answer(&mut self, pending: Option<&Pending>, status: u16, keep_alive: bool) {
        if let Some(record) = pending.and_then(|p| p.index).map(|i| &mut self.requests[i]) {
            record.status = Some(status);
            record.keep_alive = keep_alive;
        }
    }

    /// Switching to a protocol this module cannot hand over ends HTTP all the same.
    fn switch(&mut self, pending: Option<&Pending>, fields: &Fields) {
        self.flow = match pending.and_then(|p| p.offer.accepted(fields)) {
            Some(upgrade) => Flow::Upgraded(upgrade),
            None => Flow::Over,
        };
    }

    /// Interim responses count too: they are the server's first answer.
    fn first_response_byte(&mut self, ts: u64) {
        let Some(Awaiting::Request(pending)) = self.awaiting.front() else {
            return;
        };
        if let Some(record) = pending.index.map(|i| &mut self.requests[i]) {
            record.ttfb_ns.get_or_insert(ts.saturating_sub(pending.ts));
        }
    }

    /// Returns the bytes to skip now.
    fn start_body(&mut self, side: Side, body: Body) -> u64 {
        let (phase, skip) = match body {
            Body::Length(n) => (Phase::Head, n),
            Body::Chunked => (Phase::ChunkSize, 0),
            Body::UntilClose => (Phase::Done, u64::MAX),
        };
        self.half_mut(side).phase = phase;
        skip
    }

    fn enqueue(&mut self, pending: Pending, record: HttpRequest) {
        let waiting = self
            .awaiting
            .iter()
            .filter(|a| matches!(a, Awaiting::Request(_)))
            .count();
        if waiting >= MAX_AWAITING {
            self.omitted += 1;
            self.push_unseen();
            return;
        }
        let index = if self.requests.len() < MAX_REQUESTS {
            spare::room_for_one(&HTTP_REQUESTS, &mut self.requests);
            self.requests.push(record);
            Some(self.requests.len() - 1)
        } else {
            self.omitted += 1;
            None
        };
        self.awaiting.push_back(Awaiting::Request(Pending { index, ..pending }));
    }

    /// Runs of unseen requests share an entry, so the queue stays bounded.
    fn push_unseen(&mut self) {
        match self.awaiting.back_mut() {
            Some(Awaiting::Unseen(n)) => *n += 1,
            _ => self.awaiting.push_back(Awaiting::Unseen(1)),
        }
    }

    fn pop_awaiting(&mut self) -> Option<Pending> {
        match self.awaiting.front_mut()? {
            Awaiting::Unseen(n) if *n > 1 => {
                *n -= 1;
                None
            }
            _ => match self.awaiting.pop_front()? {
                Awaiting::Request(pending) => Some(pending),
                Awaiting::Unseen(_) => None,
            },
        }
    }

    fn chunk_size(&mut self, side: Side, data: &[u8]) -> Feed {
        match httparse::parse_chunk_size(data) {
            Ok(Status::Partial) => Feed::WAIT,
            Ok(Status::Complete((used, 0))) => {
                self.half_mut(side).phase = Phase::Trailers;
                Feed { used, skip: 0 }
            }
            // The chunk's data, then its CRLF.
            Ok(Status::Complete((used, size))) => Feed {
                used,
                skip: size.saturating_add(2),
            },
            Err(_) => self.desync(side, data),
        }
    }

    /// One trailer line at a time, so that none has to be held whole.
    fn trailer(&mut self, side: Side, data: &[u8]) -> Feed {
        let Some(end) = data.iter().position(|&b| b == b'\n') else {
            return Feed::WAIT;
        };
        if data[..end].trim_ascii().is_empty() {
            self.half_mut(side).phase = Phase::Head;
        }
        Feed { used: end + 1, skip: 0 }
    }
}

impl Offer {
    fn asked(&self) -> bool {
        self.websocket.is_some() || self.h2c
    }

    /// The upgrade a 101 granted, if it is one that was asked for.
    fn accepted(&self, fields: &Fields) -> Option<Upgrade> {
        match &self.websocket {
            Some(expected) if fields.websocket => Some(Upgrade::WebSocket {
                key_ok: fields.accept.is_some_and(|a| a.trim_ascii() == expected),
                subprotocol: fields
                    .protocol
                    .map(|p| crate::shared_prefix(p.trim_ascii(), MAX_SUBPROTOCOL)),
            }),
            _ => (self.h2c && fields.h2c).then_some(Upgrade::H2c),
        }
    }
}

impl<'a> Fields<'a> {
    fn scan(headers: &[httparse::Header<'a>]) -> Result<Self, Malformed> {
        let mut fields = Fields::default();
        for header in headers {
            fields.read(header.name, header.value)?;
        }
        Ok(fields)
    }

    fn read(&mut self, name: &str, value: &'a [u8]) -> Result<(), Malformed> {
        let is = |expected: &str| name.eq_ignore_ascii_case(expected);
        if is("connection") {
            for token in tokens(value) {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if is("upgrade") {
            for token in tokens(value) {
                self.websocket |= token.eq_ignore_ascii_case(b"websocket");
                self.h2c |= token.eq_ignore_ascii_case(b"h2c");
            }
        } else if is("content-length") {
            self.length = Some(content_length(value, self.length)?);
        } else if is("transfer-encoding") {
            self.chunked = Some(tokens(value).last().is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")));
        } else if is("sec-websocket-key") {
            self.key = Some(value);
        } else if is("sec-websocket-accept") {
            self.accept = Some(value);
        } else if is("sec-websocket-protocol") {
            self.protocol = Some(value);
        }
        Ok(())
    }

    /// RFC 9112 §9.3: HTTP/1.1 persists unless told to close; HTTP/1.0 only
    /// when asked to.
    fn keeps_alive(&self, version: u8) -> bool {
        !self.close && (version >= 1 || self.keep_alive)
    }

    fn offer(&self) -> Offer {
        let key = self.key.filter(|_| self.websocket);
        Offer {
            websocket: key.map(|k| websocket::accept_key(k.trim_ascii())),
            h2c: self.h2c,
        }
    }

    /// RFC 9112 §6.3, for a response that may have a body.
    fn response_body(&self) -> Body {
        match (self.chunked, self.length) {
            (Some(true), _) => Body::Chunked,
            (None, Some(length)) => Body::Length(length),
            _ => Body::UntilClose,
        }
    }
}

/// A Content-Length value; repeats (in a list or in several headers) must agree.
fn content_length(value: &[u8], before: Option<u64>) -> Result<u64, Malformed> {
    let mut length = before;
    for token in tokens(value) {
        // `parse` alone would take a sign.
        if token.is_empty() || !token.iter().all(u8::is_ascii_digit) {
            return Err(Malformed);
        }
        let n = std::str::from_utf8(token)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or(Malformed)?;
        if length.is_some_and(|l| l != n) {
            return Err(Malformed);
        }
        length = Some(n);
    }
    length.ok_or(Malformed)
}

/// The elements of a comma-separated header value.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

fn bounded(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

fn all(data: &[u8]) -> Feed {
    Feed {
        used: data.len(),
        skip: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_PENDING;
    use proptest::prelude::*;

    const WS_REQUEST: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";
    const WS_ACCEPTED: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n";
    /// RFC 6455 §5.7: "Hello", masked (client) and unmasked (server).
    const WS_CLIENT_FRAME: &[u8] = &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    const WS_SERVER_FRAME: &[u8] = &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    const CHUNKED: &str = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Expires\r\n\r\n\
        7\r\nMozilla\r\n11\r\nDeveloper Network\r\n0\r\nExpires: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n";

    /// The caller's side of the feeding contract, for one direction.
    #[derive(Debug, Default, PartialEq)]
    struct Pipe {
        buf: Vec<u8>,
        skip: u64,
    }

    /// Like the tracker: take the bytes, then feed both sides until neither moves.
    fn deliver(http: &mut Http1, pipes: &mut [Pipe; 2], side: Side, bytes: &[u8], ts: u64) {
        let pipe = &mut pipes[side.index()];
        let dropped = bytes.len().min(usize::try_from(pipe.skip).unwrap_or(usize::MAX));
        pipe.skip -= dropped as u64;
        pipe.buf.extend_from_slice(&bytes[dropped..]);
        while [Side::Client, Side::Server]
            .into_iter()
            .any(|s| step(http, &mut pipes[s.index()], s, ts))
        {}
    }

    /// One feed; whether it progressed.
    fn step(http: &mut Http1, pipe: &mut Pipe, side: Side, ts: u64) -> bool {
        if pipe.buf.is_empty() {
            return false;
        }
        let feed = http.feed(side, &pipe.buf, ts);
        if !feed.progressed() {
            if pipe.buf.len() >= MAX_PENDING {
                http.gap(side);
                pipe.buf.clear();
            }
            return false;
        }
        pipe.buf.drain(..feed.used);
        let now = feed.skip.min(pipe.buf.len() as u64);
        pipe.buf.drain(..now as usize);
        pipe.skip = feed.skip - now;
        true
    }

    fn replay<'a>(chunks: impl IntoIterator<Item = (Side, &'a [u8], u64)>) -> (Http1, [Pipe; 2]) {
        let mut http = Http1::new();
        let mut pipes = Default::default();
        for (side, bytes, ts) in chunks {
            deliver(&mut http, &mut pipes, side, bytes, ts);
        }
        (http, pipes)
    }

    /// Segment `i` arrives at `(i + 1) * 1000` ns.
    fn run(segments: &[(Side, &str)]) -> Http1 {
        let timed = segments
            .iter()
            .zip(1..)
            .map(|(&(side, s), i)| (side, s.as_bytes(), i * 1000));
        replay(timed).0
    }

    fn request(method: &str, path: &str, status: Option<u16>, ttfb_ns: Option<u64>, keep_alive: bool) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            path: path.into(),
            version: 1,
            status,
            ttfb_ns,
            keep_alive,
        }
    }

    fn statuses(http: &Http1) -> Vec<Option<u16>> {
        http.requests().iter().map(|r| r.status).collect()
    }

    use Side::{Client as C, Server as S};

    #[test]
    fn get_with_keep_alive() {
        let http = run(&[
            (
                C,
                "GET /index.html?lang=en HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
            ),
            (
                S,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>",
            ),
        ]);
        assert!(http.proven());
        assert_eq!(
            http.requests(),
            [request("GET", "/index.html?lang=en", Some(200), Some(1000), true)]
        );
        assert!(http.wants(C) && http.wants(S));
    }

    #[test]
    fn three_requests_with_a_404() {
        let http = run(&[
            (C, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            (S, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
            (C, "GET /missing HTTP/1.1\r\nHost: a\r\n\r\n"),
            (S, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"),
            (C, "GET /style.css HTTP/1.1\r\nHost: a\r\n\r\n"),
            (S, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\np{}"),
        ]);
        let paths: Vec<_> = http.requests().iter().map(|r| &*r.path).collect();
        assert_eq!(paths, ["/", "/missing", "/style.css"]);
        assert_eq!(statuses(&http), [Some(200), Some(404), Some(200)]);
        assert_eq!(http.omitted(), 0);
    }

    #[test]
    fn http10_closes_unless_both_keep_alive() {
        let http = run(&[
            (C, "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
            (
                S,
                "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nhi",
            ),
            (C, "GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
            (S, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi"),
        ]);
        let keep: Vec<_> = http.requests().iter().map(|r| (r.version, r.keep_alive)).collect();
        assert_eq!(keep, [(0, true), (0, false)]);
    }

    #[test]
    fn http10_without_length_reads_until_close() {
        let mut http = run(&[(C, "GET / HTTP/1.0\r\n\r\n")]);
        let response = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it";
        assert_eq!(
            http.feed(S, response, 2000),
            Feed {
                used: response.len() - 9,
                skip: u64::MAX
            }
        );
        assert_eq!(http.requests()[0].status, Some(200));
        assert!(!http.requests()[0].keep_alive);
        assert!(!http.wants(S));
    }

    #[test]
    fn head_response_has_no_body() {
        let mut http = run(&[(
            C,
            "HEAD /big.iso HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        )]);
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n";
        assert_eq!(
            http.feed(S, head, 2000),
            Feed {
                used: head.len(),
                skip: 0
            }
        );
        http.feed(S, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 3000);
        assert_eq!(statuses(&http), [Some(200), Some(200)]);
    }

    #[test]
    fn no_body_for_204_and_304() {
        let http = run(&[
            (
                C,
                "DELETE /item/7 HTTP/1.1\r\nHost: a\r\n\r\nGET /logo.png HTTP/1.1\r\nIf-None-Match: \"x\"\r\n\r\n",
            ),
            (
                S,
                "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 500\r\n\r\n",
            ),
            (C, "GET /after HTTP/1.1\r\n\r\n"),
            (S, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ]);
        assert_eq!(statuses(&http), [Some(204), Some(304), Some(200)]);
    }

    #[test]
    fn chunked_response_with_trailer() {
        let http = run(&[
            (C, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"),
            (S, CHUNKED),
            (S, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
        ]);
        assert_eq!(statuses(&http), [Some(200), Some(201)]);
        assert!(http.requests()[0].keep_alive);
    }

    #[test]
    fn chunked_response_skips_chunk_data() {
        let mut http = run(&[(C, "GET / HTTP/1.1\r\n\r\n")]);
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(
            http.feed(S, head.as_bytes(), 0),
            Feed {
                used: head.len(),
                skip: 0
            }
        );
        assert_eq!(
            http.feed(S, b"1a;ext=1\r\n", 0),
            Feed {
                used: 10,
                skip: 0x1a + 2
            }
        );
        assert_eq!(http.feed(S, b"0\r\n\r\n", 0), Feed { used: 3, skip: 0 });
        assert_eq!(http.feed(S, b"\r\n", 0), Feed { used: 2, skip: 0 });
        assert_eq!(http.half(S).phase, Phase::Head);
    }

    #[test]
    fn request_bodies_are_skipped() {
        let http = run(&[
            (
                C,
                "POST /api/items HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n",
            ),
            (C, "{\"id\":42}"),
            (
                C,
                "POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n0\r\n\r\n",
            ),
            (C, "GET /done HTTP/1.1\r\n\r\n"),
            (S, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
            (
                S,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            ),
        ]);
        let got: Vec<_> = http
            .requests()
            .iter()
            .map(|r| (&*r.method, &*r.path, r.status))
            .collect();
        assert_eq!(
            got,
            [
                ("POST", "/api/items", Some(201)),
                ("POST", "/upload", Some(200)),
                ("GET", "/done", Some(200))
            ]
        );
    }

    #[test]
    fn pipelined_requests_match_in_order() {
        let http = run(&[
            (
                C,
                "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
            ),
            (
                S,
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            ),
            (S, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc"),
        ]);
        let expected = [
            request("GET", "/a", Some(200), Some(1000), true),
            request("GET", "/b", Some(404), Some(1000), true),
            request("GET", "/c", Some(200), Some(2000), true),
        ];
        assert_eq!(http.requests(), expected);
    }

    #[test]
    fn continue_100_is_skipped() {
        let http = run(&[
            (
                C,
                "PUT /file HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            ),
            (S, "HTTP/1.1 100 Continue\r\n\r\n"),
            (C, "hello"),
            (S, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
        ]);
        assert_eq!(http.requests(), [request("PUT", "/file", Some(201), Some(1000), true)]);
    }

    #[test]
    fn head_split_across_feeds_times_its_first_byte() {
        let head = b"GET /split HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut http = Http1::new();
        assert_eq!(http.feed(C, &head[..8], 100), Feed::WAIT);
        assert_eq!(http.feed(C, &head[..20], 150), Feed::WAIT);
        assert!(!http.proven());
        assert_eq!(
            http.feed(C, head, 200),
            Feed {
                used: head.len(),
                skip: 0
            }
        );
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(http.feed(S, &response[..10], 700), Feed::WAIT);
        http.feed(S, response, 900);
        assert_eq!(http.requests()[0].ttfb_ns, Some(600));
    }

    #[test]
    fn connection_close_from_either_side() {
        let http = run(&[
            (C, "GET /a HTTP/1.1\r\nConnection: close\r\n\r\n"),
            (S, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            (C, "GET /b HTTP/1.1\r\n\r\n"),
            (S, "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"),
        ]);
        let keep: Vec<_> = http.requests().iter().map(|r| r.keep_alive).collect();
        assert_eq!(keep, [false, false]);
    }

    #[test]
    fn websocket_upgrade_hands_over_the_rest() {
        let client = [WS_REQUEST.as_bytes(), WS_CLIENT_FRAME].concat();
        let server = [WS_ACCEPTED.as_bytes(), WS_SERVER_FRAME].concat();
        let (http, pipes) = replay([(C, &client[..], 1000), (S, &server[..], 3000)]);
        let upgrade = Upgrade::WebSocket {
            key_ok: true,
            subprotocol: Some("chat".into()),
        };
        assert_eq!(http.upgrade(), Some(&upgrade));
        assert_eq!(http.requests(), [request("GET", "/chat", Some(101), Some(2000), true)]);
        assert_eq!(pipes.map(|p| p.buf), [WS_CLIENT_FRAME, WS_SERVER_FRAME]);
        assert!(!http.wants(C) && !http.wants(S));
    }

    #[test]
    fn websocket_upgrade_with_a_wrong_accept() {
        let wrong = WS_ACCEPTED.replace("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "dGhlIHNhbXBsZSBub25jZQ==");
        let http = run(&[(C, WS_REQUEST), (S, &wrong)]);
        assert_eq!(
            http.upgrade(),
            Some(&Upgrade::WebSocket {
                key_ok: false,
                subprotocol: Some("chat".into())
            })
        );
    }

    #[test]
    fn refused_upgrade_goes_on_as_http() {
        let http = run(&[
            (C, WS_REQUEST),
            (C, "GET /next HTTP/1.1\r\n\r\n"),
            (S, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
            (S, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ]);
        assert_eq!(http.upgrade(), None);
        assert_eq!(statuses(&http), [Some(400), Some(200)]);
    }

    #[test]
    fn h2c_upgrade() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let settings = [0, 0, 0, 4, 0, 0, 0, 0, 0];
        let request = "GET / HTTP/1.1\r\nHost: server.example.com\r\nConnection: Upgrade, HTTP2-Settings\r\n\
            Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
        let client = [request.as_bytes(), preface].concat();
        let response = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
        let server = [response.as_bytes(), &settings].concat();
        let (http, pipes) = replay([(C, &client[..], 1000), (S, &server[..], 2000)]);
        assert_eq!(http.upgrade(), Some(&Upgrade::H2c));
        assert_eq!(http.requests()[0].status, Some(101));
        assert_eq!(pipes.map(|p| p.buf), [&preface[..], &settings]);
    }

    #[test]
    fn connect_tunnel_ends_http() {
        let http = run(&[
            (C, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
            (S, "HTTP/1.1 200 Connection Established\r\n\r\n"),
            (C, "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03"),
        ]);
        assert_eq!(statuses(&http), [Some(200)]);
        assert!(!http.wants(C) && !http.wants(S));
    }

    #[test]
    fn not_http() {
        for bytes in [
            "SSH-2.0-OpenSSH_9.6\r\n",
            "EHLO mail.example.com\r\n",
            "GET / HTTP/2.0\r\n\r\n",
        ] {
            let mut http = Http1::new();
            assert_eq!(
                http.feed(C, bytes.as_bytes(), 0),
                Feed {
                    used: bytes.len(),
                    skip: 0
                }
            );
            assert!(!http.proven() && !http.wants(C) && !http.wants(S), "{bytes}");
        }
    }

    #[test]
    fn too_many_headers_is_not_http() {
        let head = format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(MAX_HEADERS + 1));
        let http = run(&[(C, &head)]);
        assert!(!http.proven() && !http.wants(C));
    }

    #[test]
    fn client_gap_resyncs_at_a_request() {
        let mut http = run(&[
            (C, "GET /a HTTP/1.1\r\n\r\n"),
            (S, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ]);
        http.gap(C);
        let tail = b"dy of a lost request\r\n";
        assert_eq!(
            http.feed(C, tail, 0),
            Feed {
                used: tail.len(),
                skip: 0
            }
        );
        let next = b"GET /b HTTP/1.1\r\n\r\n";
        assert_eq!(
            http.feed(C, next, 0),
            Feed {
                used: next.len(),
                skip: 0
            }
        );
        // The first response answers the request lost in the gap.
        http.feed(S, b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", 0);
        http.feed(S, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0);
        let paths: Vec<_> = http.requests().iter().map(|r| (&*r.path, r.status)).collect();
        assert_eq!(paths, [("/a", Some(200)), ("/b", Some(200))]);
    }

    #[test]
    fn server_gap_resyncs_at_a_status_line() {
        let mut http = run(&[(C, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")]);
        assert_eq!(http.feed(S, b"HTTP/1.1 200 OK\r\nContent-Le", 0), Feed::WAIT);
        http.gap(S);
        let tail = b"ngth: 5\r\n\r\nhello";
        assert_eq!(
            http.feed(S, tail, 0),
            Feed {
                used: tail.len(),
                skip: 0
            }
        );
        assert_eq!(http.feed(S, b"HTTP/1.", 0), Feed::WAIT);
        http.feed(S, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 0);
        http.feed(C, b"GET /c HTTP/1.1\r\n\r\n", 0);
        http.feed(S, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0);
        assert_eq!(statuses(&http), [None, None, Some(200)]);
    }

    #[test]
    fn requests_are_bounded() {
        let get = "GET / HTTP/1.1\r\n\r\n";
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let http = run(&[
            (C, &get.repeat(MAX_AWAITING + 6)),
            (S, &ok.repeat(MAX_AWAITING + 6)),
            (C, get),
            (S, ok),
        ]);
        assert_eq!((http.requests().len(), http.omitted()), (MAX_AWAITING + 1, 6));
        assert!(http.requests().iter().all(|r| r.status == Some(200)));
        let many: Vec<_> = (0..MAX_REQUESTS + 5).flat_map(|_| [(C, get), (S, ok)]).collect();
        let http = run(&many);
        assert_eq!((http.requests().len(), http.omitted()), (MAX_REQUESTS, 5));
        // Cut at a character boundary: "/" and 1023 two-byte characters.
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "é".repeat(MAX_PATH));
        assert_eq!(run(&[(C, &long)]).requests()[0].path.len(), MAX_PATH - 1);
    }

    #[test]
    fn every_split_matches_whole() {
        let exchange: Vec<(Side, Vec<u8>, u64)> = [
            (
                C,
                "GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes(),
            ),
            (S, CHUNKED.as_bytes()),
            (S, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
            (
                C,
                b"PUT /c HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            ),
            (S, b"HTTP/1.1 100 Continue\r\n\r\n"),
            (C, b"hello"),
            (S, b"HTTP/1.1 204 No Content\r\n\r\n"),
            (C, &[WS_REQUEST.as_bytes(), WS_CLIENT_FRAME].concat()),
            (S, &[WS_ACCEPTED.as_bytes(), WS_SERVER_FRAME].concat()),
        ]
        .into_iter()
        .zip(1..)
        .map(|((side, bytes), i)| (side, bytes.to_vec(), i * 1000))
        .collect();
        let chunks = |at: usize| {
            let mut start = 0;
            let mut chunks = Vec::new();
            for (side, bytes, ts) in &exchange {
                let cut = at.saturating_sub(start).min(bytes.len());
                chunks.extend([(*side, &bytes[..cut], *ts), (*side, &bytes[cut..], *ts)]);
                start += bytes.len();
            }
            chunks
        };
        let whole = replay(chunks(0));
        assert_eq!(statuses(&whole.0), [Some(200), Some(200), Some(204), Some(101)]);
        let total = exchange.iter().map(|(_, b, _)| b.len()).sum();
        for at in 1..=total {
            assert_eq!(replay(chunks(at)), whole, "split at {at}");
        }
        let bytewise = exchange
            .iter()
            .flat_map(|(side, b, ts)| b.chunks(1).map(move |c| (*side, c, *ts)));
        assert_eq!(replay(bytewise), whole);
    }

    fn sample() -> impl Strategy<Value = Vec<u8>> {
        let messages = [
            WS_REQUEST,
            WS_ACCEPTED,
            CHUNKED,
            "GET / HTTP/1.0\r\nContent-Length: 3\r\n\r\n",
            "\r\n",
        ];
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..48),
            proptest::sample::select(messages.to_vec()).prop_map(|m| m.as_bytes().to_vec()),
        ]
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(chunks in proptest::collection::vec((any::<bool>(), any::<bool>(), sample()), 0..24)) {
            let mut http = Http1::new();
            let mut pipes = Default::default();
            for (client, gap, bytes) in chunks {
                let side = if client { C } else { S };
                if gap {
                    http.gap(side);
                }
                deliver(&mut http, &mut pipes, side, &bytes, 0);
                prop_assert!(http.awaiting.len() <= 2 * MAX_AWAITING + 1);
            }
        }
    }
}
