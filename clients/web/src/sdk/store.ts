// What the client keeps across page loads: the sync cursor, the outbox,
// the conversations and their messages. A key-value interface, so a test
// can use memory and a page localStorage.

export interface KeyValue {
  get(key: string): string | null;
  set(key: string, value: string): void;
  remove(key: string): void;
}

export class MemoryKeyValue implements KeyValue {
  readonly map = new Map<string, string>();
  get(key: string) {
    return this.map.get(key) ?? null;
  }
  set(key: string, value: string) {
    this.map.set(key, value);
  }
  remove(key: string) {
    this.map.delete(key);
  }
}

/** The browser's localStorage. */
export const localStorageKeyValue: KeyValue = {
  get: (key) => localStorage.getItem(key),
  set: (key, value) => localStorage.setItem(key, value),
  remove: (key) => localStorage.removeItem(key),
};

/** A message as the SDK keeps it. uids and seqs are numbers (below 2^53). */
export interface ChatMessage {
  msgId: string;
  fromUid: number;
  toUid: number;
  seq: number;
  clientMsgId: string;
  contentType: number;
  /** The content as text when it is UTF-8, else base64 in `base64`. */
  text?: string;
  base64?: string;
  serverTimeMs: number;
}

export interface ConversationState {
  peerUid: number;
  lastSeq: number;
  readSeq: number;
  peerReadSeq: number;
  unread: number;
  updatedMs: number;
  lastMessage?: ChatMessage;
}

/** A send not yet answered: kept until its SendResp, retried with the same id. */
export interface OutboxEntry {
  clientMsgId: string;
  toUid: number;
  contentType: number;
  text: string;
  createdMs: number;
  /** Set when the server refused it for good (CONTENT_REJECTED, INVALID_ARGUMENT). */
  failed?: string;
}

/** One user's state in a KeyValue, under keys prefixed `im:<uid>:`. */
export class ClientStore {
  constructor(
    private readonly kv: KeyValue,
    private readonly uid: number,
  ) {}

  private key(name: string) {
    return `im:${this.uid}:${name}`;
  }

  private read<T>(name: string, fallback: T): T {
    const text = this.kv.get(this.key(name));
    if (text === null) return fallback;
    try {
      return JSON.parse(text) as T;
    } catch {
      return fallback;
    }
  }

  private write(name: string, value: unknown) {
    this.kv.set(this.key(name), JSON.stringify(value));
  }

  get cursor(): bigint {
    return BigInt(this.read<string>("cursor", "0"));
  }
  set cursor(cursor: bigint) {
    this.write("cursor", cursor.toString());
  }

  get outbox(): OutboxEntry[] {
    return this.read<OutboxEntry[]>("outbox", []);
  }
  set outbox(entries: OutboxEntry[]) {
    this.write("outbox", entries);
  }

  conversations(): Map<number, ConversationState> {
    const list = this.read<ConversationState[]>("conversations", []);
    return new Map(list.map((c) => [c.peerUid, c]));
  }
  saveConversations(conversations: Map<number, ConversationState>) {
    this.write("conversations", [...conversations.values()]);
  }

  /** A conversation's messages held here, ascending by seq. */
  messages(peer: number): ChatMessage[] {
    return this.read<ChatMessage[]>(`messages:${peer}`, []);
  }
  saveMessages(peer: number, messages: ChatMessage[]) {
    this.write(`messages:${peer}`, messages);
  }
  forget(peer: number) {
    this.kv.remove(this.key(`messages:${peer}`));
  }
}
