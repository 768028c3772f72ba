/*
 * Nexus chat widget. Embed it on any page:
 *
 *   <script src="https://nexus.example.com/widget.js" data-target="#chat" defer></script>
 *
 * After every turn it posts the whole conversation so far (a snapshot) to the Nexus producer,
 * with a stable session id and visitor fingerprint, a monotonic sequence number and an
 * Idempotency-Key per snapshot. Snapshots of a session are sent one at a time, in order
 * (never two requests in flight), and retried with back-off on 429, 503 and network errors.
 *
 * Attributes of the script tag: data-target (a CSS selector to mount into; default a floating
 * panel), data-endpoint (default /api/nexus/producer on the script's own origin), data-title.
 * The sending logic, `NexusWidget.createSender`, takes its fetch, sleep, clock and storage as
 * arguments, so node's test runner exercises it without a browser.
 */
(function (root) {
  "use strict";

  var VERSION = "1.0.0";
  var KEYS = { fingerprint: "nexus:fingerprint", session: "nexus:session", seq: "nexus:seq:" };
  var RETRYABLE = [408, 425, 429, 500, 502, 503, 504];
  // Browsers refuse keepalive requests whose bodies exceed 64 KiB.
  var KEEPALIVE_LIMIT = 60000;
  var DEFAULTS = {
    baseDelayMs: 500,
    maxDelayMs: 15000,
    maxRetryAfterMs: 60000,
    maxAttempts: 12,
    maxPending: 50,
    timeoutMs: 15000,
  };

  function isRetryable(status) {
    return status === 0 || RETRYABLE.indexOf(status) !== -1;
  }

  /** Milliseconds a Retry-After header asks for (seconds or an HTTP date), or null. */
  function parseRetryAfter(value, nowMs) {
    if (value === null || value === undefined || String(value).trim() === "") return null;
    var text = String(value).trim();
    if (/^\d+$/.test(text)) return Number(text) * 1000;
    var at = Date.parse(text);
    return Number.isNaN(at) ? null : Math.max(0, at - nowMs);
  }

  /** Exponential back-off with jitter, never shorter than the server's Retry-After (capped). */
  function backoffDelay(attempt, retryAfterMs, options, random) {
    var o = Object.assign({}, DEFAULTS, options);
    var exp = Math.min(o.maxDelayMs, o.baseDelayMs * Math.pow(2, Math.max(0, attempt - 1)));
    var jittered = exp / 2 + (exp / 2) * (random ? random() : Math.random());
    var hinted = Math.min(o.maxRetryAfterMs, retryAfterMs || 0);
    return Math.round(Math.max(jittered, hinted));
  }

  function memoryStorage() {
    var items = new Map();
    return {
      getItem: function (k) { return items.has(k) ? items.get(k) : null; },
      setItem: function (k, v) { items.set(k, String(v)); },
      removeItem: function (k) { items.delete(k); },
    };
  }

  /** A storage that never throws: private browsing and blocked cookies fall back to memory. */
  function safeStorage(get) {
    try {
      var store = get();
      var probe = "nexus:probe";
      store.setItem(probe, "1");
      store.removeItem(probe);
      return store;
    } catch (err) {
      return memoryStorage();
    }
  }

  function randomId(random) {
    var c = root.crypto;
    if (c && typeof c.randomUUID === "function") return c.randomUUID();
    var hex = "";
    for (var i = 0; i < 32; i += 1) hex += Math.floor((random || Math.random)() * 16).toString(16);
    return hex;
  }

  function remember(store, key, make) {
    var value = store.getItem(key);
    if (!value) {
      value = make();
      store.setItem(key, value);
    }
    return value;
  }

  function defaultSleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  async function readResponse(response, nowMs) {
    var body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    return {
      ok: response.status >= 200 && response.status < 300,
      status: response.status,
      retryAfterMs: parseRetryAfter(response.headers.get("retry-after"), nowMs),
      messageId: body && body.messageId,
      duplicate: Boolean(body && body.duplicate),
    };
  }

  /**
   * The sending half of the widget: `send(messages)` queues a snapshot and resolves once it is
   * accepted (or given up on). Options: endpoint, fetch (required); sleep, now, random, newId,
   * storage (visitor-lasting: fingerprint), sessionStore (tab-lasting: session and sequence),
   * onStatus, and the tuning numbers of DEFAULTS.
   */
  function createSender(options) {
    var o = Object.assign({}, DEFAULTS, options);
    if (typeof o.fetch !== "function") throw new TypeError("createSender needs a fetch function");
    if (!o.endpoint) throw new TypeError("createSender needs an endpoint");
    var sleep = o.sleep || defaultSleep;
    var now = o.now || Date.now;
    var random = o.random || Math.random;
    var newId = o.newId || function () { return randomId(random); };
    var storage = o.storage || memoryStorage();
    var sessionStore = o.sessionStore || storage;
    var fingerprint = remember(storage, KEYS.fingerprint, newId);
    var sessionId = remember(sessionStore, KEYS.session, newId);
    var seqKey = KEYS.seq + sessionId;
    var seq = Number(sessionStore.getItem(seqKey)) || 0;
    var waiting = [];
    var current = null;
    var idleWaiters = [];
    var stats = { requests: 0, inFlight: 0, maxInFlight: 0 };

    function pending() {
      return waiting.length + (current ? 1 : 0);
    }

    function report(state, extra) {
      if (o.onStatus) o.onStatus(Object.assign({ state: state, pending: pending() }, extra));
    }

    function send(messages, metadata) {
      seq += 1;
      sessionStore.setItem(seqKey, String(seq));
      var item = {
        seq: seq,
        key: sessionId + ":" + seq,
        body: JSON.stringify({
          messages: messages,
          fingerprint: fingerprint,
          sessionId: sessionId,
          metadata: Object.assign({}, metadata, { clientSeq: seq }),
        }),
      };
      var done = new Promise(function (resolve) { item.resolve = resolve; });
      waiting.push(item);
      // A snapshot holds the whole conversation, so a newer one stands in for a dropped older one.
      while (waiting.length > o.maxPending) {
        var dropped = waiting.shift();
        dropped.resolve({ status: "superseded", seq: dropped.seq, attempts: 0 });
      }
      if (!current) drain();
      return done;
    }

    async function drain() {
      try {
        while (waiting.length) {
          current = waiting.shift();
          current.resolve(await deliver(current));
        }
      } finally {
        current = null;
        report("idle");
        idleWaiters.splice(0).forEach(function (resolve) { resolve(); });
      }
    }

    async function deliver(item) {
      for (var attempt = 1; ; attempt += 1) {
        var outcome = await post(item);
        var result = { seq: item.seq, attempts: attempt, httpStatus: outcome.status };
        if (outcome.ok) {
          report("sent", { seq: item.seq });
          return Object.assign(result, {
            status: "sent", messageId: outcome.messageId, duplicate: outcome.duplicate,
          });
        }
        if (!isRetryable(outcome.status) || attempt >= o.maxAttempts) {
          report("failed", { seq: item.seq, httpStatus: outcome.status });
          return Object.assign(result, { status: "failed" });
        }
        var delay = backoffDelay(attempt, outcome.retryAfterMs, o, random);
        report("retrying", { seq: item.seq, delayMs: delay, httpStatus: outcome.status });
        await sleep(delay);
      }
    }

    async function post(item) {
      stats.requests += 1;
      stats.inFlight += 1;
      stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
      report("sending", { seq: item.seq });
      var timer = timeout(o.timeoutMs);
      try {
        var response = await o.fetch(o.endpoint, {
          method: "POST",
          headers: { "Content-Type": "application/json", "Idempotency-Key": item.key },
          body: item.body,
          credentials: "omit",
          keepalive: item.body.length < KEEPALIVE_LIMIT,
          signal: timer.signal,
        });
        return await readResponse(response, now());
      } catch (err) {
        return { ok: false, status: 0, retryAfterMs: null };
      } finally {
        timer.cancel();
        stats.inFlight -= 1;
      }
    }

    function idle() {
      if (!current && !waiting.length) return Promise.resolve();
      return new Promise(function (resolve) { idleWaiters.push(resolve); });
    }

    return {
      send: send,
      idle: idle,
      sessionId: sessionId,
      fingerprint: fingerprint,
      stats: stats,
      get seq() { return seq; },
      get pending() { return pending(); },
    };
  }

  function timeout(ms) {
    if (typeof AbortController !== "function" || !ms) {
      return { signal: undefined, cancel: function () {} };
    }
    var controller = new AbortController();
    var handle = setTimeout(function () { controller.abort(); }, ms);
    return { signal: controller.signal, cancel: function () { clearTimeout(handle); } };
  }

  var REPLIES = {
    es: {
      name: "¡Hola! Soy Sofía, del equipo comercial. ¿Cómo te llamas?",
      email: "Encantada. ¿A qué email te enviamos la información?",
      need: "¡Gracias! ¿Qué producto te interesa y para cuándo lo necesitas?",
      close: "Perfecto, un comercial te escribirá en breve. ¿Puedo ayudarte en algo más?",
    },
    en: {
      name: "Hi! I'm Sofia from the sales team. What's your name?",
      email: "Nice to meet you. Which email should we send the details to?",
      need: "Thanks! Which product are you interested in, and by when do you need it?",
      close: "Great, someone from sales will write to you shortly. Anything else I can help with?",
    },
  };

  function looksSpanish(text) {
    return /[ñáéíóú¿¡]|\b(hola|quiero|gracias|llamo|necesito|busco|buenas|mi|es)\b/i.test(text);
  }

  /** The demo's assistant: asks for a name, an email, then what they need; works offline. */
  function cannedReply(messages) {
    var said = messages
      .filter(function (m) { return m.role === "user"; })
      .map(function (m) { return m.content; })
      .join(" \n ");
    var lines = looksSpanish(said) ? REPLIES.es : REPLIES.en;
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
    ".nxw-status{font-size:12px;color:#57606a;padding:0 12px 6px;min-height:1.2em}",
  ].join("");

  function injectStyle(doc) {
    if (doc.getElementById("nxw-style")) return;
    var style = doc.createElement("style");
    style.id = "nxw-style";
    style.textContent = STYLE;
    doc.head.appendChild(style);
  }

  function element(doc, tag, className, text) {
    var node = doc.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  function statusText(status) {
    if (status.state === "retrying") {
      return "Connection problem; retrying in " + Math.ceil(status.delayMs / 1000) + " s…";
    }
    if (status.state === "failed") return "Could not save the conversation.";
    if (status.state === "sending") return "Saving…";
    return "";
  }

  function loadTranscript(store, key) {
    try {
      var saved = JSON.parse(store.getItem(key) || "[]");
      return Array.isArray(saved) ? saved : [];
    } catch (err) {
      return [];
    }
  }

  /** Build the chat UI inside `container`; returns {sender, messages, say}. */
  function mount(container, options) {
    var o = Object.assign({ title: "Chat", reply: cannedReply, replyDelayMs: 350 }, options);
    var doc = container.ownerDocument;
    var sessionStore = o.sessionStore || safeStorage(function () { return root.sessionStorage; });
    var sender = o.sender || createSender({
      endpoint: o.endpoint,
      fetch: root.fetch.bind(root),
      storage: o.storage || safeStorage(function () { return root.localStorage; }),
      sessionStore: sessionStore,
      onStatus: function (status) {
        container.dataset.state = status.state === "sent" ? "sending" : status.state;
        container.dataset.pending = String(status.pending);
        statusLine.textContent = statusText(status);
      },
    });
    var transcriptKey = "nexus:transcript:" + sender.sessionId;
    var messages = loadTranscript(sessionStore, transcriptKey);
    injectStyle(doc);
    container.classList.add("nxw");
    container.dataset.state = "idle";
    container.dataset.pending = "0";
    container.dataset.sessionId = sender.sessionId;
    var log = element(doc, "div", "nxw-log");
    log.setAttribute("role", "log");
    log.setAttribute("aria-live", "polite");
    var form = element(doc, "form", "nxw-form");
    var input = element(doc, "input", "nxw-input");
    input.name = "message";
    input.autocomplete = "off";
    input.placeholder = "Write a message…";
    input.setAttribute("aria-label", "Message");
    var button = element(doc, "button", "nxw-send", "Send");
    button.type = "submit";
    var statusLine = element(doc, "div", "nxw-status");
    form.append(input, button);
    container.append(element(doc, "div", "nxw-head", o.title), log, statusLine, form);

    function show(message) {
      var bubble = element(doc, "div", "nxw-msg nxw-" + message.role, message.content);
      bubble.dataset.role = message.role;
      log.appendChild(bubble);
      log.scrollTop = log.scrollHeight;
    }

    function add(role, content) {
      var message = { role: role, content: content };
      messages.push(message);
      show(message);
      sessionStore.setItem(transcriptKey, JSON.stringify(messages));
      return sender.send(messages.slice(), { source: "nexus-widget", widgetVersion: VERSION });
    }

    async function say(text) {
      var sent = add("user", text);
      var heard = messages.slice(); // answer what was said so far, even if the visitor types on
      await new Promise(function (resolve) { setTimeout(resolve, o.replyDelayMs); });
      add("assistant", await o.reply(heard));
      return sent;
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var text = input.value.trim();
      if (!text) return;
      input.value = "";
      say(text);
    });
    messages.forEach(show);
    return { sender: sender, messages: messages, say: say };
  }

  function scriptEndpoint(script) {
    if (script.dataset.endpoint) return new URL(script.dataset.endpoint, root.location.href).href;
    return new URL("/api/nexus/producer", script.src || root.location.href).href;
  }

  function autoMount(script) {
    var doc = script.ownerDocument;
    function start() {
      var container = script.dataset.target && doc.querySelector(script.dataset.target);
      if (!container) {
        container = element(doc, "div", "nxw-floating");
        doc.body.appendChild(container);
      }
      root.NexusWidget.instance = mount(container, {
        endpoint: scriptEndpoint(script),
        title: script.dataset.title || "Chat",
      });
    }
    if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", start);
    else start();
  }

  root.NexusWidget = {
    VERSION: VERSION,
    DEFAULTS: DEFAULTS,
    backoffDelay: backoffDelay,
    cannedReply: cannedReply,
    createSender: createSender,
    isRetryable: isRetryable,
    memoryStorage: memoryStorage,
    mount: mount,
    parseRetryAfter: parseRetryAfter,
  };

  if (root.document && root.document.currentScript && root.document.currentScript.src) {
    autoMount(root.document.currentScript);
  }
})(typeof globalThis !== "undefined" ? globalThis : this);
