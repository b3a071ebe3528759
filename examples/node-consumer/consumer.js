// A consumer of syncgate's events, as a team on another stack would write one.
//
// - It declares nothing on syncgate's exchange: it checks that the exchange is there
//   (passively) and binds a queue of its own. Declaring the exchange with other arguments
//   (amqplib's usual `assertExchange(name, 'topic', {durable: true})` leaves out syncgate's
//   `alternate-exchange`) is refused with 406 PRECONDITION_FAILED and closes the channel.
// - Each body is validated against the JSON Schema that syncgate exports for its event name
//   and version (schemas/json/<name with dots>.v<v>.schema.json), with Ajv's draft 2020-12
//   and formats, as strictly as syncgate's own consumer validates.
// - `data` may carry integers beyond 2^53, which JSON.parse would round: the handler gets the
//   body parsed by lossless-json, integers beyond the safe range as BigInt.
// - Ack after the handler; an invalid body is rejected without requeue (to the queue's own
//   dead-letter exchange, if you give it one).
//
//   SYNCGATE_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ QUEUE=my-team.syncs node consumer.js
//
// Settings (environment): SYNCGATE_AMQP_URL, SYNCGATE_EXCHANGE [syncgate.events], QUEUE
// (required: your own queue's name), BINDING [confluence.#], SCHEMAS_DIR [../../schemas/json],
// MAX_MESSAGES (stop after this many, for a test; unset: run until SIGTERM).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import amqp from 'amqplib';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { isSafeNumber, parse, stringify } from 'lossless-json';

const env = process.env;
const url = env.SYNCGATE_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672/';
const exchange = env.SYNCGATE_EXCHANGE ?? 'syncgate.events';
const queue = env.QUEUE;
const binding = env.BINDING ?? 'confluence.#';
const schemasDir =
  env.SCHEMAS_DIR ?? fileURLToPath(new URL('../../schemas/json', import.meta.url));
const maxMessages = env.MAX_MESSAGES ? Number(env.MAX_MESSAGES) : Infinity;
if (!queue) {
  console.error('QUEUE is required: the name of your own queue');
  process.exit(2);
}

// One validator per exported schema file, found by its $id (the file's name).
const ajv = new Ajv2020({ allErrors: true, strict: true });
addFormats(ajv);
for (const file of readdirSync(schemasDir).filter((f) => f.endsWith('.schema.json'))) {
  ajv.addSchema(JSON.parse(readFileSync(join(schemasDir, file), 'utf8')));
}
const schemaIdFor = (name, v) => `${String(name).replaceAll('/', '.')}.v${v}.schema.json`;

// Integers beyond 2^53 become BigInt; every other number stays a number.
const exactNumber = (text) =>
  isSafeNumber(text) ? Number(text) : /^-?\d+$/.test(text) ? BigInt(text) : Number(text);

function validate(text) {
  let rough;
  try {
    rough = JSON.parse(text); // what Ajv checks; rounding a big integer changes no verdict
  } catch (err) {
    return { errors: [`not JSON: ${err.message}`] };
  }
  const check = rough && ajv.getSchema(schemaIdFor(rough.name, rough.v));
  if (!check) return { errors: [`no schema for ${rough?.name} v${rough?.v}`] };
  if (!check(rough)) return { errors: check.errors.map((e) => `${e.instancePath} ${e.message}`) };
  return { event: parse(text, null, exactNumber) };
}

// The business logic: here it prints one JSON line per event (integers exact).
async function handle(event, message) {
  process.stdout.write(
    stringify({ handled: event.id, name: event.name, v: event.v, messageId: message.properties.messageId, data: event.data }) + '\n',
  );
}

const connection = await amqp.connect(url, { clientProperties: { connection_name: `example-node-consumer ${queue}` } });
const channel = await connection.createChannel();
await channel.checkExchange(exchange);
await channel.assertQueue(queue, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
await channel.bindQueue(queue, exchange, binding);
await channel.prefetch(16);

let seen = 0;
async function stop() {
  await channel.close().catch(() => {});
  await connection.close().catch(() => {});
}
process.on('SIGTERM', () => stop().then(() => process.exit(0)));

await channel.consume(queue, async (message) => {
  if (message === null) return; // the queue was deleted
  const { event, errors } = validate(message.content.toString('utf8'));
  if (errors) {
    process.stdout.write(JSON.stringify({ rejected: message.properties.messageId, errors }) + '\n');
    channel.nack(message, false, false);
  } else {
    await handle(event, message);
    channel.ack(message);
  }
  seen += 1;
  if (seen >= maxMessages) await stop();
});
process.stdout.write(JSON.stringify({ consuming: queue }) + '\n');
