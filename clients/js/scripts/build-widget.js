// Bundle src/embed.js into the classic script Nexus serves as /widget.js. The bundle is
// committed (Nexus runs with Python alone), so `--check` fails when it is not a fresh build.
import { build } from "esbuild";
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const ENTRY = fileURLToPath(new URL("../src/embed.js", import.meta.url));
const TARGET = fileURLToPath(
  new URL("../../../src/nexus_ingest/dashboard/static/widget.js", import.meta.url),
);
const BANNER = "// Generated from clients/js by `npm run build:widget`; edit clients/js/src, not this file.";

const result = await build({
  entryPoints: [ENTRY],
  bundle: true,
  format: "iife",
  target: "es2018",
  charset: "utf8",
  legalComments: "none",
  banner: { js: BANNER },
  write: false,
  logLevel: "warning",
});
const fresh = result.outputFiles[0].text;

if (process.argv.includes("--check")) {
  if (readFileSync(TARGET, "utf8") !== fresh) {
    console.error(`${TARGET} is stale: run \`npm run build:widget\` in clients/js and commit it.`);
    process.exit(1);
  }
  console.log("widget.js is a fresh build of clients/js");
} else {
  writeFileSync(TARGET, fresh);
  console.log(`wrote ${TARGET} (${fresh.length} bytes)`);
}
