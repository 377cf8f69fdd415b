//! HTTP/2 (RFC 9113) in cleartext, by prior knowledge or h2c upgrade: the
//! streams the client opened, their `:method` and `:path`, and the server's
//! final `:status`.
//!
//! Frames are read by their 9-byte header alone and their payload skipped,
//! except header blocks and SETTINGS: DATA never reaches userspace past its
//! header. Every header block is HPACK-decoded, kept or not, because each may
//! change its sender's dynamic table, and a decoder that misses one change
//! misreads every later block. When that happens (capture not from the start,
//! a gap, a block too large or malformed) header values are given up rather
//! than guessed.

use std::{borrow::Cow, cell::RefCell, fmt, sync::Arc};

use loona_hpack::Decoder;

use super::{
    Feed, H2_REQUESTS, H2Mode, H2Request, MAX_PENDING, MAX_REQUESTS, Side,
    spare::{self, Spares},
};

thread_local! {
    /// Finished flows' parsers, emptied (their request lists go to `H2_REQUESTS`).
    static PARSERS: RefCell<Spares<Box<Http2>>> = const { RefCell::new(Spares::new(spare::KEEP)) };
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEAD_LEN: usize = 9;
/// A frame read whole has to fit in what the caller buffers.
const MAX_FRAME: usize = MAX_PENDING - HEAD_LEN;
/// A larger header block is not decoded: its fields are lost, and with them the sender's table.
const MAX_BLOCK: usize = 64 * 1024;
/// SETTINGS_HEADER_TABLE_SIZE before any SETTINGS frame (RFC 9113 §6.5.2).
const DEFAULT_TABLE: usize = 4096;
/// A peer may grant its encoder a larger table, but holding it would cost every
/// flow that much memory: blocks that need more are treated as undecodable.
const MAX_TABLE: usize = 64 * 1024;
/// Responses the server may send ahead of the requests we have parsed.
const MAX_EARLY: usize = 64;
/// `:method` and `:path` are kept up to this many bytes (an h2c upgrade's
/// stream 1 keeps what the HTTP/1.1 parser kept of its request).
const MAX_VALUE: usize = 1024;

const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;

const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

const HEADER_TABLE_SIZE: [u8; 2] = [0x0, 0x1];

/// An HTTP/2 connection seen from both sides.
pub struct Http2 {
    mode: H2Mode,
    halves: [Half; 2],
    /// One per sending side, as each endpoint's encoder keeps its own table;
    /// `None` once header blocks can no longer be decoded.
    decoders: Option<[Decoder<'static>; 2]>,
    requests: Vec<H2Request>,
    /// Client streams are opened in increasing order (RFC 9113 §5.1.1): a
    /// HEADERS frame on a lower one is trailers.
    last_stream: u32,
    /// Final statuses of streams the client's bytes have not opened yet: the
    /// sides are fed apart, and the server's may run ahead.
    early: Vec<(u32, u16)>,
    streams: u64,
    omitted: u64,
    proven: bool,
    /// Frames each side sent, by type (`FRAME_TYPES` order; the last slot
    /// counts types RFC 9113 does not define).
    frames: [[u64; FRAME_TYPES.len()]; 2],
}

/// Frame type names, by type number (RFC 9113 §6), then the unknown ones.
pub const FRAME_TYPES: [&str; 11] = [
    "DATA",
    "HEADERS",
    "PRIORITY",
    "RST_STREAM",
    "SETTINGS",
    "PUSH_PROMISE",
    "PING",
    "GOAWAY",
    "WINDOW_UPDATE",
    "CONTINUATION",
    "unknown",
];

impl Drop for Http2 {
    fn drop(&mut self) {
        spare::give_list(&H2_REQUESTS, std::mem::take(&mut self.requests));
    }
}

impl Http2 {
    /// `from_start`: the flow was captured from its first byte; without it the
    /// HPACK dynamic tables are unknowable and header blocks are not decoded.
    pub fn new(mode: H2Mode, from_start: bool) -> Self {
        // ALPN negotiated h2 inside TLS: the frames are encrypted, only the mode is known.
        let encrypted = mode == H2Mode::Alpn;
        let stage = |stage| if encrypted { Stage::Off } else { stage };
        Http2 {
            mode,
            halves: [Half::new(stage(Stage::Preface)), Half::new(stage(Stage::Frames))],
            decoders: (from_start && !encrypted).then(|| [decoder(), decoder()]),
            requests: spare::list(&H2_REQUESTS),
            last_stream: 0,
            early: Vec::new(),
            streams: 0,
            omitted: 0,
            proven: encrypted,
            frames: [[0; FRAME_TYPES.len()]; 2],
        }
    }

    /// `new`, in the box of a finished flow's parser when one is kept.
    pub fn boxed(mode: H2Mode, from_start: bool) -> Box<Self> {
        let h2 = Self::new(mode, from_start);
        PARSERS.with_borrow_mut(|kept| kept.boxed(h2))
    }

    /// Keeps a finished flow's box for the next flow, emptied now: its
    /// decoders' tables and unfinished header blocks (up to `MAX_BLOCK` a
    /// side) are freed, its request list kept apart.
    pub fn recycle(mut this: Box<Self>) {
        spare::give_list(&H2_REQUESTS, std::mem::take(&mut this.requests));
        this.decoders = None;
        this.early = Vec::new();
        for half in &mut this.halves {
            half.block = None;
        }
        spare::give(&PARSERS, this);
    }

    /// Frames `side` sent, by type, in `FRAME_TYPES` order.
    pub fn frames(&self, side: Side) -> &[u64; FRAME_TYPES.len()] {
        &self.frames[side.index()]
    }

    /// h2c: the HTTP/1.1 upgrade request becomes stream 1 (RFC 7540 §3.2),
    /// already half-closed by the client; its response comes as HEADERS on stream 1.
    pub fn upgraded(method: Arc<str>, path: Arc<str>, from_start: bool) -> Box<Self> {
        let mut h2 = Http2::boxed(H2Mode::H2cUpgrade, from_start);
        if let Some(request) = h2.open(1) {
            request.method = Some(method);
            request.path = Some(path);
        }
        h2
    }

    pub fn feed(&mut self, side: Side, data: &[u8], _ts_ns: u64) -> Feed {
        if !self.wants(side) {
            return Feed {
                used: data.len(),
                skip: 0,
            };
        }
        match self.halves[side.index()].stage {
            Stage::Preface => self.preface(data),
            _ => self.frame(side, data),
        }
    }

    /// Bytes of `side` were lost: its frame boundaries, and the HPACK tables, with them.
    pub fn gap(&mut self, side: Side) {
        let half = &mut self.halves[side.index()];
        half.stage = Stage::Off;
        half.block = None;
        self.lose_headers();
    }

    pub fn wants(&self, side: Side) -> bool {
        // The server's frames only matter for `:status`, which needs the decoders;
        // the client's still count streams without them.
        self.halves[side.index()].stage != Stage::Off && (side == Side::Client || self.decoders.is_some())
    }

    pub fn mode(&self) -> H2Mode {
        self.mode
    }

    /// Client-initiated streams seen, stream 1 of an h2c upgrade included.
    pub fn streams(&self) -> u64 {
        self.streams
    }

    /// Per stream, in order of first appearance, at most `MAX_REQUESTS`.
    pub fn requests(&self) -> &[H2Request] {
        &self.requests
    }

    /// Streams beyond `MAX_REQUESTS`, counted but not kept.
    pub fn omitted(&self) -> u64 {
        self.omitted
    }

    /// False when header blocks could not be decoded: the requests then carry no values.
    pub fn headers_readable(&self) -> bool {
        self.decoders.is_some()
    }

    /// The client preface was seen; an encrypted (ALPN) connection is h2 by the server's word.
    pub fn proven(&self) -> bool {
        self.proven
    }

    fn preface(&mut self, data: &[u8]) -> Feed {
        let seen = data.len().min(PREFACE.len());
        if data[..seen] != PREFACE[..seen] {
            self.halves = [Half::new(Stage::Off), Half::new(Stage::Off)];
            self.decoders = None;
            return Feed {
                used: data.len(),
                skip: 0,
            };
        }
        if seen < PREFACE.len() {
            return Feed::WAIT;
        }
        self.proven = true;
        self.halves[Side::Client.index()].stage = Stage::Frames;
        Feed {
            used: PREFACE.len(),
            skip: 0,
        }
    }

    fn frame(&mut self, side: Side, data: &[u8]) -> Feed {
        let Some(head) = Head::parse(data) else {
            return Feed::WAIT;
        };
        if !self.reads(&head) {
            self.on_frame(side, &head, None);
            return Feed {
                used: HEAD_LEN,
                skip: head.len as u64,
            };
        }
        let Some(payload) = data.get(HEAD_LEN..HEAD_LEN + head.len) else {
            return Feed::WAIT;
        };
        self.on_frame(side, &head, Some(payload));
        Feed {
            used: HEAD_LEN + head.len,
            skip: 0,
        }
    }

    /// Whether the frame's payload is worth waiting for: only header blocks and
    /// table sizes are, and only while they can still be decoded.
    fn reads(&self, head: &Head) -> bool {
        let wanted = match head.kind {
            HEADERS | PUSH_PROMISE | CONTINUATION => true,
            SETTINGS => !head.has(ACK),
            _ => false,
        };
        wanted && self.decoders.is_some() && head.len <= MAX_FRAME
    }

    /// `payload` is `None` when it was not read (see `reads`).
    fn on_frame(&mut self, side: Side, head: &Head, payload: Option<&[u8]>) {
        let slot = usize::from(head.kind).min(FRAME_TYPES.len() - 1);
        self.frames[side.index()][slot] += 1;
        if let Some(block) = self.halves[side.index()].block.take() {
            if head.kind == CONTINUATION && head.stream == block.stream {
                self.add_fragment(side, head, block, payload);
                return;
            }
            // Nothing may come between a block's frames (RFC 9113 §6.10): this one never completes.
            self.lose_headers();
        }
        match head.kind {
            HEADERS | PUSH_PROMISE => {
                if head.kind == HEADERS && side == Side::Client {
                    self.open(head.stream);
                }
                let block = Block {
                    stream: head.stream,
                    kind: head.kind,
                    bytes: Vec::new(),
                };
                self.add_fragment(side, head, block, payload);
            }
            SETTINGS => {
                if let Some(payload) = payload {
                    self.settings(side, payload);
                }
            }
            _ => {}
        }
    }

    /// Counts a stream the client opens, and keeps an entry for it while there is room.
    fn open(&mut self, stream: u32) -> Option<&mut H2Request> {
        // Lower ids were opened already: trailers, or a protocol error.
        if !client_initiated(stream) || stream <= self.last_stream {
            return None;
        }
        self.last_stream = stream;
        self.streams += 1;
        let status = self.early.iter().find(|early| early.0 == stream).map(|early| early.1);
        // Client ids only grow: responses to lower ones will never be claimed.
        self.early.retain(|early| early.0 > stream);
        if self.requests.len() >= MAX_REQUESTS {
            self.omitted += 1;
            return None;
        }
        spare::room_for_one(&H2_REQUESTS, &mut self.requests);
        self.requests.push(H2Request {
            stream,
            status,
            ..H2Request::default()
        });
        self.requests.last_mut()
    }

    /// Adds one frame's share of a header block, and decodes the block once it ends.
    fn add_fragment(&mut self, side: Side, head: &Head, mut block: Block, payload: Option<&[u8]>) {
        let end = head.has(END_HEADERS);
        let fragment = payload
            .and_then(|payload| head.fragment(payload))
            .filter(|fragment| block.bytes.len() + fragment.len() <= MAX_BLOCK);
        match fragment {
            // The usual single-frame block is decoded in place.
            Some(fragment) if end && block.bytes.is_empty() => self.decode(side, &block, fragment),
            Some(fragment) => {
                block.bytes.extend_from_slice(fragment);
                if end {
                    self.decode(side, &block, &block.bytes);
                }
            }
            // Undecodable already, too large, or malformed: the block is only followed to its end.
            None => {
                self.lose_headers();
                block.bytes = Vec::new();
            }
        }
        if !end {
            self.halves[side.index()].block = Some(block);
        }
    }

    fn decode(&mut self, side: Side, block: &Block, bytes: &[u8]) {
        let Some(decoders) = self.decoders.as_mut() else {
            return;
        };
        let mut fields = Fields::default();
        let decoded = decoders[side.index()].decode_with_cb(bytes, |name, value| fields.add(&name, &value));
        if decoded.is_err() {
            self.lose_headers();
        } else if block.kind == HEADERS {
            self.record(side, block.stream, fields);
        }
    }

    fn record(&mut self, side: Side, stream: u32, fields: Fields) {
        match side {
            // The first values stand: an h2c stream 1 has them from the upgrade request.
            Side::Client => {
                if let Some(request) = self.request(stream) {
                    request.method = request.method.take().or(fields.method);
                    request.path = request.path.take().or(fields.path);
                }
            }
            Side::Server => {
                let Some(status) = fields.status.filter(|status| *status >= 200) else {
                    return;
                };
                if let Some(request) = self.request(stream) {
                    request.status.get_or_insert(status);
                } else if client_initiated(stream) && stream > self.last_stream && self.early.len() < MAX_EARLY {
                    self.early.push((stream, status));
                }
            }
        }
    }

    fn request(&mut self, stream: u32) -> Option<&mut H2Request> {
        let index = self
            .requests
            .binary_search_by_key(&stream, |request| request.stream)
            .ok()?;
        self.requests.get_mut(index)
    }

    /// A side's SETTINGS_HEADER_TABLE_SIZE bounds the table of the *other* side's encoder.
    fn settings(&mut self, side: Side, payload: &[u8]) {
        let Some(decoders) = self.decoders.as_mut() else {
            return;
        };
        for setting in payload.chunks_exact(6) {
            if setting[..2] == HEADER_TABLE_SIZE {
                let size = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                let size = usize::try_from(size).map_or(MAX_TABLE, |size| size.min(MAX_TABLE));
                decoders[side.other().index()].set_max_allowed_table_size(size);
            }
        }
    }

    fn lose_headers(&mut self) {
        self.decoders = None;
        for block in self.halves.iter_mut().filter_map(|half| half.block.as_mut()) {
            block.bytes = Vec::new();
        }
    }
}

/// The decoders have no `Debug`: their tables are summed up as readable or not.
impl fmt::Debug for Http2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http2")
            .field("mode", &self.mode)
            .field("halves", &self.halves)
            .field("headers_readable", &self.headers_readable())
            .field("requests", &self.requests)
            .field("last_stream", &self.last_stream)
            .field("early", &self.early)
            .field("streams", &self.streams)
            .field("omitted", &self.omitted)
            .field("proven", &self.proven)
            .finish()
    }
}

/// Odd ids are the client's (RFC 9113 §5.1.1); 0 is the connection's.
fn client_initiated(stream: u32) -> bool {
    !stream.is_multiple_of(2)
}

fn decoder() -> Decoder<'static> {
    let mut decoder = Decoder::new();
    // Also what keeps a peer's size updates from growing the table without bound.
    decoder.set_max_allowed_table_size(DEFAULT_TABLE);
    decoder
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Preface,
    Frames,
    Off,
}

#[derive(Debug)]
struct Half {
    stage: Stage,
    /// A header block waiting for its CONTINUATION frames.
    block: Option<Block>,
}

impl Half {
    fn new(stage: Stage) -> Self {
        Half { stage, block: None }
    }
}

#[derive(Debug)]
struct Block {
    stream: u32,
    /// HEADERS or PUSH_PROMISE.
    kind: u8,
    /// Empty when the block will not be decoded.
    bytes: Vec<u8>,
}

struct Head {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl Head {
    fn parse(data: &[u8]) -> Option<Head> {
        let &[l0, l1, l2, kind, flags, s0, s1, s2, s3] = data.get(..HEAD_LEN)? else {
            return None;
        };
        Some(Head {
            len: u32::from_be_bytes([0, l0, l1, l2]) as usize,
            kind,
            flags,
            stream: u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff,
        })
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The header block fragment in a HEADERS, PUSH_PROMISE or CONTINUATION
    /// payload; `None` when padding and fixed fields do not fit in it.
    fn fragment<'a>(&self, payload: &'a [u8]) -> Option<&'a [u8]> {
        let fixed = match self.kind {
            HEADERS if self.has(PRIORITY) => 5,
            PUSH_PROMISE => 4,
            CONTINUATION => return Some(payload),
            _ => 0,
        };
        let (pad, rest) = if self.has(PADDED) {
            let (&pad, rest) = payload.split_first()?;
            (usize::from(pad), rest)
        } else {
            (0, payload)
        };
        rest.get(fixed..rest.len().checked_sub(pad)?)
    }
}

/// The pseudo-header fields this module reports.
#[derive(Default)]
struct Fields {
    method: Option<Arc<str>>,
    path: Option<Arc<str>>,
    status: Option<u16>,
}

impl Fields {
    fn add(&mut self, name: &[u8], value: &[u8]) {
        match name {
            b":method" => self.method = Some(crate::method(&bounded(value))),
            b":path" => self.path = Some(crate::shared_prefix(value, MAX_VALUE)),
            b":status" => self.status = status(value),
            _ => {}
        }
    }
}

fn status(value: &[u8]) -> Option<u16> {
    match *value {
        [a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

fn bounded(value: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(&value[..value.len().min(MAX_VALUE)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay;
    use loona_hpack::Encoder;
    use proptest::prelude::*;

    /// curl 7.88.1 (nghttp2 1.52) `--http2-prior-knowledge http://127.0.0.1:19505/a`,
    /// captured on loopback: preface, SETTINGS, WINDOW_UPDATE, HEADERS (Huffman,
    /// indexed into the table), SETTINGS ack.
    const CURL_PRIOR: &str = "505249202a20485454502f322e300d0a0d0a534d\
        0d0a0d0a00001204000000000000030000006400040200000000020000000000000408000000000001ff000100002201050000000182\
        04022f6186418b089d5c0b8170dc0bed81bf7a8825b650c3abbcf2e153032a2f2a000000040100000000";
    /// The test server's answer: SETTINGS (header table 8192), ack, HEADERS 103,
    /// HEADERS 200 with `server: mock` indexed, DATA in two frames.
    const SERVER_PRIOR: &str = "0000060400000000000001000020000000000401\
        0000000000000501040000000108033130330000070104000000018876046d6f636b00000600000000000168656c6c6f200000050001\
        00000001776f726c64";
    /// curl `--http2 http://127.0.0.1:19501/up http://127.0.0.1:19501/next`, after
    /// its `GET /up` upgrade request: preface, SETTINGS, WINDOW_UPDATE, ack,
    /// RST_STREAM 1, HEADERS on stream 3 opening with a table size update.
    const CURL_H2C: &str = "505249202a20485454502f322e300d0a0d0a534d\
        0d0a0d0a00001204000000000000030000006400040200000000020000000000000408000000000001ff000100000004010000000000\
        0004030000000001000000050000270105000000033fe11f82048462a2f94f86418b089d5c0b8170dc0bed803f7a8825b650c3abbcf2\
        e153032a2f2a";
    /// The test server after its 101: stream 1 as above, then 404 on stream 3
    /// with `server` from the dynamic table.
    const SERVER_H2C: &str = "0000060400000000000001000020000000050104\
        0000000108033130330000070104000000018876046d6f636b00000600000000000168656c6c6f20000005000100000001776f726c64\
        0000000401000000000000020104000000038dbe000004000100000003676f6e65";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).expect("frame length");
        let mut frame = len.to_be_bytes()[1..].to_vec();
        frame.extend([kind, flags]);
        frame.extend(stream.to_be_bytes());
        frame.extend(payload);
        frame
    }

    fn encode(encoder: &mut Encoder<'_>, fields: &[(&str, &str)]) -> Vec<u8> {
        encoder.encode(fields.iter().map(|(name, value)| (name.as_bytes(), value.as_bytes())))
    }

    fn request(stream: u32, method: Option<&str>, path: Option<&str>, status: Option<u16>) -> H2Request {
        H2Request {
            stream,
            method: method.map(Arc::from),
            path: path.map(Arc::from),
            status,
        }
    }

    fn request_of(stream: u32) -> H2Request {
        request(stream, None, None, None)
    }

    /// Everything the parser reports, to compare runs.
    fn outcome(h2: &Http2) -> (u64, Vec<H2Request>, u64, bool, bool, [bool; 2]) {
        (
            h2.streams(),
            h2.requests().to_vec(),
            h2.omitted(),
            h2.headers_readable(),
            h2.proven(),
            [h2.wants(Side::Client), h2.wants(Side::Server)],
        )
    }

    fn play(h2: &mut Http2, client: &[u8], server: &[u8]) {
        replay::chunks(h2, [(Side::Client, false, client), (Side::Server, false, server)]);
    }

    fn prior(client: &[u8], server: &[u8]) -> Http2 {
        let mut h2 = Http2::new(H2Mode::PriorKnowledge, true);
        play(&mut h2, client, server);
        h2
    }

    fn with_preface(frames: &[Vec<u8>]) -> Vec<u8> {
        [PREFACE.to_vec(), frames.concat()].concat()
    }

    #[test]
    fn curl_prior_knowledge_with_interim_status() {
        let h2 = prior(&hex(CURL_PRIOR), &hex(SERVER_PRIOR));
        assert!(h2.proven() && h2.headers_readable());
        assert_eq!(h2.mode(), H2Mode::PriorKnowledge);
        assert_eq!(h2.streams(), 1);
        // The 103 is interim: the stream's status is the 200 after it.
        assert_eq!(h2.requests(), [request(1, Some("GET"), Some("/a"), Some(200))]);
        assert!(h2.wants(Side::Client) && h2.wants(Side::Server));
    }

    #[test]
    fn curl_h2c_upgrade() {
        let mut h2 = Http2::upgraded("GET".into(), "/up".into(), true);
        play(&mut h2, &hex(CURL_H2C), &hex(SERVER_H2C));
        assert_eq!(h2.mode(), H2Mode::H2cUpgrade);
        assert!(h2.proven() && h2.headers_readable());
        assert_eq!(h2.streams(), 2);
        assert_eq!(
            h2.requests(),
            [
                request(1, Some("GET"), Some("/up"), Some(200)),
                request(3, Some("GET"), Some("/next"), Some(404)),
            ]
        );
    }

    #[test]
    fn upgraded_stream_counts_before_any_frame() {
        let h2 = Http2::upgraded("GET".into(), "/".into(), true);
        assert_eq!(h2.streams(), 1);
        assert!(!h2.proven());
    }

    #[test]
    fn dynamic_table_carries_across_requests() {
        let mut encoder = Encoder::new();
        let first = encode(
            &mut encoder,
            &[(":method", "GET"), (":path", "/one"), ("x-trace", "abc")],
        );
        let second = encode(
            &mut encoder,
            &[(":method", "POST"), (":path", "/two"), ("x-trace", "abc")],
        );
        // The second block refers to the first's `x-trace` by index: decodable only in sequence.
        assert!(second.ends_with(&[0x80 | 62]));
        // `:path: /same` added to the table, then used by index alone.
        let third = [0x82, 0x44, 0x05, b'/', b's', b'a', b'm', b'e'];
        let fourth = [0x82, 0xbe];
        let client = with_preface(&[
            frame(HEADERS, END_HEADERS, 1, &first),
            frame(HEADERS, END_HEADERS, 3, &second),
            frame(HEADERS, END_HEADERS, 5, &third),
            frame(HEADERS, END_HEADERS, 7, &fourth),
        ]);
        let h2 = prior(&client, &[]);
        assert!(h2.headers_readable());
        assert_eq!(
            h2.requests(),
            [
                request(1, Some("GET"), Some("/one"), None),
                request(3, Some("POST"), Some("/two"), None),
                request(5, Some("GET"), Some("/same"), None),
                request(7, Some("GET"), Some("/same"), None),
            ]
        );
    }

    #[test]
    fn data_payload_is_skipped() {
        let mut h2 = Http2::new(H2Mode::PriorKnowledge, true);
        let mut data = frame(0x0, 0, 1, &[]);
        data[..3].copy_from_slice(&[0x10, 0, 0]);
        h2.feed(Side::Client, PREFACE, 0);
        assert_eq!(
            h2.feed(Side::Client, &data, 0),
            Feed {
                used: HEAD_LEN,
                skip: 0x10_0000
            }
        );
        let mut server = frame(0x0, 0, 1, &[0xaa; 300]);
        server.extend(frame(HEADERS, END_HEADERS, 1, &[0x88]));
        let h2 = prior(&with_preface(&[frame(HEADERS, END_HEADERS, 1, &[0x82, 0x84])]), &server);
        assert_eq!(h2.requests(), [request(1, Some("GET"), Some("/"), Some(200))]);
    }

    #[test]
    fn continuation_frames_make_one_block() {
        let mut encoder = Encoder::new();
        let block = encode(
            &mut encoder,
            &[(":method", "GET"), (":path", "/continued"), ("x-long", "value")],
        );
        let client = with_preface(&[
            frame(HEADERS, 0, 1, &block[..3]),
            frame(CONTINUATION, 0, 1, &block[3..7]),
            frame(CONTINUATION, END_HEADERS, 1, &block[7..]),
        ]);
        let h2 = prior(&client, &[]);
        assert!(h2.headers_readable());
        assert_eq!(h2.requests(), [request(1, Some("GET"), Some("/continued"), None)]);
    }

    #[test]
    fn padded_headers_with_priority() {
        let mut payload = vec![3];
        payload.extend([0x80, 0, 0, 0, 16]);
        payload.extend([0x83, 0x84]);
        payload.extend([0; 3]);
        let client = with_preface(&[frame(HEADERS, END_HEADERS | PADDED | PRIORITY, 1, &payload)]);
        let server = frame(HEADERS, END_HEADERS | PADDED, 1, &[2, 0x89, 0, 0]);
        let h2 = prior(&client, &server);
        assert_eq!(h2.requests(), [request(1, Some("POST"), Some("/"), Some(204))]);
    }

    #[test]
    fn padding_longer_than_payload_loses_headers() {
        let client = with_preface(&[frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x82])]);
        let h2 = prior(&client, &[]);
        assert!(!h2.headers_readable());
        assert_eq!(h2.requests(), [request(1, None, None, None)]);
    }

    #[test]
    fn not_from_start_counts_streams_without_values() {
        let mut h2 = Http2::new(H2Mode::PriorKnowledge, false);
        play(&mut h2, &hex(CURL_PRIOR), &hex(SERVER_PRIOR));
        assert!(h2.proven() && !h2.headers_readable());
        assert_eq!(h2.streams(), 1);
        assert_eq!(h2.requests(), [request(1, None, None, None)]);
        // Only `:status` comes from the server, and it cannot be read.
        assert!(h2.wants(Side::Client) && !h2.wants(Side::Server));
    }

    #[test]
    fn push_promise_keeps_tables_in_sync() {
        let client = with_preface(&[frame(HEADERS, END_HEADERS, 1, &[0x82, 0x84])]);
        let mut promise = 2u32.to_be_bytes().to_vec();
        promise.extend([0x82, 0x40, 0x06]);
        promise.extend(b"x-push");
        promise.extend([0x01, b'1']);
        // The response's only reference is to the entry the promise added.
        let server = [
            frame(PUSH_PROMISE, END_HEADERS, 1, &promise),
            frame(HEADERS, END_HEADERS, 1, &[0x88, 0xbe]),
        ]
        .concat();
        let h2 = prior(&client, &server);
        assert!(h2.headers_readable());
        assert_eq!(h2.streams(), 1);
        assert_eq!(h2.requests(), [request(1, Some("GET"), Some("/"), Some(200))]);
    }

    #[test]
    fn table_size_is_bounded_by_the_receivers_setting() {
        // A size update to 8192 from the server's encoder: allowed once the client grants it.
        let response = frame(HEADERS, END_HEADERS, 1, &[0x3f, 0xe1, 0x3f, 0x88]);
        let grant = frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0x20, 0]);
        let get = frame(HEADERS, END_HEADERS, 1, &[0x82, 0x84]);
        let granted = prior(&with_preface(&[grant, get.clone()]), &response);
        assert!(granted.headers_readable());
        assert_eq!(granted.requests()[0].status, Some(200));
        let refused = prior(&with_preface(&[get]), &response);
        assert!(!refused.headers_readable());
        // What was decoded before the tables were lost stands.
        assert_eq!(refused.requests(), [request(1, Some("GET"), Some("/"), None)]);
    }

    #[test]
    fn frame_inside_a_block_loses_headers() {
        let client = with_preface(&[
            frame(HEADERS, 0, 1, &[0x82]),
            frame(0x8, 0, 0, &[0, 0, 1, 0]),
            frame(CONTINUATION, END_HEADERS, 1, &[0x84]),
            frame(HEADERS, END_HEADERS, 3, &[0x82, 0x84]),
        ]);
        let h2 = prior(&client, &[]);
        assert!(!h2.headers_readable());
        assert_eq!(h2.streams(), 2);
    }

    #[test]
    fn oversized_block_loses_headers_not_streams() {
        let chunk = vec![0x00; 16 * 1024];
        let mut frames = vec![frame(HEADERS, 0, 1, &chunk)];
        frames.extend((0..4).map(|_| frame(CONTINUATION, 0, 1, &chunk)));
        frames.push(frame(CONTINUATION, END_HEADERS, 1, &[]));
        frames.push(frame(HEADERS, END_HEADERS, 3, &[0x82, 0x84]));
        let h2 = prior(&with_preface(&frames), &[]);
        assert!(!h2.headers_readable());
        assert_eq!(h2.requests(), [request_of(1), request_of(3)]);
    }

    /// A flow that ended in the middle of a header block leaves its box to
    /// the next flow without the block (up to `MAX_BLOCK` a side).
    #[test]
    fn a_kept_parser_holds_no_header_block() {
        let mut h2 = Http2::boxed(H2Mode::PriorKnowledge, true);
        h2.feed(Side::Client, PREFACE, 0);
        h2.feed(Side::Client, &frame(HEADERS, 0, 1, &[0x82; 3000]), 0);
        assert!(h2.halves[Side::Client.index()].block.is_some());
        Http2::recycle(h2);
        let kept = spare::take(&PARSERS).expect("the box is kept");
        assert!(kept.halves.iter().all(|h| h.block.is_none()));
        assert!(kept.decoders.is_none() && kept.requests.capacity() == 0);
    }

    #[test]
    fn frame_larger_than_the_callers_buffer_is_skipped() {
        let mut h2 = Http2::new(H2Mode::PriorKnowledge, true);
        h2.feed(Side::Client, PREFACE, 0);
        let mut head = frame(HEADERS, END_HEADERS, 1, &[]);
        head[..3].copy_from_slice(&[0x01, 0, 0]);
        assert_eq!(
            h2.feed(Side::Client, &head, 0),
            Feed {
                used: HEAD_LEN,
                skip: 0x1_0000
            }
        );
        assert!(!h2.headers_readable());
        assert_eq!(h2.streams(), 1);
    }

    #[test]
    fn trailers_do_not_open_streams() {
        let client = with_preface(&[
            frame(HEADERS, END_HEADERS, 1, &[0x82, 0x84]),
            frame(HEADERS, END_HEADERS | 0x1, 1, &[0x40, 0x01, b'x', 0x01, b'y']),
        ]);
        let h2 = prior(&client, &[]);
        assert_eq!(h2.streams(), 1);
        assert_eq!(h2.requests(), [request(1, Some("GET"), Some("/"), None)]);
    }

    #[test]
    fn streams_beyond_the_cap_are_counted() {
        let extra = 6;
        let frames: Vec<_> = (0..MAX_REQUESTS as u32 + extra)
            .map(|i| frame(HEADERS, END_HEADERS, 2 * i + 1, &[0x82, 0x84]))
            .collect();
        let h2 = prior(&with_preface(&frames), &[]);
        assert_eq!(h2.streams(), MAX_REQUESTS as u64 + u64::from(extra));
        assert_eq!(h2.requests().len(), MAX_REQUESTS);
        assert_eq!(h2.omitted(), u64::from(extra));
    }

    #[test]
    fn wrong_preface_is_not_http2() {
        let mut h2 = Http2::new(H2Mode::PriorKnowledge, true);
        let wrong = b"PRI * HTTP/2.0\r\n\r\nSX";
        assert_eq!(
            h2.feed(Side::Client, wrong, 0),
            Feed {
                used: wrong.len(),
                skip: 0
            }
        );
        assert!(!h2.proven());
        assert!(!h2.wants(Side::Client) && !h2.wants(Side::Server));
    }

    #[test]
    fn short_preface_waits() {
        let mut h2 = Http2::new(H2Mode::PriorKnowledge, true);
        assert_eq!(h2.feed(Side::Client, &PREFACE[..10], 0), Feed::WAIT);
        assert!(h2.wants(Side::Client) && !h2.proven());
    }

    #[test]
    fn gap_desynchronizes_one_side() {
        let mut h2 = Http2::new(H2Mode::PriorKnowledge, true);
        play(&mut h2, &hex(CURL_PRIOR), &[]);
        h2.gap(Side::Server);
        assert!(!h2.wants(Side::Server) && !h2.headers_readable());
        play(
            &mut h2,
            &frame(HEADERS, END_HEADERS, 3, &[0x82, 0x84]),
            &hex(SERVER_PRIOR),
        );
        assert_eq!(
            h2.requests(),
            [request(1, Some("GET"), Some("/a"), None), request_of(3)]
        );
        h2.gap(Side::Client);
        assert!(!h2.wants(Side::Client));
    }

    #[test]
    fn alpn_parses_nothing() {
        let mut h2 = Http2::new(H2Mode::Alpn, true);
        assert!(h2.proven() && !h2.headers_readable());
        assert!(!h2.wants(Side::Client) && !h2.wants(Side::Server));
        assert_eq!(h2.feed(Side::Client, &[0x17, 3, 3], 0), Feed { used: 3, skip: 0 });
        assert_eq!(h2.streams(), 0);
    }

    /// The exchanges cut at every byte, both sides at once, and byte by byte:
    /// the outcome never depends on how the bytes arrive.
    #[test]
    fn every_split_matches_whole() {
        let mut encoder = Encoder::new();
        let block = encode(&mut encoder, &[(":method", "PUT"), (":path", "/split"), ("x-a", "b")]);
        let hand = with_preface(&[
            frame(
                HEADERS,
                END_HEADERS | PADDED,
                1,
                &[[2].as_slice(), &block, &[0, 0]].concat(),
            ),
            frame(0x0, 0, 1, &[7; 40]),
            frame(HEADERS, 0, 3, &encode(&mut encoder, &[(":method", "GET")])),
            frame(
                CONTINUATION,
                END_HEADERS,
                3,
                &encode(&mut encoder, &[(":path", "/c"), ("x-a", "b")]),
            ),
        ]);
        let hand_server = [
            frame(HEADERS, END_HEADERS, 1, &[0x88]),
            frame(HEADERS, END_HEADERS, 3, &[0x8d]),
        ]
        .concat();
        let prior_knowledge: fn() -> Box<Http2> = || Http2::boxed(H2Mode::PriorKnowledge, true);
        let exchanges = [
            (prior_knowledge, hex(CURL_PRIOR), hex(SERVER_PRIOR)),
            (
                || Http2::upgraded("GET".into(), "/up".into(), true),
                hex(CURL_H2C),
                hex(SERVER_H2C),
            ),
            (prior_knowledge, hand, hand_server),
        ];
        for (start, client, server) in exchanges {
            let mut whole = start();
            play(&mut whole, &client, &server);
            let whole = outcome(&whole);
            assert!(whole.3, "the exchange decodes");
            for at in 0..=client.len().max(server.len()) {
                let mut h2 = start();
                let (c, s) = (
                    client.split_at(at.min(client.len())),
                    server.split_at(at.min(server.len())),
                );
                let chunks = [
                    (Side::Client, c.0),
                    (Side::Server, s.0),
                    (Side::Client, c.1),
                    (Side::Server, s.1),
                ];
                replay::chunks(&mut *h2, chunks.map(|(side, bytes)| (side, false, bytes)));
                assert_eq!(outcome(&h2), whole, "split at {at}");
            }
            let mut h2 = start();
            let bytes = client.chunks(1).map(|b| (Side::Client, false, b));
            replay::chunks(
                &mut *h2,
                bytes.chain(server.chunks(1).map(|b| (Side::Server, false, b))),
            );
            assert_eq!(outcome(&h2), whole, "byte by byte");
        }
    }

    fn any_frame() -> impl Strategy<Value = Vec<u8>> {
        (
            0u8..11,
            any::<u8>(),
            0u32..8,
            proptest::collection::vec(any::<u8>(), 0..48),
        )
            .prop_map(|(kind, flags, stream, payload)| frame(kind, flags, stream, &payload))
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..2048), from_start: bool) {
            let mut h2 = Http2::new(H2Mode::PriorKnowledge, from_start);
            replay::chunks(&mut h2, replay::fuzz_input(&input));
            prop_assert_eq!(h2.requests().len() as u64 + h2.omitted(), h2.streams());
        }

        #[test]
        fn random_frames_never_panic(
            client in proptest::collection::vec(any_frame(), 0..24),
            server in proptest::collection::vec(any_frame(), 0..24),
            cut in 0usize..64,
        ) {
            let client = with_preface(&client);
            let server = server.concat();
            let mut h2 = Http2::new(H2Mode::PriorKnowledge, true);
            let (c, s) = (client.split_at(cut.min(client.len())), server.split_at(cut.min(server.len())));
            let chunks = [(Side::Server, s.0), (Side::Client, c.0), (Side::Client, c.1), (Side::Server, s.1)];
            replay::chunks(&mut h2, chunks.map(|(side, bytes)| (side, false, bytes)));
            prop_assert!(h2.proven());
            prop_assert!(h2.streams() <= 24);
        }

        #[test]
        fn mutated_exchange_never_panics(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let (mut client, mut server) = (hex(CURL_H2C), hex(SERVER_H2C));
            for (at, byte) in flips {
                let bytes = if at % 2 == 0 { &mut client } else { &mut server };
                let len = bytes.len();
                bytes[at / 2 % len] ^= byte;
            }
            let mut h2 = Http2::upgraded("GET".into(), "/up".into(), true);
            play(&mut h2, &client, &server);
            prop_assert_eq!(h2.requests().len() as u64 + h2.omitted(), h2.streams());
        }
    }
}
