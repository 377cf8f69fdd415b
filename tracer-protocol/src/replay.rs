//! Plays a byte string to a parser as the reassembler would: chunks of either
//! side, gaps between them, every `Feed` applied. The fuzz targets and the
//! property tests drive the parsers through it, so they test the contract
//! the reassembler relies on, not a friendlier one.
use super::{Feed, MAX_PENDING, Side, http1::Http1, http2::Http2, tls::Tls, websocket::WebSocket};

/// A parser as the reassembler sees it.
pub trait Parser {
    fn feed(&mut self, side: Side, data: &[u8], ts_ns: u64) -> Feed;
    fn gap(&mut self, side: Side);
}

/// One side's bytes not yet taken, and bytes still to skip.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    skip: u64,
}

/// Feeds chunks to `parser`: each is (side, lost bytes before it, bytes).
pub fn chunks<'a, P: Parser>(parser: &mut P, chunks: impl IntoIterator<Item = (Side, bool, &'a [u8])>) {
    let mut sides = [Pending::default(), Pending::default()];
    for (ts, (side, lost, data)) in chunks.into_iter().enumerate() {
        let p = &mut sides[side.index()];
        if lost {
            parser.gap(side);
            *p = Pending::default();
        }
        let skipped = p.skip.min(data.len() as u64) as usize;
        p.skip -= skipped as u64;
        p.buf.extend_from_slice(&data[skipped..]);
        pump(parser, side, p, ts as u64);
    }
}

fn pump<P: Parser>(parser: &mut P, side: Side, p: &mut Pending, ts: u64) {
    while !p.buf.is_empty() {
        let feed = parser.feed(side, &p.buf, ts);
        assert!(feed.used <= p.buf.len(), "a parser used more than it was given");
        if !feed.progressed() {
            if p.buf.len() >= MAX_PENDING {
                parser.gap(side);
                p.buf.clear();
            }
            return;
        }
        p.buf.drain(..feed.used);
        let skipped = feed.skip.min(p.buf.len() as u64) as usize;
        p.buf.drain(..skipped);
        p.skip = feed.skip - skipped as u64;
    }
}

/// Reads fuzz input as chunks: a control byte (bit 0: server side, bit 1:
/// bytes lost before it), a length byte, then that many bytes.
pub fn fuzz_input(mut input: &[u8]) -> Vec<(Side, bool, &[u8])> {
    let mut out = Vec::new();
    while let [control, len, rest @ ..] = input {
        let n = usize::from(*len).min(rest.len());
        let side = if control & 1 == 0 { Side::Client } else { Side::Server };
        out.push((side, control & 2 != 0, &rest[..n]));
        input = &rest[n..];
    }
    out
}

macro_rules! parser {
    ($($t:ty),*) => {$(
        impl Parser for $t {
            fn feed(&mut self, side: Side, data: &[u8], ts_ns: u64) -> Feed {
                <$t>::feed(self, side, data, ts_ns)
            }
            fn gap(&mut self, side: Side) {
                <$t>::gap(self, side)
            }
        }
    )*};
}

parser!(Http1, WebSocket, Http2, Tls);
