import type { ChatMessage, SendResult, SenderOptions, SenderStatus } from "./index.js";

/** The sender's options; a new endpoint, sessionId or fingerprint makes a new sender. */
export type NexusChatOptions = SenderOptions;

export interface NexusChat {
  /** What the sender is doing now; "idle" once everything is delivered. */
  state: SenderStatus["state"];
  /** Snapshots queued or being delivered. */
  pending: number;
  /** The session and visitor ids in use (null until the component has mounted). */
  sessionId: string | null;
  fingerprint: string | null;
  /** How the last snapshot sent through this hook ended. */
  lastResult: SendResult | null;
  /** Post the conversation so far; call it after every turn (once the component has mounted). */
  send(messages: ChatMessage[], metadata?: Record<string, unknown>): Promise<SendResult>;
}

export declare function useNexusChat(options: NexusChatOptions): NexusChat;
