// The HTTP side's broker link: one connection with a ConfirmChannel for the events and a
// channel following the revocation stream (gateway/revocation.py). It reconnects by itself;
// until it is back, publishes answer 503.
import { randomBytes } from 'node:crypto';
import amqp from 'amqplib';
import { attributeHeaders } from './cloudevents.js';
import { brokerUnavailable } from './errors.js';
import { declareEventsExchange, declareRevocationStream } from './topology.js';
import { EVENT_NAME, EVENT_VERSION, ROUTING_KEY } from './schema.js';

const APP_ID = 'bench-node-peer';
const SOURCE = 'urn:syncgate:gateway';
const SCHEMA_FILE = 'confluence.app.sync.v1.schema.json';
// Unacked stream deliveries in flight; a stream consumer must set one (and ack manually).
const STREAM_PREFETCH = 256;
const RECONNECT_MS = 1000;

/** Session id → the time (s) after which its cookie is dead anyway; expired ids are pruned. */
export class RevokedSessions {
  constructor() {
    this.until = new Map();
    this.nextPrune = 0;
  }

  add(sid, until) {
    const now = Date.now() / 1000;
    if (until > now) this.until.set(sid, Math.max(until, this.until.get(sid) ?? until));
    if (now >= this.nextPrune) {
      for (const [id, end] of this.until) if (end <= now) this.until.delete(id);
      this.nextPrune = now + 60;
    }
  }

  has(sid) {
    const until = this.until.get(sid);
    return until !== undefined && until > Date.now() / 1000;
  }
}

export class Broker {
  constructor(s, log) {
    this.s = s;
    this.log = log;
    this.connection = undefined;
    this.channel = undefined; // the ConfirmChannel, while it is open
    this.returned = new Set(); // message ids the broker returned (mandatory, unroutable)
    this.revoked = new RevokedSessions();
    // A random marker appended after subscribing: once it comes back, every revocation made
    // before this process started has been read (the stream is ordered).
    this.marker = randomBytes(16).toString('hex');
    this.caughtUp = !s.revocationStream; // no stream configured: nothing to wait for
    this.closing = false;
  }

  get ready() {
    return this.channel !== undefined && this.caughtUp;
  }

  isRevoked(sid) {
    return this.revoked.has(sid);
  }

  async start() {
    while (!this.closing) {
      try {
        await this.open();
        return;
      } catch (err) {
        this.log.warn({ err: err.message }, 'broker not reachable yet; retrying');
        await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
      }
    }
  }

  async open() {
    const connection = await amqp.connect(this.s.amqpUrl, {
      clientProperties: { connection_name: `bench-node-peer-gateway ${this.s.queue}` },
    });
    connection.on('error', (err) => this.log.warn({ err: err.message }, 'broker connection error'));
    connection.on('close', () => this.lost('connection closed'));
    this.connection = connection;
    const channel = await connection.createConfirmChannel();
    channel.on('error', (err) => this.log.warn({ err: err.message }, 'broker channel error'));
    channel.on('close', () => this.lost('channel closed'));
    // A mandatory publish the broker cannot route comes back before its confirm.
    channel.on('return', (message) => this.returned.add(message.properties.messageId));
    await declareEventsExchange(channel, this.s);
    if (this.s.revocationStream) await this.follow(connection, channel);
    this.channel = channel;
    this.log.info({ exchange: this.s.exchange }, 'connected to the broker; exchange declared');
  }

  async follow(connection, confirmChannel) {
    const stream = this.s.revocationStream;
    const channel = await connection.createChannel();
    channel.on('error', (err) => this.log.warn({ err: err.message }, 'revocation channel error'));
    await declareRevocationStream(channel, stream, this.s.sessionAbsoluteTimeout);
    await channel.prefetch(STREAM_PREFETCH);
    await channel.consume(
      stream,
      (message) => {
        if (message === null) return this.lost('revocation consumer cancelled');
        channel.ack(message);
        let record;
        try {
          record = JSON.parse(message.content.toString('utf8'));
        } catch {
          return this.log.warn('skipped an unreadable record on the revocation stream');
        }
        if (record?.marker === this.marker) {
          if (!this.caughtUp) this.log.info({ revoked: this.revoked.until.size }, 'replayed the revocation stream');
          this.caughtUp = true;
        } else if (typeof record?.sid === 'string' && Number.isInteger(record?.until)) {
          this.revoked.add(record.sid, record.until);
        }
      },
      { noAck: false, arguments: { 'x-stream-offset': 'first' } },
    );
    await new Promise((resolve, reject) => {
      confirmChannel.sendToQueue(
        stream,
        Buffer.from(JSON.stringify({ marker: this.marker })),
        { contentType: 'application/json', persistent: true, appId: APP_ID, mandatory: true },
        (err) => (err ? reject(err) : resolve()),
      );
    });
  }

  lost(why) {
    if (this.connection === undefined) return;
    const connection = this.connection;
    this.connection = undefined;
    this.channel = undefined;
    if (this.closing) return;
    this.log.warn({ why }, 'lost the broker; publishes answer 503 until it is back');
    connection.close().catch(() => {});
    setTimeout(() => this.start(), RECONNECT_MS);
  }

  /** Resolves once the broker confirmed the event; rejects with a 503 GatewayError otherwise.
   * The headers are syncgate's: `v`, the CloudEvents attributes and the `traceparent`. */
  publish(event, correlationId, traceparent) {
    const channel = this.channel;
    const retryAfter = this.s.retryAfter;
    if (channel === undefined) return Promise.reject(brokerUnavailable('the broker connection failed', retryAfter));
    const id = event.id;
    const body = Buffer.from(JSON.stringify(event));
    return new Promise((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        this.log.warn({ event_id: id }, 'publish missed the deadline');
        reject(brokerUnavailable('the broker did not confirm the event in time', retryAfter));
      }, this.s.publishDeadlineMs);
      const confirmed = (err) => {
        const returned = this.returned.delete(id);
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (returned) {
          this.log.error({ event_id: id }, 'the broker returned the event as unroutable');
          reject(brokerUnavailable('the broker could not route the event', retryAfter));
        } else if (err) {
          this.log.error({ event_id: id, err: err.message }, 'the broker did not confirm the event');
          reject(brokerUnavailable('the broker refused the event', retryAfter));
        } else {
          resolve();
        }
      };
      try {
        channel.publish(
          this.s.exchange,
          ROUTING_KEY,
          body,
          {
            contentType: 'application/json',
            contentEncoding: 'utf-8',
            headers: {
              v: EVENT_VERSION,
              ...attributeHeaders({
                source: SOURCE,
                id,
                name: EVENT_NAME,
                ts: event.ts,
                subject: event.user.id,
                schemaFile: SCHEMA_FILE,
              }),
              traceparent,
            },
            persistent: true, // delivery_mode 2
            correlationId,
            messageId: id,
            timestamp: Math.floor(event.ts / 1000), // AMQP's timestamp is whole seconds
            type: EVENT_NAME,
            appId: APP_ID,
            mandatory: true,
          },
          confirmed,
        );
      } catch (err) {
        confirmed(err); // the channel closed under us: nothing was sent
      }
    });
  }

  async close() {
    this.closing = true;
    const connection = this.connection;
    this.connection = undefined;
    this.channel = undefined;
    if (connection !== undefined) await connection.close().catch(() => {});
  }
}
