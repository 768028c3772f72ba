import { randomUUID } from "node:crypto";

import { Chat } from "./chat";

// A new conversation id for every visit, made on the server: the app owns its session ids.
export const dynamic = "force-dynamic";

export default function Home() {
  return (
    <main>
      <h1>Hosting that scales with you</h1>
      <p>Ask our assistant anything: say who you are, leave an email, tell it what you need.</p>
      <Chat conversationId={randomUUID()} />
    </main>
  );
}
