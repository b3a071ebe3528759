"""CoalescingTransport: one write per loop turn, in order, and nothing held past the turn."""

from __future__ import annotations

import asyncio
from typing import Any

from common.amqp_writes import CoalescingTransport


class RecordingTransport(asyncio.WriteTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0


async def test_the_writes_of_one_turn_go_out_as_one_in_order_before_the_next_turn() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"method")
    transport.write(bytearray(b"-header"))
    transport.write(memoryview(b"-body"))
    assert real.writes == []
    assert transport.get_write_buffer_size() == len(b"method-header-body")
    await asyncio.sleep(0)
    assert real.writes == [b"method-header-body"]
    transport.write(b"ack")
    await asyncio.sleep(0)
    assert real.writes == [b"method-header-body", b"ack"]
    assert transport.get_write_buffer_size() == 0


async def test_close_sends_what_is_pending_first_and_abort_drops_it() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"close-ok")
    transport.close()
    assert real.writes == [b"close-ok"]
    assert real.closed
    await asyncio.sleep(0)
    assert real.writes == [b"close-ok"]

    other = RecordingTransport()
    transport = CoalescingTransport(other, asyncio.get_running_loop())
    transport.write(b"lost")
    transport.abort()
    await asyncio.sleep(0)
    assert other.writes == []
    assert other.aborted
