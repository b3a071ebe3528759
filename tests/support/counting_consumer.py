"""`python -m tests.support.counting_consumer`: the real consumer process (settings from
SYNCGATE_*), whose sync handler also writes one line when it starts and one when it ends to
the file SYNCGATE_TEST_CALLS, and records `received_at` as its own pid, so a test can count
handler runs per event id and tell which consumer's run was recorded."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import uvloop

from common.logs import configure_logging
from common.process import load_settings, run_main
from consumers.handlers import HandlerDeps
from consumers.service import serve
from consumers.settings import ConsumerSettings
from schemas.events import ConfluenceAppSync

CALLS = "SYNCGATE_TEST_CALLS"
HANDLER_SECONDS = "SYNCGATE_TEST_HANDLER_SECONDS"


def calls_of(path: Path) -> list[tuple[str, str, int, float]]:
    """(start|end, event id, pid, time) per line the handlers wrote."""
    if not path.exists():
        return []
    calls = []
    for line in path.read_text().splitlines():
        kind, event_id, pid, at = line.split()
        calls.append((kind, event_id, int(pid), float(at)))
    return calls


def main() -> None:
    settings = load_settings(ConsumerSettings)
    configure_logging(settings.log_format, settings.log_level)
    calls = os.open(os.environ[CALLS], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    seconds = float(os.environ.get(HANDLER_SECONDS, "0.005"))
    pid = os.getpid()

    def line(kind: str, event: ConfluenceAppSync) -> None:
        # One write per line on an O_APPEND file: lines of two processes never interleave.
        os.write(calls, f"{kind} {event.id} {pid} {time.time():.6f}\n".encode())

    async def handle(event: ConfluenceAppSync, deps: HandlerDeps) -> None:
        line("start", event)
        await asyncio.sleep(seconds)
        deps.runs.record_sync(event, received_at=pid)
        line("end", event)

    uvloop.run(serve(settings, {"confluence/app.sync": handle}))


if __name__ == "__main__":
    run_main(main)
