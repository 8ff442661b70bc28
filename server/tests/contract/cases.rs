// The contract cases, included once per storage backend by main.rs: each
// module there defines `node()` and `node_with(..)` for its backend.

#[test]
fn send_is_acked_then_pushed_to_every_other_device() {
    let node = node();
    let mut alice_phone = node.login(1, "phone");
    let mut alice_pc = node.login(1, "pc");
    let mut bob_phone = node.login(2, "phone");
    let mut bob_pc = node.login(2, "pc");

    let resp = send(&mut alice_phone, 2, "m1", b"hello");
    assert_eq!(resp.seq, 1);
    assert!(!resp.duplicate);
    for device in [&mut bob_phone, &mut bob_pc, &mut alice_pc] {
        let message = expect_push(device);
        assert_eq!(
            (
                message.msg_id,
                message.seq,
                message.from_uid,
                message.to_uid
            ),
            (resp.msg_id, 1, 1, 2)
        );
        assert_eq!(message.server_time_ms, resp.server_time_ms);
        assert_eq!(message.content, b"hello");
        assert_eq!(message.client_msg_id, "m1");
    }
    // Not to the sending device.
    expect_quiet(&mut alice_phone);
}

#[test]
fn resend_returns_the_original_and_stores_once() {
    let node = node();
    let mut alice = node.login(1, "phone");
    let mut bob = node.login(2, "phone");
    let first = send(&mut alice, 2, "same-id", b"original");
    expect_push(&mut bob);

    let again = send(&mut alice, 2, "same-id", b"changed content");
    assert!(again.duplicate);
    assert_eq!(
        (again.msg_id, again.seq, again.server_time_ms),
        (first.msg_id, first.seq, first.server_time_ms)
    );
    // Even to another recipient: (from_uid, client_msg_id) is unique forever.
    let elsewhere = send(&mut alice, 3, "same-id", b"x");
    assert!(elsewhere.duplicate);
    assert_eq!(elsewhere.msg_id, first.msg_id);
    expect_quiet(&mut bob);

    let page = history(&mut bob, 1, 0, 0, 0);
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].content, b"original");
    assert!(history(&mut alice, 3, 0, 0, 0).messages.is_empty());
}

#[test]
fn retries_racing_the_original_all_get_its_answer() {
    let node = node();
    let mut alice = node.login(1, "phone");
    // Pipeline the same send five times without waiting.
    let ids: Vec<u64> = (0..5)
        .map(|_| {
            alice
                .send_request(pb::SendReq {
                    to_uid: 2,
                    client_msg_id: "race".into(),
                    content_type: 1,
                    content: b"x".to_vec(),
                })
                .unwrap()
        })
        .collect();
    let answers: Vec<pb::SendResp> = ids
        .iter()
        .map(|id| match alice.wait_response(*id, WAIT).unwrap().body {
            Some(Body::SendResp(resp)) => resp,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        answers
            .iter()
            .all(|a| a.msg_id == answers[0].msg_id && a.seq == 1)
    );
    assert_eq!(answers.iter().filter(|a| !a.duplicate).count(), 1);
}

#[test]
fn invalid_sends_are_refused_and_the_connection_stays() {
    let node = node_with(|c| c.logic.content_filter = vec!["forbidden".into()]);
    let mut alice = node.login(1, "phone");
    expect_code(
        try_send(&mut alice, 0, "a", b"x"),
        ErrorCode::InvalidArgument,
    );
    expect_code(
        try_send(&mut alice, 1, "a", b"x"),
        ErrorCode::InvalidArgument,
    );
    expect_code(
        try_send(&mut alice, 2, "", b"x"),
        ErrorCode::InvalidArgument,
    );
    expect_code(
        try_send(&mut alice, 2, &"c".repeat(65), b"x"),
        ErrorCode::InvalidArgument,
    );
    expect_code(
        try_send(&mut alice, 2, "a", &vec![0; 16_385]),
        ErrorCode::InvalidArgument,
    );
    expect_code(
        try_send(&mut alice, 2, "a", b"this is FORBIDDEN talk"),
        ErrorCode::ContentRejected,
    );
    // Nothing was stored or consumed a seq.
    let ok = send(&mut alice, 2, "a", &vec![0; 16_384]);
    assert_eq!(ok.seq, 1);
    assert!(!ok.duplicate);
}

#[test]
fn per_user_rate_limit_refuses_without_storing() {
    let node = node_with(|c| {
        c.logic.messages_per_sec = 1;
        c.logic.message_burst = 3;
    });
    let mut alice = node.login(1, "phone");
    let mut other_device = node.login(1, "pc");
    for i in 0..3 {
        send(&mut alice, 2, &format!("m{i}"), b"x");
    }
    // The limit is per user, not per connection.
    expect_code(
        try_send(&mut other_device, 2, "m3", b"x"),
        ErrorCode::RateLimited,
    );
    let page = history(&mut alice, 2, 0, 0, 0);
    assert_eq!(seqs(&page.messages), vec![1, 2, 3]);
}

#[test]
fn seqs_are_gapless_under_concurrent_senders() {
    let node = node();
    let addr = node.addr();
    // Both users, two devices each, all sending into the same conversation.
    let senders: Vec<_> = [(1u64, 2u64, "a"), (1, 2, "b"), (2, 1, "a"), (2, 1, "b")]
        .into_iter()
        .map(|(from, to, device)| {
            thread::spawn(move || {
                let mut client = client::Client::connect(addr).unwrap();
                client
                    .login(from, &valid_token(from), device, pb::Platform::Pc)
                    .unwrap();
                (0..50)
                    .map(|i| send(&mut client, to, &format!("{device}-{i}"), b"x").seq)
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = senders
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    assert_eq!(all, (1..=200).collect::<Vec<u64>>());
    let mut alice = node.login(1, "reader");
    let page = history(&mut alice, 2, 0, 0, 200);
    assert_eq!(seqs(&page.messages), (1..=200).collect::<Vec<u64>>());
    let ids: Vec<u64> = page.messages.iter().map(|m| m.msg_id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "msg_ids increase with seq"
    );
}

#[test]
fn unacked_pushes_are_resent_then_the_session_is_closed() {
    let node = node_with(|c| {
        c.logic.push_resend_first_ms = 200;
        c.logic.push_resend_second_ms = 400;
        c.logic.push_close_ms = 800;
    });
    let mut alice = node.login(1, "phone");
    let mut silent = node.login(2, "phone");
    let mut acking = node.login(2, "pc");
    let resp = send(&mut alice, 2, "m", b"x");

    expect_push(&mut acking);
    let mut received = Vec::new();
    for _ in 0..3 {
        let frame = next_event(&mut silent);
        match frame.body {
            Some(Body::Push(push)) => received.push(push.message.unwrap().msg_id),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(received, vec![resp.msg_id; 3], "first push and two resends");
    silent
        .wait_closed(Duration::from_secs(3))
        .expect("closed after the last deadline");
    // The device that acked got it once and stays.
    expect_quiet(&mut acking);
    acking.call(pb::Ping {}).unwrap();
}

#[test]
fn offline_messages_wait_for_sync_and_history() {
    let node = node();
    let mut alice = node.login(1, "phone");
    for i in 1..=5 {
        send(
            &mut alice,
            2,
            &format!("m{i}"),
            format!("text {i}").as_bytes(),
        );
    }
    let mut bob = node.login(2, "phone");
    // No pushes at login: the client syncs.
    expect_quiet(&mut bob);
    let synced = sync(&mut bob, 0, 0);
    assert!(!synced.more);
    assert_eq!(synced.conversations.len(), 1);
    let conv = &synced.conversations[0];
    assert_eq!(
        (conv.peer_uid, conv.last_seq, conv.read_seq, conv.unread),
        (1, 5, 0, 5)
    );
    assert_eq!(conv.last_message.as_ref().unwrap().content, b"text 5");
    let page = history(&mut bob, 1, 0, 0, 0);
    assert_eq!(seqs(&page.messages), vec![1, 2, 3, 4, 5]);

    // Nothing changed: empty, same cursor.
    let again = sync(&mut bob, synced.cursor, 0);
    assert!(again.conversations.is_empty());
    assert_eq!(again.cursor, synced.cursor);

    // Disconnect, miss two more, reconnect with the cursor: the gap shows.
    drop(bob);
    send(&mut alice, 2, "m6", b"6");
    send(&mut alice, 2, "m7", b"7");
    let mut bob = node.login(2, "phone");
    let changes = sync(&mut bob, synced.cursor, 0);
    assert_eq!(changes.conversations.len(), 1);
    assert_eq!(changes.conversations[0].last_seq, 7);
    let gap = history(&mut bob, 1, 5, 0, 0);
    assert_eq!(seqs(&gap.messages), vec![6, 7]);
}

#[test]
fn read_receipts_and_unread_counts() {
    let node = node();
    let mut alice = node.login(1, "phone");
    let mut bob = node.login(2, "phone");
    let mut bob_pc = node.login(2, "pc");
    let mut carol = node.login(3, "phone");
    for i in 1..=5 {
        send(&mut alice, 2, &format!("a{i}"), b"x");
        expect_push(&mut bob);
        expect_push(&mut bob_pc);
    }
    send(&mut carol, 2, "c1", b"x");
    expect_push(&mut bob);
    expect_push(&mut bob_pc);

    let resp = read(&mut bob, 1, 3);
    assert_eq!((resp.unread, resp.total_unread), (2, 3));
    for device in [&mut alice, &mut bob_pc] {
        let notice = expect_read_notice(device);
        assert_eq!((notice.reader_uid, notice.peer_uid, notice.seq), (2, 1, 3));
    }
    expect_quiet(&mut bob);
    expect_quiet(&mut carol);

    // Not above the current position: nothing changes, nobody is told.
    let resp = read(&mut bob, 1, 2);
    assert_eq!(resp.unread, 2);
    expect_quiet(&mut alice);

    // Beyond the end: clamped to last_seq.
    read(&mut bob, 1, 99);
    assert_eq!(expect_read_notice(&mut alice).seq, 5);
    expect_read_notice(&mut bob_pc);

    // The sender's own side counts as read; the peer's read position shows.
    let alice_view = &sync(&mut alice, 0, 0).conversations[0];
    assert_eq!(
        (
            alice_view.unread,
            alice_view.read_seq,
            alice_view.peer_read_seq
        ),
        (0, 5, 5)
    );
    let total = conversations(&mut bob, 0, vec![]).total_unread;
    assert_eq!(total, 1, "only carol's message is unread");
}

#[test]
fn conversation_list_pages_latest_first() {
    let node = node();
    let mut alice = node.login(1, "phone");
    for peer in 2..=8u64 {
        let mut other = node.login(peer, "phone");
        send(&mut other, 1, "hi", format!("from {peer}").as_bytes());
        expect_push(&mut alice);
    }
    // Peer 4 writes again: it moves to the top.
    let mut four = node.login(4, "pc");
    send(&mut four, 1, "again", b"again");
    expect_push(&mut alice);

    let mut order = Vec::new();
    let mut cursor = Vec::new();
    let mut pages = 0;
    loop {
        let page = conversations(&mut alice, 3, cursor);
        assert_eq!(page.total_unread, 8);
        order.extend(page.conversations.iter().map(|c| c.peer_uid));
        pages += 1;
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(order, vec![4, 8, 7, 6, 5, 3, 2]);
    assert_eq!(pages, 3);
    expect_code(
        alice.call(pb::ConversationsReq {
            limit: 3,
            cursor: vec![1, 2, 3],
        }),
        ErrorCode::InvalidArgument,
    );
}

#[test]
fn delete_hides_for_the_caller_only() {
    let node = node();
    let mut alice = node.login(1, "phone");
    let mut bob = node.login(2, "phone");
    for i in 1..=3 {
        send(&mut alice, 2, &format!("m{i}"), b"old");
        expect_push(&mut bob);
    }
    bob.call(pb::DeleteConversationReq { peer_uid: 1 }).unwrap();
    // Marked read first: alice gets the receipt.
    assert_eq!(expect_read_notice(&mut alice).seq, 3);
    assert!(conversations(&mut bob, 0, vec![]).conversations.is_empty());
    assert!(history(&mut bob, 1, 0, 0, 0).messages.is_empty());
    let deleted = sync(&mut bob, 0, 0);
    assert!(deleted.conversations[0].deleted);
    // Alice's side is untouched.
    assert_eq!(
        seqs(&history(&mut alice, 2, 0, 0, 0).messages),
        vec![1, 2, 3]
    );
    assert_eq!(conversations(&mut alice, 0, vec![]).conversations.len(), 1);

    // A new message brings it back with only the new history.
    send(&mut alice, 2, "m4", b"new");
    expect_push(&mut bob);
    let list = conversations(&mut bob, 0, vec![]);
    assert_eq!(list.conversations.len(), 1);
    assert_eq!(list.conversations[0].unread, 1);
    assert!(!list.conversations[0].deleted);
    assert_eq!(list.total_unread, 1);
    assert_eq!(seqs(&history(&mut bob, 1, 0, 0, 0).messages), vec![4]);
    assert_eq!(
        seqs(&history(&mut bob, 1, 1, 0, 0).messages),
        vec![4],
        "after_seq cannot reach under the delete"
    );
}

#[test]
fn profiles_set_get_and_limits() {
    let node = node();
    let mut alice = node.login(1, "phone");
    alice
        .call(pb::SetProfileReq {
            nickname: "Zoë ✨".into(),
            avatar_url: "https://x/a.png".into(),
        })
        .unwrap();
    let profiles = alice
        .call(pb::ProfileReq { uids: vec![1, 99] })
        .unwrap()
        .profiles;
    assert_eq!(
        profiles[0],
        pb::Profile {
            uid: 1,
            nickname: "Zoë ✨".into(),
            avatar_url: "https://x/a.png".into()
        }
    );
    assert_eq!(
        profiles[1],
        pb::Profile {
            uid: 99,
            ..Default::default()
        }
    );

    // 64 characters (not bytes) is the limit.
    alice
        .call(pb::SetProfileReq {
            nickname: "é".repeat(64),
            avatar_url: String::new(),
        })
        .unwrap();
    expect_code(
        alice.call(pb::SetProfileReq {
            nickname: "é".repeat(65),
            avatar_url: String::new(),
        }),
        ErrorCode::InvalidArgument,
    );
    expect_code(
        alice.call(pb::SetProfileReq {
            nickname: String::new(),
            avatar_url: "u".repeat(513),
        }),
        ErrorCode::InvalidArgument,
    );
    expect_code(
        alice.call(pb::ProfileReq {
            uids: (1..=101).collect(),
        }),
        ErrorCode::InvalidArgument,
    );
    let unchanged = alice
        .call(pb::ProfileReq { uids: vec![1] })
        .unwrap()
        .profiles;
    assert_eq!(unchanged[0].nickname, "é".repeat(64));
    assert_eq!(
        alice
            .call(pb::ProfileReq {
                uids: (1..=100).collect()
            })
            .unwrap()
            .profiles
            .len(),
        100
    );
}

#[test]
fn a_third_user_sees_nothing() {
    let node = node();
    let mut alice = node.login(1, "phone");
    send(&mut alice, 2, "secret", b"for bob only");
    let mut carol = node.login(3, "phone");
    assert!(history(&mut carol, 1, 0, 0, 0).messages.is_empty());
    assert!(history(&mut carol, 2, 0, 0, 0).messages.is_empty());
    assert!(sync(&mut carol, 0, 0).conversations.is_empty());
    assert!(
        conversations(&mut carol, 0, vec![])
            .conversations
            .is_empty()
    );
    expect_quiet(&mut carol);
}

#[test]
fn history_paging_in_both_directions() {
    let node = node();
    let mut alice = node.login(1, "phone");
    for i in 1..=30 {
        send(&mut alice, 2, &format!("m{i}"), b"x");
    }
    let latest = history(&mut alice, 2, 0, 0, 10);
    assert_eq!(seqs(&latest.messages), (21..=30).collect::<Vec<_>>());
    assert!(latest.more);
    let older = history(&mut alice, 2, 0, 21, 10);
    assert_eq!(seqs(&older.messages), (11..=20).collect::<Vec<_>>());
    assert!(older.more);
    let oldest = history(&mut alice, 2, 0, 11, 10);
    assert_eq!(seqs(&oldest.messages), (1..=10).collect::<Vec<_>>());
    assert!(!oldest.more);
    let forward = history(&mut alice, 2, 25, 3, 10);
    assert_eq!(
        seqs(&forward.messages),
        (26..=30).collect::<Vec<_>>(),
        "after_seq wins over before_seq"
    );
    assert!(!forward.more);
    assert_eq!(
        history(&mut alice, 2, 0, 0, 0).messages.len(),
        30,
        "limit 0 means 50"
    );
    assert!(history(&mut alice, 2, 30, 0, 0).messages.is_empty());
    assert!(
        history(&mut alice, 7, 0, 0, 0).messages.is_empty(),
        "a user never talked to"
    );
    expect_code(
        alice.call(pb::HistoryReq {
            peer_uid: 0,
            after_seq: 0,
            before_seq: 0,
            limit: 1,
        }),
        ErrorCode::InvalidArgument,
    );
}

#[test]
fn pages_fill_only_one_frame() {
    let node = node_with(|c| c.logic.messages_per_sec = 1000);
    let mut alice = node.login(1, "phone");
    for i in 1..=20 {
        send(&mut alice, 2, &format!("m{i}"), &vec![b'x'; 16_000]);
    }
    let page = history(&mut alice, 2, 0, 0, 200);
    // About 16 KB each: four fit in a 64 KiB frame.
    assert_eq!(
        seqs(&page.messages),
        vec![17, 18, 19, 20],
        "the newest that fit"
    );
    assert!(page.more);
    let forward = history(&mut alice, 2, 10, 0, 200);
    assert_eq!(seqs(&forward.messages), vec![11, 12, 13, 14]);
    assert!(forward.more);
}

#[test]
fn sync_pages_return_each_conversation_once() {
    let node = node();
    let mut alice = node.login(1, "phone");
    for peer in 2..=12u64 {
        send(&mut alice, peer, &format!("to{peer}"), b"x");
    }
    let mut cursor = 0;
    let mut seen = Vec::new();
    loop {
        let page = sync(&mut alice, cursor, 4);
        seen.extend(page.conversations.iter().map(|c| c.peer_uid));
        cursor = page.cursor;
        if !page.more {
            break;
        }
    }
    assert_eq!(
        seen,
        (2..=12).collect::<Vec<_>>(),
        "in change order, each once"
    );
    let nothing = sync(&mut alice, cursor, 4);
    assert!(nothing.conversations.is_empty() && !nothing.more && nothing.cursor == cursor);
}

#[test]
fn acked_writes_survive_a_restart_with_the_same_ids() {
    let mut node = node();
    let mut alice = node.login(1, "phone");
    let sent: Vec<pb::SendResp> = (1..=10)
        .map(|i| send(&mut alice, 2, &format!("m{i}"), b"x"))
        .collect();
    let mut bob = node.login(2, "phone");
    read(&mut bob, 1, 4);
    drop((alice, bob));
    node.restart();

    let mut alice = node.login(1, "phone");
    let page = history(&mut alice, 2, 0, 0, 0);
    let stored: Vec<(u64, u64)> = page.messages.iter().map(|m| (m.msg_id, m.seq)).collect();
    assert_eq!(
        stored,
        sent.iter().map(|r| (r.msg_id, r.seq)).collect::<Vec<_>>()
    );
    // Dedup, seqs and msg_ids carry on from storage.
    let dup = send(&mut alice, 2, "m3", b"x");
    assert!(dup.duplicate);
    assert_eq!(dup.msg_id, sent[2].msg_id);
    let next = send(&mut alice, 2, "m11", b"x");
    assert_eq!(next.seq, 11);
    assert!(next.msg_id > sent[9].msg_id);
    let mut bob = node.login(2, "phone");
    assert_eq!(sync(&mut bob, 0, 0).conversations[0].read_seq, 4);
}

#[test]
fn fifty_pairs_two_hundred_messages_each_exactly_once_in_order() {
    let node = node();
    let addr = node.addr();
    const PAIRS: u64 = 50;
    const MESSAGES: u64 = 200;
    // Receivers first, so every message is pushed live.
    let receivers: Vec<_> = (0..PAIRS)
        .map(|p| {
            let uid = 10_000 + p;
            let mut client = client::Client::connect(addr).unwrap();
            client.set_timeout(WAIT);
            client
                .login(uid, &valid_token(uid), "phone", pb::Platform::Mobile)
                .unwrap();
            client
        })
        .collect();
    let receiving: Vec<_> = receivers
        .into_iter()
        .map(|mut client| {
            thread::spawn(move || {
                let mut seen = Vec::new();
                let mut ids = HashSet::new();
                while seen.len() < MESSAGES as usize {
                    let message = expect_push(&mut client);
                    assert!(
                        ids.insert(message.msg_id),
                        "pushed twice: {}",
                        message.msg_id
                    );
                    seen.push(message.seq);
                }
                // And nothing more.
                match client.next_event(QUIET) {
                    Ok(None) => {}
                    other => panic!("extra frame: {other:?}"),
                }
                seen
            })
        })
        .collect();
    let sending: Vec<_> = (0..PAIRS)
        .map(|p| {
            thread::spawn(move || {
                let uid = 20_000 + p;
                let mut client = client::Client::connect(addr).unwrap();
                client.set_timeout(WAIT);
                client
                    .login(uid, &valid_token(uid), "phone", pb::Platform::Mobile)
                    .unwrap();
                // A window of 20 requests in flight.
                let mut in_flight = std::collections::VecDeque::new();
                for i in 0..MESSAGES {
                    let req = pb::SendReq {
                        to_uid: 10_000 + p,
                        client_msg_id: format!("{p}-{i}"),
                        content_type: 1,
                        content: vec![1; 64],
                    };
                    in_flight.push_back(client.send_request(req).unwrap());
                    if in_flight.len() == 20 {
                        client
                            .wait_response(in_flight.pop_front().unwrap(), WAIT)
                            .unwrap();
                    }
                }
                for id in in_flight {
                    client.wait_response(id, WAIT).unwrap();
                }
            })
        })
        .collect();
    for t in sending {
        t.join().unwrap();
    }
    for t in receiving {
        let seen = t.join().unwrap();
        assert_eq!(
            seen,
            (1..=MESSAGES).collect::<Vec<_>>(),
            "every message once, in seq order"
        );
    }
}

#[test]
fn errors_do_not_end_the_session() {
    let node = node();
    let mut alice = node.login(1, "phone");
    expect_code(
        alice.call(pb::ReadReq {
            peer_uid: 1,
            seq: 1,
        }),
        ErrorCode::InvalidArgument,
    );
    expect_code(
        alice.call(pb::DeleteConversationReq { peer_uid: 0 }),
        ErrorCode::InvalidArgument,
    );
    // Reads of conversations that do not exist are harmless no-ops.
    assert_eq!(read(&mut alice, 5, 10).unread, 0);
    alice
        .call(pb::DeleteConversationReq { peer_uid: 5 })
        .unwrap();
    match alice.call(pb::Ping {}) {
        Ok(_) => {}
        Err(ClientError::Server { .. }) | Err(_) => panic!("session ended"),
    }
}

#[test]
fn offline_recipients_get_one_signed_notification_per_message() {
    let mut receiver = super::receiver::Receiver::new(free_port(), b"hook-secret", None);
    receiver.start();
    let node = node_with(|c| {
        c.logic.webhook.url = receiver.url();
        c.logic.webhook.secret = "hook-secret".into();
    });
    let mut alice = node.login(1, "phone");
    let mut carol = node.login(3, "phone");
    let first = send(&mut alice, 2, "a", b"hello bob");
    let second = send(&mut alice, 2, "b", b"x");
    send(&mut alice, 2, "a", b"hello bob"); // a duplicate records nothing
    send(&mut alice, 3, "c", b"x"); // carol is online
    expect_push(&mut carol);
    let mut got = eventually("two notifications", || {
        let got = receiver.deliveries();
        (got.len() >= 2).then_some(got)
    });
    got.sort_by_key(|d| d.json()["seq"].as_u64());
    thread::sleep(QUIET);
    assert_eq!(
        receiver.deliveries().len(),
        2,
        "one notification per offline message, none for online recipients"
    );
    for (delivery, resp) in got.iter().zip([&first, &second]) {
        assert!(delivery.signature_ok);
        let json = delivery.json();
        assert_eq!(json["msg_id"], resp.msg_id.to_string());
        assert_eq!(delivery.msg_id(), resp.msg_id.to_string());
        assert_eq!(json["to_uid"], 2);
        assert_eq!(json["from_uid"], 1);
        assert_eq!(json["seq"], resp.seq);
    }
    assert_eq!(got[0].json()["preview"], "hello bob");
}
