import assert from "node:assert/strict";
import { test } from "node:test";

import { encodeLeadingOnes } from "../node_modules/@moq/net/varint.js";
import { parseLocProperties, readVarint } from "../src/loc";

test("varints match @moq/net's draft-18 encoder", () => {
  for (const n of [0, 1, 63, 127, 128, 16383, 16384, 2 ** 21, 2 ** 30, 2 ** 35, 2 ** 42, 2 ** 49, 2 ** 53 - 1]) {
    const bytes = encodeLeadingOnes(n);
    assert.deepEqual(readVarint(bytes, 0), [BigInt(n), bytes.length], `value ${n}`);
  }
  for (const n of [2n ** 56n + 3n, 2n ** 62n, 2n ** 64n - 1n]) {
    const bytes = encodeLeadingOnes(n);
    assert.deepEqual(readVarint(bytes, 0), [n, bytes.length], `value ${n}`);
  }
});

test("properties: media time with TIMESCALE, wall clock without, unknown skipped", () => {
  const v = encodeLeadingOnes;
  const cat = (...p: Uint8Array[]) => Uint8Array.from(p.flatMap((x) => [...x]));
  // TIMESCALE 90000, TIMESTAMP 180000 (2 s), an odd unknown property 0x11 with 2 bytes.
  const media = cat(v(0x08), v(90_000), v(0x08), v(180_000), v(1), v(2), new Uint8Array([9, 9]));
  assert.deepEqual(parseLocProperties(media), { timestampUs: 2_000_000 });
  assert.deepEqual(parseLocProperties(cat(v(0x10), v(1234))), { timestampUs: 1234, wallClock: true });
  assert.deepEqual(parseLocProperties(undefined), {});
  assert.throws(() => parseLocProperties(cat(v(0x11), v(5), new Uint8Array([1]))), /runs past/);
  assert.throws(() => parseLocProperties(new Uint8Array([0x80])), /ends inside a varint/);
});
