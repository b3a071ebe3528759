"""The operators' DLQ page in a real headless Chromium, as the sign-in page is tested: a plain
user is refused; an operator finds, reads, discards (after typing the id) and replays
dead-lettered events, sees the audit trail, and the unrouted queue; the broker agrees.
Screenshots go to test-artifacts/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aio_pika
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, expect
from pytest_aiohttp import AiohttpServer

from common.republish import (
    ATTEMPT_HEADER,
    DEAD_LETTERED_AT_HEADER,
    ERROR_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
)
from common.topology import declare_consumer_topology
from gateway.bootstrap import build_app
from gateway.settings import GatewaySettings
from gateway.users import UserRecord, UsersFile
from tests.conftest import PASSWORD, BrokerNames

# The same Chromium, launched by the sign-in page test's fixture.
from tests.integration.test_browser import ARTIFACTS, CHROMIUM, WAIT_MS, browser  # noqa: F401
from tests.integration.test_operator_dlq import ready_count
from tests.support.gateway import wait_ready_at

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="scripts/ensure-browser.sh installs it"),
]

OPERATOR = "ops@example.com"
PLAIN = "ada@example.com"


@pytest.fixture
async def base_url(
    names: BrokerNames,
    amqp: aio_pika.abc.AbstractRobustConnection,
    make_settings: Callable[..., GatewaySettings],
    tmp_path: Path,
    password_hash: str,
    aiohttp_server: AiohttpServer,
) -> str:
    channel = await amqp.channel(publisher_confirms=True)
    await declare_consumer_topology(channel, names.consumer_settings(tmp_path).topology)
    dlx = await channel.get_exchange(names.dlx)
    for n in range(3):
        await dlx.publish(
            aio_pika.Message(
                b'{"page": "ENG-%d"}' % n,
                message_id=f"evt-{n}",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={
                    REASON_HEADER: "handler-failed",
                    ERROR_HEADER: f"Confluence answered 500 for ENG-{n}",
                    ROUTING_KEY_HEADER: "confluence.app.sync",
                    ATTEMPT_HEADER: 5,
                    DEAD_LETTERED_AT_HEADER: 1_780_000_000 + n,
                },
            ),
            routing_key=names.queue,
        )
    events = await channel.get_exchange(names.exchange)
    await events.publish(aio_pika.Message(b"{}", message_id="lost-1"), routing_key="jira.sync")
    await channel.close()

    users = tmp_path / "users-browser.json"
    users.write_text(
        UsersFile(
            users=(
                UserRecord(id="u-ada", email=PLAIN, name="Ada", password_hash=password_hash),
                UserRecord(
                    id="u-ops",
                    email=OPERATOR,
                    name="Olga Operator",
                    password_hash=password_hash,
                    role="operator",
                ),
            )
        ).model_dump_json()
    )
    settings = make_settings(**names.gateway_overrides(), queue=names.queue, users_file=users)
    server: TestServer = await aiohttp_server(build_app(settings))
    url = str(server.make_url("")).rstrip("/")
    await wait_ready_at(url, within=10)
    return url


async def signed_in(browser: Browser, base_url: str, email: str) -> tuple[BrowserContext, Page]:  # noqa: F811
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    page = await context.new_page()
    await page.goto(f"{base_url}/")
    await page.fill("#email", email)
    await page.fill("#password", PASSWORD)
    await page.click("#login-button")
    await expect(page.locator("#signed-in")).to_be_visible(timeout=WAIT_MS)
    await page.goto(f"{base_url}/operator")
    return context, page


async def test_an_operator_reads_discards_and_replays_from_the_page(
    browser: Browser,  # noqa: F811
    base_url: str,
    names: BrokerNames,
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)

    context, page = await signed_in(browser, base_url, PLAIN)
    await expect(page.locator("#message")).to_contain_text("Refused", timeout=WAIT_MS)
    await expect(page.locator("#operator")).to_be_hidden()
    await page.screenshot(path=ARTIFACTS / "operator-refused-plain-user.png", full_page=True)
    await context.close()

    context, page = await signed_in(browser, base_url, OPERATOR)
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    rows = page.locator("#letters tbody tr")
    await expect(rows).to_have_count(3, timeout=WAIT_MS)
    await expect(rows.nth(0)).to_contain_text("evt-0")
    await expect(rows.nth(1)).to_contain_text("Confluence answered 500 for ENG-1")
    await expect(page.locator("#summary")).to_contain_text("3 message(s), oldest first")
    await page.screenshot(path=ARTIFACTS / "operator-dlq-list.png", full_page=True)

    # Read a body, then discard that event after typing its id (a wrong one removes nothing).
    await rows.nth(1).get_by_role("button", name="Body").click()
    await expect(page.locator("#detail-body")).to_have_text('{"page": "ENG-1"}', timeout=WAIT_MS)
    await page.fill("#discard-confirm", "evt-")
    await page.click("#discard-button")
    await expect(page.locator("#message")).to_contain_text("Type the event id exactly")
    await expect(rows).to_have_count(3)
    await page.screenshot(path=ARTIFACTS / "operator-dlq-body.png", full_page=True)
    await page.fill("#discard-confirm", "evt-1")
    await page.click("#discard-button")
    await expect(rows).to_have_count(2, timeout=WAIT_MS)

    # Replay a selection of one.
    await page.get_by_label("select evt-2").check()
    await page.click("#replay-selected")
    await expect(page.locator("#progress")).to_contain_text("Replayed 1, failed 0", timeout=WAIT_MS)
    await expect(rows).to_have_count(1)
    audit = page.locator("#audit tbody tr")
    await expect(audit).to_have_count(2)
    await expect(audit.nth(0)).to_contain_text("replay")
    await expect(audit.nth(0)).to_contain_text(OPERATOR)
    await expect(audit.nth(1)).to_contain_text("discard")
    await page.screenshot(path=ARTIFACTS / "operator-dlq-replayed.png", full_page=True)

    # Replay all: in steps, with progress against the count at the start.
    await page.click("#replay-all")
    await expect(page.locator("#progress")).to_contain_text(
        "Replayed 1 of 1, failed 0", timeout=WAIT_MS
    )
    await expect(rows).to_have_count(0)
    await expect(audit).to_have_count(3)

    await page.click("#show-unrouted")
    await expect(rows).to_have_count(1, timeout=WAIT_MS)
    await expect(rows.nth(0)).to_contain_text("lost-1")
    await expect(rows.nth(0)).to_contain_text("jira.sync")
    await page.screenshot(path=ARTIFACTS / "operator-unrouted.png", full_page=True)
    await context.close()

    assert errors == []
    assert await ready_count(f"{names.queue}.dlq") == 0  # evt-1 discarded, the rest replayed
    assert await ready_count(names.queue) == 2  # evt-2 and evt-0, back in the work queue
