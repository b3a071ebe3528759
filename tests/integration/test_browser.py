"""The web page in a real headless Chromium: sign in, sync, and see the run handled.

Debian's `chromium` (scripts/ensure-browser.sh installs it), driven by Playwright; the gateway
listens on a real port with the real publisher, and a real consumer runner handles the event.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Route,
    async_playwright,
    expect,
)
from pytest_aiohttp import AiohttpServer

from consumers.bootstrap import HANDLERS, build_deps
from consumers.runner import Runner
from gateway.bootstrap import build_app
from gateway.settings import GatewaySettings
from tests.conftest import EMAIL, PASSWORD, BrokerNames
from tests.support.consumer import stored_run
from tests.support.gateway import wait_ready_at

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing; scripts/ensure-browser.sh installs it",
    ),
]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Milliseconds, as Playwright counts them.
WAIT_MS = 15_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


def console_errors_of(page: Page) -> list[str]:
    """The page's console errors from now on (a blocked script or style, a JS error, a
    failed request)."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    return errors


async def offline_context(browser: Browser) -> tuple[BrowserContext, list[str]]:
    """A context in which every request off this host is aborted; the list records them."""
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    off_host: list[str] = []

    async def only_this_host(route: Route) -> None:
        if urlsplit(route.request.url).hostname in {"127.0.0.1", "localhost"}:
            await route.continue_()
        else:
            off_host.append(route.request.url)
            await route.abort()

    await context.route("**/*", only_this_host)
    return context, off_host


async def test_sign_in_sync_and_see_the_run_handled(
    aiohttp_server: AiohttpServer,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
    tmp_path: Path,
    browser: Browser,
) -> None:
    consumer_settings = names.consumer_settings(tmp_path, metrics_port=0)
    deps = build_deps(consumer_settings)
    runner = Runner(consumer_settings, HANDLERS, deps)
    stop = asyncio.Event()
    consuming = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.wait_for(runner.consuming.wait(), 10)
        settings = make_settings(**names.gateway_overrides(), run_store=consumer_settings.run_store)
        server: TestServer = await aiohttp_server(build_app(settings))
        base_url = str(server.make_url("")).rstrip("/")
        await wait_ready_at(base_url, within=10)

        page = await browser.new_page(viewport={"width": 900, "height": 640})
        console_errors = console_errors_of(page)
        await page.goto(f"{base_url}/")

        # A wrong password first: the 401's own message, readable, and still signed out.
        await page.fill("#email", EMAIL)
        await page.fill("#password", "not the password")
        await page.click("#login-button")
        await expect(page.locator("#message")).to_contain_text(
            "the email or password is wrong", timeout=WAIT_MS
        )
        await expect(page.locator("#signed-in")).to_be_hidden()
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "browser-login-refused.png", full_page=True)

        await page.fill("#password", PASSWORD)
        await page.click("#login-button")
        await expect(page.locator("#user-name")).to_have_text("Ada Lovelace", timeout=WAIT_MS)
        await expect(page.locator("#message")).to_be_hidden()

        await page.click("#sync-button")
        event_id_text = page.locator("#event-id")
        await expect(event_id_text).not_to_be_empty(timeout=WAIT_MS)
        event_id = str(uuid.UUID(await event_id_text.inner_text()))
        await expect(page.locator("#run-status")).to_have_text("handled", timeout=WAIT_MS)

        await page.screenshot(path=ARTIFACTS / "browser-sync-handled.png", full_page=True)

        # The page showed what really happened: this event, recorded for this user.
        run = stored_run(consumer_settings.run_store, event_id)
        assert run is not None
        assert run.user_email == EMAIL
        # No blocked script or style (the page's CSP), no JS error, and no failed request but
        # the wrong password's 401, which Chromium logs itself.
        assert len(console_errors) == 1, console_errors
        assert "401" in console_errors[0]
    finally:
        stop.set()
        await asyncio.wait_for(consuming, 10)
        await deps.runs.close()


async def test_the_api_docs_try_it_out_with_the_session_and_nothing_from_elsewhere(
    aiohttp_server: AiohttpServer,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
    browser: Browser,
) -> None:
    settings = make_settings(**names.gateway_overrides())
    server: TestServer = await aiohttp_server(build_app(settings))
    base_url = str(server.make_url("")).rstrip("/")
    await wait_ready_at(base_url, within=10)
    context, off_host = await offline_context(browser)
    page = await context.new_page()
    console_errors = console_errors_of(page)
    await page.goto(f"{base_url}/")
    await page.fill("#email", EMAIL)
    await page.fill("#password", PASSWORD)
    await page.click("#login-button")
    await expect(page.locator("#user-name")).to_have_text("Ada Lovelace", timeout=WAIT_MS)

    await page.goto(f"{base_url}/docs")
    await expect(page.locator("#signed-in")).to_contain_text("Signed in", timeout=WAIT_MS)
    sync = page.locator(".opblock-post", has_text="/api/sync").first
    await expect(sync).to_be_visible(timeout=WAIT_MS)
    await sync.locator(".opblock-summary").click()
    await sync.locator("button.try-out__btn").click()
    await sync.locator("button.execute").click()
    status = sync.locator(".live-responses-table td.response-col_status:not(.col_header)").first
    await expect(status).to_have_text("202", timeout=WAIT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "browser-docs-try-it-out.png", full_page=True)

    # The 202 is a real publish: the event is on the broker, in the unrouted queue (nothing
    # else is bound to this test's exchange).
    channel = await amqp.channel()
    unrouted = await channel.declare_queue(names.unrouted, passive=True)
    message = await unrouted.get(timeout=5)
    await message.ack()
    assert message.type == "confluence/app.sync"
    assert off_host == []
    assert console_errors == []
    await context.close()


async def test_the_asyncapi_viewer_draws_the_events_with_nothing_from_elsewhere(
    aiohttp_server: AiohttpServer,
    make_settings: Callable[..., GatewaySettings],
    names: BrokerNames,
    browser: Browser,
) -> None:
    settings = make_settings(**names.gateway_overrides())
    server: TestServer = await aiohttp_server(build_app(settings))
    base_url = str(server.make_url("")).rstrip("/")
    context, off_host = await offline_context(browser)
    page = await context.new_page()
    console_errors = console_errors_of(page)
    await page.goto(f"{base_url}/asyncapi")
    # The viewer parsed the document (the parser runs in the page) and drew its operations.
    await expect(page.locator("#asyncapi")).to_contain_text("confluence.app.sync", timeout=WAIT_MS)
    await expect(page.locator("#asyncapi")).not_to_contain_text("Error", timeout=1000)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "browser-asyncapi.png", full_page=True)
    assert off_host == []
    assert console_errors == []
    await context.close()
