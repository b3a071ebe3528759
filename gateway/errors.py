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


class MalformedJson(GatewayError):
    status = 400
    code = "malformed_json"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    code = "unsupported_media_type"


class ValidationFailed(GatewayError):
    status = 422
    code = "validation_failed"


class BrokerUnavailable(GatewayError):
    """The publish was not confirmed in time: the client may retry after `retry_after`."""

    status = 503
    code = "broker_unavailable"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
