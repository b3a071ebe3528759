"""Process start-up shared by the gateway and the consumer: settings, the collector, and the
errors that stop a process before it serves.

Each process's `__main__` loads its settings here, builds what it runs, tunes the collector
and runs. `python -m gateway` and `syncgate gateway` run the same `main`; a StartupError ends
either with its message and exit code, never with a traceback.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


class StartupError(Exception):
    """The process cannot start as configured; the message says why, for an operator."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


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
    """Settings from the environment; StartupError with one line per bad variable, exit code 2
    (a usage error, as for a bad command-line option)."""
    try:
        return settings_type()
    except ValidationError as exc:
        lines = [f"  {_variable(err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise StartupError("invalid settings:\n" + "\n".join(lines), exit_code=2) from None


def _variable(location: tuple[int | str, ...]) -> str:
    """The environment variable an error is about: SYNCGATE_<FIELD>, or a standard variable
    (OTEL_TRACES_EXPORTER, say) that a field reads under its own name."""
    name = "_".join(str(part) for part in location)
    return name if name.isupper() else f"SYNCGATE_{name.upper()}"


def run_main(main: Callable[[], None]) -> None:
    """Run a process's `main` as `python -m` does: a StartupError is its message and exit code."""
    try:
        main()
    except StartupError as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        sys.exit(exc.exit_code)
