"""bench --profile's attribution: each sample to the layer of its innermost named frame."""

from __future__ import annotations

from collections import Counter

from bench.profile import Breakdown, cpuprofile_layers, layer_of, pyspy_layers, table


def test_a_sample_goes_to_its_innermost_named_layer() -> None:
    session = [
        "_run_once (asyncio/base_events.py:1922)",
        "_handle_request (aiohttp/web_protocol.py:480)",
        "load_session (gateway/sessions.py:95)",
        "decrypt_at_time (cryptography/fernet.py:90)",
    ]
    assert layer_of(session) == "session"
    # pydantic called from the body code is validation, not the body.
    assert layer_of(["read_json (gateway/body.py:40)", "validate (pydantic/main.py:1)"]) == (
        "validation"
    )
    assert layer_of(["emit (logging/__init__.py:1)", "dumps (orjson)"]) == "serialisation"
    assert layer_of(["something (elsewhere.py:1)"]) == "other"


def test_py_spy_raw_lines_are_counted_per_layer() -> None:
    raw = "\n".join(
        [
            "main (m.py:1);publish (gateway/publisher.py:130);write (aiormq/connection.py:1) 30",
            "main (m.py:1);load_session (gateway/sessions.py:95) 10",
            "main (m.py:1);format (common/logs.py:50) 5",
            "garbage without a count",
        ]
    )
    assert pyspy_layers(raw) == Counter({"publish and confirm": 30, "session": 10, "log line": 5})


def test_a_v8_profile_is_split_by_the_file_of_each_function_idle_left_out() -> None:
    def node(id_: int, name: str, url: str, children: list[int]) -> dict[str, object]:
        return {"id": id_, "callFrame": {"functionName": name, "url": url}, "children": children}

    profile = {
        "nodes": [
            node(1, "(root)", "", [2, 4, 5]),
            node(2, "handler", "file:///bench/node_peer/server.js", [3]),
            node(3, "validate", "file:///node_modules/ajv/dist/core.js", []),
            node(4, "(idle)", "", []),
            node(5, "(garbage collector)", "", []),
        ],
        "samples": [3, 3, 3, 4, 4, 5, 2],
    }
    assert cpuprofile_layers(profile) == Counter(
        {"validation": 3, "garbage collection": 1, "other": 1}
    )


def test_the_table_turns_shares_into_microseconds_of_the_measured_cpu() -> None:
    breakdown = Breakdown("gw", Counter({"session": 25, "publish and confirm": 75}), 400.0)
    lines = table([breakdown])
    assert any(line.startswith("session") and "100 µs" in line for line in lines), lines
    assert any(line.startswith("publish and confirm") and "300 µs" in line for line in lines)
