// Bundles src/main.ts with esbuild and copies index.html and app.css next to it, into the API
// package (api/agent_tree_api/static/), which `agent-tree api` serves at /. Nothing is fetched at
// run time: no CDN, no web fonts.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.env.AGENT_TREE_WEB_OUT || join(here, "..", "api", "agent_tree_api", "static");
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, "src", "main.ts")],
  bundle: true,
  minify: true,
  sourcemap: false,
  target: ["es2022"],
  format: "esm",
  outfile: join(out, "app.js"),
  logLevel: "warning",
});
for (const file of ["index.html", "app.css"]) copyFileSync(join(here, file), join(out, file));
console.log(`web: wrote ${out}/{index.html,app.js,app.css}`);
