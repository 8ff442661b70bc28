//! A gateway on port 0 wired to a scripted logic tier, for tests of the
//! connection tier alone. The script is the smallest logic that exercises
//! every path of the link: tokens "good" log in, anything else is refused
//! with AUTH_FAILED; a second login of the same (uid, device_id) kicks the
//! first; SendReq is answered and pushed to every session of `to_uid`, and
//! a content of `flood:N` pushes N frames of 1 KiB instead.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use client::Client;
use gateway::{GatewayHandle, LocalUplink, Metrics, Uplink};
use parking_lot::Mutex;
use protocol::body::{error_frame, event_frame, kick_frame};
use protocol::link::{Downcall, Downlink, SessionId, Upcall};
use protocol::{Body, ErrorCode, Frame, FrameCodec, pb};

pub const TIMEOUT: Duration = Duration::from_secs(5);

/// What the scripted logic saw, for assertions.
#[derive(Default)]
pub struct Seen {
    pub closed: Vec<(SessionId, Option<u64>)>,
    pub acks: Vec<u64>,
}

pub struct TestGateway {
    handle: Option<GatewayHandle>,
    pub addr: std::net::SocketAddr,
    pub metrics: Arc<Metrics>,
    pub seen: Arc<Mutex<Seen>>,
}

pub use gateway::GatewayConfig;

pub fn config(workers: usize) -> GatewayConfig {
    let mut config = GatewayConfig {
        listen: "127.0.0.1:0".into(),
        workers,
        ..GatewayConfig::default()
    };
    // No WebSocket listener on its default port: tests run side by side.
    config.websocket.listen = String::new();
    config
}

pub fn start(config: GatewayConfig) -> TestGateway {
    let _ = env_logger::builder().is_test(true).try_init();
    let metrics = Arc::new(Metrics::default());
    // The scripted logic blocks on the queue itself; the bell rings for nobody.
    let (tx, rx) = crossbeam_channel::bounded(1024);
    let bell = runtime::doorbell::Doorbell::new().bell();
    let uplink: Arc<dyn Uplink> = Arc::new(LocalUplink::new(tx, bell));
    let handle = gateway::start(&config, uplink, &metrics).expect("gateway starts");
    let downlink = handle.downlink();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen_by_logic = seen.clone();
    thread::spawn(move || {
        let mut logic = ScriptedLogic {
            downlink,
            devices: HashMap::new(),
            seen: seen_by_logic,
            next_msg_id: 0,
        };
        while let Ok(call) = rx.recv() {
            logic.handle(call);
            logic.downlink.flush();
        }
    });
    TestGateway {
        addr: handle.local_addr(),
        handle: Some(handle),
        metrics,
        seen,
    }
}

impl TestGateway {
    pub fn connect(&self) -> Client {
        let mut client = Client::connect(self.addr).expect("connect");
        client.set_timeout(TIMEOUT);
        client
    }

    pub fn login(&self, uid: u64, device: &str) -> Client {
        let mut client = self.connect();
        client
            .login(uid, "good", device, pb::Platform::Mobile)
            .expect("login");
        client
    }

    pub fn handle(&self) -> &GatewayHandle {
        self.handle.as_ref().expect("running")
    }

    /// Graceful shutdown; returns when every gateway thread has ended.
    pub fn shutdown(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
            handle.join();
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct ScriptedLogic {
    downlink: gateway::Mailboxes,
    devices: HashMap<(u64, String), SessionId>,
    seen: Arc<Mutex<Seen>>,
    next_msg_id: u64,
}

fn encode(frame: &Frame) -> Bytes {
    FrameCodec::default().encode_to_bytes(frame).unwrap()
}

impl ScriptedLogic {
    fn handle(&mut self, call: Upcall) {
        match call {
            Upcall::Login {
                session,
                req_id,
                login,
            } => {
                if login.token != "good" {
                    let last = encode(&error_frame(req_id, ErrorCode::AuthFailed, "bad token"));
                    return self.downlink.send(Downcall::Close {
                        session,
                        last: Some(last),
                    });
                }
                if let Some(old) = self.devices.insert((login.uid, login.device_id), session) {
                    let kick = kick_frame("replaced");
                    self.downlink.send(Downcall::Close {
                        session: old,
                        last: Some(encode(&kick)),
                    });
                }
                self.downlink.send(Downcall::LoginAccepted {
                    session,
                    uid: login.uid,
                    req_id,
                });
            }
            Upcall::Closed { session, uid } => {
                self.devices.retain(|_, s| *s != session);
                self.seen.lock().closed.push((session, uid));
            }
            Upcall::PushAck { msg_id, .. } => self.seen.lock().acks.push(msg_id),
            Upcall::Request {
                session,
                uid,
                frame,
            } => self.request(session, uid, frame),
            Upcall::GatewayGone { gateway } => self.devices.retain(|_, s| s.gateway != gateway),
            // Only a gateway's link sends it; these tests are in one process.
            Upcall::Resume { .. } => {}
        }
    }

    fn request(&mut self, session: SessionId, uid: u64, frame: Frame) {
        let Some(Body::SendReq(send)) = frame.body else {
            let error = error_frame(
                frame.req_id,
                ErrorCode::NotFound,
                "scripted logic serves send_req only",
            );
            return self.downlink.send(Downcall::Frame {
                session,
                frame: encode(&error),
            });
        };
        self.next_msg_id += 1;
        let msg_id = self.next_msg_id;
        let resp = Frame {
            req_id: frame.req_id,
            body: Some(
                pb::SendResp {
                    msg_id,
                    seq: msg_id,
                    server_time_ms: 1,
                    duplicate: false,
                }
                .into(),
            ),
        };
        self.downlink.send(Downcall::Frame {
            session,
            frame: encode(&resp),
        });

        let (count, content) = match std::str::from_utf8(&send.content)
            .ok()
            .and_then(|c| c.strip_prefix("flood:"))
        {
            Some(n) => (n.parse().unwrap_or(0), vec![b'f'; 1024]),
            None => (1, send.content.clone()),
        };
        let targets: Vec<SessionId> = self
            .devices
            .iter()
            .filter(|((u, _), _)| *u == send.to_uid)
            .map(|(_, s)| *s)
            .collect();
        for i in 0..count {
            let message = pb::Message {
                msg_id: msg_id * 1_000_000 + i,
                from_uid: uid,
                to_uid: send.to_uid,
                seq: i + 1,
                content: content.clone(),
                ..Default::default()
            };
            let push = encode(&event_frame(pb::Push {
                message: Some(message),
            }));
            for target in &targets {
                self.downlink.send(Downcall::Frame {
                    session: *target,
                    frame: push.clone(),
                });
            }
        }
    }
}

/// Expects the next frame to be an Error with `code`, then the connection to close.
pub fn expect_error_then_close(client: &mut Client, code: ErrorCode) -> Frame {
    let frame = client
        .next_frame(TIMEOUT)
        .expect("a frame")
        .expect("an error frame before close");
    match &frame.body {
        Some(Body::Error(e)) => assert_eq!(e.code, code as i32, "error {e:?}"),
        other => panic!("expected error {code:?}, got {other:?}"),
    }
    client
        .wait_closed(TIMEOUT)
        .expect("connection closed after the error");
    frame
}

pub fn ping(client: &mut Client) {
    client.call(pb::Ping {}).expect("pong");
}

pub fn send(client: &mut Client, to_uid: u64, content: &[u8]) -> pb::SendResp {
    client
        .call(pb::SendReq {
            to_uid,
            client_msg_id: "m".into(),
            content_type: 1,
            content: content.to_vec(),
        })
        .expect("send_resp")
}

pub fn next_push(client: &mut Client) -> pb::Message {
    let frame = client.next_event(TIMEOUT).expect("read").expect("a push");
    match frame.body {
        Some(Body::Push(push)) => push.message.expect("message"),
        other => panic!("expected a push, got {other:?}"),
    }
}
