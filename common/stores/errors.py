"""What every shared store raises when it cannot answer."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """The store did not answer in time, or refused (down, out of memory, a bad password).

    The message names the store and the reason, never its URL or credentials.
    """
