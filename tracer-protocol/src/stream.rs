//! One direction of a flow's bytes, rebuilt from the payload heads the kernel
//! ships: in order, without duplicates, with the bytes a parser skipped never
//! kept, and a gap reported when bytes went missing (a head shorter than its
//! segment, a segment not shipped).
use std::cell::RefCell;

use bytes::{Buf, BytesMut};

use super::{
    Feed, MAX_PENDING,
    spare::{self, Spares},
};

thread_local! {
    /// Buffers of messages parsed whole: the next message of any flow takes
    /// one. Fewer than other spares: a buffer can hold `MAX_PENDING`, and few
    /// flows wait for the rest of a message at once.
    static BUFFERS: RefCell<Spares<BytesMut>> = const { RefCell::new(Spares::new(256)) };
}

#[derive(Debug, Default)]
pub struct Stream {
    /// Sequence number of stream offset 0: the ISN + 1, or the first byte seen.
    base: Option<u32>,
    /// Stream offset of `buf[0]`; beyond the buffer's end while skipping.
    pos: u64,
    buf: BytesMut,
    /// Stream offset just past the last segment seen.
    received: u64,
    /// Bytes of the last segment that were not captured (its head was cut).
    hole: Option<(u64, u64)>,
    /// Heads that came before an earlier one still missing.
    early: Vec<Early>,
}

/// Heads held while an earlier one is missing (loss and retransmission on a
/// real link, or two CPUs' events crossing in the ring buffer); beyond this
/// many, the missing bytes are taken as lost.
const MAX_EARLY: usize = 4;

#[derive(Debug)]
struct Early {
    at: u64,
    data: Vec<u8>,
    /// Stream offset just past its segment.
    end: u64,
}

impl Stream {
    /// A stream whose SYN carried `isn`: offsets count from its first byte.
    pub fn from_isn(isn: Option<u32>) -> Self {
        let mut s = Self::default();
        s.base = isn.map(|i| i.wrapping_add(1));
        s
    }

    /// Stream offset of the next byte wanted.
    pub fn want(&self) -> u64 {
        self.pos.saturating_add(self.buf.len() as u64)
    }

    /// The sequence number of the next byte wanted.
    pub fn want_seq(&self) -> Option<u32> {
        self.base.map(|b| b.wrapping_add(self.want() as u32))
    }

    /// Bytes waiting for the parser.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// The 64-bit stream offset of `seq`, taken as the one nearest to where
    /// the stream is: sequence numbers wrap every 4 GiB. While a parser skips
    /// far ahead (a body of gigabytes), what arrives is near what was received.
    fn offset(&mut self, seq: u32) -> u64 {
        let base = *self.base.get_or_insert(seq);
        let near = if self.want() > self.received.saturating_add(1 << 30) {
            self.received
        } else {
            self.want()
        };
        let delta = seq.wrapping_sub(base).wrapping_sub(near as u32) as i32;
        near.saturating_add_signed(i64::from(delta))
    }

    /// Adds `data`, captured at sequence number `seq` from a segment that
    /// carries `len` bytes from there on. True when bytes before it were
    /// lost: what was pending is dropped and the stream resumes at the
    /// earliest head that came.
    pub fn push(&mut self, seq: u32, data: &[u8], len: u32) -> bool {
        let at = self.offset(seq);
        let end = at.saturating_add(u64::from(len).max(data.len() as u64));
        self.received = self.received.max(end);
        if end <= self.want() {
            return false;
        }
        if at <= self.want() {
            self.place(at, data, end);
            self.drain_early();
            return false;
        }
        self.early.push(Early {
            at,
            data: data.to_vec(),
            end,
        });
        if self.early.len() <= MAX_EARLY {
            return false;
        }
        let first = (0..self.early.len()).min_by_key(|&i| self.early[i].at).unwrap_or(0);
        let first = self.early.swap_remove(first);
        self.buf.clear();
        self.pos = first.at;
        self.place(first.at, &first.data, first.end);
        self.drain_early();
        true
    }

    /// Appends a head that starts at or before the next byte wanted.
    fn place(&mut self, at: u64, data: &[u8], seg_end: u64) {
        let want = self.want();
        let end = at.saturating_add(data.len() as u64);
        self.hole = (seg_end > end && end >= want).then_some((end, seg_end));
        if end > want {
            self.append(&data[(want - at) as usize..]);
        }
    }

    /// Heads held back that the stream has now reached.
    fn drain_early(&mut self) {
        while let Some(i) = self.early.iter().position(|e| e.at <= self.want()) {
            let e = self.early.swap_remove(i);
            if e.end > self.want() {
                self.place(e.at, &e.data, e.end);
            }
        }
    }

    /// Whether the parser, having taken what it could, now needs bytes the
    /// last head did not capture: then the stream resumes after them.
    pub fn hole_hit(&mut self) -> bool {
        let Some((start, end)) = self.hole else {
            return false;
        };
        let want = self.want();
        if want >= end || want < start {
            self.hole = None;
            return false;
        }
        self.buf.clear();
        self.pos = end;
        self.hole = None;
        self.drain_early();
        true
    }

    fn append(&mut self, data: &[u8]) {
        if self.buf.capacity() == 0
            && let Some(spare) = spare::take(&BUFFERS)
        {
            self.buf = spare;
        }
        let room = MAX_PENDING.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
    }

    /// Drops what a parser used and skipped.
    pub fn consume(&mut self, feed: Feed) {
        let used = feed.used.min(self.buf.len());
        self.buf.advance(used);
        let skipped = feed.skip.min(self.buf.len() as u64) as usize;
        self.buf.advance(skipped);
        self.pos = self.pos.saturating_add(used as u64).saturating_add(feed.skip);
        if self.buf.is_empty() {
            // An idle flow keeps no buffer.
            self.release();
        }
        self.drain_early();
    }

    /// Hands the buffer to the next message of any flow.
    fn release(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        // Reclaiming the room of consumed bytes (no copy, no allocation) says
        // how large the buffer is: appends to what was pending can grow one
        // past `MAX_PENDING`, and such a one is let go, so spares stay small.
        // One that never allocated reclaims nothing.
        let large = buf.try_reclaim(MAX_PENDING + 1);
        if !large && buf.try_reclaim(1) {
            spare::give(&BUFFERS, buf);
        }
    }

    /// Forgets what is pending (after a gap the parser could not get past).
    pub fn drop_pending(&mut self) {
        let n = self.buf.len();
        self.consume(Feed { used: n, skip: 0 });
    }

    /// Whether a parser skipped more than `n` bytes beyond those received.
    pub fn skipping_far(&self, n: u64) -> bool {
        self.want() > self.received.saturating_add(n)
    }

    /// The sequence number to ask the kernel for: the next byte wanted, but
    /// never more than 1 GiB past what was seen, so that the kernel's signed
    /// 32-bit comparison holds across a body of any size (the request steps
    /// forward as heads cross it).
    pub fn ask_seq(&self) -> Option<u32> {
        let ask = self.want().min(self.received.saturating_add(1 << 30));
        self.base.map(|b| b.wrapping_add(ask as u32))
    }

    pub fn is_full(&self) -> bool {
        self.buf.len() >= MAX_PENDING
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spare_buffers() -> usize {
        BUFFERS.with_borrow(Spares::kept)
    }

    /// A message parsed whole leaves no buffer with its flow: the next
    /// message of any flow takes it.
    #[test]
    fn a_buffer_goes_from_flow_to_flow() {
        let before = spare_buffers();
        let mut a = Stream::from_isn(Some(0));
        a.push(1, b"GET / HTTP/1.1\r\n\r\n", 18);
        a.consume(Feed { used: 18, skip: 0 });
        assert_eq!(a.buf.capacity(), 0, "an idle flow keeps no buffer");
        assert_eq!(spare_buffers(), before + 1);
        let mut b = Stream::from_isn(Some(0));
        b.push(1, b"HTTP/1.1 200 OK\r\n", 17);
        assert_eq!(b.pending(), b"HTTP/1.1 200 OK\r\n");
        assert_eq!(spare_buffers(), before, "taken by the next message");
    }

    /// A buffer that appends grew past `MAX_PENDING` is freed, not kept.
    #[test]
    fn a_large_buffer_is_let_go() {
        let before = spare_buffers();
        let mut s = Stream::from_isn(Some(0));
        s.push(1, &[b'a'; 9000], 9000);
        s.push(9001, &[b'b'; 7000], 7000);
        assert_eq!(s.pending().len(), 16_000);
        s.consume(Feed { used: 16_000, skip: 0 });
        assert_eq!(s.buf.capacity(), 0, "an idle flow keeps no buffer");
        assert_eq!(spare_buffers(), before, "nor is one this large kept");
    }

    #[test]
    fn bytes_come_in_order_once() {
        let mut s = Stream::from_isn(Some(999));
        assert!(!s.push(1000, b"GET / HT", 8));
        assert!(!s.push(1000, b"GET / HT", 8), "a retransmit adds nothing");
        assert!(!s.push(1004, b"/ HTTP/1.1", 10), "an overlap adds its new part");
        assert_eq!(s.pending(), b"GET / HTTP/1.1");
        assert_eq!(s.want_seq(), Some(1014));
    }

    #[test]
    fn skipped_bytes_are_never_kept() {
        let mut s = Stream::from_isn(Some(0));
        s.push(1, b"head+body", 9);
        s.consume(Feed { used: 5, skip: 10 });
        assert_eq!(s.want(), 15);
        assert!(
            !s.push(10, b"skippedbody"[1..].as_ref(), 10),
            "the skipped part is not a gap"
        );
        assert_eq!(s.pending(), b"body");
        for later in [40, 50, 60, 70] {
            assert!(!s.push(later, b"later", 5), "held: bytes 20..39 may still come");
        }
        assert!(s.push(80, b"later", 5), "bytes 20..39 never came");
        assert_eq!((s.pending(), s.want()), (&b"later"[..], 44));
    }

    #[test]
    fn a_head_that_comes_early_waits_for_the_one_before_it() {
        let mut s = Stream::from_isn(Some(0));
        assert!(!s.push(6, b"world", 5));
        assert_eq!(s.pending(), b"");
        assert!(!s.push(1, b"hello", 5));
        assert_eq!(s.pending(), b"helloworld");
    }

    #[test]
    fn offsets_survive_sequence_wrap() {
        let mut s = Stream::from_isn(Some(u32::MAX - 2));
        s.push(u32::MAX - 1, b"ab", 2);
        s.push(0, b"cd", 2);
        assert_eq!(s.pending(), b"abcd");
        assert_eq!(s.want(), 4);
    }

    #[test]
    fn without_a_syn_the_first_byte_seen_is_offset_zero() {
        let mut s = Stream::from_isn(None);
        assert!(!s.push(5000, b"x", 1));
        assert_eq!(s.want_seq(), Some(5001));
    }

    #[test]
    fn a_cut_head_is_a_gap_only_when_its_missing_bytes_are_needed() {
        let mut s = Stream::from_isn(Some(0));
        s.push(1, b"HEAD", 10);
        s.consume(Feed { used: 4, skip: 0 });
        assert!(s.hole_hit(), "the next message starts where nothing was captured");
        assert_eq!(s.want(), 10);
        s.push(11, b"BODY", 100);
        s.consume(Feed { used: 2, skip: 200 });
        assert!(!s.hole_hit(), "the parser skips past the missing bytes");
    }

    #[test]
    fn a_skip_of_gigabytes_is_asked_for_in_steps() {
        let mut s = Stream::from_isn(Some(0));
        s.push(1, b"head", 4);
        s.consume(Feed { used: 4, skip: 5 << 30 });
        assert_eq!(s.ask_seq(), Some(1 + 4 + (1 << 30)));
        // The head the kernel ships at that point lands inside the body, not as a gap.
        let at = 1 + 4 + (1u64 << 30);
        assert!(!s.push(at as u32, b"xx", 65536));
        assert_eq!(s.ask_seq(), Some((at + 65536 + (1 << 30)) as u32));
        assert_eq!(s.want(), 4 + (5 << 30));
    }

    #[test]
    fn pending_bytes_are_bounded() {
        let mut s = Stream::from_isn(Some(0));
        let big = vec![b'a'; MAX_PENDING + 10];
        s.push(1, &big, big.len() as u32);
        assert!(s.is_full());
        assert_eq!(s.pending().len(), MAX_PENDING);
    }
}
