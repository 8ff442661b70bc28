"""The SDK through its Python binding (UniFFI), against a running server.

Run by sdk-ffi/tests/python.rs, which starts the server, generates the
binding next to the built library and sets IM_BINDINGS, IM_ADDR,
IM_DEAD_ADDR, IM_STORE_DIR, IM_TOKEN_1 and IM_TOKEN_2.
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.environ["IM_BINDINGS"])
import im_sdk  # noqa: E402

ADDR = os.environ["IM_ADDR"]
DEAD = os.environ["IM_DEAD_ADDR"]
STORE = os.environ["IM_STORE_DIR"]
TOKENS = {1: os.environ["IM_TOKEN_1"], 2: os.environ["IM_TOKEN_2"]}


class Recorder(im_sdk.ChatListener):
    """Everything the SDK told us, from its thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = []
        self.sent = {}
        self.receipts = []
        self.states = []
        self.totals = []

    def on_messages(self, messages):
        with self.lock:
            self.messages.extend(messages)

    def on_send_state(self, client_msg_id, state):
        with self.lock:
            self.sent[client_msg_id] = state

    def on_conversation(self, conversation):
        pass

    def on_total_unread(self, total):
        with self.lock:
            self.totals.append(total)

    def on_read_receipt(self, peer_uid, seq):
        with self.lock:
            self.receipts.append((peer_uid, seq))

    def on_connection(self, state):
        with self.lock:
            self.states.append(state)

    def on_kicked(self, reason):
        pass

    def on_token_expired(self):
        pass


def eventually(what, probe, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.05)


def client(uid, addr, name, recorder):
    config = im_sdk.default_config([addr], uid, TOKENS[uid], "py-phone", f"{STORE}/{name}.db")
    config.reconnect_first_ms = 100
    config.reconnect_max_ms = 300
    return im_sdk.ChatClient(config, recorder)


def main():
    # 1. Alice writes while the server cannot be reached: the sends wait,
    #    durable, in the outbox, and the SDK says it is waiting to retry.
    offline = Recorder()
    alice = client(1, DEAD, "alice", offline)
    ids = [alice.send(2, 1, f"offline {i}".encode()) for i in range(5)]
    assert [o.client_msg_id for o in alice.unsent()] == ids
    assert all(isinstance(o.state, im_sdk.SendState.PENDING) for o in alice.unsent())
    eventually("waiting to reconnect", lambda: any(
        isinstance(s, im_sdk.ConnectionState.WAITING) for s in offline.states))
    alice.close()
    try:
        alice.send(2, 1, b"after close")
        raise AssertionError("a closed client sent")
    except im_sdk.ChatError.Closed:
        pass

    # 2. The app restarts on the same store, the server reachable: the
    #    outbox goes first, in order, then what is sent now.
    heard_a, heard_b = Recorder(), Recorder()
    alice = client(1, ADDR, "alice", heard_a)
    bob = client(2, ADDR, "bob", heard_b)
    ids += [alice.send(2, 1, f"online {i}".encode()) for i in range(45)]
    eventually("bob has all 50", lambda: len(heard_b.messages) >= 50)
    time.sleep(0.3)
    with heard_b.lock:
        got = [m.client_msg_id for m in heard_b.messages]
    assert got == ids, "each once, in the order sent"
    stored = bob.history(1, 0, 100)
    assert [m.seq for m in stored] == list(range(1, 51))
    assert stored[0].content == b"offline 0" and stored[0].peer_uid == 1
    eventually("alice's outbox empty", lambda: alice.unsent() == [])
    assert all(isinstance(heard_a.sent[i], im_sdk.SendState.SENT) for i in ids)
    assert isinstance(alice.state(), im_sdk.ConnectionState.ONLINE)

    # 3. Unread counts, reads, and the receipt Alice sees.
    assert bob.total_unread() == 50
    [conversation] = bob.conversations()
    assert (conversation.peer_uid, conversation.unread) == (1, 50)
    assert conversation.last_message.content == b"online 44"
    bob.mark_read(1, 50)
    assert bob.total_unread() == 0
    eventually("alice's receipt", lambda: (2, 50) in heard_a.receipts)
    eventually("seen in alice's store", lambda: alice.conversations()[0].peer_read_seq == 50)

    # 4. What the server refuses fails the send, not the outbox behind it;
    #    what no frame can carry is refused before it is queued.
    rejected = alice.send(2, 1, b"x" * 20_000)
    after = alice.send(2, 1, b"after the rejected one")
    eventually("rejected", lambda: isinstance(heard_a.sent.get(rejected), im_sdk.SendState.FAILED))
    assert heard_a.sent[rejected].code == 5  # INVALID_ARGUMENT: over the content limit
    eventually("the next one sent", lambda: isinstance(heard_a.sent.get(after), im_sdk.SendState.SENT))
    assert [o.client_msg_id for o in alice.unsent()] == [rejected]
    try:
        alice.send(2, 1, b"x" * 70_000)
        raise AssertionError("an oversized send was queued")
    except im_sdk.ChatError.TooLarge:
        pass

    # 5. Profiles go to the server.
    assert [p.uid for p in alice.profiles([2])] in ([2], [])

    alice.close()
    bob.close()
    print("python binding: 51 messages sent and received once in order, outbox across a restart, "
          "unread and receipts, a rejected send, an oversized one refused")


if __name__ == "__main__":
    main()
