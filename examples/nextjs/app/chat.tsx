"use client";

import type { ChatMessage } from "@nexus-ingest/client";
import { useNexusChat } from "@nexus-ingest/client/react";
import { cannedReply } from "@nexus-ingest/client/widget";
import { type FormEvent, useRef, useState } from "react";

/** A chat box whose every turn is posted to Nexus (through /api/nexus/producer). */
export function Chat({ conversationId }: { conversationId: string }) {
  const nexus = useNexusChat({ endpoint: "/api/nexus/producer", sessionId: conversationId });
  const [messages, setMessages] = useState<ChatMessage[]>([]);
  const [draft, setDraft] = useState("");
  // The conversation so far, even between renders when the visitor types quickly.
  const said = useRef<ChatMessage[]>([]);

  function add(message: ChatMessage) {
    said.current = [...said.current, message];
    setMessages(said.current);
    void nexus.send(said.current, { page: "/" });
  }

  function onSubmit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const text = draft.trim();
    if (!text) return;
    setDraft("");
    add({ role: "user", content: text });
    add({ role: "assistant", content: cannedReply(said.current) });
  }

  return (
    <section
      id="chat"
      data-state={nexus.state}
      data-pending={nexus.pending}
      data-session-id={nexus.sessionId ?? ""}
      data-fingerprint={nexus.fingerprint ?? ""}
    >
      <ol aria-live="polite">
        {messages.map((message, index) => (
          <li key={index} data-role={message.role}>
            <strong>{message.role === "user" ? "You" : "Sofía"}:</strong> {message.content}
          </li>
        ))}
      </ol>
      <form onSubmit={onSubmit}>
        <input
          name="message"
          aria-label="Message"
          autoComplete="off"
          value={draft}
          onChange={(event) => setDraft(event.target.value)}
          placeholder="Write a message…"
        />
        <button type="submit">Send</button>
      </form>
      <p role="status">
        {nexus.state === "retrying" ? "Connection problem; retrying…" : ""}
        {nexus.lastResult?.status === "failed" ? "Could not save the conversation." : ""}
      </p>
    </section>
  );
}
