"""Capture what the JSON log handler writes, parsed, next to pytest's own handlers."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from common.logs import log_handler


class JsonLines:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    def raw(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def records(self) -> list[dict[str, Any]]:
        """Every line parsed; json.loads fails the test on a line that is not one JSON object."""
        parsed = [json.loads(line) for line in self.raw()]
        assert all(isinstance(record, dict) for record in parsed)
        return parsed

    def grep(self, needle: str) -> list[dict[str, Any]]:
        """What `grep needle` on the log file would find, parsed."""
        return [json.loads(line) for line in self.raw() if needle in line]


@contextmanager
def json_log_lines(level: int = logging.INFO) -> Iterator[JsonLines]:
    """The production JSON handler on the root logger, at `level`, for the block's duration."""
    lines = JsonLines()
    handler = log_handler("json", lines.stream)
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
