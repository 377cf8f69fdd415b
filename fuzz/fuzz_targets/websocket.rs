//! Any chunks of either side, with gaps: the parser must neither panic nor
//! loop, whatever it is fed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracer_protocol::{replay, websocket::WebSocket};

fuzz_target!(|data: &[u8]| {
    let mut parser = WebSocket::new();
    replay::chunks(&mut parser, replay::fuzz_input(data));
});
