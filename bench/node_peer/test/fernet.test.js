// node --test (in bench/node_peer): Fernet against the spec's vector and MultiFernet rules.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidToken, MultiFernet } from '../lib/fernet.js';

// github.com/fernet/spec, generate.json / verify.json.
const SPEC_KEY = 'cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=';
const SPEC_TOKEN =
  'gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==';
const SPEC_NOW = Date.parse('1985-10-26T01:20:01-07:00') / 1000;
const OTHER_KEY = 'Vd7jXJgXnh4U3MMEUsuVXdn5fNNPrLgqdhA5RjJdB0M=';

test('decrypts the spec token', () => {
  const { madeAt, plaintext } = new MultiFernet([SPEC_KEY]).decrypt(SPEC_TOKEN, { ttl: 60, now: SPEC_NOW });
  assert.equal(plaintext.toString(), 'hello');
  assert.equal(madeAt, SPEC_NOW - 1);
});

test('refuses an expired, a future, a tampered and a foreign token', () => {
  const keys = new MultiFernet([SPEC_KEY]);
  assert.throws(() => keys.decrypt(SPEC_TOKEN, { ttl: 60, now: SPEC_NOW + 100 }), InvalidToken);
  assert.throws(() => keys.decrypt(SPEC_TOKEN, { ttl: 60, now: SPEC_NOW - 100 }), InvalidToken);
  const tampered = `${SPEC_TOKEN.slice(0, 40)}A${SPEC_TOKEN.slice(41)}`;
  assert.throws(() => keys.decrypt(tampered, { ttl: 60, now: SPEC_NOW }), InvalidToken);
  assert.throws(() => new MultiFernet([OTHER_KEY]).decrypt(SPEC_TOKEN, { now: SPEC_NOW }), InvalidToken);
  assert.throws(() => keys.decrypt('not a token', { now: SPEC_NOW }), InvalidToken);
});

test('every key decrypts, the first encrypts', () => {
  const rotated = new MultiFernet([OTHER_KEY, SPEC_KEY]);
  assert.equal(rotated.decrypt(SPEC_TOKEN, { now: SPEC_NOW }).plaintext.toString(), 'hello');
  const token = rotated.encrypt(Buffer.from('{"a":1}'), 1_700_000_000);
  assert.equal(token.length % 4, 0, 'padded url-safe base64');
  const opened = new MultiFernet([OTHER_KEY]).decrypt(token, { ttl: 10, now: 1_700_000_005 });
  assert.equal(opened.plaintext.toString(), '{"a":1}');
  assert.equal(opened.madeAt, 1_700_000_000);
  assert.throws(() => new MultiFernet([SPEC_KEY]).decrypt(token, { now: 1_700_000_000 }), InvalidToken);
});
