"""The work queue takes exactly the events its handlers take: never the consumer's own
completed events, which would only be dead-lettered as having no handler."""

from __future__ import annotations

import json

import pytest

from common.definitions import render_definitions
from common.process import StartupError
from common.topology import ConsumerTopology, topic_matches
from consumers.bootstrap import HANDLERS, check_routing
from consumers.settings import ConsumerSettings
from schemas.registry import REGISTRY


@pytest.mark.parametrize(
    ("pattern", "key", "routed"),
    [
        ("confluence.app.sync", "confluence.app.sync", True),
        ("confluence.app.sync", "confluence.app.sync.completed", False),
        ("confluence.#", "confluence.app.sync.completed", True),
        ("confluence.#", "confluence", True),
        ("confluence.*.sync", "confluence.app.sync", True),
        ("confluence.*.sync", "confluence.app.sync.completed", False),
        ("#", "a.b", True),
        ("#.sync", "confluence.app.sync", True),
        ("*", "a.b", False),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.y.b", True),
    ],
)
def test_topic_patterns_match_as_the_broker_matches(pattern: str, key: str, routed: bool) -> None:
    assert topic_matches(pattern, key) is routed


def test_the_default_binding_takes_the_sync_and_not_the_completed_event() -> None:
    binding = ConsumerSettings().binding
    assert topic_matches(binding, REGISTRY.resolve("confluence/app.sync", "1").routing_key)
    completed = REGISTRY.resolve("confluence/app.sync.completed", "1").routing_key
    assert not topic_matches(binding, completed)
    check_routing(binding, HANDLERS)


def test_the_former_wildcard_binding_is_refused_at_start_up() -> None:
    with pytest.raises(StartupError, match=r"confluence\.app\.sync\.completed"):
        check_routing("confluence.#", HANDLERS)
    with pytest.raises(StartupError, match=r"does not take confluence\.app\.sync,"):
        check_routing("jira.#", HANDLERS)


def test_definitions_bind_the_work_queue_to_the_sync_and_keep_completed_events_bounded() -> None:
    topology = ConsumerTopology()
    definitions = json.loads(render_definitions(topology))
    bindings = {
        (b["destination"], b["routing_key"])
        for b in definitions["bindings"]
        if b["source"] == topology.events.exchange
    }
    assert bindings == {
        (topology.queue, "confluence.app.sync"),
        (topology.completed_queue, "confluence.app.sync.completed"),
    }
    (completed,) = [q for q in definitions["queues"] if q["name"] == topology.completed_queue]
    assert completed["arguments"]["x-max-length"] == 100_000
    assert completed["arguments"]["x-overflow"] == "drop-head"
