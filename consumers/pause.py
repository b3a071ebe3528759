"""While the run store is unavailable, the consumer stops consuming rather than spinning.

A delivery whose claim or commit fails with RunStoreUnavailable did not fail in its
handler: the runner hands it back to the queue (reject, requeue) with no attempt counted
(`Settlement.HAND_BACK`). Were the consumer to go on consuming, the broker would deliver it
again at once, and again, until the queue's delivery limit dead-lettered a valid event. So
the first such failure pauses the subscription:
- the subscription is cancelled (the connection and its channels stay open);
- every failed delivery waits for the cancel-ok before it is handed back, so the broker
  keeps it for another consumer, or for this one later, instead of sending it straight back;
  each in-flight message costs one delivery of the limit per outage;
- the store is probed, 0.2 s after the failure and then with the interval doubling up to 5 s
  (an outage right after a resume goes on from the interval it had reached);
- once the store answers, the consumer subscribes again.

One WARNING when it pauses, one INFO when it resumes; `syncgate_consumer_paused` is 1 in
between. A consumer that starts while its store does not answer waits the same way before it
first subscribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from common.stores.runs import RunStore, RunStoreUnavailable
from consumers.metrics import ConsumerMetrics

log = logging.getLogger(__name__)

Callback = Callable[[AbstractIncomingMessage], Awaitable[Any]]

# A resume that lasted this long starts the next outage's probes from the first interval.
_STEADY = 30.0


class StorePause:
    """The runner's subscription, cancelled while the run store is unavailable."""

    def __init__(
        self,
        store: RunStore,
        metrics: ConsumerMetrics,
        *,
        first_probe: float = 0.2,
        longest_probe: float = 5.0,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._first_probe = first_probe
        self._longest_probe = longest_probe
        self._interval = first_probe
        self._resumed_at = float("-inf")
        self._queue: AbstractQueue | None = None
        self._callback: Callback | None = None
        self._tag: str | None = None
        self._pausing: asyncio.Task[None] | None = None
        self._unsubscribed = asyncio.Event()
        self._unsubscribed.set()
        self._stopped = False
        self.pauses = 0
        """How many times consuming paused (the first wait for the store included)."""

    @property
    def paused(self) -> bool:
        return self._pausing is not None and not self._pausing.done()

    async def subscribe(self, queue: AbstractQueue, callback: Callback) -> None:
        """Consume from `queue` now if the store answers, or once it does."""
        self._queue, self._callback = queue, callback
        try:
            await self._store.probe()
        except RunStoreUnavailable as exc:
            self._begin(exc, "waiting for it before consuming")
            return
        await self._consume()

    async def store_failed(self, exc: RunStoreUnavailable) -> None:
        """Pause, unless paused already; return once the broker sends no more deliveries."""
        if not self.paused:
            self._begin(exc, "consuming paused; the messages in flight go back to the queue")
        await self._unsubscribed.wait()

    async def stop(self) -> None:
        """Stop probing, and cancel the subscription if there is one."""
        self._stopped = True
        if self._pausing is not None:
            self._pausing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pausing
        await self._cancel()

    def _begin(self, exc: RunStoreUnavailable, what: str) -> None:
        log.warning("the run store is unavailable (%s): %s", exc, what)
        self.pauses += 1
        self._metrics.paused.set(1)
        if time.monotonic() - self._resumed_at >= _STEADY:
            self._interval = self._first_probe
        self._pausing = asyncio.create_task(self._pause(), name="syncgate-store-pause")

    async def _pause(self) -> None:
        started = time.monotonic()
        await self._cancel()
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._store.probe()
                if self._stopped:
                    return
                await self._consume()
                break
            except RunStoreUnavailable:
                pass
            except Exception as exc:  # the channel is reopening: the next probe tries again
                log.warning("could not subscribe again (%r); trying again", exc)
            self._interval = min(self._interval * 2, self._longest_probe)
        self._resumed_at = time.monotonic()
        self._metrics.paused.set(0)
        log.info(
            "the run store answers again: consuming resumed after %.1fs",
            self._resumed_at - started,
        )

    async def _consume(self) -> None:
        if self._queue is None or self._callback is None or self._tag is not None:
            return
        self._tag = await self._queue.consume(self._callback)
        self._unsubscribed.clear()

    async def _cancel(self) -> None:
        tag, self._tag = self._tag, None
        try:
            if tag is not None and self._queue is not None:
                await self._queue.cancel(tag)
        except Exception as exc:
            # The channel is gone: the broker requeued its deliveries by itself, and the
            # robust channel does not restore a cancelled consumer.
            log.warning("could not cancel the subscription (%r); it is gone with its channel", exc)
        finally:
            self._unsubscribed.set()
