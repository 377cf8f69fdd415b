//! Any chunks of either side, with gaps: the parser must neither panic nor
//! loop, whatever it is fed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracer_protocol::{replay, http1::Http1};

fuzz_target!(|data: &[u8]| {
    let mut parser = Http1::new();
    replay::chunks(&mut parser, replay::fuzz_input(data));
});
