//! Feeds arbitrary bytes to the link's decoder, as a peer process would
//! send them: link frames (`Batch`es) taken off the stream, each call
//! turned into an `Upcall` or `Downcall` or refused. It must never panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use protocol::FrameCodec;
use protocol::link::wire::pb::Batch;
use protocol::link::{Downcall, Upcall};

fuzz_target!(|data: &[u8]| {
    let codec = FrameCodec::new(1 << 20);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(batch)) = codec.decode_message::<Batch>(&mut buf) {
        for call in batch.upcalls {
            let _ = Upcall::try_from(call);
        }
        for call in batch.downcalls {
            let _ = Downcall::try_from(call);
        }
    }
});
