"""Failed-login limits per account and per client address, over a login-failure store.

After `max_failures` failures a key is locked out for `base` seconds, and each further failure
doubles that, up to `cap`; while it is locked, logins answer 429 with Retry-After before any
password is checked. A success clears the account's count (not the address's: one right
password must not unlock guessing at other accounts from the same address). A key keeps its
count until a success, or until it has been quiet (no failure) for the quiet period: the
lockout keeps escalating, rather than starting over after the longest one.

The counts live in the store (`common/stores/login_failures.py`): this process's memory by
default, or Redis, shared by every gateway, when `SYNCGATE_REDIS_URL` is set. A store that
does not answer makes the login a 503 `store_unavailable`: no password is checked without
the limits, and no failure goes uncounted.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from common.stores import errors as store_errors
from common.stores.login_failures import LoginFailureStore
from gateway.errors import StoreUnavailable, TooManyAttempts

T = TypeVar("T")


class LoginLimits:
    """The two counts a login consults, one keyed by email and one by client address."""

    def __init__(self, store: LoginFailureStore, *, retry_after: int) -> None:
        """`retry_after`: the Retry-After of a 503 when the store does not answer."""
        self.store = store
        self._retry_after = retry_after

    @staticmethod
    def _account(email: str) -> str:
        return email.strip().lower()

    async def check(self, email: str, address: str) -> None:
        """Raise TooManyAttempts while the account or the address is locked out."""
        wait = await self._ask(self.store.retry_after(self._account(email), address))
        if wait > 0:
            raise TooManyAttempts("too many failed logins; try again later", retry_after=wait)

    async def failed(self, email: str, address: str) -> None:
        await self._ask(self.store.failed(self._account(email), address))

    async def succeeded(self, email: str) -> None:
        await self._ask(self.store.succeeded(self._account(email)))

    async def _ask(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except store_errors.StoreUnavailable:
            # The reason is in the store's own log line, not in the client's answer.
            raise StoreUnavailable(
                "the store of login limits is unavailable; retry", retry_after=self._retry_after
            ) from None
