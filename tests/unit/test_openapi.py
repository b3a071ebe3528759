"""GET /openapi.json: valid OpenAPI 3.1, generated from the models, describing every route."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import OpenAPIV31SpecValidator
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from gateway.body import NoBody
from gateway.openapi import REF_TEMPLATE
from gateway.responses import ErrorBody, LoginResponse, SessionResponse, SyncAccepted
from gateway.routing import is_catch_all
from gateway.settings import GatewaySettings
from gateway.views import LoginRequest, SyncRequest
from tests.conftest import EMAIL, PASSWORD, AiohttpClient, login
from tests.support.app import gateway_app
from tests.support.fakes import FakePublisher

Client = TestClient[web.Request, web.Application]


def undescribed(app: web.Application, document: dict[str, Any]) -> set[tuple[str, str]]:
    """Routes in the router that the document has no operation for.

    Walks app.router itself rather than trusting the generator's walk. HEAD is implied by a
    GET on the same path; a static directory is documented as `<prefix>/{filename}`. The
    catch-all route (gateway/routing.py) is no operation: it answers the 404s and 405s.
    """
    routes: set[tuple[str, str]] = set()
    for route in app.router.routes():
        assert route.resource is not None
        if is_catch_all(route):
            continue
        path = route.resource.canonical
        if isinstance(route.resource, web.StaticResource):
            path = path.rstrip("/") + "/{filename}"
        routes.add((route.method, path))
    routes = {(m, p) for m, p in routes if not (m == "HEAD" and ("GET", p) in routes)}
    paths = document["paths"]
    return {(m, p) for m, p in routes if m.lower() not in paths.get(p, {})}


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> Client:
    made: Client = await aiohttp_client(gateway_app(make_settings(), publisher=fake_publisher))
    return made


async def fetch_document(client: Client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    document: dict[str, Any] = await response.json()
    return document


async def test_the_document_is_valid_openapi_3_1(client: Client) -> None:
    document = await fetch_document(client)
    assert document["openapi"].startswith("3.1")
    OpenAPIV31SpecValidator(document).validate()


async def test_every_route_in_the_router_is_described(client: Client) -> None:
    document = await fetch_document(client)
    assert undescribed(client.app, document) == set()
    assert {"/api/sync", "/api/auth/login", "/openapi.json", "/docs"} <= set(document["paths"])


async def test_a_route_without_an_entry_is_caught(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    async def extra(request: web.Request) -> web.Response:
        return web.json_response({})

    app = gateway_app(make_settings(), publisher=fake_publisher)
    app.router.add_post("/api/extra", extra)
    client: Client = await aiohttp_client(app)
    document = await fetch_document(client)
    assert undescribed(app, document) == {("POST", "/api/extra")}


@pytest.mark.parametrize(
    "model", [SyncRequest, LoginRequest, NoBody, ErrorBody, SyncAccepted, LoginResponse]
)
async def test_the_schemas_are_the_pydantic_models(client: Client, model: type[BaseModel]) -> None:
    document = await fetch_document(client)
    mode: JsonSchemaMode = (
        "validation" if model in (SyncRequest, LoginRequest, NoBody) else "serialization"
    )
    expected = model.model_json_schema(ref_template=REF_TEMPLATE, mode=mode)
    defs = expected.pop("$defs", {})
    components = document["components"]["schemas"]
    assert components[model.__name__] == expected
    for name, schema in defs.items():
        assert components[name] == schema


async def test_every_error_status_has_the_error_shape(client: Client) -> None:
    document = await fetch_document(client)
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    errors_seen = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "500" in operation["responses"], (method, path)
            for status, response in operation["responses"].items():
                assert "X-Request-Id" in response["headers"]
                if int(status) >= 400 and (method, path) != ("get", "/readyz"):
                    assert response["content"] == {"application/json": {"schema": error_ref}}
                    errors_seen += 1
    assert errors_seen > 20


async def test_body_routes_document_every_way_a_body_fails(client: Client) -> None:
    document = await fetch_document(client)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation:
                assert {"400", "413", "415", "422"} <= set(operation["responses"]), (method, path)


async def test_session_routes_need_the_cookie_and_state_changes_the_csrf_token(
    client: Client,
) -> None:
    document = await fetch_document(client)
    schemes = document["components"]["securitySchemes"]
    assert schemes["session"] == {
        "type": "apiKey",
        "in": "cookie",
        "name": "syncgate",
        "description": schemes["session"]["description"],
    }
    assert schemes["csrfToken"]["in"] == "header"
    assert schemes["csrfToken"]["name"] == "X-CSRF-Token"
    paths = document["paths"]
    assert paths["/api/sync"]["post"]["security"] == [{"session": [], "csrfToken": []}]
    assert paths["/api/auth/logout"]["post"]["security"] == [{"session": [], "csrfToken": []}]
    assert paths["/api/auth/csrf"]["get"]["security"] == [{"session": []}]
    assert paths["/api/auth/login"]["post"]["security"] == []
    assert paths["/healthz"]["get"]["security"] == []


async def test_the_cookie_name_follows_the_settings(
    aiohttp_client: AiohttpClient,
    make_settings: Callable[..., GatewaySettings],
    fake_publisher: FakePublisher,
) -> None:
    app = gateway_app(make_settings(cookie_secure=True), publisher=fake_publisher)
    client: Client = await aiohttp_client(app)
    document = await fetch_document(client)
    assert document["components"]["securitySchemes"]["session"]["name"] == "__Host-syncgate"


async def test_real_answers_match_their_documented_models(
    client: Client, fake_publisher: FakePublisher
) -> None:
    document = await fetch_document(client)
    sync_answers = document["paths"]["/api/sync"]["post"]["responses"]
    assert sync_answers["202"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/SyncAccepted"
    )
    signed_out = await client.get("/api/auth/session")
    SessionResponse.model_validate(await signed_out.json())
    response = await client.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
    LoginResponse.model_validate(await response.json())
    await login(client)
    SyncAccepted.model_validate(await (await client.post("/api/sync", json={})).json())
    SessionResponse.model_validate(await (await client.get("/api/auth/session")).json())
    ErrorBody.model_validate(await (await client.get("/nope")).json())
    assert len(fake_publisher.published) == 1


async def test_the_docs_page_works_offline(client: Client) -> None:
    response = await client.get("/docs")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    html = await response.text()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "/static/docs.js" in assets
    assert "/openapi.json" in assets
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(assets)
    for asset in assets:
        assert asset.startswith("/"), f"{asset} is not served by the gateway"
        assert (await client.get(asset)).status == 200


async def test_the_document_says_which_numbers_data_may_carry(client: Client) -> None:
    document = await fetch_document(client)
    schemas = document["components"]["schemas"]
    data = schemas["SyncRequest"]["properties"]["data"]
    assert "signed 64-bit" in data["description"]
    numbers = [
        branch
        for branch in schemas["EventData"]["anyOf"]
        if branch.get("type") in ("integer", "number")
    ]
    assert numbers
    for branch in numbers:
        assert (branch["minimum"], branch["maximum"]) == (-(2**63), 2**63 - 1)


@pytest.mark.parametrize(
    "path",
    ["/docs/assets/index.css", "/docs/assets/core.py", "/docs/assets/..%2F__init__.py"],
)
async def test_only_swagger_uis_bundle_and_stylesheet_are_served(client: Client, path: str) -> None:
    response = await client.get(path)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
