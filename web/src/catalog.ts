// The MSF catalog (draft-ietf-moq-msf-01 §5) as the viewer needs it: tracks with their role,
// codec and initialization data, merged across the broadcast's namespace and the namespaces
// below it (the AI sidecar publishes `<broadcast>/ai` with a catalog of its own).

export interface CatalogTrack {
  name: string;
  namespace?: string;
  packaging?: string;
  role?: string;
  codec?: string;
  initRef?: string;
  initData?: string;
  width?: number;
  height?: number;
  displayWidth?: number;
  displayHeight?: number;
  framerate?: number;
  samplerate?: number;
  channelConfig?: string;
  lang?: string;
  label?: string;
  altGroup?: number;
  eventType?: string;
  [key: string]: unknown;
}

export interface Catalog {
  version?: string | number;
  tracks: CatalogTrack[];
  initDataList?: { id: string; type?: string; data: string }[];
  [key: string]: unknown;
}

/** A track together with where it lives and its resolved decoder configuration bytes. */
export interface TrackRef {
  /** Broadcast path of the track's namespace. */
  namespace: string;
  track: CatalogTrack;
  /** Decoder description (`initRef` -> `initDataList[].data`, Base64), if any. */
  init?: Uint8Array;
  /** A key unique across merged catalogs: `namespace|name`. */
  key: string;
}

/** Parses a catalog object (JSON). Throws with a readable message when it is not one. */
export function parseCatalog(bytes: Uint8Array | string): Catalog {
  const text = typeof bytes === "string" ? bytes : new TextDecoder().decode(bytes);
  const json = JSON.parse(text) as unknown;
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new Error("catalog is not a JSON object");
  const cat = json as Catalog;
  if ("deltaUpdate" in cat) throw new Error("catalog object is a delta update");
  if (!Array.isArray(cat.tracks)) throw new Error("catalog has no tracks array");
  for (const t of cat.tracks) {
    if (typeof t?.name !== "string") throw new Error("catalog track without a name");
  }
  return cat;
}

/**
 * Applies a delta update (msf-01 §5.1.6: `deltaUpdate` is an array of `{add|remove|clone}`
 * operations) to a catalog; returns the new catalog.
 */
export function applyDelta(base: Catalog, bytes: Uint8Array): Catalog {
  const update = JSON.parse(new TextDecoder().decode(bytes)) as { deltaUpdate?: unknown };
  if (!Array.isArray(update.deltaUpdate)) return parseCatalog(bytes);
  const tracks = [...base.tracks];
  const same = (a: { name: string; namespace?: string }, b: { name: string; namespace?: string }) =>
    a.name === b.name && (a.namespace ?? "") === (b.namespace ?? "");
  for (const op of update.deltaUpdate as Record<string, unknown>[]) {
    if (Array.isArray(op.add)) tracks.push(...(op.add as CatalogTrack[]));
    if (Array.isArray(op.remove)) {
      for (const r of op.remove as CatalogTrack[]) {
        const i = tracks.findIndex((t) => same(t, r));
        if (i >= 0) tracks.splice(i, 1);
      }
    }
    if (Array.isArray(op.clone)) {
      for (const c of op.clone as Record<string, unknown>[]) {
        const parent = tracks.find((t) => same(t, { name: String(c.parentName), namespace: c.parentNamespace as string | undefined }));
        if (!parent) continue;
        const { parentName: _p, parentNamespace: _n, ...rest } = c;
        tracks.push({ ...parent, ...rest } as CatalogTrack);
      }
    }
  }
  return { ...base, tracks };
}

function base64Bytes(data: string): Uint8Array {
  const bin = atob(data);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** The tracks of one catalog, resolved against the namespace it was read from. */
export function resolveTracks(cat: Catalog, namespace: string): TrackRef[] {
  return cat.tracks.map((track) => {
    const ns = track.namespace ?? namespace;
    let init: Uint8Array | undefined;
    const entry = track.initRef ? cat.initDataList?.find((d) => d.id === track.initRef) : undefined;
    if (entry?.data) init = base64Bytes(entry.data);
    else if (typeof track.initData === "string") init = base64Bytes(track.initData); // draft-00
    return { namespace: ns, track, init, key: `${ns}|${track.name}` };
  });
}

/** The role of a track: `role`, else guessed from video-only or audio-only fields. */
export function roleOf(t: CatalogTrack): string | undefined {
  if (t.role) return t.role;
  if (t.width !== undefined || t.height !== undefined || t.framerate !== undefined) return "video";
  if (t.samplerate !== undefined || t.channelConfig !== undefined) return "audio";
  return undefined;
}

/** Caption tracks: role `caption` or `subtitle`, or WebVTT event timelines. */
export function isCaptionTrack(t: CatalogTrack): boolean {
  const role = roleOf(t);
  return role === "caption" || role === "subtitle" || t.eventType === "urn:msf:captions:webvtt";
}

/** Merges the tracks of several catalogs (keyed by namespace), in a stable order: main first. */
export function mergeCatalogs(catalogs: Map<string, Catalog>, main: string): TrackRef[] {
  const order = [...catalogs.keys()].sort((a, b) => (a === main ? -1 : b === main ? 1 : a.localeCompare(b)));
  const seen = new Set<string>();
  const out: TrackRef[] = [];
  for (const ns of order) {
    const cat = catalogs.get(ns);
    if (!cat) continue;
    for (const ref of resolveTracks(cat, ns)) {
      if (seen.has(ref.key)) continue;
      seen.add(ref.key);
      out.push(ref);
    }
  }
  return out;
}

/** A human label for a menu entry. */
export function trackLabel(ref: TrackRef): string {
  const t = ref.track;
  if (t.label) return t.lang && t.lang !== "und" && !t.label.includes(t.lang) ? `${t.label} (${t.lang})` : t.label;
  if (t.lang && t.lang !== "und") {
    try {
      const name = new Intl.DisplayNames(["en"], { type: "language" }).of(t.lang);
      if (name) return name;
    } catch {
      // not a language tag Intl knows
    }
    return t.lang;
  }
  return t.name;
}

/**
 * The audio track to start with: the original (label "Original", or no language or `und`),
 * from the first namespace that has audio ({@link mergeCatalogs} puts the broadcast's first).
 */
export function defaultAudio(tracks: TrackRef[]): TrackRef | undefined {
  const all = tracks.filter((r) => roleOf(r.track) === "audio");
  const audio = all.filter((r) => r.namespace === all[0]?.namespace);
  return (
    audio.find((r) => r.track.label === "Original") ??
    audio.find((r) => !r.track.lang || r.track.lang === "und") ??
    audio[0]
  );
}

/** The caption track to start with: the browser's language, else the first. */
export function defaultCaptions(tracks: TrackRef[], languages: readonly string[]): TrackRef | undefined {
  const captions = tracks.filter((r) => isCaptionTrack(r.track));
  for (const lang of languages) {
    const primary = lang.toLowerCase().split("-")[0];
    const hit = captions.find((r) => (r.track.lang ?? "").toLowerCase().split("-")[0] === primary);
    if (hit) return hit;
  }
  return captions[0];
}
