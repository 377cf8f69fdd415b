//! Where each message starts: the sequence number of its first byte, so that
//! a diagram can name the segment that carried it ("GET / HTTP/1.1", "ws
//! ping", "HEADERS #3"). Found by comparing what the parsers have seen
//! before and after each feed: every feed starts at a message boundary.
use crate::{FrameCounts, Side, track::Parts};

/// Marks kept per flow; later messages are not labelled.
pub const MAX_MARKS: usize = 256;

/// Messages tracked by index for their answers (a bit each).
const TRACKED: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub side: Side,
    pub seq: u32,
    pub what: What,
}

/// A message, by its place in the flow's summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    /// `http.requests[i]`, and its response.
    Request(usize),
    Response(usize),
    /// A WebSocket frame, by opcode name.
    Frame(&'static str),
    /// `http2.requests[i]`: its request HEADERS, its response HEADERS.
    H2Request(usize),
    H2Response(usize),
    ClientHello,
    ServerHello,
}

/// What the parsers had seen at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    requests: usize,
    answered: u128,
    frames: [FrameCounts; 2],
    h2_requests: usize,
    h2_answered: u128,
    hellos: [bool; 2],
}

fn bits(statuses: impl Iterator<Item = bool>) -> u128 {
    statuses
        .take(TRACKED)
        .enumerate()
        .fold(0, |m, (i, on)| m | (u128::from(on) << i))
}

impl Seen {
    pub(crate) fn of(p: &Parts<'_>) -> Seen {
        let mut s = Seen::default();
        if let Some(h) = p.http {
            s.requests = h.requests().len();
            s.answered = bits(h.requests().iter().map(|r| r.status.is_some()));
        }
        if let Some(w) = p.websocket {
            s.frames = [w.frames(Side::Client), w.frames(Side::Server)];
        }
        if let Some(h) = p.http2 {
            s.h2_requests = h.requests().len();
            s.h2_answered = bits(h.requests().iter().map(|r| r.status.is_some()));
        }
        if let Some(t) = p.tls {
            s.hellos = [t.proven(), t.version().is_some()];
        }
        s
    }

    /// The messages that started at `seq` between `self` and `now`.
    pub(crate) fn marks(&self, now: &Seen, side: Side, seq: u32, out: &mut Vec<Mark>) {
        let mut add = |what| {
            if out.len() < MAX_MARKS {
                out.push(Mark { side, seq, what });
            }
        };
        (self.requests..now.requests).for_each(|i| add(What::Request(i)));
        answers(self.answered, now.answered).for_each(|i| add(What::Response(i)));
        if let Some(name) = new_frame(&self.frames[side.index()], &now.frames[side.index()]) {
            add(What::Frame(name));
        }
        (self.h2_requests..now.h2_requests).for_each(|i| add(What::H2Request(i)));
        answers(self.h2_answered, now.h2_answered).for_each(|i| add(What::H2Response(i)));
        if !self.hellos[0] && now.hellos[0] {
            add(What::ClientHello);
        }
        if !self.hellos[1] && now.hellos[1] {
            add(What::ServerHello);
        }
    }
}

/// Indices answered in `now` and not before.
fn answers(before: u128, now: u128) -> impl Iterator<Item = usize> {
    let new = now & !before;
    (0..TRACKED).filter(move |i| new >> i & 1 == 1)
}

/// The opcode of the frame counted between `before` and `now`, if any.
fn new_frame(before: &FrameCounts, now: &FrameCounts) -> Option<&'static str> {
    [
        ("text", before.text, now.text),
        ("binary", before.binary, now.binary),
        ("ping", before.ping, now.ping),
        ("pong", before.pong, now.pong),
        ("close", before.close, now.close),
        ("continuation", before.continuation, now.continuation),
    ]
    .into_iter()
    .find(|(_, b, n)| n > b)
    .map(|(name, _, _)| name)
}
