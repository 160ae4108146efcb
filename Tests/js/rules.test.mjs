// The browser client's pure functions against the shared vectors (Tests/vectors), which the
// Swift tests run too: both clients must show the same list, in the same order, the same way.
//   node --test Tests/js
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { compareUsers, applyDiff, youFirst } from "../../Sources/PresenceServer/Resources/web/presence.js";
import { facePileModel, formatCount } from "../../Sources/PresenceServer/Resources/web/presence-facepile.js";

const vectors = JSON.parse(readFileSync(new URL("../vectors/presence-rules.json", import.meta.url), "utf8"));

// The server omits absent fields; the vectors write them as null.
const normalized = (user) => Object.fromEntries(Object.entries(user).filter(([, value]) => value !== null && value !== undefined));

for (const vector of vectors.order) {
  test(`order: ${vector.name}`, () => {
    assert.deepEqual(vector.users.slice().sort(compareUsers).map((u) => u.userId), vector.expected);
  });
}

for (const vector of vectors.diffs) {
  test(`diff: ${vector.name}`, () => {
    assert.deepEqual(applyDiff(vector.before, vector.diff).map(normalized), vector.after.map(normalized));
  });
}

for (const vector of vectors.youFirst) {
  test(`you first: ${vector.name}`, () => {
    assert.deepEqual(youFirst(vector.users, vector.userId).map((u) => u.userId), vector.expected);
  });
}

for (const vector of vectors.facePile) {
  test(`face pile: ${vector.name}`, () => {
    const model = facePileModel(vector.users, vector.now, vector.userCount);
    const expected = vector.expected;
    if (expected.visible) assert.deepEqual(model.visible, expected.visible);
    if (expected.overflow) assert.deepEqual(model.overflow, expected.overflow);
    if (expected.visibleUserIds) assert.deepEqual(model.visible.map((face) => face.userId), expected.visibleUserIds);
    if (expected.overflowUserIds) assert.deepEqual(model.overflow.map((face) => face.userId), expected.overflowUserIds);
    assert.equal(model.overflowCount, expected.overflowCount);
    if (expected.overflowLabel) assert.equal(`+${formatCount(model.overflowCount)}`, expected.overflowLabel);
  });
}

test("the vectors are all there", () => {
  for (const section of ["order", "diffs", "youFirst", "facePile"]) assert.ok(vectors[section].length > 0, section);
});
