/*
 * `useNexusChat`: the sender for React client components. It makes one sender per endpoint,
 * session and visitor, mirrors its status into state, and stops watching the page on unmount.
 * React is a peer dependency of this entry point only; the core needs nothing.
 */

import { useCallback, useEffect, useRef, useState } from "react";
import { createSender } from "./sender.js";

/**
 * @import { ChatMessage, SendResult, Sender, SenderStatus } from "../types/index.js"
 * @import { NexusChat, NexusChatOptions } from "../types/react.js"
 */

/**
 * @param {NexusChatOptions} options
 * @returns {NexusChat}
 */
export function useNexusChat(options) {
  const latest = useRef(options);
  latest.current = options;
  /** @type {import("react").MutableRefObject<Sender | null>} */
  const senderRef = useRef(null);
  const [view, setView] = useState(() => ({
    state: /** @type {SenderStatus["state"]} */ ("idle"),
    pending: 0,
    sessionId: options.sessionId ?? null,
    fingerprint: options.fingerprint ?? null,
    /** @type {SendResult | null} */
    lastResult: null,
  }));
  const { endpoint, sessionId, fingerprint } = options;

  useEffect(() => {
    const sender = createSender({
      ...latest.current,
      onStatus(status) {
        setView((prev) => ({ ...prev, state: status.state, pending: status.pending }));
        latest.current.onStatus?.(status);
      },
    });
    senderRef.current = sender;
    setView((prev) => ({ ...prev, sessionId: sender.sessionId, fingerprint: sender.fingerprint }));
    return () => {
      sender.close();
      if (senderRef.current === sender) senderRef.current = null;
    };
  }, [endpoint, sessionId, fingerprint]);

  const send = useCallback(
    /**
     * @param {ChatMessage[]} messages
     * @param {Record<string, unknown>} [metadata]
     */
    async (messages, metadata) => {
      const sender = senderRef.current;
      if (!sender) throw new Error("useNexusChat: send() was called before the component mounted");
      const result = await sender.send(messages, metadata);
      setView((prev) => ({ ...prev, lastResult: result }));
      return result;
    },
    [],
  );

  return { ...view, send };
}
