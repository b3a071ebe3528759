"""The log lines an operator reads: one JSON object each, carrying the ids of what is handled."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient

from common.logs import correlation_id_var, event_id_var, log_handler, request_id_var
from gateway.settings import GatewaySettings
from tests.conftest import AiohttpClient, login
from tests.support.app import gateway_app
from tests.support.fakes import FakePublisher
from tests.support.log_capture import json_log_lines

log = logging.getLogger("tests.logs")


def test_a_line_is_one_json_object_with_time_level_logger_message_and_request_id() -> None:
    with json_log_lines() as lines:
        token = request_id_var.set("req-1")
        try:
            log.info("hello %s", "world")
        finally:
            request_id_var.reset(token)
        log.warning("outside any request")

    inside, outside = lines.records()
    assert set(inside) >= {"time", "level", "logger", "message", "request_id"}
    assert inside["level"] == "INFO"
    assert inside["logger"] == "tests.logs"
    assert inside["message"] == "hello world"
    assert inside["request_id"] == "req-1"
    assert "request_id" not in outside, "a context id must not leak past its reset"


def test_the_time_is_rfc_3339_in_utc_to_the_millisecond() -> None:
    before = datetime.now(UTC)
    with json_log_lines() as lines:
        log.info("now")
    after = datetime.now(UTC)

    (record,) = lines.records()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
    moment = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
    assert before - timedelta(milliseconds=1) <= moment <= after


def test_the_time_follows_each_record_across_second_boundaries() -> None:
    handler = log_handler("json")
    stamps = [1_795_000_000.999, 1_795_000_001.0, 1_795_000_001.5, 1_795_000_000.25]
    times = []
    for created in stamps:
        record = log.makeRecord("tests.logs", logging.INFO, __file__, 1, "t", (), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        times.append(orjson.loads(handler.format(record))["time"])
    assert times == [
        "2026-11-18T11:06:40.999Z",
        "2026-11-18T11:06:41.000Z",
        "2026-11-18T11:06:41.500Z",
        "2026-11-18T11:06:40.250Z",
    ]


def test_a_consumers_lines_carry_the_event_and_correlation_ids() -> None:
    with json_log_lines() as lines:
        event_token = event_id_var.set("evt-1")
        correlation_token = correlation_id_var.set("req-1")
        try:
            log.info("settled: %s", "ack")
        finally:
            event_id_var.reset(event_token)
            correlation_id_var.reset(correlation_token)

    (record,) = lines.records()
    assert record["event_id"] == "evt-1"
    assert record["correlation_id"] == "req-1"
    assert record["message"] == "settled: ack"


def test_an_explicit_extra_wins_over_the_context() -> None:
    with json_log_lines() as lines:
        token = event_id_var.set("from-context")
        try:
            log.info("published", extra={"event_id": "explicit"})
        finally:
            event_id_var.reset(token)

    assert lines.records()[0]["event_id"] == "explicit"


def test_extras_json_cannot_hold_are_written_as_text() -> None:
    with json_log_lines() as lines:
        log.warning(
            "odd extras",
            extra={"path": PurePosixPath("/var/x"), "error": ValueError("bad"), "n": {1: "one"}},
        )

    (record,) = lines.records()
    assert record["path"] == "/var/x"
    assert record["error"] == "ValueError: bad"
    assert record["n"] == {"1": "one"}
    assert not {"msg", "args", "levelno", "created", "exc_text"} & set(record)


def test_an_exception_stays_on_one_line() -> None:
    with json_log_lines() as lines:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            log.exception("failed")

    (record,) = lines.records()  # one line, however many lines the traceback has
    assert "ValueError: boom" in record["exc_info"]


def test_the_console_format_appends_the_context_ids() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("tests.logs.console")
    handler = log_handler("console", stream)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    token = request_id_var.set("req-9")
    try:
        logger.info("hello")
    finally:
        request_id_var.reset(token)
        logger.removeHandler(handler)
        logger.propagate = True

    line = stream.getvalue()
    assert line.count("\n") == 1
    assert "INFO" in line
    assert "tests.logs.console: hello request_id=req-9" in line


def console_lines(log: Callable[[logging.Logger], None]) -> list[str]:
    stream = io.StringIO()
    logger = logging.getLogger("tests.logs.console")
    handler = log_handler("console", stream)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        log(logger)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue().splitlines()


def test_a_console_value_cannot_forge_a_second_line() -> None:
    # What a request for /x%0A12:00:00 INFO forged would log, and ids read from a message.
    forged = "/x\n12:00:00 INFO    syncgate.gateway.http: POST /api/sync 202\r\x1b[2J\u2028"
    token = event_id_var.set("id\nforged")
    try:
        lines = console_lines(lambda logger: logger.info("GET %s 404", forged))
    finally:
        event_id_var.reset(token)
    (line,) = lines
    assert "/x\\n12:00:00 INFO" in line
    assert "\\r\\x1b[2J\\u2028" in line
    assert line.endswith("event_id=id\\nforged")


def test_a_console_traceback_is_indented_under_its_record() -> None:
    def log(logger: logging.Logger) -> None:
        try:
            raise ValueError("a message\n12:00:00 INFO    forged: line")
        except ValueError:
            logger.exception("it failed")

    first, *rest = console_lines(log)
    assert "tests.logs.console: it failed" in first
    assert rest, "the traceback is there"
    assert all(line.startswith("    ") for line in rest), rest


async def test_the_gateway_logs_each_request_as_json_with_its_request_id(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    client: TestClient[web.Request, web.Application] = await aiohttp_client(
        gateway_app(make_settings(), publisher=fake_publisher)
    )
    await login(client)
    with json_log_lines() as lines:
        response = await client.post(
            "/api/sync", json={"data": 1}, headers={"X-Request-Id": "trace-42"}
        )
    assert response.status == 202

    (access,) = [r for r in lines.records() if r["logger"] == "syncgate.gateway.http"]
    assert access["message"] == "POST /api/sync 202"
    assert access["request_id"] == "trace-42"
    assert access["status"] == 202
