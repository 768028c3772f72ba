// Fakes shared by the tests: a recording fetch, predictable ids, a page that can be hidden.

export const ENDPOINT = "http://nexus.test/api/nexus/producer";

/**
 * @param {number} status
 * @param {unknown} [body]
 * @param {Record<string, string>} [headers]
 */
export function reply(status, body = {}, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

/** @param {number} messageId */
export const accepted = (messageId, duplicate = false) =>
  reply(202, {
    status: "accepted",
    messageId,
    message: "Your message has been queued for processing",
    estimatedProcessingTime: "under 1 second",
    sessionId: "s",
    sequence: messageId,
    duplicate,
  });

/** A fetch that records each call and answers with `respond(callNumber, call)`. */
export function recorder(respond = (/** @type {number} */ n) => accepted(n)) {
  /** @type {any[]} */
  const calls = [];
  /** @type {(url: any, init: any) => Promise<Response>} */
  const fetch = async (url, init) => {
    const call = { url, init, body: JSON.parse(init.body), key: init.headers["Idempotency-Key"] };
    calls.push(call);
    return respond(calls.length, call);
  };
  return { calls, fetch };
}

/** A fetch whose answers wait until the test opens each request's gate. */
export function gated() {
  /** @type {(() => void)[]} */
  const gates = [];
  const { calls, fetch } = recorder(
    (n) => new Promise((resolve) => gates.push(() => resolve(accepted(n)))),
  );
  return { calls, fetch, gates };
}

export function ids() {
  let n = 0;
  return () => `id-${++n}`;
}

/** A window and document the test can hide, as a browser does on tab switch or unload. */
export function fakePage() {
  const doc = Object.assign(new EventTarget(), { visibilityState: "visible" });
  const page = Object.assign(new EventTarget(), { document: doc });
  return {
    page,
    hide: () => page.dispatchEvent(new Event("pagehide")),
    background() {
      doc.visibilityState = "hidden";
      doc.dispatchEvent(new Event("visibilitychange"));
    },
  };
}

/** Let pending promise callbacks and I/O run. */
export const tick = () => new Promise(setImmediate);

/** @param {string} content */
export const turn = (content) => [{ role: /** @type {const} */ ("user"), content }];
