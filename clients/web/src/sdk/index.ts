// The im browser SDK: see client.ts for what it guarantees.
export { ImClient, ServerError, toChat, newClientMsgId } from "./client.js";
export type { ClientOptions, ClientEvents, ConnectionState } from "./client.js";
export { webSocketConnect } from "./transport.js";
export type { Connect, Transport, TransportEvents } from "./transport.js";
export { MemoryKeyValue, localStorageKeyValue, ClientStore } from "./store.js";
export type { KeyValue, ChatMessage, ConversationState, OutboxEntry } from "./store.js";
export { backoffDelay, DEFAULT_BACKOFF } from "./backoff.js";
export type { BackoffPolicy } from "./backoff.js";
export { ErrorCode, Platform } from "../gen/im_pb.js";
