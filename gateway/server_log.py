"""aiohttp's own server log, told apart: a broken request is the client's problem.

aiohttp answers a request whose framing is broken (a NUL in a header, a bad chunk size, a
line too long, a body that does not decode) with its plain-text 400, which is right; but it
also logs it on `aiohttp.server` as an ERROR with a traceback, which anyone can trigger
without signing in, and which would page someone for nothing. The same goes for a client that
vanishes while aiohttp drains the rest of its body. This filter rewrites exactly those
records as one INFO line without a traceback; everything else aiohttp logs (a real bug
included) passes as it is.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from common.logs import escape_controls

SERVER_LOGGER = "aiohttp.server"
# The client's own fault, as aiohttp raises it while reading a request.
_CLIENT_FAULTS = (HttpProcessingError, RequestPayloadError, ConnectionResetError)
# The most of an exception's first line kept on the log line.
_MAX_REASON = 200


def _reason(exc: BaseException) -> str:
    """What went wrong, without what the client sent.

    aiohttp's parser errors quote the offending bytes below their first line (a header line
    with a NUL may be the Cookie header, and so carry a session); only the first line, the
    description, is kept.
    """
    text = f"{exc.code} {exc.message}" if isinstance(exc, HttpProcessingError) else str(exc)
    first = text.split("\n", 1)[0].rstrip(": ")
    if len(first) > _MAX_REASON:
        first = first[:_MAX_REASON] + "…"
    return escape_controls(f"{type(exc).__name__}: {first}")


class ClientFaultFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, _CLIENT_FAULTS):
            # aiohttp's own text first: it names the client's address.
            said = escape_controls(record.getMessage())
            record.msg, record.args = "the client's fault, refused: %s: %s", (said, _reason(exc))
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


def install_client_fault_filter() -> None:
    """Once per process, however many apps are built (tests build many)."""
    logger = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(f, ClientFaultFilter) for f in logger.filters):
        logger.addFilter(ClientFaultFilter())
