// Fernet (https://github.com/fernet/spec) on node:crypto, with MultiFernet's semantics: every
// key decrypts, the first encrypts. Tokens are what Python's `cryptography` makes and reads:
// version 0x80, a big-endian 64-bit timestamp (seconds), a 16-byte IV, AES-128-CBC with PKCS#7,
// and an HMAC-SHA256 over all of that; url-safe base64 with padding.
import { createCipheriv, createDecipheriv, createHmac, randomFillSync, timingSafeEqual } from 'node:crypto';

const VERSION = 0x80;
const HEADER = 1 + 8 + 16; // version, timestamp, IV
const MAC = 32;
// As cryptography's Fernet: a token stamped this far in the future is refused.
export const MAX_CLOCK_SKEW = 60;

export class InvalidToken extends Error {
  constructor() {
    super('invalid token');
  }
}

/** urlsafe_b64decode as Python does it, for keys: 32 bytes or it is not a Fernet key. */
export function decodeKey(key) {
  const raw = Buffer.from(key.trim(), 'base64url');
  if (raw.length !== 32 || raw.toString('base64url') !== key.trim().replace(/=+$/, '')) {
    throw new Error('a Fernet key is 32 url-safe base64-encoded bytes');
  }
  return raw;
}

function b64padded(buffer) {
  const text = buffer.toString('base64url');
  return text + '='.repeat((4 - (text.length % 4)) % 4);
}

class Fernet {
  constructor(key) {
    const raw = decodeKey(key);
    this.signingKey = raw.subarray(0, 16);
    this.encryptionKey = raw.subarray(16);
  }

  /** The plaintext if this key signed the token, else undefined. */
  open(data) {
    const signed = data.subarray(0, data.length - MAC);
    const mac = createHmac('sha256', this.signingKey).update(signed).digest();
    if (!timingSafeEqual(mac, data.subarray(data.length - MAC))) return undefined;
    const iv = data.subarray(9, HEADER);
    const decipher = createDecipheriv('aes-128-cbc', this.encryptionKey, iv);
    try {
      return Buffer.concat([decipher.update(data.subarray(HEADER, data.length - MAC)), decipher.final()]);
    } catch {
      throw new InvalidToken(); // bad padding under a valid MAC: not a Fernet token
    }
  }

  seal(plaintext, now) {
    const iv = randomFillSync(Buffer.allocUnsafe(16));
    const cipher = createCipheriv('aes-128-cbc', this.encryptionKey, iv);
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    const head = Buffer.allocUnsafe(HEADER);
    head[0] = VERSION;
    head.writeBigUInt64BE(BigInt(now), 1);
    iv.copy(head, 9);
    const mac = createHmac('sha256', this.signingKey).update(head).update(body).digest();
    return b64padded(Buffer.concat([head, body, mac]));
  }
}

export class MultiFernet {
  constructor(keys) {
    if (keys.length === 0) throw new Error('at least one Fernet key is required');
    this.fernets = keys.map((key) => new Fernet(key));
  }

  /** When the token was made (seconds); InvalidToken if it is not shaped like a Fernet token. */
  static timestamp(data) {
    if (data.length < HEADER + 16 + MAC || (data.length - HEADER - MAC) % 16 !== 0 || data[0] !== VERSION) {
      throw new InvalidToken();
    }
    return Number(data.readBigUInt64BE(1));
  }

  /** { madeAt, plaintext } of a token string; InvalidToken if no key opens it or it expired. */
  decrypt(token, { ttl, now }) {
    const data = Buffer.from(token, 'base64url');
    const madeAt = MultiFernet.timestamp(data);
    if (ttl !== undefined && madeAt + ttl < now) throw new InvalidToken();
    if (now + MAX_CLOCK_SKEW < madeAt) throw new InvalidToken();
    for (const fernet of this.fernets) {
      const plaintext = fernet.open(data);
      if (plaintext !== undefined) return { madeAt, plaintext };
    }
    throw new InvalidToken();
  }

  encrypt(plaintext, now) {
    return this.fernets[0].seal(plaintext, now);
  }
}
