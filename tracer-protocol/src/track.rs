//! One flow's protocol: its two byte streams, the parser that proved itself
//! on them (switching on an HTTP Upgrade), and what the kernel should ship
//! next so that bodies and frame payloads never cross the ring buffer.
use std::sync::Arc;

use tracer_common::{DEFAULT_HEADS, Want, want};

use super::{
    Feed, H2Mode, Side, Summary,
    http1::{Http1, Upgrade},
    http2::Http2,
    marks::{MAX_MARKS, Mark, Seen},
    stream::Stream,
    tls::Tls,
    websocket::WebSocket,
};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A skip shorter than this is not worth a map update: the default budget
/// or a later update covers it.
const SKIP_WORTH_TELLING: u64 = 16 * 1024;

#[derive(Debug)]
enum App {
    /// No client bytes yet.
    Detecting,
    Http1(Http1),
    WebSocket(Http1, WebSocket),
    Http2(Option<Http1>, Box<Http2>),
    Tls(Tls),
    Unknown,
}

#[derive(Debug)]
pub struct Tracker {
    /// The endpoint index (in the flow key) of the side that opened.
    client: usize,
    /// Both SYNs were seen: offsets are exact from the first byte.
    from_start: bool,
    streams: [Stream; 2],
    app: App,
    /// Heads received per side: the kernel ships `DEFAULT_HEADS` on its own,
    /// and needs an entry before they run out.
    heads: [u32; 2],
    /// What the kernel was last told, if anything.
    told: Option<Want>,
    /// Times bytes went missing under a parser (lost sync, or a head too big).
    pub gaps: u64,
    /// Where each message started, for diagrams (kept only when asked).
    marks: Option<Vec<Mark>>,
}

/// What the tracker wants the kernel to do for its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Set(Want),
    Delete,
}

impl Tracker {
    /// `isn`: each endpoint's SYN sequence number (by endpoint index), when
    /// seen; `client`: the endpoint that opened.
    pub fn new(client: usize, isn: [Option<u32>; 2]) -> Self {
        let side = |s: Side| isn[endpoint(client, s)];
        Self {
            client,
            from_start: isn[0].is_some() && isn[1].is_some(),
            streams: [
                Stream::from_isn(side(Side::Client)),
                Stream::from_isn(side(Side::Server)),
            ],
            app: App::Detecting,
            heads: [0; 2],
            told: None,
            gaps: 0,
            marks: None,
        }
    }

    /// Keeps where each message started (for diagrams).
    pub fn with_marks(mut self) -> Self {
        self.marks = Some(Vec::new());
        self
    }

    pub fn marks(&self) -> &[Mark] {
        self.marks.as_deref().unwrap_or_default()
    }

    pub fn side_of(&self, endpoint_index: usize) -> Side {
        if endpoint_index == self.client {
            Side::Client
        } else {
            Side::Server
        }
    }

    /// Takes payload bytes sent by endpoint `from`, captured at `seq`. Returns
    /// a new instruction for the kernel when one is worth a map update.
    /// `len`: the segment's payload bytes from `seq` on, of which `data`
    /// were captured.
    pub fn on_payload(&mut self, from: usize, seq: u32, data: &[u8], len: u32, ts_ns: u64) -> Option<Control> {
        let side = self.side_of(from);
        self.heads[side.index()] = self.heads[side.index()].saturating_add(1);
        if self.streams[side.index()].push(seq, data, len) {
            self.app_gap(side);
        }
        self.pump(ts_ns);
        // A head cut short is a gap as soon as the parser needs what was cut,
        // before the other side's bytes are matched against the wrong message.
        while self.streams[side.index()].hole_hit() {
            self.app_gap(side);
            self.pump(ts_ns);
        }
        self.control()
    }

    /// What to tell the kernel when the flow is forgotten.
    pub fn retire(&self) -> Option<Control> {
        self.told.map(|_| Control::Delete)
    }

    /// Feeds both sides until no parser makes progress.
    fn pump(&mut self, ts_ns: u64) {
        loop {
            let mut progressed = false;
            for side in [Side::Client, Side::Server] {
                progressed |= self.feed_side(side, ts_ns);
            }
            progressed |= self.switch_on_upgrade();
            if !progressed {
                return;
            }
        }
    }

    fn feed_side(&mut self, side: Side, ts_ns: u64) -> bool {
        let mut progressed = false;
        loop {
            let data = self.streams[side.index()].pending();
            if data.is_empty() {
                return progressed;
            }
            if matches!(self.app, App::Detecting) {
                match detect(side, data, self.from_start) {
                    Some(app) => self.app = app,
                    // A server that speaks first and goes on alone is none of ours.
                    None if side == Side::Server && self.streams[side.index()].is_full() => self.app = App::Unknown,
                    None => return progressed,
                }
            }
            let seq = self.streams[side.index()]
                .want_seq()
                .unwrap_or(0)
                .wrapping_sub(data.len() as u32);
            let before = self
                .marks
                .as_ref()
                .filter(|m| m.len() < MAX_MARKS)
                .map(|_| Seen::of(&self.parts()));
            let feed = self.app_feed(side, ts_ns);
            if let Some(before) = before {
                let now = Seen::of(&self.parts());
                if let Some(marks) = &mut self.marks {
                    before.marks(&now, side, seq, marks);
                }
            }
            if !feed.progressed() {
                if self.streams[side.index()].is_full() {
                    self.app_gap(side);
                    self.streams[side.index()].drop_pending();
                }
                return progressed;
            }
            self.streams[side.index()].consume(feed);
            progressed = true;
        }
    }

    fn app_feed(&mut self, side: Side, ts_ns: u64) -> Feed {
        let data = self.streams[side.index()].pending();
        match &mut self.app {
            App::Http1(p) => p.feed(side, data, ts_ns),
            App::WebSocket(_, p) => p.feed(side, data, ts_ns),
            App::Http2(_, p) => p.feed(side, data, ts_ns),
            App::Tls(p) => p.feed(side, data, ts_ns),
            // Nothing to learn: let the bytes go.
            App::Unknown => Feed {
                used: data.len(),
                skip: 0,
            },
            App::Detecting => Feed::WAIT,
        }
    }

    fn app_gap(&mut self, side: Side) {
        self.gaps += 1;
        if !self.proven() {
            // Nothing can be proven from the middle of a stream.
            self.app = App::Unknown;
            return;
        }
        match &mut self.app {
            App::Http1(p) => p.gap(side),
            App::WebSocket(_, p) => p.gap(side),
            App::Http2(_, p) => p.gap(side),
            App::Tls(p) => p.gap(side),
            // The first bytes were lost: nothing can be proven from the middle.
            App::Detecting => self.app = App::Unknown,
            App::Unknown => {}
        }
    }

    fn proven(&self) -> bool {
        match &self.app {
            App::Http1(p) => p.proven(),
            App::WebSocket(..) => true,
            App::Http2(_, p) => p.proven(),
            App::Tls(p) => p.proven(),
            App::Detecting | App::Unknown => false,
        }
    }

    fn wants(&self, side: Side) -> bool {
        match &self.app {
            App::Detecting => true,
            App::Http1(p) => p.wants(side),
            App::WebSocket(_, p) => p.wants(side),
            App::Http2(_, p) => p.wants(side),
            App::Tls(p) => p.wants(side),
            App::Unknown => false,
        }
    }

    /// After a 101, the bytes that follow belong to the new protocol.
    fn switch_on_upgrade(&mut self) -> bool {
        let App::Http1(http) = &self.app else {
            return false;
        };
        let next = match http.upgrade() {
            Some(Upgrade::WebSocket { .. }) => None,
            Some(Upgrade::H2c) => {
                let (method, path) = http
                    .requests()
                    .last()
                    .map_or((Arc::default(), Arc::default()), |r| (r.method.clone(), r.path.clone()));
                Some(Http2::upgraded(method, path, self.from_start))
            }
            None => return false,
        };
        let App::Http1(http) = std::mem::replace(&mut self.app, App::Unknown) else {
            unreachable!("matched above");
        };
        self.app = match next {
            Some(h2) => App::Http2(Some(http), h2),
            None => App::WebSocket(http, WebSocket::new()),
        };
        true
    }

    /// The instruction the kernel needs now, if it differs from the last one
    /// and is worth a map update.
    fn control(&mut self) -> Option<Control> {
        let mut next = self.told.unwrap_or_default();
        let mut urgent = false;
        for side in [Side::Client, Side::Server] {
            let d = endpoint(self.client, side);
            let stream = &self.streams[side.index()];
            if !self.wants(side) {
                next.mode[d] = want::NONE;
                continue;
            }
            let Some(seq) = stream.ask_seq() else { continue };
            let was_told = next.mode[d] == want::FROM;
            // Skipping far ahead, or running out of default heads.
            let far = was_told && seq.wrapping_sub(next.from_seq[d]) as i32 as i64 > SKIP_WORTH_TELLING as i64;
            let jumped = !was_told && stream.skipping_far(SKIP_WORTH_TELLING);
            urgent |= far || jumped || (!was_told && self.heads[side.index()] >= DEFAULT_HEADS / 2);
            next.mode[d] = want::FROM;
            next.from_seq[d] = seq;
        }
        // Done with the flow: worth telling once heads keep coming, else the
        // default budget ends them soon enough.
        let busy = self.told.is_some() || self.heads[0].saturating_add(self.heads[1]) > 4;
        let stop = busy && next.mode.iter().all(|&m| m == want::NONE);
        if !(urgent || stop) || self.told == Some(next) {
            return None;
        }
        self.told = Some(next);
        Some(Control::Set(next))
    }

    /// What the flow carried, sides named from the client's point of view.
    pub fn summary(&self) -> Summary {
        Summary::of(self)
    }

    pub(super) fn parts(&self) -> Parts<'_> {
        match &self.app {
            App::Http1(h) => Parts {
                http: Some(h),
                ..Parts::default()
            },
            App::WebSocket(h, w) => Parts {
                http: Some(h),
                websocket: Some(w),
                ..Parts::default()
            },
            App::Http2(h, p) => Parts {
                http: h.as_ref(),
                http2: Some(p),
                ..Parts::default()
            },
            App::Tls(t) => Parts {
                tls: Some(t),
                ..Parts::default()
            },
            App::Detecting | App::Unknown => Parts::default(),
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let App::Http2(_, h2) = std::mem::replace(&mut self.app, App::Unknown) {
            Http2::recycle(h2);
        }
    }
}

/// The parsers a flow went through, for its summary.
#[derive(Default)]
pub(super) struct Parts<'a> {
    pub http: Option<&'a Http1>,
    pub websocket: Option<&'a WebSocket>,
    pub http2: Option<&'a Http2>,
    pub tls: Option<&'a Tls>,
}

/// The endpoint index of `side`, given the client's.
fn endpoint(client: usize, side: Side) -> usize {
    match side {
        Side::Client => client,
        Side::Server => 1 - client,
    }
}

/// The parser the first client bytes call for; None while too few bytes
/// have come to tell. Only the client's bytes decide: an HTTP/2 server may
/// send its SETTINGS before the client's preface arrives.
fn detect(side: Side, data: &[u8], from_start: bool) -> Option<App> {
    if side == Side::Server {
        return None;
    }
    if data[0] == 0x16 {
        return Some(App::Tls(Tls::new()));
    }
    let n = data.len().min(H2_PREFACE.len());
    if data[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then(|| App::Http2(None, Http2::boxed(H2Mode::PriorKnowledge, from_start)));
    }
    match method_then_space(data) {
        Some(true) => Some(App::Http1(Http1::new())),
        Some(false) => Some(App::Unknown),
        None => None,
    }
}

/// The longest method token we take for HTTP (`PROPPATCH`, `MKCALENDAR`,
/// `UPDATEREDIRECTREF` and friends fit).
const MAX_METHOD: usize = 20;

/// Whether `data` starts like an HTTP request line, an uppercase token and a
/// space; None while too few bytes have come to tell.
fn method_then_space(data: &[u8]) -> Option<bool> {
    let token = data
        .iter()
        .take(MAX_METHOD + 1)
        .take_while(|b| b.is_ascii_uppercase())
        .count();
    match data.get(token) {
        Some(b' ') => Some(token > 0),
        Some(_) => Some(false),
        None if token <= MAX_METHOD => None,
        None => Some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISN: [u32; 2] = [1000, 90_000];

    /// Plays messages (sender endpoint index, bytes) into a tracker, each
    /// message cut into segments of at most `mss` bytes.
    fn play(messages: &[(usize, &[u8])], mss: usize) -> (Tracker, Vec<Control>) {
        let mut t = Tracker::new(0, ISN.map(Some));
        let mut seq = ISN.map(|i| i.wrapping_add(1));
        let mut controls = Vec::new();
        for (from, bytes) in messages {
            for piece in bytes.chunks(mss) {
                controls.extend(t.on_payload(*from, seq[*from], piece, piece.len() as u32, 0));
                seq[*from] = seq[*from].wrapping_add(piece.len() as u32);
            }
        }
        (t, controls)
    }

    const KEEP_ALIVE: &[(usize, &[u8])] = &[
        (0, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        (1, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        (0, b"GET /missing HTTP/1.1\r\nHost: a\r\n\r\n"),
        (1, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        (0, b"GET /c HTTP/1.1\r\nConnection: close\r\n\r\n"),
        (
            1,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ),
    ];

    const WEBSOCKET: &[(usize, &[u8])] = &[
        (
            0,
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        ),
        (
            1,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi",
        ),
        (0, b"\x81\x82\x00\x00\x00\x00hi\x88\x82\x00\x00\x00\x00\x03\xe8"),
        (1, b"\x88\x02\x03\xe8"),
    ];

    #[test]
    fn keep_alive_requests_whatever_the_segment_size() {
        let whole = play(KEEP_ALIVE, usize::MAX).0.summary();
        assert_eq!(whole.protocol, "http/1.1");
        let requests = &whole.http.as_ref().unwrap().requests;
        let seen: Vec<_> = requests.iter().map(|r| (&*r.path, r.status, r.keep_alive)).collect();
        assert_eq!(
            seen,
            [
                ("/", Some(200), true),
                ("/missing", Some(404), true),
                ("/c", Some(200), false)
            ]
        );
        for mss in 1..64 {
            assert_eq!(play(KEEP_ALIVE, mss).0.summary(), whole, "segments of {mss} bytes");
        }
    }

    #[test]
    fn websocket_after_upgrade_whatever_the_segment_size() {
        let whole = play(WEBSOCKET, usize::MAX).0.summary();
        assert_eq!(whole.protocol, "websocket");
        let ws = whole.websocket.as_ref().unwrap();
        assert!(ws.key_ok);
        assert_eq!((ws.frames[0].text, ws.frames[0].close, ws.frames[1].text), (1, 1, 1));
        let close = ws.close.as_ref().unwrap();
        assert_eq!((close.initiator, close.code), (Side::Client, Some(1000)));
        for mss in 1..64 {
            assert_eq!(play(WEBSOCKET, mss).0.summary(), whole, "segments of {mss} bytes");
        }
    }

    #[test]
    fn a_large_body_is_skipped_in_the_kernel() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n";
        let (t, controls) = play(&[(0, b"GET /big HTTP/1.1\r\n\r\n"), (1, head)], usize::MAX);
        let Some(Control::Set(w)) = controls.last() else {
            panic!("the kernel was not told: {controls:?}")
        };
        // The server (endpoint 1) is wanted again after the body only.
        let after = ISN[1].wrapping_add(1 + head.len() as u32 + 1_000_000);
        assert_eq!((w.mode[1], w.from_seq[1]), (want::FROM, after));
        assert_eq!(t.retire(), Some(Control::Delete));
    }

    #[test]
    fn a_short_exchange_costs_no_map_update() {
        let (t, controls) = play(KEEP_ALIVE, usize::MAX);
        assert!(controls.is_empty(), "{controls:?}");
        assert_eq!(t.retire(), None);
    }

    #[test]
    fn unknown_bytes_are_let_go_once_they_keep_coming() {
        let noise: &[(usize, &[u8])] = &[(0, &b"\x00\x01binary"[..]); 8];
        let (t, controls) = play(noise, usize::MAX);
        assert_eq!(t.summary().protocol, "unknown");
        assert_eq!(
            controls,
            [Control::Set(Want {
                from_seq: [0; 2],
                mode: [want::NONE; 2],
                _pad: [0; 2]
            })]
        );
    }

    #[test]
    fn marks_point_at_each_message_start() {
        use crate::marks::What::*;
        let mut t = Tracker::new(0, ISN.map(Some)).with_marks();
        let mut seq = ISN.map(|i| i.wrapping_add(1));
        // Two requests in one segment (pipelined), then both responses in one.
        let (a, b) = (&KEEP_ALIVE[0].1, &KEEP_ALIVE[2].1);
        let ab = [*a, *b].concat();
        t.on_payload(0, seq[0], &ab, ab.len() as u32, 0);
        let (ra, rb) = (&KEEP_ALIVE[1].1, &KEEP_ALIVE[3].1);
        let rab = [*ra, *rb].concat();
        t.on_payload(1, seq[1], &rab, rab.len() as u32, 0);
        seq[0] += a.len() as u32;
        seq[1] += ra.len() as u32;
        let got: Vec<_> = t.marks().iter().map(|m| (m.side, m.seq, m.what)).collect();
        assert_eq!(
            got,
            [
                (Side::Client, ISN[0] + 1, Request(0)),
                (Side::Client, seq[0], Request(1)),
                (Side::Server, ISN[1] + 1, Response(0)),
                (Side::Server, seq[1], Response(1)),
            ]
        );
    }

    #[test]
    fn only_a_method_and_a_space_look_like_http() {
        assert_eq!(method_then_space(b"GET / HTTP/1.1"), Some(true));
        assert_eq!(method_then_space(b"MKCALENDAR /x"), Some(true));
        assert_eq!(method_then_space(b"GE"), None);
        assert_eq!(method_then_space(b"ZZZZZZZZZZZZZZZZZZZZZZZZZZ"), Some(false));
        assert_eq!(method_then_space(b"Get / HTTP/1.1"), Some(false));
        assert_eq!(method_then_space(b" / HTTP/1.1"), Some(false));
    }

    #[test]
    fn uppercase_bulk_is_not_http() {
        let bulk = vec![b'Z'; 1 << 20];
        let (t, controls) = play(&[(0, &bulk)], 65536);
        assert_eq!(t.summary().protocol, "unknown");
        assert!(
            controls
                .iter()
                .all(|c| matches!(c, Control::Set(w) if w.mode == [want::NONE; 2])),
            "{controls:?}"
        );
    }

    #[test]
    fn a_head_cut_short_loses_its_message_not_the_next_ones() {
        let mut t = Tracker::new(0, ISN.map(Some));
        let (mut c, mut s) = (ISN[0] + 1, ISN[1] + 1);
        for (from, m) in [
            (0, &b"GET /zero HTTP/1.1\r\n\r\n"[..]),
            (1, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ] {
            let at = if from == 0 { &mut c } else { &mut s };
            t.on_payload(from, *at, m, m.len() as u32, 0);
            *at += m.len() as u32;
        }
        let big = format!("GET /one HTTP/1.1\r\nCookie: {}\r\n\r\n", "x".repeat(3000));
        // Only the first 2048 bytes of the request were captured.
        t.on_payload(0, c, &big.as_bytes()[..2048], big.len() as u32, 0);
        c += big.len() as u32;
        let one = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        t.on_payload(1, s, one, one.len() as u32, 0);
        s += one.len() as u32;
        let two = b"GET /two HTTP/1.1\r\n\r\n";
        t.on_payload(0, c, two, two.len() as u32, 0);
        let missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        t.on_payload(1, s, missing, missing.len() as u32, 0);
        let sum = t.summary();
        let got: Vec<_> = sum
            .http
            .unwrap()
            .requests
            .iter()
            .map(|r| (r.path.clone(), r.status))
            .collect();
        assert_eq!(got.last(), Some(&(Arc::from("/two"), Some(404))), "{got:?}");
        assert_eq!(t.gaps, 1);
    }

    #[test]
    fn lost_first_bytes_prove_nothing() {
        let mut t = Tracker::new(0, ISN.map(Some));
        let request = b"GET / HTTP/1.1\r\n\r\n";
        // Held while the first 99 bytes may still come, then taken as lost.
        for i in 0..6 {
            let seq = ISN[0] + 100 + i * request.len() as u32;
            t.on_payload(0, seq, request, request.len() as u32, 0);
        }
        assert_eq!(t.summary().protocol, "unknown");
        assert_eq!(t.gaps, 1);
    }

    #[test]
    fn a_request_whose_halves_cross_is_still_http() {
        let request = KEEP_ALIVE[0].1;
        let (a, b) = request.split_at(10);
        let mut t = Tracker::new(0, ISN.map(Some));
        t.on_payload(0, ISN[0] + 1 + a.len() as u32, b, b.len() as u32, 0);
        t.on_payload(0, ISN[0] + 1, a, a.len() as u32, 0);
        let response = KEEP_ALIVE[1].1;
        t.on_payload(1, ISN[1] + 1, response, response.len() as u32, 0);
        assert_eq!(t.summary().protocol, "http/1.1");
        assert_eq!(t.gaps, 0);
    }
}
