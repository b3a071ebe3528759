"""Acking settled deliveries several at a time, without ever acking one that is not settled.

A group commit settles many deliveries in the same turn of the event loop. One
`basic.ack(multiple=True)` then replaces many single acks, which costs this process and the
broker (a quorum queue logs each settle) less per message.

`multiple=True` acks every outstanding delivery up to a tag, so it is only used up to the
"floor": the highest tag below which every delivery of the channel is settled. Delivery tags
count up from 1 on each channel, with no gaps, so the floor is known from settled tags alone;
no assumption is made about the order in which deliveries are handled. A delivery settled
above a gap (another one still being handled) is acked on its own at once: it never waits
for the slow one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

# Tags settled above a gap that are remembered; past this the channel acks one at a time
# (a delivery that is never settled would otherwise make the set grow without end).
_MAX_SETTLED_ABOVE_GAP = 65_536


class Settleable(Protocol):
    """What is acked or rejected: aio-pika's IncomingMessage has all of it."""

    @property
    def delivery_tag(self) -> int | None: ...
    @property
    def channel(self) -> object: ...

    async def ack(self, multiple: bool = False) -> None: ...
    async def reject(self, requeue: bool = False) -> None: ...


@dataclass
class _ChannelAcks:
    floor: int = 0
    """Every delivery with a tag up to this one is settled."""
    settled_above: set[int] = field(default_factory=set)
    """Settled tags above a gap in the settled ones."""
    waiting: dict[int, tuple[Settleable, asyncio.Future[None]]] = field(default_factory=dict)
    """Deliveries to ack at the next flush, by tag."""
    one_by_one: bool = False
    """Set when `settled_above` outgrew its bound: from then on, single acks only."""

    def settle(self, tag: int) -> None:
        if tag == self.floor + 1:
            self.floor = tag
            while self.floor + 1 in self.settled_above:
                self.floor += 1
                self.settled_above.discard(self.floor)
        elif tag > self.floor:
            self.settled_above.add(tag)
            if len(self.settled_above) > _MAX_SETTLED_ABOVE_GAP:
                log.warning("a delivery stays unsettled; acking one message at a time")
                self.one_by_one = True
                self.settled_above.clear()


class BatchedAcks:
    """Acks what is settled in one turn of the loop with as few ack frames as it safely can."""

    def __init__(self) -> None:
        self._channels: dict[object, _ChannelAcks] = {}
        # One flusher at a time: a multiple ack must never reach the socket before a single
        # ack of a tag it covers, or the broker closes the channel (unknown delivery tag).
        self._flusher: asyncio.Task[None] | None = None

    async def ack(self, message: Settleable) -> None:
        """Return once the ack is on its way to the broker; raise if it could not be sent."""
        tag = message.delivery_tag
        if tag is None:  # an unacknowledged consumer: nothing to send
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._state(message).waiting[tag] = (message, done)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="syncgate-acks")
        await done

    async def reject(self, message: Settleable, *, requeue: bool) -> None:
        """Reject it, unless it is settled already (a second settle closes the channel)."""
        tag, state = message.delivery_tag, self._state(message)
        if tag is not None and (tag <= state.floor or tag in state.settled_above):
            return
        await message.reject(requeue=requeue)
        if tag is not None:
            state.settle(tag)

    def _state(self, message: Settleable) -> _ChannelAcks:
        state = self._channels.get(message.channel)
        if state is None:
            # A reopened channel numbers its deliveries from 1 again: it is a new channel.
            state = self._channels[message.channel] = _ChannelAcks()
        return state

    async def _flush(self) -> None:
        while any(state.waiting for state in self._channels.values()):
            # One turn of the loop lets everything the same group commit released join in.
            await asyncio.sleep(0)
            for channel, state in list(self._channels.items()):
                waiting, state.waiting = state.waiting, {}
                if getattr(channel, "is_closed", False):
                    # Its deliveries go back to the queue; they can no longer be acked.
                    del self._channels[channel]
                    _fail(list(waiting.values()), ConnectionError("the channel closed"))
                elif waiting:
                    await self._send(state, waiting)

    async def _send(
        self, state: _ChannelAcks, waiting: dict[int, tuple[Settleable, asyncio.Future[None]]]
    ) -> None:
        tags = sorted(waiting)
        if not state.one_by_one:
            for tag in tags:
                state.settle(tag)
        together = [waiting[tag] for tag in tags if tag <= state.floor]
        alone = [waiting[tag] for tag in tags if tag > state.floor]
        if together:
            # Acks the last one and, with it, every outstanding delivery below it: all settled.
            await _ack(together[-1][0], together, multiple=True)
        for one in alone:
            await _ack(one[0], [one], multiple=False)


async def _ack(
    message: Settleable,
    covered: list[tuple[Settleable, asyncio.Future[None]]],
    *,
    multiple: bool,
) -> None:
    try:
        await message.ack(multiple=multiple)
    except Exception as exc:
        _fail(covered, exc)
        return
    for _, done in covered:
        if not done.done():
            done.set_result(None)


def _fail(covered: list[tuple[Settleable, asyncio.Future[None]]], exc: Exception) -> None:
    for _, done in covered:
        if not done.done():
            done.set_exception(exc)
