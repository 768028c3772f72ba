/*
 * The sending half of every Nexus front end: after each chat turn the app hands the whole
 * conversation so far (a snapshot) to `send`, and the sender posts it to the producer.
 *
 * - In order: a session's snapshots go one at a time, never two requests in flight, so Nexus
 *   numbers them in the order they were said.
 * - Idempotent: each snapshot carries its own Idempotency-Key, reused on every retry, so a
 *   retried POST whose first answer was lost is queued once.
 * - Retrying: 408/425/429/5xx and network errors are retried with exponential back-off and
 *   jitter, never sooner than the server's Retry-After.
 * - Bounded: at most `maxPending` snapshots wait; a snapshot holds every earlier turn, so the
 *   oldest waiting one is dropped ("superseded") first.
 * - Page hide: on `pagehide`, or when the tab is hidden, the newest waiting snapshot is posted
 *   at once with `keepalive`, so the browser delivers it after the page is gone.
 *
 * No dependencies and no DOM needed: it runs in browsers, Node 18+ and edge runtimes.
 */

/**
 * @import { Accepted, ChatMessage, Failed, GatewayError, KeyValueStore, PageLike, ApiError,
 *   SendResult, Sender, SenderOptions, SenderStatus, Tuning } from "../types/index.js"
 */

/** @typedef {{ seq: number, key: string, body: string, resolve: (result: SendResult) => void, early?: Promise<Outcome> }} Item */
/** @typedef {{ ok: boolean, status: number, retryAfterMs: number | null, body: unknown }} Outcome */

const KEYS = {
  fingerprint: "nexus:fingerprint",
  session: "nexus:session",
  sessionOwner: "nexus:session-fingerprint",
  seq: "nexus:seq:",
};
const RETRYABLE_4XX = [408, 425, 429];
// 5xx is the server's or a proxy's trouble (Cloudflare's 520-524 when Nexus is down), except
// these two, which say the request itself can never succeed.
const FINAL_5XX = [501, 505];
// Browsers refuse keepalive requests whose bodies (all such requests of a page together) exceed 64 KiB.
const KEEPALIVE_LIMIT = 60000;

/** @type {Readonly<Tuning>} */
export const DEFAULTS = Object.freeze({
  baseDelayMs: 500,
  maxDelayMs: 15000,
  maxRetryAfterMs: 60000,
  maxAttempts: 12,
  maxPending: 50,
  timeoutMs: 15000,
});

/** @param {number} status 0 for a network error */
export function isRetryable(status) {
  if (status >= 500 && status <= 599) return !FINAL_5XX.includes(status);
  return status === 0 || RETRYABLE_4XX.includes(status);
}

/**
 * Milliseconds a Retry-After header asks for (seconds or an HTTP date), or null.
 * @param {string | null | undefined} value
 * @param {number} nowMs
 * @returns {number | null}
 */
export function parseRetryAfter(value, nowMs) {
  const text = value == null ? "" : String(value).trim();
  if (text === "") return null;
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? null : Math.max(0, at - nowMs);
}

/**
 * Exponential back-off with jitter, never shorter than the server's Retry-After (capped).
 * @param {number} attempt
 * @param {number | null} retryAfterMs
 * @param {Partial<Tuning>} [options]
 * @param {() => number} [random]
 * @returns {number}
 */
export function backoffDelay(attempt, retryAfterMs, options, random) {
  const o = { ...DEFAULTS, ...options };
  const exp = Math.min(o.maxDelayMs, o.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  const jittered = exp / 2 + (exp / 2) * (random ? random() : Math.random());
  const hinted = Math.min(o.maxRetryAfterMs, retryAfterMs || 0);
  return Math.round(Math.max(jittered, hinted));
}

/** @returns {KeyValueStore} */
export function memoryStorage() {
  /** @type {Map<string, string>} */
  const items = new Map();
  return {
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => void items.set(key, String(value)),
    removeItem: (key) => void items.delete(key),
  };
}

/**
 * A storage that never throws: private browsing, blocked cookies and runtimes without Web
 * Storage fall back to memory.
 * @param {() => KeyValueStore | undefined | null} get
 * @returns {KeyValueStore}
 */
export function safeStorage(get) {
  try {
    const store = get();
    if (!store) return memoryStorage();
    store.setItem("nexus:probe", "1");
    store.removeItem("nexus:probe");
    return unfailing(store);
  } catch {
    return memoryStorage();
  }
}

/**
 * `store`, with what it refuses kept in memory instead: a storage that worked at first can
 * still throw later (its quota, shared with the host page, filled up), and a snapshot must
 * not be lost for want of a place to note its number.
 * @param {KeyValueStore} store
 * @returns {KeyValueStore}
 */
function unfailing(store) {
  const refused = memoryStorage();
  return {
    getItem(key) {
      const kept = refused.getItem(key);
      if (kept !== null) return kept;
      try {
        return store.getItem(key);
      } catch {
        return null;
      }
    },
    setItem(key, value) {
      try {
        store.setItem(key, value);
        refused.removeItem(key);
      } catch {
        refused.setItem(key, value);
      }
    },
    removeItem(key) {
      refused.removeItem(key);
      try {
        store.removeItem(key);
      } catch {
        // Already gone from memory, which is what this tab reads first.
      }
    },
  };
}

/** @param {() => number} random */
function randomId(random) {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  let hex = "";
  for (let i = 0; i < 32; i += 1) hex += Math.floor(random() * 16).toString(16);
  return hex;
}

/**
 * @param {KeyValueStore} store
 * @param {string} key
 * @param {() => string} make
 */
function remember(store, key, make) {
  let value = store.getItem(key);
  if (!value) {
    value = make();
    store.setItem(key, value);
  }
  return value;
}

/**
 * The tab's session, begun anew when the fingerprint is not the one it began with (storage
 * cleared, the app's visitor changed): Nexus numbers a session under the fingerprint that
 * first used it and refuses it under another (422 `session_of_another_visitor`).
 * @param {KeyValueStore} store
 * @param {string} fingerprint
 * @param {() => string} make
 */
function sessionOf(store, fingerprint, make) {
  const owner = store.getItem(KEYS.sessionOwner);
  if (owner !== null && owner !== fingerprint) store.removeItem(KEYS.session);
  store.setItem(KEYS.sessionOwner, fingerprint);
  return remember(store, KEYS.session, make);
}

/** @param {number} ms */
function defaultSleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** @param {string} text */
function byteLength(text) {
  return new TextEncoder().encode(text).length;
}

/**
 * @param {Response} response
 * @param {number} nowMs
 * @returns {Promise<Outcome>}
 */
async function readResponse(response, nowMs) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return {
    ok: response.status >= 200 && response.status < 300,
    status: response.status,
    retryAfterMs: parseRetryAfter(response.headers.get("retry-after"), nowMs),
    body,
  };
}

/** @param {number} ms */
function timeout(ms) {
  if (typeof AbortController !== "function" || !ms) {
    return { signal: undefined, cancel: () => {} };
  }
  const controller = new AbortController();
  const handle = setTimeout(() => controller.abort(), ms);
  return { signal: controller.signal, cancel: () => clearTimeout(handle) };
}

/**
 * The global fetch, looked up at each request: a page may polyfill it after the sender is
 * made, and where there is none a request fails like a network error instead of the sender
 * (and the widget around it) failing to start.
 * @type {typeof fetch}
 */
function globalFetch(input, init) {
  if (typeof fetch !== "function") return Promise.reject(new TypeError("no fetch function"));
  return fetch(input, init);
}

/** @returns {PageLike | null} */
function defaultWindow() {
  const page = /** @type {PageLike | undefined} */ (/** @type {unknown} */ (globalThis.window));
  return page && page.document && typeof page.addEventListener === "function" ? page : null;
}

/**
 * A sleep that `wake()` cuts short (used when the page is hidden).
 * @param {(ms: number) => Promise<void>} sleep
 */
function interruptible(sleep) {
  /** @type {(() => void) | null} */
  let wakeUp = null;
  return {
    /** @param {number} ms */
    pause(ms) {
      return new Promise((resolve) => {
        wakeUp = () => resolve(undefined);
        sleep(ms).then(() => resolve(undefined));
      }).finally(() => {
        wakeUp = null;
      });
    },
    wake() {
      if (wakeUp) wakeUp();
    },
  };
}

/**
 * Watch the page: `flush` on pagehide, and when the tab turns hidden (mobile browsers may
 * kill a hidden tab without a pagehide).
 * @param {PageLike | null} page
 * @param {() => void} flush
 * @returns {() => void} stops watching
 */
function watchPage(page, flush) {
  if (!page) return () => {};
  const doc = page.document || null;
  const onVisibility = () => {
    if (doc && doc.visibilityState === "hidden") flush();
  };
  page.addEventListener("pagehide", flush);
  if (doc) doc.addEventListener("visibilitychange", onVisibility);
  return () => {
    page.removeEventListener("pagehide", flush);
    if (doc) doc.removeEventListener("visibilitychange", onVisibility);
  };
}

/**
 * @param {SenderOptions} options
 * @returns {Sender}
 */
export function createSender(options) {
  const o = { ...DEFAULTS, ...options };
  const fetcher = o.fetch || globalFetch;
  if (!o.endpoint) throw new TypeError("createSender needs an endpoint");
  const now = o.now || Date.now;
  const random = o.random || Math.random;
  const newId = o.newId || (() => randomId(random));
  const storage = safeStorage(() => o.storage || globalThis.localStorage);
  const sessionStore = safeStorage(() => o.sessionStore || globalThis.sessionStorage);
  const fingerprint = o.fingerprint || remember(storage, KEYS.fingerprint, newId);
  const sessionId = o.sessionId || sessionOf(sessionStore, fingerprint, newId);
  // Keys need only be unique per snapshot and stable across its retries; a per-sender prefix
  // keeps them unique even when two tabs (or two servers) share the app's session id.
  const keyPrefix = newId();
  const seqKey = KEYS.seq + sessionId;
  const backoff = interruptible(o.sleep || defaultSleep);
  let seq = Number(sessionStore.getItem(seqKey)) || 0;
  let newestPosted = 0;
  /** @type {Item[]} */
  const waiting = [];
  /** @type {Item | null} */
  let current = null;
  /** @type {(() => void)[]} */
  const idleWaiters = [];
  const stats = { requests: 0, inFlight: 0, maxInFlight: 0 };

  function pending() {
    return waiting.length + (current ? 1 : 0);
  }

  /**
   * @param {SenderStatus["state"]} state
   * @param {Partial<SenderStatus>} [extra]
   */
  function report(state, extra) {
    if (o.onStatus) o.onStatus({ state, pending: pending(), ...extra });
  }

  /**
   * @param {ChatMessage[]} messages
   * @param {Record<string, unknown>} [metadata]
   * @returns {Promise<SendResult>}
   */
  function send(messages, metadata) {
    seq += 1;
    sessionStore.setItem(seqKey, String(seq));
    /** @type {(result: SendResult) => void} */
    let resolve = () => {};
    const done = new Promise((r) => {
      resolve = r;
    });
    const body = JSON.stringify({
      messages,
      fingerprint,
      sessionId,
      metadata: { ...metadata, clientSeq: seq },
    });
    waiting.push({ seq, key: `${keyPrefix}:${seq}`, body, resolve });
    while (waiting.length > o.maxPending) supersede(/** @type {Item} */ (waiting.shift()));
    if (!current) drain();
    return /** @type {Promise<SendResult>} */ (done);
  }

  /** @param {Item} item */
  function supersede(item) {
    item.resolve({ status: "superseded", seq: item.seq, attempts: 0 });
  }

  async function drain() {
    try {
      while (waiting.length) {
        const item = /** @type {Item} */ (waiting.shift());
        current = item;
        item.resolve(await deliver(item));
      }
    } finally {
      current = null;
      report("idle");
      idleWaiters.splice(0).forEach((resolve) => resolve());
    }
  }

  /**
   * @param {Item} item
   * @returns {Promise<SendResult>}
   */
  async function deliver(item) {
    for (let attempt = 1; ; attempt += 1) {
      const outcome = await (item.early || post(item));
      item.early = undefined;
      const result = { seq: item.seq, attempts: attempt, httpStatus: outcome.status };
      if (outcome.ok) {
        report("sent", { seq: item.seq });
        const response = /** @type {Accepted | null} */ (outcome.body);
        return {
          ...result,
          status: "sent",
          messageId: response?.messageId ?? null,
          duplicate: Boolean(response?.duplicate),
          response,
        };
      }
      if (!isRetryable(outcome.status) || attempt >= o.maxAttempts) {
        report("failed", { seq: item.seq, httpStatus: outcome.status });
        return failed(result, outcome);
      }
      if (overtaken(item)) return { status: "superseded", seq: item.seq, attempts: attempt };
      const delayMs = backoffDelay(attempt, outcome.retryAfterMs, o, random);
      report("retrying", { seq: item.seq, delayMs, httpStatus: outcome.status });
      await backoff.pause(delayMs);
      if (overtaken(item)) return { status: "superseded", seq: item.seq, attempts: attempt };
    }
  }

  /**
   * A newer snapshot went out early (the page was hidden): retrying this older one could
   * reorder them at the server, and the newer one holds all of its turns anyway.
   * @param {Item} item
   */
  function overtaken(item) {
    return newestPosted > item.seq;
  }

  /**
   * @param {{ seq: number, attempts: number, httpStatus: number }} result
   * @param {Outcome} outcome
   * @returns {Failed}
   */
  function failed(result, outcome) {
    const body = /** @type {ApiError | GatewayError | null} */ (outcome.body);
    return { ...result, status: "failed", error: body?.status === "error" ? body : null };
  }

  /**
   * @param {Item} item
   * @returns {Promise<Outcome>}
   */
  async function post(item) {
    stats.requests += 1;
    stats.inFlight += 1;
    stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
    newestPosted = Math.max(newestPosted, item.seq);
    report("sending", { seq: item.seq });
    const timer = timeout(o.timeoutMs);
    try {
      const response = await fetcher(o.endpoint, {
        method: "POST",
        headers: { ...o.headers, "Content-Type": "application/json", "Idempotency-Key": item.key },
        body: item.body,
        credentials: o.credentials || "omit",
        keepalive: byteLength(item.body) < KEEPALIVE_LIMIT,
        signal: timer.signal,
      });
      return await readResponse(response, now());
    } catch {
      return { ok: false, status: 0, retryAfterMs: null, body: null };
    } finally {
      timer.cancel();
      stats.inFlight -= 1;
    }
  }

  /** The page is going away: only the newest snapshot matters, and it must go now. */
  function flush() {
    while (waiting.length > 1) supersede(/** @type {Item} */ (waiting.shift()));
    const newest = waiting[0];
    if (newest && !newest.early) newest.early = post(newest);
    backoff.wake();
  }

  function idle() {
    if (!current && !waiting.length) return Promise.resolve();
    return new Promise((resolve) => idleWaiters.push(() => resolve(undefined)));
  }

  const stopWatching = watchPage(o.window === undefined ? defaultWindow() : o.window, flush);

  return {
    send,
    flush,
    idle,
    close: stopWatching,
    sessionId,
    fingerprint,
    stats,
    get seq() {
      return seq;
    },
    get pending() {
      return pending();
    },
  };
}
