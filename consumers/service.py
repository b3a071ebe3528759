"""Runs one consumer process until SIGTERM or SIGINT, then drains it and closes its store."""

from __future__ import annotations

import asyncio
import signal

from common.process import StartupError
from common.stores.runs import RunStoreRefused
from consumers.bootstrap import HANDLERS, build_deps, check_routing
from consumers.handlers import Handler
from consumers.metrics import ConsumerMetrics, serve_metrics
from consumers.runner import Runner
from consumers.settings import ConsumerSettings


async def serve(settings: ConsumerSettings, handlers: dict[str, Handler] = HANDLERS) -> None:
    check_routing(settings.binding, handlers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    deps = build_deps(settings)
    metrics = ConsumerMetrics()
    try:
        try:
            await deps.runs.start()
        except RunStoreRefused as exc:
            raise StartupError(str(exc)) from None
        async with serve_metrics(metrics, settings):
            await Runner(settings, handlers, deps, metrics=metrics).run(stop)
    finally:
        await deps.runs.close()
