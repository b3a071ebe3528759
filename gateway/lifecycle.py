"""What the app opens at start-up and closes at shutdown: one cleanup context per resource.

Every resource the app factory is given (the publisher, the revocation follower, and the
fakes tests pass in their place) has `start` and `close`; `cleanup_ctx` turns one into the
typed `app.cleanup_ctx` entry. `BackgroundLink` is the shape both broker links share: they
open in the background, so the gateway serves /healthz and answers 503 while the broker is
down, and closing cancels an opening still under way.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from aio_pika.abc import AbstractRobustConnection
from aiohttp import web


class Managed(Protocol):
    async def start(self) -> None:
        """Begin; may return before the resource is ready (it then says so itself)."""
        ...

    async def close(self) -> None: ...


def cleanup_ctx(resource: Managed) -> Callable[[web.Application], AsyncIterator[None]]:
    """Starts `resource` with the app and closes it at shutdown."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        await resource.start()
        yield
        await resource.close()

    return ctx


class BackgroundLink(abc.ABC):
    """A broker connection opened by a task of its own, named `task_name`."""

    def __init__(self, task_name: str) -> None:
        self._task_name = task_name
        self._opener: asyncio.Task[None] | None = None
        self._connection: AbstractRobustConnection | None = None

    async def start(self) -> None:
        self._opener = asyncio.create_task(self._open(), name=self._task_name)

    @abc.abstractmethod
    async def _open(self) -> None:
        """Connect (setting `_connection`) and set up what the link serves."""

    async def close(self) -> None:
        if self._opener is not None:
            self._opener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._opener
        if self._connection is not None:
            await self._connection.close()
