import type { ChatMessage, SendResult, Sender, SenderOptions, SenderStatus } from "./index.js";

export interface MountOptions extends Partial<Omit<SenderOptions, "onStatus">> {
  /** The panel's heading. Default "Chat". */
  title?: string;
  /** The assistant: given the conversation so far, its answer. Default `cannedReply`. */
  reply?: (messages: ChatMessage[]) => string | Promise<string>;
  /** How long the assistant "types" before it answers. Default 350. */
  replyDelayMs?: number;
  /** A sender of your own (the widget then ignores the sender options). */
  sender?: Sender;
}

export interface Widget {
  sender: Sender;
  /** The conversation shown, oldest first. */
  messages: ChatMessage[];
  /** Say something as the visitor; resolves when that snapshot is settled. */
  say(text: string): Promise<SendResult>;
}

export declare const VERSION: string;
export declare function cannedReply(messages: ChatMessage[]): string;
export declare function statusText(status: SenderStatus): string;
export declare function mount(container: HTMLElement, options: MountOptions): Widget;
