//! See `im_fuzz::websocket`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| im_fuzz::websocket(data));
