// The CloudEvents attributes syncgate puts in each message's headers (common/cloudevents.py,
// AMQP binding: `cloudEvents:` prefix), and the W3C `traceparent` it sends beside them
// (common/tracing.py): the same header names and values, so the broker carries the same bytes.
import { randomBytes } from 'node:crypto';

const PREFIX = 'cloudEvents:';
const SCHEMA_BASE = 'urn:syncgate:schema:';

/** `ts` (ms since the epoch) as RFC 3339 in UTC with milliseconds: "2026-12-03T08:43:02.123Z". */
function eventTime(ts) {
  return new Date(ts).toISOString();
}

/** The `cloudEvents:*` headers of one event. */
export function attributeHeaders({ source, id, name, ts, subject, schemaFile }) {
  return {
    [`${PREFIX}specversion`]: '1.0',
    [`${PREFIX}id`]: id,
    [`${PREFIX}source`]: source,
    [`${PREFIX}type`]: name,
    [`${PREFIX}time`]: eventTime(ts),
    [`${PREFIX}dataschema`]: SCHEMA_BASE + schemaFile,
    [`${PREFIX}subject`]: subject,
  };
}

const TRACEPARENT = /^00-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})$/;
const ZERO_TRACE = '0'.repeat(32);

/** The `traceparent` of this hop's span: the client's trace continued with a new span id, or
 * a new sampled trace when the client sent none (or an invalid one). */
export function nextTraceparent(offered) {
  const match = typeof offered === 'string' ? TRACEPARENT.exec(offered) : null;
  const spanId = randomBytes(8).toString('hex');
  if (match !== null && match[1] !== ZERO_TRACE) return `00-${match[1]}-${spanId}-${match[2]}`;
  return `00-${randomBytes(16).toString('hex')}-${spanId}-01`;
}
