// The Node.js peer's consumer: the same quorum work queue as syncgate's consumer, each body
// parsed and validated against the exported schema, then deduped and recorded in SQLite, and
// each run recorded announced as syncgate's consumer does: a confluence/app.sync.completed
// event, published with a confirm after the commit and before the ack (consumers/follow_ups.py).
//
// Group commit: what arrived in one turn of the event loop is committed in one transaction
// (one fsync), its follow-ups published, then acked with one `multiple` ack once they are
// confirmed. That ack is safe: deliveries come in tag order, each is either rejected at once
// (invalid) or joins the next batch, a batch is committed synchronously, and batches are acked
// in the order they were committed, so when one is acked every lower tag is settled.
//
//   BENCH_PEER_* variables (see lib/settings.js), then: node consumer.js
import amqp from 'amqplib';
import pino from 'pino';
import { attributeHeaders } from './lib/cloudevents.js';
import { openRunStore } from './lib/run_store.js';
import { compileSchema } from './lib/schema.js';
import { settings } from './lib/settings.js';
import { declareConsumerTopology } from './lib/topology.js';
import { uuid7 } from './lib/uuid7.js';

const s = settings();
const destination = pino.destination({ dest: 1, sync: false });
const log = pino({}, destination);
const { validateEvent, errorsText } = compileSchema(s.schemaFile);
const store = openRunStore(s.runStore);

const RECONNECT_MS = 1000;
const APP_ID = 'bench-node-peer-consumer';
const SOURCE = 'urn:syncgate:consumer';
const COMPLETED = 'confluence/app.sync.completed';
const COMPLETED_KEY = 'confluence.app.sync.completed';
const COMPLETED_SCHEMA = 'confluence.app.sync.completed.v1.schema.json';
let link; // { connection, channel, publisher, consumerTag } while consuming
let stopping = false;
let pending = [];
let scheduled = false;
let commits = 0;
let acked = Promise.resolve(); // the last batch's ack: batches are acked in commit order

/** Publish the completed event for one recorded run; resolves true once confirmed, false if
 * the broker refused it or the channel closed (the run is committed: the ack goes ahead, as
 * syncgate's consumer does once its attempts are spent; the peer makes one attempt). */
function announce(publisher, { event, receivedAt, correlationId }) {
  const ts = Date.now();
  const completed = {
    id: uuid7(),
    name: COMPLETED,
    v: '1',
    ts,
    user: event.user,
    data: { syncId: event.id, receivedAt },
  };
  return new Promise((resolve) => {
    const confirmed = (err) => {
      if (err) log.warn({ event_id: completed.id, err: err.message }, 'gave up publishing the follow-up');
      resolve(!err);
    };
    try {
      publisher.publish(
        s.exchange,
        COMPLETED_KEY,
        Buffer.from(JSON.stringify(completed)),
        {
          contentType: 'application/json',
          contentEncoding: 'utf-8',
          headers: {
            v: '1',
            ...attributeHeaders({
              source: SOURCE,
              id: completed.id,
              name: COMPLETED,
              ts,
              subject: event.user.id,
              schemaFile: COMPLETED_SCHEMA,
            }),
          },
          persistent: true,
          messageId: completed.id,
          correlationId,
          timestamp: Math.floor(ts / 1000),
          type: COMPLETED,
          appId: APP_ID,
          mandatory: true,
        },
        confirmed,
      );
    } catch (err) {
      confirmed(err);
    }
  });
}

function flush() {
  scheduled = false;
  const batch = pending;
  pending = [];
  if (batch.length === 0) return;
  const { channel } = batch[0];
  const last = batch[batch.length - 1].message;
  let recorded;
  try {
    recorded = store.commit(batch);
  } catch (err) {
    // Nothing of the batch is on disk: hand all of it back (the delivery limit is a backstop).
    log.error({ err: err.message, messages: batch.length }, 'could not commit; requeueing the batch');
    settle(() => channel.nack(last, true, true));
    return;
  }
  commits += 1;
  const duplicates = batch.length - recorded.length;
  const publisher = link?.publisher;
  const announced = publisher === undefined ? [] : recorded.map((entry) => announce(publisher, entry));
  acked = Promise.all([acked, ...announced]).then(() => {
    // Every delivery up to `last` is settled: see the top of this file.
    if (!settle(() => channel.ack(last, true))) return;
    for (const { event, correlationId } of batch) {
      log.info({ event_id: event.id, correlation_id: correlationId }, 'settled: ack');
    }
    if (duplicates > 0) log.info({ duplicates }, 'acked duplicates without recording them again');
  });
}

/** Ack or nack; false if the channel closed first (its deliveries come back, and the
 * committed ones are then acked as duplicates: never lost, never recorded twice). */
function settle(send) {
  try {
    send();
    return true;
  } catch (err) {
    log.warn({ err: err.message }, 'could not settle: the channel closed; the broker redelivers');
    return false;
  }
}

function onMessage(channel, message) {
  if (message === null) return lost('the broker cancelled the consumer');
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
  pending.push({ channel, message, event, receivedAt, correlationId: message.properties.correlationId });
  if (!scheduled) {
    scheduled = true;
    setImmediate(flush);
  }
}

async function consume() {
  const connection = await amqp.connect(s.amqpUrl, {
    clientProperties: { connection_name: `bench-node-peer-consumer ${s.queue}` },
  });
  connection.on('error', (err) => log.warn({ err: err.message }, 'broker connection error'));
  connection.on('close', () => lost('the connection closed'));
  const channel = await connection.createChannel();
  channel.on('error', (err) => log.warn({ err: err.message }, 'broker channel error'));
  channel.on('close', () => lost('the channel closed'));
  await channel.prefetch(s.prefetch);
  await declareConsumerTopology(channel, s);
  // Follow-ups go out on their own confirming channel, as syncgate's consumer's do.
  const publisher = await connection.createConfirmChannel();
  publisher.on('error', (err) => log.warn({ err: err.message }, 'broker publishing channel error'));
  publisher.on('close', () => lost('the publishing channel closed'));
  link = { connection, channel, publisher, consumerTag: undefined };
  const { consumerTag } = await channel.consume(s.queue, (message) => onMessage(channel, message), {
    noAck: false,
  });
  link.consumerTag = consumerTag;
  log.info(
    {
      queue: s.queue,
      prefetch: s.prefetch,
      journal_mode: store.db.pragma('journal_mode', { simple: true }),
      synchronous: store.db.pragma('synchronous', { simple: true }), // 2 is FULL
    },
    'consuming',
  );
}

async function start() {
  while (!stopping) {
    try {
      return await consume();
    } catch (err) {
      log.warn({ err: err.message }, 'broker not reachable yet; retrying');
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  }
}

function lost(why) {
  if (link === undefined || stopping) return;
  const { connection } = link;
  link = undefined;
  // Deliveries not committed yet go back to the queue with the channel; forget them here.
  pending = [];
  log.warn({ why }, 'lost the broker; reconnecting');
  connection.close().catch(() => {});
  setTimeout(start, RECONNECT_MS);
}

await start();

async function shutdown() {
  stopping = true;
  if (link !== undefined) {
    const { connection, channel, consumerTag } = link;
    await channel.cancel(consumerTag).catch(() => {});
    flush(); // what is pending is committed and acked before the channel closes
    await acked;
    await channel.close().catch(() => {});
    await connection.close().catch(() => {});
  }
  store.db.close();
  log.info({ commits }, 'stopped; nothing is left in flight');
  destination.flushSync();
  process.exit(0);
}
process.once('SIGTERM', shutdown);
process.once('SIGINT', shutdown);
