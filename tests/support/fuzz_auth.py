"""Signing in for the schemathesis runs in tests/integration/test_fuzz.py.

Also a schemathesis hooks module: the CLI imports it (`hooks` in its config) for the logout run,
where every request needs a session of its own, since a successful logout ends the one it used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import requests
import schemathesis
from requests.structures import CaseInsensitiveDict

from tests.conftest import EMAIL, PASSWORD

URL_VARIABLE = "SYNCGATE_FUZZ_URL"


@dataclass(frozen=True, slots=True)
class Credentials:
    cookie_name: str
    cookie: str
    csrf_token: str


def sign_in(url: str) -> Credentials:
    """A session cookie and its CSRF token, as a browser gets them."""
    http = requests.Session()
    response = http.post(
        f"{url}/api/auth/login", json={"email": EMAIL, "password": PASSWORD}, timeout=10
    )
    assert response.status_code == 200, response.text
    token: str = response.json().get("csrfToken", "")
    # The dedicated route, where it exists, is what a page that reloads would use.
    csrf = http.get(f"{url}/api/auth/csrf", timeout=10)
    if csrf.status_code == 200:
        token = csrf.json()["csrfToken"]
    [(name, value)] = http.cookies.items()
    assert value is not None
    return Credentials(name, value, token)


@schemathesis.auth(refresh_interval=None).apply_to(path="/api/auth/logout")
class FreshSession:
    """A new session for every logout request: no caching, so no request gets a spent one."""

    def get(self, case: schemathesis.Case[Any], ctx: schemathesis.AuthContext) -> Credentials:
        return sign_in(os.environ[URL_VARIABLE])

    def set(
        self, case: schemathesis.Case[Any], data: Credentials, ctx: schemathesis.AuthContext
    ) -> None:
        case.cookies = {**(case.cookies or {}), data.cookie_name: data.cookie}
        case.headers = CaseInsensitiveDict(case.headers or {})
        case.headers["X-CSRF-Token"] = data.csrf_token
