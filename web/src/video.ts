// Video: WebCodecs VideoDecoder -> a small queue of decoded frames -> a canvas, each frame drawn
// when the playout clock reaches its timestamp.

import type { PlayoutClock } from "./clock";
import type { TrackRef } from "./catalog";

/** Most decoded frames held; decoders stall when too many frames stay open. */
const MAX_QUEUED_FRAMES = 12;
/** Encoded frames are decoded this long (ms) before their playout time, no sooner: a playout
 * delay (a dubbed audio track's lag) is held as encoded frames, not decoded ones. */
const DECODE_AHEAD_MS = 300;
/** Most encoded frames held for a playout delay (30 s at 60 frames a second). */
const MAX_PENDING = 1800;

interface Pending {
  payload: Uint8Array;
  ptsUs: number;
  key: boolean;
}

export class CodecUnsupported extends Error {}

/** The WebCodecs configuration of a catalog video track. */
export function videoConfig(ref: TrackRef): VideoDecoderConfig {
  const t = ref.track;
  if (!t.codec) throw new CodecUnsupported(`video track ${t.name} names no codec`);
  return {
    codec: t.codec,
    description: ref.init,
    codedWidth: t.width,
    codedHeight: t.height,
    optimizeForLatency: true,
    hardwareAcceleration: "no-preference",
  };
}

export class VideoRenderer {
  readonly canvas: HTMLCanvasElement;
  #ctx: CanvasRenderingContext2D;
  #decoder: VideoDecoder | undefined;
  #config: VideoDecoderConfig | undefined;
  #queue: VideoFrame[] = [];
  #pending: Pending[] = [];
  #clock: PlayoutClock | undefined;
  #needKey = true;
  #sendTimes = new Map<number, number>();
  /** Frames out of the decoder. */
  decoded = 0;
  /** Frames drawn. */
  rendered = 0;
  /** Frames dropped because they were late. */
  dropped = 0;
  /** Local time of the last draw. */
  lastDrawAt = 0;
  /** Media time (µs) of the frame on screen. */
  shownPtsUs: number | undefined;
  /** Publisher-to-screen latency of the frame on screen, from SEND_TIME. */
  latencyMs: number | undefined;
  onError: (message: string) => void = () => {};

  constructor(canvas: HTMLCanvasElement) {
    this.canvas = canvas;
    const ctx = canvas.getContext("2d", { alpha: false });
    if (!ctx) throw new Error("no 2D canvas context");
    this.#ctx = ctx;
  }

  /** Checks and sets the decoder configuration; throws {@link CodecUnsupported}. */
  async configure(config: VideoDecoderConfig): Promise<void> {
    if (typeof VideoDecoder === "undefined") throw new CodecUnsupported("this browser has no WebCodecs VideoDecoder");
    const support = await VideoDecoder.isConfigSupported(config);
    if (!support.supported) throw new CodecUnsupported(`this browser cannot decode the video codec ${config.codec}`);
    this.#config = config;
    this.#reset();
  }

  #reset(): void {
    if (this.#decoder && this.#decoder.state !== "closed") this.#decoder.close();
    this.#needKey = true;
    const config = this.#config;
    if (!config) return;
    this.#decoder = new VideoDecoder({
      output: (frame) => this.#onFrame(frame),
      error: (e) => {
        this.onError(`video decoder: ${e.message}`);
        // Start again at the next keyframe.
        queueMicrotask(() => this.#reset());
      },
    });
    this.#decoder.configure(config);
  }

  #onFrame(frame: VideoFrame): void {
    this.decoded++;
    this.#queue.push(frame);
    this.#queue.sort((a, b) => a.timestamp - b.timestamp);
    while (this.#queue.length > MAX_QUEUED_FRAMES) {
      this.#queue.shift()?.close();
      this.dropped++;
    }
  }

  /** The playout clock that says when held frames are due for decoding. */
  attach(clock: PlayoutClock): void {
    this.#clock = clock;
  }

  /** Feeds one encoded frame; `key` marks the first object of a group (a keyframe). */
  decode(payload: Uint8Array, ptsUs: number, key: boolean, sendTimeUs: number | undefined): void {
    if (sendTimeUs !== undefined) {
      this.#sendTimes.set(ptsUs, sendTimeUs);
      if (this.#sendTimes.size > 2000) this.#sendTimes.delete(this.#sendTimes.keys().next().value as number);
    }
    this.#pending.push({ payload, ptsUs, key });
    if (this.#pending.length > MAX_PENDING) {
      // Held too long: keep from the newest keyframe on.
      let k = this.#pending.length - 1;
      while (k > 0 && !this.#pending[k].key) k--;
      this.dropped += k;
      this.#pending.splice(0, k);
    }
    this.#feed(performance.now());
  }

  /** Decodes the held frames due within DECODE_AHEAD_MS, as many as the decoded queue takes
   * (frames decoded past MAX_QUEUED_FRAMES would push out the ones due first). */
  #feed(nowMs: number): void {
    while (this.#pending.length > 0) {
      const next = this.#pending[0];
      const at = this.#clock?.playTime(next.ptsUs);
      if (at !== undefined && at - nowMs > DECODE_AHEAD_MS) return;
      const inFlight = this.#queue.length + (this.#decoder?.decodeQueueSize ?? 0);
      if (at !== undefined && at > nowMs && inFlight >= MAX_QUEUED_FRAMES - 2) return;
      this.#pending.shift();
      this.#decodeNow(next);
    }
  }

  #decodeNow({ payload, ptsUs, key }: Pending): void {
    const decoder = this.#decoder;
    if (!decoder || decoder.state !== "configured") return;
    if (this.#needKey && !key) return;
    this.#needKey = false;
    // Too far behind: drop to the next keyframe rather than decode frames nobody will see.
    if (decoder.decodeQueueSize > 30 && !key) {
      this.#needKey = true;
      return;
    }
    decoder.decode(new EncodedVideoChunk({ type: key ? "key" : "delta", timestamp: ptsUs, data: payload }));
  }

  /** Draws the newest frame due at local time `nowMs`. */
  render(clock: PlayoutClock, nowMs: number): void {
    this.#feed(nowMs);
    const media = clock.mediaTime(nowMs);
    if (media === undefined) return;
    let due: VideoFrame | undefined;
    while (this.#queue.length > 0 && this.#queue[0].timestamp <= media) {
      if (due) {
        due.close();
        this.dropped++;
      }
      due = this.#queue.shift();
    }
    if (!due) return;
    this.#draw(due);
    this.shownPtsUs = due.timestamp;
    const sent = this.#sendTimes.get(due.timestamp);
    if (sent !== undefined) this.latencyMs = Date.now() - sent / 1000;
    due.close();
    this.rendered++;
    this.lastDrawAt = nowMs;
  }

  #draw(frame: VideoFrame): void {
    const w = frame.displayWidth;
    const h = frame.displayHeight;
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    // A VideoFrame draws as its visibleRect scaled to displayWidth x displayHeight, so the
    // decoder's padding (coded 640x368 for 640x360, say) never reaches the canvas.
    this.#ctx.drawImage(frame, 0, 0, w, h);
  }

  /** Frames decoded and waiting for their time. */
  get queued(): number {
    return this.#queue.length;
  }

  /** Drops queued frames and waits for a keyframe (new subscription or timeline). */
  flush(): void {
    for (const f of this.#queue) f.close();
    this.#queue = [];
    this.#pending = [];
    this.#sendTimes.clear();
    this.latencyMs = undefined;
    if (this.#config) this.#reset();
  }

  close(): void {
    for (const f of this.#queue) f.close();
    this.#queue = [];
    this.#pending = [];
    if (this.#decoder && this.#decoder.state !== "closed") this.#decoder.close();
    this.#decoder = undefined;
  }
}
