// How the client reaches the server. The SDK talks to a Transport so that
// tests can stand a fake server in for the network; in a browser it is a
// WebSocket.

export interface Transport {
  /** Sends one frame's bytes. */
  send(bytes: Uint8Array): void;
  close(): void;
}

export interface TransportEvents {
  open(): void;
  message(bytes: Uint8Array): void;
  /** The connection is gone (or never came up). Called once. */
  close(reason: string): void;
}

/** Opens a connection; events arrive on `events`. */
export type Connect = (events: TransportEvents) => Transport;

/** A Connect over the browser's WebSocket, to `url` (ws:// or wss://). */
export function webSocketConnect(url: string): Connect {
  return (events) => {
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    let closed = false;
    const gone = (reason: string) => {
      if (!closed) {
        closed = true;
        events.close(reason);
      }
    };
    socket.onopen = () => events.open();
    socket.onmessage = (e) => {
      if (e.data instanceof ArrayBuffer) events.message(new Uint8Array(e.data));
    };
    socket.onerror = () => gone("connection error");
    socket.onclose = (e) => gone(`closed (${e.code}${e.reason ? ": " + e.reason : ""})`);
    return {
      send: (bytes) => socket.send(bytes),
      close: () => {
        socket.close();
        gone("closed by the client");
      },
    };
  };
}
