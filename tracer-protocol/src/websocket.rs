//! WebSocket (RFC 6455) after an HTTP/1.1 upgrade: frames are counted by
//! opcode from their headers alone. Payloads are skipped, so the kernel stops
//! shipping them, except a Close frame's, whose status code and reason say
//! how the conversation ended.
use super::{Feed, FrameCounts, Side};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

/// Appended to the client's key before hashing (RFC 6455 §1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Control frames carry at most this much payload (RFC 6455 §5.5), which
/// also bounds the Close reason kept.
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// The length of a `Sec-WebSocket-Accept`: a SHA-1 in base64.
pub const ACCEPT_LEN: usize = 28;

/// The `Sec-WebSocket-Accept` a server must answer to `key`.
pub fn accept_key(key: &[u8]) -> [u8; ACCEPT_LEN] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    let mut accept = [0; ACCEPT_LEN];
    let n = STANDARD
        .encode_slice(sha.finalize(), &mut accept)
        .expect("a SHA-1 in base64 is 28 bytes");
    debug_assert_eq!(n, ACCEPT_LEN);
    accept
}

/// The Close frame that began the closing handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    pub initiator: Side,
    /// Absent when the frame had no payload.
    pub code: Option<u16>,
    pub reason: std::sync::Arc<str>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Half {
    frames: FrameCounts,
    /// A Close was sent: RFC 6455 forbids any data frame after it.
    closed: bool,
    lost: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct WebSocket {
    halves: [Half; 2],
    close: Option<CloseFrame>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

/// A frame header: everything up to the payload.
#[derive(Debug)]
struct Header {
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    payload: u64,
    size: usize,
}

/// A header that cannot start a frame: this side's bytes are not where we think.
#[derive(Debug)]
struct Desync;

impl Opcode {
    fn from_bits(bits: u8) -> Result<Opcode, Desync> {
        Ok(match bits {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return Err(Desync),
        })
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

impl Header {
    /// `Ok(None)` while the header is incomplete.
    fn parse(data: &[u8]) -> Result<Option<Header>, Desync> {
        let [b0, b1, ..] = *data else { return Ok(None) };
        let fin = b0 & 0x80 != 0;
        let opcode = Opcode::from_bits(b0 & 0x0f)?;
        let masked = b1 & 0x80 != 0;
        let extended = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let size = 2 + extended + if masked { 4 } else { 0 };
        let Some(head) = data.get(..size) else { return Ok(None) };
        let payload = match extended {
            0 => u64::from(b1 & 0x7f),
            _ => head[2..2 + extended].iter().fold(0, |n, &b| n << 8 | u64::from(b)),
        };
        // The 64-bit form's top bit must be zero; control frames are short and whole.
        if payload >> 63 != 0 || (opcode.is_control() && (!fin || payload > MAX_CONTROL_PAYLOAD)) {
            return Err(Desync);
        }
        let mask = if masked { head.last_chunk::<4>().copied() } else { None };
        Ok(Some(Header {
            opcode,
            mask,
            payload,
            size,
        }))
    }
}

impl WebSocket {
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames are counted, not timed: `_ts_ns` is there for the common contract.
    pub fn feed(&mut self, side: Side, data: &[u8], _ts_ns: u64) -> Feed {
        if !self.wants(side) {
            return all(data);
        }
        match Header::parse(data) {
            Ok(None) => Feed::WAIT,
            Ok(Some(header)) if header.opcode == Opcode::Close => self.close_frame(side, &header, data),
            Ok(Some(header)) => {
                count(&mut self.halves[side.index()].frames, header.opcode);
                Feed {
                    used: header.size,
                    skip: header.payload,
                }
            }
            Err(Desync) => {
                self.gap(side);
                all(data)
            }
        }
    }

    pub fn gap(&mut self, side: Side) {
        self.halves[side.index()].lost = true;
    }

    pub fn wants(&self, side: Side) -> bool {
        let half = &self.halves[side.index()];
        !half.closed && !half.lost
    }

    pub fn frames(&self, side: Side) -> FrameCounts {
        self.halves[side.index()].frames
    }

    pub fn close(&self) -> Option<&CloseFrame> {
        self.close.as_ref()
    }

    pub fn lost(&self, side: Side) -> bool {
        self.halves[side.index()].lost
    }

    fn close_frame(&mut self, side: Side, header: &Header, data: &[u8]) -> Feed {
        // `parse` bounded the payload to MAX_CONTROL_PAYLOAD.
        let end = header.size + header.payload as usize;
        let Some(payload) = data.get(header.size..end) else {
            return Feed::WAIT;
        };
        let half = &mut self.halves[side.index()];
        count(&mut half.frames, Opcode::Close);
        half.closed = true;
        if self.close.is_none() {
            self.close = Some(read_close(side, payload, header.mask));
        }
        Feed { used: end, skip: 0 }
    }
}

/// Nothing more to learn from these bytes.
fn all(data: &[u8]) -> Feed {
    Feed {
        used: data.len(),
        skip: 0,
    }
}

fn count(frames: &mut FrameCounts, opcode: Opcode) {
    let counter = match opcode {
        Opcode::Continuation => &mut frames.continuation,
        Opcode::Text => &mut frames.text,
        Opcode::Binary => &mut frames.binary,
        Opcode::Close => &mut frames.close,
        Opcode::Ping => &mut frames.ping,
        Opcode::Pong => &mut frames.pong,
    };
    *counter += 1;
}

fn read_close(initiator: Side, payload: &[u8], mask: Option<[u8; 4]>) -> CloseFrame {
    let key = mask.unwrap_or([0; 4]);
    // `parse` bounded a control frame's payload.
    let mut clear = [0; MAX_CONTROL_PAYLOAD as usize];
    let clear = &mut clear[..payload.len().min(MAX_CONTROL_PAYLOAD as usize)];
    for ((c, b), k) in clear.iter_mut().zip(payload).zip(key.iter().cycle()) {
        *c = b ^ k;
    }
    // A one-byte payload is malformed (RFC 6455 §5.5.1): no code to read.
    let (code, reason) = match clear.split_first_chunk::<2>() {
        Some((code, reason)) => (Some(u16::from_be_bytes(*code)), String::from_utf8_lossy(reason)),
        None => (None, "".into()),
    };
    let reason = crate::shared(&reason);
    CloseFrame {
        initiator,
        code,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_PENDING;
    use proptest::prelude::*;

    /// RFC 6455 §5.7: "Hello", unmasked then masked.
    const HELLO: &[u8] = &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    const HELLO_MASKED: &[u8] = &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    /// RFC 6455 §5.7: "Hel" then "lo" in a continuation.
    const FRAGMENTED: &[u8] = &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    const PONG_MASKED: &[u8] = &[0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// The caller's side of the feeding contract, for one direction.
    #[derive(Debug, Default, PartialEq)]
    struct Pipe {
        buf: Vec<u8>,
        skip: u64,
    }

    fn deliver(ws: &mut WebSocket, pipes: &mut [Pipe; 2], side: Side, bytes: &[u8]) {
        let pipe = &mut pipes[side.index()];
        let dropped = bytes.len().min(usize::try_from(pipe.skip).unwrap_or(usize::MAX));
        pipe.skip -= dropped as u64;
        pipe.buf.extend_from_slice(&bytes[dropped..]);
        while !pipe.buf.is_empty() {
            let feed = ws.feed(side, &pipe.buf, 0);
            if !feed.progressed() {
                if pipe.buf.len() >= MAX_PENDING {
                    ws.gap(side);
                    pipe.buf.clear();
                }
                return;
            }
            pipe.buf.drain(..feed.used);
            let now = feed.skip.min(pipe.buf.len() as u64);
            pipe.buf.drain(..now as usize);
            pipe.skip = feed.skip - now;
        }
    }

    fn replay<'a>(chunks: impl IntoIterator<Item = (Side, &'a [u8])>) -> (WebSocket, [Pipe; 2]) {
        let mut ws = WebSocket::new();
        let mut pipes = Default::default();
        for (side, bytes) in chunks {
            deliver(&mut ws, &mut pipes, side, bytes);
        }
        (ws, pipes)
    }

    fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![b0, 0x80 | payload.len() as u8];
        frame.extend(KEY);
        frame.extend(payload.iter().zip(KEY.iter().cycle()).map(|(b, k)| b ^ k));
        frame
    }

    fn close_payload(code: u16, reason: &str) -> Vec<u8> {
        [&code.to_be_bytes()[..], reason.as_bytes()].concat()
    }

    fn counts(text: u64, binary: u64, ping: u64, pong: u64, close: u64, continuation: u64) -> FrameCounts {
        FrameCounts {
            text,
            binary,
            ping,
            pong,
            close,
            continuation,
        }
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn masked_client_frames() {
        let binary = masked(0x82, &[1, 2, 3]);
        let ping = masked(0x89, b"hi");
        let close = masked(0x88, &close_payload(1000, "bye"));
        let client = [HELLO_MASKED, &binary, &ping, &close].concat();
        let (ws, pipes) = replay([(Side::Client, &client[..])]);
        assert_eq!(ws.frames(Side::Client), counts(1, 1, 1, 0, 1, 0));
        let expected = CloseFrame {
            initiator: Side::Client,
            code: Some(1000),
            reason: "bye".into(),
        };
        assert_eq!(ws.close(), Some(&expected));
        assert!(!ws.wants(Side::Client) && ws.wants(Side::Server));
        assert_eq!(pipes, [Pipe::default(), Pipe::default()]);
    }

    #[test]
    fn unmasked_server_frames() {
        let server = [HELLO, FRAGMENTED, &[0x8a, 0x00]].concat();
        let (ws, _) = replay([(Side::Server, &server[..]), (Side::Client, PONG_MASKED)]);
        assert_eq!(ws.frames(Side::Server), counts(2, 0, 0, 1, 0, 1));
        assert_eq!(ws.frames(Side::Client), counts(0, 0, 0, 1, 0, 0));
        assert_eq!(ws.close(), None);
    }

    #[test]
    fn lengths_16_and_64_bit() {
        let mut server = vec![0x82, 0x7e, 0x01, 0x00];
        server.extend([0xaa; 256]);
        server.extend([0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        server.extend(vec![0xbb; 65536]);
        server.extend(HELLO);
        let mut ws = WebSocket::new();
        assert_eq!(ws.feed(Side::Server, &server, 0), Feed { used: 4, skip: 256 });
        assert_eq!(ws.feed(Side::Server, &server[260..], 0), Feed { used: 10, skip: 65536 });
        let (ws, _) = replay([(Side::Server, &server[..])]);
        assert_eq!(ws.frames(Side::Server), counts(1, 2, 0, 0, 0, 0));
    }

    #[test]
    fn close_code_from_the_server_side() {
        let server = [&[0x88, 0x0c][..], &close_payload(1001, "going away")].concat();
        let client = masked(0x88, &close_payload(1001, ""));
        let (ws, _) = replay([(Side::Server, &server[..]), (Side::Client, &client[..])]);
        let expected = CloseFrame {
            initiator: Side::Server,
            code: Some(1001),
            reason: "going away".into(),
        };
        assert_eq!(ws.close(), Some(&expected));
        assert_eq!(ws.frames(Side::Client).close, 1);
        assert!(!ws.wants(Side::Client) && !ws.wants(Side::Server));
    }

    #[test]
    fn close_without_payload_has_no_code() {
        let (ws, _) = replay([(Side::Server, &[0x88, 0x00][..])]);
        let expected = CloseFrame {
            initiator: Side::Server,
            code: None,
            reason: "".into(),
        };
        assert_eq!(ws.close(), Some(&expected));
    }

    #[test]
    fn close_waits_for_its_payload() {
        let close = masked(0x88, &close_payload(1000, "bye"));
        let mut ws = WebSocket::new();
        assert_eq!(ws.feed(Side::Client, &close[..close.len() - 1], 0), Feed::WAIT);
        assert_eq!(
            ws.feed(Side::Client, &close, 0),
            Feed {
                used: close.len(),
                skip: 0
            }
        );
    }

    #[test]
    fn protocol_errors_desync_the_side() {
        let oversized_close = [&[0x88, 0x7e, 0x00, 0x7e][..], &[0; 126]].concat();
        for bad in [
            &[0x83, 0x00][..],
            &[0x09, 0x00],
            &oversized_close,
            &[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0],
        ] {
            let (ws, _) = replay([(Side::Server, bad), (Side::Server, HELLO)]);
            assert!(ws.lost(Side::Server) && !ws.wants(Side::Server), "{bad:x?}");
            assert_eq!(ws.frames(Side::Server), FrameCounts::default());
        }
    }

    #[test]
    fn gap_stops_counting() {
        let mut ws = WebSocket::new();
        ws.gap(Side::Client);
        assert_eq!(
            ws.feed(Side::Client, HELLO_MASKED, 0),
            Feed {
                used: HELLO_MASKED.len(),
                skip: 0
            }
        );
        assert!(ws.lost(Side::Client) && !ws.lost(Side::Server));
        assert_eq!(ws.frames(Side::Client), FrameCounts::default());
    }

    #[test]
    fn every_split_matches_whole() {
        let mut long = vec![0x82, 0x7e, 0x01, 0x00];
        long.extend([0xaa; 256]);
        let client = [
            HELLO_MASKED,
            &masked(0x89, b"ping"),
            &masked(0x88, &close_payload(1000, "done")),
        ]
        .concat();
        let server = [HELLO, FRAGMENTED, &long, &[0x8a, 0x00], &[0x88, 0x02, 0x03, 0xe8]].concat();
        let exchange: [(Side, &[u8]); 3] = [
            (Side::Server, &server[..20]),
            (Side::Client, &client),
            (Side::Server, &server[20..]),
        ];
        let whole = replay(exchange);
        let total: usize = exchange.iter().map(|(_, b)| b.len()).sum();
        for at in 0..=total {
            assert_eq!(replay(split(&exchange, at)), whole, "split at {at}");
        }
        assert_eq!(
            replay(
                exchange
                    .iter()
                    .flat_map(|&(side, b)| b.chunks(1).map(move |c| (side, c)))
            ),
            whole
        );
    }

    /// The exchange with the chunk holding byte `at` cut in two there.
    fn split<'a>(exchange: &[(Side, &'a [u8])], at: usize) -> Vec<(Side, &'a [u8])> {
        let mut start = 0;
        let mut chunks = Vec::new();
        for &(side, bytes) in exchange {
            let cut = at.saturating_sub(start).min(bytes.len());
            chunks.extend([(side, &bytes[..cut]), (side, &bytes[cut..])]);
            start += bytes.len();
        }
        chunks
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            chunks in proptest::collection::vec((any::<bool>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..24),
        ) {
            let mut ws = WebSocket::new();
            let mut pipes = Default::default();
            for (client, gap, bytes) in chunks {
                let side = if client { Side::Client } else { Side::Server };
                if gap {
                    ws.gap(side);
                }
                deliver(&mut ws, &mut pipes, side, &bytes);
            }
        }
    }
}
