// The viewer's session logic: connect to the relay over WebTransport (MoQ draft-18 through
// @moq/net), read the broadcast's MSF catalog and those of the namespaces below it (the AI
// sidecar's `<broadcast>/ai`), subscribe to the selected video, audio and caption tracks,
// and reconnect when the relay or the network goes away.

import * as Moq from "@moq/net";

import { AudioPlayer, audioConfig } from "./audio";
import {
  applyDelta,
  type Catalog,
  defaultAudio,
  defaultCaptions,
  isCaptionTrack,
  mergeCatalogs,
  parseCatalog,
  roleOf,
  type TrackRef,
  trackLabel,
} from "./catalog";
import { CueStore, parseTimeline } from "./captions";
import { LagMeter, PlayoutClock, nextDelay } from "./clock";
import { parseLocProperties } from "./loc";
import { CodecUnsupported, VideoRenderer, videoConfig } from "./video";

export type StatusKind = "connecting" | "waiting" | "live" | "buffering" | "reconnecting" | "error" | "unsupported";

export interface Status {
  kind: StatusKind;
  message: string;
}

export interface TrackInfo {
  key: string;
  name: string;
  namespace: string;
  lang?: string;
  label: string;
}

export interface Stats {
  videoFramesDecoded: number;
  videoFramesRendered: number;
  audioFramesDecoded: number;
  /** Decoded audio that came too late for its playout time and was not played. */
  audioFramesLate: number;
  captionCuesShown: number;
  captionTracks: TrackInfo[];
  audioTracks: TrackInfo[];
  selectedAudio: string | null;
  selectedCaptions: string | null;
  latencyMs: number | null;
  /** With a dub chosen: by how much (ms) the playout waits for it, else null. */
  dubDelayMs: number | null;
  /** Media time (ms on the broadcast's timeline) playing now. */
  mediaTimeMs: number | null;
  jitterBufferMs: number;
  status: StatusKind;
  reconnects: number;
  /** Hex SHA-256 the last WebTransport connection pinned (a development relay), or null: the
   * browser verified the relay's certificate as usual. */
  pinnedCertificate: string | null;
}

/** An object as the patched @moq/net hands it out (web/build/patch-moq.mjs). */
interface RawFrame extends Moq.Group.Frame {
  properties?: Uint8Array;
}

interface ReadFrame {
  frame: RawFrame;
  /** Index of the object in its group. */
  index: number;
  group: number;
}

/** No object for this long on a live subscription means the network dropped: reconnect, ms. */
const STALL_RECONNECT_MS = 8000;

/** How long after a subscription starts its late objects are not taken for jitter, ms. */
const SETTLE_MS = 1500;

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });

/**
 * Reads a track's objects in order. When a newer group arrives, the current one is drained
 * of what it has already received and left: a catalog group stays open until the next
 * version, and a late media group is not worth waiting for.
 */
async function* readTrack(sub: Moq.Track.Subscriber): AsyncGenerator<ReadFrame> {
  let group = await sub.nextGroup();
  let next = sub.nextGroup();
  next.catch(() => {});
  while (group) {
    let index = 0;
    for (;;) {
      const current: Moq.Group.Consumer = group;
      const read: Promise<Moq.Group.Frame | undefined> = current.readFrame();
      read.catch(() => {});
      const r: { frame: Moq.Group.Frame | undefined } | { newer: Moq.Group.Consumer | undefined } = await Promise.race([
        read.then((frame) => ({ frame })),
        next.then((newer) => ({ newer })),
      ]);
      if ("frame" in r) {
        if (!r.frame) break;
        yield { frame: r.frame as RawFrame, index: index++, group: group.sequence };
        continue;
      }
      // A newer group: take what the current one already holds, then move on.
      for (let f = group.tryReadFrame(); f; f = group.tryReadFrame()) {
        yield { frame: f as RawFrame, index: index++, group: group.sequence };
      }
      group.close();
      group = r.newer;
      next = sub.nextGroup();
      next.catch(() => {});
      index = 0;
      if (!group) return;
    }
    group.close();
    group = await next;
    next = sub.nextGroup();
    next.catch(() => {});
  }
}

/** One subscription and the loop reading it. */
class Subscription {
  readonly key: string;
  readonly sub: Moq.Track.Subscriber;
  #stopped = false;

  constructor(conn: Moq.Connection.Established, ref: TrackRef) {
    this.key = ref.key;
    this.sub = conn.consume(Moq.Path.from(ref.namespace)).subscribe(ref.track.name);
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  stop(): void {
    this.#stopped = true;
    this.sub.close();
  }
}

export interface ViewerOptions {
  broadcast: string;
  /** WebTransport URL of the relay; default: this page's host at the port /viewer.json names. */
  relayUrl?: string;
  canvas: HTMLCanvasElement;
}

export class Viewer {
  readonly broadcast: string;
  readonly clock = new PlayoutClock();
  readonly video: VideoRenderer;
  readonly audio: AudioPlayer | undefined;
  readonly cues = new CueStore();
  tracks: TrackRef[] = [];
  status: Status = { kind: "connecting", message: "Connecting…" };
  reconnects = 0;
  captionCuesShown = 0;
  /** Key of the chosen audio track. */
  selectedAudio: string | undefined;
  /** Key of the shown caption track; `null` is "off" (chosen), `undefined` none yet. */
  selectedCaptions: string | null | undefined;

  onStatus: (s: Status) => void = () => {};
  onTracks: () => void = () => {};
  onCaptions: (lines: string[]) => void = () => {};

  #opts: ViewerOptions;
  #catalogs = new Map<string, Catalog>();
  #conn: Moq.Connection.Established | undefined;
  #videoSub: Subscription | undefined;
  #audioSub: Subscription | undefined;
  #captionSub: Subscription | undefined;
  #shownCues = new Set<string>();
  #captionText = "";
  #counters = { video: 0, audio: 0 };
  #problem: string | undefined;
  #lastObjectAt = 0;
  #userAudio = false;
  #userCaptions = false;
  /** The chosen audio track's lag behind the picture, when it is a sidecar's dub. */
  #dubLag = new LagMeter();
  #dubbing = false;
  #relayConfig: { quicPort?: number | null; pinCertificate?: boolean } = {};
  #certificateHash: string | undefined;
  #pinned: string | null = null;

  constructor(opts: ViewerOptions) {
    this.#opts = opts;
    this.broadcast = opts.broadcast.replace(/^\/+|\/+$/g, "");
    this.video = new VideoRenderer(opts.canvas);
    this.video.attach(this.clock);
    this.video.onError = (m) => console.warn(m);
    try {
      this.audio = new AudioPlayer(this.clock);
      this.audio.onError = (m) => console.warn(m);
    } catch (e) {
      console.warn("no WebAudio:", e);
    }
  }

  #setStatus(kind: StatusKind, message: string): void {
    if (this.status.kind === kind && this.status.message === message) return;
    this.status = { kind, message };
    this.onStatus(this.status);
  }

  /** Connects, and reconnects forever. Returns only when the browser cannot play at all. */
  async run(): Promise<void> {
    if (!Moq.Connection.isWebTransportSupported()) {
      this.#setStatus(
        "unsupported",
        "This browser does not support WebTransport, which the live stream needs. Use a recent Chrome, Edge or Firefox.",
      );
      return;
    }
    if (typeof VideoDecoder === "undefined" || typeof AudioDecoder === "undefined") {
      this.#setStatus("unsupported", "This browser does not support WebCodecs, which decoding the stream needs.");
      return;
    }
    let backoff = 500;
    for (;;) {
      let conn: Moq.Connection.Established | undefined;
      try {
        this.#setStatus(this.reconnects > 0 ? "reconnecting" : "connecting", "Connecting to the relay…");
        conn = await this.#connect();
        backoff = 500;
        await this.#runConnection(conn);
        this.#problem = "the connection closed";
      } catch (e) {
        if (e instanceof CodecUnsupported) {
          this.#setStatus("unsupported", e.message);
          return;
        }
        this.#problem = e instanceof Error ? e.message : String(e);
        console.warn("session ended:", e);
      } finally {
        conn?.close();
        this.#stopMedia();
      }
      this.reconnects++;
      const wait = backoff;
      backoff = Math.min(backoff * 2, 5000);
      this.#setStatus("reconnecting", `Reconnecting in ${(wait / 1000).toFixed(1)} s (${this.#problem})…`);
      await sleep(wait);
    }
  }

  async #connect(): Promise<Moq.Connection.Established> {
    // When the HTTP side does not answer, the last answer (or the defaults) will do.
    let cfg = this.#relayConfig;
    try {
      const r = await fetch("/viewer.json", { cache: "no-store", signal: AbortSignal.timeout(3000) });
      if (r.ok) cfg = this.#relayConfig = await r.json();
    } catch {
      // not served by a moqcast relay, or the relay is down
    }
    const url = this.#opts.relayUrl ?? `https://${location.hostname}:${cfg.quicPort ?? 4443}/`;
    const webtransport: Moq.Connection.WebTransportProps = {};
    // A development relay's self-signed certificate is pinned by its hash; a real one is
    // verified by the browser as usual. The hash is fetched again at every (re)connection: a
    // relay renews its development certificate before it expires.
    this.#pinned = null;
    if (cfg.pinCertificate !== false) {
      try {
        const r = await fetch("/certificate.sha256", { cache: "no-store", signal: AbortSignal.timeout(3000) });
        const hex = r.ok ? (await r.text()).trim() : "";
        if (/^[0-9a-fA-F]{64}$/.test(hex)) this.#certificateHash = hex;
      } catch {
        // no answer: try the last fingerprint, or rely on the certificate being trusted
      }
      if (this.#certificateHash) {
        webtransport.serverCertificateHashes = [{ algorithm: "sha-256", value: this.#certificateHash }];
        this.#pinned = this.#certificateHash;
      }
    }
    return Moq.Connection.connect(new URL(url), {
      webtransport,
      websocket: { enabled: false },
      signal: AbortSignal.timeout(10_000),
    });
  }

  async #runConnection(conn: Moq.Connection.Established): Promise<void> {
    this.#conn = conn;
    this.#lastObjectAt = performance.now();
    const abort = new AbortController();
    const closed = conn.closed.then(
      () => "closed",
      () => "closed",
    );
    void this.#discover(conn, abort.signal);
    try {
      for (;;) {
        const outcome = await Promise.race([this.#watchCatalog(conn, this.broadcast, abort.signal), closed]);
        if (outcome === "closed") return;
        // The broadcast is not (or no longer) there: wait for it on the same connection.
        this.#catalogs.delete(this.broadcast);
        this.#stopMedia();
        this.#tracksChanged();
        this.#setStatus("waiting", `Waiting for the broadcast "${this.broadcast}" to start…`);
        const again = await Promise.race([sleep(1000).then(() => "retry"), closed]);
        if (again === "closed") return;
      }
    } finally {
      abort.abort();
      this.#conn = undefined;
      this.#catalogs.clear();
    }
  }

  /** Reads a catalog track until it ends; returns "ended" (also when it cannot be subscribed). */
  async #watchCatalog(conn: Moq.Connection.Established, namespace: string, signal: AbortSignal): Promise<string> {
    const sub = conn.consume(Moq.Path.from(namespace)).subscribe("catalog");
    const stop = () => sub.close();
    signal.addEventListener("abort", stop);
    try {
      let current: Catalog | undefined;
      for await (const { frame, index } of readTrack(sub)) {
        try {
          current = index === 0 || !current ? parseCatalog(frame.payload) : applyDelta(current, frame.payload);
        } catch (e) {
          console.warn(`catalog of ${namespace}:`, e);
          continue;
        }
        this.#catalogs.set(namespace, current);
        this.#tracksChanged();
      }
    } catch (e) {
      if (!signal.aborted) console.debug(`catalog of ${namespace} ended:`, e);
    } finally {
      signal.removeEventListener("abort", stop);
      sub.close();
      if (namespace !== this.broadcast && this.#catalogs.delete(namespace)) this.#tracksChanged();
    }
    return "ended";
  }

  /** Finds namespaces below the broadcast (SUBSCRIBE_NAMESPACE) and merges their catalogs. */
  async #discover(conn: Moq.Connection.Established, signal: AbortSignal): Promise<void> {
    const prefix = Moq.Path.from(this.broadcast);
    const announced = conn.announced(prefix);
    signal.addEventListener("abort", () => announced.close());
    const watching = new Map<string, AbortController>();
    try {
      for (;;) {
        const ev = await announced.next();
        if (!ev) break;
        if ((ev.path as string) === "") continue; // the broadcast itself
        const ns = Moq.Path.join(prefix, ev.path) as string;
        if (ev.active && !watching.has(ns)) {
          const own = new AbortController();
          signal.addEventListener("abort", () => own.abort());
          watching.set(ns, own);
          void this.#watchCatalog(conn, ns, own.signal).finally(() => watching.delete(ns));
        } else if (!ev.active) {
          watching.get(ns)?.abort();
          watching.delete(ns);
        }
      }
    } catch (e) {
      if (!signal.aborted) console.debug("namespace discovery ended:", e);
    }
  }

  /** Re-merges catalogs and (re)subscribes to the selected tracks. */
  #tracksChanged(): void {
    this.tracks = mergeCatalogs(this.#catalogs, this.broadcast);
    const conn = this.#conn;
    const has = (key: string | null | undefined) => !!key && this.tracks.some((t) => t.key === key);

    // Video: the first video track, preferring the broadcast's own namespace.
    const video = this.tracks.find((t) => roleOf(t.track) === "video");
    if (this.#videoSub && this.#videoSub.key !== video?.key) {
      this.#videoSub.stop();
      this.#videoSub = undefined;
    }
    if (conn && video && !this.#videoSub) void this.#startVideo(conn, video);

    // Until the broadcast's own catalog is in, a sidecar's tracks must not be taken for its.
    if (!this.#catalogs.has(this.broadcast)) {
      this.onTracks();
      return;
    }

    // Defaults follow the tracks until the viewer picks one from a menu.
    if (!this.#userAudio || !has(this.selectedAudio)) this.selectedAudio = defaultAudio(this.tracks)?.key;
    const audio = this.tracks.find((t) => t.key === this.selectedAudio);
    if (this.#audioSub && this.#audioSub.key !== audio?.key) {
      this.#audioSub.stop();
      this.#audioSub = undefined;
      // Back to an audio track that keeps up (the original): back to the live edge.
      this.#dubLag.reset();
      this.#dubbing = false;
      this.clock.setDelay(0);
    }
    if (conn && audio && !this.#audioSub && this.audio) void this.#startAudio(conn, audio);

    if (!this.#userCaptions || (this.selectedCaptions !== null && !has(this.selectedCaptions))) {
      this.selectedCaptions = defaultCaptions(this.tracks, navigator.languages ?? [navigator.language])?.key;
    }
    const captions = this.tracks.find((t) => t.key === this.selectedCaptions);
    if (this.#captionSub && this.#captionSub.key !== captions?.key) {
      this.#captionSub.stop();
      this.#captionSub = undefined;
      this.cues.clear();
    }
    if (conn && captions && !this.#captionSub) this.#startCaptions(conn, captions);
    this.onTracks();
  }

  async #startVideo(conn: Moq.Connection.Established, ref: TrackRef): Promise<void> {
    const s = new Subscription(conn, ref);
    this.clock.settle(performance.now() + SETTLE_MS);
    this.#videoSub = s;
    try {
      await this.video.configure(videoConfig(ref));
    } catch (e) {
      s.stop();
      if (e instanceof CodecUnsupported) this.#setStatus("unsupported", e.message);
      return;
    }
    const frameUs = 1e6 / (ref.track.framerate || 30);
    await this.#pump(s, (f) => {
      const props = parseLocProperties(f.frame.properties);
      // Without a LOC TIMESTAMP the time comes from frame order and the catalog framerate.
      const pts = props.timestampUs ?? this.#counters.video * frameUs;
      this.#counters.video++;
      this.#observe(pts);
      const sent = props.sendTimeUs ?? (props.wallClock ? props.timestampUs : undefined);
      this.video.decode(f.frame.payload, pts, f.index === 0, sent);
    });
  }

  async #startAudio(conn: Moq.Connection.Established, ref: TrackRef): Promise<void> {
    const audio = this.audio;
    if (!audio) return;
    const s = new Subscription(conn, ref);
    this.#audioSub = s;
    this.clock.settle(performance.now() + SETTLE_MS);
    try {
      await audio.configure(audioConfig(ref));
    } catch (e) {
      s.stop();
      console.warn(e instanceof Error ? e.message : e);
      return;
    }
    // Opus and AAC frames without a TIMESTAMP: 20 ms or 1024 samples each.
    const frameUs = ref.track.codec?.startsWith("opus") ? 20_000 : (1024 * 1e6) / (ref.track.samplerate || 48000);
    // A sidecar's audio track (a dub, in `<broadcast>/ai`) is made from final captions, seconds
    // after the speech it replaces: it does not move the clock; the clock waits for it instead.
    const dub = ref.namespace !== this.broadcast;
    this.#dubbing = dub;
    await this.#pump(s, (f) => {
      const props = parseLocProperties(f.frame.properties);
      const pts = props.timestampUs ?? this.#counters.audio * frameUs;
      this.#counters.audio++;
      if (dub) this.#followDub(pts);
      else this.#observe(pts);
      audio.decode(f.frame.payload, pts);
    });
  }

  #startCaptions(conn: Moq.Connection.Established, ref: TrackRef): void {
    const s = new Subscription(conn, ref);
    this.#captionSub = s;
    void this.#pump(s, (f) => {
      try {
        const media = this.clock.mediaTime(performance.now());
        this.cues.add(parseTimeline(f.frame.payload), media === undefined ? undefined : media / 1000);
      } catch (e) {
        console.warn(`caption object on ${ref.track.name}:`, e);
      }
    });
  }

  /** Delays the playout by the dub's lag, so that the voice lines up with the picture. */
  #followDub(ptsUs: number): void {
    const now = performance.now();
    this.#dubLag.observe(ptsUs, now);
    const offset = this.clock.offsetMs;
    if (offset === undefined) return;
    const lag = this.#dubLag.lagMs(offset);
    if (lag === undefined) return;
    const delay = nextDelay(this.clock.delayMs, lag);
    if (delay !== this.clock.delayMs) {
      console.info(`dub: ${Math.round(lag)} ms behind the picture; playout delayed by ${delay} ms`);
      this.clock.setDelay(delay);
      this.clock.settle(now + SETTLE_MS);
    }
  }

  /** The playout delay for a dub (ms), or undefined when the chosen audio keeps up. */
  get dubDelayMs(): number | undefined {
    return this.#dubbing ? this.clock.delayMs : undefined;
  }

  #observe(ptsUs: number): void {
    const started = this.clock.started;
    const before = this.clock.mediaTime(performance.now());
    this.clock.observe(ptsUs, performance.now());
    // A new timeline (publisher restarted): what is queued belongs to the old one.
    if (started && before !== undefined && Math.abs((this.clock.mediaTime(performance.now()) ?? 0) - before) > 2_000_000) {
      this.video.flush();
    }
  }

  /** Reads a subscription until it ends or is stopped. */
  async #pump(s: Subscription, onFrame: (f: ReadFrame) => void): Promise<void> {
    try {
      for await (const f of readTrack(s.sub)) {
        if (s.stopped) break;
        this.#lastObjectAt = performance.now();
        onFrame(f);
      }
    } catch (e) {
      if (!s.stopped) console.debug(`track ${s.sub.name} ended:`, e);
    }
  }

  #stopMedia(): void {
    for (const s of [this.#videoSub, this.#audioSub, this.#captionSub]) s?.stop();
    this.#videoSub = this.#audioSub = this.#captionSub = undefined;
    this.video.flush();
    this.audio?.close();
    this.cues.clear();
    this.clock.reset();
    this.#dubLag.reset();
  }

  /**
   * Closes the relay connection now: call it when the page goes away. Firefox ESR 153 does not
   * close a page's WebTransport session when the page is left (it kept it open until the browser
   * exited), so the relay would hold the viewer's subscriptions until QUIC's idle timeout. A page
   * that comes back from the back/forward cache reconnects as after any closed connection.
   */
  disconnect(): void {
    this.#conn?.close();
  }

  /** Chooses an audio track (by key) without reloading. */
  selectAudio(key: string): void {
    this.selectedAudio = key;
    this.#userAudio = true;
    this.#tracksChanged();
  }

  /** Chooses a caption track (by key), or turns captions off with `null`. */
  selectCaptions(key: string | null): void {
    this.selectedCaptions = key;
    this.#userCaptions = true;
    this.#tracksChanged();
    this.#renderCaptions(performance.now(), true);
  }

  /** Called every animation frame: draws video and captions, updates the status. */
  tick(nowMs: number): void {
    this.video.render(this.clock, nowMs);
    this.#renderCaptions(nowMs, false);
    // A network that drops silently leaves QUIC waiting for its idle timeout: give up sooner.
    if (this.#conn && (this.#videoSub || this.#audioSub) && nowMs - this.#lastObjectAt > STALL_RECONNECT_MS) {
      console.warn(`no media for ${STALL_RECONNECT_MS / 1000} s: reconnecting`);
      this.#lastObjectAt = nowMs;
      this.#conn.close();
    }
    if (this.#videoSub || this.#audioSub) {
      const stalled = !this.clock.started || (this.#videoSub !== undefined && nowMs - this.video.lastDrawAt > 700);
      if (stalled) this.#setStatus("buffering", "Buffering…");
      else this.#setStatus("live", "Live");
    }
  }

  #renderCaptions(nowMs: number, force: boolean): void {
    const media = this.clock.mediaTime(nowMs);
    const active = this.#captionSub && media !== undefined ? this.cues.active(media / 1000) : [];
    for (const [key] of active) {
      if (!this.#shownCues.has(key)) {
        this.#shownCues.add(key);
        this.captionCuesShown++;
      }
    }
    if (this.#shownCues.size > 2000) this.#shownCues.clear();
    if (media !== undefined) this.cues.prune(media / 1000 - 30_000);
    const lines = active.map(([, c]) => c.text);
    const text = lines.join("\n");
    if (force || text !== this.#captionText) {
      this.#captionText = text;
      this.onCaptions(lines);
    }
  }

  #info(ref: TrackRef): TrackInfo {
    return { key: ref.key, name: ref.track.name, namespace: ref.namespace, lang: ref.track.lang, label: trackLabel(ref) };
  }

  get audioTracks(): TrackInfo[] {
    return this.tracks.filter((t) => roleOf(t.track) === "audio").map((t) => this.#info(t));
  }

  get captionTracks(): TrackInfo[] {
    return this.tracks.filter((t) => isCaptionTrack(t.track)).map((t) => this.#info(t));
  }

  stats(): Stats {
    return {
      videoFramesDecoded: this.video.decoded,
      videoFramesRendered: this.video.rendered,
      audioFramesDecoded: this.audio?.decoded ?? 0,
      audioFramesLate: this.audio?.late ?? 0,
      captionCuesShown: this.captionCuesShown,
      captionTracks: this.captionTracks,
      audioTracks: this.audioTracks,
      selectedAudio: this.selectedAudio ?? null,
      selectedCaptions: this.selectedCaptions ?? null,
      latencyMs: this.video.latencyMs === undefined ? null : Math.round(this.video.latencyMs),
      dubDelayMs: this.dubDelayMs ?? null,
      mediaTimeMs: ((t) => (t === undefined ? null : t / 1000))(this.clock.mediaTime(performance.now())),
      jitterBufferMs: Math.round(this.clock.jitterMs),
      status: this.status.kind,
      reconnects: this.reconnects,
      pinnedCertificate: this.#pinned,
    };
  }
}
