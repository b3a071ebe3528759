// The peer's settings, from BENCH_PEER_* variables (the bench sets them; see bench/systems.py).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseToml } from 'smol-toml';

function env(name, fallback) {
  const value = process.env[`BENCH_PEER_${name}`];
  if (value === undefined || value === '') {
    if (fallback === undefined) throw new Error(`BENCH_PEER_${name} is not set`);
    return fallback;
  }
  return value;
}

function int(name, fallback) {
  const value = Number.parseInt(env(name, String(fallback)), 10);
  if (!Number.isInteger(value)) throw new Error(`BENCH_PEER_${name} is not an integer`);
  return value;
}

const DEFAULT_SCHEMA = fileURLToPath(
  new URL('../../../schemas/json/confluence.app.sync.v1.schema.json', import.meta.url),
);

export function settings() {
  const queue = env('QUEUE');
  return {
    amqpUrl: env('AMQP_URL', 'amqp://guest:guest@127.0.0.1:5672/'),
    exchange: env('EXCHANGE'),
    unroutedExchange: env('UNROUTED_EXCHANGE'),
    queue,
    deadLetterExchange: env('DEAD_LETTER_EXCHANGE', `${queue}.dlx`),
    deadLetterQueue: `${queue}.dlq`,
    // Exactly the sync's key, as syncgate's work queue: the consumer's completed events go to
    // their own queue, not back to work.
    binding: 'confluence.app.sync',
    completedQueue: `${queue}.completed`,
    completedBinding: 'confluence.app.sync.completed',
    completedMaxLength: 100_000,
    deliveryLimit: int('DELIVERY_LIMIT', 20),
    prefetch: int('PREFETCH', 64),
    revocationStream: env('REVOCATION_STREAM', ''),
    sessionKeys: env('SESSION_KEYS').split(',').map((k) => k.trim()).filter(Boolean),
    usersFile: env('USERS_FILE', ''),
    appSettingsFile: env('APP_SETTINGS_FILE', ''),
    runStore: env('RUN_STORE', ''),
    schemaFile: env('SCHEMA_FILE', DEFAULT_SCHEMA),
    host: env('HOST', '127.0.0.1'),
    port: int('PORT', 8090),
    sessionIdleTimeout: int('SESSION_IDLE_TIMEOUT', 30 * 60),
    sessionAbsoluteTimeout: int('SESSION_ABSOLUTE_TIMEOUT', 8 * 60 * 60),
    publishDeadlineMs: int('PUBLISH_DEADLINE_MS', 5000),
    retryAfter: int('RETRY_AFTER', 5),
    maxBodyBytes: int('MAX_BODY_BYTES', 64 * 1024),
    maxJsonDepth: int('MAX_JSON_DEPTH', 32),
  };
}

/** The users file, `{"users": [{id, email, name, password_hash}]}`: a Map by id, built once. */
export function loadUsers(path) {
  const { users } = JSON.parse(readFileSync(path, 'utf8'));
  if (!Array.isArray(users)) throw new Error(`${path}: "users" is not a list`);
  // What sessions and events carry: the record without its hash, in the event's key order.
  return new Map(users.map((u) => [u.id, Object.freeze({ id: u.id, email: u.email, name: u.name })]));
}

/** The app settings (TOML, or JSON by extension), read once, validated, defaults filled in. */
export function loadAppSettings(path, validate) {
  const text = readFileSync(path, 'utf8');
  const raw = path.endsWith('.toml') ? parseToml(text) : JSON.parse(text);
  // syncgate's model order and defaults, so the events are the same bytes for the same file.
  const appSettings = {
    baseUrl: raw.baseUrl,
    spaceKeys: raw.spaceKeys,
    syncIntervalMinutes: raw.syncIntervalMinutes ?? 60,
    includeAttachments: raw.includeAttachments ?? false,
  };
  for (const key of Object.keys(raw)) {
    if (!(key in appSettings)) throw new Error(`${path}: unknown app setting ${key}`);
  }
  if (!validate(appSettings)) {
    throw new Error(`${path}: invalid app settings: ${JSON.stringify(validate.errors)}`);
  }
  return Object.freeze(appSettings);
}
