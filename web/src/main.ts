// The watch page: wires the Viewer to the DOM (canvas, caption overlay, menus, status, latency)
// and exposes `window.moqcast` for tests and debugging.

import { type Stats, Viewer } from "./player";

declare global {
  interface Window {
    moqcast: {
      stats(): Stats;
      selectAudio(key: string): void;
      selectCaptions(key: string | null): void;
      viewer: Viewer;
    };
  }
}

function element<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`watch.html has no #${id}`);
  return el as T;
}

/** The broadcast name: the path after /watch/ (it may contain `/`), or ?broadcast=. */
function broadcastName(): string {
  const params = new URLSearchParams(location.search);
  const fromQuery = params.get("broadcast");
  if (fromQuery) return fromQuery;
  const m = location.pathname.match(/^\/watch\/(.+)$/);
  return m ? m[1].split("/").map(decodeURIComponent).join("/").replace(/\/+$/, "") : "";
}

function fillMenu(select: HTMLSelectElement, entries: { value: string; label: string }[], selected: string): void {
  const current = [...select.options].map((o) => `${o.value}=${o.text}`).join("\n");
  const wanted = entries.map((e) => `${e.value}=${e.label}`).join("\n");
  if (current !== wanted) {
    select.replaceChildren(
      ...entries.map((e) => {
        const o = document.createElement("option");
        o.value = e.value;
        o.text = e.label;
        return o;
      }),
    );
  }
  select.value = selected;
  select.disabled = entries.length <= 1 && select.id === "audio-select";
}

function main(): void {
  const broadcast = broadcastName();
  const status = element<HTMLSpanElement>("status");
  const message = element<HTMLDivElement>("message");
  const buffering = element<HTMLDivElement>("buffering");
  const captions = element<HTMLDivElement>("captions");
  const audioSelect = element<HTMLSelectElement>("audio-select");
  const captionSelect = element<HTMLSelectElement>("caption-select");
  const latency = element<HTMLSpanElement>("latency");
  const unmute = element<HTMLButtonElement>("unmute");
  element<HTMLHeadingElement>("title").textContent = broadcast || "no broadcast";
  document.title = `${broadcast} · moqcast`;

  if (!broadcast) {
    message.textContent = "No broadcast named: open /watch/<broadcast>.";
    message.hidden = false;
    return;
  }

  const params = new URLSearchParams(location.search);
  const viewer = new Viewer({
    broadcast,
    relayUrl: params.get("relay") ?? undefined,
    canvas: element<HTMLCanvasElement>("video"),
  });
  window.moqcast = {
    stats: () => viewer.stats(),
    selectAudio: (key) => viewer.selectAudio(key),
    selectCaptions: (key) => viewer.selectCaptions(key),
    viewer,
  };

  viewer.onStatus = (s) => {
    status.textContent = s.message;
    status.dataset.kind = s.kind;
    buffering.hidden = s.kind !== "buffering";
    const blocking = s.kind === "unsupported" || s.kind === "waiting" || s.kind === "reconnecting" || s.kind === "error";
    message.hidden = !blocking;
    message.textContent = blocking ? s.message : "";
    message.dataset.kind = s.kind;
  };
  viewer.onStatus(viewer.status);

  viewer.onTracks = () => {
    fillMenu(
      audioSelect,
      viewer.audioTracks.map((t) => ({ value: t.key, label: t.label })),
      viewer.selectedAudio ?? "",
    );
    fillMenu(
      captionSelect,
      [{ value: "off", label: "Off" }, ...viewer.captionTracks.map((t) => ({ value: t.key, label: t.label }))],
      viewer.selectedCaptions ?? "off",
    );
  };
  viewer.onTracks();
  audioSelect.addEventListener("change", () => viewer.selectAudio(audioSelect.value));
  captionSelect.addEventListener("change", () =>
    viewer.selectCaptions(captionSelect.value === "off" ? null : captionSelect.value),
  );

  viewer.onCaptions = (lines) => {
    captions.replaceChildren(
      ...lines.map((line) => {
        const span = document.createElement("span");
        span.className = "cue";
        span.textContent = line;
        return span;
      }),
    );
  };

  // Leaving the page ends the relay session at once (not every browser does it by itself).
  window.addEventListener("pagehide", () => viewer.disconnect());

  // Autoplay policies hold audio until the viewer interacts with the page.
  const audio = viewer.audio;
  const showUnmute = () => {
    unmute.hidden = !audio || audio.running;
  };
  unmute.addEventListener("click", () => {
    void audio?.resume().then(showUnmute);
  });
  audio?.context.addEventListener("statechange", showUnmute);
  void audio?.resume().catch(() => {});
  showUnmute();

  // Draw on every animation frame, and at least every 50 ms when frames are throttled.
  let lastTick = 0;
  const tick = () => {
    const now = performance.now();
    lastTick = now;
    viewer.tick(now);
    const l = viewer.video.latencyMs;
    const dub = viewer.dubDelayMs;
    const text =
      (l === undefined ? "latency —" : `latency ${Math.round(l)} ms`) +
      (dub === undefined ? "" : ` (dub: picture delayed ${(dub / 1000).toFixed(1)} s)`);
    if (latency.textContent !== text) latency.textContent = text;
  };
  const frame = () => {
    tick();
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  setInterval(() => {
    if (performance.now() - lastTick > 50) tick();
  }, 50);

  void viewer.run();
}

main();
