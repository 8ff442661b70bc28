// The SDK's recovery paths against a server in memory (fake-server.ts):
// reconnect with jittered backoff, the outbox's retry with the same
// client_msg_id, dedup of resent pushes, gap-fill from a persisted cursor.

import { afterEach, describe, expect, it, vi } from "vitest";
import { backoffDelay } from "../src/sdk/backoff.js";
import { ImClient } from "../src/sdk/client.js";
import { MemoryKeyValue, type KeyValue } from "../src/sdk/store.js";
import { FakeServer } from "./fake-server.js";

function client(server: FakeServer, uid: number, kv: KeyValue = new MemoryKeyValue()) {
  return new ImClient({
    connect: server.connect,
    uid,
    token: `token-${uid}`,
    deviceId: `device-${uid}`,
    kv,
    backoff: { baseMs: 100, maxMs: 1_000 },
  });
}

/** Waits until `probe` holds, letting timers and microtasks run. */
async function until(what: string, probe: () => boolean, ms = 2_000) {
  const deadline = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

const seqs = (c: ImClient, peer: number) => c.messages(peer).map((m) => m.seq);

afterEach(() => {
  vi.restoreAllMocks();
  vi.useRealTimers();
});

describe("reconnect", () => {
  it("waits a full-jitter delay under a cap that doubles up to the maximum", () => {
    const policy = { baseMs: 100, maxMs: 1_000 };
    expect([0, 1, 2, 3, 4, 9].map((n) => backoffDelay(policy, n, () => 0.999))).toEqual([99, 199, 399, 799, 999, 999]);
    expect(backoffDelay(policy, 3, () => 0)).toBe(0);
    const spread = new Set(Array.from({ length: 50 }, () => backoffDelay(policy, 3)));
    expect(spread.size).toBeGreaterThan(10); // jittered, not a fixed delay
  });

  it("retries a refused connection after the backoff delays, then logs in", async () => {
    vi.useFakeTimers();
    vi.spyOn(Math, "random").mockReturnValue(0.5);
    const server = new FakeServer();
    server.refuseConnections = 3;
    const alice = client(server, 1);
    alice.start();
    // Half of each cap (random is 0.5): 50, 100, 200 ms after each refusal.
    const connectsAt = async (ms: number) => {
      await vi.advanceTimersByTimeAsync(ms);
      return server.connects;
    };
    expect(await connectsAt(0)).toBe(1);
    expect(await connectsAt(49)).toBe(1);
    expect(await connectsAt(1)).toBe(2);
    expect(await connectsAt(99)).toBe(2);
    expect(await connectsAt(1)).toBe(3);
    expect(await connectsAt(199)).toBe(3);
    expect(await connectsAt(1)).toBe(4);
    await vi.advanceTimersByTimeAsync(10);
    expect(alice.state).toBe("online");
    alice.stop();
  });
});

describe("outbox", () => {
  it("resends with the same client_msg_id after a lost answer, and the message is held once", async () => {
    const server = new FakeServer();
    const alice = client(server, 1);
    alice.start();
    await until("online", () => alice.state === "online");
    server.dropNextSendAnswer = true;
    const id = alice.send(2, "hello");
    await until("the retry answered", () => alice.outbox().length === 0 && alice.state === "online");
    expect(server.sendsSeen).toEqual([id, id]);
    expect(server.history(1, 2).length).toBe(1);
    expect(alice.messages(2).map((m) => [m.seq, m.text, m.clientMsgId])).toEqual([[1, "hello", id]]);
    alice.stop();
  });

  it("keeps sends made offline, in order, across a restart of the client", async () => {
    const server = new FakeServer();
    const kv = new MemoryKeyValue();
    const offline = client(server, 1, kv);
    offline.send(2, "first");
    offline.send(2, "second");
    expect(offline.outbox().length).toBe(2);
    // A new page load: the same store.
    const alice = client(server, 1, kv);
    alice.start();
    await until("sent", () => alice.outbox().length === 0);
    expect(server.history(1, 2).map((m) => new TextDecoder().decode(m.content))).toEqual(["first", "second"]);
    expect(alice.messages(2).map((m) => m.text)).toEqual(["first", "second"]);
    alice.stop();
  });
});

/** Stores messages from uid 1 to `uid` whose pushes never reach its
 * session (still connected); returns that session. */
function storeUnpushed(server: FakeServer, uid: number, ids: string[]) {
  const session = server.sessionOf(uid)!;
  server.sessions = server.sessions.filter((s) => s !== session);
  for (const id of ids) server.store(1, uid, id, id);
  server.sessions.push(session);
  return session;
}

describe("pushes", () => {
  it("acks every push, holds a resent one once", async () => {
    const server = new FakeServer();
    const bob = client(server, 2);
    bob.start();
    await until("online", () => bob.state === "online");
    const message = server.store(1, 2, "m1", "hi");
    await until("pushed", () => bob.messages(1).length === 1);
    server.push(server.sessionOf(2)!, message); // the server's resend after a lost ack
    await until("both acked", () => server.acks.length === 2);
    expect(server.acks).toEqual([message.msgId, message.msgId]);
    expect(seqs(bob, 1)).toEqual([1]);
    expect(bob.conversations()[0]).toMatchObject({ peerUid: 1, lastSeq: 1, unread: 1 });
    bob.stop();
  });

  it("pulls the gap when a push skips seqs", async () => {
    const server = new FakeServer();
    const bob = client(server, 2);
    server.store(1, 2, "m1", "one");
    bob.start();
    await until("synced", () => seqs(bob, 1).length === 1);
    // Two stored without a push reaching bob, then one pushed.
    storeUnpushed(server, 2, ["m2", "m3"]);
    server.store(1, 2, "m4", "four");
    await until("filled", () => seqs(bob, 1).length === 4);
    expect(seqs(bob, 1)).toEqual([1, 2, 3, 4]);
    bob.stop();
  });

  it("syncs when told to, fetching what no push brought", async () => {
    const server = new FakeServer();
    const bob = client(server, 2);
    server.store(1, 2, "m1", "one");
    bob.start();
    await until("synced", () => seqs(bob, 1).length === 1);
    // Stored while the logic tier behind bob's gateway was replaced: its
    // pushes were lost, and the connection stayed up.
    const session = storeUnpushed(server, 2, ["m2", "m3"]);
    expect(seqs(bob, 1)).toEqual([1]);
    server.hint(session);
    await until("synced after the hint", () => seqs(bob, 1).length === 3);
    expect(seqs(bob, 1)).toEqual([1, 2, 3]);
    bob.stop();
  });
});

describe("sync", () => {
  it("gap-fills from the persisted cursor after a restart, each message once", async () => {
    const server = new FakeServer();
    const kv = new MemoryKeyValue();
    for (let i = 1; i <= 3; i++) server.store(1, 2, `a${i}`, `m${i}`);
    const first = client(server, 2, kv);
    first.start();
    await until("synced", () => seqs(first, 1).length === 3);
    const cursor = first.store.cursor;
    expect(cursor).toBeGreaterThan(0n);
    first.stop();
    // While the page is closed.
    for (let i = 4; i <= 6; i++) server.store(1, 2, `a${i}`, `m${i}`);
    const again = client(server, 2, kv);
    expect(seqs(again, 1)).toEqual([1, 2, 3]);
    again.start();
    await until("caught up", () => seqs(again, 1).length === 6);
    expect(seqs(again, 1)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(again.messages(1).map((m) => m.text)).toEqual(["m1", "m2", "m3", "m4", "m5", "m6"]);
    expect(again.store.cursor).toBeGreaterThan(cursor);
    expect(again.conversations()[0]).toMatchObject({ peerUid: 1, lastSeq: 6, unread: 6 });
    again.stop();
  });

  it("a read on another device lowers the unread count; a peer's read is a receipt", async () => {
    const server = new FakeServer();
    const alice = client(server, 1);
    const bob = client(server, 2);
    alice.start();
    bob.start();
    await until("online", () => alice.state === "online" && bob.state === "online");
    alice.send(2, "x");
    await until("bob has it", () => bob.conversations()[0]?.unread === 1);
    await bob.markRead(1, 1);
    expect(bob.conversations()[0].unread).toBe(0);
    alice.stop();
    bob.stop();
  });

  it("stops for good on a refused token", async () => {
    const server = new FakeServer();
    const mallory = new ImClient({
      connect: server.connect,
      uid: 9,
      token: "forged",
      deviceId: "d",
      kv: new MemoryKeyValue(),
    });
    mallory.start();
    await until("refused", () => mallory.state === "auth-failed");
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(server.connects).toBe(1);
  });
});
