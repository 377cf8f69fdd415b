//! Any chunks of either side, with gaps: the parser must neither panic nor
//! loop, whatever it is fed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracer_protocol::{H2Mode, http2::Http2, replay};

fuzz_target!(|data: &[u8]| {
    let mut parser = Http2::new(H2Mode::PriorKnowledge, true);
    replay::chunks(&mut parser, replay::fuzz_input(data));
});
