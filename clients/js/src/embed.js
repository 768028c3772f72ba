/*
 * The script-tag build: Nexus serves this file, bundled into one classic script, as /widget.js.
 *
 *   <script src="https://nexus.example.com/widget.js" data-target="#chat" defer></script>
 *
 * Attributes of the script tag: data-target (a CSS selector to mount into; default a floating
 * panel), data-endpoint (default /api/nexus/producer on the script's own origin), data-title.
 * Everything is also on `window.NexusWidget` for pages that drive the widget themselves.
 */

import {
  DEFAULTS,
  backoffDelay,
  createSender,
  isRetryable,
  memoryStorage,
  parseRetryAfter,
} from "./sender.js";
import { VERSION, cannedReply, mount } from "./widget.js";

/** @import { Widget } from "../types/widget.js" */

/** @param {HTMLScriptElement} script */
function scriptEndpoint(script) {
  if (script.dataset.endpoint) return new URL(script.dataset.endpoint, location.href).href;
  return new URL("/api/nexus/producer", script.src || location.href).href;
}

/** @param {HTMLScriptElement} script */
function autoMount(script) {
  const doc = script.ownerDocument;
  function start() {
    /** @type {HTMLElement | null} */
    let container = script.dataset.target ? doc.querySelector(script.dataset.target) : null;
    if (!container) {
      container = doc.createElement("div");
      container.className = "nxw-floating";
      doc.body.appendChild(container);
    }
    api.instance = mount(container, {
      endpoint: scriptEndpoint(script),
      title: script.dataset.title || "Chat",
    });
  }
  if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", start);
  else start();
}

/** @type {{ instance: Widget | null } & Record<string, unknown>} */
const api = {
  VERSION,
  DEFAULTS,
  backoffDelay,
  cannedReply,
  createSender,
  isRetryable,
  memoryStorage,
  mount,
  parseRetryAfter,
  instance: null,
};

/** @type {any} */ (globalThis).NexusWidget = api;

const script = typeof document === "undefined" ? null : document.currentScript;
if (script instanceof HTMLScriptElement && script.src) autoMount(script);
