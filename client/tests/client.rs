//! The blocking client against a scripted server on a real TCP socket:
//! responses are matched by req_id, server-initiated frames read meanwhile are
//! kept for `next_event`, and server errors come back as typed errors.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use bytes::BytesMut;
use client::{Client, ClientError};
use protocol::{Body, ErrorCode, Frame, FrameCodec, pb};

/// Reads one frame from a raw stream (the scripted server's side).
fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Frame> {
    let codec = FrameCodec::default();
    loop {
        if let Some(frame) = codec.decode(buf).unwrap() {
            return Some(frame);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).unwrap();
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn write_frames(stream: &mut TcpStream, frames: &[Frame]) {
    let mut out = BytesMut::new();
    for frame in frames {
        FrameCodec::default().encode(frame, &mut out).unwrap();
    }
    stream.write_all(&out).unwrap();
}

/// Starts a server that answers each request with `script(request)`.
fn scripted_server(script: impl Fn(Frame) -> Vec<Frame> + Send + 'static) -> Client {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = BytesMut::new();
        while let Some(frame) = read_frame(&mut stream, &mut buf) {
            write_frames(&mut stream, &script(frame));
        }
    });
    let mut client = Client::connect(addr).unwrap();
    client.set_timeout(Duration::from_secs(5));
    client
}

fn push(msg_id: u64) -> Frame {
    Frame {
        req_id: 0,
        body: Some(
            pb::Push {
                message: Some(pb::Message {
                    msg_id,
                    ..Default::default()
                }),
            }
            .into(),
        ),
    }
}

#[test]
fn call_matches_response_and_keeps_pushes_for_later() {
    let mut client = scripted_server(|req| {
        // A push arrives before the response.
        let resp = match req.body {
            Some(Body::SendReq(r)) => pb::SendResp {
                msg_id: 100,
                seq: r.to_uid,
                server_time_ms: 1,
                duplicate: false,
            },
            other => panic!("unexpected {other:?}"),
        };
        vec![
            push(55),
            Frame {
                req_id: req.req_id,
                body: Some(resp.into()),
            },
        ]
    });
    let resp = client
        .call(pb::SendReq {
            to_uid: 9,
            client_msg_id: "a".into(),
            content_type: 1,
            content: vec![],
        })
        .unwrap();
    assert_eq!((resp.msg_id, resp.seq), (100, 9));

    let event = client
        .next_event(Duration::from_secs(1))
        .unwrap()
        .expect("the push");
    assert!(
        matches!(event.body, Some(Body::Push(p)) if p.message.as_ref().map(|m| m.msg_id) == Some(55))
    );
    assert!(
        client
            .next_event(Duration::from_millis(50))
            .unwrap()
            .is_none()
    );
}

#[test]
fn pipelined_responses_out_of_order_are_each_found() {
    let mut client = scripted_server(|req| {
        // Answer only on the second request, both responses in reverse order.
        if req.req_id == 2 {
            vec![
                Frame {
                    req_id: 2,
                    body: Some(pb::Pong { server_time_ms: 2 }.into()),
                },
                Frame {
                    req_id: 1,
                    body: Some(pb::Pong { server_time_ms: 1 }.into()),
                },
            ]
        } else {
            vec![]
        }
    });
    let first = client.send_request(pb::Ping {}).unwrap();
    let second = client.send_request(pb::Ping {}).unwrap();
    assert_eq!((first, second), (1, 2));
    let f1 = client.wait_response(first, Duration::from_secs(5)).unwrap();
    assert!(matches!(f1.body, Some(Body::Pong(p)) if p.server_time_ms == 1));
    let f2 = client
        .wait_response(second, Duration::from_secs(5))
        .unwrap();
    assert!(matches!(f2.body, Some(Body::Pong(p)) if p.server_time_ms == 2));
}

#[test]
fn error_body_becomes_typed_server_error() {
    let mut client = scripted_server(|req| {
        vec![Frame {
            req_id: req.req_id,
            body: Some(
                pb::Error {
                    code: ErrorCode::AuthFailed as i32,
                    message: "bad token".into(),
                }
                .into(),
            ),
        }]
    });
    let err = client
        .login(1, "nope", "dev", pb::Platform::Pc)
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AuthFailed), "{err}");
}

#[test]
fn wrong_response_body_is_reported() {
    let mut client = scripted_server(|req| {
        vec![Frame {
            req_id: req.req_id,
            body: Some(pb::Pong::default().into()),
        }]
    });
    let err = client
        .call(pb::ReadReq {
            peer_uid: 2,
            seq: 1,
        })
        .unwrap_err();
    assert!(
        matches!(err, ClientError::UnexpectedResponse("pong")),
        "{err}"
    );
}

#[test]
fn closed_connection_and_timeout_are_distinct() {
    let mut silent = scripted_server(|_| vec![]);
    silent.set_timeout(Duration::from_millis(100));
    assert!(matches!(
        silent.call(pb::Ping {}),
        Err(ClientError::Timeout)
    ));

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || drop(listener.accept().unwrap()));
    let mut client = Client::connect(addr).unwrap();
    client.wait_closed(Duration::from_secs(5)).unwrap();
}
