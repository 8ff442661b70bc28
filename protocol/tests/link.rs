//! The link's wire form: every upcall and downcall survives encoding,
//! framing and decoding unchanged, many to a link frame; a message that
//! does not say which session or which call is refused.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use protocol::link::wire::{LinkError, pb as link_pb};
use protocol::link::{Downcall, SessionId, Upcall};
use protocol::{Frame, FrameCodec, pb};

fn session(gateway: u32, worker: u16, slot: u32, count: u64) -> SessionId {
    SessionId {
        gateway,
        slot,
        serial: SessionId::first_serial(worker) + count,
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
        Upcall::GatewayGone {
            gateway: id.gateway,
        },
        Upcall::Resume {
            session: id,
            registration: protocol::link::Registration {
                uid: 42,
                device_id: "phone".into(),
                platform: pb::Platform::Web as i32,
                token_issued_ms: 1_700_000_000_123,
            },
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
            last: Some(Bytes::from_static(b"\0\0\0\x02\x08\x02")),
        },
    ]
}

/// Through the codec and back, as the TCP link will carry them: the calls
/// as one link frame (a `Batch`), decoded again.
fn round_trip(ups: Vec<Upcall>, downs: Vec<Downcall>) -> (Vec<Upcall>, Vec<Downcall>) {
    let codec = FrameCodec::new(1 << 20);
    let mut buf = BytesMut::new();
    let batch = link_pb::Batch {
        upcalls: ups.into_iter().map(Into::into).collect(),
        downcalls: downs.into_iter().map(Into::into).collect(),
    };
    codec.encode_message(&batch, &mut buf).expect("encodes");
    let decoded: link_pb::Batch = codec.decode_message(&mut buf).unwrap().expect("whole");
    assert!(buf.is_empty());
    let ups = decoded.upcalls.into_iter().map(Upcall::try_from);
    let downs = decoded.downcalls.into_iter().map(Downcall::try_from);
    (
        ups.collect::<Result<_, _>>().expect("upcalls decode"),
        downs.collect::<Result<_, _>>().expect("downcalls decode"),
    )
}

#[test]
fn every_upcall_round_trips_in_one_batch() {
    let calls = every_upcall(session(0xdead_beef, 3, 17, 1 << 40));
    assert_eq!(round_trip(calls.clone(), vec![]).0, calls);
}

#[test]
fn every_downcall_round_trips_in_one_batch() {
    let calls = every_downcall(session(u32::MAX, u16::MAX, 0, 1));
    assert_eq!(round_trip(vec![], calls.clone()).1, calls);
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
        gateway in any::<u32>(),
        worker in any::<u16>(),
        slot in any::<u32>(),
        count in 0u64..1 << 48,
        uid in any::<u64>(),
        msg_id in any::<u64>(),
        frame in proptest::collection::vec(any::<u8>(), 1..256),
    ) {
        let id = session(gateway, worker, slot, count);
        prop_assert_eq!(id.worker(), worker as usize);
        let ups = vec![
            Upcall::PushAck { session: id, uid, msg_id },
            Upcall::Closed { session: id, uid: Some(uid) },
        ];
        let downs = vec![
            Downcall::Frame { session: id, frame: Bytes::from(frame.clone()) },
            Downcall::Close { session: id, last: Some(Bytes::from(frame)) },
            Downcall::LoginAccepted { session: id, uid, req_id: msg_id },
        ];
        prop_assert_eq!(round_trip(ups.clone(), downs.clone()), (ups, downs));
    }
}

proptest! {
    /// Arbitrary bytes as a link message: an error or some calls, never a panic.
    #[test]
    fn any_bytes_decode_to_an_error_or_calls(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        use prost::Message;
        if let Ok(batch) = link_pb::Batch::decode(bytes.as_slice()) {
            let _: Vec<_> = batch.upcalls.into_iter().map(Upcall::try_from).collect();
            let _: Vec<_> = batch.downcalls.into_iter().map(Downcall::try_from).collect();
        }
    }
}
