// Two people chat through the real server in real Chromium: one closes
// the page while the other sends, reopens it, and finds every message once,
// in order, with the right unread count; the sender sees "seen".

import { type Page, expect, test } from "@playwright/test";
import { ImServer } from "./server.js";

let server: ImServer;

test.beforeAll(async () => {
  server = await ImServer.start();
});

test.afterAll(async () => {
  server?.stop();
});

const ALICE = 101;
const BOB = 102;

async function openAs(page: Page, uid: number) {
  const token = await server.token(uid);
  const query = new URLSearchParams({ server: server.wsUrl, uid: String(uid), token });
  await page.goto(`/?${query}`);
  await expect(page.getByTestId("state")).toHaveAttribute("data-state", "online");
}

async function send(page: Page, text: string) {
  await page.getByTestId("composer").fill(text);
  await page.getByTestId("send").click();
}

/** The texts of the open conversation's messages. */
function texts(page: Page) {
  return page.locator("[data-testid=message] .text");
}

function conversationWith(page: Page, peer: number) {
  return page.locator(`[data-testid=conversation][data-peer="${peer}"]`);
}

test("a message sent while the reader's page is closed arrives once, in order, unread", async ({ browser }) => {
  const alice = await (await browser.newContext()).newPage();
  const bobContext = await browser.newContext();
  let bob = await bobContext.newPage();
  await openAs(alice, ALICE);
  await openAs(bob, BOB);

  // Alice opens a chat with Bob and says hello; Bob's list shows it unread.
  await alice.getByTestId("new-chat-uid").fill(String(BOB));
  await alice.getByTestId("new-chat-uid").press("Enter");
  await send(alice, "hello 1");
  await expect(conversationWith(bob, ALICE).getByTestId("unread")).toHaveText("1");
  await expect(conversationWith(bob, ALICE)).toContainText("hello 1");

  // Bob closes his page; Alice goes on.
  await bob.close();
  for (const text of ["hello 2", "hello 3", "hello 4"]) await send(alice, text);
  await expect(alice.getByTestId("message")).toHaveCount(4);
  expect((await server.history(ALICE, BOB)).map((m) => m.text)).toEqual(["hello 1", "hello 2", "hello 3", "hello 4"]);

  // Bob comes back (same browser profile: his cursor and messages were kept).
  bob = await bobContext.newPage();
  await openAs(bob, BOB);
  await expect(conversationWith(bob, ALICE).getByTestId("unread")).toHaveText("4");
  await expect(conversationWith(bob, ALICE)).toContainText("hello 4");
  await conversationWith(bob, ALICE).click();
  const messages = bob.getByTestId("message");
  await expect(texts(bob)).toHaveText(["hello 1", "hello 2", "hello 3", "hello 4"]);
  expect(await messages.evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.seq))).toEqual(["1", "2", "3", "4"]);

  // Opening the conversation read it: no badge for Bob, "seen" for Alice.
  await expect(conversationWith(bob, ALICE).getByTestId("unread")).toHaveCount(0);
  await expect(alice.getByTestId("seen")).toHaveCount(1);
  await expect(alice.getByTestId("message").last()).toContainText("seen");

  // Bob answers; Alice has it once.
  await send(bob, "hi alice");
  await expect(texts(alice)).toHaveText(["hello 1", "hello 2", "hello 3", "hello 4", "hi alice"]);

  await bob.screenshot({ path: "test-results/chat-bob.png" });
  await alice.screenshot({ path: "test-results/chat-alice.png" });
});
