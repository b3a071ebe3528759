"""Cross-site request forgery: every state-changing request must come from us.

Three independent checks, each enough against a plain cross-site form or fetch:
1. where the request comes from: `Sec-Fetch-Site: cross-site` is refused, and so is an
   `Origin` that is neither the gateway's own nor listed in SYNCGATE_ALLOWED_ORIGINS;
2. the body type: only JSON (or no Content-Type at all, for an empty body). A cross-site page
   can send form, multipart or text/plain bodies without a CORS preflight, never JSON;
3. a signed token, as Auth.js does it: an HMAC of the session id, handed out at login and by
   GET /api/auth/csrf, sent back in `X-CSRF-Token`. A page on another site cannot read it, and
   a token from one session is worthless in another.

Login has no session yet, so it gets checks 1 and 2 (they stop login CSRF, which signs a victim
into the attacker's account). Safe methods are not checked: they change nothing.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.body import is_json_content_type
from gateway.errors import CsrfFailed, UnsupportedMediaType
from gateway.keys import SETTINGS
from gateway.routing import is_unmatched
from gateway.sessions import require_user

HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Routes that change state without a session to bind a token to.
SESSIONLESS = frozenset({"/api/auth/login"})

# Domain separation: the token key is derived from a session key, never the key itself.
_LABEL = b"syncgate csrf token v1"


@functools.lru_cache(maxsize=16)  # one per configured key; derived once, not per request
def _token_key(fernet_key: str) -> bytes:
    return hmac.new(base64.urlsafe_b64decode(fernet_key), _LABEL, hashlib.sha256).digest()


# A session sends the same token with every request: remember the expected one per session
# (bounded; a session id and a token are well under 100 bytes each).
@functools.lru_cache(maxsize=10_000)
def _sign(fernet_key: str, session_id: str) -> str:
    digest = hmac.new(_token_key(fernet_key), session_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_token(keys: Sequence[str], session_id: str) -> str:
    """The token for this session, signed with the first (current) session key."""
    return _sign(keys[0], session_id)


def token_is_valid(keys: Sequence[str], session_id: str, token: str) -> bool:
    # Every key, like the cookie itself: a key rotation must not break open pages.
    return any(hmac.compare_digest(_sign(key, session_id), token) for key in keys)


def _own_origin(request: web.Request, secure: bool) -> str:
    # Behind a TLS-terminating proxy the request arrives as http, but the browser's Origin
    # says https; with Secure cookies the gateway is only ever reached over https.
    scheme = "https" if secure else request.scheme
    return f"{scheme}://{request.host}"


def check_origin(request: web.Request) -> None:
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        raise CsrfFailed("cross-site requests may not change state")
    origin = request.headers.get("Origin")
    if origin is None:
        return  # not a browser, or an old one; the token still has to match
    settings = request.app[SETTINGS]
    allowed = settings.origins or {_own_origin(request, settings.cookie_secure)}
    if origin.rstrip("/") not in allowed:
        raise CsrfFailed(f"requests from origin {origin!r} may not change state")


def check_content_type(request: web.Request) -> None:
    # Checked on the header, not the body: an empty form post must not slip through either.
    if "Content-Type" not in request.headers or is_json_content_type(request.content_type):
        return
    # HTTP clients (aiohttp among them) label an empty POST as octet-stream. That type is not
    # CORS-safelisted, so a cross-site page cannot send it without a preflight anyway.
    if request.content_type == "application/octet-stream" and not request.body_exists:
        return
    raise UnsupportedMediaType("send the body as application/json")


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Runs inside error_middleware (its errors are rendered) and after the session one."""
    if request.method in SAFE_METHODS or is_unmatched(request):
        return await handler(request)
    check_origin(request)
    check_content_type(request)
    if request.path not in SESSIONLESS:
        signed_in = await require_user(request)
        token = request.headers.get(HEADER, "")
        if not token_is_valid(request.app[SETTINGS].fernet_keys, signed_in.session_id, token):
            raise CsrfFailed(f"a valid {HEADER} header is required; get one from /api/auth/csrf")
    return await handler(request)
