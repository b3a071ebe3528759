"""A schemathesis hooks module for the signed-in run in tests/integration/test_fuzz.py.

Schema-valid data can be refused for one reason the schema cannot express: the run draws the
same Idempotency-Key for several bodies, and the key answers only for its first body (422
`idempotency_key_reused`, gateway/idempotency.py). That run therefore lets schemathesis accept
a 422 for valid data, and this check puts back everything else its built-in check would catch:
valid data answered 422 for any other reason is still a failure.
"""

from __future__ import annotations

from typing import Any

import schemathesis

REUSED_KEY = "idempotency_key_reused"


@schemathesis.check
def valid_data_is_refused_only_for_a_reused_key(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    code = response.json().get("error", {}).get("code")
    # POST /api/events: an event's client `id` is a key just the same (gateway/events_view.py).
    keyed = "Idempotency-Key" in (case.headers or {}) or (
        isinstance(case.body, dict) and case.body.get("id") is not None
    )
    if code != REUSED_KEY or not keyed:
        raise AssertionError(f"valid data answered 422 {code!r}, not a reused Idempotency-Key")
    return None
