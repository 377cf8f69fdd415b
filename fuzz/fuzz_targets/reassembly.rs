//! Payload heads in any order, overlapping, repeated or with holes, through
//! the reassembler into whichever parser the bytes select.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracer_protocol::Tracker;

fuzz_target!(|data: &[u8]| {
    let mut tracker = Tracker::new(0, [Some(1000), Some(5000)]);
    let mut next = [1001u32, 5001u32];
    let mut input = data;
    // A chunk: control byte (bit 0: sender; bits 1-7: how far its sequence
    // number strays from where the stream is, back or ahead), length, bytes.
    while let [control, len, rest @ ..] = input {
        let n = usize::from(*len).min(rest.len());
        let from = usize::from(control & 1);
        let stray = i32::from(control >> 1) - 64;
        let seq = next[from].wrapping_add_signed(stray);
        let _ = tracker.on_payload(from, seq, &rest[..n], n as u32, 0);
        next[from] = seq.wrapping_add(n as u32);
        input = &rest[n..];
    }
    let _ = tracker.summary();
});
