// LOC object properties (draft-ietf-moq-loc-04 §2.3) as they arrive in a draft-18 object's
// property block: delta-encoded Key-Value-Pairs (draft-ietf-moq-transport-18 §1.4.3), even
// keys carrying one varint, odd keys a length and bytes. Varints are draft-18's "leading 1
// bits" form. The block comes from the patched @moq/net (web/build/patch-moq.mjs).

/** TIMESCALE (loc-04 §2.3.1.2): units per second of TIMESTAMP. */
export const TIMESCALE = 0x08n;
/** TIMESTAMP (loc-04 §2.3.1.1): media time, or µs since the Unix epoch without TIMESCALE. */
export const TIMESTAMP = 0x10n;
/** SEND_TIME (moqcast, media/src/loc.rs): wall-clock µs at which the publisher sent the object. */
export const SEND_TIME = 0x3a4cn;

export interface LocProperties {
  /** TIMESTAMP converted to microseconds. */
  timestampUs?: number;
  /** True when TIMESTAMP is wall-clock time (no TIMESCALE). */
  wallClock?: boolean;
  /** SEND_TIME in microseconds since the Unix epoch. */
  sendTimeUs?: number;
}

/** Reads one draft-18 varint at `offset`; returns [value, next offset]. Throws when the block ends early. */
export function readVarint(buf: Uint8Array, offset: number): [bigint, number] {
  if (offset >= buf.length) throw new Error("LOC properties: block ends inside a varint");
  const first = buf[offset];
  let ones = 0;
  while (ones < 8 && first & (0x80 >> ones)) ones++;
  // 0 ones: 1 byte (7 bits); n ones (1..5): n+1 bytes; 6: 7 bytes; 7: 8 bytes; 8: 9 bytes.
  const size = ones <= 5 ? ones + 1 : ones === 6 ? 7 : ones === 7 ? 8 : 9;
  if (offset + size > buf.length) throw new Error("LOC properties: block ends inside a varint");
  const prefixBits = ones === 8 ? 8 : ones === 6 ? 7 : ones + 1;
  let value = BigInt(first & (0xff >> prefixBits));
  if (ones === 8) value = 0n;
  for (let i = 1; i < size; i++) value = (value << 8n) | BigInt(buf[offset + i]);
  return [value, offset + size];
}

/** Parses a property block. Unknown properties are skipped; malformed blocks throw. */
export function parseLocProperties(block: Uint8Array | undefined): LocProperties {
  const out: LocProperties = {};
  if (!block || block.length === 0) return out;
  let offset = 0;
  let key = 0n;
  let timestamp: bigint | undefined;
  let timescale: bigint | undefined;
  while (offset < block.length) {
    let delta: bigint;
    [delta, offset] = readVarint(block, offset);
    key += delta;
    if (key % 2n === 0n) {
      let value: bigint;
      [value, offset] = readVarint(block, offset);
      if (key === TIMESTAMP) timestamp = value;
      else if (key === TIMESCALE) timescale = value;
      else if (key === SEND_TIME) out.sendTimeUs = Number(value);
    } else {
      let len: bigint;
      [len, offset] = readVarint(block, offset);
      if (BigInt(offset) + len > BigInt(block.length)) throw new Error("LOC properties: a value runs past the block");
      offset += Number(len);
    }
  }
  if (timestamp !== undefined) {
    if (timescale !== undefined && timescale > 0n) {
      out.timestampUs = Number((timestamp * 1_000_000n) / timescale);
    } else {
      out.timestampUs = Number(timestamp);
      out.wallClock = true;
    }
  }
  return out;
}
