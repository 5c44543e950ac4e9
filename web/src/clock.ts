// The playout clock: maps media time (LOC TIMESTAMP, µs) to local time (performance.now(), ms)
// for audio, video and captions alike, which is what keeps them in sync.
//
// Each received object gives a sample `arrival - pts`. The smallest sample over the last few
// seconds is the path with the least delay (objects replayed from the relay's cache when a
// subscription starts arrive late and give larger samples, so they do not hold the clock
// back). Media time `pts` plays at `pts + offset + jitter`, where `jitter` is the jitter
// buffer: it grows when objects miss their playout time and shrinks slowly while none do.
// All times are passed in, so the logic is testable without a browser.

export interface ClockOptions {
  /** Initial jitter buffer, ms. */
  jitterMs?: number;
  minJitterMs?: number;
  maxJitterMs?: number;
  /** How long a sample counts toward the minimum, ms. */
  windowMs?: number;
  /** Offset changes smaller than this are ignored (they would make audio click), ms. */
  hysteresisMs?: number;
  /** A sample this far from the offset means a new timeline (publisher restart, loop), ms. */
  discontinuityMs?: number;
}

export class PlayoutClock {
  #samples: { at: number; offset: number }[] = [];
  #offset: number | undefined;
  #jitter: number;
  #delay = 0;
  #lastLate = -Infinity;
  #lastShrink = -Infinity;
  #lastGrow = -Infinity;
  #settleUntil = -Infinity;
  readonly opts: Required<ClockOptions>;

  constructor(opts: ClockOptions = {}) {
    this.opts = {
      jitterMs: opts.jitterMs ?? 150,
      minJitterMs: opts.minJitterMs ?? 80,
      maxJitterMs: opts.maxJitterMs ?? 1500,
      windowMs: opts.windowMs ?? 4000,
      hysteresisMs: opts.hysteresisMs ?? 30,
      discontinuityMs: opts.discontinuityMs ?? 3000,
    };
    this.#jitter = this.opts.jitterMs;
  }

  /** True once a sample has set the clock. */
  get started(): boolean {
    return this.#offset !== undefined;
  }

  get jitterMs(): number {
    return this.#jitter;
  }

  /** The offset (ms) of the fastest recent arrivals: local time minus media time. */
  get offsetMs(): number | undefined {
    return this.#offset;
  }

  /**
   * Extra playout delay (ms) on top of the jitter buffer: a track that arrives later than the
   * rest (a dubbed audio track, made after the speech it replaces) is played in time with the
   * picture by delaying everything by its lag.
   */
  get delayMs(): number {
    return this.#delay;
  }

  setDelay(ms: number): void {
    this.#delay = Math.max(0, ms);
  }

  /**
   * Records that media time `ptsUs` arrived at local time `nowMs`; returns by how much (ms) the
   * object came later than the fastest path. An object late by more than the jitter buffer
   * (less a margin for decoding) grows it, unless it is far later (`replayMs`): objects
   * replayed from the relay's cache when a subscription starts are not a sign of jitter.
   */
  observe(ptsUs: number, nowMs: number, replayMs = 400): number {
    const offset = nowMs - ptsUs / 1000;
    if (this.#offset !== undefined && Math.abs(offset - this.#offset) > this.opts.discontinuityMs) {
      // A new timeline: start over.
      this.#samples = [];
      this.#offset = undefined;
    }
    this.#samples.push({ at: nowMs, offset });
    while (this.#samples.length > 0 && this.#samples[0].at < nowMs - this.opts.windowMs) this.#samples.shift();
    if (this.#samples.length > 2000) this.#samples.splice(0, this.#samples.length - 2000);
    let min = Infinity;
    for (const s of this.#samples) min = Math.min(min, s.offset);
    if (this.#offset === undefined || Math.abs(min - this.#offset) >= this.opts.hysteresisMs) this.#offset = min;
    const excess = offset - this.#offset;
    if (excess > this.#jitter - 30 && excess < replayMs) this.late(excess - this.#jitter + 30, nowMs);
    // Shrink the jitter buffer by 5 ms a second after 10 s without a late object.
    if (this.#lastLate === -Infinity) this.#lastLate = nowMs; // quiet since the first object
    if (nowMs - this.#lastLate > 10_000 && nowMs - this.#lastShrink >= 1000 && this.#jitter > this.opts.minJitterMs) {
      this.#lastShrink = nowMs;
      this.#jitter = Math.max(this.opts.minJitterMs, this.#jitter - 5);
    }
    return excess;
  }

  /** Local time (ms) at which media time `ptsUs` plays, or undefined before the first sample. */
  playTime(ptsUs: number): number | undefined {
    if (this.#offset === undefined) return undefined;
    return ptsUs / 1000 + this.#offset + this.#jitter + this.#delay;
  }

  /** Media time (µs) playing at local time `nowMs`. */
  mediaTime(nowMs: number): number | undefined {
    if (this.#offset === undefined) return undefined;
    return (nowMs - this.#offset - this.#jitter - this.#delay) * 1000;
  }

  /**
   * Ignores late objects until `untilMs`: a new subscription starts with a burst of objects
   * replayed from the relay's cache, which says nothing about the network's jitter.
   */
  settle(untilMs: number): void {
    this.#settleUntil = Math.max(this.#settleUntil, untilMs);
  }

  /** Reports an object that missed its playout time by `lateMs`: the jitter buffer grows. */
  late(lateMs: number, nowMs: number): void {
    if (nowMs < this.#settleUntil) return;
    this.#lastLate = nowMs;
    if (nowMs - this.#lastGrow < 500) return;
    this.#lastGrow = nowMs;
    this.#jitter = Math.min(this.opts.maxJitterMs, this.#jitter + Math.max(20, Math.min(lateMs, 200)));
  }

  reset(): void {
    this.#samples = [];
    this.#offset = undefined;
    this.#delay = 0;
    this.#jitter = this.opts.jitterMs;
    this.#lastLate = -Infinity;
    this.#lastShrink = -Infinity;
    this.#lastGrow = -Infinity;
    this.#settleUntil = -Infinity;
  }
}

/**
 * How much later than the clock's fastest arrivals one track's objects arrive: the smallest
 * `arrival - pts` of the track over a window, less the clock's offset. A dubbed audio track is
 * made from final captions, seconds after the speech it replaces; its lag is what the whole
 * playout must be delayed by for the voice to line up with the picture.
 */
export class LagMeter {
  // The window's candidates for the minimum, oldest first, offsets increasing: a sample makes
  // every larger one before it useless, so each is pushed and dropped once (O(1) per object).
  #mins: { at: number; offset: number }[] = [];
  #head = 0;
  constructor(readonly windowMs = 10_000) {}

  observe(ptsUs: number, nowMs: number): void {
    const offset = nowMs - ptsUs / 1000;
    while (this.#mins.length > this.#head && this.#mins[this.#mins.length - 1].offset >= offset) this.#mins.pop();
    this.#mins.push({ at: nowMs, offset });
    while (this.#mins[this.#head].at < nowMs - this.windowMs) this.#head++;
    if (this.#head > 1024) {
      this.#mins = this.#mins.slice(this.#head);
      this.#head = 0;
    }
  }

  /** The track's lag behind `clockOffsetMs` (ms), or undefined before a sample. */
  lagMs(clockOffsetMs: number): number | undefined {
    if (this.#mins.length <= this.#head) return undefined;
    return Math.max(0, this.#mins[this.#head].offset - clockOffsetMs);
  }

  reset(): void {
    this.#mins = [];
    this.#head = 0;
  }
}

/**
 * The playout delay for a lagging track: its lag plus a margin, raised at once when the lag
 * grows (or the track's objects would miss their time) and lowered only when the lag has
 * fallen by more than `stepMs` (each change moves the picture, so it should be rare).
 */
export function nextDelay(currentMs: number, lagMs: number, marginMs = 150, stepMs = 250): number {
  const target = Math.ceil((lagMs + marginMs) / 50) * 50;
  if (target > currentMs || currentMs - target > stepMs) return target;
  return currentMs;
}
