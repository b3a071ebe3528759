"""The models and the exported JSON Schema files are one contract: on every event, valid or not,
the consumer's model and a JSON Schema validator give the same answer.

The validator is `jsonschema`'s Draft 2020-12 with its format checker (each format the
schemas use must have a checker installed, or this fails rather than skip it), and with
ECMA-262 patterns, as the schema's dialect says and Ajv reads them: Python's `re` alone would
let `$` match before a final newline. Events are generated valid, then some are broken in one
or two places (odd spellings, wrong types, extra and missing keys, boundary numbers).
"""

from __future__ import annotations

import copy
import functools
import json
import uuid
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import regress
from hypothesis import event, given, settings
from hypothesis import strategies as st
from jsonschema.protocols import Validator
from pydantic import BaseModel, ValidationError

from schemas.events import (
    BASE_URL_PATTERN,
    EVENT_ID_PATTERN,
    INT64_MAX,
    INT64_MIN,
    new_event_id,
)
from schemas.export import render_schemas
from schemas.registry import REGISTRY, EventType

Json = Any


def _ecma_pattern(
    validator: Validator, pattern: str, instance: object, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if isinstance(instance, str) and regress.Regex(pattern).find(instance) is None:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


EcmaValidator: type[Validator] = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator, validators={"pattern": _ecma_pattern}
)


def schema_of(event_type: EventType) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(render_schemas()[event_type.schema_file_name])
    return schema


@functools.cache
def validator_for(event_type: EventType) -> Validator:
    schema = schema_of(event_type)
    EcmaValidator.check_schema(schema)
    validator: Validator = EcmaValidator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return validator


def formats_in(node: Json) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("format"), str):
            yield node["format"]
        for child in node.values():
            yield from formats_in(child)
    elif isinstance(node, list):
        for child in node:
            yield from formats_in(child)


def test_every_format_the_schemas_use_is_checked() -> None:
    # jsonschema skips a format whose checker's package is missing: that would be a silent
    # hole in the agreement below.
    checkers = jsonschema.Draft202012Validator.FORMAT_CHECKER.checkers
    used = {name for event_type in REGISTRY for name in formats_in(schema_of(event_type))}
    assert used, "the schemas use no format: this test has nothing to guard"
    assert used <= set(checkers), f"no checker installed for {sorted(used - set(checkers))}"
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    assert not checker.conforms("not a uri", "uri")
    assert not checker.conforms("{01234567-89ab-7def-8123-456789abcdef}", "uuid")


def test_patterns_are_read_as_ecma_262() -> None:
    validator = EcmaValidator({"type": "string", "pattern": "^[a-z]+$"})
    assert validator.is_valid("abc")
    assert not validator.is_valid("abc\n")  # Python's re.search would say it matches


# Valid parts. Each event's strategy builds what the gateway could send.


def _uuid7(bits: int) -> str:
    value = (bits & ~(0xF << 76) & ~(0x3 << 62)) | (0x7 << 76) | (0x2 << 62)
    return str(uuid.UUID(int=value))


def _matching(pattern: str, min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.from_regex(pattern, fullmatch=True).filter(lambda s: min_size <= len(s) <= max_size)


_users = st.fixed_dictionaries(
    {
        "id": _matching(r"^[A-Za-z0-9._-]+$", 1, 64),
        "email": _matching(r"^[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f]+$", 3, 254),
        "name": st.text(min_size=1, max_size=100),
    }
)
_app_settings = st.fixed_dictionaries(
    {
        "baseUrl": _matching(BASE_URL_PATTERN, 1, 2048),
        "spaceKeys": st.lists(_matching(r"^[A-Za-z0-9_~-]+$", 1, 255), min_size=1, max_size=5),
    },
    optional={
        "syncIntervalMinutes": st.integers(1, 10_080),
        "includeAttachments": st.booleans(),
    },
)
_int64_edges = st.sampled_from(
    [INT64_MIN, INT64_MIN + 1, -1, 0, 1, 2**53, INT64_MAX - 1, INT64_MAX]
)
_data: st.SearchStrategy[Json] = st.recursive(
    st.none()
    | st.booleans()
    | st.text(max_size=20)
    | st.integers(INT64_MIN, INT64_MAX)
    | _int64_edges
    | st.floats(-9.2e18, 9.2e18, allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_sync_v1 = st.fixed_dictionaries(
    {
        "id": st.integers(0, 2**128 - 1).map(_uuid7),
        "name": st.just("confluence/app.sync"),
        "v": st.just("1"),
        "ts": st.integers(0, 2**45),
        "user": _users,
        "appSettings": _app_settings,
    },
    optional={"data": _data},
)

_millis = st.integers(0, 2**53 - 1)
_completed_v1 = st.fixed_dictionaries(
    {
        "id": st.integers(0, 2**128 - 1).map(_uuid7),
        "name": st.just("confluence/app.sync.completed"),
        "v": st.just("1"),
        "ts": _millis,
        "user": _users,
        "data": st.fixed_dictionaries(
            {"syncId": st.uuids().map(str), "receivedAt": _millis},
        ),
    }
)

VALID_EVENTS: dict[tuple[str, str], st.SearchStrategy[dict[str, Json]]] = {
    ("confluence/app.sync", "1"): _sync_v1,
    ("confluence/app.sync.completed", "1"): _completed_v1,
}


def test_every_registered_event_has_a_strategy() -> None:
    missing = {(t.name, t.v) for t in REGISTRY} - set(VALID_EVENTS)
    assert not missing, f"add a strategy for {sorted(missing)} to VALID_EVENTS"


# Breaking an event: a value replaced by an odd spelling or another type, a key removed or
# added. Any path in the document can be hit, so each event type gets it without a list.

_BOUNDARY_NUMBERS: list[Json] = [
    INT64_MIN - 1,
    INT64_MIN,
    INT64_MAX,
    INT64_MAX + 1,
    2**64,
    -1,
    0,
    1,
    10_080,
    10_081,
    1.0,
    60.0,
    1.5,
    -0.5,
    1e19,
    -9.3e18,
    2.0**63,
    9.2e18,
]


def _odd_forms(value: Json) -> list[Json]:
    """Spellings that lax parsing, or another validator, could take for `value`."""
    forms: list[Json] = [None, True, False, "", [], {}, [value], {"value": value}]
    if isinstance(value, str):
        forms += [
            value + "\n",
            " " + value,
            value.upper(),
            value.replace("-", ""),
            "{" + value + "}",
            "urn:uuid:" + value,
            value.replace("https://", "ftp://").replace("http://", "ftp://"),
            value + "?q=1",
            value + "#top",
            value + "/a b",
            value + "/\u00e9",
            value + "@x",
            value * 3,
            str(uuid.UUID(int=0)),
            "01234567-89ab-4def-8123-456789abcdef",
        ]
    elif isinstance(value, bool):
        forms += [str(value).lower(), int(value), not value]
    elif isinstance(value, int):
        forms += [str(value), float(value), value + 1, value - 1, -value]
    elif isinstance(value, float):
        forms += [str(value), int(value)]
    return forms


Path = tuple[str | int, ...]


def _paths(node: Json, path: Path = ()) -> Iterator[Path]:
    yield path
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, (*path, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _paths(child, (*path, index))


def _get(node: Json, path: Path) -> Json:
    for part in path:
        node = node[part]
    return node


@st.composite
def _broken(draw: st.DrawFn, event: dict[str, Json]) -> Json:
    event = copy.deepcopy(event)
    for _ in range(draw(st.integers(1, 2))):
        paths = [path for path in _paths(event) if path]
        # Mostly the fields around `data`: inside it nearly anything is valid.
        fields = [path for path in paths if path[0] != "data"] or paths
        path = draw(st.sampled_from(fields) | st.sampled_from(paths))
        parent, key = _get(event, path[:-1]), path[-1]
        action = draw(st.sampled_from(["replace", "number", "delete", "add"]))
        if action == "replace":
            parent[key] = draw(st.sampled_from(_odd_forms(parent[key])))
        elif action == "number":
            parent[key] = draw(st.sampled_from(_BOUNDARY_NUMBERS))
        elif action == "delete" and isinstance(parent, dict):
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "Id", "ID", "data", "v"]))] = draw(
                st.sampled_from([*_BOUNDARY_NUMBERS, "x", None])
            )
    return event


def _model_accepts(model: type[BaseModel], text: str) -> tuple[bool, str]:
    try:
        model.model_validate_json(text)
    except ValidationError as exc:
        return False, str(exc)
    return True, ""


def _schema_accepts(validator: Validator, instance: Json) -> tuple[bool, str]:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]
    return not errors, "\n".join(errors)


def assert_agree(event_type: EventType, validator: Validator, instance: Json) -> bool:
    text = json.dumps(instance)
    model_ok, model_says = _model_accepts(event_type.model, text)
    schema_ok, schema_says = _schema_accepts(validator, json.loads(text))
    assert model_ok == schema_ok, (
        f"{event_type.name} v{event_type.v}: the model {'accepts' if model_ok else 'rejects'}"
        f" and the schema {'accepts' if schema_ok else 'rejects'}\n{text}\n"
        f"model: {model_says or 'valid'}\nschema: {schema_says or 'valid'}"
    )
    return model_ok


def _single_breaks(event: dict[str, Json]) -> Iterator[Json]:
    """Each field outside `data` (and `data` itself) in turn, in each odd form and boundary
    number, and each key removed: every single break, not a sample of them."""
    for path in _paths(event):
        if not path or (path[0] == "data" and len(path) > 1):
            continue
        for form in [*_odd_forms(_get(event, path)), *_BOUNDARY_NUMBERS, None]:
            broken = copy.deepcopy(event)
            _get(broken, path[:-1])[path[-1]] = form
            yield broken
        parent = _get(event, path[:-1])
        if isinstance(parent, dict):
            broken = copy.deepcopy(event)
            del _get(broken, path[:-1])[path[-1]]
            yield broken


@pytest.mark.parametrize("event_type", list(REGISTRY), ids=lambda t: f"{t.name} v{t.v}")
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_model_and_schema_agree_on_generated_events(
    event_type: EventType, data: st.DataObject
) -> None:
    if (event_type.name, event_type.v) not in VALID_EVENTS:
        pytest.fail(f"add a strategy for {event_type.name} v{event_type.v} to VALID_EVENTS")
    validator = validator_for(event_type)
    valid = data.draw(VALID_EVENTS[(event_type.name, event_type.v)])
    assert assert_agree(event_type, validator, valid), "a generated valid event is refused"
    instance = data.draw(_broken(valid))
    event("still valid" if assert_agree(event_type, validator, instance) else "broken")


# The forms the issue found the model accepting and the schema refusing, and the one the other
# way round: each is refused by both now.

_SYNC_V1 = REGISTRY.resolve("confluence/app.sync", "1")
_GOOD: dict[str, Json] = {
    "id": "01234567-89ab-7def-8123-456789abcdef",
    "name": "confluence/app.sync",
    "v": "1",
    "ts": 1796202060129,
    "user": {"id": "u-1", "email": "ada@example.com", "name": "Ada"},
    "appSettings": {"baseUrl": "https://example.atlassian.net/wiki", "spaceKeys": ["ENG"]},
    "data": None,
}


def _with(path: Path, value: Json) -> dict[str, Json]:
    event = copy.deepcopy(_GOOD)
    _get(event, path[:-1])[path[-1]] = value
    return event


REFUSED = {
    "ts as a string": _with(("ts",), "1796202060129"),
    "includeAttachments as a string": _with(("appSettings", "includeAttachments"), "true"),
    "syncIntervalMinutes as a string": _with(("appSettings", "syncIntervalMinutes"), "60"),
    "id in braces": _with(("id",), "{01234567-89ab-7def-8123-456789abcdef}"),
    "id without hyphens": _with(("id",), "0123456789ab7def8123456789abcdef"),
    "id as a URN": _with(("id",), "urn:uuid:01234567-89ab-7def-8123-456789abcdef"),
    "id in upper case": _with(("id",), "01234567-89AB-7DEF-8123-456789ABCDEF"),
    "id of version 4": _with(("id",), "01234567-89ab-4def-8123-456789abcdef"),
    "an ftp base URL": _with(("appSettings", "baseUrl"), "ftp://example.com/wiki"),
    "a base URL with a query": _with(("appSettings", "baseUrl"), "https://example.com/?a=1"),
    "an integer in data past 64 bits": _with(("data",), INT64_MAX + 1),
    "an integer in data below 64 bits": _with(("data",), INT64_MIN - 1),
    "a float in data past 64 bits": _with(("data",), 1e19),
    "a user id with a trailing newline": _with(("user", "id"), "u-1\n"),
}
ACCEPTED = {
    "the good event": _GOOD,
    "integers in data at the 64-bit edges": _with(("data",), [INT64_MIN, INT64_MAX]),
    "a whole number written 60.0": _with(("appSettings", "syncIntervalMinutes"), 60.0),
    "an http base URL with a port": _with(("appSettings", "baseUrl"), "http://wiki:8090"),
}


@pytest.mark.parametrize("instance", REFUSED.values(), ids=REFUSED.keys())
def test_both_refuse(instance: Json) -> None:
    assert not assert_agree(_SYNC_V1, validator_for(_SYNC_V1), instance)


@pytest.mark.parametrize("instance", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_both_accept(instance: Json) -> None:
    assert assert_agree(_SYNC_V1, validator_for(_SYNC_V1), instance)


def test_the_gateways_ids_match_the_id_pattern() -> None:
    ids = [str(new_event_id()) for _ in range(100)]
    assert all(regress.Regex(EVENT_ID_PATTERN).find(i) is not None for i in ids)


_FULL_SYNC = _with(("appSettings", "includeAttachments"), True)
_FULL_SYNC["appSettings"]["syncIntervalMinutes"] = 60
ONE_OF_EACH: dict[tuple[str, str], dict[str, Json]] = {
    ("confluence/app.sync", "1"): _FULL_SYNC,
    ("confluence/app.sync.completed", "1"): {
        "id": "01234567-89ab-7def-8123-456789abcdef",
        "name": "confluence/app.sync.completed",
        "v": "1",
        "ts": 1796202060129,
        "user": {"id": "u-1", "email": "ada@example.com", "name": "Ada"},
        "data": {"syncId": "01234567-89ab-7def-8123-456789abcdef", "receivedAt": 1796202060000},
    },
}


@pytest.mark.parametrize("event_type", list(REGISTRY), ids=lambda t: f"{t.name} v{t.v}")
def test_model_and_schema_agree_on_every_single_break(event_type: EventType) -> None:
    # Every field of one event in every odd form: not left to the sampling above.
    if (event_type.name, event_type.v) not in ONE_OF_EACH:
        pytest.fail(f"add a valid {event_type.name} v{event_type.v} to ONE_OF_EACH")
    validator = validator_for(event_type)
    valid = ONE_OF_EACH[(event_type.name, event_type.v)]
    assert assert_agree(event_type, validator, valid)
    broken = list(_single_breaks(valid))
    assert len(broken) > 200
    refused = [instance for instance in broken if not assert_agree(event_type, validator, instance)]
    assert len(refused) > len(broken) / 2
