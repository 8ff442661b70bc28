//! See `im_fuzz::websocket_handshake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| im_fuzz::websocket_handshake(data));
