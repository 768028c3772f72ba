// Generated from clients/js by `npm run build:widget`; edit clients/js/src, not this file.
"use strict";
(() => {
  // src/sender.js
  var KEYS = {
    fingerprint: "nexus:fingerprint",
    session: "nexus:session",
    sessionOwner: "nexus:session-fingerprint",
    seq: "nexus:seq:"
  };
  var RETRYABLE_4XX = [408, 425, 429];
  var FINAL_5XX = [501, 505];
  var KEEPALIVE_LIMIT = 6e4;
  var DEFAULTS = Object.freeze({
    baseDelayMs: 500,
    maxDelayMs: 15e3,
    maxRetryAfterMs: 6e4,
    maxAttempts: 12,
    maxPending: 50,
    timeoutMs: 15e3
  });
  function isRetryable(status) {
    if (status >= 500 && status <= 599) return !FINAL_5XX.includes(status);
    return status === 0 || RETRYABLE_4XX.includes(status);
  }
  function parseRetryAfter(value, nowMs) {
    const text = value == null ? "" : String(value).trim();
    if (text === "") return null;
    if (/^\d+$/.test(text)) return Number(text) * 1e3;
    const at = Date.parse(text);
    return Number.isNaN(at) ? null : Math.max(0, at - nowMs);
  }
  function backoffDelay(attempt, retryAfterMs, options, random) {
    const o = { ...DEFAULTS, ...options };
    const exp = Math.min(o.maxDelayMs, o.baseDelayMs * 2 ** Math.max(0, attempt - 1));
    const jittered = exp / 2 + exp / 2 * (random ? random() : Math.random());
    const hinted = Math.min(o.maxRetryAfterMs, retryAfterMs || 0);
    return Math.round(Math.max(jittered, hinted));
  }
  function memoryStorage() {
    const items = /* @__PURE__ */ new Map();
    return {
      getItem: (key) => {
        var _a;
        return (_a = items.get(key)) != null ? _a : null;
      },
      setItem: (key, value) => void items.set(key, String(value)),
      removeItem: (key) => void items.delete(key)
    };
  }
  function safeStorage(get) {
    try {
      const store = get();
      if (!store) return memoryStorage();
      store.setItem("nexus:probe", "1");
      store.removeItem("nexus:probe");
      return unfailing(store);
    } catch (e) {
      return memoryStorage();
    }
  }
  function unfailing(store) {
    const refused = memoryStorage();
    return {
      getItem(key) {
        const kept = refused.getItem(key);
        if (kept !== null) return kept;
        try {
          return store.getItem(key);
        } catch (e) {
          return null;
        }
      },
      setItem(key, value) {
        try {
          store.setItem(key, value);
          refused.removeItem(key);
        } catch (e) {
          refused.setItem(key, value);
        }
      },
      removeItem(key) {
        refused.removeItem(key);
        try {
          store.removeItem(key);
        } catch (e) {
        }
      }
    };
  }
  function randomId(random) {
    const c = globalThis.crypto;
    if (c && typeof c.randomUUID === "function") return c.randomUUID();
    let hex = "";
    for (let i = 0; i < 32; i += 1) hex += Math.floor(random() * 16).toString(16);
    return hex;
  }
  function remember(store, key, make) {
    let value = store.getItem(key);
    if (!value) {
      value = make();
      store.setItem(key, value);
    }
    return value;
  }
  function sessionOf(store, fingerprint, make) {
    const owner = store.getItem(KEYS.sessionOwner);
    if (owner !== null && owner !== fingerprint) store.removeItem(KEYS.session);
    store.setItem(KEYS.sessionOwner, fingerprint);
    return remember(store, KEYS.session, make);
  }
  function defaultSleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }
  function byteLength(text) {
    return new TextEncoder().encode(text).length;
  }
  async function readResponse(response, nowMs) {
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    return {
      ok: response.status >= 200 && response.status < 300,
      status: response.status,
      retryAfterMs: parseRetryAfter(response.headers.get("retry-after"), nowMs),
      body
    };
  }
  function timeout(ms) {
    if (typeof AbortController !== "function" || !ms) {
      return { signal: void 0, cancel: () => {
      } };
    }
    const controller = new AbortController();
    const handle = setTimeout(() => controller.abort(), ms);
    return { signal: controller.signal, cancel: () => clearTimeout(handle) };
  }
  function globalFetch(input, init) {
    if (typeof fetch !== "function") return Promise.reject(new TypeError("no fetch function"));
    return fetch(input, init);
  }
  function defaultWindow() {
    const page = (
      /** @type {PageLike | undefined} */
      /** @type {unknown} */
      globalThis.window
    );
    return page && page.document && typeof page.addEventListener === "function" ? page : null;
  }
  function interruptible(sleep) {
    let wakeUp = null;
    return {
      /** @param {number} ms */
      pause(ms) {
        return new Promise((resolve) => {
          wakeUp = () => resolve(void 0);
          sleep(ms).then(() => resolve(void 0));
        }).finally(() => {
          wakeUp = null;
        });
      },
      wake() {
        if (wakeUp) wakeUp();
      }
    };
  }
  function watchPage(page, flush) {
    if (!page) return () => {
    };
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
  function createSender(options) {
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
    const keyPrefix = newId();
    const seqKey = KEYS.seq + sessionId;
    const backoff = interruptible(o.sleep || defaultSleep);
    let seq = Number(sessionStore.getItem(seqKey)) || 0;
    let newestPosted = 0;
    const waiting = [];
    let current = null;
    const idleWaiters = [];
    const stats = { requests: 0, inFlight: 0, maxInFlight: 0 };
    function pending() {
      return waiting.length + (current ? 1 : 0);
    }
    function report(state, extra) {
      if (o.onStatus) o.onStatus({ state, pending: pending(), ...extra });
    }
    function send(messages, metadata) {
      seq += 1;
      sessionStore.setItem(seqKey, String(seq));
      let resolve = () => {
      };
      const done = new Promise((r) => {
        resolve = r;
      });
      const body = JSON.stringify({
        messages,
        fingerprint,
        sessionId,
        metadata: { ...metadata, clientSeq: seq }
      });
      waiting.push({ seq, key: `${keyPrefix}:${seq}`, body, resolve });
      while (waiting.length > o.maxPending) supersede(
        /** @type {Item} */
        waiting.shift()
      );
      if (!current) drain();
      return (
        /** @type {Promise<SendResult>} */
        done
      );
    }
    function supersede(item) {
      item.resolve({ status: "superseded", seq: item.seq, attempts: 0 });
    }
    async function drain() {
      try {
        while (waiting.length) {
          const item = (
            /** @type {Item} */
            waiting.shift()
          );
          current = item;
          item.resolve(await deliver(item));
        }
      } finally {
        current = null;
        report("idle");
        idleWaiters.splice(0).forEach((resolve) => resolve());
      }
    }
    async function deliver(item) {
      var _a;
      for (let attempt = 1; ; attempt += 1) {
        const outcome = await (item.early || post(item));
        item.early = void 0;
        const result = { seq: item.seq, attempts: attempt, httpStatus: outcome.status };
        if (outcome.ok) {
          report("sent", { seq: item.seq });
          const response = (
            /** @type {Accepted | null} */
            outcome.body
          );
          return {
            ...result,
            status: "sent",
            messageId: (_a = response == null ? void 0 : response.messageId) != null ? _a : null,
            duplicate: Boolean(response == null ? void 0 : response.duplicate),
            response
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
    function overtaken(item) {
      return newestPosted > item.seq;
    }
    function failed(result, outcome) {
      const body = (
        /** @type {ApiError | GatewayError | null} */
        outcome.body
      );
      return { ...result, status: "failed", error: (body == null ? void 0 : body.status) === "error" ? body : null };
    }
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
          signal: timer.signal
        });
        return await readResponse(response, now());
      } catch (e) {
        return { ok: false, status: 0, retryAfterMs: null, body: null };
      } finally {
        timer.cancel();
        stats.inFlight -= 1;
      }
    }
    function flush() {
      while (waiting.length > 1) supersede(
        /** @type {Item} */
        waiting.shift()
      );
      const newest = waiting[0];
      if (newest && !newest.early) newest.early = post(newest);
      backoff.wake();
    }
    function idle() {
      if (!current && !waiting.length) return Promise.resolve();
      return new Promise((resolve) => idleWaiters.push(() => resolve(void 0)));
    }
    const stopWatching = watchPage(o.window === void 0 ? defaultWindow() : o.window, flush);
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
      }
    };
  }

  // src/widget.js
  var VERSION = "1.1.0";
  var REPLIES = {
    es: {
      name: "¡Hola! Soy Sofía, del equipo comercial. ¿Cómo te llamas?",
      email: "Encantada. ¿A qué email te enviamos la información?",
      need: "¡Gracias! ¿Qué producto te interesa y para cuándo lo necesitas?",
      close: "Perfecto, un comercial te escribirá en breve. ¿Puedo ayudarte en algo más?"
    },
    en: {
      name: "Hi! I'm Sofia from the sales team. What's your name?",
      email: "Nice to meet you. Which email should we send the details to?",
      need: "Thanks! Which product are you interested in, and by when do you need it?",
      close: "Great, someone from sales will write to you shortly. Anything else I can help with?"
    }
  };
  function looksSpanish(text) {
    return /[ñáéíóú¿¡]|\b(hola|quiero|gracias|llamo|necesito|busco|buenas|mi|es)\b/i.test(text);
  }
  function cannedReply(messages) {
    const said = messages.filter((m) => m.role === "user").map((m) => m.content).join(" \n ");
    const lines = looksSpanish(said) ? REPLIES.es : REPLIES.en;
    if (!/(me llamo|mi nombre es|my name is|\bi am\b|\bi'm\b|\bsoy\b)/i.test(said)) return lines.name;
    if (!/[^\s@]+@[^\s@]+\.[^\s@]+/.test(said)) return lines.email;
    if (!/(interes|quiero|necesit|busco|plan|precio|interested|want|need|looking|price)/i.test(said)) {
      return lines.need;
    }
    return lines.close;
  }
  var STYLE = [
    ".nxw{font:15px/1.4 system-ui,sans-serif;display:flex;flex-direction:column;border:1px solid #d0d7de;",
    "border-radius:12px;background:#fff;color:#1f2328;overflow:hidden;max-width:100%;height:100%;min-height:320px}",
    ".nxw-floating{position:fixed;right:16px;bottom:16px;width:min(360px,calc(100vw - 32px));height:460px;",
    "box-shadow:0 8px 24px rgba(0,0,0,.15);z-index:2147483000}",
    ".nxw-head{padding:10px 14px;background:#0b5cad;color:#fff;font-weight:600}",
    ".nxw-log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px}",
    ".nxw-msg{max-width:85%;padding:8px 12px;border-radius:14px;white-space:pre-wrap;overflow-wrap:anywhere}",
    ".nxw-user{align-self:flex-end;background:#0b5cad;color:#fff;border-bottom-right-radius:4px}",
    ".nxw-assistant{align-self:flex-start;background:#eef1f4;border-bottom-left-radius:4px}",
    ".nxw-form{display:flex;gap:6px;padding:8px;border-top:1px solid #d0d7de}",
    ".nxw-input{flex:1;min-width:0;padding:8px 10px;border:1px solid #d0d7de;border-radius:8px;font:inherit}",
    ".nxw-send{padding:8px 14px;border:0;border-radius:8px;background:#0b5cad;color:#fff;font:inherit}",
    ".nxw-status{font-size:12px;color:#57606a;padding:0 12px 6px;min-height:1.2em}"
  ].join("");
  function injectStyle(doc) {
    if (doc.getElementById("nxw-style")) return;
    const style = doc.createElement("style");
    style.id = "nxw-style";
    style.textContent = STYLE;
    doc.head.appendChild(style);
  }
  function element(doc, tag, className, text) {
    const node = doc.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    return node;
  }
  function statusText(status) {
    if (status.state === "retrying") {
      return `Connection problem; retrying in ${Math.ceil((status.delayMs || 0) / 1e3)} s…`;
    }
    if (status.state === "failed") return "Could not save the conversation.";
    if (status.state === "sending") return "Saving…";
    return "";
  }
  function loadTranscript(store, key) {
    try {
      const saved = JSON.parse(store.getItem(key) || "[]");
      return Array.isArray(saved) ? saved : [];
    } catch (e) {
      return [];
    }
  }
  function build(container, title) {
    const doc = container.ownerDocument;
    injectStyle(doc);
    container.classList.add("nxw");
    const log = element(doc, "div", "nxw-log");
    log.setAttribute("role", "log");
    log.setAttribute("aria-live", "polite");
    const form = element(doc, "form", "nxw-form");
    const input = element(doc, "input", "nxw-input");
    input.name = "message";
    input.autocomplete = "off";
    input.placeholder = "Write a message…";
    input.setAttribute("aria-label", "Message");
    const button = element(doc, "button", "nxw-send", "Send");
    button.type = "submit";
    const statusLine = element(doc, "div", "nxw-status");
    form.append(input, button);
    container.append(element(doc, "div", "nxw-head", title), log, statusLine, form);
    return { doc, log, form, input, statusLine };
  }
  function mount(container, options) {
    const o = { title: "Chat", reply: cannedReply, replyDelayMs: 350, ...options };
    const view = container.ownerDocument.defaultView;
    const sessionStore = safeStorage(() => o.sessionStore || (view == null ? void 0 : view.sessionStorage));
    let statusLine = null;
    let lastOutcome = "sent";
    const onStatus = (status) => {
      if (status.state === "sent" || status.state === "failed") lastOutcome = status.state;
      container.dataset.state = status.state === "sent" ? "sending" : status.state;
      container.dataset.pending = String(status.pending);
      const shown = status.state === "idle" ? { ...status, state: lastOutcome } : status;
      if (statusLine) statusLine.textContent = statusText(shown);
    };
    const sender = o.sender || createSender({
      ...o,
      endpoint: o.endpoint || "/api/nexus/producer",
      storage: safeStorage(() => o.storage || (view == null ? void 0 : view.localStorage)),
      sessionStore,
      window: o.window === void 0 ? view : o.window,
      onStatus
    });
    const ui = build(container, o.title);
    statusLine = ui.statusLine;
    const transcriptKey = `nexus:transcript:${sender.sessionId}`;
    const messages = loadTranscript(sessionStore, transcriptKey);
    container.dataset.state = "idle";
    container.dataset.pending = "0";
    container.dataset.sessionId = sender.sessionId;
    function show(message) {
      const bubble = element(ui.doc, "div", `nxw-msg nxw-${message.role}`, message.content);
      bubble.dataset.role = message.role;
      ui.log.appendChild(bubble);
      ui.log.scrollTop = ui.log.scrollHeight;
    }
    function add(role, content) {
      const message = { role, content };
      messages.push(message);
      show(message);
      sessionStore.setItem(transcriptKey, JSON.stringify(messages));
      return sender.send(messages.slice(), { source: "nexus-widget", widgetVersion: VERSION });
    }
    async function say(text) {
      const sent = add("user", text);
      const heard = messages.slice();
      await new Promise((resolve) => setTimeout(resolve, o.replyDelayMs));
      add("assistant", await o.reply(heard));
      return sent;
    }
    ui.form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = ui.input.value.trim();
      if (!text) return;
      ui.input.value = "";
      say(text);
    });
    messages.forEach(show);
    return { sender, messages, say };
  }

  // src/embed.js
  function scriptEndpoint(script2) {
    if (script2.dataset.endpoint) return new URL(script2.dataset.endpoint, location.href).href;
    return new URL("/api/nexus/producer", script2.src || location.href).href;
  }
  function autoMount(script2) {
    const doc = script2.ownerDocument;
    function start() {
      let container = script2.dataset.target ? doc.querySelector(script2.dataset.target) : null;
      if (!container) {
        container = doc.createElement("div");
        container.className = "nxw-floating";
        doc.body.appendChild(container);
      }
      api.instance = mount(container, {
        endpoint: scriptEndpoint(script2),
        title: script2.dataset.title || "Chat"
      });
    }
    if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", start);
    else start();
  }
  var api = {
    VERSION,
    DEFAULTS,
    backoffDelay,
    cannedReply,
    createSender,
    isRetryable,
    memoryStorage,
    mount,
    parseRetryAfter,
    instance: null
  };
  globalThis.NexusWidget = api;
  var script = typeof document === "undefined" ? null : document.currentScript;
  if (script instanceof HTMLScriptElement && script.src) autoMount(script);
})();
