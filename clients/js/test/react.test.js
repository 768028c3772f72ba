// useNexusChat rendered by React (react-dom in happy-dom): state, results, ids, page hide.
import { GlobalRegistrator } from "@happy-dom/global-registrator";
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { StrictMode, act, createElement } from "react";
import { createRoot } from "react-dom/client";

import { memoryStorage } from "../src/sender.js";
import { useNexusChat } from "../src/react.js";
import { ENDPOINT, fakePage, gated, recorder, turn } from "./helpers.js";

before(() => {
  GlobalRegistrator.register({ url: "https://shop.example/" });
  /** @type {any} */ (globalThis).IS_REACT_ACT_ENVIRONMENT = true;
});
after(() => GlobalRegistrator.unregister());

/**
 * Render a component that uses the hook; `latest()` is what the hook returned last.
 * @param {import("../types/react.js").NexusChatOptions} options
 */
async function renderHook(options) {
  /** @type {import("../types/react.js").NexusChat[]} */
  const seen = [];
  function Probe() {
    seen.push(useNexusChat(options));
    return null;
  }
  const root = createRoot(document.createElement("div"));
  await act(async () => root.render(createElement(StrictMode, null, createElement(Probe))));
  return {
    latest: () => seen[seen.length - 1],
    unmount: () => act(async () => root.unmount()),
  };
}

const base = () => ({ endpoint: ENDPOINT, storage: memoryStorage(), sessionStore: memoryStorage() });

test("send posts the snapshot and the hook shows the result and the ids it used", async () => {
  const { calls, fetch } = recorder();
  const hook = await renderHook({ ...base(), fetch, sessionId: "chat-9", fingerprint: "visitor-3", window: null });
  assert.deepEqual([hook.latest().sessionId, hook.latest().fingerprint], ["chat-9", "visitor-3"]);
  /** @type {import("../types/index.js").SendResult | undefined} */
  let result;
  await act(async () => {
    result = await hook.latest().send(turn("Hola, soy Ana"), { page: "/pricing" });
  });
  assert.equal(result?.status, "sent");
  assert.deepEqual(hook.latest().lastResult, result);
  assert.deepEqual([hook.latest().state, hook.latest().pending], ["idle", 0]);
  assert.equal(calls.length, 1);
  assert.deepEqual(calls[0].body.metadata, { page: "/pricing", clientSeq: 1 });
  assert.deepEqual([calls[0].body.sessionId, calls[0].body.fingerprint], ["chat-9", "visitor-3"]);
  await hook.unmount();
});

test("without ids from the app, the hook exposes the ones the sender made and kept", async () => {
  const { fetch } = recorder();
  const options = { ...base(), fetch, window: null };
  const hook = await renderHook(options);
  const { sessionId, fingerprint } = hook.latest();
  assert.ok(sessionId && fingerprint);
  assert.equal(options.sessionStore.getItem("nexus:session"), sessionId);
  assert.equal(options.storage.getItem("nexus:fingerprint"), fingerprint);
  await hook.unmount();
});

test("the hook mirrors the sender's state while a snapshot is in flight", async () => {
  const { fetch, gates } = gated();
  const hook = await renderHook({ ...base(), fetch, window: null });
  /** @type {Promise<unknown> | undefined} */
  let sending;
  await act(async () => {
    sending = hook.latest().send(turn("1"));
  });
  assert.deepEqual([hook.latest().state, hook.latest().pending], ["sending", 1]);
  await act(async () => {
    gates[0]();
    await sending;
  });
  assert.deepEqual([hook.latest().state, hook.latest().pending], ["idle", 0]);
  await hook.unmount();
});

/** Render the hook on a page that can be hidden, and queue two snapshots (one in flight). */
async function twoQueued() {
  const { calls, fetch, gates } = gated();
  const { page, hide } = fakePage();
  const hook = await renderHook({ ...base(), fetch, window: page });
  await act(async () => {
    hook.latest().send(turn("1"));
    hook.latest().send(turn("2"));
  });
  assert.equal(calls.length, 1);
  return { calls, gates, hide, hook };
}

test("while mounted, the page's hiding posts the waiting snapshot at once", async () => {
  const { calls, gates, hide, hook } = await twoQueued();
  hide();
  await act(async () => {});
  assert.equal(calls.length, 2);
  await act(async () => gates.forEach((open) => open()));
  await hook.unmount();
});

test("after unmount, the hook no longer watches the page", async () => {
  const { calls, gates, hide, hook } = await twoQueued();
  await hook.unmount();
  hide();
  await act(async () => {});
  assert.equal(calls.length, 1);
  await act(async () => gates[0]());
  assert.equal(calls.length, 2, "the queue still drains in order");
  gates[1]();
});
