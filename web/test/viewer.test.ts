// The viewer's pure logic: catalogs, caption cues, the playout clock.

import assert from "node:assert/strict";
import { test } from "node:test";

import { CueStore, lateHoldMs, parseTimeline } from "../src/captions";
import { applyDelta, defaultAudio, defaultCaptions, isCaptionTrack, mergeCatalogs, parseCatalog, trackLabel } from "../src/catalog";
import { LagMeter, PlayoutClock, nextDelay } from "../src/clock";

const enc = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));

const main = parseCatalog(
  enc({
    version: "draft-01",
    tracks: [
      { name: "video", packaging: "loc", role: "video", codec: "avc1.64001f", initRef: "video", width: 640, height: 360 },
      { name: "audio", packaging: "loc", role: "audio", codec: "opus", samplerate: 48000, channelConfig: "2", lang: "und", label: "Original", altGroup: 1 },
      { name: "audio-es", packaging: "loc", role: "audio", codec: "opus", samplerate: 48000, channelConfig: "2", lang: "es", label: "Dub (es, test)", altGroup: 1 },
      { name: "captions-en", packaging: "eventtimeline", role: "caption", lang: "en", label: "Captions (en)", eventType: "urn:msf:captions:webvtt" },
    ],
    initDataList: [{ id: "video", type: "inline", data: "AQID" }],
  }),
);
const ai = parseCatalog(
  enc({ version: "draft-01", tracks: [{ name: "captions-fr", packaging: "eventtimeline", role: "caption", lang: "fr" }] }),
);

test("catalogs of the broadcast and its sidecar merge, main first, with init data", () => {
  const tracks = mergeCatalogs(new Map([["demo/ai", ai], ["demo", main]]), "demo");
  assert.deepEqual(tracks.map((t) => t.key), ["demo|video", "demo|audio", "demo|audio-es", "demo|captions-en", "demo/ai|captions-fr"]);
  assert.deepEqual([...(tracks[0].init ?? [])], [1, 2, 3]);
  assert.equal(tracks.filter((t) => isCaptionTrack(t.track)).length, 2);
  assert.equal(defaultAudio(tracks)?.key, "demo|audio");
  const sidecarAudio = parseCatalog(enc({ tracks: [{ name: "audio", packaging: "loc", role: "audio", codec: "opus", samplerate: 48000 }] }));
  const withSidecarAudio = mergeCatalogs(new Map([["demo/ai", sidecarAudio], ["demo", main]]), "demo");
  assert.equal(defaultAudio(withSidecarAudio)?.key, "demo|audio");
  assert.equal(defaultCaptions(tracks, ["fr-CA", "en"])?.key, "demo/ai|captions-fr");
  assert.equal(defaultCaptions(tracks, ["de"])?.key, "demo|captions-en");
  assert.equal(trackLabel(tracks[1]), "Original");
  assert.equal(trackLabel(tracks[2]), "Dub (es, test)");
  assert.equal(trackLabel(tracks[4]), "French");
});

test("catalog delta updates add and remove tracks", () => {
  const updated = applyDelta(main, enc({ deltaUpdate: [{ remove: [{ name: "audio-es" }] }, { add: [{ name: "captions-de", packaging: "eventtimeline", role: "caption", lang: "de" }] }] }));
  assert.deepEqual(updated.tracks.map((t) => t.name), ["video", "audio", "captions-en", "captions-de"]);
  assert.throws(() => parseCatalog(enc({ tracks: "no" })), /no tracks array/);
  assert.throws(() => parseCatalog(enc([1])), /not a JSON object/);
});

test("cues: repeats dedupe, partial cues are replaced by id, active by time", () => {
  const store = new CueStore();
  const rec = (start: number, end: number, text: string, extra: object = {}) => ({ m: start, data: { start, end, text, ...extra } });
  store.add(parseTimeline(enc([rec(1000, 2000, "one", { id: "a" })])));
  store.add(parseTimeline(enc([rec(1000, 2000, "one", { id: "a" }), rec(1500, 3000, "two")])));
  assert.equal(store.size, 2);
  assert.deepEqual(store.active(1600).map(([, c]) => c.text), ["one", "two"]);
  assert.deepEqual(store.active(2000).map(([, c]) => c.text), ["two"]);
  store.add(parseTimeline(enc([rec(4000, 5000, "hel", { id: "p", final: false })])));
  store.add(parseTimeline(enc([rec(4000, 5200, "hello", { id: "p" })])));
  assert.deepEqual(store.active(5100).map(([, c]) => [c.text, c.final]), [["hello", true]]);
  store.prune(4500);
  assert.equal(store.size, 1);
  // A regions/styles header record is not a cue.
  assert.deepEqual(parseTimeline(enc([{ m: 0, data: { regions: [] } }])), []);
});

test("late cues from a live captioner show from arrival, and the newest late cue wins", () => {
  const store = new CueStore();
  const rec = (start: number, end: number, text: string, extra: object = {}) => ({ m: start, data: { start, end, text, ...extra } });
  // A partial arrives 1.5 s after its audio: the clock is at 11.5 s, the cue ended at 10 s.
  store.add(parseTimeline(enc([rec(8000, 10_000, "this is", { id: "u0", final: false })])), 11_500);
  assert.deepEqual(store.active(11_600).map(([, c]) => c.text), ["this is"]);
  // The final replaces it and is held from its own arrival.
  store.add(parseTimeline(enc([rec(8000, 11_000, "this is live", { id: "u0" })])), 12_500);
  assert.deepEqual(store.active(12_600).map(([, c]) => c.text), ["this is live"]);
  assert.deepEqual(store.active(12_500 + lateHoldMs("this is live") + 1), []);
  // A repeat (group start) does not restart the hold; the next utterance's cue takes over.
  store.add(parseTimeline(enc([rec(8000, 11_000, "this is live", { id: "u0" })])), 13_000);
  store.add(parseTimeline(enc([rec(12_000, 13_500, "next", { id: "u1", final: false })])), 14_000);
  assert.deepEqual(store.active(14_100).map(([, c]) => c.text), ["next"]);
  // Cues that arrive in time keep their own times.
  store.add(parseTimeline(enc([rec(20_000, 21_000, "on time", { id: "u2" })])), 15_000);
  assert.deepEqual(store.active(20_500).map(([, c]) => c.text), ["on time"]);
  assert.deepEqual(store.active(21_000), []);
});

test("the playout clock follows the fastest arrivals plus the jitter buffer", () => {
  const clock = new PlayoutClock({ jitterMs: 100 });
  assert.equal(clock.playTime(0), undefined);
  // A cached group replayed at once (pts 0..1 s arriving at t=5000), then live frames.
  for (let pts = 0; pts <= 1_000_000; pts += 100_000) clock.observe(pts, 5000);
  assert.equal(clock.playTime(1_000_000), 5000 + 100); // newest sample defines the offset
  assert.equal(clock.jitterMs, 100); // replayed objects are not jitter
  clock.observe(1_100_000, 5100);
  assert.equal(clock.mediaTime(5200), 1_100_000);
  // An object 200 ms later than the fastest path grows the jitter buffer.
  clock.observe(1_200_000, 5400);
  assert.ok(clock.jitterMs > 100, `jitter ${clock.jitterMs}`);
  // Late objects while a new subscription settles do not count.
  const jitter = clock.jitterMs;
  clock.settle(7000);
  clock.observe(1_300_000, 6000);
  assert.equal(clock.jitterMs, jitter);
  // A new timeline (publisher restarted at pts 0) resets the clock.
  clock.observe(0, 9000);
  assert.equal(clock.playTime(0), 9000 + clock.jitterMs);
});

test("a dub's lag delays the whole playout, and going back to the original returns to the live edge", () => {
  const clock = new PlayoutClock({ jitterMs: 100 });
  // The picture: media time t arrives at local 1000 + t.
  for (let t = 0; t <= 2000; t += 40) clock.observe(t * 1000, 1000 + t);
  assert.equal(clock.offsetMs, 1000);
  assert.equal(clock.playTime(2_000_000), 3100);
  // The dub's frames for media time t arrive 3.2 s later than the picture's.
  const lag = new LagMeter(10_000);
  assert.equal(lag.lagMs(1000), undefined);
  for (let t = 0; t <= 2000; t += 20) lag.observe(t * 1000, 4200 + t + (t % 100 === 0 ? 300 : 0));
  assert.equal(lag.lagMs(1000), 3200);
  const delay = nextDelay(0, 3200);
  assert.ok(delay >= 3350 && delay < 3450, `${delay}`);
  clock.setDelay(delay);
  // A dub frame now plays after it arrives, and the picture of the same instant with it.
  assert.ok((clock.playTime(2_000_000) ?? 0) > 4200 + 2000);
  assert.equal(clock.mediaTime(3100 + delay), 2_000_000);
  // Small changes of the lag keep the delay; a rise raises it at once; a large fall lowers it.
  assert.equal(nextDelay(delay, 3150), delay);
  assert.ok(nextDelay(delay, 3400) > delay);
  assert.ok(nextDelay(delay, 2000) < delay);
  clock.setDelay(0);
  assert.equal(clock.playTime(2_000_000), 3100);
  clock.setDelay(5000);
  clock.reset();
  assert.equal(clock.delayMs, 0);
});
