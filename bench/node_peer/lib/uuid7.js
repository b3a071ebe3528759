// UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits, as syncgate's event ids.
import { randomFillSync } from 'node:crypto';

const POOL = Buffer.allocUnsafe(16 * 512);
let offset = POOL.length;

export function uuid7() {
  if (offset === POOL.length) {
    randomFillSync(POOL); // one call to the kernel's generator for 512 ids, as randomUUID does
    offset = 0;
  }
  const bytes = POOL.subarray(offset, offset + 16);
  offset += 16;
  const ms = Date.now();
  bytes.writeUInt16BE(Math.floor(ms / 2 ** 32), 0);
  bytes.writeUInt32BE(ms >>> 0, 2);
  bytes[6] = (bytes[6] & 0x0f) | 0x70;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
