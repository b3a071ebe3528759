"""The Node.js consumer example (examples/node-consumer), run as a team on another stack would
run it: its own queue bound to our exchange, Ajv against the exported schema, big integers
kept exact. On the real broker, with the gateway's own message format."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from common.topology import EventsTopology, declare_events_exchange
from tests.conftest import AMQP_URL, BrokerNames
from tests.support.consumer import ROOT, publish_events, publish_raw
from tests.support.events import sync_event

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "examples" / "node-consumer"
BIG = 2**63 - 1  # beyond 2^53: JSON.parse would make it 9223372036854775808


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node.js example cannot run here")
    # Where node is, the packages must be too: scripts/test.sh installs them.
    assert (EXAMPLE / "node_modules" / "amqplib").is_dir(), "npm ci in examples/node-consumer"
    return node


async def _lines(process: asyncio.subprocess.Process, count: int) -> list[dict[str, Any]]:
    assert process.stdout is not None
    lines: list[dict[str, Any]] = []
    while len(lines) < count:
        raw = await asyncio.wait_for(process.stdout.readline(), 30)
        assert raw, "the example stopped before it had printed everything"
        lines.append(json.loads(raw))
    return lines


async def test_the_node_example_validates_our_events_and_keeps_big_integers_exact(
    names: BrokerNames, amqp: aio_pika.abc.AbstractRobustConnection, tmp_path: Path
) -> None:
    node = _node()
    channel = await amqp.channel()
    await declare_events_exchange(channel, EventsTopology(names.exchange, names.unrouted))
    events = [sync_event(data={"n": BIG, "i": i}) for i in range(3)]
    process = await asyncio.create_subprocess_exec(
        node,
        str(EXAMPLE / "consumer.js"),
        cwd=tmp_path,  # nothing shared with the example but the broker's URL
        env={
            "PATH": os.environ["PATH"],
            "SYNCGATE_AMQP_URL": AMQP_URL,
            "SYNCGATE_EXCHANGE": names.exchange,
            "QUEUE": f"{names.prefix}.node-example",
            "MAX_MESSAGES": str(len(events) + 1),
        },
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert await _lines(process, 1) == [{"consuming": f"{names.prefix}.node-example"}]
        await publish_events(amqp, names.exchange, events)
        # A body the schema refuses: a string where ts is an integer.
        bad = json.loads(events[0].model_dump_json())
        bad.update(id="0193a1d6-7a8b-7c9d-8e0f-123456789abc", ts="1796202060129")
        await publish_raw(amqp, names.exchange, json.dumps(bad).encode(), bad["id"])
        printed = await _lines(process, len(events) + 1)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    handled = [line for line in printed if "handled" in line]
    assert [line["handled"] for line in handled] == [str(e.id) for e in events]
    assert all(line["messageId"] == line["handled"] for line in handled)
    # Exact: 9223372036854775807, not the 9223372036854775808 that JSON.parse would print.
    assert [line["data"] for line in handled] == [{"n": BIG, "i": i} for i in range(3)]
    [rejected] = [line for line in printed if "rejected" in line]
    assert rejected["rejected"] == bad["id"]
    assert any("/ts" in error for error in rejected["errors"]), rejected
