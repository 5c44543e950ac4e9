// Build-time patches to @moq/net 0.3.4, applied by an esbuild plugin while bundling (the
// installed package is left untouched, and no install script is needed).
//
// 1. SUBSCRIBE_OK's Location parameter (LARGEST_OBJECT, 0x09) on draft-18. @moq/net reads it
//    as a length-prefixed pair of varints, the Key-Value-Pair rule for odd types. Draft-18's
//    Message Parameters section says a Location value is "two consecutive varints (Group,
//    Object)" with no length, which is what moq-transport 0.17 (our relay's library) and other
//    draft-18 peers send. Unpatched, the viewer fails with "unexpected end of stream" and
//    resets the subscription whenever a peer reports a largest location. Other drafts keep
//    @moq/net's reading.
// 2. Object properties (LOC, draft-ietf-moq-loc-04). @moq/net keeps only TIMESTAMP, and only
//    when SUBSCRIBE_OK declared a track TIMESCALE (moq-transport 0.17 declares none), so frames
//    come out stamped with the local receive time. The patch keeps each object's raw property
//    block on the frame (`frame.properties`, a Uint8Array) so the viewer can read TIMESTAMP,
//    TIMESCALE and SEND_TIME itself (src/loc.ts).
// 3. No WebTransport subprotocol to read (Firefox ESR 153). @moq/net learns the MoQT version
//    from `WebTransport.protocol` (the server's WT-Protocol). Firefox ESR 153 has no such
//    attribute and sends no WT-Available-Protocols header at all, whatever `protocols` says;
//    @moq/net then takes the session for a pre-draft-17 one and opens a bidi stream with a
//    legacy CLIENT_SETUP (type 0x20) offering moq-lite-01/02 and draft-14, which a draft-18
//    relay rejects ("unknown message type 0x20"): the viewer connects, the session ends, and
//    it reconnects in a loop. Draft-18 negotiates its version only by ALPN / WT-Protocol (no
//    version list in SETUP), and moqcast's relay speaks moqt-18 to a WebTransport client that
//    offered no subprotocol; so when the browser's WebTransport cannot report a subprotocol,
//    the viewer speaks moqt-18 too. A browser that has the attribute keeps @moq/net's
//    behaviour (an empty `protocol` there means the server really chose none).
//
// Every patch names the exact text it replaces and how often it must occur: when a new
// @moq/net version changes that text the build fails instead of shipping an unpatched client.

import { readFile } from "node:fs/promises";

/** @typedef {{ file: string, find: string, replace: string, count: number, why: string }} Patch */

/** @type {Patch[]} */
export const PATCHES = [
    {
        file: "ietf/parameters.js",
        why: "draft-18 Location parameter: two varints without a length (decode)",
        count: 1,
        find: `                case "location": {
                    // LARGEST_OBJECT is an odd type, so the Key-Value-Pair rule gives it a
                    // Length on every draft: two varints inside the value.
                    const size = await r.u53();`,
        replace: `                case "location": {
                    // moqcast patch: draft-18 writes a Location as two consecutive varints
                    // (Group, Object) with no length prefix.
                    if (version === Version.DRAFT_18) {
                        const groupId = await r.u62();
                        const objectId = await r.u62();
                        params.#locations.set(id, { groupId, objectId });
                        break;
                    }
                    const size = await r.u53();`,
    },
    {
        file: "ietf/parameters.js",
        why: "draft-18 Location parameter: two varints without a length (encode)",
        count: 1,
        find: `                        const group = Varint.encodeLeadingOnes(location.groupId);
                        const object = Varint.encodeLeadingOnes(location.objectId);
                        await w.u53(group.length + object.length);`,
        replace: `                        const group = Varint.encodeLeadingOnes(location.groupId);
                        const object = Varint.encodeLeadingOnes(location.objectId);
                        // moqcast patch: no length prefix on draft-18.
                        if (version !== Version.DRAFT_18)
                            await w.u53(group.length + object.length);`,
    },
    {
        file: "ietf/object.js",
        why: "keep the raw object property block",
        count: 1,
        find: `        let timestamp;
        if (flags.hasExtensions) {
            const extensionsLength = await r.u53();
            const extensions = await r.read(extensionsLength);`,
        replace: `        let timestamp;
        let rawProperties;
        if (flags.hasExtensions) {
            const extensionsLength = await r.u53();
            const extensions = await r.read(extensionsLength);
            // moqcast patch: keep the property block for the application.
            rawProperties = new Uint8Array(extensions);`,
    },
    {
        file: "ietf/object.js",
        why: "attach the property block to decoded frames",
        count: 1,
        find: `            return new Frame({ payload, timestamp });`,
        replace: `            return Object.assign(new Frame({ payload, timestamp }), { properties: rawProperties });`,
    },
    {
        file: "ietf/object.js",
        why: "attach the property block to empty frames",
        count: 1,
        find: `                return new Frame({ payload: new Uint8Array(0), timestamp });`,
        replace: `                return Object.assign(new Frame({ payload: new Uint8Array(0), timestamp }), { properties: rawProperties });`,
    },
    {
        file: "ietf/subscriber.js",
        why: "pass the property block through the group to readers",
        count: 1,
        find: `producer.writeFrame({ payload: frame.payload, timestamp: frame.timestamp ?? Timestamp.now() });`,
        replace: `producer.writeFrame({ payload: frame.payload, timestamp: frame.timestamp ?? Timestamp.now(), properties: frame.properties });`,
    },
    {
        file: "connection/connect.js",
        why: "moqt-18 when the browser's WebTransport cannot report a subprotocol (Firefox ESR 153)",
        count: 1,
        find: `    const protocol = session.protocol || undefined;`,
        replace: `    // moqcast patch: a native WebTransport without the \`protocol\` attribute (Firefox ESR 153)
    // negotiated no subprotocol; moqcast's relay speaks moqt-18 then, and so do we.
    const protocol = session.protocol || (!(session instanceof Session) && !("protocol" in session) ? Ietf.ALPN.DRAFT_18 : undefined);`,
    },
];

/** The package-relative path of a file inside @moq/net, or undefined for other files. */
export function moqNetFile(path) {
    const m = path.replaceAll("\\", "/").match(/\/@moq\/net\/(.+\.js)$/);
    return m ? m[1] : undefined;
}

/** Applies the patches for `file` (package-relative) to `source`; throws when an anchor is not found exactly as often as expected. */
export function applyPatches(file, source) {
    let out = source;
    for (const patch of PATCHES.filter((p) => p.file === file)) {
        const found = out.split(patch.find).length - 1;
        if (found !== patch.count) {
            throw new Error(
                `@moq/net patch "${patch.why}" expected its anchor ${patch.count} time(s) in ${file}, found ${found}: ` +
                    "the @moq/net version changed; check web/build/patch-moq.mjs",
            );
        }
        out = out.replaceAll(patch.find, patch.replace);
    }
    return out;
}

/** esbuild plugin applying {@link PATCHES}; fails the build when a patched file was never bundled. */
export function moqPatchPlugin({ requireAll = true } = {}) {
    return {
        name: "moqcast-patch-moq-net",
        setup(build) {
            const patched = new Set();
            build.onStart(() => patched.clear());
            build.onLoad({ filter: /[\\/]@moq[\\/]net[\\/].*\.js$/ }, async (args) => {
                const file = moqNetFile(args.path);
                if (!file || !PATCHES.some((p) => p.file === file)) return undefined;
                const source = await readFile(args.path, "utf8");
                patched.add(file);
                return { contents: applyPatches(file, source), loader: "js" };
            });
            build.onEnd((result) => {
                if (!requireAll || result.errors.length > 0) return;
                const missing = [...new Set(PATCHES.map((p) => p.file))].filter((f) => !patched.has(f));
                if (missing.length > 0) {
                    result.errors.push({ text: `@moq/net files to patch were not bundled: ${missing.join(", ")}` });
                }
            });
        },
    };
}
