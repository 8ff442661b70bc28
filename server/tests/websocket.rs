//! WebSocket on the client port, end to end, with an independent client
//! (tungstenite): one binary message per protobuf frame; a WebSocket client
//! and a TCP client in one conversation; wss with the TLS certificate; what
//! is not the protocol (text, oversized, no upgrade, wrong path, forbidden
//! Origin) gets a clear outcome and leaves other sessions alone; pings are
//! answered.

#[path = "contract/harness.rs"]
mod harness;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use harness::*;
use prost::Message as _;
use protocol::{Body, ErrorCode, Frame, pb};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

/// A WebSocket client speaking the protocol: one binary message a frame.
struct WsClient<S: Read + Write> {
    ws: WebSocket<S>,
    next_req: u64,
}

fn request(
    addr: SocketAddr,
    path: &str,
    origin: Option<&str>,
) -> tungstenite::handshake::client::Request {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    request
}

fn connect(
    addr: SocketAddr,
    path: &str,
    origin: Option<&str>,
) -> Result<WsClient<TcpStream>, tungstenite::Error> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let (ws, _) =
        tungstenite::client(request(addr, path, origin), stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::ConnectionClosed,
        })?;
    Ok(WsClient { ws, next_req: 0 })
}

impl<S: Read + Write> WsClient<S> {
    fn send(&mut self, frame: &Frame) {
        self.ws
            .send(Message::Binary(frame.encode_to_vec().into()))
            .expect("send");
    }

    /// The next frame from the server; `None` once it closed.
    fn next(&mut self) -> Option<Frame> {
        loop {
            match self.ws.read() {
                Ok(Message::Binary(bytes)) => {
                    return Some(Frame::decode(bytes.as_ref()).expect("a frame"));
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    fn call(&mut self, body: impl Into<Body>) -> Frame {
        self.next_req += 1;
        let req_id = self.next_req;
        self.send(&Frame {
            req_id,
            body: Some(body.into()),
        });
        loop {
            let frame = self.next().expect("an answer");
            if frame.req_id == req_id {
                return frame;
            }
        }
    }

    fn login(&mut self, uid: u64) {
        let frame = self.call(pb::LoginReq {
            uid,
            token: valid_token(uid),
            device_id: "browser".into(),
            platform: pb::Platform::Web as i32,
        });
        assert!(matches!(frame.body, Some(Body::LoginResp(_))), "{frame:?}");
    }

    /// The next push, acked.
    fn push(&mut self) -> pb::Message {
        loop {
            let frame = self.next().expect("a push");
            if let Some(Body::Push(push)) = frame.body {
                let message = push.message.expect("a message");
                self.send(&Frame {
                    req_id: 0,
                    body: Some(
                        pb::PushAck {
                            msg_id: message.msg_id,
                        }
                        .into(),
                    ),
                });
                return message;
            }
        }
    }
}

fn error_code(frame: &Frame) -> Option<ErrorCode> {
    match &frame.body {
        Some(Body::Error(e)) => ErrorCode::try_from(e.code).ok(),
        _ => None,
    }
}

fn ws_node(tweak: impl FnOnce(&mut server::Config)) -> TestNode {
    TestNode::with(Store::Sqlite, |config| {
        config.admin.listen = "127.0.0.1:0".into();
        config.api.listen = String::new();
        config.gateway.websocket.listen = "127.0.0.1:0".into();
        config.gateway.websocket.origins = vec!["https://chat.example.test".into()];
        tweak(config);
    })
}

#[test]
fn a_websocket_client_and_a_tcp_client_share_a_conversation() {
    let node = ws_node(|_| {});
    let mut alice = connect(node.ws_addr(), "/im", Some("https://chat.example.test")).unwrap();
    alice.login(1);
    let mut bob = node.login(2, "phone");

    let sent = alice.call(pb::SendReq {
        to_uid: 2,
        client_msg_id: "w1".into(),
        content_type: 1,
        content: b"from the browser".to_vec(),
    });
    let Some(Body::SendResp(resp)) = sent.body else {
        panic!("{sent:?}")
    };
    assert_eq!(expect_push(&mut bob).msg_id, resp.msg_id);
    let back = send(&mut bob, 1, "t1", b"from tcp");
    let pushed = alice.push();
    assert_eq!((pushed.msg_id, pushed.seq), (back.msg_id, 2));
    let read = alice.call(pb::ReadReq {
        peer_uid: 2,
        seq: 2,
    });
    assert!(matches!(read.body, Some(Body::ReadResp(_))), "{read:?}");
    assert_eq!(expect_read_notice(&mut bob).seq, 2);

    // A ping is answered in the loop.
    alice.ws.send(Message::Ping(b"hi".to_vec().into())).unwrap();
    let pong = loop {
        match alice.ws.read().unwrap() {
            Message::Pong(payload) => break payload,
            _ => continue,
        }
    };
    assert_eq!(pong.as_ref(), b"hi");
}

#[test]
fn wss_carries_the_protocol_with_the_tls_certificate() {
    let node = ws_node(|config| config.gateway.websocket.tls = true);
    let pem =
        std::fs::read(node.dir.join("tls/self-signed.crt")).expect("the self-signed certificate");
    let config = client::tls_config(&pem).unwrap();
    let stream = TcpStream::connect(node.ws_addr()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    let tls = rustls::StreamOwned::new(conn, stream);
    let mut request = format!("wss://localhost:{}/im", node.ws_addr().port())
        .into_client_request()
        .unwrap();
    request.headers_mut().remove("Origin");
    let (ws, _) = tungstenite::client(request, tls)
        .map_err(|_| "handshake")
        .unwrap();
    let mut alice = WsClient { ws, next_req: 0 };
    alice.login(1);
    let mut bob = node.login(2, "phone");
    send(&mut bob, 1, "t1", b"to wss");
    assert_eq!(alice.push().content, b"to wss");
    let read = alice.call(pb::ReadReq {
        peer_uid: 2,
        seq: 1,
    });
    assert!(matches!(read.body, Some(Body::ReadResp(_))), "{read:?}");
    assert_eq!(expect_read_notice(&mut bob).seq, 1);
    let sent = alice.call(pb::SendReq {
        to_uid: 2,
        client_msg_id: "s1".into(),
        content_type: 1,
        content: b"from wss".to_vec(),
    });
    assert!(matches!(sent.body, Some(Body::SendResp(_))), "{sent:?}");
    assert_eq!(expect_push(&mut bob).content, b"from wss");
}

#[test]
fn what_is_not_the_protocol_gets_a_clear_outcome_and_others_carry_on() {
    let node = ws_node(|_| {});
    let mut bystander = connect(node.ws_addr(), "/im", None).unwrap();
    bystander.login(9);

    // A text message: BAD_FRAME, then the close.
    let mut text = connect(node.ws_addr(), "/im", None).unwrap();
    text.ws.send(Message::Text("hello".into())).unwrap();
    let frame = text.next().expect("an error frame");
    assert_eq!(error_code(&frame), Some(ErrorCode::BadFrame), "{frame:?}");
    assert!(text.next().is_none(), "closed after");

    // A message over max_frame: FRAME_TOO_LARGE, then the close.
    let mut big = connect(node.ws_addr(), "/im", None).unwrap();
    big.ws
        .send(Message::Binary(vec![0u8; 70_000].into()))
        .unwrap();
    let frame = big.next().expect("an error frame");
    assert_eq!(
        error_code(&frame),
        Some(ErrorCode::FrameTooLarge),
        "{frame:?}"
    );
    assert!(big.next().is_none());

    // Handshakes refused with their HTTP status.
    for (path, origin, status) in [
        ("/elsewhere", None, 404),
        ("/im", Some("https://evil.example.test"), 403),
    ] {
        match connect(node.ws_addr(), path, origin) {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), status)
            }
            other => panic!("{path} {origin:?}: {:?}", other.map(|_| "connected")),
        }
    }
    let mut plain_http = TcpStream::connect(node.ws_addr()).unwrap();
    plain_http.set_read_timeout(Some(WAIT)).unwrap();
    plain_http
        .write_all(b"GET /im HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = plain_http.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

    // The bystander never noticed.
    let pong = bystander.call(pb::Ping {});
    assert!(matches!(pong.body, Some(Body::Pong(_))));
    let closes = node
        .metric("im_gateway_closes_total{reason=\"bad_frame\"}")
        .unwrap_or(0);
    assert!(closes >= 1, "the text message counted as a bad frame");
    std::thread::sleep(Duration::from_millis(10));
}

/// A browser that stops reading is cut like a TCP client that stops
/// reading: its backlog passes `max_outbound_bytes`, it is closed as a slow
/// consumer, and the sender carries on.
#[test]
fn a_websocket_client_that_stops_reading_is_cut_as_a_slow_consumer() {
    let node = ws_node(|config| {
        config.gateway.max_outbound_bytes = 256 * 1024;
        config.logic.messages_per_sec = 100_000;
        config.logic.message_burst = 100_000;
    });
    let mut stalled = connect(node.ws_addr(), "/im", None).unwrap();
    stalled.login(2);
    let mut sender = node.login(1, "phone");
    let content = vec![b'x'; 16 * 1024];
    // Enough to fill the kernel's buffers both ways and the session's backlog.
    let cut = (0..4_000).find_map(|i| {
        send(&mut sender, 2, &format!("big-{i}"), &content);
        node.metric("im_gateway_closes_total{reason=\"slow_consumer\"}")
            .filter(|&n| n >= 1)
    });
    assert!(cut.is_some(), "the stalled WebSocket session was never cut");
    // The sender is fine.
    sender.call(pb::Ping {}).expect("pong");
    drop(stalled);
}
