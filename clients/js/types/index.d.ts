// The public types of the Nexus client. The HTTP shapes below are checked against the types
// generated from Nexus's /openapi.json (contract/check.ts), so they cannot drift from the server.

/** Who said a turn. */
export type Role = "user" | "assistant" | "system";

/** One turn of the conversation. */
export interface ChatMessage {
  role: Role;
  content: string;
}

/** The body of `POST /api/nexus/producer`: the whole conversation so far. */
export interface Snapshot {
  messages: ChatMessage[];
  fingerprint: string;
  sessionId: string;
  metadata?: { [key: string]: unknown } | null;
}

/** The 202 answer: the snapshot is committed to the queue (`duplicate` when a retry repeated it). */
export interface Accepted {
  status: "accepted";
  messageId: number;
  message: string;
  estimatedProcessingTime: string;
  sessionId: string;
  sequence: number;
  duplicate: boolean;
}

/** Why a request was refused (the `error` field of every 4xx and 503 body). */
export type ErrorCode =
  | "malformed_json"
  | "invalid_idempotency_key"
  | "unauthorized"
  | "request_timeout"
  | "payload_too_large"
  | "unsupported_media_type"
  | "invalid_snapshot"
  | "idempotency_key_reused"
  | "session_of_another_visitor"
  | "rate_limited"
  | "database_unavailable";

/** Which field of a refused snapshot is wrong, and why. */
export interface FieldProblem {
  loc: (string | number)[];
  msg: string;
}

/** The body of every refusal: 400, 401, 413, 415, 422, 429 and 503. */
export interface ApiError {
  status: "error";
  error: ErrorCode;
  message: string;
  detail?: FieldProblem[] | null;
}

/** Why a proxy in front of Nexus (a route handler, as in examples/nextjs) answered for it. */
export type GatewayErrorCode = "nexus_unreachable" | "nexus_timeout";

/** A proxy's own refusal, in Nexus's shape: 502 `nexus_unreachable`, 504 `nexus_timeout`. */
export interface GatewayError {
  status: "error";
  error: GatewayErrorCode;
  message: string;
}

/** The queue's figures, as the seed's `pgmq_metrics` gives them. */
export interface QueueMetrics {
  queue_length: number;
  oldest_msg_age_sec: number | null;
  newest_msg_age_sec: number | null;
  total_messages: number;
}

/** `GET /api/nexus/producer` when Postgres answers (200). */
export interface Health {
  status: "healthy" | "degraded";
  version: string;
  role: "message-producer";
  reasons: string[];
  queue: { name: string; metrics: QueueMetrics };
}

/** `GET /api/nexus/producer` when Postgres does not answer (503). */
export interface Unhealthy {
  status: "unhealthy";
  version: string;
  role: "message-producer";
  reasons: string[];
}

/** A key-value store with the Web Storage methods the sender uses. */
export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** What the sender tells `onStatus` as it works. */
export interface SenderStatus {
  state: "sending" | "retrying" | "sent" | "failed" | "idle";
  /** Snapshots queued or being delivered. */
  pending: number;
  seq?: number;
  delayMs?: number;
  httpStatus?: number;
}

/** The numbers that tune retries, the queue and time-outs. */
export interface Tuning {
  /** First back-off, doubled on each retry (with jitter). Default 500. */
  baseDelayMs: number;
  /** Longest back-off. Default 15000. */
  maxDelayMs: number;
  /** Longest wait a Retry-After header may impose. Default 60000. */
  maxRetryAfterMs: number;
  /** Attempts before a snapshot is given up. Default 12. */
  maxAttempts: number;
  /** Snapshots waiting behind the one being delivered; older ones beyond it are dropped. Default 50. */
  maxPending: number;
  /** A request is aborted (and retried) after this long. Default 15000. */
  timeoutMs: number;
}

/** The page the sender watches to flush its queue when the page is hidden or left. */
export interface PageLike {
  addEventListener(type: string, listener: () => void): void;
  removeEventListener(type: string, listener: () => void): void;
  document?: (PageLike & { visibilityState?: string }) | null;
}

export interface SenderOptions extends Partial<Tuning> {
  /** The producer's URL, e.g. "/api/nexus/producer" (relative URLs need a page to resolve). */
  endpoint: string;
  /** Defaults to the global fetch. */
  fetch?: typeof fetch;
  /** The app's own session id; default: one made per browser tab and kept in `sessionStore`. */
  sessionId?: string;
  /** The app's own visitor id; default: one made per browser and kept in `storage`. */
  fingerprint?: string;
  /** Visitor-lasting storage (the fingerprint). Default: localStorage, or memory where there is none. */
  storage?: KeyValueStore;
  /** Tab-lasting storage (session id and sequence). Default: sessionStorage, or memory. */
  sessionStore?: KeyValueStore;
  /** Headers added to every POST (e.g. for a route handler's own check). */
  headers?: Record<string, string>;
  /** The fetch `credentials` mode. Default "omit" (no cookies, so any origin can embed it). */
  credentials?: RequestCredentials;
  /** Flush on `pagehide` and on `visibilitychange` to hidden. Default: the global window, if any; null turns it off. */
  window?: PageLike | null;
  onStatus?: (status: SenderStatus) => void;
  /** For tests: the clock, the pause between retries, randomness and new ids. */
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
  newId?: () => string;
}

/** The snapshot reached Nexus and was committed. */
export interface Sent {
  status: "sent";
  seq: number;
  attempts: number;
  httpStatus: number;
  messageId: number | null;
  duplicate: boolean;
  response: Accepted | null;
}

/** Nexus refused the snapshot (a 4xx), or it kept failing for `maxAttempts` tries (httpStatus 0: the network). */
export interface Failed {
  status: "failed";
  seq: number;
  attempts: number;
  httpStatus: number;
  /** The last answer's body, when it had Nexus's error shape (a proxy's own included). */
  error: ApiError | GatewayError | null;
}

/** A newer snapshot (which holds every turn of this one) was sent instead. */
export interface Superseded {
  status: "superseded";
  seq: number;
  attempts: number;
}

export type SendResult = Sent | Failed | Superseded;

export interface Sender {
  /** Queue a snapshot; resolves when it is sent, refused, given up on, or superseded. */
  send(messages: ChatMessage[], metadata?: Record<string, unknown>): Promise<SendResult>;
  /** Post the newest waiting snapshot now, with `keepalive`, so it outlives the page. */
  flush(): void;
  /** Resolves once nothing is queued or in flight. */
  idle(): Promise<void>;
  /** Stop watching the page (the sender still sends). */
  close(): void;
  readonly sessionId: string;
  readonly fingerprint: string;
  readonly seq: number;
  readonly pending: number;
  readonly stats: { requests: number; inFlight: number; maxInFlight: number };
}

export declare const DEFAULTS: Readonly<Tuning>;
export declare function createSender(options: SenderOptions): Sender;
export declare function isRetryable(status: number): boolean;
export declare function parseRetryAfter(
  value: string | null | undefined,
  nowMs: number,
): number | null;
export declare function backoffDelay(
  attempt: number,
  retryAfterMs: number | null,
  options?: Partial<Tuning>,
  random?: () => number,
): number;
export declare function memoryStorage(): KeyValueStore;
export declare function safeStorage(get: () => KeyValueStore | undefined | null): KeyValueStore;
