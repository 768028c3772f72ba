// The widget's sending logic under node's test runner: widget.js loads as a plain script.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import vm from "node:vm";

const WIDGET = new URL("../../src/nexus_ingest/dashboard/static/widget.js", import.meta.url);
vm.runInThisContext(readFileSync(WIDGET, "utf8"), { filename: WIDGET.pathname });
const { NexusWidget } = globalThis;
const ENDPOINT = "http://nexus.test/api/nexus/producer";

function reply(status, body = {}, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

const accepted = (messageId, duplicate = false) =>
  reply(202, { status: "accepted", messageId, duplicate });

/** A fetch that records each call and answers with `respond(callNumber, call)`. */
function recorder(respond = (n) => accepted(n)) {
  const calls = [];
  const fetch = async (url, init) => {
    const call = { url, init, body: JSON.parse(init.body), key: init.headers["Idempotency-Key"] };
    calls.push(call);
    return respond(calls.length, call);
  };
  return { calls, fetch };
}

function ids() {
  let n = 0;
  return () => `id-${++n}`;
}

function makeSender(fetch, options = {}) {
  const slept = [];
  const sender = NexusWidget.createSender({
    endpoint: ENDPOINT,
    fetch,
    sleep: async (ms) => {
      slept.push(ms);
    },
    random: () => 0.5,
    newId: ids(),
    storage: NexusWidget.memoryStorage(),
    ...options,
  });
  return { sender, slept };
}

const turn = (content) => [{ role: "user", content }];

test("posts a snapshot with session, fingerprint, clientSeq and an Idempotency-Key", async () => {
  const { calls, fetch } = recorder();
  const { sender } = makeSender(fetch);
  const result = await sender.send(turn("Hola"), { source: "test" });
  assert.equal(result.status, "sent");
  assert.equal(result.messageId, 1);
  assert.equal(calls.length, 1);
  const [{ url, init, body, key }] = calls;
  assert.equal(url, ENDPOINT);
  assert.equal(init.method, "POST");
  assert.equal(init.headers["Content-Type"], "application/json");
  assert.equal(body.fingerprint, "id-1");
  assert.equal(body.sessionId, "id-2");
  assert.deepEqual(body.messages, [{ role: "user", content: "Hola" }]);
  assert.deepEqual(body.metadata, { source: "test", clientSeq: 1 });
  assert.equal(key, "id-2:1");
});

test("keeps the session id, fingerprint and sequence across senders on one storage", async () => {
  const storage = NexusWidget.memoryStorage();
  const { calls, fetch } = recorder();
  const first = makeSender(fetch, { storage }).sender;
  await first.send(turn("a"));
  await first.send(turn("b"));
  const again = makeSender(fetch, { storage, newId: () => "never-used" }).sender;
  await again.send(turn("c"));
  assert.equal(again.sessionId, first.sessionId);
  assert.equal(again.fingerprint, first.fingerprint);
  assert.deepEqual(
    calls.map((c) => c.body.metadata.clientSeq),
    [1, 2, 3],
  );
  assert.deepEqual(
    calls.map((c) => c.key),
    ["id-2:1", "id-2:2", "id-2:3"],
  );
});

test("never has two requests of one session in flight, and sends them in order", async () => {
  const gates = [];
  const { calls, fetch } = recorder(
    (n) => new Promise((resolve) => gates.push(() => resolve(accepted(n)))),
  );
  const { sender } = makeSender(fetch);
  const results = [sender.send(turn("1")), sender.send(turn("2")), sender.send(turn("3"))];
  for (let expected = 1; expected <= 3; expected += 1) {
    await new Promise(setImmediate);
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

test("gives up at once on a 422 and moves on to the next snapshot", async () => {
  const { calls, fetch } = recorder((n) => (n === 1 ? reply(422, { status: "error" }) : accepted(n)));
  const { sender, slept } = makeSender(fetch);
  const [bad, good] = await Promise.all([sender.send(turn("x")), sender.send(turn("y"))]);
  assert.deepEqual([bad.status, bad.httpStatus, good.status], ["failed", 422, "sent"]);
  assert.equal(calls.length, 2);
  assert.deepEqual(slept, []);
});

test("gives up after maxAttempts retryable failures", async () => {
  const { calls, fetch } = recorder(() => reply(503));
  const { sender } = makeSender(fetch, { maxAttempts: 3 });
  const result = await sender.send(turn("x"));
  assert.deepEqual([result.status, result.attempts, calls.length], ["failed", 3, 3]);
});

test("drops the oldest waiting snapshot beyond maxPending, never the one in flight", async () => {
  const gates = [];
  const { calls, fetch } = recorder(
    (n) => new Promise((resolve) => gates.push(() => resolve(accepted(n)))),
  );
  const { sender } = makeSender(fetch, { maxPending: 2 });
  const results = [1, 2, 3, 4].map((n) => sender.send(turn(String(n))));
  await new Promise(setImmediate);
  gates[0]();
  await new Promise(setImmediate);
  gates[1]();
  await new Promise(setImmediate);
  gates[2]();
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
      ? new Promise((_, reject) => call.init.signal.addEventListener("abort", () => reject(new Error("aborted"))))
      : accepted(n),
  );
  const { sender } = makeSender(fetch, { timeoutMs: 20 });
  const result = await sender.send(turn("x"));
  assert.deepEqual([result.status, calls.length], ["sent", 2]);
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
  const states = [];
  const { fetch } = recorder((n) => (n === 1 ? reply(503) : accepted(n)));
  const { sender } = makeSender(fetch, { onStatus: (s) => states.push(s.state) });
  await sender.send(turn("x"));
  await sender.idle();
  assert.deepEqual(states, ["sending", "retrying", "sending", "sent", "idle"]);
});

test("backoffDelay doubles up to its cap and honours a longer Retry-After", () => {
  const half = () => 0.5;
  const options = { baseDelayMs: 100, maxDelayMs: 1000 };
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6].map((a) => NexusWidget.backoffDelay(a, null, options, half)),
    [75, 150, 300, 600, 750, 750],
  );
  assert.equal(NexusWidget.backoffDelay(1, 5000, options, half), 5000);
  assert.equal(NexusWidget.backoffDelay(1, 10 ** 9, options, half), 60000);
});

test("parseRetryAfter reads seconds and HTTP dates, and ignores junk", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(NexusWidget.parseRetryAfter("3", now), 3000);
  assert.equal(NexusWidget.parseRetryAfter("Thu, 01 Jan 2026 00:00:10 GMT", now), 10000);
  assert.equal(NexusWidget.parseRetryAfter("Wed, 31 Dec 2025 00:00:00 GMT", now), 0);
  assert.equal(NexusWidget.parseRetryAfter("soon", now), null);
  assert.equal(NexusWidget.parseRetryAfter(null, now), null);
});

test("treats 429, 503, other 5xx and network errors as retryable, 4xx as final", () => {
  assert.deepEqual(
    [0, 408, 429, 500, 502, 503, 504, 400, 401, 413, 415, 422].map(NexusWidget.isRetryable),
    [true, true, true, true, true, true, true, false, false, false, false, false],
  );
});

test("cannedReply asks for a name, an email, then the need, in the visitor's language", () => {
  const user = (content) => ({ role: "user", content });
  const bot = (content) => ({ role: "assistant", content });
  const es = [user("Hola")];
  assert.match(NexusWidget.cannedReply(es), /Cómo te llamas/);
  es.push(bot("Soy Sofía"), user("Me llamo Laura"));
  assert.match(NexusWidget.cannedReply(es), /email/);
  es.push(user("laura@example.com"));
  assert.match(NexusWidget.cannedReply(es), /producto/);
  es.push(user("Quiero el plan anual"));
  assert.match(NexusWidget.cannedReply(es), /comercial/);
  assert.match(NexusWidget.cannedReply([user("Hello there")]), /your name/);
  assert.match(NexusWidget.cannedReply([user("Hello, my name is Ann")]), /Which email/);
});
