// Drives the moqcast viewer in a real headless Chromium (Debian's /usr/bin/chromium, through
// playwright-core from web/node_modules), or in a real headless Firefox (Debian's
// /usr/bin/firefox-esr, through puppeteer-core over WebDriver BiDi: Playwright cannot drive a
// stock Firefox), against a running relay and publisher, and checks what a person would see.
// tests/tests/browser.rs starts the relay and publishers and runs this script; run it by hand
// the same way:
//
//   MOQCAST_VIEWER_URL=http://127.0.0.1:8080/watch/demo MOQCAST_SCENARIO=basic \
//     node tests/browser/viewer.test.mjs
//
// Environment:
//   MOQCAST_VIEWER_URL   the watch page (with ?relay=... when the relay's QUIC port is not in /viewer.json)
//   MOQCAST_SCENARIO     basic | basic-https | captions | live-captions | dub | reconnect | publish
//   MOQCAST_BROWSER      chromium (default) | firefox (the basic and dub scenarios)
//   MOQCAST_EXPECT_NO_RECONNECT (basic, optional) 1: the viewer must play on its first
//                        connection (no reconnect, status live)
//   MOQCAST_EXPECT_LEAVE_CLOSES (basic, optional) 1: leaving the page ends its relay session at
//                        once (the relay's /metrics, on the page's origin, counts one session less)
//   MOQCAST_VTT          (captions) the WebVTT file the publisher was given
//   MOQCAST_SIDECAR_TRACK (captions) "KEY<tab>MENU LABEL<tab>CUE TEXT" of a caption track in <broadcast>/ai
//   MOQCAST_EXPECT_WORDS (live-captions) comma-separated words, one of which the live captions must show
//   MOQCAST_EXPECT_TRANSLATED (live-captions, optional) "LANG<tab>MENU LABEL<tab>WORDS": a translated
//                        caption track of the sidecar, listed under that label, showing one of the
//                        comma-separated words
//   MOQCAST_EXPECT_DUB   (dub) "LANG<tab>MENU LABEL": the sidecar's dubbed audio track, listed
//                        in the audio menu under that label
//   MOQCAST_PUBLISH_URL  (publish) the publish page, /publish/<broadcast>?autostart=1[&token=...]: opened
//                        in a second page (Chromium with --use-fake-device-for-media-stream
//                        --use-fake-ui-for-media-stream), it must go live; then the viewer plays it
//   MOQCAST_PUBLISH_REFUSED_URL (publish, optional) a publish page with a wrong token: it must
//                        fail with the relay's 401 and say so
//   MOQCAST_SCREENSHOT   where to save a PNG of the page (optional)
//   MOQCAST_CONTROL      (reconnect) a file this script writes "restart" to, and waits for "restarted"
//   MOQCAST_CHROMIUM_ARGS more Chromium flags, separated by spaces (e.g.
//                        --ignore-certificate-errors-spki-list=... for a page served over HTTPS
//                        with a certificate no CA signed)
//   MOQCAST_EXPECT_PINNED (basic, optional) the hex SHA-256 the viewer must pin, or "none": it
//                        must not pin (a relay with a real certificate)
//
// Prints one line per step and exits non-zero on the first failed check.

import assert from "node:assert/strict";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const webDir = join(here, "../../web");
const CHROMIUM = process.env.MOQCAST_CHROMIUM ?? "/usr/bin/chromium";
const FIREFOX = process.env.MOQCAST_FIREFOX ?? "/usr/bin/firefox-esr";
const BROWSER = process.env.MOQCAST_BROWSER ?? "chromium";
const requireWeb = createRequire(join(webDir, "package.json"));

function fail(message) {
  console.error(`viewer test: ${message}`);
  process.exit(2);
}

const url = process.env.MOQCAST_VIEWER_URL ?? fail("MOQCAST_VIEWER_URL is not set");
const scenario = process.env.MOQCAST_SCENARIO ?? "basic";
if (BROWSER !== "chromium" && BROWSER !== "firefox") fail(`unknown MOQCAST_BROWSER ${BROWSER}`);
if (BROWSER === "firefox" && !["basic", "dub"].includes(scenario)) fail(`the ${scenario} scenario runs in chromium only`);
const started = Date.now();
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until `done(value)` or `timeoutMs`; returns the last value. */
async function waitFor(what, probe, done, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let value;
  for (;;) {
    value = await probe();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${JSON.stringify(value)}`);
    await sleep(150);
  }
}

/** Chromium through playwright-core. */
async function launchChromium() {
  if (!existsSync(CHROMIUM)) fail(`${CHROMIUM} is missing: run scripts/setup.sh (it installs Debian's chromium)`);
  let chromium;
  try {
    chromium = requireWeb("playwright-core").chromium;
  } catch {
    fail("playwright-core is not installed in web/node_modules: run scripts/setup.sh (npm --prefix web ci)");
  }
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      // Chromium refuses to run its sandbox as root (CI containers).
      ...(process.getuid?.() === 0 ? ["--no-sandbox"] : []),
      // Let WebAudio start without a click, as after a user gesture.
      "--autoplay-policy=no-user-gesture-required",
      ...(process.env.MOQCAST_CHROMIUM_ARGS ?? "").split(" ").filter(Boolean),
    ],
  });
  return { browser, page: await browser.newPage({ viewport: { width: 800, height: 540 } }) };
}

/** Firefox through puppeteer-core and WebDriver BiDi, in a fresh temporary profile. The
 * development certificate needs no pref: Firefox honours `serverCertificateHashes`. */
async function launchFirefox() {
  if (!existsSync(FIREFOX)) fail(`${FIREFOX} is missing: run scripts/setup.sh (it installs Debian's firefox-esr)`);
  let puppeteer;
  try {
    puppeteer = requireWeb("puppeteer-core");
  } catch {
    fail("puppeteer-core is not installed in web/node_modules: run scripts/setup.sh (npm --prefix web ci)");
  }
  const browser = await puppeteer.launch({
    browser: "firefox",
    executablePath: FIREFOX,
    headless: true,
    protocol: "webDriverBiDi",
    defaultViewport: { width: 800, height: 540 },
    // Let media and WebAudio start without a click, as after a user gesture. (On a machine
    // with no sound device, no /dev/snd and no sound server, Firefox's AudioContext stays
    // suspended whatever the prefs: audio frames still decode, which is what is checked.)
    extraPrefsFirefox: {
      "media.autoplay.default": 0,
      "media.autoplay.blocking_policy": 0,
      "media.autoplay.block-webaudio": false,
    },
  });
  return { browser, page: await browser.newPage() };
}

const launchStarted = Date.now();
const { browser, page } = BROWSER === "firefox" ? await launchFirefox() : await launchChromium();
log(`${BROWSER} ${await browser.version()} launched in ${Date.now() - launchStarted} ms`);
const consoleLines = [];
page.on("console", (m) => {
  if (m.type() !== "debug") consoleLines.push(`${m.type()}: ${m.text()}`);
});
page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));

const stats = () => page.evaluate(() => window.moqcast?.stats());
const overlay = () =>
  page.evaluate(() => ({
    text: document.getElementById("captions").innerText.trim(),
    mediaTimeMs: window.moqcast?.stats().mediaTimeMs ?? null,
  }));

/** Luminance variance and distinct colours of the canvas (a blank or one-colour canvas has ~0). */
const canvasPixels = () =>
  page.evaluate(() => {
    const canvas = document.getElementById("video");
    const probe = document.createElement("canvas");
    probe.width = 160;
    probe.height = 90;
    const ctx = probe.getContext("2d");
    ctx.drawImage(canvas, 0, 0, probe.width, probe.height);
    const { data } = ctx.getImageData(0, 0, probe.width, probe.height);
    let sum = 0;
    let sumSq = 0;
    const colours = new Set();
    const n = data.length / 4;
    for (let i = 0; i < data.length; i += 4) {
      const y = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
      sum += y;
      sumSq += y * y;
      colours.add(((data[i] >> 5) << 6) | ((data[i + 1] >> 5) << 3) | (data[i + 2] >> 5));
    }
    const mean = sum / n;
    return { width: canvas.width, height: canvas.height, variance: sumSq / n - mean * mean, colours: colours.size };
  });

async function screenshot() {
  const path = process.env.MOQCAST_SCREENSHOT;
  if (!path) return;
  await page.screenshot({ path, type: "png" });
  log(`screenshot: ${path} (${(statSync(path).size / 1024).toFixed(0)} KiB)`);
}

/** The page plays: 100 video and 100 audio frames within 10 s of loading, a real picture, a latency. */
async function playsWithin10s() {
  const t0 = Date.now();
  await page.goto(url);
  const s = await waitFor(
    "100 video and 100 audio frames decoded",
    stats,
    (s) => s && s.videoFramesDecoded >= 100 && s.audioFramesDecoded >= 100,
    Math.max(1000, 10_000 - (Date.now() - t0)),
  );
  log(`decoded ${s.videoFramesDecoded} video, ${s.audioFramesDecoded} audio frames in ${Date.now() - t0} ms (status ${s.status})`);
  const px = await canvasPixels();
  log(`canvas ${px.width}x${px.height}: luminance variance ${px.variance.toFixed(0)}, ${px.colours} colours`);
  assert.ok(px.width >= 160 && px.height >= 90, `canvas has the video's size, got ${px.width}x${px.height}`);
  assert.ok(px.variance > 500 && px.colours >= 8, `the canvas shows the test pattern, not a blank picture: ${JSON.stringify(px)}`);
  const withLatency = await waitFor("a latency readout", stats, (s) => typeof s.latencyMs === "number", 3000);
  assert.ok(withLatency.latencyMs > 0 && withLatency.latencyMs < 5000, `latency is plausible: ${withLatency.latencyMs} ms`);
  const readout = await page.evaluate(() => document.getElementById("latency").innerText);
  assert.match(readout, /latency \d+ ms/);
  log(`latency ${withLatency.latencyMs} ms ("${readout}"), jitter buffer ${withLatency.jitterBufferMs} ms`);
  return withLatency;
}

/** Cues of a WebVTT file: id, start/end ms, text. */
function readVtt(path) {
  const time = (t) => {
    const p = t.split(":").map(Number);
    return Math.round((p.length === 3 ? p[0] * 3600 + p[1] * 60 + p[2] : p[0] * 60 + p[1]) * 1000);
  };
  return readFileSync(path, "utf8")
    .split(/\n\n+/)
    .map((block) => block.split("\n").filter(Boolean))
    .filter((lines) => lines.some((l) => l.includes("-->")))
    .map((lines) => {
      const i = lines.findIndex((l) => l.includes("-->"));
      const [a, b] = lines[i].split("-->").map((s) => s.trim().split(/\s+/)[0]);
      return { startMs: time(a), endMs: time(b), text: lines.slice(i + 1).join("\n") };
    });
}

async function captionsScenario() {
  const cues = readVtt(process.env.MOQCAST_VTT ?? fail("MOQCAST_VTT is not set"));
  await playsWithin10s();

  // The caption menu lists the track and it is on; cues show at their times.
  const s = await stats();
  assert.ok(s.captionTracks.some((t) => t.name === "captions-en" && t.lang === "en"), `caption track listed: ${JSON.stringify(s.captionTracks)}`);
  const captionOptions = await page.locator("#caption-select option").allInnerTexts();
  assert.deepEqual(captionOptions.slice(0, 2), ["Off", "Captions (en)"]);
  assert.equal(await page.locator("#caption-select").inputValue(), s.selectedCaptions);

  const seen = new Map();
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && seen.size < 3) {
    const o = await overlay();
    if (o.text) {
      const cue = cues.find((c) => c.text === o.text);
      assert.ok(cue, `the overlay shows a cue of the file: "${o.text}"`);
      // Sampled right after a redraw: allow one tick (50 ms) and the evaluate round trip.
      assert.ok(
        o.mediaTimeMs >= cue.startMs - 150 && o.mediaTimeMs <= cue.endMs + 150,
        `"${cue.text}" (${cue.startMs}-${cue.endMs} ms) is shown at media time ${o.mediaTimeMs} ms`,
      );
      seen.set(cue.text, o.mediaTimeMs);
    }
    await sleep(100);
  }
  assert.ok(seen.size >= 2, `at least two cues seen on screen at their times, saw ${JSON.stringify([...seen])}`);
  log(`cues on screen at their times: ${[...seen].map(([t, m]) => `"${t}"@${Math.round(m)}ms`).join(", ")}`);
  const shown = (await stats()).captionCuesShown;
  assert.ok(shown >= 2, `captionCuesShown ${shown}`);
  if ((await overlay()).text === "") {
    await waitFor("a cue on screen for the screenshot", overlay, (o) => o.text !== "", 3000);
  }
  await screenshot();

  // Captions off: the overlay stays empty; on again: cues come back.
  await page.selectOption("#caption-select", "off");
  for (let i = 0; i < 8; i++) {
    await sleep(200);
    assert.equal((await overlay()).text, "", "no cue shows while captions are off");
  }
  assert.equal((await stats()).selectedCaptions, null);
  await page.selectOption("#caption-select", { label: "Captions (en)" });
  await waitFor("cues after turning captions back on", overlay, (o) => o.text !== "", 4000);
  log("captions off and on again: ok");

  // The audio menu lists the original and the test dub; switching keeps audio flowing.
  const audioOptions = await page.locator("#audio-select option").allInnerTexts();
  assert.deepEqual(audioOptions.slice(0, 2), ["Original", "Dub (es, test)"]);
  const before = await stats();
  assert.ok(before.selectedAudio.endsWith("|audio"), `starts on the original: ${before.selectedAudio}`);
  await page.selectOption("#audio-select", { label: "Dub (es, test)" });
  await sleep(1000);
  const a1 = await stats();
  assert.ok(a1.selectedAudio.endsWith("|audio-es"), `the dub is selected: ${a1.selectedAudio}`);
  assert.equal(await page.locator("#audio-select").inputValue(), a1.selectedAudio);
  await sleep(2000);
  const a2 = await stats();
  const rate = (a2.audioFramesDecoded - a1.audioFramesDecoded) / 2;
  assert.ok(rate >= 25, `audio keeps decoding after the switch: ${rate} frames/s`);
  assert.ok(a2.videoFramesDecoded > a1.videoFramesDecoded, "video keeps playing during the switch");
  log(`switched audio to ${a2.selectedAudio}: ${rate} audio frames/s after the switch`);
  await page.selectOption("#audio-select", { label: "Original" });
  await waitFor("the original selected again", stats, (s) => s.selectedAudio.endsWith("|audio"), 2000);
  const b1 = (await stats()).audioFramesDecoded;
  await sleep(1500);
  assert.ok((await stats()).audioFramesDecoded - b1 >= 30, "audio keeps decoding after switching back");
  log("switched back to the original: ok");

  // A caption track of the sidecar's namespace (<broadcast>/ai, found with SUBSCRIBE_NAMESPACE)
  // is listed beside the broadcast's own and can be chosen.
  const sidecar = process.env.MOQCAST_SIDECAR_TRACK;
  if (sidecar) {
    const [key, label, text] = sidecar.split("\t");
    await waitFor(`the sidecar's caption track ${key}`, stats, (s) => s.captionTracks.some((t) => t.key === key), 5000);
    assert.ok((await page.locator("#caption-select option").allInnerTexts()).includes(label), `menu lists "${label}"`);
    await page.selectOption("#caption-select", { label });
    const o = await waitFor(`the sidecar's cue "${text}"`, overlay, (o) => o.text === text, 4000);
    assert.equal((await stats()).selectedCaptions, key);
    log(`sidecar caption track ${key} listed and shown: "${o.text}"`);
  }
}

async function reconnectScenario() {
  const control = process.env.MOQCAST_CONTROL ?? fail("MOQCAST_CONTROL is not set");
  await playsWithin10s();
  writeFileSync(control, "restart");
  log("asked for a relay restart");
  await waitFor("the viewer to notice", stats, (s) => s.status === "reconnecting" || s.reconnects > 0, 10_000);
  await waitFor("the relay to come back", async () => readFileSync(control, "utf8"), (c) => c === "restarted", 20_000);
  const before = await stats();
  log(`relay restarted; viewer status ${before.status}, ${before.reconnects} reconnect(s)`);
  const after = await waitFor(
    "60 more video frames after the restart",
    stats,
    (s) => s.status === "live" && s.videoFramesDecoded >= before.videoFramesDecoded + 60,
    15_000,
  );
  const px = await canvasPixels();
  assert.ok(px.variance > 500, `a picture after reconnecting: ${JSON.stringify(px)}`);
  log(`playing again after ${after.reconnects} reconnect(s): ${after.videoFramesDecoded} video frames`);
}

/** Live captions from the AI sidecar (`<broadcast>/ai`): listed, selected, spoken words on screen. */
async function liveCaptionsScenario() {
  const words = (process.env.MOQCAST_EXPECT_WORDS ?? fail("MOQCAST_EXPECT_WORDS is not set")).toLowerCase().split(",");
  await playsWithin10s();
  const s = await waitFor(
    "the sidecar's caption track",
    stats,
    (s) => s.captionTracks.some((t) => t.namespace.endsWith("/ai")),
    15_000,
  );
  const track = s.captionTracks.find((t) => t.namespace.endsWith("/ai"));
  log(`sidecar caption track: ${JSON.stringify(track)}`);
  if (s.selectedCaptions !== track.key) await page.selectOption("#caption-select", track.key);
  const o = await waitFor(
    `live captions showing one of ${words.join("/")}`,
    overlay,
    (o) => words.some((w) => o.text.toLowerCase().includes(w)),
    45_000,
  );
  log(`live caption on screen at media time ${Math.round(o.mediaTimeMs)} ms: "${o.text}"`);

  // A translated track of the sidecar: listed in the menu under its label, chosen, shown.
  const translated = process.env.MOQCAST_EXPECT_TRANSLATED;
  if (translated) {
    const [lang, label, expected] = translated.split("\t");
    const spoken = expected.toLowerCase().split(",");
    const s2 = await waitFor(
      `the sidecar's ${lang} caption track`,
      stats,
      (s) => s.captionTracks.some((t) => t.namespace.endsWith("/ai") && t.lang === lang),
      10_000,
    );
    const tr = s2.captionTracks.find((t) => t.namespace.endsWith("/ai") && t.lang === lang);
    log(`translated caption track: ${JSON.stringify(tr)}`);
    const options = await page.locator("#caption-select option").allInnerTexts();
    assert.ok(options.some((o) => o.startsWith(label)), `the menu lists "${label}": ${JSON.stringify(options)}`);
    await page.selectOption("#caption-select", tr.key);
    const t = await waitFor(
      `${lang} captions showing one of ${spoken.join("/")}`,
      overlay,
      (o) => spoken.some((w) => o.text.toLowerCase().includes(w)),
      45_000,
    );
    assert.equal((await stats()).selectedCaptions, tr.key);
    log(`translated caption on screen at media time ${Math.round(t.mediaTimeMs)} ms: "${t.text}"`);
  }
  await screenshot();
}

/** The sidecar's dub: listed in the audio menu, chosen, the picture delayed by its lag (the
 * latency readout says so) while dubbed audio keeps decoding and playing in time; the original
 * chosen again, back to the live edge. */
async function dubScenario() {
  const [lang, label] = (process.env.MOQCAST_EXPECT_DUB ?? fail("MOQCAST_EXPECT_DUB is not set")).split("\t");
  const live = await playsWithin10s();
  const original = live.selectedAudio;
  const s = await waitFor(
    `the sidecar's ${lang} audio track`,
    stats,
    (s) => s.audioTracks.some((t) => t.namespace.endsWith("/ai") && t.lang === lang),
    30_000,
  );
  const dub = s.audioTracks.find((t) => t.namespace.endsWith("/ai") && t.lang === lang);
  log(`dub track: ${JSON.stringify(dub)}`);
  // page.evaluate only: the same steps drive Chromium (playwright) and Firefox (puppeteer).
  const options = await page.evaluate(() => [...document.querySelectorAll("#audio-select option")].map((o) => o.textContent));
  const choose = (key) =>
    page.evaluate((k) => {
      const select = document.getElementById("audio-select");
      select.value = k;
      select.dispatchEvent(new Event("change"));
    }, key);
  assert.ok(options.some((o) => o.startsWith(label)), `the audio menu lists "${label}": ${JSON.stringify(options)}`);
  const liveLatency = (await waitFor("a latency readout", stats, (s) => s.latencyMs !== null, 5000)).latencyMs;
  await choose(dub.key);
  const d = await waitFor("the playout delayed for the dub", stats, (s) => (s.dubDelayMs ?? 0) > 0, 20_000);
  log(`dub chosen: playout delayed by ${d.dubDelayMs} ms (latency live ${liveLatency} ms)`);
  // The picture rewinds by the delay: it holds still until the delayed frames are due, then
  // goes on. Wait for that, then measure a stretch.
  const frozen = await stats();
  await waitFor(
    "the picture to go on, delayed",
    stats,
    (s) => s.videoFramesRendered >= frozen.videoFramesRendered + 30,
    (frozen.dubDelayMs ?? 0) + 15_000,
  );
  const a = await stats();
  await sleep(5000);
  const b = await stats();
  assert.equal(b.selectedAudio, dub.key);
  const decoded = b.audioFramesDecoded - a.audioFramesDecoded;
  const late = b.audioFramesLate - a.audioFramesLate;
  const drawn = b.videoFramesRendered - a.videoFramesRendered;
  log(`over 5 s with the dub: ${decoded} audio frames decoded, ${late} too late, ${drawn} video frames drawn; delay ${b.dubDelayMs} ms, latency ${b.latencyMs} ms`);
  assert.ok(decoded >= 150, `the dub's audio keeps decoding: ${decoded} frames in 5 s`);
  assert.ok(late <= decoded * 0.05, `the dub plays in time (at most 5% late): ${late} of ${decoded}`);
  assert.ok(drawn >= 50, `the picture goes on: ${drawn} frames in 5 s`);
  assert.ok(b.latencyMs >= liveLatency + b.dubDelayMs * 0.5, `the picture waits for the dub: latency ${b.latencyMs} ms, live ${liveLatency} ms, delay ${b.dubDelayMs} ms`);
  // The picture on screen and the audio play the same media time: the clock is one.
  const readout = await page.evaluate(() => document.getElementById("latency").textContent);
  assert.match(readout, /dub/, `the latency readout says the picture waits for the dub: "${readout}"`);
  log(`readout: "${readout}"`);
  await screenshot();
  // Back to the original: the delay goes, the latency comes back to the live edge.
  await choose(original);
  const back = await waitFor(
    "the live edge again",
    stats,
    (s) => s.dubDelayMs === null && s.latencyMs !== null && s.latencyMs < liveLatency + 1000,
    10_000,
  );
  const c = await stats();
  await sleep(2000);
  const e = await stats();
  assert.ok(e.audioFramesDecoded - c.audioFramesDecoded >= 50, "the original audio decodes again");
  log(`original again: latency ${back.latencyMs} ms, ${e.audioFramesDecoded - c.audioFramesDecoded} audio frames in 2 s`);
}

/** Leaves the page; the relay's count of open sessions (its /metrics) drops by one soon after. */
async function leaveClosesSession() {
  const metrics = new URL("/metrics", url);
  const openSessions = async () => {
    const text = await (await fetch(metrics)).text();
    return Number(text.match(/^moqcast_sessions (\d+)$/m)?.[1]);
  };
  const before = await openSessions();
  assert.ok(before >= 1, `the relay counts the viewer's session: ${before}`);
  const t0 = Date.now();
  await page.goto("about:blank");
  await waitFor("the relay to see the viewer's session end", openSessions, (n) => n === before - 1, 5000);
  log(`left the page: the relay's open sessions went from ${before} to ${before - 1} in ${Date.now() - t0} ms`);
}

/** The publish page (camera and microphone over WHIP) goes live; the viewer plays what it sends;
 * Stop ends the publication. A page with a wrong token fails and shows the relay's reason. */
async function publishScenario() {
  const publishUrl = process.env.MOQCAST_PUBLISH_URL ?? fail("MOQCAST_PUBLISH_URL is not set");
  const publisher = await browser.newPage();
  publisher.on("console", (m) => consoleLines.push(`publish page ${m.type()}: ${m.text()}`));
  publisher.on("pageerror", (e) => consoleLines.push(`publish page error: ${e.message}`));
  const publishState = () =>
    publisher.evaluate(() => ({ state: window.moqcastPublish?.state(), error: window.moqcastPublish?.error() ?? null }));

  const refused = process.env.MOQCAST_PUBLISH_REFUSED_URL;
  if (refused) {
    await publisher.goto(refused);
    const r = await waitFor("the refused publication to fail", publishState, (s) => s.state === "failed", 15_000);
    assert.match(r.error ?? "", /401/, `the page says why: ${JSON.stringify(r)}`);
    const shown = await publisher.evaluate(() => document.getElementById("message").innerText);
    assert.match(shown, /Not allowed to publish/, `the message on the page: ${shown}`);
    log(`a wrong token: "${shown}"`);
  }

  const t0 = Date.now();
  await publisher.goto(publishUrl);
  const live = await waitFor(
    "the publish page to go live",
    publishState,
    (s) => s.state === "live" || s.state === "failed",
    20_000,
  );
  assert.equal(live.state, "live", `the publish page went live: ${JSON.stringify(live)}`);
  log(`publish page live in ${Date.now() - t0} ms`);
  const sent = await waitFor(
    "30 video frames and 50 audio packets sent",
    () => publisher.evaluate(() => window.moqcastPublish.sent()),
    (s) => s.videoFrames >= 30 && s.audioPackets >= 50,
    10_000,
  );
  log(`sent ${sent.videoFrames} video frames, ${sent.audioPackets} audio packets, ${sent.bytes} bytes`);

  const t1 = Date.now();
  await page.goto(url);
  const s = await waitFor(
    "100 video and 100 audio frames decoded",
    stats,
    (s) => s && s.videoFramesDecoded >= 100 && s.audioFramesDecoded >= 100,
    15_000,
  );
  log(`viewer decoded ${s.videoFramesDecoded} video, ${s.audioFramesDecoded} audio frames in ${Date.now() - t1} ms`);
  const px = await canvasPixels();
  log(`canvas ${px.width}x${px.height}: luminance variance ${px.variance.toFixed(0)}, ${px.colours} colours`);
  assert.ok(px.width >= 160 && px.height >= 90, `canvas has the video's size, got ${px.width}x${px.height}`);
  assert.ok(px.colours >= 2, `the canvas shows the fake camera's picture: ${JSON.stringify(px)}`);
  const withLatency = await waitFor("a latency readout", stats, (s) => typeof s.latencyMs === "number", 5000);
  log(`latency ${withLatency.latencyMs} ms (publish page -> WHIP -> relay -> MoQ viewer)`);
  await screenshot();

  await publisher.evaluate(() => window.moqcastPublish.stop());
  assert.equal((await publishState()).state, "stopped");
  const frames = (await stats()).videoFramesDecoded;
  await sleep(1500);
  const after = (await stats()).videoFramesDecoded;
  await sleep(1000);
  assert.equal((await stats()).videoFramesDecoded, after, `no frames after Stop (${frames} -> ${after} -> more)`);
  log("Stop ended the publication: the viewer gets no more frames");
  await publisher.close();
}

let ok = false;
try {
  if (scenario === "basic" || scenario === "basic-https") {
    const s = await playsWithin10s();
    if (process.env.MOQCAST_EXPECT_NO_RECONNECT === "1") {
      // The failure this guards against: a session the relay ends at once, and a viewer that
      // reconnects in a loop (Firefox ESR 153 before the moqt-18 fallback).
      assert.equal(s.reconnects, 0, `played on the first connection: ${JSON.stringify(s)}`);
      assert.equal(s.status, "live", `status is live: ${JSON.stringify(s)}`);
      log("played on the first connection, no reconnect");
    }
    const pinned = process.env.MOQCAST_EXPECT_PINNED;
    if (pinned) {
      assert.equal(s.pinnedCertificate, pinned === "none" ? null : pinned, "the certificate the viewer pinned");
      log(`pinned certificate: ${s.pinnedCertificate ?? "none (verified by the browser)"}`);
    }
    log(`page: ${page.url()}`);
    await screenshot();
    if (process.env.MOQCAST_EXPECT_LEAVE_CLOSES === "1") await leaveClosesSession();
  } else if (scenario === "captions") {
    await captionsScenario();
  } else if (scenario === "live-captions") {
    await liveCaptionsScenario();
  } else if (scenario === "dub") {
    await dubScenario();
  } else if (scenario === "reconnect") {
    await reconnectScenario();
  } else if (scenario === "publish") {
    await publishScenario();
  } else {
    fail(`unknown scenario ${scenario}`);
  }
  ok = true;
} catch (e) {
  console.error(`viewer test FAILED (${scenario}): ${e.stack ?? e}`);
  console.error(`last stats: ${JSON.stringify(await stats().catch(() => null))}`);
} finally {
  if (!ok || process.env.MOQCAST_VERBOSE) for (const line of consoleLines.slice(-40)) console.error(`  page ${line}`);
  await browser.close();
}
log(ok ? `scenario ${scenario}: passed` : `scenario ${scenario}: FAILED`);
process.exit(ok ? 0 : 1);
