// The TypeScript declarations of the browser client (presence.d.ts, presence-facepile.d.ts),
// checked with Debian's tsc: real usage compiles under --strict, and each deliberate mistake in
// Tests/ts/wrong-usage.ts fails with the error its `expect TSxxxx` comment names, on its line.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../..", import.meta.url));
const tsc = (file) =>
  spawnSync("tsc", ["--noEmit", "--strict", "--target", "es2020", "--module", "es2020", "--moduleResolution", "node",
    "--lib", "es2020,dom", file], { cwd: root, encoding: "utf8" });

test("an app's usage type-checks under --strict", () => {
  const result = tsc("Tests/ts/usage.ts");
  assert.equal(result.error, undefined, "tsc must be installed (Debian's node-typescript)");
  assert.equal(result.status, 0, result.stdout + result.stderr);
});

test("each deliberate mistake fails with its own error", () => {
  const result = tsc("Tests/ts/wrong-usage.ts");
  assert.equal(result.error, undefined, "tsc must be installed (Debian's node-typescript)");
  assert.notEqual(result.status, 0);
  const found = [...result.stdout.matchAll(/wrong-usage\.ts\((\d+),\d+\): error (TS\d+)/g)].map((m) => `${m[1]}:${m[2]}`);
  const expected = readFileSync(`${root}/Tests/ts/wrong-usage.ts`, "utf8").split("\n")
    .map((line, index) => [index + 1, line.match(/expect (TS\d+)/)])
    .filter(([, match]) => match)
    .map(([line, match]) => `${line}:${match[1]}`);
  assert.ok(expected.length >= 5);
  assert.deepEqual(found, expected);
});

test("the web folder packs as an npm package with its modules and types", () => {
  const result = spawnSync("npm", ["pack", "--dry-run", "--json"], {
    cwd: `${root}/Sources/PresenceServer/Resources/web`, encoding: "utf8",
    env: { ...process.env, npm_config_update_notifier: "false", npm_config_fund: "false" },
  });
  assert.equal(result.status, 0, result.stderr);
  const [pack] = JSON.parse(result.stdout);
  assert.equal(pack.name, "swift-presence-client");
  assert.deepEqual(pack.files.map((file) => file.path).sort(), [
    "package.json", "presence-facepile.d.ts", "presence-facepile.js", "presence-react.d.ts", "presence-react.js",
    "presence.d.ts", "presence.js",
  ]);
  const manifest = JSON.parse(readFileSync(`${root}/Sources/PresenceServer/Resources/web/package.json`, "utf8"));
  for (const entry of Object.values(manifest.exports)) {
    for (const file of Object.values(entry)) assert.ok(pack.files.some((f) => `./${f.path}` === file), file);
  }
});
