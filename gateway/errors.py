"""Domain errors. Each knows its HTTP status and stable code; one middleware renders them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class GatewayError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details)
        self.headers = dict(headers or {})


class NotAuthenticated(GatewayError):
    status = 401
    code = "not_authenticated"


class InvalidCredentials(GatewayError):
    status = 401
    code = "invalid_credentials"


class CsrfFailed(GatewayError):
    """A state-changing request that may come from another site, or lacks its CSRF token."""

    status = 403
    code = "csrf_failed"


class Forbidden(GatewayError):
    """Signed in, but without the role this route needs (the DLQ page's: operator)."""

    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class TooManyAttempts(GatewayError):
    """Too many failed logins for this account or address; try again after `retry_after`."""

    status = 429
    code = "too_many_attempts"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class MalformedJson(GatewayError):
    status = 400
    code = "malformed_json"


class UnreadableBody(GatewayError):
    """The body's framing or Content-Encoding is broken (a bad gzip stream, a bad chunk)."""

    status = 400
    code = "unreadable_body"


class InvalidIdempotencyKey(GatewayError):
    status = 400
    code = "invalid_idempotency_key"


class ClientGone(GatewayError):
    """The client closed its connection mid-request. Nobody receives the answer: the status
    is nginx's 499 (client closed request), so logs and metrics tell it from a server error."""

    status = 499
    code = "client_closed_request"


class ExpectationFailed(GatewayError):
    """An `Expect` header other than `100-continue`, the only expectation the gateway meets."""

    status = 417
    code = "expectation_failed"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    code = "unsupported_media_type"


class ValidationFailed(GatewayError):
    status = 422
    code = "validation_failed"


class UnknownEventType(GatewayError):
    """POST /api/events named an event (or a version) that the registry does not hold."""

    status = 422
    code = "unknown_event"


class NotPublishable(GatewayError):
    """A registered event that only syncgate's own processes publish, never a client."""

    status = 403
    code = "not_publishable"


class IdempotencyKeyReused(GatewayError):
    """An Idempotency-Key first sent with another body: answering for it would hide this one."""

    status = 422
    code = "idempotency_key_reused"


class RunStoreUnavailable(GatewayError):
    """The consumer's run store could not be read (locked, corrupt, unreachable): the client
    may ask again after `retry_after`."""

    status = 503
    code = "run_store_unavailable"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class BrokerUnavailable(GatewayError):
    """The publish was not confirmed in time: the client may retry after `retry_after`."""

    status = 503
    code = "broker_unavailable"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class StoreUnavailable(GatewayError):
    """A shared store (Redis) that a promise depends on did not answer: retry after
    `retry_after`. Nothing was published, and no session was started."""

    status = 503
    code = "store_unavailable"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class BodyTimeout(GatewayError):
    """The body did not arrive within SYNCGATE_BODY_TIMEOUT of its headers. Nothing was
    published; the connection is closed after the answer."""

    status = 408
    code = "request_timeout"


class Overloaded(GatewayError):
    """SYNCGATE_MAX_IN_FLIGHT requests are being handled already: refused before any work, so
    the client may retry after `retry_after`."""

    status = 503
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class DeadlineExceeded(GatewayError):
    """The request's time in the gateway passed the publish deadline plus its margin: its
    handling was stopped; retry after `retry_after` (with the same Idempotency-Key)."""

    status = 503
    code = "deadline_exceeded"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
