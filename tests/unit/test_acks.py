"""Batched acks against a channel that behaves as the broker does with delivery tags.

The fake channel fails the test where RabbitMQ would close the channel (a tag settled twice)
or where a message would be lost (a multiple ack covering a delivery still being handled).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest

from consumers.acks import BatchedAcks


@dataclass(eq=False)  # hashed by identity, as a real channel is
class Channel:
    """Delivery tags as the broker tracks them, and the frames it received."""

    delivered: int = 0
    outstanding: set[int] = field(default_factory=set)
    handled: set[int] = field(default_factory=set)  # settled by the consumer's code
    frames: list[tuple[str, int, bool]] = field(default_factory=list)
    is_closed: bool = False

    def deliver(self) -> Message:
        self.delivered += 1
        self.outstanding.add(self.delivered)
        return Message(self.delivered, self)

    def receive_ack(self, tag: int, multiple: bool) -> None:
        assert not self.is_closed
        self.frames.append(("ack", tag, multiple))
        assert tag in self.outstanding, f"PRECONDITION_FAILED: unknown delivery tag {tag}"
        covered = {t for t in self.outstanding if t <= tag} if multiple else {tag}
        assert covered <= self.handled, f"acked {sorted(covered - self.handled)} unhandled"
        self.outstanding -= covered

    def receive_reject(self, tag: int, requeue: bool) -> None:
        self.frames.append(("reject", tag, requeue))
        assert tag in self.outstanding, f"PRECONDITION_FAILED: unknown delivery tag {tag}"
        self.outstanding.discard(tag)


@dataclass
class Message:
    delivery_tag: int
    channel: Channel

    async def ack(self, multiple: bool = False) -> None:
        self.channel.receive_ack(self.delivery_tag, multiple)

    async def reject(self, requeue: bool = False) -> None:
        self.channel.receive_reject(self.delivery_tag, requeue)


async def handled(acks: BatchedAcks, *messages: Message) -> None:
    """Ack these as handled in the same turn of the loop, as one group commit releases them."""
    for message in messages:
        message.channel.handled.add(message.delivery_tag)
    await asyncio.gather(*(acks.ack(message) for message in messages))


async def test_deliveries_handled_together_are_acked_with_one_frame() -> None:
    channel, acks = Channel(), BatchedAcks()
    messages = [channel.deliver() for _ in range(64)]
    await handled(acks, *messages)
    assert channel.frames == [("ack", 64, True)]
    assert channel.outstanding == set()


async def test_a_delivery_still_being_handled_is_never_covered() -> None:
    channel, acks = Channel(), BatchedAcks()
    first, second, slow, fourth, fifth = (channel.deliver() for _ in range(5))
    await handled(acks, first, second, fourth, fifth)
    # Up to the gap together, above it one by one and at once (they do not wait for it).
    assert channel.frames == [("ack", 2, True), ("ack", 4, False), ("ack", 5, False)]
    assert channel.outstanding == {3}
    await handled(acks, slow)
    assert channel.frames[-1] == ("ack", 3, True)
    assert channel.outstanding == set()
    sixth = channel.deliver()
    await handled(acks, sixth)
    assert channel.frames[-1] == ("ack", 6, True), "the floor moved past the settled ones"


async def test_a_rejected_delivery_closes_its_gap() -> None:
    channel, acks = Channel(), BatchedAcks()
    first, failed, third = (channel.deliver() for _ in range(3))
    await handled(acks, first)
    await acks.reject(failed, requeue=True)
    await handled(acks, third)
    assert channel.frames == [("ack", 1, True), ("reject", 2, True), ("ack", 3, True)]


async def test_a_delivery_is_never_settled_twice() -> None:
    channel, acks = Channel(), BatchedAcks()
    message = channel.deliver()
    await handled(acks, message)
    await acks.reject(message, requeue=True)  # e.g. something failed after the ack
    assert channel.frames == [("ack", 1, True)]


@pytest.mark.parametrize("seed", range(20))
async def test_any_order_of_handling_settles_each_delivery_once(seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - a reproducible order, not a secret
    channel, acks = Channel(), BatchedAcks()
    order = [channel.deliver() for _ in range(300)]
    rng.shuffle(order)
    rejected = 0
    while order:
        size = rng.randint(1, 40)
        batch, order = order[:size], order[size:]
        failed = [message for message in batch if rng.random() < 0.05]
        for message in failed:
            await acks.reject(message, requeue=True)
        rejected += len(failed)
        await handled(acks, *(message for message in batch if message not in failed))
    assert channel.outstanding == set()
    ack_frames = [frame for frame in channel.frames if frame[0] == "ack"]
    assert len(ack_frames) < 300 - rejected, "some acks were shared"


async def test_acks_for_a_closed_channel_fail_and_its_successor_starts_afresh() -> None:
    old, acks = Channel(), BatchedAcks()
    message = old.deliver()
    old.handled.add(1)
    old.is_closed = True
    with pytest.raises(ConnectionError):
        await acks.ack(message)
    reopened = Channel()
    await handled(acks, reopened.deliver())
    assert reopened.frames == [("ack", 1, True)]
