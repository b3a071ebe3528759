"""Breaking and restoring the local RabbitMQ through rabbitmqctl, without blocking the loop.

Every helper that breaks something is a context manager that restores it in `finally`, so a
failing test still leaves the broker running with its original limits for everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

RABBITMQCTL = "rabbitmqctl"
# stop_app and start_app take seconds; a minute means the node is stuck.
_COMMAND_LIMIT = 60.0


async def rabbitmqctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        RABBITMQCTL,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(_COMMAND_LIMIT):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {stderr.decode().strip()}")
    return stdout.decode().strip()


async def stop_app() -> None:
    await rabbitmqctl("stop_app")


async def start_app() -> None:
    await rabbitmqctl("start_app")
    await rabbitmqctl("await_startup")


@contextlib.asynccontextmanager
async def broker_stopped() -> AsyncIterator[None]:
    """The broker application is stopped inside the block (the node stays up)."""
    await stop_app()
    try:
        yield
    finally:
        await start_app()


async def memory_high_watermark() -> str:
    """As `set_vm_memory_high_watermark` takes it: `0.4`, or `absolute <bytes>`."""
    value = await rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")
    absolute = re.fullmatch(r"\{absolute,\s*(\d+)\}", value)
    if absolute is not None:
        return f"absolute {absolute.group(1)}"
    float(value)  # anything else is a format this helper does not know how to restore
    return value


async def set_memory_high_watermark(value: str) -> None:
    await rabbitmqctl("set_vm_memory_high_watermark", *value.split())


@contextlib.asynccontextmanager
async def memory_alarm() -> AsyncIterator[None]:
    """A memory alarm inside the block: the broker blocks every publishing connection."""
    original = await memory_high_watermark()
    await set_memory_high_watermark("0.0000001")
    try:
        yield
    finally:
        await set_memory_high_watermark(original)
