//! HTTP/1.x (RFC 9112): request and response heads are parsed, bodies are
//! skipped by their framing, and responses are matched to requests in order
//! (pipelining included). Only the headers that frame messages or negotiate
//! an upgrade are looked at, and no header value outlives the head it came in.
use std::collections::VecDeque;

use httparse::Status;

use super::{Feed, HttpRequest, MAX_REQUESTS, Side, websocket};

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
        subprotocol: Option<String>,
    },
    H2c,
}

#[derive(Debug, Default, PartialEq, Eq)]
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
    websocket: Option<String>,
    h2c: bool,
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
        Self::default()
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
            // request, whose response must not be taken for the next one's.
            Side::Client if self.half(side).phase == Phase::Head => self.push_unseen(),
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
            method: bounded(method, MAX_METHOD),
            path: bounded(request.path.unwrap_or_default(), MAX_PATH),
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
        let bodiless = pending.as_ref().is_some_and(|p| p.head) || code == 204 || code == 304;
        let body = if bodiless {
            Body::Length(0)
        } else {
            fields.response_body()
        };
        let keep_alive = pending.as_ref().is_some_and(|p| p.keep_alive)
            && fields.keeps_alive(response.version.unwrap_or(1))
            && !matches!(body, Body::UntilClose);
        self.answer(pending.as_ref(), code, keep_alive);
        if pending.is_some_and(|p| p.connect) && (200..300).contains(&code) {
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
                key_ok: fields.accept.is_some_and(|a| a.trim_ascii() == expected.as_bytes()),
                subprotocol: fields.protocol.map(|p| lossy(p.trim_ascii(), MAX_SUBPROTOCOL)),
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
            websocket: key.map(|k| websocket::accept_key(&String::from_utf8_lossy(k.trim_ascii()))),
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

fn bounded(s: &str, max: usize) -> String {
    s[..s.floor_char_boundary(max)].to_owned()
}

fn lossy(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned()
}

fn all(data: &[u8]) -> Feed {
    Feed {
        used: data.len(),
        skip: 0,
    }
}
