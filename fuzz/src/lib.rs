//! The fuzz targets' bodies: each takes arbitrary bytes and must never
//! panic. `fuzz_targets/<name>.rs` hands libFuzzer's inputs to them;
//! `cargo test` replays `regressions/<name>/*` through them.

use std::sync::Arc;

use bytes::BytesMut;
use gateway::websocket::{Handshake, WsPolicy, answer_handshake};
use logic::config::LogicConfig;
use logic::pipeline::Pipeline;
use prost::Message as _;
use protocol::link::wire::pb::Batch;
use protocol::link::{Downcall, Downlink, SessionId, Upcall};
use protocol::{FrameCodec, pb};

/// Client frames: the length-prefixed decoder, fed in two pieces split at
/// an arbitrary point, until it waits or fails.
pub fn decode(data: &[u8]) {
    let codec = FrameCodec::new(4096);
    let split = data
        .first()
        .map_or(0, |b| *b as usize % (data.len().max(1)));
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
}

/// The link, as a peer process would send it: batches off the stream, each
/// call turned into an `Upcall` or `Downcall` or refused.
pub fn link(data: &[u8]) {
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
}

/// WebSocket frames, as a browser's bytes arrive after the handshake:
/// header after header, each payload unmasked when it is all there.
pub fn websocket(data: &[u8]) {
    let mut at = 0;
    while at < data.len() {
        match protocol::websocket::parse_header(&data[at..]) {
            Ok(Some(header)) => {
                let start = at + header.header_len;
                let Some(end) = usize::try_from(header.payload_len)
                    .ok()
                    .and_then(|len| start.checked_add(len))
                    .filter(|end| *end <= data.len())
                else {
                    return;
                };
                let mut payload = data[start..end].to_vec();
                if let Some(mask) = header.mask {
                    protocol::websocket::unmask(&mut payload, mask);
                }
                at = end;
            }
            Ok(None) | Err(_) => return,
        }
    }
}

struct Nowhere;

impl Downlink for Nowhere {
    fn send(&self, _: Downcall) {}
    fn flush(&self) {}
}

/// A WebSocket opening handshake as its bytes arrive: half of them, then
/// all; an accepted request never claims more bytes than there are.
pub fn websocket_handshake(data: &[u8]) {
    let policy = WsPolicy {
        path: "/im".into(),
        origins: vec!["https://chat.example".into()],
        max_frame: 65_536,
    };
    for end in [data.len() / 2, data.len()] {
        if let Handshake::Accept { consumed, response } = answer_handshake(&data[..end], &policy) {
            assert!(consumed <= end);
            assert!(response.starts_with("HTTP/1.1 101 "));
        }
    }
}

/// The logic tier's validation: the input is a protobuf `Frame` taken as
/// a login (its first byte even) or as a logged-in session's request, and
/// handed to the pipeline as the gateway would.
pub fn requests(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(frame) = pb::Frame::decode(rest) else {
        return;
    };
    let (writes, _write_jobs) = crossbeam_channel::bounded(64);
    let (reads, _read_jobs) = crossbeam_channel::bounded(64);
    let Ok(mut pipeline) = Pipeline::new(
        &LogicConfig::default(),
        protocol::DEFAULT_MAX_FRAME,
        logic::Authenticator::new(b"fuzz".to_vec()),
        None,
        Arc::new(Nowhere),
        writes,
        reads,
        None,
        Arc::default(),
    ) else {
        return;
    };
    let session = SessionId {
        gateway: 1,
        slot: 0,
        serial: 1,
    };
    let call = match (first % 2, frame.body.clone()) {
        (0, Some(protocol::Body::LoginReq(login))) => Upcall::Login {
            session,
            req_id: frame.req_id,
            login,
        },
        _ => Upcall::Request {
            session,
            uid: u64::from(first) + 1,
            frame,
        },
    };
    pipeline.handle(call);
}

#[cfg(test)]
mod tests {
    /// Every input saved under regressions/<target>/ (crashes once found)
    /// goes through its target again.
    #[test]
    fn regressions_replay() {
        type Target = (&'static str, fn(&[u8]));
        let targets: [Target; 5] = [
            ("decode", super::decode),
            ("link", super::link),
            ("websocket", super::websocket),
            ("websocket_handshake", super::websocket_handshake),
            ("requests", super::requests),
        ];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
        let mut replayed = 0;
        for (name, target) in targets {
            let Ok(entries) = std::fs::read_dir(root.join(name)) else {
                continue;
            };
            for entry in entries.flatten() {
                target(&std::fs::read(entry.path()).unwrap());
                replayed += 1;
            }
        }
        assert!(
            replayed > 0,
            "no regression inputs found under {}",
            root.display()
        );
    }
}
