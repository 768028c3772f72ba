// The chat widget in a DOM (happy-dom): what the visitor sees, and what it posts.
import { GlobalRegistrator } from "@happy-dom/global-registrator";
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { memoryStorage } from "../src/sender.js";
import { cannedReply, mount, statusText } from "../src/widget.js";
import { ENDPOINT, recorder, reply, accepted } from "./helpers.js";

before(() => GlobalRegistrator.register({ url: "https://shop.example/" }));
after(() => GlobalRegistrator.unregister());

/** @param {(() => boolean)} ready */
async function until(ready, what = "the condition", deadlineMs = 2000) {
  const end = Date.now() + deadlineMs;
  while (!ready()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function container() {
  const node = document.createElement("div");
  document.body.appendChild(node);
  return node;
}

test("a visitor's turn and the canned answer are shown and each posted as a snapshot", async () => {
  const { calls, fetch } = recorder();
  const chat = container();
  const widget = mount(chat, {
    endpoint: ENDPOINT,
    fetch,
    storage: memoryStorage(),
    sessionStore: memoryStorage(),
    replyDelayMs: 0,
    title: "Ventas",
  });
  const input = /** @type {HTMLInputElement} */ (chat.querySelector("input[name=message]"));
  input.value = "Hola, me llamo Laura";
  chat.querySelector("form")?.dispatchEvent(new Event("submit", { cancelable: true }));
  await until(() => calls.length === 2 && chat.dataset.state === "idle", "two snapshots");
  const bubbles = [...chat.querySelectorAll(".nxw-msg")].map((b) => [
    /** @type {HTMLElement} */ (b).dataset.role,
    b.textContent,
  ]);
  assert.deepEqual(bubbles, [
    ["user", "Hola, me llamo Laura"],
    ["assistant", "Encantada. ¿A qué email te enviamos la información?"],
  ]);
  assert.equal(chat.querySelector(".nxw-head")?.textContent, "Ventas");
  assert.deepEqual(
    calls.map((c) => c.body.messages.length),
    [1, 2],
  );
  assert.equal(calls[1].body.metadata.source, "nexus-widget");
  assert.equal(chat.dataset.sessionId, widget.sender.sessionId);
  assert.equal(chat.dataset.pending, "0");
  assert.equal(input.value, "");
});

test("the transcript survives a reload of the tab; the status line tells of retries", async () => {
  const sessionStore = memoryStorage();
  const storage = memoryStorage();
  const { fetch } = recorder((n) => (n === 1 ? reply(503, {}, { "Retry-After": "0" }) : accepted(n)));
  const first = mount(container(), { endpoint: ENDPOINT, fetch, storage, sessionStore, replyDelayMs: 0, baseDelayMs: 1 });
  await first.say("Hello, my name is Ann");
  await first.sender.idle();
  const again = container();
  const second = mount(again, { endpoint: ENDPOINT, fetch, storage, sessionStore });
  assert.equal(second.sender.sessionId, first.sender.sessionId);
  assert.equal(again.querySelectorAll(".nxw-msg").length, 2);
  assert.match(statusText({ state: "retrying", pending: 1, delayMs: 2500 }), /retrying in 3 s/);
});

test("cannedReply asks for a name, an email, then the need, in the visitor's language", () => {
  const user = (/** @type {string} */ content) => ({ role: /** @type {const} */ ("user"), content });
  const bot = (/** @type {string} */ content) => ({ role: /** @type {const} */ ("assistant"), content });
  const es = [user("Hola")];
  assert.match(cannedReply(es), /Cómo te llamas/);
  es.push(bot("Soy Sofía"), user("Me llamo Laura"));
  assert.match(cannedReply(es), /email/);
  es.push(user("laura@example.com"));
  assert.match(cannedReply(es), /producto/);
  es.push(user("Quiero el plan anual"));
  assert.match(cannedReply(es), /comercial/);
  assert.match(cannedReply([user("Hello there")]), /your name/);
  assert.match(cannedReply([user("Hello, my name is Ann")]), /Which email/);
});

test("without a global fetch the widget still mounts: turns are shown, the page stays, sends fail", async () => {
  const saved = globalThis.fetch;
  // @ts-ignore: a browser (or a page's own script) without fetch
  delete globalThis.fetch;
  try {
    const chat = container();
    const options = { endpoint: ENDPOINT, storage: memoryStorage(), sessionStore: memoryStorage() };
    const widget = mount(chat, { ...options, replyDelayMs: 0, maxAttempts: 1 });
    const input = /** @type {HTMLInputElement} */ (chat.querySelector("input[name=message]"));
    input.value = "Hola";
    const submit = new Event("submit", { cancelable: true });
    chat.querySelector("form")?.dispatchEvent(submit);
    assert.equal(submit.defaultPrevented, true, "a submit the widget leaves alone navigates the page");
    const result = await widget.say("Me llamo Laura");
    assert.deepEqual([result.status, result.status === "failed" && result.httpStatus], ["failed", 0]);
    await until(() => chat.querySelectorAll(".nxw-msg").length === 4, "the four turns shown");
  } finally {
    globalThis.fetch = saved;
  }
});

test("a sessionStorage that starts refusing writes (its quota full) still lets every turn be posted", async () => {
  const { calls, fetch } = recorder();
  const kept = memoryStorage();
  let full = false;
  const sessionStore = {
    getItem: (/** @type {string} */ key) => kept.getItem(key),
    removeItem: (/** @type {string} */ key) => kept.removeItem(key),
    setItem(/** @type {string} */ key, /** @type {string} */ value) {
      if (full) throw new DOMException("The quota has been exceeded.", "QuotaExceededError");
      kept.setItem(key, value);
    },
  };
  const widget = mount(container(), { endpoint: ENDPOINT, fetch, storage: memoryStorage(), sessionStore, replyDelayMs: 0 });
  full = true;
  await widget.say("Hello, my name is Ann");
  await widget.sender.idle();
  assert.deepEqual(
    calls.map((c) => c.body.messages.length),
    [1, 2],
  );
});

test("the status line still tells of a turn that could not be saved once the sender is idle", async () => {
  const refusal = { status: "error", error: "invalid_snapshot", message: "The snapshot does not match the schema." };
  const { fetch } = recorder((n) => (n === 1 ? reply(422, refusal) : accepted(n)));
  const chat = container();
  const widget = mount(chat, { endpoint: ENDPOINT, fetch, storage: memoryStorage(), sessionStore: memoryStorage(), replyDelayMs: 0 });
  const status = () => chat.querySelector(".nxw-status")?.textContent;
  widget.sender.send([{ role: "user", content: "x" }]);
  await widget.sender.idle();
  assert.equal(chat.dataset.state, "idle");
  assert.equal(status(), "Could not save the conversation.");
  await widget.say("Hello, my name is Ann");
  await widget.sender.idle();
  assert.equal(status(), "", "a later snapshot that is saved clears it");
});
