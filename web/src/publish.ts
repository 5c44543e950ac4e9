// The publish page (/publish/<broadcast>): camera and microphone -> WHIP -> the relay, which
// makes it an ordinary broadcast that /watch/<broadcast> plays. `?token=` fills the token;
// `window.moqcastPublish` exposes the state and counters for tests.

import { WhipError, WhipPublisher } from "./whip";

declare global {
  interface Window {
    moqcastPublish: {
      state(): string;
      error(): string | null;
      sent(): Promise<{ bytes: number; videoFrames: number; audioPackets: number }>;
      start(): Promise<void>;
      stop(): Promise<void>;
    };
  }
}

function element<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`publish.html has no #${id}`);
  return el as T;
}

/** The broadcast name: the path after /publish/ (it may contain `/`), or ?broadcast=. */
function broadcastFromUrl(): string {
  const params = new URLSearchParams(location.search);
  const fromQuery = params.get("broadcast");
  if (fromQuery) return fromQuery;
  const m = location.pathname.match(/^\/publish\/(.+)$/);
  return m ? m[1].split("/").map(decodeURIComponent).join("/").replace(/\/+$/, "") : "";
}

function main(): void {
  const params = new URLSearchParams(location.search);
  const form = element<HTMLFormElement>("form");
  const nameInput = element<HTMLInputElement>("broadcast");
  const tokenInput = element<HTMLInputElement>("token");
  const resolution = element<HTMLSelectElement>("resolution");
  const microphone = element<HTMLInputElement>("microphone");
  const startButton = element<HTMLButtonElement>("start");
  const stopButton = element<HTMLButtonElement>("stop");
  const status = element<HTMLSpanElement>("status");
  const message = element<HTMLDivElement>("message");
  const preview = element<HTMLVideoElement>("preview");
  const watch = element<HTMLAnchorElement>("watch");
  const sentLabel = element<HTMLSpanElement>("sent");
  nameInput.value = broadcastFromUrl();
  tokenInput.value = params.get("token") ?? "";
  element<HTMLSpanElement>("title").textContent = nameInput.value;

  let state = "idle";
  let lastError: string | null = null;
  let publisher: WhipPublisher | null = null;
  let stream: MediaStream | null = null;
  let timer: ReturnType<typeof setInterval> | undefined;

  const setState = (s: string, detail = "") => {
    state = s;
    status.textContent = detail ? `${s}: ${detail}` : s;
    status.dataset.state = s;
  };
  const showError = (text: string) => {
    lastError = text;
    message.textContent = text;
    message.hidden = false;
  };
  setState("idle");

  const stop = async () => {
    clearInterval(timer);
    const p = publisher;
    publisher = null;
    await p?.stop();
    for (const t of stream?.getTracks() ?? []) t.stop();
    stream = null;
    preview.srcObject = null;
    startButton.disabled = false;
    stopButton.disabled = true;
    watch.hidden = true;
    if (state !== "failed") setState("stopped");
  };

  const start = async () => {
    const broadcast = nameInput.value.trim().replace(/^\/+|\/+$/g, "");
    if (!broadcast) {
      showError("Name the broadcast first.");
      return;
    }
    message.hidden = true;
    lastError = null;
    startButton.disabled = true;
    setState("starting", "camera and microphone");
    try {
      const [w, h] = resolution.value.split("x").map(Number);
      const video = resolution.value === "none" ? false : { width: { ideal: w }, height: { ideal: h }, frameRate: { ideal: 30 } };
      if (!video && !microphone.checked) throw new Error("Choose a camera, a microphone or both.");
      stream = await navigator.mediaDevices.getUserMedia({ video, audio: microphone.checked });
      preview.srcObject = stream;
      setState("connecting");
      publisher = await WhipPublisher.publish(stream, broadcast, {
        token: tokenInput.value.trim() || undefined,
        onState: (s) => {
          if (s === "connected") setState("live");
          else if (s === "failed" || s === "closed") {
            if (publisher) {
              setState("failed", `connection ${s}`);
              showError(`The connection to the relay ${s === "failed" ? "failed" : "closed"}.`);
              void stop();
            }
          } else setState(s);
        },
      });
      stopButton.disabled = false;
      watch.href = "/watch/" + broadcast.split("/").map(encodeURIComponent).join("/");
      watch.hidden = false;
      timer = setInterval(async () => {
        if (!publisher) return;
        const s = await publisher.sent();
        sentLabel.textContent = `${(s.bytes / 1e6).toFixed(1)} MB sent, ${s.videoFrames} frames`;
      }, 1000);
    } catch (e) {
      const text =
        e instanceof WhipError && e.status === 401
          ? `Not allowed to publish ${broadcast}: ${e.message}`
          : e instanceof Error
            ? e.message
            : String(e);
      setState("failed", text);
      showError(text);
      await stop();
      setState("failed", text);
    }
  };

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void start();
  });
  stopButton.addEventListener("click", () => void stop());
  window.addEventListener("pagehide", () => void stop());
  window.moqcastPublish = {
    state: () => state,
    error: () => lastError,
    sent: async () => (publisher ? publisher.sent() : { bytes: 0, videoFrames: 0, audioPackets: 0 }),
    start,
    stop,
  };
  if (params.get("autostart") === "1") void start();
}

main();
