//! The frame codec against the contract: every body round-trips, frames may
//! arrive a byte at a time or many at once, bad lengths are refused before
//! anything is buffered, and no byte string makes the decoder panic.

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use protocol::{Body, ErrorCode, Frame, FrameCodec, FrameError, pb};

fn message(seq: u64) -> pb::Message {
    pb::Message {
        msg_id: 1_000 + seq,
        from_uid: 1,
        to_uid: 2,
        seq,
        client_msg_id: format!("c-{seq}"),
        content_type: 1,
        content: b"hello".to_vec(),
        server_time_ms: 1_700_000_000_000,
    }
}

fn conversation() -> pb::Conversation {
    pb::Conversation {
        peer_uid: 2,
        last_seq: 9,
        read_seq: 7,
        unread: 2,
        peer_read_seq: 9,
        last_message: Some(message(9)),
        updated_ms: 1_700_000_000_000,
        deleted: false,
    }
}

/// One frame of every body type, each with non-default fields.
fn every_body() -> Vec<Body> {
    vec![
        pb::Error {
            code: ErrorCode::RateLimited as i32,
            message: "slow down".into(),
        }
        .into(),
        pb::LoginReq {
            uid: 1,
            token: "1.2.sig".into(),
            device_id: "phone".into(),
            platform: pb::Platform::Mobile as i32,
        }
        .into(),
        pb::LoginResp {
            server_time_ms: 5,
            heartbeat_secs: 30,
        }
        .into(),
        pb::Ping {}.into(),
        pb::Pong { server_time_ms: 6 }.into(),
        pb::Kick {
            reason: "logged in elsewhere".into(),
        }
        .into(),
        pb::SendReq {
            to_uid: 2,
            client_msg_id: "c-1".into(),
            content_type: 1,
            content: vec![0, 1, 2, 255],
        }
        .into(),
        pb::SendResp {
            msg_id: 10,
            seq: 1,
            server_time_ms: 7,
            duplicate: true,
        }
        .into(),
        pb::Push {
            message: Some(message(1)),
        }
        .into(),
        pb::PushAck { msg_id: 10 }.into(),
        pb::SyncHint {}.into(),
        pb::SyncReq {
            cursor: 3,
            limit: 100,
        }
        .into(),
        pb::SyncResp {
            conversations: vec![conversation(), conversation()],
            cursor: 4,
            more: true,
        }
        .into(),
        pb::HistoryReq {
            peer_uid: 2,
            after_seq: 1,
            before_seq: 9,
            limit: 50,
        }
        .into(),
        pb::HistoryResp {
            messages: vec![message(1), message(2)],
            more: true,
        }
        .into(),
        pb::ReadReq {
            peer_uid: 2,
            seq: 9,
        }
        .into(),
        pb::ReadResp {
            unread: 0,
            total_unread: 3,
        }
        .into(),
        pb::ReadNotice {
            reader_uid: 1,
            peer_uid: 2,
            seq: 9,
        }
        .into(),
        pb::ConversationsReq {
            limit: 20,
            cursor: vec![1, 2, 3],
        }
        .into(),
        pb::ConversationsResp {
            conversations: vec![conversation()],
            total_unread: 2,
            next_cursor: vec![9],
        }
        .into(),
        pb::DeleteConversationReq { peer_uid: 2 }.into(),
        pb::DeleteConversationResp {}.into(),
        pb::ProfileReq {
            uids: vec![1, 2, 3],
        }
        .into(),
        pb::ProfileResp {
            profiles: vec![pb::Profile {
                uid: 1,
                nickname: "Zoë".into(),
                avatar_url: "https://a/b.png".into(),
            }],
        }
        .into(),
        pb::SetProfileReq {
            nickname: "Zoë".into(),
            avatar_url: "https://a/b.png".into(),
        }
        .into(),
        pb::SetProfileResp {}.into(),
    ]
}

fn frames() -> Vec<Frame> {
    every_body()
        .into_iter()
        .enumerate()
        .map(|(i, body)| Frame {
            req_id: i as u64 + 1,
            body: Some(body),
        })
        .collect()
}

#[test]
fn every_body_type_round_trips() {
    let codec = FrameCodec::default();
    let frames = frames();
    // 26 body variants in the contract's oneof.
    assert_eq!(frames.len(), 26);
    for frame in frames {
        let mut buf = BytesMut::new();
        codec.encode(&frame, &mut buf).unwrap();
        let decoded = codec.decode(&mut buf).unwrap().expect("a whole frame");
        assert_eq!(decoded, frame);
        assert!(buf.is_empty(), "decode consumes exactly one frame");
    }
}

#[test]
fn the_req_id_of_an_encoded_frame_is_read_without_decoding_it() {
    let codec = FrameCodec::default();
    for frame in frames() {
        let bytes = codec.encode_to_bytes(&frame).unwrap();
        assert_eq!(FrameCodec::encoded_req_id(&bytes), frame.req_id);
    }
    let big = codec
        .encode_to_bytes(&Frame {
            req_id: u64::MAX,
            body: Some(pb::Ping {}.into()),
        })
        .unwrap();
    assert_eq!(FrameCodec::encoded_req_id(&big), u64::MAX);
    for junk in [&b""[..], b"\0\0", b"\0\0\0\x01", b"\0\0\0\x02\x08\xff"] {
        assert_eq!(FrameCodec::encoded_req_id(junk), 0);
    }
}

#[test]
fn empty_bodies_still_make_non_empty_frames() {
    // A body-less message such as Ping still encodes its oneof tag, so even
    // `Frame { req_id: 0, body: Ping }` is at least one byte on the wire.
    let codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    codec
        .encode(
            &Frame {
                req_id: 0,
                body: Some(pb::Ping {}.into()),
            },
            &mut buf,
        )
        .unwrap();
    assert!(buf.len() > 4);
    assert!(matches!(
        codec.encode(&Frame::default(), &mut buf),
        Err(FrameError::Empty)
    ));
}

#[test]
fn frame_fed_one_byte_at_a_time() {
    let codec = FrameCodec::default();
    let frame = Frame {
        req_id: 77,
        body: Some(
            pb::SendReq {
                to_uid: 2,
                client_msg_id: "x".into(),
                content_type: 0,
                content: vec![7; 300],
            }
            .into(),
        ),
    };
    let mut wire = BytesMut::new();
    codec.encode(&frame, &mut wire).unwrap();

    let mut buf = BytesMut::new();
    for (i, byte) in wire.iter().enumerate() {
        buf.put_u8(*byte);
        let got = codec.decode(&mut buf).unwrap();
        if i + 1 < wire.len() {
            assert!(got.is_none(), "no frame before its last byte (byte {i})");
        } else {
            assert_eq!(got, Some(frame.clone()));
        }
    }
    assert!(buf.is_empty());
}

#[test]
fn many_frames_in_one_buffer_come_out_in_order() {
    let codec = FrameCodec::default();
    let frames = frames();
    let mut buf = BytesMut::new();
    for frame in &frames {
        codec.encode(frame, &mut buf).unwrap();
    }
    // Half of a further frame at the end must stay buffered.
    let mut tail = BytesMut::new();
    codec.encode(&frames[6], &mut tail).unwrap();
    buf.extend_from_slice(&tail[..tail.len() / 2]);

    for frame in &frames {
        assert_eq!(codec.decode(&mut buf).unwrap().as_ref(), Some(frame));
    }
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert_eq!(buf.len(), tail.len() / 2);
}

#[test]
fn zero_length_is_bad_frame() {
    let codec = FrameCodec::default();
    let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(err, FrameError::Empty));
    assert_eq!(err.error_code(), ErrorCode::BadFrame);
}

#[test]
fn oversized_length_is_refused_before_buffering() {
    let codec = FrameCodec::new(1024);
    for len in [1025u32, 65_537, u32::MAX] {
        let mut buf = BytesMut::new();
        buf.put_u32(len);
        let capacity = buf.capacity();
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{len}: {err}");
        assert_eq!(err.error_code(), ErrorCode::FrameTooLarge);
        assert_eq!(
            buf.capacity(),
            capacity,
            "nothing reserved for a refused length"
        );
    }
    // Exactly the maximum is allowed: the decoder waits for the body.
    let mut buf = BytesMut::new();
    buf.put_u32(1024);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
}

#[test]
fn encode_refuses_frames_over_the_maximum() {
    let codec = FrameCodec::new(100);
    let big = Frame {
        req_id: 1,
        body: Some(
            pb::SendReq {
                content: vec![0; 200],
                ..Default::default()
            }
            .into(),
        ),
    };
    let mut buf = BytesMut::new();
    assert!(matches!(
        codec.encode(&big, &mut buf),
        Err(FrameError::TooLarge { .. })
    ));
    assert!(buf.is_empty(), "nothing written for a refused frame");
}

#[test]
fn garbage_body_is_bad_frame() {
    let codec = FrameCodec::default();
    // Field 2 (error) as a length-delimited field claiming 100 bytes it lacks.
    let body = [0x12u8, 100, 1, 2];
    let mut buf = BytesMut::new();
    buf.put_u32(body.len() as u32);
    buf.extend_from_slice(&body);
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(err, FrameError::Malformed(_)));
    assert_eq!(err.error_code(), ErrorCode::BadFrame);
}

proptest! {
    /// Any bytes at all: the decoder returns frames, waits, or errors, and
    /// always makes progress or stops; it never panics.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let codec = FrameCodec::new(512);
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(_)) => prop_assert!(buf.len() < before),
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// Arbitrary bytes behind a valid length prefix: a frame or a BAD_FRAME,
    /// and exactly one frame's bytes consumed either way.
    #[test]
    fn arbitrary_bodies_decode_or_fail_cleanly(body in proptest::collection::vec(any::<u8>(), 1..512)) {
        let codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32);
        buf.extend_from_slice(&body);
        buf.extend_from_slice(b"next");
        match codec.decode(&mut buf) {
            Ok(frame) => prop_assert!(frame.is_some()),
            Err(e) => prop_assert_eq!(e.error_code(), ErrorCode::BadFrame),
        }
        prop_assert_eq!(&buf[..], b"next");
    }

    /// A SendReq of any shape round-trips, however the stream is split.
    #[test]
    fn send_req_round_trips_across_splits(
        req_id in 1u64..,
        to_uid in any::<u64>(),
        client_msg_id in "[a-zA-Z0-9-]{1,64}",
        content in proptest::collection::vec(any::<u8>(), 0..4096),
        split in any::<prop::sample::Index>(),
    ) {
        let codec = FrameCodec::default();
        let frame = Frame { req_id, body: Some(pb::SendReq { to_uid, client_msg_id, content_type: 1, content }.into()) };
        let mut wire = BytesMut::new();
        codec.encode(&frame, &mut wire).unwrap();
        let at = split.index(wire.len());
        let mut buf = BytesMut::from(&wire[..at]);
        prop_assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&wire[at..]);
        prop_assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame));
    }
}
