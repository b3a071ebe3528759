"""Process start-up shared by the gateway and the consumer: settings, and the collector."""

from __future__ import annotations

import gc
from typing import TypeVar

import click
from pydantic import ValidationError
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


# The cyclic collector's first generation is collected after this many more container
# objects were made than freed (CPython's default is 700). A request or a delivery makes a few
# hundred that die with it, so at 700 the collector ran about every 20 requests, walking
# whatever was in flight, only to find almost nothing to free. Measured end to end at c=64
# (gc.callbacks, 6 interleaved rounds): at 700, collections took 18-28 us of gateway and
# 6-9 us of consumer CPU per event; at 10,000, under 1 us in each. Cyclic garbage still
# cannot pile up past this many objects.
YOUNG_COLLECTION_THRESHOLD = 10_000


def tune_collector() -> None:
    """Set the cyclic collector up for a long-running server, once start-up is done.

    Modules, models and schemas live as long as the process, yet every full collection walked
    all of them. Measured under load at c=64 (gc.callbacks): full passes took 33-48 ms in the
    gateway and 35-69 ms in the consumer, a stall for everything in flight, several times a
    minute; frozen, 3-6 ms.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)


def load_settings(settings_type: type[S]) -> S:
    """Settings from the environment, or a readable error and exit code 2."""
    try:
        return settings_type()
    except ValidationError as exc:
        lines = [
            f"  SYNCGATE_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        ]
        raise click.UsageError("invalid settings:\n" + "\n".join(lines)) from None
