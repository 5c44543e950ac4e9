// Audio: WebCodecs AudioDecoder -> AudioBuffers scheduled on a WebAudio AudioContext at the
// local time the playout clock gives their timestamp, so they line up with the video.

import type { PlayoutClock } from "./clock";
import type { TrackRef } from "./catalog";
import { CodecUnsupported } from "./video";

/** Scheduling closer to the previous buffer's end than this joins them seamlessly, s. */
const CONTINUITY_S = 0.04;

/** The WebCodecs configuration of a catalog audio track. */
export function audioConfig(ref: TrackRef): AudioDecoderConfig {
  const t = ref.track;
  if (!t.codec) throw new CodecUnsupported(`audio track ${t.name} names no codec`);
  const channels = Number.parseInt(t.channelConfig ?? "2", 10);
  return {
    codec: t.codec,
    sampleRate: t.samplerate ?? 48000,
    numberOfChannels: Number.isFinite(channels) && channels > 0 ? channels : 2,
    description: ref.init,
  };
}

export class AudioPlayer {
  readonly context: AudioContext;
  #gain: GainNode;
  #decoder: AudioDecoder | undefined;
  #config: AudioDecoderConfig | undefined;
  #clock: PlayoutClock;
  #next = 0;
  /** AudioData out of the decoder. */
  decoded = 0;
  /** Buffers scheduled for output. */
  scheduled = 0;
  /** Buffers that came too late to play. */
  late = 0;
  onError: (message: string) => void = () => {};

  constructor(clock: PlayoutClock) {
    this.#clock = clock;
    this.context = new AudioContext({ latencyHint: "interactive" });
    this.#gain = this.context.createGain();
    this.#gain.connect(this.context.destination);
  }

  /** False while the browser's autoplay policy holds the context (a click resumes it). */
  get running(): boolean {
    return this.context.state === "running";
  }

  resume(): Promise<void> {
    return this.context.resume();
  }

  set volume(v: number) {
    this.#gain.gain.value = v;
  }

  async configure(config: AudioDecoderConfig): Promise<void> {
    if (typeof AudioDecoder === "undefined") throw new CodecUnsupported("this browser has no WebCodecs AudioDecoder");
    const support = await AudioDecoder.isConfigSupported(config);
    if (!support.supported) throw new CodecUnsupported(`this browser cannot decode the audio codec ${config.codec}`);
    this.close();
    this.#config = config;
    this.#next = 0;
    this.#decoder = new AudioDecoder({
      output: (data) => this.#onData(data),
      error: (e) => {
        this.onError(`audio decoder: ${e.message}`);
        queueMicrotask(() => this.#config && this.configure(this.#config).catch(() => {}));
      },
    });
    this.#decoder.configure(config);
  }

  decode(payload: Uint8Array, ptsUs: number): void {
    const decoder = this.#decoder;
    if (!decoder || decoder.state !== "configured") return;
    decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: ptsUs, data: payload }));
  }

  #onData(data: AudioData): void {
    this.decoded++;
    try {
      this.#schedule(data);
    } finally {
      data.close();
    }
  }

  #schedule(data: AudioData): void {
    const ctx = this.context;
    if (ctx.state !== "running") return;
    const at = this.#clock.playTime(data.timestamp);
    if (at === undefined) return;
    const outputLatency = (ctx.outputLatency || 0) + (ctx.baseLatency || 0);
    let when = ctx.currentTime + (at - performance.now()) / 1000 - outputLatency;
    if (this.#next > 0 && Math.abs(when - this.#next) < CONTINUITY_S) when = this.#next;
    const duration = data.numberOfFrames / data.sampleRate;
    if (when < ctx.currentTime) {
      this.late++;
      return;
    }
    const buffer = ctx.createBuffer(data.numberOfChannels, data.numberOfFrames, data.sampleRate);
    for (let ch = 0; ch < data.numberOfChannels; ch++) {
      const plane = new Float32Array(data.numberOfFrames);
      data.copyTo(plane, { planeIndex: ch, format: "f32-planar" });
      buffer.copyToChannel(plane, ch);
    }
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.#gain);
    source.start(when);
    this.#next = when + duration;
    this.scheduled++;
  }

  /** Stops decoding (switching tracks); buffers already scheduled play out. */
  close(): void {
    if (this.#decoder && this.#decoder.state !== "closed") this.#decoder.close();
    this.#decoder = undefined;
    this.#next = 0;
  }
}
