"""Many concurrent signed-in clients posting syncs, in a process of their own, so the test's
event loop is not one of the things under load. Each client opens its connection first (a GET
/healthz, untimed), then all post syncs back to back for the duration, each timing its own
answers. After a 503 a client waits what Retry-After says (with jitter), as a well-behaved
client does; with --impatient it retries at once.

    python -m tests.support.overload_client URL --clients N --duration S --cookie C --csrf T
        --out FILE

FILE gets one JSON object: the statuses, how many 503s lacked Retry-After, the slowest answer,
the client errors, and the id of every event accepted (202).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

BODY = b'{"data":{"overload":true}}'


async def run(
    base_url: str, clients: int, duration: float, headers: dict[str, str], *, impatient: bool
) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    accepted: list[str] = []
    no_retry_after = 0
    slow_starts: list[float] = []  # when, into the run, each answer slower than 5 s was asked
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as http:
        warmed = 0
        everyone_warm = asyncio.Event()
        loop = asyncio.get_running_loop()
        stop_at = 0.0

        async def client() -> None:
            nonlocal warmed, no_retry_after
            try:
                async with http.get(f"{base_url}/healthz") as response:
                    await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[f"warm-up {type(exc).__name__}"] += 1
            warmed += 1
            if warmed == clients:
                everyone_warm.set()
            await everyone_warm.wait()
            while loop.time() < stop_at:
                started = loop.time()
                try:
                    async with http.post(f"{base_url}/api/sync", data=BODY) as response:
                        body = await response.read()
                        status = response.status
                        retry_after = response.headers.get("Retry-After")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors[type(exc).__name__] += 1
                    continue
                latencies.append(loop.time() - started)
                if latencies[-1] > 5.0:
                    slow_starts.append(round(started - (stop_at - duration), 1))
                statuses[status] += 1
                if status == 202:
                    accepted.append(json.loads(body)["id"])
                elif status == 503 and not retry_after:
                    no_retry_after += 1
                elif status == 503 and retry_after and not impatient:
                    # As a well-behaved client does: after Retry-After, with some jitter so
                    # that the clients shed together do not all come back together.
                    pause = float(retry_after) * random.uniform(1.0, 1.5)  # noqa: S311
                    await asyncio.sleep(min(pause, max(0.0, stop_at - loop.time())))

        tasks = [asyncio.create_task(client()) for _ in range(clients)]
        await everyone_warm.wait()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        stop_at = loop.time() + duration
        await asyncio.gather(*tasks)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    by_second = Counter(int(latency) for latency in latencies)
    latencies.sort()
    return {
        "slow_starts": Counter(int(t) for t in slow_starts),
        "latency_seconds": {str(k): by_second[k] for k in sorted(by_second)},
        "clients": clients,
        "seconds": wall,
        "statuses": {str(k): v for k, v in statuses.items()},
        "no_retry_after": no_retry_after,
        "errors": dict(errors),
        "max_latency": latencies[-1] if latencies else 0.0,
        "p50_latency": latencies[len(latencies) // 2] if latencies else 0.0,
        "p99_latency": latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
        "client_cpu_share": cpu / wall if wall else 0.0,
        "accepted": accepted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.overload_client")
    parser.add_argument("base_url")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--cookie", required=True)
    parser.add_argument("--csrf", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--impatient", action="store_true", help="retry a 503 at once")
    args = parser.parse_args()
    headers = {
        "Content-Type": "application/json",
        "Cookie": args.cookie,
        "X-CSRF-Token": args.csrf,
    }
    result = uvloop.run(
        run(args.base_url, args.clients, args.duration, headers, impatient=args.impatient)
    )
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
