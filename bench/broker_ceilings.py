"""Ceilings C and D: raw aio-pika, no HTTP, no framework. Each run prints one JSON line.

    python -m bench.broker_ceilings publish --exchange X --concurrency N --duration S
    python -m bench.broker_ceilings consume --queue Q --prefetch P --expect COUNT

C keeps N confirmed, persistent, mandatory publishes of the same event in flight on one
confirming channel. D consumes and acks, one ack per message, at the consumer's prefetch.
CPU is this process's own (time.process_time) over the measured part only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import time

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.events import sample_event_body
from schemas.events import new_event_id

ROUTING_KEY = "confluence.app.sync"


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return 0.0
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


async def publish(
    url: str, exchange_name: str, concurrency: int, duration: float
) -> dict[str, float]:
    connection = await aio_pika.connect(
        url, client_properties={"connection_name": "bench-ceiling-C"}
    )
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(exchange_name, ensure=False)
        template = sample_event_body()
        template_id = template[7:43]  # {"id":"<36 characters>", ...
        latencies: list[float] = []
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + duration

        async def keep_one_in_flight() -> None:
            while loop.time() < stop_at:
                # A fresh id per message, so a consumer's dedupe never short-cuts the work; made
                # as the gateway makes them.
                message_id = str(new_event_id())
                message = aio_pika.Message(
                    template.replace(template_id, message_id.encode()),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=message_id,
                    type="confluence/app.sync",
                    headers={"v": "1"},
                )
                started = time.perf_counter()
                await exchange.publish(message, ROUTING_KEY, mandatory=True)
                latencies.append(time.perf_counter() - started)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(keep_one_in_flight() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await connection.close()
    return {
        "count": len(latencies),
        "seconds": wall,
        "cpu_seconds": cpu,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


async def consume(url: str, queue_name: str, prefetch: int, expect: int) -> dict[str, float]:
    connection = await aio_pika.connect(url, client_properties={"connection_name": "bench-D"})
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(queue_name, ensure=False)
        acked = 0
        last_ack_at = 0.0
        done = asyncio.Event()

        async def ack(message: AbstractIncomingMessage) -> None:
            nonlocal acked, last_ack_at
            await message.ack()
            acked += 1
            last_ack_at = time.perf_counter()
            if acked >= expect:
                done.set()

        cpu0, wall0 = time.process_time(), time.perf_counter()
        last_ack_at = wall0
        tag = await queue.consume(ack)
        last_seen = -1
        # Stop at the expected count, or when nothing arrived for two seconds: never hang.
        while not done.is_set() and acked != last_seen:
            last_seen = acked
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=2.0)
        await queue.cancel(tag)
        # Up to the last ack: the idle wait at the end is not consuming.
        cpu, wall = time.process_time() - cpu0, last_ack_at - wall0
    finally:
        await connection.close()
    return {
        "count": acked,
        "seconds": wall,
        "cpu_seconds": cpu,
        "rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.broker_ceilings")
    parser.add_argument("mode", choices=["publish", "consume"])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--exchange")
    parser.add_argument("--queue")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--prefetch", type=int, default=64)
    parser.add_argument("--expect", type=int, default=0)
    args = parser.parse_args()
    if args.mode == "publish":
        result = asyncio.run(publish(args.url, args.exchange, args.concurrency, args.duration))
    else:
        result = asyncio.run(consume(args.url, args.queue, args.prefetch, args.expect))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
