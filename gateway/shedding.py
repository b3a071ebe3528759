"""Shedding load early and cheaply, as Envoy's and HAProxy's concurrency limits do.

Two bounds, each answered with 503 and Retry-After, so a client can tell "come back later"
from "slow":
- at most `max_in_flight` requests are handled at once; one more is refused at once, before
  any session, body or store work (the probes and /metrics are not counted: they are cheap,
  and an orchestrator must reach them under load);
- a request's time in the gateway, from the start of handling, is at most the handling
  deadline (the publish deadline plus a margin); its wait for the client's body stands aside,
  under the body's own deadline (gateway/deadlines.py). Past it, the handling is cancelled.

Without them, a gateway at 4,000 concurrent clients accepted everything and answered in
seconds, past every deadline (issue 20 §4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.connections import guarded_connection
from gateway.deadlines import NOT_COUNTED, InFlight, RequestBudget
from gateway.errors import DeadlineExceeded, Overloaded
from gateway.keys import BUDGET
from gateway.metrics import GatewayMetrics
from gateway.middlewares import error_response
from gateway.settings import GatewaySettings

log = logging.getLogger("syncgate.gateway.shedding")


class LoadShedder:
    def __init__(
        self, settings: GatewaySettings, metrics: GatewayMetrics, in_flight: InFlight
    ) -> None:
        self.in_flight = in_flight
        self.handling_deadline = settings.handling_deadline
        self.body_timeout = settings.body_timeout
        self.retry_after = settings.retry_after
        self._metrics = metrics
        metrics.requests_in_flight.set_function(lambda: in_flight.count)

    def middleware(self) -> Middleware:
        metrics, retry_after, in_flight = self._metrics, self.retry_after, self.in_flight
        shed_in_flight = metrics.shed_by_reason["in_flight"]
        shed_deadline = metrics.shed_by_reason["deadline"]
        body_timeouts = metrics.timeouts_by_phase["body"]

        def refuse(error: Overloaded | DeadlineExceeded) -> web.Response:
            return error_response(error.status, error.code, error.message, headers=error.headers)

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path in NOT_COUNTED:
                return await handler(request)
            # A connection of the gateway's own site may have taken the request's place
            # already, when its headers came in (gateway/connections.py).
            connection = guarded_connection(request)
            admitted = connection.admit() if connection is not None else in_flight.try_enter()
            if not admitted:
                shed_in_flight.inc()
                return refuse(
                    Overloaded(
                        "the gateway is at its limit of requests in flight; retry later",
                        retry_after=retry_after,
                    )
                )
            loop = asyncio.get_running_loop()
            started = loop.time()
            deadline = asyncio.timeout_at(started + self.handling_deadline)
            budget = RequestBudget(deadline, started + self.body_timeout)
            request[BUDGET] = budget
            try:
                async with deadline:
                    response = await handler(request)
            except TimeoutError:
                if not deadline.expired():
                    raise
                shed_deadline.inc()
                log.warning(
                    "%s %s: stopped at the handling deadline (%s s)",
                    request.method,
                    request.path,
                    self.handling_deadline,
                )
                return refuse(
                    DeadlineExceeded(
                        "the request took longer than the gateway's deadline; retry later",
                        retry_after=retry_after,
                    )
                )
            finally:
                if connection is not None:
                    connection.release()
                else:
                    in_flight.leave()
            if budget.body_timed_out:
                body_timeouts.inc()
                await _answer_and_close(request, response)
            return response

        return middleware


async def _answer_and_close(request: web.Request, response: web.StreamResponse) -> None:
    """Send the answer now, and close the connection after it: the rest of a late body may
    still be on its way, and aiohttp would otherwise read (linger on) it for up to 10 s.
    aiohttp then finds the answer sent, and the connection closed."""
    response.force_close()
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        await response.write_eof()
    request.protocol.force_close()
