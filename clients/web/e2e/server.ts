// A real im-server for the browser tests: its own data dir and ports, a
// WebSocket listener for the page, the business API for minting tokens.

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const API_KEY = "e2e-api-key-0123456789abcdef";

async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? ok(address.port) : fail(new Error("no port"))));
    });
  });
}

export class ImServer {
  private constructor(
    private readonly process: ChildProcess,
    private readonly dir: string,
    readonly wsUrl: string,
    private readonly apiUrl: string,
    readonly log: () => string,
  ) {}

  static async start(): Promise<ImServer> {
    const bin = process.env.IM_SERVER_BIN ?? fileURLToPath(new URL("../../../target/debug/im-server", import.meta.url));
    if (!existsSync(bin)) throw new Error(`${bin} not found: build it (cargo build -p im-server) or set IM_SERVER_BIN`);
    const dir = mkdtempSync(join(tmpdir(), "im-e2e-"));
    const [port, ws, api] = [await freePort(), await freePort(), await freePort()];
    writeFileSync(
      join(dir, "im.toml"),
      `[gateway]\nlisten = "127.0.0.1:${port}"\n` +
        `[gateway.websocket]\nlisten = "127.0.0.1:${ws}"\n` +
        `[admin]\nlisten = ""\n` +
        `[api]\nlisten = "127.0.0.1:${api}"\nkeys = ["e2e:${API_KEY}"]\n` +
        `[storage]\ndata_dir = "${dir}"\n`,
    );
    let output = "";
    const child = spawn(bin, ["--config", join(dir, "im.toml")], { env: { ...process.env, RUST_LOG: "info" } });
    child.stdout?.on("data", (d) => (output += d));
    child.stderr?.on("data", (d) => (output += d));
    const server = new ImServer(child, dir, `ws://127.0.0.1:${ws}/im`, `http://127.0.0.1:${api}`, () => output);
    for (let i = 0; ; i++) {
      try {
        const r = await fetch(`${server.apiUrl}/v1/openapi.json`);
        if (r.ok) break;
      } catch {
        /* not up yet */
      }
      if (i > 100) throw new Error(`im-server did not start:\n${output}`);
      await new Promise((ok) => setTimeout(ok, 100));
    }
    return server;
  }

  /** A login token for `uid`, from the business API. */
  async token(uid: number): Promise<string> {
    const r = await fetch(`${this.apiUrl}/v1/tokens`, {
      method: "POST",
      headers: { Authorization: `Bearer ${API_KEY}`, "Content-Type": "application/json" },
      body: JSON.stringify({ uid, ttl_secs: 3600 }),
    });
    if (!r.ok) throw new Error(`token: ${r.status} ${await r.text()}`);
    return ((await r.json()) as { token: string }).token;
  }

  /** One conversation's history as the API shows it. */
  async history(uid: number, peer: number): Promise<{ seq: number; text: string }[]> {
    const r = await fetch(`${this.apiUrl}/v1/users/${uid}/conversations/${peer}/messages?limit=200`, {
      headers: { Authorization: `Bearer ${API_KEY}` },
    });
    return ((await r.json()) as { messages: { seq: number; text: string }[] }).messages;
  }

  stop() {
    this.process.kill("SIGKILL");
    rmSync(this.dir, { recursive: true, force: true });
  }
}
