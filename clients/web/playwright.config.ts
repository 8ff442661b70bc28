// Playwright drives Debian's Chromium (no browser download) against the
// built page (vite preview) and a real im-server that e2e/server.ts starts.
import { defineConfig } from "@playwright/test";

const PAGE_PORT = Number(process.env.IM_E2E_PAGE_PORT ?? 4173);

export default defineConfig({
  testDir: "e2e",
  timeout: 60_000,
  fullyParallel: false,
  workers: 1,
  reporter: [["list"]],
  outputDir: "test-results",
  use: {
    baseURL: `http://127.0.0.1:${PAGE_PORT}`,
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    },
  },
  webServer: {
    command: `npx vite preview --host 127.0.0.1 --port ${PAGE_PORT} --strictPort`,
    url: `http://127.0.0.1:${PAGE_PORT}`,
    reuseExistingServer: false,
    timeout: 30_000,
  },
});
