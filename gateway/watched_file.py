"""A file that is parsed once and parsed again when it changes on disk."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class WatchedFile(Generic[T]):
    """Holds the last good parse of `path`.

    The first parse happens in the constructor and its errors propagate, so a bad file stops
    the process at start-up. A later bad edit is logged and the last good value is kept:
    a typo in a running system's file must not take the route down.
    """

    def __init__(
        self, path: Path, parse: Callable[[Path], T], *, check_interval: float = 1.0
    ) -> None:
        self._path = path
        self._parse = parse
        self._check_interval = check_interval
        # Parse first: a missing file must fail with the parser's clear message.
        self._value = parse(path)
        self._signature = self._stat()
        self._next_check = time.monotonic() + check_interval

    @property
    def path(self) -> Path:
        return self._path

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self._path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> T:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._check_interval
            self._reload_if_changed()
        return self._value

    def _reload_if_changed(self) -> None:
        try:
            signature = self._stat()
        except OSError as exc:
            log.error("kept the previous %s: it cannot be read: %s", self._path, exc)
            return
        if signature == self._signature:
            return
        # Remember the signature even if the parse fails, so one bad edit logs once.
        self._signature = signature
        try:
            self._value = self._parse(self._path)
        except Exception as exc:
            log.error("kept the previous %s: the new version is invalid: %s", self._path, exc)
            return
        log.info("reloaded %s", self._path)
