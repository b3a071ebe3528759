"""The fallback load generator when wrk is not installed: N connections, each one request at a
time, for a duration. Prints one JSON line like the wrk script, plus its own CPU share, so the
table shows when the generator itself was the bottleneck.

    python -m bench.pyload URL --concurrency N --duration S [--cookie C] [--csrf T] [--key-prefix P]

With --key-prefix every request carries an Idempotency-Key of its own (`P-<n>`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp

from bench.broker_ceilings import percentile

BODY = b'{"data":{"bench":true}}'


async def run(
    url: str, concurrency: int, duration: float, headers: dict[str, str], key_prefix: str = ""
) -> dict[str, float]:
    latencies: list[float] = []
    failed = 0
    sent = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + duration

        async def one_connection() -> None:
            nonlocal failed, sent
            while loop.time() < stop_at:
                sent += 1
                key = {"Idempotency-Key": f"{key_prefix}-{sent}"} if key_prefix else None
                started = time.perf_counter()
                try:
                    async with http.post(url, data=BODY, headers=key) as response:
                        await response.read()
                        if response.status >= 400:
                            failed += 1
                except aiohttp.ClientError:
                    failed += 1
                latencies.append(time.perf_counter() - started)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one_connection() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "requests": len(latencies),
        "seconds": wall,
        "failed": failed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "loadgen_cpu_share": cpu / wall if wall else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pyload")
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--cookie", default="")
    parser.add_argument("--csrf", default="")
    parser.add_argument("--key-prefix", default="")
    args = parser.parse_args()
    headers = {"Content-Type": "application/json"}
    if args.cookie:
        headers["Cookie"] = args.cookie
    if args.csrf:
        headers["X-CSRF-Token"] = args.csrf
    result = asyncio.run(run(args.url, args.concurrency, args.duration, headers, args.key_prefix))
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
