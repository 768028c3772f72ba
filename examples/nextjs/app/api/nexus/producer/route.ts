// Way 2, a route handler (the seed's app/api/nexus/producer/route.ts), forwarding to Nexus.
// Use it when the server should add something first: the signed-in user as the fingerprint,
// a check of your own, or a Nexus URL the browser never sees.
import type { GatewayError } from "@nexus-ingest/client";

const NEXUS_URL = process.env.NEXUS_URL ?? "http://127.0.0.1:3001";
const PRODUCER = `${NEXUS_URL}/api/nexus/producer`;

// What the browser sends that Nexus reads, and what Nexus answers that the sender reads.
const REQUEST_HEADERS = ["content-type", "idempotency-key", "traceparent", "x-forwarded-for"];
const ANSWER_HEADERS = ["content-type", "retry-after", "traceparent"];

function pick(from: Headers, names: string[]): Headers {
  const picked = new Headers();
  for (const name of names) {
    const value = from.get(name);
    if (value !== null) picked.set(name, value);
  }
  return picked;
}

async function forward(request: Request, init: RequestInit): Promise<Response> {
  try {
    const answer = await fetch(PRODUCER, {
      ...init,
      headers: pick(request.headers, REQUEST_HEADERS),
      cache: "no-store",
      signal: AbortSignal.timeout(10_000),
    });
    return new Response(answer.body, {
      status: answer.status,
      headers: pick(answer.headers, ANSWER_HEADERS),
    });
  } catch (error) {
    return unreachable(error);
  }
}

/**
 * Nexus did not answer: an error in Nexus's own shape (an `error` code and a message), with
 * Retry-After, so the client retries with the same Idempotency-Key (a timed-out snapshot may
 * have been queued; the key makes its retry count once).
 */
function unreachable(error: unknown): Response {
  const timedOut = error instanceof DOMException && error.name === "TimeoutError";
  const body: GatewayError = timedOut
    ? { status: "error", error: "nexus_timeout", message: "Nexus did not answer in time." }
    : { status: "error", error: "nexus_unreachable", message: "Nexus is unreachable." };
  return Response.json(body, { status: timedOut ? 504 : 502, headers: { "Retry-After": "2" } });
}

/** Queue a conversation snapshot: the body and Idempotency-Key pass through untouched. */
export async function POST(request: Request): Promise<Response> {
  return forward(request, { method: "POST", body: await request.text() });
}

/** The seed's health check, for your monitoring. */
export async function GET(request: Request): Promise<Response> {
  return forward(request, { method: "GET" });
}
