"""`python -m gateway`, and `syncgate gateway`: load the settings, build the app, serve it."""

from __future__ import annotations

import asyncio
import dataclasses
import signal

import uvloop
from aiohttp import web

from common.logs import configure_logging
from common.process import StartupError, load_settings, run_main, tune_collector
from gateway.app_settings import AppSettingsError
from gateway.bootstrap import build_app
from gateway.connections import ConnectionLimits, GuardedSite, fit_descriptor_limit
from gateway.keys import IN_FLIGHT, METRICS
from gateway.settings import GatewaySettings
from gateway.users import UsersFileError


async def serve(app: web.Application, settings: GatewaySettings) -> None:
    """What web.run_app does, with the gateway's own site (gateway/connections.py): serve
    until SIGTERM or SIGINT, then shut down gracefully (in-flight requests finish)."""
    # run_app's keep-alive timeout; aiohttp's own default elsewhere is about an hour.
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=75.0)
    await runner.setup()
    try:
        limits = ConnectionLimits.from_settings(settings)
        limits = dataclasses.replace(
            limits, max_connections=fit_descriptor_limit(limits.max_connections)
        )
        site = GuardedSite(
            runner,
            settings.host,
            settings.port,
            limits=limits,
            metrics=app[METRICS],
            in_flight=app[IN_FLIGHT],
            reuse_port=settings.reuse_port,
        )
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    """Serve the gateway until SIGTERM or SIGINT; StartupError if it cannot start."""
    settings = load_settings(GatewaySettings)
    configure_logging(settings.log_format, settings.log_level)
    settings.configure_tracing("syncgate-gateway")
    try:
        app = build_app(settings)
    except (AppSettingsError, UsersFileError) as exc:
        raise StartupError(str(exc)) from None
    tune_collector()
    # uvloop: in an interleaved A/B against asyncio's own loop (`python -m bench.ab`, 10
    # pairs at c=64, 2026-12-03; README "Benchmarks") it used less gateway CPU per request
    # in 7 of the 10 pairs (medians 714 against 822 µs).
    uvloop.run(serve(app, settings))


if __name__ == "__main__":
    run_main(main)
