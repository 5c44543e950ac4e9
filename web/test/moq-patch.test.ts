// The build-time patches to @moq/net (build/patch-moq.mjs), tested on the bundled, patched
// modules: SUBSCRIBE_OK with a draft-18 Location parameter, object properties kept, and moqt-18
// when the browser cannot report a WebTransport subprotocol (Firefox ESR 153).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import * as Connection from "../node_modules/@moq/net/connection/connect.js";
import { Frame } from "../node_modules/@moq/net/ietf/object.js";
import { SubscribeOk } from "../node_modules/@moq/net/ietf/subscribe.js";
import { Version } from "../node_modules/@moq/net/ietf/version.js";
import { Reader } from "../node_modules/@moq/net/stream.js";
import { encodeLeadingOnes } from "../node_modules/@moq/net/varint.js";
// @ts-expect-error: a plain ES module of the build, without types
import { applyPatches, PATCHES } from "../build/patch-moq.mjs";
import { parseLocProperties } from "../src/loc";

const v = (n: number | bigint) => encodeLeadingOnes(n);
const concat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};
// These tests run bundled, from web/dist/test/.
const moqFile = (file: string) => new URL(`../../node_modules/@moq/net/${file}`, import.meta.url);
const u16 = (n: number) => new Uint8Array([n >> 8, n & 0xff]);

test("SUBSCRIBE_OK with a draft-18 Location (two varints, no length) decodes", async () => {
  // Track Alias 7, one parameter: LARGEST_OBJECT (0x09) = Location {Group 300, Object 5},
  // then Track Properties: TIMESCALE (0x08) = 1000000. What moq-transport 0.17 sends.
  const body = concat(v(7), v(1), v(0x09), v(300), v(5), v(0x08), v(1_000_000));
  const reader = new Reader(undefined, concat(u16(body.length), body), Version.DRAFT_18);
  const ok = await SubscribeOk.decode(reader, Version.DRAFT_18);
  assert.equal(ok.trackAlias, 7n);
  assert.deepEqual(ok.largest, { groupId: 300n, objectId: 5n });
  assert.equal(ok.properties.timescale, 1_000_000);
  assert.equal(await reader.done(), true);
});

test("SUBSCRIBE_OK without a Location decodes (our relay)", async () => {
  const body = concat(v(1), v(0));
  const ok = await SubscribeOk.decode(new Reader(undefined, concat(u16(body.length), body), Version.DRAFT_18), Version.DRAFT_18);
  assert.equal(ok.largest, undefined);
});

test("the unpatched @moq/net rejects that SUBSCRIBE_OK (the reason for the patch)", () => {
  const source = readFileSync(moqFile("ietf/parameters.js"), "utf8");
  const patched = applyPatches("ietf/parameters.js", source);
  assert.notEqual(patched, source);
  assert.match(patched, /version === Version\.DRAFT_18/);
  // Every patch's anchor is present exactly as often as expected in the installed version.
  for (const file of new Set<string>(PATCHES.map((p: { file: string }) => p.file))) {
    const text = readFileSync(moqFile(file), "utf8");
    assert.doesNotThrow(() => applyPatches(file, text), `patches apply to ${file}`);
  }
  assert.throws(() => applyPatches("ietf/object.js", "nothing to patch"), /expected its anchor/);
});

test("decoded objects keep their LOC property block", async () => {
  // An object with properties TIMESCALE=1e6 (0x08), TIMESTAMP=2.5 s (0x10), SEND_TIME (0x3A4C).
  const sendTime = 1_790_000_000_123_456;
  const props = concat(v(0x08), v(1_000_000), v(0x10 - 0x08), v(2_500_000), v(0x3a4c - 0x10), v(sendTime));
  const payload = new Uint8Array([1, 2, 3]);
  const bytes = concat(v(0), v(props.length), props, v(payload.length), payload);
  const flags = { hasExtensions: true, hasSubgroupObject: false, hasSubgroup: false, hasEnd: false, hasPriority: true, firstObject: true };
  const frame = (await Frame.decode(new Reader(undefined, bytes, Version.DRAFT_18), flags, undefined, Version.DRAFT_18)) as Frame & {
    properties?: Uint8Array;
  };
  assert.deepEqual([...(frame.payload ?? [])], [1, 2, 3]);
  assert.deepEqual(parseLocProperties(frame.properties), { timestampUs: 2_500_000, sendTimeUs: sendTime });
});

test("the subscriber passes properties through to readers", () => {
  const source = readFileSync(moqFile("ietf/subscriber.js"), "utf8");
  assert.match(applyPatches("ietf/subscriber.js", source), /properties: frame\.properties/);
});

// @moq/net's connect() uses Promise.withResolvers, which every browser the viewer supports has,
// and Node only from 22 on: supply it under Node 20.
if (!("withResolvers" in Promise)) {
  Object.assign(Promise, {
    withResolvers<T>() {
      let resolve!: (v: T) => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<T>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
}

/** A WebTransport stand-in that records which kind of stream the client opens first, then fails it. */
function fakeTransport(protocol?: string) {
  const opened: string[] = [];
  const refuse = (kind: string) => () => {
    opened.push(kind);
    return Promise.reject(new Error(`fake transport: no ${kind} streams`));
  };
  const transport: Record<string, unknown> = {
    ready: Promise.resolve(),
    closed: new Promise(() => {}),
    close() {},
    createBidirectionalStream: refuse("bidi"),
    createUnidirectionalStream: refuse("uni"),
    incomingBidirectionalStreams: new ReadableStream(),
    incomingUnidirectionalStreams: new ReadableStream(),
  };
  // Firefox ESR 153's WebTransport has no `protocol` attribute at all; Chromium's has one.
  if (protocol !== undefined) transport.protocol = protocol;
  return { transport: transport as unknown as WebTransport, opened };
}

test("a WebTransport without a `protocol` attribute (Firefox ESR 153) speaks moqt-18: SETUP on a uni stream", async () => {
  const { transport, opened } = fakeTransport();
  await assert.rejects(Connection.connect(new URL("https://relay.example:4443/"), { transport }), /fake transport/);
  assert.deepEqual(opened, ["uni"], "draft-18 SETUP opens a unidirectional stream (type 0x2F00)");
});

test("a WebTransport that negotiated moqt-18 speaks it; one whose server chose none keeps @moq/net's legacy SETUP", async () => {
  const chosen = fakeTransport("moqt-18");
  await assert.rejects(Connection.connect(new URL("https://relay.example:4443/"), { transport: chosen.transport }), /fake transport/);
  assert.deepEqual(chosen.opened, ["uni"]);
  // An empty `protocol` is a browser that could tell, and the server chose none: unchanged.
  const none = fakeTransport("");
  await assert.rejects(Connection.connect(new URL("https://relay.example:4443/"), { transport: none.transport }), /fake transport/);
  assert.deepEqual(none.opened, ["bidi"], "the pre-draft-17 CLIENT_SETUP goes on a bidirectional stream");
});
