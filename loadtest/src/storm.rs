//! `im-loadtest storm`: N clients connected and synced; all disconnect;
//! messages arrive for them meanwhile; all reconnect at once, log in, sync
//! from their cursor and pull the gaps with history. Reports how long until
//! every client is back and has every message.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use protocol::{Body, pb};

use crate::fleet::{Event, Fleet};

#[derive(Debug, Clone)]
pub struct StormConfig {
    /// The gateways, connections spread over them in turn.
    pub addrs: Vec<SocketAddr>,
    pub clients: usize,
    /// Messages sent to each client while it is away.
    pub messages: u64,
    pub secret: Vec<u8>,
    pub uid_base: u64,
    pub sources: Vec<IpAddr>,
    pub timeout: Duration,
}

#[derive(Debug, Default)]
pub struct StormReport {
    pub clients: usize,
    pub failed: usize,
    /// From the mass reconnect until the last client had every message.
    pub resync_secs: f64,
    pub messages_recovered: u64,
}

/// Where one reconnecting client stands.
#[derive(Default)]
struct Client {
    cursor: u64,
    /// Requests not yet answered.
    waiting: usize,
    recovered: u64,
    done: bool,
}

pub fn run(config: &StormConfig) -> anyhow::Result<StormReport> {
    let uids: Vec<u64> = (1..=config.clients as u64)
        .map(|i| config.uid_base + i)
        .collect();
    let who: Vec<(u64, String)> = uids.iter().map(|u| (*u, "storm".to_owned())).collect();

    // 1. Everyone online and synced: remember the cursors.
    let mut fleet = Fleet::new()?;
    let (keys, _) = fleet.login_all(
        &config.addrs,
        &config.sources,
        &config.secret,
        &who,
        config.timeout,
    );
    anyhow::ensure!(
        keys.iter().all(Option::is_some),
        "not every client could log in before the storm"
    );
    let keys: Vec<usize> = keys.into_iter().flatten().collect();
    let mut cursors = vec![0u64; keys.len()];
    let by_key: HashMap<usize, usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    for key in &keys {
        fleet.request(
            *key,
            pb::SyncReq {
                cursor: 0,
                limit: 500,
            },
        );
    }
    let mut synced = 0;
    let deadline = Instant::now() + config.timeout;
    while synced < keys.len() && Instant::now() < deadline {
        fleet.flush();
        fleet.poll(Some(Duration::from_millis(20)), |_, key, event| {
            if let Event::Frame(frame) = event {
                if let Some(Body::SyncResp(resp)) = frame.body {
                    cursors[by_key[&key]] = resp.cursor;
                    synced += 1;
                }
            }
        })?;
    }
    anyhow::ensure!(synced == keys.len(), "initial sync timed out");

    // 2. Everyone leaves.
    drop(fleet);

    // 3. Messages arrive while they are away, from a few senders.
    let sender_count = config.clients.clamp(1, 20);
    let senders: Vec<(u64, String)> = (1..=sender_count as u64)
        .map(|i| {
            (
                config.uid_base + config.clients as u64 + i,
                "storm-sender".to_owned(),
            )
        })
        .collect();
    let mut fleet = Fleet::new()?;
    let (sender_keys, _) = fleet.login_all(
        &config.addrs,
        &config.sources,
        &config.secret,
        &senders,
        config.timeout,
    );
    let sender_keys: Vec<usize> = sender_keys.into_iter().flatten().collect();
    anyhow::ensure!(!sender_keys.is_empty(), "no sender could log in");
    let mut outstanding = 0u64;
    for (i, uid) in uids.iter().enumerate() {
        let key = sender_keys[i % sender_keys.len()];
        for m in 0..config.messages {
            fleet.request(
                key,
                pb::SendReq {
                    to_uid: *uid,
                    client_msg_id: format!("storm-{uid}-{m}"),
                    content_type: 1,
                    content: vec![b's'; 32],
                },
            );
            outstanding += 1;
        }
    }
    let mut send_errors = 0;
    let deadline = Instant::now() + config.timeout;
    while outstanding > 0 && Instant::now() < deadline {
        fleet.flush();
        fleet.poll(Some(Duration::from_millis(20)), |_, _, event| {
            if let Event::Frame(frame) = event {
                match frame.body {
                    Some(Body::SendResp(_)) => outstanding -= 1,
                    Some(Body::Error(_)) => {
                        outstanding -= 1;
                        send_errors += 1;
                    }
                    _ => {}
                }
            }
        })?;
    }
    anyhow::ensure!(
        outstanding == 0 && send_errors == 0,
        "sending the missed messages failed ({send_errors} errors)"
    );
    drop(fleet);

    // 4. The storm: everyone at once.
    let started = Instant::now();
    let mut fleet = Fleet::new()?;
    let (keys, _) = fleet.login_all(
        &config.addrs,
        &config.sources,
        &config.secret,
        &who,
        config.timeout,
    );
    let mut clients: HashMap<usize, Client> = HashMap::new();
    let mut failed = keys.iter().filter(|k| k.is_none()).count();
    for (i, key) in keys.iter().enumerate() {
        if let Some(key) = key {
            fleet.request(
                *key,
                pb::SyncReq {
                    cursor: cursors[i],
                    limit: 500,
                },
            );
            clients.insert(
                *key,
                Client {
                    cursor: cursors[i],
                    waiting: 1,
                    ..Client::default()
                },
            );
        }
    }
    let mut done = 0;
    let deadline = started + config.timeout;
    while done < clients.len() && Instant::now() < deadline {
        fleet.flush();
        fleet.poll(Some(Duration::from_millis(20)), |fleet, key, event| {
            let Some(client) = clients.get_mut(&key) else {
                return;
            };
            let frame = match event {
                Event::Frame(frame) => frame,
                Event::Closed => return,
            };
            match frame.body {
                Some(Body::SyncResp(resp)) => {
                    client.waiting -= 1;
                    client.cursor = resp.cursor;
                    for conversation in resp.conversations {
                        // These clients had nothing before: pull the latest page.
                        fleet.request(
                            key,
                            pb::HistoryReq {
                                peer_uid: conversation.peer_uid,
                                after_seq: 0,
                                before_seq: 0,
                                limit: 200,
                            },
                        );
                        client.waiting += 1;
                    }
                    if resp.more {
                        fleet.request(
                            key,
                            pb::SyncReq {
                                cursor: resp.cursor,
                                limit: 500,
                            },
                        );
                        client.waiting += 1;
                    }
                }
                Some(Body::HistoryResp(resp)) => {
                    client.waiting -= 1;
                    client.recovered += resp.messages.len() as u64;
                }
                Some(Body::Error(_)) => client.waiting = client.waiting.saturating_sub(1),
                _ => {}
            }
            if client.waiting == 0 && !client.done {
                client.done = true;
                done += 1;
            }
        })?;
    }
    let resync_secs = started.elapsed().as_secs_f64();
    let mut recovered = 0;
    for client in clients.values() {
        if client.done && client.recovered == config.messages {
            recovered += client.recovered;
        } else {
            failed += 1;
        }
    }
    Ok(StormReport {
        clients: config.clients,
        failed,
        resync_secs,
        messages_recovered: recovered,
    })
}
