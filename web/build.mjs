// Builds the viewer into dist/ (served by the relay: dist/watch.html at /watch/<broadcast>,
// dist/publish.html at /publish/<broadcast>, dist/assets/ at /assets/), applying the @moq/net
// patches of build/patch-moq.mjs.
//
//   node build.mjs            # the viewer
//   node build.mjs --tests    # only the unit tests, into dist/test/ (run by `npm test`);
//                             # the viewer in dist/ is left alone (a browser test may be using it)

import { copyFile, mkdir, readdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import * as esbuild from "esbuild";

import { moqPatchPlugin } from "./build/patch-moq.mjs";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");
const withTests = process.argv.includes("--tests");

if (withTests) {
  const outdir = join(dist, "test");
  await rm(outdir, { recursive: true, force: true });
  const tests = (await readdir(join(root, "test"))).filter((f) => f.endsWith(".test.ts"));
  await esbuild.build({
    entryPoints: tests.map((f) => join(root, "test", f)),
    outdir,
    outExtension: { ".js": ".mjs" },
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    sourcemap: "inline",
    logLevel: "warning",
    // The tests import single @moq/net modules, not all of them.
    plugins: [moqPatchPlugin({ requireAll: false })],
  });
  console.log(`tests: ${tests.length} file(s) in dist/test/`);
  process.exit(0);
}

await rm(dist, { recursive: true, force: true });
await mkdir(join(dist, "assets"), { recursive: true });

const result = await esbuild.build({
  entryPoints: [join(root, "src/main.ts")],
  outfile: join(dist, "assets/viewer.js"),
  bundle: true,
  format: "esm",
  target: ["chrome114", "firefox115"],
  minify: true,
  sourcemap: "linked",
  legalComments: "linked",
  metafile: true,
  logLevel: "warning",
  plugins: [moqPatchPlugin()],
});
const publish = await esbuild.build({
  entryPoints: [join(root, "src/publish.ts")],
  outfile: join(dist, "assets/publish.js"),
  bundle: true,
  format: "esm",
  target: ["chrome114", "firefox115"],
  minify: true,
  sourcemap: "linked",
  metafile: true,
  logLevel: "warning",
});
await copyFile(join(root, "static/watch.html"), join(dist, "watch.html"));
await copyFile(join(root, "static/publish.html"), join(dist, "publish.html"));
await copyFile(join(root, "static/viewer.css"), join(dist, "assets/viewer.css"));
const bytes = Object.values(result.metafile.outputs).reduce((n, o) => (o.entryPoint ? n + o.bytes : n), 0);
console.log(`viewer: dist/watch.html, dist/assets/viewer.js (${(bytes / 1024).toFixed(0)} KiB), dist/assets/viewer.css`);
const publishBytes = Object.values(publish.metafile.outputs).reduce((n, o) => (o.entryPoint ? n + o.bytes : n), 0);
console.log(`publish page: dist/publish.html, dist/assets/publish.js (${(publishBytes / 1024).toFixed(0)} KiB)`);
