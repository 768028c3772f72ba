/*
 * The chat widget: a small chat panel, answered by a canned assistant, that posts every turn
 * through the sender. Nexus serves it as /widget.js (built from src/embed.js) for any page to
 * embed with one script tag; apps that bundle their own code can `mount` it directly.
 */

import { createSender, safeStorage } from "./sender.js";

/**
 * @import { ChatMessage, KeyValueStore, Sender, SenderStatus } from "../types/index.js"
 * @import { MountOptions, Widget } from "../types/widget.js"
 */

export const VERSION = "1.1.0";

const REPLIES = {
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

/** @param {string} text */
function looksSpanish(text) {
  return /[ñáéíóú¿¡]|\b(hola|quiero|gracias|llamo|necesito|busco|buenas|mi|es)\b/i.test(text);
}

/**
 * The demo's assistant: asks for a name, an email, then what they need; works offline.
 * @param {ChatMessage[]} messages
 * @returns {string}
 */
export function cannedReply(messages) {
  const said = messages
    .filter((m) => m.role === "user")
    .map((m) => m.content)
    .join(" \n ");
  const lines = looksSpanish(said) ? REPLIES.es : REPLIES.en;
  if (!/(me llamo|mi nombre es|my name is|\bi am\b|\bi'm\b|\bsoy\b)/i.test(said)) return lines.name;
  if (!/[^\s@]+@[^\s@]+\.[^\s@]+/.test(said)) return lines.email;
  if (!/(interes|quiero|necesit|busco|plan|precio|interested|want|need|looking|price)/i.test(said)) {
    return lines.need;
  }
  return lines.close;
}

const STYLE = [
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

/** @param {Document} doc */
function injectStyle(doc) {
  if (doc.getElementById("nxw-style")) return;
  const style = doc.createElement("style");
  style.id = "nxw-style";
  style.textContent = STYLE;
  doc.head.appendChild(style);
}

/**
 * @template {keyof HTMLElementTagNameMap} K
 * @param {Document} doc
 * @param {K} tag
 * @param {string} [className]
 * @param {string} [text]
 * @returns {HTMLElementTagNameMap[K]}
 */
function element(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

/**
 * What the status line says.
 * @param {SenderStatus} status
 */
export function statusText(status) {
  if (status.state === "retrying") {
    return `Connection problem; retrying in ${Math.ceil((status.delayMs || 0) / 1000)} s…`;
  }
  if (status.state === "failed") return "Could not save the conversation.";
  if (status.state === "sending") return "Saving…";
  return "";
}

/**
 * @param {KeyValueStore} store
 * @param {string} key
 * @returns {ChatMessage[]}
 */
function loadTranscript(store, key) {
  try {
    const saved = JSON.parse(store.getItem(key) || "[]");
    return Array.isArray(saved) ? saved : [];
  } catch {
    return [];
  }
}

/**
 * The chat's parts: a log of bubbles, a status line and a form.
 * @param {HTMLElement} container
 * @param {string} title
 */
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

/**
 * Build the chat UI inside `container`.
 * @param {HTMLElement} container
 * @param {MountOptions} options
 * @returns {Widget}
 */
export function mount(container, options) {
  const o = { title: "Chat", reply: cannedReply, replyDelayMs: 350, ...options };
  const view = container.ownerDocument.defaultView;
  const sessionStore = safeStorage(() => o.sessionStore || view?.sessionStorage);
  /** @type {HTMLElement | null} */
  let statusLine = null;
  /** @type {SenderStatus["state"]} */
  let lastOutcome = "sent";
  /** @param {SenderStatus} status */
  const onStatus = (status) => {
    if (status.state === "sent" || status.state === "failed") lastOutcome = status.state;
    container.dataset.state = status.state === "sent" ? "sending" : status.state;
    container.dataset.pending = String(status.pending);
    // Going idle right after a failure must not wipe the line that tells of it.
    const shown = status.state === "idle" ? { ...status, state: lastOutcome } : status;
    if (statusLine) statusLine.textContent = statusText(shown);
  };
  // The sender first: should it throw, the host page is left as it was, not holding a chat
  // form without a submit handler (whose submit would navigate the page away).
  /** @type {Sender} */
  const sender =
    o.sender ||
    createSender({
      ...o,
      endpoint: o.endpoint || "/api/nexus/producer",
      storage: safeStorage(() => o.storage || view?.localStorage),
      sessionStore,
      window: o.window === undefined ? view : o.window,
      onStatus,
    });
  const ui = build(container, o.title);
  statusLine = ui.statusLine;
  const transcriptKey = `nexus:transcript:${sender.sessionId}`;
  const messages = loadTranscript(sessionStore, transcriptKey);
  container.dataset.state = "idle";
  container.dataset.pending = "0";
  container.dataset.sessionId = sender.sessionId;

  /** @param {ChatMessage} message */
  function show(message) {
    const bubble = element(ui.doc, "div", `nxw-msg nxw-${message.role}`, message.content);
    bubble.dataset.role = message.role;
    ui.log.appendChild(bubble);
    ui.log.scrollTop = ui.log.scrollHeight;
  }

  /**
   * @param {ChatMessage["role"]} role
   * @param {string} content
   */
  function add(role, content) {
    const message = { role, content };
    messages.push(message);
    show(message);
    sessionStore.setItem(transcriptKey, JSON.stringify(messages));
    return sender.send(messages.slice(), { source: "nexus-widget", widgetVersion: VERSION });
  }

  /** @param {string} text */
  async function say(text) {
    const sent = add("user", text);
    const heard = messages.slice(); // answer what was said so far, even if the visitor types on
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
