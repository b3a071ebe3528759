// The Node.js peer's consumer: the same quorum work queue as syncgate's consumer, each body
// parsed and validated against the exported schema, then deduped and recorded in SQLite.
//
// Group commit: what arrived in one turn of the event loop is committed in one transaction
// (one fsync), then acked with one `multiple` ack. That ack is safe: deliveries come in tag
// order, each is either rejected at once (invalid) or joins the next batch, and a batch is
// committed synchronously, so when it is acked every delivery with a lower tag is settled.
//
//   BENCH_PEER_* variables (see lib/settings.js), then: node consumer.js
import amqp from 'amqplib';
import pino from 'pino';
import { openRunStore } from './lib/run_store.js';
import { compileSchema } from './lib/schema.js';
import { settings } from './lib/settings.js';
import { declareConsumerTopology } from './lib/topology.js';

const s = settings();
const destination = pino.destination({ dest: 1, sync: false });
const log = pino({}, destination);
const { validateEvent, errorsText } = compileSchema(s.schemaFile);
const store = openRunStore(s.runStore);

const connection = await amqp.connect(s.amqpUrl, {
  clientProperties: { connection_name: 'bench-node-peer-consumer' },
});
let stopping = false;
connection.on('error', (err) => log.error({ err: err.message }, 'broker connection error'));
connection.on('close', () => {
  if (stopping) return;
  // Unacked deliveries go back to the queue; the bench sees this process end.
  log.error('lost the broker connection; exiting');
  destination.flushSync();
  process.exit(1);
});
const channel = await connection.createChannel();
await channel.prefetch(s.prefetch);
await declareConsumerTopology(channel, s);

let pending = [];
let scheduled = false;
let commits = 0;

function flush() {
  scheduled = false;
  const batch = pending;
  pending = [];
  if (batch.length === 0) return;
  const last = batch[batch.length - 1].message;
  let duplicates;
  try {
    duplicates = store.commit(batch);
  } catch (err) {
    // Nothing of the batch is on disk: hand all of it back (the delivery limit is a backstop).
    log.error({ err: err.message, messages: batch.length }, 'could not commit; requeueing the batch');
    channel.nack(last, true, true);
    return;
  }
  commits += 1;
  channel.ack(last, true); // every delivery up to `last` is settled: see the top of this file
  for (const { event, correlationId } of batch) {
    log.info({ event_id: event.id, correlation_id: correlationId }, 'settled: ack');
  }
  if (duplicates > 0) log.info({ duplicates }, 'acked duplicates without recording them again');
}

const { consumerTag } = await channel.consume(
  s.queue,
  (message) => {
    if (message === null) {
      log.error('the broker cancelled the consumer; exiting');
      destination.flushSync();
      process.exit(1);
    }
    const receivedAt = Date.now();
    let event;
    try {
      event = JSON.parse(message.content.toString('utf8'));
    } catch (err) {
      log.error({ reason: 'invalid_body', err: err.message }, 'dead-lettering the message');
      return channel.reject(message, false);
    }
    if (!validateEvent(event)) {
      log.error({ reason: 'invalid_body', err: errorsText(validateEvent.errors) }, 'dead-lettering the message');
      return channel.reject(message, false);
    }
    pending.push({ message, event, receivedAt, correlationId: message.properties.correlationId });
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  },
  { noAck: false },
);
log.info(
  {
    queue: s.queue,
    prefetch: s.prefetch,
    journal_mode: store.db.pragma('journal_mode', { simple: true }),
    synchronous: store.db.pragma('synchronous', { simple: true }), // 2 is FULL
  },
  'consuming',
);

async function shutdown() {
  stopping = true;
  await channel.cancel(consumerTag).catch(() => {});
  flush(); // what is pending is committed and acked before the channel closes
  await channel.close().catch(() => {});
  await connection.close().catch(() => {});
  store.db.close();
  log.info({ commits }, 'stopped; nothing is left in flight');
  destination.flushSync();
  process.exit(0);
}
process.once('SIGTERM', shutdown);
process.once('SIGINT', shutdown);
