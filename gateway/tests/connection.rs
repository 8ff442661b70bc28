//! Every connection-tier rule of the contract, over real TCP to a real
//! gateway on port 0, with one worker and with three.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use client::ClientError;
use gateway::metrics::{CloseReason, Gauge};
use protocol::{Body, ErrorCode, Frame, FrameCodec, pb};
use support::*;

fn encoded(frame: &Frame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    FrameCodec::default().encode(frame, &mut buf).unwrap();
    buf.to_vec()
}

fn login_frame(req_id: u64, uid: u64, device: &str) -> Frame {
    Frame {
        req_id,
        body: Some(
            pb::LoginReq {
                uid,
                token: "good".into(),
                device_id: device.into(),
                platform: 1,
            }
            .into(),
        ),
    }
}

fn login_and_ping(workers: usize) {
    let gw = start(config(workers));
    let mut client = gw.connect();
    let resp = client
        .login(1, "good", "phone", pb::Platform::Mobile)
        .unwrap();
    assert_eq!(resp.heartbeat_secs, 30);
    assert!(resp.server_time_ms > 1_600_000_000_000);
    let pong = client.call(pb::Ping {}).unwrap();
    assert!(pong.server_time_ms >= resp.server_time_ms);
}

fn ping_is_answered_before_login(workers: usize) {
    let gw = start(config(workers));
    let mut client = gw.connect();
    ping(&mut client);
    client.login(1, "good", "phone", pb::Platform::Pc).unwrap();
}

fn requests_before_login_are_refused(workers: usize) {
    let gw = start(config(workers));
    let mut client = gw.connect();
    client
        .send_request(pb::SyncReq {
            cursor: 0,
            limit: 10,
        })
        .unwrap();
    let frame = expect_error_then_close(&mut client, ErrorCode::NotLoggedIn);
    assert_eq!(frame.req_id, 1, "the error echoes the request's req_id");

    // PushAck too, though it is not a request.
    let mut client = gw.connect();
    client
        .send_frame(&Frame {
            req_id: 0,
            body: Some(pb::PushAck { msg_id: 1 }.into()),
        })
        .unwrap();
    expect_error_then_close(&mut client, ErrorCode::NotLoggedIn);
}

fn bad_token_is_auth_failed(workers: usize) {
    let gw = start(config(workers));
    let mut client = gw.connect();
    let err = client
        .login(1, "forged", "phone", pb::Platform::Mobile)
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AuthFailed), "{err}");
    client.wait_closed(TIMEOUT).unwrap();
}

fn device_id_must_be_1_to_64_bytes(workers: usize) {
    let gw = start(config(workers));
    for device in [String::new(), "d".repeat(65)] {
        let mut client = gw.connect();
        let err = client
            .login(1, "good", &device, pb::Platform::Mobile)
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidArgument), "{err}");
        client.wait_closed(TIMEOUT).unwrap();
    }
    gw.login(1, &"d".repeat(64));
}

fn second_login_is_invalid_and_harmless(workers: usize) {
    let gw = start(config(workers));
    let mut client = gw.login(1, "phone");
    let err = client
        .login(2, "bad token is not even checked", "x", pb::Platform::Web)
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument), "{err}");
    ping(&mut client);
    // Still uid 1: a message to 1 reaches this connection.
    let mut other = gw.login(2, "phone");
    send(&mut other, 1, b"hi");
    assert_eq!(next_push(&mut client).content, b"hi");
}

fn zero_length_is_bad_frame(workers: usize) {
    let gw = start(config(workers));
    let mut client = gw.connect();
    client.send_raw(&[0, 0, 0, 0]).unwrap();
    let frame = expect_error_then_close(&mut client, ErrorCode::BadFrame);
    assert_eq!(frame.req_id, 0);
}

fn oversized_length_is_frame_too_large(workers: usize) {
    let gw = start(config(workers));
    let mut client = gw.connect();
    client.send_raw(&(65_537u32).to_be_bytes()).unwrap();
    let frame = expect_error_then_close(&mut client, ErrorCode::FrameTooLarge);
    assert_eq!(frame.req_id, 0);
}

fn undecodable_body_is_bad_frame(workers: usize) {
    let gw = start(config(workers));
    let mut client = gw.login(1, "phone");
    let mut raw = BytesMut::new();
    raw.put_u32(3);
    raw.extend_from_slice(&[0x12, 0x50, 0x01]); // field 2 claims 80 bytes, has 1
    client.send_raw(&raw).unwrap();
    expect_error_then_close(&mut client, ErrorCode::BadFrame);
}

fn empty_or_server_body_is_bad_frame_even_before_login(workers: usize) {
    let gw = start(config(workers));
    let mut client = gw.connect();
    // req_id but no body: BAD_FRAME (not NOT_LOGGED_IN), echoing the req_id.
    client
        .send_raw(&encoded(&Frame {
            req_id: 5,
            body: None,
        }))
        .unwrap();
    let frame = expect_error_then_close(&mut client, ErrorCode::BadFrame);
    assert_eq!(frame.req_id, 5);

    let mut client = gw.login(1, "phone");
    client
        .send_frame(&Frame {
            req_id: 9,
            body: Some(pb::Push::default().into()),
        })
        .unwrap();
    let frame = expect_error_then_close(&mut client, ErrorCode::BadFrame);
    assert_eq!(frame.req_id, 9);
}

fn frame_sent_one_byte_at_a_time(workers: usize) {
    let gw = start(config(workers));
    let mut client = gw.connect();
    for byte in encoded(&login_frame(1, 7, "phone")) {
        client.send_raw(&[byte]).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    let frame = client.wait_response(1, TIMEOUT).unwrap();
    assert!(matches!(frame.body, Some(Body::LoginResp(_))));
}

fn several_frames_in_one_write(workers: usize) {
    let gw = start(config(workers));
    let mut client = gw.connect();
    // Login and two requests pipelined in one write: the requests wait for the
    // login to be accepted and are then answered in order.
    let mut bytes = encoded(&login_frame(1, 7, "phone"));
    bytes.extend(encoded(&Frame {
        req_id: 2,
        body: Some(pb::Ping {}.into()),
    }));
    bytes.extend(encoded(&Frame {
        req_id: 3,
        body: Some(
            pb::SendReq {
                to_uid: 8,
                client_msg_id: "a".into(),
                content_type: 1,
                content: b"x".to_vec(),
            }
            .into(),
        ),
    }));
    client.send_raw(&bytes).unwrap();
    let order: Vec<u64> = (0..3)
        .map(|_| {
            client
                .next_frame(TIMEOUT)
                .unwrap()
                .expect("a response")
                .req_id
        })
        .collect();
    assert_eq!(order, vec![1, 2, 3]);
}

fn stalled_half_frame_does_not_block_others(workers: usize) {
    let gw = start(config(workers));
    let mut staller = gw.connect();
    let login = encoded(&login_frame(1, 1, "phone"));
    staller.send_raw(&login[..login.len() / 2]).unwrap();

    // Others, on every worker, are served meanwhile.
    for uid in 2..8 {
        let mut other = gw.login(uid, "phone");
        ping(&mut other);
    }
    staller.send_raw(&login[login.len() / 2..]).unwrap();
    assert!(matches!(
        staller.wait_response(1, TIMEOUT).unwrap().body,
        Some(Body::LoginResp(_))
    ));
}

fn login_deadline_closes_silent_connections(workers: usize) {
    let gw = start(support::GatewayConfig {
        login_timeout_secs: 1,
        ..config(workers)
    });
    let mut client = gw.connect();
    let started = Instant::now();
    // A ping does not extend the deadline.
    ping(&mut client);
    client.wait_closed(Duration::from_secs(5)).unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(gw.metrics.closes(CloseReason::LoginTimeout), 1);
}

fn heartbeat_timeout_closes_silent_sessions_only(workers: usize) {
    let gw = start(support::GatewayConfig {
        heartbeat_secs: 1,
        ..config(workers)
    });
    let mut silent = gw.login(1, "phone");
    let mut chatty = gw.login(2, "phone");
    let started = Instant::now();
    // The chatty one pings every 500 ms for 3 s, past the 2 s timeout.
    while started.elapsed() < Duration::from_secs(3) {
        ping(&mut chatty);
        thread::sleep(Duration::from_millis(500));
    }
    silent.wait_closed(Duration::from_secs(1)).unwrap();
    ping(&mut chatty);
    assert_eq!(gw.metrics.closes(CloseReason::HeartbeatTimeout), 1);
}

fn same_device_login_kicks_the_older_session(workers: usize) {
    let gw = start(config(workers));
    let mut first = gw.login(1, "phone");
    let mut pc = gw.login(1, "pc");
    let mut second = gw.login(1, "phone");
    let frame = first.next_event(TIMEOUT).unwrap().expect("a kick");
    assert_eq!(frame.req_id, 0);
    assert!(matches!(frame.body, Some(Body::Kick(_))), "{frame:?}");
    first.wait_closed(TIMEOUT).unwrap();
    ping(&mut second);
    ping(&mut pc);
}

fn slow_consumer_is_closed_and_others_keep_flowing(workers: usize) {
    let gw = start(support::GatewayConfig {
        max_outbound_bytes: 64 * 1024,
        ..config(workers)
    });
    // uid 1 never reads. Shrink its receive buffer so the kernel holds little.
    let stalled = TcpStream::connect(gw.addr).unwrap();
    socket2::SockRef::from(&stalled)
        .set_recv_buffer_size(4096)
        .unwrap();
    let mut stalled = client::Client::from_stream(stalled);
    stalled
        .login(1, "good", "phone", pb::Platform::Mobile)
        .unwrap();

    let mut sender = gw.login(2, "phone");
    let mut peer = gw.login(3, "phone");
    // 20,000 pushes of 1 KiB for uid 1: far beyond every buffer on the way.
    send(&mut sender, 1, b"flood:20000");

    // Meanwhile a normal pair exchanges messages without delay.
    for i in 0..50u32 {
        send(&mut sender, 3, format!("m{i}").as_bytes());
        assert_eq!(next_push(&mut peer).content, format!("m{i}").into_bytes());
    }
    let deadline = Instant::now() + TIMEOUT;
    while gw.metrics.closes(CloseReason::SlowConsumer) == 0 {
        assert!(
            Instant::now() < deadline,
            "the slow consumer was not closed"
        );
        thread::sleep(Duration::from_millis(20));
    }
    // The logic tier was told, so the messages can wait for sync.
    let deadline = Instant::now() + TIMEOUT;
    while !gw.seen.lock().closed.iter().any(|(_, uid)| *uid == Some(1)) {
        assert!(
            Instant::now() < deadline,
            "logic tier not told of the close"
        );
        thread::sleep(Duration::from_millis(20));
    }
    // Cut abortively: the client sees a reset or end-of-stream, not a trickle.
    let mut stream_closed = false;
    let mut frames = 0;
    let mut last = String::new();
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        match stalled.next_frame(Duration::from_millis(200)) {
            Err(ClientError::Closed) | Err(ClientError::Io(_)) => {
                stream_closed = true;
                break;
            }
            Ok(Some(_)) => frames += 1,
            other => last = format!("{other:?}"),
        }
    }
    assert!(stream_closed, "read {frames} frames, then {last}");
    ping(&mut sender);
}

fn rate_limit_refuses_then_closes(workers: usize) {
    let gw = start(support::GatewayConfig {
        inbound_frames_per_sec: 1,
        inbound_burst: 5,
        ..config(workers)
    });
    let mut client = gw.login(1, "phone"); // the login took one token
    let ids: Vec<u64> = (0..8)
        .map(|_| client.send_request(pb::Ping {}).unwrap())
        .collect();
    let mut limited = 0;
    for id in ids {
        match client.wait_response(id, TIMEOUT) {
            Ok(_) => {}
            Err(e) if e.code() == Some(ErrorCode::RateLimited) => limited += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(limited, 4, "4 pings fit in the bucket, 4 are refused");
    // Keep going: the connection is cut.
    for _ in 0..10 {
        let _ = client.send_request(pb::Ping {});
    }
    let mut closed = false;
    for _ in 0..20 {
        match client.next_frame(TIMEOUT) {
            Ok(Some(_)) => continue,
            _ => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed);
    assert_eq!(gw.metrics.closes(CloseReason::RateLimited), 1);
}

fn max_connections_refuses_clearly(workers: usize) {
    let gw = start(support::GatewayConfig {
        max_connections: 2,
        ..config(workers)
    });
    let mut a = gw.login(1, "phone");
    let _b = gw.login(2, "phone");
    let mut refused = gw.connect();
    expect_error_then_close(&mut refused, ErrorCode::Unavailable);
    // Once one leaves, a new connection is accepted.
    drop(a.send_raw(&[]));
    drop(a);
    let deadline = Instant::now() + TIMEOUT;
    while gw.handle().open_connections() > 1 {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(10));
    }
    gw.login(3, "phone");
}

fn graceful_shutdown_kicks_flushes_and_exits(workers: usize) {
    let mut gw = start(config(workers));
    let mut clients: Vec<_> = (1..=10).map(|uid| gw.login(uid, "phone")).collect();
    let mut idle = gw.connect();
    let addr = gw.addr;
    let started = Instant::now();
    gw.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "shutdown took {:?}",
        started.elapsed()
    );
    for client in &mut clients {
        let frame = client.next_event(TIMEOUT).unwrap().expect("a kick");
        match frame.body {
            Some(Body::Kick(kick)) => assert_eq!(kick.reason, "server shutting down"),
            other => panic!("expected a kick, got {other:?}"),
        }
        client.wait_closed(TIMEOUT).unwrap();
    }
    idle.wait_closed(TIMEOUT).unwrap();
    assert!(TcpStream::connect(addr).is_err(), "no longer accepting");
    assert_eq!(gw.metrics.gauge(Gauge::Connections), 0);
}

fn push_acks_reach_the_logic_tier(workers: usize) {
    let gw = start(config(workers));
    let mut a = gw.login(1, "phone");
    let mut b = gw.login(2, "phone");
    send(&mut a, 2, b"hello");
    let message = next_push(&mut b);
    b.send_frame(&Frame {
        req_id: 0,
        body: Some(
            pb::PushAck {
                msg_id: message.msg_id,
            }
            .into(),
        ),
    })
    .unwrap();
    ping(&mut b);
    let deadline = Instant::now() + TIMEOUT;
    while !gw.seen.lock().acks.contains(&message.msg_id) {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(10));
    }
}

fn a_frame_sent_with_the_close_is_handled_and_the_close_seen(workers: usize) {
    let gw = start(config(workers));
    let mut b = gw.login(2, "phone");
    let mut raw = TcpStream::connect(gw.addr).unwrap();
    let mut a = client::Client::from_stream(raw.try_clone().unwrap());
    a.set_timeout(TIMEOUT);
    a.login(1, "good", "phone", pb::Platform::Mobile).unwrap();
    // The last request and the end of stream leave together: the worker
    // reads the frame in one short read, and must not take that for all
    // there is and miss the end of stream queued behind it (no new event
    // would come for it; only the 30 s heartbeat would close the session).
    let last = encoded(&Frame {
        req_id: 9,
        body: Some(
            pb::SendReq {
                to_uid: 2,
                client_msg_id: "last".into(),
                content_type: 1,
                content: b"bye".to_vec(),
            }
            .into(),
        ),
    });
    raw.write_all(&last).unwrap();
    raw.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(next_push(&mut b).content, b"bye");
    let deadline = Instant::now() + Duration::from_secs(2);
    while !gw.seen.lock().closed.iter().any(|(_, uid)| *uid == Some(1)) {
        assert!(Instant::now() < deadline, "the end of stream went unseen");
        thread::sleep(Duration::from_millis(10));
    }
}

fn garbage_never_hurts_the_server(workers: usize) {
    let gw = start(config(workers));
    // Pseudo-random garbage on many connections; the server answers or
    // closes each, and keeps serving.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..50 {
        let mut stream = TcpStream::connect(gw.addr).unwrap();
        let mut bytes = vec![0u8; 300];
        for b in bytes.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        let _ = stream.write_all(&bytes);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut sink = [0u8; 1024];
        let _ = stream.read(&mut sink);
    }
    let mut client = gw.login(1, "phone");
    ping(&mut client);
}

macro_rules! with_worker_counts {
    ($($name:ident),* $(,)?) => {
        mod one_worker {
            $(#[test] fn $name() { super::$name(1) })*
        }
        mod three_workers {
            $(#[test] fn $name() { super::$name(3) })*
        }
    };
}

with_worker_counts!(
    login_and_ping,
    ping_is_answered_before_login,
    requests_before_login_are_refused,
    bad_token_is_auth_failed,
    device_id_must_be_1_to_64_bytes,
    second_login_is_invalid_and_harmless,
    zero_length_is_bad_frame,
    oversized_length_is_frame_too_large,
    undecodable_body_is_bad_frame,
    empty_or_server_body_is_bad_frame_even_before_login,
    frame_sent_one_byte_at_a_time,
    several_frames_in_one_write,
    stalled_half_frame_does_not_block_others,
    login_deadline_closes_silent_connections,
    heartbeat_timeout_closes_silent_sessions_only,
    same_device_login_kicks_the_older_session,
    slow_consumer_is_closed_and_others_keep_flowing,
    rate_limit_refuses_then_closes,
    max_connections_refuses_clearly,
    graceful_shutdown_kicks_flushes_and_exits,
    push_acks_reach_the_logic_tier,
    a_frame_sent_with_the_close_is_handled_and_the_close_seen,
    garbage_never_hurts_the_server,
);
