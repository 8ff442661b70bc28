//! See `im_fuzz::link`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| im_fuzz::link(data));
