"""The count of requests in flight (keys.IN_FLIGHT), and one request's time limits, kept on
the request (keys.BUDGET); gateway/shedding.py enforces both, and gateway/connections.py
reads the count to refuse a request before aiohttp even parses it.

The handling deadline (the publish deadline plus a margin) bounds the gateway's own time on a
request: a wait for a store, the event loop, the broker. The time spent waiting for the
client's body is the client's, and has its own bound, SYNCGATE_BODY_TIMEOUT from the end of
the headers; the handling deadline stands still meanwhile, so a client on a slow link is not
cut off by a deadline meant for the gateway, and one that is too slow gets 408, not 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from gateway.errors import BodyTimeout

# Cheap, and what orchestrators and scrapers must reach under load: never counted or shed.
NOT_COUNTED = frozenset({"/healthz", "/readyz", "/metrics"})


class InFlight:
    """Requests being handled by this process, and its bound on them."""

    __slots__ = ("count", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def try_enter(self) -> bool:
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1


class RequestBudget:
    __slots__ = ("_body_due", "_handling", "body_timed_out")

    def __init__(self, handling: asyncio.Timeout, body_due: float) -> None:
        self._handling = handling
        self._body_due = body_due
        self.body_timed_out = False

    @contextlib.asynccontextmanager
    async def reading_body(self) -> AsyncIterator[None]:
        """Around the wait for the body: BodyTimeout once its deadline passes."""
        loop = asyncio.get_running_loop()
        due = self._handling.when()
        left = None if due is None else due - loop.time()
        self._handling.reschedule(None)
        deadline = asyncio.timeout_at(self._body_due)
        try:
            async with deadline:
                yield
        except TimeoutError:
            if not deadline.expired():
                raise
            self.body_timed_out = True
            raise BodyTimeout("the body did not arrive in time; nothing was published") from None
        finally:
            if left is not None and not self._handling.expired():
                self._handling.reschedule(loop.time() + left)
