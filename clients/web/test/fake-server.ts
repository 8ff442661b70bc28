// A server in memory that speaks the protocol's frames to ImClients
// through their Transport: enough of the contract (login, sync, history,
// send with dedup, push and ack, read) to test the SDK's recovery paths,
// with switches to lose an answer or resend a push.

import { create } from "@bufbuild/protobuf";
import { ConversationSchema, ErrorCode, type Frame, type Message, MessageSchema } from "../src/gen/im_pb.js";
import { type Body, decodeFrame, encodeFrame } from "../src/sdk/frames.js";
import type { Connect, TransportEvents } from "../src/sdk/transport.js";

interface Row {
  lastSeq: number;
  readSeq: number;
  peerReadSeq: number;
  version: number;
  updatedMs: number;
}

interface Session {
  uid?: number;
  events: TransportEvents;
  open: boolean;
}

export class FakeServer {
  private messages = new Map<string, Message[]>();
  private rows = new Map<number, Map<number, Row>>();
  private version = 0;
  private nextMsgId = 1000n;
  private sent = new Map<string, Message>();
  sessions: Session[] = [];
  /** Every SendReq's client_msg_id, in arrival order. */
  sendsSeen: string[] = [];
  /** Every PushAck's msg_id. */
  acks: bigint[] = [];
  /** When set, the next SendReq is stored but its connection drops before the answer. */
  dropNextSendAnswer = false;
  /** Connections refused (closed before open) before one is let through. */
  refuseConnections = 0;
  connects = 0;

  connect: Connect = (events) => {
    this.connects++;
    const session: Session = { events, open: true };
    if (this.refuseConnections > 0) {
      this.refuseConnections--;
      queueMicrotask(() => events.close("refused"));
      return { send() {}, close() {} };
    }
    this.sessions.push(session);
    queueMicrotask(() => events.open());
    return {
      send: (bytes) => queueMicrotask(() => this.handle(session, decodeFrame(bytes))),
      close: () => this.drop(session),
    };
  };

  drop(session: Session) {
    if (!session.open) return;
    session.open = false;
    queueMicrotask(() => session.events.close("closed"));
  }

  private reply(session: Session, reqId: bigint, body: Body) {
    if (session.open) session.events.message(encodeFrame(reqId, body));
  }

  private pairKey(a: number, b: number) {
    return a < b ? `${a}-${b}` : `${b}-${a}`;
  }

  private row(owner: number, peer: number): Row {
    let rows = this.rows.get(owner);
    if (!rows) this.rows.set(owner, (rows = new Map()));
    let row = rows.get(peer);
    if (!row) rows.set(peer, (row = { lastSeq: 0, readSeq: 0, peerReadSeq: 0, version: 0, updatedMs: 0 }));
    return row;
  }

  /** Stores a message from `from` to `to` as the server would; pushes it to
   * online devices (not to `origin`). */
  store(from: number, to: number, clientMsgId: string, text: string, origin?: Session): Message {
    const key = `${from}:${clientMsgId}`;
    const earlier = this.sent.get(key);
    if (earlier) return earlier;
    const list = this.messages.get(this.pairKey(from, to)) ?? [];
    this.messages.set(this.pairKey(from, to), list);
    const message = create(MessageSchema, {
      msgId: this.nextMsgId++,
      fromUid: BigInt(from),
      toUid: BigInt(to),
      seq: BigInt(list.length + 1),
      clientMsgId,
      content: new TextEncoder().encode(text),
      serverTimeMs: BigInt(Date.now()),
    });
    list.push(message);
    this.sent.set(key, message);
    const seq = list.length;
    for (const [owner, peer] of [[from, to], [to, from]]) {
      const row = this.row(owner, peer);
      row.lastSeq = seq;
      if (owner === from) row.readSeq = seq;
      row.version = ++this.version;
      row.updatedMs = Number(message.serverTimeMs);
    }
    for (const s of this.sessions) {
      if (s.open && s !== origin && (s.uid === to || s.uid === from)) this.push(s, message);
    }
    return message;
  }

  push(session: Session, message: Message) {
    this.reply(session, 0n, { case: "push", value: { message } } as Body);
  }

  /** Tells `session` to sync, as a logic node that took over does. */
  hint(session: Session) {
    this.reply(session, 0n, { case: "syncHint", value: {} } as Body);
  }

  /** The online session of `uid`, for pushing by hand. */
  sessionOf(uid: number): Session | undefined {
    return this.sessions.find((s) => s.open && s.uid === uid);
  }

  history(a: number, b: number): Message[] {
    return this.messages.get(this.pairKey(a, b)) ?? [];
  }

  private handle(session: Session, frame: Frame) {
    if (!session.open) return;
    const { reqId, body } = frame;
    const fail = (code: ErrorCode, message: string) =>
      this.reply(session, reqId, { case: "error", value: { code, message } } as Body);
    switch (body.case) {
      case "loginReq":
        if (body.value.token !== `token-${body.value.uid}`) {
          fail(ErrorCode.AUTH_FAILED, "authentication failed");
          this.drop(session);
          return;
        }
        session.uid = Number(body.value.uid);
        this.reply(session, reqId, { case: "loginResp", value: { serverTimeMs: 0n, heartbeatSecs: 30 } } as Body);
        return;
      case "ping":
        this.reply(session, reqId, { case: "pong", value: { serverTimeMs: 0n } } as Body);
        return;
      case "pushAck":
        this.acks.push(body.value.msgId);
        return;
    }
    const uid = session.uid;
    if (uid === undefined) return fail(ErrorCode.NOT_LOGGED_IN, "log in first");
    switch (body.case) {
      case "sendReq": {
        this.sendsSeen.push(body.value.clientMsgId);
        const duplicate = this.sent.has(`${uid}:${body.value.clientMsgId}`);
        const text = new TextDecoder().decode(body.value.content);
        const m = this.store(uid, Number(body.value.toUid), body.value.clientMsgId, text, session);
        if (this.dropNextSendAnswer) {
          this.dropNextSendAnswer = false;
          this.drop(session);
          return;
        }
        this.reply(session, reqId, {
          case: "sendResp",
          value: { msgId: m.msgId, seq: m.seq, serverTimeMs: m.serverTimeMs, duplicate },
        } as Body);
        return;
      }
      case "syncReq": {
        const rows = [...(this.rows.get(uid) ?? new Map<number, Row>()).entries()]
          .filter(([, r]) => r.version > Number(body.value.cursor))
          .sort((a, b) => a[1].version - b[1].version);
        const conversations = rows.map(([peer, r]) => {
          const list = this.history(uid, peer);
          return create(ConversationSchema, {
            peerUid: BigInt(peer),
            lastSeq: BigInt(r.lastSeq),
            readSeq: BigInt(r.readSeq),
            unread: BigInt(r.lastSeq - r.readSeq),
            peerReadSeq: BigInt(this.row(peer, uid).readSeq),
            lastMessage: list[list.length - 1],
            updatedMs: BigInt(r.updatedMs),
          });
        });
        const cursor = rows.length ? BigInt(rows[rows.length - 1][1].version) : body.value.cursor;
        this.reply(session, reqId, { case: "syncResp", value: { conversations, cursor, more: false } } as Body);
        return;
      }
      case "historyReq": {
        const list = this.history(uid, Number(body.value.peerUid));
        const limit = body.value.limit || 50;
        const after = Number(body.value.afterSeq);
        const before = Number(body.value.beforeSeq);
        let page: Message[];
        let more: boolean;
        if (after > 0) {
          page = list.filter((m) => Number(m.seq) > after).slice(0, limit);
          more = list.filter((m) => Number(m.seq) > after).length > limit;
        } else {
          const below = list.filter((m) => before === 0 || Number(m.seq) < before);
          page = below.slice(-limit);
          more = below.length > limit;
        }
        this.reply(session, reqId, { case: "historyResp", value: { messages: page, more } } as Body);
        return;
      }
      case "readReq": {
        const peer = Number(body.value.peerUid);
        const row = this.row(uid, peer);
        row.readSeq = Math.min(row.lastSeq, Math.max(row.readSeq, Number(body.value.seq)));
        row.version = ++this.version;
        this.reply(session, reqId, {
          case: "readResp",
          value: { unread: BigInt(row.lastSeq - row.readSeq), totalUnread: 0n },
        } as Body);
        return;
      }
      default:
        fail(ErrorCode.BAD_FRAME, `${body.case} is not served here`);
    }
  }
}
