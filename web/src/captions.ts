// Caption cues from WebVTT event timeline tracks (draft-wilaw-moq-webvtt-msf-00, see
// media/src/caption.rs): each object is a JSON array of records `{"m": start, "data": {start,
// end, id?, text, final?}}`. A cue with the `id` of an earlier one replaces it (partial cues
// from a live captioner); a group's first object may repeat cues already received.

export interface Cue {
  id?: string;
  startMs: number;
  endMs: number;
  text: string;
  final: boolean;
  /** Shown until this media time instead of `endMs`: set for cues that arrived late. */
  showUntilMs?: number;
}

/**
 * How long a cue that arrives after (or just before) its end is shown from its arrival: a live
 * captioner's cues come a second or more after the words were spoken, when the playout clock
 * has passed their `end`. They are shown from arrival for a reading time (longer for longer
 * text) or until the next late cue arrives, as live broadcast captions are.
 */
export function lateHoldMs(text: string): number {
  return Math.min(6000, Math.max(2500, 1000 + 60 * text.length));
}

/** Most cues kept; older ones are dropped first. */
export const MAX_CUES = 500;

function cueFromRecord(record: unknown): Cue | undefined {
  if (typeof record !== "object" || record === null) return undefined;
  const data = (record as { data?: unknown }).data;
  if (typeof data !== "object" || data === null) return undefined;
  const d = data as Record<string, unknown>;
  if (typeof d.start !== "number" || typeof d.end !== "number" || typeof d.text !== "string") return undefined;
  return {
    id: typeof d.id === "string" ? d.id : undefined,
    startMs: d.start,
    endMs: Math.max(d.end, d.start),
    text: d.text,
    final: d.final !== false,
  };
}

/** Parses one timeline object; records that are not cues (the regions/styles header) are skipped. */
export function parseTimeline(bytes: Uint8Array | string): Cue[] {
  const text = typeof bytes === "string" ? bytes : new TextDecoder().decode(bytes);
  const json = JSON.parse(text) as unknown;
  const records = Array.isArray(json) ? json : [json];
  return records.map(cueFromRecord).filter((c): c is Cue => c !== undefined);
}

/** A key that identifies a cue across repeats: its id, else its time and text. */
export function cueKey(c: Cue): string {
  return c.id !== undefined ? `id:${c.id}` : `t:${c.startMs}:${c.endMs}:${c.text}`;
}

export class CueStore {
  #cues = new Map<string, Cue>();

  /**
   * Adds cues; one with a known key replaces the earlier version. With the playout clock's
   * media time `nowMs`, a new or changed cue that ends before `nowMs` (or within 200 ms of it)
   * is shown from now for {@link lateHoldMs}, and other late cues still on screen give way.
   */
  add(cues: Cue[], nowMs?: number): void {
    for (const c of cues) {
      const key = cueKey(c);
      const known = this.#cues.get(key);
      if (known && known.text === c.text && known.final === c.final && known.endMs === c.endMs) continue; // a repeat
      if (nowMs !== undefined && c.endMs < nowMs + 200 && c.text !== "") {
        c.showUntilMs = nowMs + lateHoldMs(c.text);
        for (const [k, other] of this.#cues) {
          if (k !== key && other.showUntilMs !== undefined && other.showUntilMs > nowMs) other.showUntilMs = nowMs;
        }
      }
      this.#cues.delete(key);
      this.#cues.set(key, c);
    }
    while (this.#cues.size > MAX_CUES) {
      const oldest = this.#cues.keys().next().value as string;
      this.#cues.delete(oldest);
    }
  }

  /** The cues showing at media time `nowMs`, by start time, with their keys. */
  active(nowMs: number): [string, Cue][] {
    return [...this.#cues.entries()]
      .filter(([, c]) => c.startMs <= nowMs && nowMs < (c.showUntilMs ?? c.endMs))
      .sort((a, b) => a[1].startMs - b[1].startMs);
  }

  /** Drops cues that ended before `beforeMs`. */
  prune(beforeMs: number): void {
    for (const [key, c] of this.#cues) if (Math.max(c.endMs, c.showUntilMs ?? 0) < beforeMs) this.#cues.delete(key);
  }

  clear(): void {
    this.#cues.clear();
  }

  get size(): number {
    return this.#cues.size;
  }
}
