//! The engine: one thread that owns the connection.
//!
//! Its life is a loop of connect, log in, catch up (sync from the stored
//! cursor, pull every gap), flush (owed reads and deletes, then the outbox
//! in order), then wait in `poll(2)` on the socket and a doorbell the app
//! rings, until the connection ends; then a jittered backoff wait, unless
//! the app paused, was kicked, or must supply a new token.
//!
//! Requests are made one at a time and waited for: the outbox's order is
//! the order of its sends on the wire, and a failure leaves every unsent
//! message where it was. What the server pushes meanwhile waits in the
//! client's queue and is handled after.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Client, ClientError};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use protocol::pb::{self, ErrorCode};
use protocol::{Body, Request};
use runtime::backoff::Rng;

use crate::store::Store;
use crate::{Config, ConnectionState, Listener, Message, Profile, SdkError, SendState};

/// How long a refused (UNAVAILABLE, RATE_LIMITED) request waits before the
/// engine tries again on the same connection.
const RETRY_REFUSED: Duration = Duration::from_secs(1);

/// History page size for gap pulls (the server's maximum).
const PAGE: u32 = 200;

pub enum Command {
    /// The store holds something to send (a message, a read, a delete).
    Flush,
    Pause,
    Resume,
    SetToken(String),
    Profiles(Vec<u64>, Sender<Result<Vec<Profile>, SdkError>>),
    Close,
}

/// The app's side of the wake-up pipe: one byte wakes the engine's poll.
pub struct Doorbell(UnixStream);

impl Doorbell {
    pub fn ring(&self) {
        // A full pipe already holds a wake-up.
        let _ = (&self.0).write(&[1]);
    }
}

/// The engine's side.
pub struct Wake(UnixStream);

impl Wake {
    fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.0).read(&mut buf), Ok(n) if n > 0) {}
    }
}

pub fn doorbell() -> std::io::Result<(Doorbell, Wake)> {
    let (ring, wake) = UnixStream::pair()?;
    ring.set_nonblocking(true)?;
    wake.set_nonblocking(true)?;
    Ok((Doorbell(ring), Wake(wake)))
}

/// What the engine is doing between connections.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    Paused,
    Kicked,
    TokenExpired,
    Closing,
}

/// Why a connection ended.
enum End {
    Lost(String),
    /// The app paused or closed, or the server kicked: [`Mode`] says which.
    Stopped,
    AuthFailed,
}

/// A request that did not get its answer.
enum Fail {
    /// The server said no and the connection stays (the wire code).
    Refused(ErrorCode),
    Ended(End),
}

impl From<End> for Fail {
    fn from(end: End) -> Fail {
        Fail::Ended(end)
    }
}

impl From<ClientError> for Fail {
    fn from(error: ClientError) -> Fail {
        match error {
            // The codes after which the server closes the connection.
            ClientError::Server {
                code: ErrorCode::AuthFailed,
                ..
            } => Fail::Ended(End::AuthFailed),
            ClientError::Server { code, message }
                if !matches!(
                    code,
                    ErrorCode::BadFrame | ErrorCode::FrameTooLarge | ErrorCode::NotLoggedIn
                ) =>
            {
                log::debug!("refused {code:?}: {message}");
                Fail::Refused(code)
            }
            other => Fail::Ended(End::Lost(other.to_string())),
        }
    }
}

/// Refusals worth trying again later, on the same connection.
fn retryable(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::Unavailable | ErrorCode::RateLimited)
}

pub struct Engine {
    config: Config,
    token: String,
    store: Arc<Mutex<Store>>,
    listener: Arc<dyn Listener>,
    inbox: Receiver<Command>,
    wake: Wake,
    state: Arc<Mutex<ConnectionState>>,
    mode: Mode,
    /// Failed connection attempts since the last one that caught up.
    attempt: u32,
    next_addr: usize,
    rng: Rng,
    /// When something was last written: a ping is due a heartbeat after.
    last_write: Instant,
    /// The outbox (or owed reads) to be tried again at.
    flush_at: Option<Instant>,
    /// A catch-up to be tried again at (a gap pull was refused).
    catch_up_at: Option<Instant>,
}

impl Engine {
    pub fn new(
        config: Config,
        store: Arc<Mutex<Store>>,
        listener: Arc<dyn Listener>,
        inbox: Receiver<Command>,
        wake: Wake,
        state: Arc<Mutex<ConnectionState>>,
    ) -> Engine {
        Engine {
            token: config.token.clone(),
            config,
            store,
            listener,
            inbox,
            wake,
            state,
            mode: Mode::Run,
            attempt: 0,
            next_addr: 0,
            rng: Rng::default(),
            last_write: Instant::now(),
            flush_at: None,
            catch_up_at: None,
        }
    }

    pub fn run(mut self) {
        while self.mode != Mode::Closing {
            match self.mode {
                Mode::Paused => self.set_state(ConnectionState::Paused),
                Mode::Kicked => self.set_state(ConnectionState::Kicked),
                Mode::TokenExpired => self.set_state(ConnectionState::TokenExpired),
                Mode::Run | Mode::Closing => {}
            }
            if self.mode != Mode::Run {
                self.wait(None);
                continue;
            }
            self.set_state(ConnectionState::Connecting);
            let end = match self.connect() {
                Ok((mut client, heartbeat)) => self.online(&mut client, heartbeat),
                Err(end) => end,
            };
            match end {
                End::Stopped => {}
                End::AuthFailed => {
                    self.mode = Mode::TokenExpired;
                    self.listener.token_expired();
                }
                End::Lost(why) => {
                    self.attempt += 1;
                    let wait = self.config.backoff.wait(self.attempt, &mut self.rng);
                    log::info!("connection lost ({why}); next try in {wait:?}");
                    self.set_state(ConnectionState::Waiting { retry_in: wait });
                    self.wait(Some(wait));
                }
            }
        }
        self.set_state(ConnectionState::Closed);
    }

    /// Waits for a command that changes what to do, or `timeout`.
    fn wait(&mut self, timeout: Option<Duration>) {
        self.wake.drain();
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let command = match deadline {
                None => self
                    .inbox
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => self
                    .inbox
                    .recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match command {
                Ok(Command::Flush) => {}
                Ok(Command::Profiles(_, reply)) => {
                    let _ = reply.send(Err(SdkError::Offline));
                }
                Ok(command) => {
                    if self.obey(command) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => {
                    self.mode = Mode::Closing;
                    return;
                }
            }
        }
    }

    /// Pause, resume, a token, close: true if it changes what the engine
    /// does next.
    fn obey(&mut self, command: Command) -> bool {
        match command {
            Command::Pause => self.mode = Mode::Paused,
            Command::Close => self.mode = Mode::Closing,
            Command::Resume => {
                self.mode = Mode::Run;
                self.attempt = 0;
            }
            Command::SetToken(token) => {
                self.token = token;
                if self.mode == Mode::TokenExpired {
                    self.mode = Mode::Run;
                }
            }
            Command::Flush | Command::Profiles(..) => return false,
        }
        true
    }

    fn set_state(&self, state: ConnectionState) {
        let mut current = self.state.lock();
        if *current != state {
            *current = state.clone();
            drop(current);
            self.listener.connection(&state);
        }
    }

    /// Connects to the next address and logs in: the client and the
    /// server's heartbeat interval.
    fn connect(&mut self) -> Result<(Client, Duration), End> {
        let addrs = &self.config.addrs;
        if addrs.is_empty() {
            return Err(End::Lost("no server address configured".into()));
        }
        let addr = addrs[self.next_addr % addrs.len()].clone();
        self.next_addr += 1;
        let lost = |e: &dyn std::fmt::Display| End::Lost(format!("{addr}: {e}"));
        let resolved = addr
            .to_socket_addrs()
            .map_err(|e| lost(&e))?
            .next()
            .ok_or_else(|| lost(&"no address"))?;
        let mut client = match &self.config.tls {
            None => {
                let stream = TcpStream::connect_timeout(&resolved, self.config.request_timeout)
                    .map_err(|e| lost(&e))?;
                Client::from_stream(stream)
            }
            Some(tls) => {
                let roots = client::tls_config(&tls.ca_pem).map_err(|e| lost(&e))?;
                Client::connect_tls(resolved, &tls.server_name, roots).map_err(|e| lost(&e))?
            }
        };
        client.set_timeout(self.config.request_timeout);
        let login = client.login(
            self.config.uid,
            &self.token,
            &self.config.device_id,
            self.config.platform,
        );
        self.last_write = Instant::now();
        match login {
            Ok(resp) => Ok((
                client,
                Duration::from_secs(resp.heartbeat_secs.max(1) as u64),
            )),
            Err(ClientError::Server {
                code: ErrorCode::AuthFailed,
                ..
            }) => Err(End::AuthFailed),
            Err(e) => Err(lost(&e)),
        }
    }

    /// One connection's life, logged in.
    fn online(&mut self, client: &mut Client, heartbeat: Duration) -> End {
        self.catch_up_at = Some(Instant::now());
        self.flush_at = Some(Instant::now());
        loop {
            if let Err(end) = self.step(client) {
                return end;
            }
            if self.mode != Mode::Run {
                return End::Stopped;
            }
            let now = Instant::now();
            let ping_at = self.last_write + heartbeat;
            let due = [Some(ping_at), self.flush_at, self.catch_up_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(ping_at);
            let (readable, rung) = poll2(
                client.tcp().as_raw_fd(),
                self.wake.0.as_raw_fd(),
                due.saturating_duration_since(now),
            );
            if rung {
                self.wake.drain();
            }
            if readable && let Err(end) = self.drain(client) {
                return end;
            }
            if Instant::now() >= self.last_write + heartbeat
                && let Err(Fail::Ended(end)) = self.call(client, pb::Ping {})
            {
                return end;
            }
        }
    }

    /// Everything due now: commands, a catch-up, a flush, queued frames.
    fn step(&mut self, client: &mut Client) -> Result<(), End> {
        while let Ok(command) = self.inbox.try_recv() {
            match command {
                Command::Flush => self.flush_at = Some(Instant::now()),
                Command::Profiles(uids, reply) => {
                    let answer = self.call(client, pb::ProfileReq { uids });
                    let result = match answer {
                        Ok(resp) => Ok(resp
                            .profiles
                            .into_iter()
                            .map(|p| Profile {
                                uid: p.uid,
                                nickname: p.nickname,
                                avatar_url: p.avatar_url,
                            })
                            .collect()),
                        Err(Fail::Refused(code)) => Err(SdkError::Server {
                            code,
                            message: "profiles refused".into(),
                        }),
                        Err(Fail::Ended(end)) => {
                            let _ = reply.send(Err(SdkError::Offline));
                            return Err(end);
                        }
                    };
                    let _ = reply.send(result);
                }
                command => {
                    if self.obey(command) && self.mode != Mode::Run {
                        return Err(End::Stopped);
                    }
                }
            }
        }
        let now = Instant::now();
        if self.catch_up_at.is_some_and(|at| at <= now) {
            self.catch_up_at = None;
            match self.catch_up(client) {
                Ok(()) => {
                    self.attempt = 0;
                    self.set_state(ConnectionState::Online);
                }
                Err(Fail::Refused(_)) => self.catch_up_at = Some(now + RETRY_REFUSED),
                Err(Fail::Ended(end)) => return Err(end),
            }
        }
        if self.flush_at.is_some_and(|at| at <= now) {
            self.flush_at = None;
            match self.flush(client) {
                Ok(()) => {}
                Err(Fail::Refused(_)) => self.flush_at = Some(now + RETRY_REFUSED),
                Err(Fail::Ended(end)) => return Err(end),
            }
        }
        self.drain(client)
    }

    /// Handles every frame already read and any the socket holds.
    fn drain(&mut self, client: &mut Client) -> Result<(), End> {
        loop {
            match client.next_frame(Duration::from_millis(1)) {
                Ok(Some(frame)) => self.on_frame(client, frame)?,
                Ok(None) => return Ok(()),
                Err(e) => return Err(End::Lost(e.to_string())),
            }
        }
    }

    fn on_frame(&mut self, client: &mut Client, frame: pb::Frame) -> Result<(), End> {
        if frame.req_id != 0 {
            // The answer to a request that timed out: nothing waits for it.
            return Ok(());
        }
        match frame.body {
            Some(Body::Push(push)) => {
                let Some(message) = push.message else {
                    return Ok(());
                };
                let msg_id = message.msg_id;
                match self.take(client, message) {
                    Ok(()) => {}
                    Err(Fail::Refused(_)) => {
                        self.catch_up_at = Some(Instant::now() + RETRY_REFUSED)
                    }
                    Err(Fail::Ended(end)) => return Err(end),
                }
                // Stored, or to be pulled by the catch-up: either way the
                // server need not push it again.
                self.last_write = Instant::now();
                client
                    .send_request(pb::PushAck { msg_id })
                    .map_err(|e| End::Lost(e.to_string()))?;
            }
            Some(Body::SyncHint(_)) => self.catch_up_at = Some(Instant::now()),
            Some(Body::ReadNotice(notice)) => {
                let me = self.config.uid;
                let peer = if notice.reader_uid == me {
                    notice.peer_uid
                } else {
                    notice.reader_uid
                };
                self.stored(|store| store.read(peer, notice.reader_uid, notice.seq, true))?;
                if notice.reader_uid != me {
                    self.listener.read_receipt(peer, notice.seq);
                }
                self.changed(&[peer])?;
            }
            Some(Body::Kick(kick)) => {
                self.mode = Mode::Kicked;
                self.listener.kicked(&kick.reason);
                return Err(End::Stopped);
            }
            _ => {}
        }
        Ok(())
    }

    /// A pushed message, stored in seq order: past a gap, the gap is
    /// pulled first.
    fn take(&mut self, client: &mut Client, message: pb::Message) -> Result<(), Fail> {
        let peer = Message::peer_of(self.config.uid, &message);
        let complete = self.stored(|store| store.positions(peer))?.complete_seq;
        if message.seq <= complete {
            return Ok(());
        }
        let batch = if message.seq > complete + 1 {
            self.pull(client, peer, complete)?
        } else {
            vec![message]
        };
        self.deliver(peer, &batch)
    }

    /// Stores messages of one conversation and tells the app what was new.
    fn deliver(&mut self, peer: u64, messages: &[pb::Message]) -> Result<(), Fail> {
        let new = self.stored(|store| store.receive(messages))?;
        if !new.is_empty() {
            self.listener.messages(&new);
            self.changed(&[peer])?;
        }
        Ok(())
    }

    /// Sync from the stored cursor; pull every conversation's gap.
    fn catch_up(&mut self, client: &mut Client) -> Result<(), Fail> {
        let mut cursor = self.stored(|store| store.cursor())?;
        loop {
            let page = self.call(
                client,
                pb::SyncReq {
                    cursor,
                    limit: PAGE,
                },
            )?;
            for conversation in &page.conversations {
                let peer = conversation.peer_uid;
                self.stored(|store| store.merge(conversation))?;
                let positions = self.stored(|store| store.positions(peer))?;
                if positions.complete_seq < conversation.last_seq {
                    let _ = self.pull(client, peer, positions.complete_seq)?;
                }
                self.changed(&[peer])?;
            }
            // Only now: a catch-up cut short starts this page again.
            cursor = page.cursor;
            self.stored(|store| store.set_cursor(cursor))?;
            if !page.more {
                return Ok(());
            }
        }
    }

    /// Every visible message with `peer` after `after`, stored (the new
    /// ones told to the app); returns them in seq order.
    fn pull(
        &mut self,
        client: &mut Client,
        peer: u64,
        after: u64,
    ) -> Result<Vec<pb::Message>, Fail> {
        let mut all: Vec<pb::Message> = Vec::new();
        // after_seq 0 asks for the latest page: from nothing, walk back.
        let (mut after_seq, mut before_seq) = (after, 0);
        loop {
            let page = self.call(
                client,
                pb::HistoryReq {
                    peer_uid: peer,
                    after_seq,
                    before_seq,
                    limit: PAGE,
                },
            )?;
            let first = page.messages.first().map(|m| m.seq);
            let last = page.messages.last().map(|m| m.seq);
            all.extend(page.messages);
            match (after, first, last) {
                (0, Some(first), _) if page.more => before_seq = first,
                (_, _, Some(last)) if after > 0 && page.more => after_seq = last,
                _ => break,
            }
        }
        all.sort_by_key(|m| m.seq);
        self.deliver(peer, &all)?;
        // What the server did not return up to here is hidden (deleted):
        // the store is complete up to the last message it has.
        if let Some(last) = all.last().map(|m| m.seq) {
            self.stored(|store| store.complete_to(peer, last))?;
        }
        Ok(all)
    }

    /// Owed reads and deletes, then the outbox, oldest first.
    fn flush(&mut self, client: &mut Client) -> Result<(), Fail> {
        let me = self.config.uid;
        for peer in self.stored(|store| store.deletes_owed())? {
            match self.call(client, pb::DeleteConversationReq { peer_uid: peer }) {
                Ok(_) | Err(Fail::Refused(ErrorCode::NotFound)) => {
                    self.stored(|store| store.delete_told(peer))?;
                }
                Err(e) => return Err(e),
            }
        }
        for (peer, seq) in self.stored(|store| store.reads_owed())? {
            match self.call(
                client,
                pb::ReadReq {
                    peer_uid: peer,
                    seq,
                },
            ) {
                Ok(_) => self.stored(|store| store.read(peer, me, seq, true))?,
                Err(Fail::Refused(code)) if !retryable(code) => {
                    log::warn!("read of {peer} to {seq} refused: {code:?}");
                    self.stored(|store| store.read(peer, me, seq, true))?;
                }
                Err(e) => return Err(e),
            }
        }
        while let Some(out) = self.stored(|store| store.next_pending())? {
            let answer = self.call(
                client,
                pb::SendReq {
                    to_uid: out.to_uid,
                    client_msg_id: out.client_msg_id.clone(),
                    content_type: out.content_type,
                    content: out.content.clone(),
                },
            );
            match answer {
                Ok(resp) => {
                    let message = pb::Message {
                        msg_id: resp.msg_id,
                        from_uid: me,
                        to_uid: out.to_uid,
                        seq: resp.seq,
                        client_msg_id: out.client_msg_id.clone(),
                        content_type: out.content_type,
                        content: out.content,
                        server_time_ms: resp.server_time_ms,
                    };
                    let new = self.stored(|store| store.sent(&message))?;
                    self.listener.send_state(
                        &out.client_msg_id,
                        SendState::Sent {
                            msg_id: resp.msg_id,
                            seq: resp.seq,
                        },
                    );
                    if new {
                        self.listener.messages(&[Message::from_pb(me, &message)]);
                    }
                    self.changed(&[out.to_uid])?;
                }
                Err(Fail::Refused(code)) if !retryable(code) => {
                    self.stored(|store| store.failed(&out.client_msg_id, code as i32))?;
                    self.listener
                        .send_state(&out.client_msg_id, SendState::Failed { code: code as i32 });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Tells the app about conversations that changed and the total unread.
    fn changed(&self, peers: &[u64]) -> Result<(), End> {
        for &peer in peers {
            if let Some(conversation) = self.stored(|store| store.conversation(peer))? {
                self.listener.conversation(&conversation);
            }
        }
        let total = self.stored(|store| store.total_unread())?;
        self.listener.total_unread(total);
        Ok(())
    }

    fn call<R: Request>(&mut self, client: &mut Client, request: R) -> Result<R::Response, Fail> {
        self.last_write = Instant::now();
        Ok(client.call(request)?)
    }

    /// A store operation; a failing store (a full disk) ends the
    /// connection, so nothing is acknowledged that was not stored, and the
    /// reconnect's catch-up tries again.
    fn stored<T>(
        &self,
        operation: impl FnOnce(&mut Store) -> Result<T, crate::StoreError>,
    ) -> Result<T, End> {
        operation(&mut self.store.lock()).map_err(|e| {
            log::error!("{e}");
            End::Lost(e.to_string())
        })
    }
}

/// Waits until `a` or `b` is readable (or closed), or `timeout`.
fn poll2(a: i32, b: i32, timeout: Duration) -> (bool, bool) {
    let mut fds = [
        libc::pollfd {
            fd: a,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // Rounded up: waking a millisecond early would spin until due.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: `fds` is a valid array of two pollfd for the call's duration.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if n <= 0 {
        return (false, false);
    }
    (fds[0].revents != 0, fds[1].revents != 0)
}
