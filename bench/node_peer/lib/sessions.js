// syncgate's session cookie, read (and renewed) as gateway/sessions.py does.
//
// The cookie `syncgate` holds a Fernet token of aiohttp-session's JSON,
// {"created": <s>, "session": {"uid", "sid", "iat", "seen"}}. A client sends the same cookie
// until it is renewed, so the decryption of recent cookies is remembered (bounded, least
// recently used out), as syncgate's RotatingCookieStorage does: only what the token says (its
// stamp and payload), and every request still checks the stamp against the clock and the
// payload's timeouts, the revocation list and the user.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { InvalidToken, MultiFernet, decodeKey } from './fernet.js';
import { Lru } from './lru.js';
import { brokerUnavailable, csrfFailed, notAuthenticated } from './errors.js';

export const COOKIE_NAME = 'syncgate';
// Renew the idle timestamp at most this often (gateway/sessions.py RENEW_AFTER_SECONDS).
const RENEW_AFTER_SECONDS = 60;
const CSRF_LABEL = 'syncgate csrf token v1';

/** The value of the `syncgate` cookie in a Cookie header, unquoted; undefined if absent. */
export function readCookie(header) {
  if (header === undefined) return undefined;
  const wanted = `${COOKIE_NAME}=`;
  let at = header.indexOf(wanted);
  while (at > 0 && header[at - 1] !== ' ' && header[at - 1] !== ';') {
    at = header.indexOf(wanted, at + 1);
  }
  if (at < 0) return undefined;
  const start = at + wanted.length;
  const end = header.indexOf(';', start);
  let value = (end < 0 ? header.slice(start) : header.slice(start, end)).trim();
  if (value.length >= 2 && value[0] === '"' && value[value.length - 1] === '"') value = value.slice(1, -1);
  return value;
}

const isInt = (value) => Number.isInteger(value);

export class Sessions {
  constructor({ keys, users, revocations, idleTimeout, absoluteTimeout, retryAfter }) {
    this.keys = new MultiFernet(keys);
    this.users = users;
    this.revocations = revocations;
    this.idleTimeout = idleTimeout;
    this.absoluteTimeout = absoluteTimeout;
    this.retryAfter = retryAfter;
    this.opened = new Lru(10_000);
    // CSRF: the token key is derived from each session key; the expected token per session
    // is remembered, as gateway/csrf.py does.
    this.csrfKeys = keys.map((key) => createHmac('sha256', decodeKey(key)).update(CSRF_LABEL).digest());
    this.csrfTokens = new Lru(10_000);
  }

  /** { madeAt, payload } of a cookie, or undefined if no key opens it or it expired. */
  open(cookie, now) {
    let opened = this.opened.get(cookie);
    if (opened === undefined) {
      try {
        const { madeAt, plaintext } = this.keys.decrypt(cookie, { ttl: this.absoluteTimeout, now });
        opened = { madeAt, payload: JSON.parse(plaintext.toString('utf8')) };
      } catch (err) {
        if (err instanceof InvalidToken || err instanceof SyntaxError) return undefined;
        throw err;
      }
      this.opened.set(cookie, opened);
    } else if (opened.madeAt + this.absoluteTimeout < now || now + 60 < opened.madeAt) {
      return undefined; // the token's own TTL, checked on every request
    }
    return opened;
  }

  /**
   * The signed-in { user, sessionId, issuedAt, renewed } of a request, where `renewed` is the
   * new cookie value when the idle timestamp was renewed. Throws a GatewayError (401, or 503
   * while the revocations are not replayed yet); `err.clearCookie` when the cookie decrypted
   * but its session is dead, as syncgate's `session.invalidate()`.
   */
  check(cookieHeader) {
    const cookie = readCookie(cookieHeader);
    if (cookie === undefined) throw notAuthenticated('sign in first');
    const now = Math.floor(Date.now() / 1000);
    const opened = this.open(cookie, now);
    if (opened === undefined) throw notAuthenticated('sign in first');
    const { created, session } = opened.payload ?? {};
    // aiohttp-session drops the data of a session created longer than max_age ago.
    const fresh = isInt(created) && created !== 0 && now - created <= this.absoluteTimeout;
    const data = fresh && session !== null && typeof session === 'object' ? session : {};
    const { uid, sid, iat, seen } = data;
    if (typeof uid !== 'string' || typeof sid !== 'string' || !isInt(iat) || !isInt(seen)) {
      throw dead(notAuthenticated('sign in first'));
    }
    if (now - iat > this.absoluteTimeout || now - seen > this.idleTimeout) {
      throw dead(notAuthenticated('the session has expired; sign in again'));
    }
    if (!this.revocations.ready) {
      // Fail closed: until every logout is known, any cookie might be one.
      throw brokerUnavailable('the gateway is still loading logged-out sessions', this.retryAfter);
    }
    if (this.revocations.isRevoked(sid)) throw dead(notAuthenticated('the session has ended; sign in again'));
    const user = this.users.get(uid);
    if (user === undefined) throw dead(notAuthenticated('the user no longer exists'));
    let renewed;
    if (now - seen >= RENEW_AFTER_SECONDS) {
      // aiohttp-session stamps `created` anew whenever the session changes.
      const payload = { created: now, session: { ...data, seen: now } };
      renewed = this.keys.encrypt(Buffer.from(JSON.stringify(payload)), now);
    }
    return { user, sessionId: sid, issuedAt: iat, renewed };
  }

  csrfToken(keyIndex, sessionId) {
    const digest = createHmac('sha256', this.csrfKeys[keyIndex]).update(sessionId).digest();
    return digest.toString('base64url');
  }

  /** Whether `token` is the CSRF token of this session under any of the keys. */
  csrfValid(sessionId, token) {
    if (typeof token !== 'string' || token.length === 0) return false;
    let expected = this.csrfTokens.get(sessionId);
    if (expected === undefined) {
      expected = this.csrfKeys.map((_, i) => Buffer.from(this.csrfToken(i, sessionId)));
      this.csrfTokens.set(sessionId, expected);
    }
    const offered = Buffer.from(token);
    return expected.some((e) => e.length === offered.length && timingSafeEqual(e, offered));
  }
}

function dead(err) {
  err.clearCookie = true;
  return err;
}

const SET_COOKIE_TAIL = '; HttpOnly; Path=/; SameSite=Lax';

/** The Set-Cookie value of a renewed cookie, or of its removal. */
export function setCookie(value, maxAge) {
  if (value === undefined) {
    return `${COOKIE_NAME}=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/`;
  }
  const expires = new Date(Date.now() + maxAge * 1000).toUTCString();
  return `${COOKIE_NAME}="${value}"; expires=${expires}; Max-Age=${maxAge}${SET_COOKIE_TAIL}`;
}

export { csrfFailed };
