// Way 2, a route handler (the seed's app/api/nexus/producer/route.ts), forwarding to Nexus.
// Use it when the server should add something first: the signed-in user as the fingerprint,
// a check of your own, or a Nexus URL the browser never sees.
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
  } catch {
    // Nexus is unreachable: a 502 with Retry-After makes the client retry, with the same key.
    return Response.json(
      { status: "error", message: "Nexus is unreachable." },
      { status: 502, headers: { "Retry-After": "2" } },
    );
  }
}

/** Queue a conversation snapshot: the body and Idempotency-Key pass through untouched. */
export async function POST(request: Request): Promise<Response> {
  return forward(request, { method: "POST", body: await request.text() });
}

/** The seed's health check, for your monitoring. */
export async function GET(request: Request): Promise<Response> {
  return forward(request, { method: "GET" });
}
