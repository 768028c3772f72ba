import type { NextConfig } from "next";

// Where Nexus listens. In development `next dev` has port 3000, so Nexus runs on 3001:
// `NEXUS_PORT=3001 make up`.
const NEXUS_URL = process.env.NEXUS_URL ?? "http://127.0.0.1:3001";

const nextConfig: NextConfig = {
  // Way 1, no code: proxy /api/nexus/* to Nexus. Chosen at build time with
  // NEXUS_FORWARD=rewrite; `beforeFiles` puts it ahead of the route handler in app/api/nexus.
  async rewrites() {
    if (process.env.NEXUS_FORWARD !== "rewrite") return [];
    return {
      beforeFiles: [{ source: "/api/nexus/:path*", destination: `${NEXUS_URL}/api/nexus/:path*` }],
      afterFiles: [],
      fallback: [],
    };
  },
};

export default nextConfig;
