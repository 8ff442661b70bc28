// The chat client: one connection at a time, logged in, kept alive, and
// brought back with jittered backoff; an outbox that retries every send
// with its client_msg_id until the server answers; pushes acked and
// deduplicated; sync from a persisted cursor with every gap pulled from
// history, so each message is held once, in seq order, whatever mix of
// pushes, syncs and history pages brought it (docs/protocol.md).

import { create } from "@bufbuild/protobuf";
import {
  type Conversation,
  ErrorCode,
  type Message,
  Platform,
  ProfileReqSchema,
  type Profile,
} from "../gen/im_pb.js";
import { type BackoffPolicy, DEFAULT_BACKOFF, backoffDelay } from "./backoff.js";
import { type Body, type BodyCase, type BodyOf, decodeFrame, encodeFrame } from "./frames.js";
import {
  type ChatMessage,
  ClientStore,
  type ConversationState,
  type KeyValue,
  type OutboxEntry,
} from "./store.js";
import type { Connect, Transport } from "./transport.js";

export type ConnectionState = "offline" | "connecting" | "online" | "kicked" | "auth-failed" | "stopped";

export interface ClientOptions {
  connect: Connect;
  uid: number;
  token: string;
  deviceId: string;
  platform?: Platform;
  kv: KeyValue;
  backoff?: BackoffPolicy;
  /** A request unanswered this long is taken as a dead connection. */
  requestTimeoutMs?: number;
  /** Messages kept per conversation (older ones are fetched again when scrolled to). */
  keepPerConversation?: number;
}

export interface ClientEvents {
  state: (state: ConnectionState, detail: string) => void;
  /** A conversation's messages changed. */
  messages: (peerUid: number) => void;
  /** The conversation list (unread counts, last messages, read positions) changed. */
  conversations: () => void;
  outbox: () => void;
}

/** An error the server answered with. */
export class ServerError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(`${ErrorCode[code] ?? code}: ${message}`);
  }
}

/** Refusals that retrying cannot fix: the send is marked failed. */
const PERMANENT = new Set([ErrorCode.INVALID_ARGUMENT, ErrorCode.CONTENT_REJECTED]);

const HISTORY_PAGE = 200;
const SYNC_PAGE = 100;

interface Pending {
  expect: BodyCase;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

type Listeners = { [K in keyof ClientEvents]: Set<ClientEvents[K]> };

export class ImClient {
  readonly store: ClientStore;
  state: ConnectionState = "offline";
  private transport?: Transport;
  private nextReqId = 1n;
  private pending = new Map<bigint, Pending>();
  private attempt = 0;
  private reconnectTimer?: ReturnType<typeof setTimeout>;
  private heartbeat?: ReturnType<typeof setInterval>;
  private lastSent = 0;
  private lastHeard = 0;
  private heartbeatMs = 30_000;
  private flushing = false;
  private filling = new Map<number, boolean>();
  private conversationMap: Map<number, ConversationState>;
  private readonly listeners: Listeners = {
    state: new Set(),
    messages: new Set(),
    conversations: new Set(),
    outbox: new Set(),
  };
  private readonly options: Required<Omit<ClientOptions, "platform">> & { platform: Platform };
  private readonly encoder = new TextEncoder();

  constructor(options: ClientOptions) {
    this.options = {
      platform: Platform.WEB,
      backoff: DEFAULT_BACKOFF,
      requestTimeoutMs: 10_000,
      keepPerConversation: 1_000,
      ...options,
    };
    this.store = new ClientStore(options.kv, options.uid);
    this.conversationMap = this.store.conversations();
  }

  get uid(): number {
    return this.options.uid;
  }

  on<K extends keyof ClientEvents>(event: K, listener: ClientEvents[K]): () => void {
    this.listeners[event].add(listener);
    return () => this.listeners[event].delete(listener);
  }

  private emit<K extends keyof ClientEvents>(event: K, ...args: Parameters<ClientEvents[K]>) {
    for (const listener of this.listeners[event]) {
      (listener as (...a: Parameters<ClientEvents[K]>) => void)(...args);
    }
  }

  private setState(state: ConnectionState, detail = "") {
    this.state = state;
    this.emit("state", state, detail);
  }

  // ---- connection ----

  /** Connects, and reconnects whenever the connection goes, until `stop`. */
  start() {
    if (this.state === "connecting" || this.state === "online") return;
    this.open();
  }

  stop() {
    clearTimeout(this.reconnectTimer);
    this.setState("stopped");
    this.transport?.close();
  }

  private open() {
    this.setState("connecting");
    let transport: Transport | undefined;
    let live = true;
    transport = this.options.connect({
      open: () => {
        if (live && transport) void this.login(transport);
      },
      message: (bytes) => {
        if (live) this.receive(bytes);
      },
      close: (reason) => {
        if (!live) return;
        live = false;
        this.closed(reason);
      },
    });
    this.transport = transport;
  }

  private closed(reason: string) {
    this.transport = undefined;
    clearInterval(this.heartbeat);
    for (const [, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.reject(new Error(`connection lost: ${reason}`));
    }
    this.pending.clear();
    if (this.state === "kicked" || this.state === "auth-failed" || this.state === "stopped") return;
    this.setState("offline", reason);
    const delay = backoffDelay(this.options.backoff, this.attempt++);
    this.reconnectTimer = setTimeout(() => this.open(), delay);
  }

  private async login(transport: Transport) {
    try {
      const resp = await this.request("loginReq", {
        case: "loginReq",
        value: {
          uid: BigInt(this.options.uid),
          token: this.options.token,
          deviceId: this.options.deviceId,
          platform: this.options.platform,
        },
      } as Body);
      this.attempt = 0;
      this.heartbeatMs = Math.max(1, resp.heartbeatSecs) * 1000;
      this.lastHeard = Date.now();
      this.heartbeat = setInterval(() => this.beat(), Math.min(this.heartbeatMs / 2, 5_000));
      this.setState("online");
      await this.sync();
      await this.flushOutbox();
    } catch (e) {
      if (e instanceof ServerError && e.code === ErrorCode.AUTH_FAILED) {
        this.setState("auth-failed", e.message);
      }
      transport.close();
    }
  }

  /** A ping when nothing was sent for a heartbeat; the connection dropped
   * when nothing was heard for two. */
  private beat() {
    const now = Date.now();
    if (now - this.lastHeard > 2 * this.heartbeatMs + 5_000) {
      this.transport?.close();
      return;
    }
    if (now - this.lastSent >= this.heartbeatMs) {
      this.request("ping", { case: "ping", value: {} } as Body).catch(() => {});
    }
  }

  private write(reqId: bigint, body: Body) {
    if (!this.transport) throw new Error("not connected");
    this.transport.send(encodeFrame(reqId, body));
    this.lastSent = Date.now();
  }

  /** Sends a request and waits for its answer, whose body must be `expect`'s
   * response (named by the request's case: "sendReq" answers "sendResp"). */
  request<C extends BodyCase>(
    requestCase: C,
    body: Body,
  ): Promise<BodyOf<ResponseOf<C>>> {
    const reqId = this.nextReqId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(reqId);
        reject(new Error(`${requestCase} unanswered`));
        this.transport?.close();
      }, this.options.requestTimeoutMs);
      this.pending.set(reqId, {
        expect: responseOf(requestCase),
        resolve: resolve as (v: unknown) => void,
        reject,
        timer,
      });
      try {
        this.write(reqId, body);
      } catch (e) {
        clearTimeout(timer);
        this.pending.delete(reqId);
        reject(e as Error);
      }
    });
  }

  private receive(bytes: Uint8Array) {
    this.lastHeard = Date.now();
    let frame;
    try {
      frame = decodeFrame(bytes);
    } catch {
      return;
    }
    if (frame.reqId !== 0n) {
      const pending = this.pending.get(frame.reqId);
      if (!pending) return;
      this.pending.delete(frame.reqId);
      clearTimeout(pending.timer);
      if (frame.body.case === "error") {
        pending.reject(new ServerError(frame.body.value.code, frame.body.value.message));
      } else if (frame.body.case === pending.expect) {
        pending.resolve(frame.body.value);
      } else {
        pending.reject(new Error(`expected ${pending.expect}, got ${frame.body.case}`));
      }
      return;
    }
    switch (frame.body.case) {
      case "push":
        if (frame.body.value.message) this.pushed(frame.body.value.message);
        break;
      case "readNotice": {
        const notice = frame.body.value;
        this.readNotice(Number(notice.readerUid), Number(notice.peerUid), Number(notice.seq));
        break;
      }
      case "syncHint":
        // The logic tier behind the gateway was replaced with this
        // connection up: pushes in flight were lost, and sends refused
        // UNAVAILABLE wait in the outbox. Do what a reconnect does.
        void this.sync()
          .then(() => this.flushOutbox())
          .catch(() => this.transport?.close());
        break;
      case "kick":
        this.setState("kicked", frame.body.value.reason);
        this.transport?.close();
        break;
      case "error":
        // A frame the server could not read: it closes the connection.
        break;
    }
  }

  // ---- messages ----

  private pushed(message: Message) {
    // Acked first: a duplicate (a resend) is acked too, then dropped.
    try {
      this.write(0n, { case: "pushAck", value: { msgId: message.msgId } } as Body);
    } catch {
      /* the connection went; the server resends to the next one */
    }
    const chat = toChat(message);
    const peer = this.peerOf(chat);
    this.noteMessage(peer, chat);
    void this.place(peer, chat);
  }

  /** The highest seq held of a conversation (0: none). */
  private highestHeld(peer: number): number {
    const held = this.store.messages(peer);
    return held.length ? held[held.length - 1].seq : 0;
  }

  /** Holds a message that follows what is held; one that skips seqs makes
   * the client pull the gap (which brings it too). */
  private async place(peer: number, message: ChatMessage): Promise<void> {
    if (message.seq <= this.highestHeld(peer) + 1) {
      this.merge(peer, [message]);
    } else {
      await this.fill(peer);
    }
  }

  private peerOf(message: ChatMessage): number {
    return message.fromUid === this.options.uid ? message.toUid : message.fromUid;
  }

  /** The conversation row follows a message seen. */
  private noteMessage(peer: number, message: ChatMessage) {
    const row = this.conversation(peer);
    if (message.seq > row.lastSeq) {
      row.lastSeq = message.seq;
      row.lastMessage = message;
      row.updatedMs = Math.max(row.updatedMs, message.serverTimeMs);
    }
    if (message.fromUid === this.options.uid) {
      // Sending marks one's own side read up to the message.
      row.readSeq = Math.max(row.readSeq, message.seq);
    }
    row.unread = Math.max(0, row.lastSeq - row.readSeq);
    this.saveConversations();
  }

  private conversation(peer: number): ConversationState {
    let row = this.conversationMap.get(peer);
    if (!row) {
      row = { peerUid: peer, lastSeq: 0, readSeq: 0, peerReadSeq: 0, unread: 0, updatedMs: 0 };
      this.conversationMap.set(peer, row);
    }
    return row;
  }

  private saveConversations() {
    this.store.saveConversations(this.conversationMap);
    this.emit("conversations");
  }

  /** Adds `incoming` (ascending, contiguous) to what is held, once each. */
  private merge(peer: number, incoming: ChatMessage[]) {
    if (incoming.length === 0) return;
    const bySeq = new Map(this.store.messages(peer).map((m) => [m.seq, m]));
    for (const m of incoming) bySeq.set(m.seq, m);
    let merged = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
    // Keep the newest contiguous run: a hole means a page is missing.
    let start = merged.length - 1;
    while (start > 0 && merged[start - 1].seq === merged[start].seq - 1) start--;
    merged = merged.slice(Math.max(start, merged.length - this.options.keepPerConversation));
    this.store.saveMessages(peer, merged);
    this.emit("messages", peer);
  }

  /** Pulls every message after the last one held (the latest page when none is). */
  private async fill(peer: number): Promise<void> {
    if (this.filling.get(peer) !== undefined) {
      this.filling.set(peer, true); // once more when the current pass ends
      return;
    }
    this.filling.set(peer, false);
    try {
      for (;;) {
        const after = this.highestHeld(peer);
        const page = await this.request("historyReq", {
          case: "historyReq",
          value: { peerUid: BigInt(peer), afterSeq: BigInt(after), beforeSeq: 0n, limit: HISTORY_PAGE },
        } as Body);
        const messages = page.messages.map(toChat);
        this.merge(peer, messages);
        for (const m of messages) this.noteMessage(peer, m);
        const again = this.filling.get(peer) === true;
        this.filling.set(peer, false);
        if (after === 0 || (!page.more && !again)) break;
      }
    } finally {
      this.filling.delete(peer);
    }
  }

  /** Sync from the persisted cursor; each conversation's gap pulled before
   * the cursor that covers it is kept. */
  private async sync() {
    for (;;) {
      const resp = await this.request("syncReq", {
        case: "syncReq",
        value: { cursor: this.store.cursor, limit: SYNC_PAGE },
      } as Body);
      for (const conversation of resp.conversations) {
        await this.synced(conversation);
      }
      this.store.cursor = resp.cursor;
      if (!resp.more) break;
    }
  }

  private async synced(c: Conversation) {
    const peer = Number(c.peerUid);
    if (c.deleted) {
      this.conversationMap.delete(peer);
      this.store.forget(peer);
      this.saveConversations();
      this.emit("messages", peer);
      return;
    }
    const row = this.conversation(peer);
    row.lastSeq = Math.max(row.lastSeq, Number(c.lastSeq));
    row.readSeq = Math.max(row.readSeq, Number(c.readSeq));
    row.peerReadSeq = Math.max(row.peerReadSeq, Number(c.peerReadSeq));
    row.unread = Math.max(0, row.lastSeq - row.readSeq);
    row.updatedMs = Math.max(row.updatedMs, Number(c.updatedMs));
    if (c.lastMessage) row.lastMessage = toChat(c.lastMessage);
    this.saveConversations();
    if (this.highestHeld(peer) < row.lastSeq) await this.fill(peer);
  }

  private readNotice(reader: number, peer: number, seq: number) {
    if (reader === this.options.uid) {
      // Read on another of my devices.
      const row = this.conversation(peer);
      row.readSeq = Math.max(row.readSeq, seq);
      row.unread = Math.max(0, row.lastSeq - row.readSeq);
    } else {
      // The peer read my messages up to seq: a receipt.
      const row = this.conversation(reader);
      row.peerReadSeq = Math.max(row.peerReadSeq, seq);
    }
    this.saveConversations();
  }

  // ---- what the app calls ----

  /** Queues a text message; it is sent (now if online) and retried with the
   * same client_msg_id until the server answers. Returns that id. */
  send(toUid: number, text: string, contentType = 0): string {
    const entry: OutboxEntry = {
      clientMsgId: newClientMsgId(),
      toUid,
      contentType,
      text,
      createdMs: Date.now(),
    };
    this.store.outbox = [...this.store.outbox, entry];
    this.emit("outbox");
    void this.flushOutbox();
    return entry.clientMsgId;
  }

  /** Sends what waits in the outbox, in order, one at a time. */
  async flushOutbox(): Promise<void> {
    if (this.flushing || this.state !== "online") return;
    this.flushing = true;
    try {
      for (;;) {
        const entry = this.store.outbox.find((e) => !e.failed);
        if (!entry || this.state !== "online") return;
        try {
          const resp = await this.request("sendReq", {
            case: "sendReq",
            value: {
              toUid: BigInt(entry.toUid),
              clientMsgId: entry.clientMsgId,
              contentType: entry.contentType,
              content: this.encoder.encode(entry.text),
            },
          } as Body);
          const message: ChatMessage = {
            msgId: resp.msgId.toString(),
            fromUid: this.options.uid,
            toUid: entry.toUid,
            seq: Number(resp.seq),
            clientMsgId: entry.clientMsgId,
            contentType: entry.contentType,
            text: entry.text,
            serverTimeMs: Number(resp.serverTimeMs),
          };
          this.removeFromOutbox(entry.clientMsgId);
          this.noteMessage(entry.toUid, message);
          await this.place(entry.toUid, message);
        } catch (e) {
          if (e instanceof ServerError && PERMANENT.has(e.code)) {
            this.store.outbox = this.store.outbox.map((o) =>
              o.clientMsgId === entry.clientMsgId ? { ...o, failed: e.message } : o,
            );
            this.emit("outbox");
            continue;
          }
          // UNAVAILABLE, RATE_LIMITED, a lost connection: kept, resent
          // with the same client_msg_id after a pause or a reconnect.
          if (e instanceof ServerError) {
            setTimeout(() => void this.flushOutbox(), backoffDelay(this.options.backoff, 2));
          }
          return;
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  private removeFromOutbox(clientMsgId: string) {
    this.store.outbox = this.store.outbox.filter((e) => e.clientMsgId !== clientMsgId);
    this.emit("outbox");
  }

  /** Sends not yet answered (and those refused for good), oldest first. */
  outbox(): OutboxEntry[] {
    return this.store.outbox;
  }

  /** Drops a send the server refused for good. */
  discard(clientMsgId: string) {
    this.removeFromOutbox(clientMsgId);
  }

  /** Conversations, latest first. */
  conversations(): ConversationState[] {
    return [...this.conversationMap.values()].sort(
      (a, b) => b.updatedMs - a.updatedMs || b.lastSeq - a.lastSeq,
    );
  }

  totalUnread(): number {
    let total = 0;
    for (const c of this.conversationMap.values()) total += c.unread;
    return total;
  }

  /** A conversation's messages held, ascending by seq. */
  messages(peer: number): ChatMessage[] {
    return this.store.messages(peer);
  }

  /** Fetches the page before the oldest message held; false when there is none. */
  async loadOlder(peer: number, limit = 50): Promise<boolean> {
    const held = this.store.messages(peer);
    if (held.length === 0) {
      await this.fill(peer);
      return this.store.messages(peer).length > 0;
    }
    if (held[0].seq <= 1) return false;
    const page = await this.request("historyReq", {
      case: "historyReq",
      value: { peerUid: BigInt(peer), afterSeq: 0n, beforeSeq: BigInt(held[0].seq), limit },
    } as Body);
    const older = page.messages.map(toChat);
    const all = [...older, ...this.store.messages(peer)];
    const bySeq = new Map(all.map((m) => [m.seq, m]));
    const merged = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
    this.store.saveMessages(peer, merged);
    this.emit("messages", peer);
    return page.more;
  }

  /** Marks a conversation read up to `seq` (the peer gets a receipt). */
  async markRead(peer: number, seq: number): Promise<void> {
    const row = this.conversation(peer);
    if (seq <= row.readSeq) return;
    row.readSeq = seq;
    row.unread = Math.max(0, row.lastSeq - row.readSeq);
    this.saveConversations();
    if (this.state !== "online") return;
    await this.request("readReq", {
      case: "readReq",
      value: { peerUid: BigInt(peer), seq: BigInt(seq) },
    } as Body);
  }

  async profiles(uids: number[]): Promise<Profile[]> {
    const resp = await this.request("profileReq", {
      case: "profileReq",
      value: create(ProfileReqSchema, { uids: uids.map(BigInt) }),
    } as Body);
    return resp.profiles;
  }

  async setProfile(nickname: string, avatarUrl: string): Promise<void> {
    await this.request("setProfileReq", {
      case: "setProfileReq",
      value: { nickname, avatarUrl },
    } as Body);
  }
}

/** Each request's response case. */
const RESPONSES = {
  loginReq: "loginResp",
  ping: "pong",
  sendReq: "sendResp",
  syncReq: "syncResp",
  historyReq: "historyResp",
  readReq: "readResp",
  conversationsReq: "conversationsResp",
  deleteConversationReq: "deleteConversationResp",
  profileReq: "profileResp",
  setProfileReq: "setProfileResp",
} as const;

type ResponseOf<C extends BodyCase> = C extends keyof typeof RESPONSES ? (typeof RESPONSES)[C] : never;

function responseOf(requestCase: BodyCase): BodyCase {
  const response = (RESPONSES as Record<string, BodyCase>)[requestCase];
  if (!response) throw new Error(`${requestCase} is not a request`);
  return response;
}

const decoder = new TextDecoder("utf-8", { fatal: true });

export function toChat(m: Message): ChatMessage {
  let text: string | undefined;
  let base64: string | undefined;
  try {
    text = decoder.decode(m.content);
  } catch {
    base64 = btoa(String.fromCharCode(...m.content));
  }
  return {
    msgId: m.msgId.toString(),
    fromUid: Number(m.fromUid),
    toUid: Number(m.toUid),
    seq: Number(m.seq),
    clientMsgId: m.clientMsgId,
    contentType: m.contentType,
    text,
    base64,
    serverTimeMs: Number(m.serverTimeMs),
  };
}

/** A client_msg_id: random, 32 hex digits. */
export function newClientMsgId(): string {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
