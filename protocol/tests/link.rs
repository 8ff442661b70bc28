//! The link's wire form: every upcall and downcall survives encoding,
//! framing and decoding unchanged, many to a link frame; a message that
//! does not say which session or which call is refused.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use protocol::link::wire::{self, LinkError, pb as link_pb};
use protocol::link::{Downcall, SessionId, Upcall};
use protocol::{Frame, FrameCodec, pb};

fn session(gateway: u64, worker: u32, slot: u32, serial: u64) -> SessionId {
    SessionId {
        gateway,
        worker,
        slot,
        serial,
    }
}

fn every_upcall(id: SessionId) -> Vec<Upcall> {
    vec![
        Upcall::Login {
            session: id,
            req_id: 7,
            login: pb::LoginReq {
                uid: 42,
                token: "42.99.sig".into(),
                device_id: "phone".into(),
                platform: pb::Platform::Mobile as i32,
            },
        },
        Upcall::Request {
            session: id,
            uid: 42,
            frame: Frame {
                req_id: 8,
                body: Some(
                    pb::SendReq {
                        to_uid: 43,
                        client_msg_id: "c-1".into(),
                        content_type: 1,
                        content: b"hello".to_vec(),
                    }
                    .into(),
                ),
            },
        },
        Upcall::PushAck {
            session: id,
            uid: 42,
            msg_id: u64::MAX,
        },
        Upcall::Closed {
            session: id,
            uid: None,
        },
        Upcall::Closed {
            session: id,
            uid: Some(0),
        },
    ]
}

fn every_downcall(id: SessionId) -> Vec<Downcall> {
    vec![
        Downcall::LoginAccepted {
            session: id,
            uid: 42,
            req_id: 7,
        },
        Downcall::Frame {
            session: id,
            frame: Bytes::from_static(b"\0\0\0\x02\x08\x01"),
        },
        Downcall::Close {
            session: id,
            last: None,
        },
        Downcall::Close {
            session: id,
            last: Some(Bytes::new()),
        },
    ]
}

/// Through the codec and back, as the TCP link will carry them.
fn round_trip_upcalls(calls: Vec<Upcall>) -> Vec<Upcall> {
    let codec = FrameCodec::new(1 << 20);
    let mut buf = BytesMut::new();
    codec
        .encode_message(&wire::upcalls(calls), &mut buf)
        .expect("encodes");
    let message: link_pb::Upcalls = codec.decode_message(&mut buf).unwrap().expect("whole");
    assert!(buf.is_empty());
    wire::from_upcalls(message).expect("decodes")
}

fn round_trip_downcalls(calls: Vec<Downcall>) -> Vec<Downcall> {
    let codec = FrameCodec::new(1 << 20);
    let mut buf = BytesMut::new();
    codec
        .encode_message(&wire::downcalls(calls), &mut buf)
        .expect("encodes");
    let message: link_pb::Downcalls = codec.decode_message(&mut buf).unwrap().expect("whole");
    wire::from_downcalls(message).expect("decodes")
}

#[test]
fn every_upcall_round_trips_in_one_batch() {
    let calls = every_upcall(session(0xdead_beef_0000_0001, 3, 17, 1 << 40));
    assert_eq!(round_trip_upcalls(calls.clone()), calls);
}

#[test]
fn every_downcall_round_trips_in_one_batch() {
    let calls = every_downcall(session(u64::MAX, u32::MAX, 0, 1));
    assert_eq!(round_trip_downcalls(calls.clone()), calls);
}

#[test]
fn a_call_without_a_session_or_a_body_is_refused() {
    let no_session = link_pb::Upcall {
        session: None,
        call: Some(link_pb::upcall::Call::PushAck(link_pb::PushAck {
            uid: 1,
            msg_id: 2,
        })),
    };
    assert_eq!(
        Upcall::try_from(no_session),
        Err(LinkError::Missing("session"))
    );
    let no_call = link_pb::Downcall {
        session: Some(session(1, 0, 0, 1).into()),
        call: None,
    };
    assert_eq!(Downcall::try_from(no_call), Err(LinkError::Missing("call")));
    let login_without_req = link_pb::Upcall {
        session: Some(session(1, 0, 0, 1).into()),
        call: Some(link_pb::upcall::Call::Login(link_pb::Login {
            req_id: 1,
            login: None,
        })),
    };
    assert_eq!(
        Upcall::try_from(login_without_req),
        Err(LinkError::Missing("login_req"))
    );
}

proptest! {
    #[test]
    fn any_session_and_payload_round_trips(
        gateway in any::<u64>(),
        worker in any::<u32>(),
        slot in any::<u32>(),
        serial in any::<u64>(),
        uid in any::<u64>(),
        msg_id in any::<u64>(),
        frame in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let id = session(gateway, worker, slot, serial);
        let ups = vec![
            Upcall::PushAck { session: id, uid, msg_id },
            Upcall::Closed { session: id, uid: Some(uid) },
        ];
        prop_assert_eq!(round_trip_upcalls(ups.clone()), ups);
        let downs = vec![
            Downcall::Frame { session: id, frame: Bytes::from(frame.clone()) },
            Downcall::Close { session: id, last: Some(Bytes::from(frame)) },
            Downcall::LoginAccepted { session: id, uid, req_id: msg_id },
        ];
        prop_assert_eq!(round_trip_downcalls(downs.clone()), downs);
    }
}

proptest! {
    /// Arbitrary bytes as a link message: an error or some calls, never a panic.
    #[test]
    fn any_bytes_decode_to_an_error_or_calls(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        use prost::Message;
        if let Ok(message) = link_pb::Upcalls::decode(bytes.as_slice()) {
            let _ = wire::from_upcalls(message);
        }
        if let Ok(message) = link_pb::Downcalls::decode(bytes.as_slice()) {
            let _ = wire::from_downcalls(message);
        }
    }
}
