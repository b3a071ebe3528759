// The same names and arguments syncgate declares (syncgate/topology.py, consumers/topology.py).
export const QUORUM = { 'x-queue-type': 'quorum' };

/** The durable topic exchange, with an alternate exchange that keeps unroutable events. */
export async function declareEventsExchange(channel, s) {
  await channel.assertExchange(s.unroutedExchange, 'fanout', { durable: true });
  await channel.assertQueue(s.unroutedExchange, { durable: true, arguments: QUORUM });
  await channel.bindQueue(s.unroutedExchange, s.unroutedExchange, '');
  await channel.assertExchange(s.exchange, 'topic', {
    durable: true,
    alternateExchange: s.unroutedExchange,
  });
}

/** The consumer's work queue (dead-lettering to a DLX and its DLQ), bound to the exchange. */
export async function declareConsumerTopology(channel, s) {
  await declareEventsExchange(channel, s);
  await channel.assertExchange(s.deadLetterExchange, 'direct', { durable: true });
  await channel.assertQueue(s.deadLetterQueue, { durable: true, arguments: QUORUM });
  await channel.bindQueue(s.deadLetterQueue, s.deadLetterExchange, s.queue);
  await channel.assertQueue(s.queue, {
    durable: true,
    arguments: {
      ...QUORUM,
      'x-dead-letter-strategy': 'at-least-once',
      'x-overflow': 'reject-publish',
      'x-dead-letter-exchange': s.deadLetterExchange,
      'x-dead-letter-routing-key': s.queue,
      'x-delivery-limit': s.deliveryLimit,
    },
  });
  await channel.bindQueue(s.queue, s.exchange, s.binding);
  // The consumer's own confluence/app.sync.completed events, kept for subscribers: bounded,
  // oldest dropped first (common/topology.py `completed_queue_arguments`).
  await channel.assertQueue(s.completedQueue, {
    durable: true,
    arguments: { ...QUORUM, 'x-max-length': s.completedMaxLength, 'x-overflow': 'drop-head' },
  });
  await channel.bindQueue(s.completedQueue, s.exchange, s.completedBinding);
}

/** The revocation stream, declared with the gateway's arguments (gateway/revocation.py). */
export async function declareRevocationStream(channel, stream, maxAge) {
  await channel.assertQueue(stream, {
    durable: true,
    arguments: { 'x-queue-type': 'stream', 'x-max-age': `${maxAge}s` },
  });
}
