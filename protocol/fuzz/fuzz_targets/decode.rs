//! Feeds arbitrary bytes to the frame decoder, split at an arbitrary point,
//! and decodes until it waits or fails. It must never panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use protocol::FrameCodec;

fuzz_target!(|data: &[u8]| {
    let codec = FrameCodec::new(4096);
    let split = data.first().map_or(0, |b| *b as usize % (data.len().max(1)));
    let mut buf = BytesMut::from(&data[..split]);
    for chunk in [&data[split..], &[][..]] {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
        buf.extend_from_slice(chunk);
    }
});
