"""Signing in as a client would, and offering load with wrk (or the Python fallback)."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.workspace import PYTHON, bench_env

WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")


@dataclass(frozen=True, slots=True)
class Credentials:
    cookie: str  # the Cookie header value, "name=value"
    csrf_token: str  # empty when the gateway has no CSRF protection


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    seconds: float
    failed: int
    p50_ms: float
    p99_ms: float
    loadgen_cpu_share: float | None  # the Python generator's own CPU share; None for wrk

    @property
    def accepted(self) -> int:
        return self.requests - self.failed

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0


async def sign_in(base_url: str, email: str, password: str) -> Credentials:
    """Log in like a browser: the session cookie, and a CSRF token where the gateway has one.

    The token comes from the login answer's `csrfToken`, else from GET /api/auth/csrf; a 404
    there means this gateway has no CSRF protection yet.
    """
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.post(
            f"{base_url}/api/auth/login", json={"email": email, "password": password}
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"login failed: {response.status} {await response.text()}")
            token = str((await response.json()).get("csrfToken") or "")
        if not token:
            async with http.get(f"{base_url}/api/auth/csrf") as response:
                if response.status == 200:
                    token = str((await response.json()).get("csrfToken") or "")
        cookie = "; ".join(f"{morsel.key}={morsel.value}" for morsel in jar)
    if not cookie:
        raise RuntimeError("login answered 200 but set no session cookie")
    return Credentials(cookie=cookie, csrf_token=token)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


async def offer_load(
    url: str,
    *,
    concurrency: int,
    duration: float,
    credentials: Credentials,
    use_wrk: bool,
    key_prefix: str = "",
) -> LoadResult:
    """Load for `duration`; with `key_prefix`, each request has an Idempotency-Key of its own."""
    if use_wrk:
        threads = min(2, concurrency)
        seconds = max(1, math.ceil(duration))  # wrk takes whole seconds only
        argv = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "-s", str(WRK_SCRIPT)]
        argv += ["--timeout", "10s", url]
        env = bench_env(
            BENCH_COOKIE=credentials.cookie,
            BENCH_CSRF=credentials.csrf_token,
            BENCH_KEY_PREFIX=key_prefix,
        )
    else:
        argv = [PYTHON, "-m", "bench.pyload", url, f"--concurrency={concurrency}"]
        argv += [f"--duration={duration}", f"--cookie={credentials.cookie}"]
        argv += [f"--csrf={credentials.csrf_token}", f"--key-prefix={key_prefix}"]
        env = bench_env()
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line.removeprefix("BENCH_JSON "))
            return LoadResult(
                requests=int(data["requests"]),
                seconds=float(data["seconds"]),
                failed=int(data["failed"]),
                p50_ms=float(data["p50_ms"]),
                p99_ms=float(data["p99_ms"]),
                loadgen_cpu_share=data.get("loadgen_cpu_share"),
            )
    raise RuntimeError(
        f"{argv[0]} printed no result (exit {process.returncode}): {(out + err).decode()[-2000:]}"
    )
