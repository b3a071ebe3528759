// The Node.js peer's HTTP side: POST /api/sync on Fastify, the same contract as syncgate's
// gateway (sessions, CSRF, body rules, the event, a confirmed mandatory publish).
//
//   BENCH_PEER_* variables (see lib/settings.js), then: node server.js
import { randomUUID } from 'node:crypto';
import Fastify from 'fastify';
import pino from 'pino';
import { Broker } from './lib/broker.js';
import { nextTraceparent } from './lib/cloudevents.js';
import { GatewayError, csrfFailed, malformedJson, unsupportedMediaType, validationFailed } from './lib/errors.js';
import { EVENT_NAME, EVENT_VERSION, compileSchema } from './lib/schema.js';
import { Sessions, setCookie } from './lib/sessions.js';
import { loadAppSettings, loadUsers, settings } from './lib/settings.js';
import { uuid7 } from './lib/uuid7.js';

const s = settings();
// Asynchronous writes to stdout, which the bench sends to this system's log file.
const destination = pino.destination({ dest: 1, sync: false });
const log = pino({}, destination);

const schema = compileSchema(s.schemaFile);
const users = loadUsers(s.usersFile);
// Read once at start: the peer does not watch the file for changes (syncgate does).
const appSettings = loadAppSettings(s.appSettingsFile, schema.validateAppSettings);
const broker = new Broker(s, log);
const sessions = new Sessions({
  keys: s.sessionKeys,
  users,
  revocations: broker,
  idleTimeout: s.sessionIdleTimeout,
  absoluteTimeout: s.sessionAbsoluteTimeout,
  retryAfter: s.retryAfter,
});

const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const JSON_TYPE = /^application\/(?:json|[^;\s]+\+json)$/;
// The same, for Fastify's parser lookup, which tests the whole header (parameters and all).
const JSON_HEADER = /^application\/(?:json|[^;\s]+\+json)\s*(?:;|$)/i;
const fatalUtf8 = new TextDecoder('utf-8', { fatal: true });

const app = Fastify({
  loggerInstance: log,
  disableRequestLogging: true,
  requestIdHeader: false,
  requestIdLogLabel: 'request_id',
  genReqId: (req) => {
    const offered = req.headers['x-request-id'];
    return typeof offered === 'string' && SANE_REQUEST_ID.test(offered) ? offered : randomUUID().replaceAll('-', '');
  },
  bodyLimit: s.maxBodyBytes,
  return503OnClosing: true,
});

// Set per request by the hooks below; declared up front, so every request has one shape.
app.decorateRequest('signedIn', null);
app.decorateRequest('eventId', undefined);

/** The media type of a Content-Type header, lower-cased, without its parameters. */
function mediaType(header) {
  const semi = header.indexOf(';');
  return (semi < 0 ? header : header.slice(0, semi)).trim().toLowerCase();
}

function hasBody(headers) {
  const length = headers['content-length'];
  return headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

// JSON bodies: strict UTF-8, an empty body counts as {} (as syncgate), depth and number limits.
app.removeAllContentTypeParsers();
app.addContentTypeParser(JSON_HEADER, { parseAs: 'buffer' }, (request, body, done) => {
  const header = request.headers['content-type'];
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(header)?.[1]?.toLowerCase();
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') {
    return done(malformedJson(`JSON bodies must be UTF-8, not '${charset}'`));
  }
  if (body.length === 0) return done(null, {});
  let value;
  try {
    value = JSON.parse(fatalUtf8.decode(body));
  } catch (err) {
    return done(malformedJson(`the body is not valid JSON: ${err.message}`));
  }
  const problem = jsonLimits(value, s.maxJsonDepth);
  return problem === undefined ? done(null, value) : done(malformedJson(problem));
});

// Any other type: an empty body is no body (as aiohttp's `body_exists`), else a 415.
app.addContentTypeParser('*', { parseAs: 'buffer' }, (request, body, done) => {
  if (body.length === 0) return done(null, undefined);
  done(unsupportedMediaType());
});

/** What is wrong with a parsed body's shape, or undefined: depth, and numbers JSON cannot hold. */
function jsonLimits(value, maxDepth) {
  const stack = [[value, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop();
    if (typeof node === 'object' && node !== null) {
      if (depth > maxDepth) return `the JSON is nested deeper than ${maxDepth} levels`;
      for (const child of Array.isArray(node) ? node : Object.values(node)) {
        if (typeof child === 'object' || typeof child === 'number') stack.push([child, depth + 1]);
      }
    } else if (typeof node === 'number' && !Number.isFinite(node)) {
      return 'a JSON number is too large to represent';
    }
  }
  return undefined;
}

// gateway/csrf.py, then the session (gateway/sessions.py), before the body is read.
function signedIn(request, reply, done) {
  try {
    request.signedIn = checkRequest(request, reply);
  } catch (err) {
    return done(err);
  }
  done();
}

function checkRequest(request, reply) {
  const headers = request.headers;
  if (headers['sec-fetch-site']?.toLowerCase() === 'cross-site') {
    throw csrfFailed('cross-site requests may not change state');
  }
  const origin = headers.origin;
  if (origin !== undefined && origin.replace(/\/+$/, '') !== `http://${headers.host}`) {
    throw csrfFailed(`requests from origin '${origin}' may not change state`);
  }
  const contentType = headers['content-type'];
  if (contentType !== undefined) {
    const type = mediaType(contentType);
    if (!JSON_TYPE.test(type) && !(type === 'application/octet-stream' && !hasBody(headers))) {
      throw unsupportedMediaType();
    }
  }
  let who;
  try {
    who = sessions.check(headers.cookie);
  } catch (err) {
    if (err.clearCookie) reply.header('set-cookie', setCookie(undefined));
    throw err;
  }
  if (!sessions.csrfValid(who.sessionId, headers['x-csrf-token'])) {
    throw csrfFailed('a valid X-CSRF-Token header is required; get one from /api/auth/csrf');
  }
  if (who.renewed !== undefined) reply.header('set-cookie', setCookie(who.renewed, s.sessionAbsoluteTimeout));
  return who;
}

function syncBody(body) {
  if (body === undefined) return null; // no body at all
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw validationFailed('the body must be a JSON object');
  }
  const extra = Object.keys(body).filter((key) => key !== 'data');
  if (extra.length > 0) {
    throw validationFailed(
      'the body does not match the contract',
      extra.map((key) => ({ loc: key, msg: 'Extra inputs are not permitted', type: 'extra_forbidden' })),
    );
  }
  return body.data ?? null;
}

async function sync(request, reply) {
  const data = syncBody(request.body);
  const event = {
    id: uuid7(),
    name: EVENT_NAME,
    v: EVENT_VERSION,
    ts: Date.now(),
    user: request.signedIn.user,
    appSettings,
    data,
  };
  // The event is the gateway's own making: one that fails its schema is a bug here (a 500).
  if (!schema.validateEvent(event)) {
    throw new Error(`the event does not match its schema: ${schema.errorsText(schema.validateEvent.errors)}`);
  }
  request.eventId = event.id;
  await broker.publish(event, request.id, nextTraceparent(request.headers.traceparent));
  reply.code(202);
  return { success: 'true', id: event.id };
}

const syncRoute = {
  onRequest: signedIn,
  schema: {
    response: {
      202: {
        type: 'object',
        properties: { success: { type: 'string' }, id: { type: 'string' } },
        required: ['success', 'id'],
      },
    },
  },
  handler: sync,
};
app.post('/api/sync', syncRoute);
app.post('/api/route', syncRoute);
app.get('/healthz', async () => ({ status: 'ok' }));
app.get('/readyz', async (request, reply) => {
  if (broker.ready) return { status: 'ready' };
  reply.code(503);
  return { status: 'broker unavailable' };
});

const FASTIFY_CODES = {
  400: 'bad_request',
  404: 'not_found',
  405: 'method_not_allowed',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
};

app.setErrorHandler((err, request, reply) => {
  let status = err.statusCode ?? 500;
  let code = err instanceof GatewayError ? err.code : FASTIFY_CODES[status] ?? `http_${status}`;
  let message = err.message;
  if (status >= 500 && !(err instanceof GatewayError)) {
    request.log.error({ err }, 'unhandled error');
    [status, code, message] = [500, 'internal_error', 'the gateway failed; it is logged'];
  } else if (status >= 500) {
    request.log.warn(`${code}: ${message}`);
  }
  if (err.headers) reply.headers(err.headers);
  reply.code(status).send({ error: { code, message, details: err.details ?? [] } });
});
app.setNotFoundHandler((request, reply) => {
  reply.code(404).send({ error: { code: 'not_found', message: 'Not Found', details: [] } });
});

app.addHook('onSend', (request, reply, payload, done) => {
  reply.header('x-request-id', request.id);
  done(null, payload);
});
// The one request line (Fastify's own request logging is off).
app.addHook('onResponse', (request, reply, done) => {
  const url = request.url;
  const query = url.indexOf('?');
  request.log.info(
    {
      method: request.method,
      path: query < 0 ? url : url.slice(0, query),
      status: reply.statusCode,
      duration_ms: Math.round(reply.elapsedTime * 100) / 100,
      event_id: request.eventId,
    },
    'request',
  );
  done();
});

async function shutdown() {
  await app.close();
  await broker.close();
  destination.flushSync();
  process.exit(0);
}
process.once('SIGTERM', shutdown);
process.once('SIGINT', shutdown);

broker.start();
await app.listen({ host: s.host, port: s.port });
log.info({ port: s.port }, 'listening');
