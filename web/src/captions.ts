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

  /** Adds cues; one with a known key replaces the earlier version. */
  add(cues: Cue[]): void {
    for (const c of cues) {
      const key = cueKey(c);
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
      .filter(([, c]) => c.startMs <= nowMs && nowMs < c.endMs)
      .sort((a, b) => a[1].startMs - b[1].startMs);
  }

  /** Drops cues that ended before `beforeMs`. */
  prune(beforeMs: number): void {
    for (const [key, c] of this.#cues) if (c.endMs < beforeMs) this.#cues.delete(key);
  }

  clear(): void {
    this.#cues.clear();
  }

  get size(): number {
    return this.#cues.size;
  }
}
