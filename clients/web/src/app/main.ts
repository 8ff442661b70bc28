// The chat page: a small UI on the SDK. Log in with a uid and a token
// (or ?server=&uid=&token= in the address), see conversations with unread
// badges, read and scroll back through history, send, see "seen".

import {
  type ChatMessage,
  type ConnectionState,
  ImClient,
  localStorageKeyValue,
  newClientMsgId,
  webSocketConnect,
} from "../sdk/index.js";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const loginForm = $<HTMLFormElement>("login");
const chat = $("chat");
const list = $<HTMLUListElement>("conversations");
const messagesEl = $<HTMLOListElement>("messages");
const thread = $("thread");

interface Login {
  server: string;
  uid: number;
  token: string;
}

const SESSION_KEY = "im:login";
let client: ImClient | undefined;
let openPeer: number | undefined;
let loadingOlder = false;

function defaultServer(): string {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.hostname || "127.0.0.1"}:7001/im`;
}

/** The login from the address, else the one this tab used last. */
function savedLogin(): Login | undefined {
  const params = new URLSearchParams(location.search);
  const uid = Number(params.get("uid"));
  const token = params.get("token");
  if (uid > 0 && token) return { server: params.get("server") || defaultServer(), uid, token };
  const saved = sessionStorage.getItem(SESSION_KEY);
  return saved ? (JSON.parse(saved) as Login) : undefined;
}

/** This browser's device id for `uid`, kept across page loads. */
function deviceId(uid: number): string {
  const key = `im:device:${uid}`;
  let id = localStorage.getItem(key);
  if (!id) {
    id = `web-${newClientMsgId().slice(0, 12)}`;
    localStorage.setItem(key, id);
  }
  return id;
}

function start(login: Login) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(login));
  loginForm.hidden = true;
  chat.hidden = false;
  $("me").textContent = `uid ${login.uid}`;
  client = new ImClient({
    connect: webSocketConnect(login.server),
    uid: login.uid,
    token: login.token,
    deviceId: deviceId(login.uid),
    kv: localStorageKeyValue,
  });
  client.on("state", showState);
  client.on("conversations", () => {
    renderConversations();
    if (openPeer !== undefined) renderMessages(false);
    markOpenRead();
  });
  client.on("messages", (peer) => {
    if (peer === openPeer) renderMessages(true);
  });
  client.on("outbox", () => {
    if (openPeer !== undefined) renderMessages(true);
  });
  showState(client.state, "");
  renderConversations();
  client.start();
}

function showState(state: ConnectionState, detail: string) {
  const el = $("state");
  el.textContent = state + (detail && state !== "online" ? ` (${detail})` : "");
  el.className = `state ${state}`;
  el.dataset.state = state;
}

function text(m: ChatMessage): string {
  return m.text ?? `[${m.contentType}: binary]`;
}

function renderConversations() {
  if (!client) return;
  list.replaceChildren(
    ...client.conversations().map((c) => {
      const li = document.createElement("li");
      li.dataset.peer = String(c.peerUid);
      li.dataset.testid = "conversation";
      li.className = c.peerUid === openPeer ? "open" : "";
      const name = document.createElement("strong");
      name.textContent = `uid ${c.peerUid}`;
      const last = document.createElement("span");
      last.className = "last";
      last.textContent = c.lastMessage ? text(c.lastMessage) : "";
      li.append(name, last);
      if (c.unread > 0) {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.dataset.testid = "unread";
        badge.textContent = String(c.unread);
        li.append(badge);
      }
      li.onclick = () => open(c.peerUid);
      return li;
    }),
  );
}

function open(peer: number) {
  openPeer = peer;
  $("empty").hidden = true;
  thread.hidden = false;
  $("peer").textContent = `uid ${peer}`;
  renderConversations();
  renderMessages(true);
  markOpenRead();
  if (client && client.messages(peer).length === 0) void client.loadOlder(peer);
}

function markOpenRead() {
  if (!client || openPeer === undefined || document.visibilityState !== "visible") return;
  const row = client.conversations().find((c) => c.peerUid === openPeer);
  if (row && row.readSeq < row.lastSeq) client.markRead(openPeer, row.lastSeq).catch(() => {});
}

function renderMessages(scrollToEnd: boolean) {
  if (!client || openPeer === undefined) return;
  const peer = openPeer;
  const row = client.conversations().find((c) => c.peerUid === peer);
  const held = client.messages(peer);
  const mine = held.filter((m) => m.fromUid === client!.uid);
  const lastMine = mine[mine.length - 1];
  const items = held.map((m) => {
    const li = document.createElement("li");
    li.dataset.testid = "message";
    li.dataset.seq = String(m.seq);
    li.className = m.fromUid === client!.uid ? "mine" : "";
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text(m);
    li.append(body);
    if (m === lastMine && row && row.peerReadSeq >= m.seq) {
      const seen = document.createElement("span");
      seen.className = "meta";
      seen.dataset.testid = "seen";
      seen.textContent = "seen";
      li.append(seen);
    }
    return li;
  });
  for (const entry of client.outbox().filter((e) => e.toUid === peer)) {
    const li = document.createElement("li");
    li.className = `mine ${entry.failed ? "failed" : "pending"}`;
    li.textContent = entry.text;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = entry.failed ? `not sent: ${entry.failed}` : "sending…";
    li.append(meta);
    items.push(li);
  }
  const fromBottom = messagesEl.scrollHeight - messagesEl.scrollTop;
  messagesEl.replaceChildren(...items);
  messagesEl.scrollTop = scrollToEnd ? messagesEl.scrollHeight : messagesEl.scrollHeight - fromBottom;
}

// Infinite scroll: near the top, the page before the oldest message held.
messagesEl.addEventListener("scroll", async () => {
  if (!client || openPeer === undefined || loadingOlder || messagesEl.scrollTop > 40) return;
  loadingOlder = true;
  try {
    await client.loadOlder(openPeer);
    renderMessages(false);
  } catch {
    /* offline: tried again on the next scroll */
  } finally {
    loadingOlder = false;
  }
});

document.addEventListener("visibilitychange", markOpenRead);

$<HTMLFormElement>("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = (e.target as HTMLFormElement).elements.namedItem("text") as HTMLInputElement;
  if (!client || openPeer === undefined || !input.value.trim()) return;
  client.send(openPeer, input.value);
  input.value = "";
});

$<HTMLFormElement>("new-chat").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = (e.target as HTMLFormElement).elements.namedItem("peer") as HTMLInputElement;
  const peer = Number(input.value);
  if (Number.isSafeInteger(peer) && peer > 0 && peer !== client?.uid) {
    input.value = "";
    open(peer);
  }
});

loginForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const data = new FormData(loginForm);
  start({ server: String(data.get("server")), uid: Number(data.get("uid")), token: String(data.get("token")) });
});

$("logout").addEventListener("click", () => {
  client?.stop();
  sessionStorage.removeItem(SESSION_KEY);
  location.search = "";
});

const login = savedLogin();
if (login) {
  start(login);
} else {
  (loginForm.elements.namedItem("server") as HTMLInputElement).value = defaultServer();
  loginForm.hidden = false;
}
