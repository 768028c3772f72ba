// The sender under node's test runner: order, idempotency, retries, the bounded queue, page hide.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { test } from "node:test";

import {
  backoffDelay,
  createSender,
  isRetryable,
  memoryStorage,
  parseRetryAfter,
} from "../src/index.js";
import {
  ENDPOINT,
  accepted,
  fakePage,
  gated,
  ids,
  recorder,
  reply,
  tick,
  turn,
} from "./helpers.js";

/**
 * @param {any} fetch
 * @param {Record<string, unknown>} [options]
 */
function makeSender(fetch, options = {}) {
  /** @type {number[]} */
  const slept = [];
  const sender = createSender({
    endpoint: ENDPOINT,
    fetch,
    sleep: async (ms) => {
      slept.push(ms);
    },
    random: () => 0.5,
    newId: ids(),
    storage: memoryStorage(),
    sessionStore: memoryStorage(),
    window: null,
    ...options,
  });
  return { sender, slept };
}

test("posts a snapshot with session, fingerprint, clientSeq and an Idempotency-Key", async () => {
  const { calls, fetch } = recorder();
  const { sender } = makeSender(fetch);
  const result = await sender.send(turn("Hola"), { source: "test" });
  assert.equal(result.status, "sent");
  assert.equal(result.status === "sent" && result.messageId, 1);
  assert.equal(calls.length, 1);
  const [{ url, init, body, key }] = calls;
  assert.equal(url, ENDPOINT);
  assert.equal(init.method, "POST");
  assert.equal(init.headers["Content-Type"], "application/json");
  assert.equal(init.credentials, "omit");
  assert.equal(body.fingerprint, "id-1");
  assert.equal(body.sessionId, "id-2");
  assert.deepEqual(body.messages, [{ role: "user", content: "Hola" }]);
  assert.deepEqual(body.metadata, { source: "test", clientSeq: 1 });
  assert.equal(key, "id-3:1");
});

test("returns the 202 body, and says when Nexus had already queued the snapshot", async () => {
  const { fetch } = recorder(() => accepted(41, true));
  const { sender } = makeSender(fetch);
  const result = await sender.send(turn("again"));
  assert.equal(result.status, "sent");
  assert.ok(result.status === "sent");
  assert.deepEqual([result.messageId, result.duplicate], [41, true]);
  assert.equal(result.response?.estimatedProcessingTime, "under 1 second");
});

test("takes the app's own sessionId and fingerprint, and leaves storage alone", async () => {
  const storage = memoryStorage();
  const sessionStore = memoryStorage();
  const { calls, fetch } = recorder();
  const { sender } = makeSender(fetch, {
    sessionId: "conversación-42",
    fingerprint: "user-7",
    storage,
    sessionStore,
  });
  await sender.send(turn("hola"));
  assert.deepEqual([sender.sessionId, sender.fingerprint], ["conversación-42", "user-7"]);
  assert.deepEqual([calls[0].body.sessionId, calls[0].body.fingerprint], ["conversación-42", "user-7"]);
  assert.equal(storage.getItem("nexus:fingerprint"), null);
  assert.equal(sessionStore.getItem("nexus:session"), null);
  assert.match(calls[0].key, /^[\x21-\x7e]{1,255}$/, "a valid key even for a non-ASCII session id");
});

test("keeps the session id, fingerprint and sequence across senders on one storage", async () => {
  const storage = memoryStorage();
  const { calls, fetch } = recorder();
  const first = makeSender(fetch, { storage, sessionStore: storage }).sender;
  await first.send(turn("a"));
  await first.send(turn("b"));
  const again = makeSender(fetch, { storage, sessionStore: storage, newId: () => "fresh" }).sender;
  await again.send(turn("c"));
  assert.equal(again.sessionId, first.sessionId);
  assert.equal(again.fingerprint, first.fingerprint);
  assert.deepEqual(
    calls.map((c) => c.body.metadata.clientSeq),
    [1, 2, 3],
  );
  assert.deepEqual(
    calls.map((c) => c.key),
    ["id-3:1", "id-3:2", "fresh:3"],
  );
});

test("a new fingerprint in the tab begins a new session, as Nexus refuses the old one to it", async () => {
  const storage = memoryStorage();
  const sessionStore = memoryStorage();
  const { calls, fetch } = recorder();
  let n = 0;
  const ids = { storage, sessionStore, newId: () => `id-${(n += 1)}` };
  const first = makeSender(fetch, ids).sender;
  await first.send(turn("a"));
  const same = makeSender(fetch, ids).sender;
  storage.removeItem("nexus:fingerprint"); // site data cleared, the tab kept
  const cleared = makeSender(fetch, ids).sender;
  const signedIn = makeSender(fetch, { ...ids, fingerprint: "user-7" }).sender;
  await cleared.send(turn("b"));
  await signedIn.send(turn("c"));
  assert.equal(same.sessionId, first.sessionId);
  assert.notEqual(cleared.fingerprint, first.fingerprint);
  assert.notEqual(cleared.sessionId, first.sessionId);
  assert.notEqual(signedIn.sessionId, cleared.sessionId);
  assert.deepEqual(
    calls.map((c) => [c.body.fingerprint, c.body.sessionId, c.body.metadata.clientSeq]),
    [
      [first.fingerprint, first.sessionId, 1],
      [cleared.fingerprint, cleared.sessionId, 1],
      ["user-7", signedIn.sessionId, 1],
    ],
  );
});

test("two senders sharing the app's session id never share an Idempotency-Key", async () => {
  const { calls, fetch } = recorder();
  const tabs = [1, 2].map(() => makeSender(fetch, { sessionId: "shared", newId: undefined }));
  await tabs[0].sender.send(turn("from tab one"));
  await tabs[1].sender.send(turn("from tab two"));
  assert.deepEqual(
    calls.map((c) => c.body.metadata.clientSeq),
    [1, 1],
  );
  assert.notEqual(calls[0].key, calls[1].key);
});

test("never has two requests of one session in flight, and sends them in order", async () => {
  const { calls, fetch, gates } = gated();
  const { sender } = makeSender(fetch);
  const results = [sender.send(turn("1")), sender.send(turn("2")), sender.send(turn("3"))];
  for (let expected = 1; expected <= 3; expected += 1) {
    await tick();
    assert.equal(calls.length, expected, "the next request starts only after the previous ends");
    assert.equal(sender.stats.inFlight, 1);
    gates[expected - 1]();
  }
  const done = await Promise.all(results);
  assert.deepEqual(
    done.map((r) => [r.status, r.seq]),
    [
      ["sent", 1],
      ["sent", 2],
      ["sent", 3],
    ],
  );
  assert.equal(sender.stats.maxInFlight, 1);
  assert.equal(sender.pending, 0);
});

test("retries a 503 with the same Idempotency-Key, waiting at least its Retry-After", async () => {
  const { calls, fetch } = recorder((n) =>
    n === 1 ? reply(503, { status: "error" }, { "Retry-After": "2" }) : accepted(7),
  );
  const { sender, slept } = makeSender(fetch);
  const result = await sender.send(turn("hola"));
  assert.equal(result.status, "sent");
  assert.equal(result.attempts, 2);
  assert.deepEqual(slept, [2000]);
  assert.equal(calls[0].key, calls[1].key);
  assert.equal(calls[0].init.body, calls[1].init.body);
});

test("retries network errors and 429 with a growing back-off", async () => {
  const { calls, fetch } = recorder((n) => {
    if (n === 1) throw new TypeError("Failed to fetch");
    if (n === 2) return reply(429, { status: "error" });
    if (n === 3) throw new TypeError("Failed to fetch");
    return accepted(n);
  });
  const { sender, slept } = makeSender(fetch, { baseDelayMs: 100 });
  const result = await sender.send(turn("hola"));
  assert.equal(result.status, "sent");
  assert.equal(calls.length, 4);
  assert.deepEqual(slept, [75, 150, 300]);
});

test("gives up at once on a 422, hands back its error body, and moves on", async () => {
  const refusal = {
    status: "error",
    error: "invalid_snapshot",
    message: "The snapshot does not match the schema.",
    detail: [{ loc: ["messages", 0, "content"], msg: "must not be empty or whitespace only" }],
  };
  const { calls, fetch } = recorder((n) => (n === 1 ? reply(422, refusal) : accepted(n)));
  const { sender, slept } = makeSender(fetch);
  const [bad, good] = await Promise.all([sender.send(turn(" ")), sender.send(turn("y"))]);
  assert.deepEqual([bad.status, bad.status === "failed" && bad.httpStatus, good.status], [
    "failed",
    422,
    "sent",
  ]);
  assert.deepEqual(bad.status === "failed" && bad.error, refusal);
  assert.equal(calls.length, 2);
  assert.deepEqual(slept, []);
});

test("retries a proxy's 5xx beyond 504 (Cloudflare's 522) with the same Idempotency-Key", async () => {
  const { calls, fetch } = recorder((n) => (n === 1 ? reply(522) : accepted(n)));
  const { sender } = makeSender(fetch);
  const result = await sender.send(turn("hola"));
  assert.deepEqual([result.status, result.attempts], ["sent", 2]);
  assert.equal(calls[0].key, calls[1].key);
});

test("a storage that starts refusing writes (its quota full) loses no snapshot", async () => {
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
  const { sender } = makeSender(fetch, { sessionStore });
  full = true;
  const results = await Promise.all([sender.send(turn("uno")), sender.send(turn("dos"))]);
  assert.deepEqual(
    results.map((r) => r.status),
    ["sent", "sent"],
  );
  assert.deepEqual(
    calls.map((c) => c.body.metadata.clientSeq),
    [1, 2],
  );
});

test("gives up after maxAttempts retryable failures", async () => {
  const { calls, fetch } = recorder(() => reply(503));
  const { sender } = makeSender(fetch, { maxAttempts: 3 });
  const result = await sender.send(turn("x"));
  assert.deepEqual([result.status, result.attempts, calls.length], ["failed", 3, 3]);
});

test("drops the oldest waiting snapshot beyond maxPending, never the one in flight", async () => {
  const { calls, fetch, gates } = gated();
  const { sender } = makeSender(fetch, { maxPending: 2 });
  const results = [1, 2, 3, 4].map((n) => sender.send(turn(String(n))));
  assert.equal(sender.pending, 3, "one in flight and two waiting");
  for (const gate of [0, 1, 2]) {
    await tick();
    gates[gate]();
  }
  const done = await Promise.all(results);
  assert.deepEqual(
    done.map((r) => r.status),
    ["sent", "superseded", "sent", "sent"],
  );
  assert.deepEqual(
    calls.map((c) => c.body.metadata.clientSeq),
    [1, 3, 4],
  );
});

test("aborts a request that hangs past timeoutMs and retries it", async () => {
  const { calls, fetch } = recorder((n, call) =>
    n === 1
      ? new Promise((_, reject) =>
          call.init.signal.addEventListener("abort", () => reject(new Error("aborted"))),
        )
      : accepted(n),
  );
  const { sender } = makeSender(fetch, { timeoutMs: 20 });
  const result = await sender.send(turn("x"));
  assert.deepEqual([result.status, calls.length], ["sent", 2]);
});

test("asks for keepalive only while the body fits the browser's 64 KiB keepalive budget", async () => {
  const { calls, fetch } = recorder();
  const { sender } = makeSender(fetch);
  await sender.send(turn("short"));
  await sender.send(turn("ñ".repeat(35_000))); // 35,000 characters, 70,000 bytes
  assert.deepEqual(
    calls.map((c) => c.init.keepalive),
    [true, false],
  );
});

test("on pagehide, posts the newest waiting snapshot at once with keepalive", async () => {
  const { calls, fetch, gates } = gated();
  const { page, hide } = fakePage();
  const { sender } = makeSender(fetch, { window: page });
  const results = [1, 2, 3].map((n) => sender.send(turn(String(n))));
  await tick();
  assert.equal(calls.length, 1);
  hide();
  await tick();
  assert.deepEqual(
    calls.map((c) => [c.body.metadata.clientSeq, c.init.keepalive]),
    [
      [1, true],
      [3, true],
    ],
  );
  gates[0]();
  gates[1]();
  const done = await Promise.all(results);
  assert.deepEqual(
    done.map((r) => [r.status, r.attempts]),
    [
      ["sent", 1],
      ["superseded", 0],
      ["sent", 1],
    ],
  );
  assert.equal(calls.length, 2, "the early post is not repeated when its turn comes");
});

test("a hidden tab flushes too (visibilitychange), and close() stops watching", async () => {
  const { calls, fetch, gates } = gated();
  const { page, background, hide } = fakePage();
  const { sender } = makeSender(fetch, { window: page });
  sender.send(turn("1"));
  sender.send(turn("2"));
  await tick();
  background();
  await tick();
  assert.equal(calls.length, 2);
  sender.send(turn("3"));
  sender.close();
  hide();
  await tick();
  assert.equal(calls.length, 2, "no flush after close()");
  gates.forEach((open) => open());
  await tick();
  gates.forEach((open) => open());
  await sender.idle();
  assert.deepEqual(
    calls.map((c) => c.body.metadata.clientSeq),
    [1, 2, 3],
  );
});

test("pagehide cuts a back-off short: the retry goes out at once", async () => {
  const { calls, fetch } = recorder((n) => (n === 1 ? reply(503, {}, { "Retry-After": "30" }) : accepted(n)));
  const { page, hide } = fakePage();
  let sleeping = false;
  const { sender } = makeSender(fetch, {
    window: page,
    sleep: () => {
      sleeping = true;
      return new Promise(() => {}); // only pagehide ends this back-off
    },
  });
  const result = sender.send(turn("bye"));
  await tick();
  assert.ok(sleeping);
  hide();
  assert.deepEqual([(await result).status, calls.length], ["sent", 2]);
});

test("an older snapshot is not retried once a newer one went out on pagehide", async () => {
  /** @type {(() => void)[]} */
  const fail = [];
  const { calls, fetch } = recorder((n) =>
    n === 1 ? new Promise((resolve) => fail.push(() => resolve(reply(503)))) : accepted(n),
  );
  const { page, hide } = fakePage();
  const { sender, slept } = makeSender(fetch, { window: page });
  const older = sender.send(turn("1"));
  const newer = sender.send(turn("2"));
  await tick();
  hide();
  await tick();
  fail[0]();
  assert.deepEqual([(await older).status, (await newer).status], ["superseded", "sent"]);
  assert.deepEqual(slept, []);
  assert.deepEqual(
    calls.map((c) => c.body.metadata.clientSeq),
    [1, 2],
  );
});

test("idle() resolves once every queued snapshot is delivered", async () => {
  const { calls, fetch } = recorder();
  const { sender } = makeSender(fetch);
  await sender.idle();
  sender.send(turn("1"));
  sender.send(turn("2"));
  await sender.idle();
  assert.equal(calls.length, 2);
  assert.equal(sender.pending, 0);
});

test("reports its state to onStatus: sending, retrying, sent, idle", async () => {
  /** @type {string[]} */
  const states = [];
  const { fetch } = recorder((n) => (n === 1 ? reply(503) : accepted(n)));
  const { sender } = makeSender(fetch, {
    onStatus: (/** @type {{ state: string }} */ s) => states.push(s.state),
  });
  await sender.send(turn("x"));
  await sender.idle();
  assert.deepEqual(states, ["sending", "retrying", "sending", "sent", "idle"]);
});

test("runs in Node with its global fetch against a real HTTP server", async () => {
  /** @type {{ headers: import("node:http").IncomingHttpHeaders, body: any }[]} */
  const seen = [];
  const server = createServer((req, res) => {
    let text = "";
    req.on("data", (chunk) => (text += chunk));
    req.on("end", () => {
      seen.push({ headers: req.headers, body: JSON.parse(text) });
      res.writeHead(seen.length === 1 ? 503 : 202, {
        "content-type": "application/json",
        "retry-after": "0",
      });
      res.end(JSON.stringify({ status: "accepted", messageId: seen.length, duplicate: false }));
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(undefined)));
  const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
  try {
    const sender = createSender({
      endpoint: `http://127.0.0.1:${port}/api/nexus/producer`,
      sessionId: "node-session",
      fingerprint: "node-visitor",
      headers: { "X-App": "backend" },
      baseDelayMs: 1,
    });
    const result = await sender.send(turn("from a server"));
    assert.deepEqual([result.status, result.attempts], ["sent", 2]);
    assert.equal(seen.length, 2);
    assert.equal(seen[0].headers["idempotency-key"], seen[1].headers["idempotency-key"]);
    assert.equal(seen[1].headers["x-app"], "backend");
    assert.equal(seen[1].headers["content-type"], "application/json");
    assert.deepEqual([seen[1].body.sessionId, seen[1].body.fingerprint], ["node-session", "node-visitor"]);
  } finally {
    server.close();
  }
});

test("backoffDelay doubles up to its cap and honours a longer Retry-After", () => {
  const half = () => 0.5;
  const options = { baseDelayMs: 100, maxDelayMs: 1000 };
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6].map((a) => backoffDelay(a, null, options, half)),
    [75, 150, 300, 600, 750, 750],
  );
  assert.equal(backoffDelay(1, 5000, options, half), 5000);
  assert.equal(backoffDelay(1, 10 ** 9, options, half), 60000);
});

test("parseRetryAfter reads seconds and HTTP dates, and ignores junk", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(parseRetryAfter("3", now), 3000);
  assert.equal(parseRetryAfter("Thu, 01 Jan 2026 00:00:10 GMT", now), 10000);
  assert.equal(parseRetryAfter("Wed, 31 Dec 2025 00:00:00 GMT", now), 0);
  assert.equal(parseRetryAfter("soon", now), null);
  assert.equal(parseRetryAfter(null, now), null);
});

test("treats 429, 503, other 5xx and network errors as retryable, 4xx as final", () => {
  assert.deepEqual(
    [0, 408, 429, 500, 502, 503, 504, 507, 520, 522, 524, 529].map(isRetryable),
    [true, true, true, true, true, true, true, true, true, true, true, true],
  );
  assert.deepEqual(
    [400, 401, 413, 415, 422, 501, 505].map(isRetryable),
    [false, false, false, false, false, false, false],
  );
});
