"""`python -m bench.node_peer_check`: the Node.js peer keeps syncgate's contract.

Starts syncgate (gateway and consumer) and the Node peer on this run's names, signs in once
through syncgate, and sends the same requests to both: each must get the same status. Then
checks what only the peer's side shows: the message's properties, one run recorded per
accepted event (a redelivered copy is not recorded again), an invalid message dead-lettered,
and a logged-out session refused (a logout through syncgate, and a record put on the stream by
hand). Prints one line per check and exits non-zero on the first failure.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import sqlite3
import sys
import time
import uuid
from dataclasses import dataclass, field

import aio_pika
import aiohttp
from aio_pika.abc import AbstractChannel, AbstractConnection
from cryptography.fernet import Fernet

from bench.load import Credentials, sign_in
from bench.measure import wait_drained
from bench.procs import Child
from bench.runner import bench_broker
from bench.systems import (
    HttpSystem,
    node_peer_missing,
    queue_counts,
    start_node_peer,
    start_syncgate,
    start_syncgate_consumer,
)
from bench.workspace import (
    BENCH_EMAIL,
    BENCH_PASSWORD,
    MANAGEMENT_AUTH,
    MANAGEMENT_URL,
    Workspace,
)
from common.cloudevents import DEFAULT_EVENT_SOURCE, attribute_headers
from consumers.follow_ups import SOURCE as CONSUMER_SOURCE

SYNC_BODY = b'{"data":{"bench":true}}'


class CheckFailed(AssertionError):
    pass


@dataclass
class Case:
    name: str
    status: int
    body: bytes = SYNC_BODY
    headers: dict[str, str] = field(default_factory=dict)
    cookie: bool = True
    csrf: bool = True
    content_type: str | None = "application/json"


TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def cases() -> list[Case]:
    deep = b'{"data":' + b"[" * 40 + b"]" * 40 + b"}"
    return [
        Case("a signed-in sync", 202),
        Case("an empty JSON body", 202, body=b""),
        Case("no body and no Content-Type", 202, body=b"", content_type=None),
        Case("`data` of any JSON", 202, body=b'{"data":[1,"two",{"three":null}]}'),
        Case("the own Origin", 202, headers={"Origin": "http://{host}"}),
        Case("+json media type", 202, content_type="application/vnd.api+json"),
        Case("no cookie", 401, cookie=False),
        Case("a forged cookie", 401, headers={"Cookie": "syncgate=gAAAAABforged"}, cookie=False),
        Case("no CSRF token", 403, csrf=False),
        Case("a wrong CSRF token", 403, headers={"X-CSRF-Token": "x" * 43}, csrf=False),
        Case("Sec-Fetch-Site: cross-site", 403, headers={"Sec-Fetch-Site": "cross-site"}),
        Case("a foreign Origin", 403, headers={"Origin": "https://evil.example"}),
        Case("text/plain", 415, content_type="text/plain"),
        Case("a form post", 415, body=b"a=1", content_type="application/x-www-form-urlencoded"),
        Case("a body over 64 KiB", 413, body=b'{"data":"' + b"x" * 70_000 + b'"}'),
        Case("invalid JSON", 400, body=b'{"data":'),
        Case("invalid UTF-8", 400, body=b'{"data":"\xff"}'),
        Case("JSON nested 41 deep", 400, body=deep),
        Case("a latin-1 charset", 400, content_type="application/json; charset=latin-1"),
        Case("a JSON array", 422, body=b"[1]"),
        Case("a field besides `data`", 422, body=b'{"data":1,"user":{"id":"admin"}}'),
    ]


def say(text: str) -> None:
    print(f"[check] {text}", flush=True)


def require(ok: bool, text: str) -> None:
    if not ok:
        raise CheckFailed(text)
    say(f"ok: {text}")


async def post(
    http: aiohttp.ClientSession, system: HttpSystem, case: Case, credentials: Credentials
) -> tuple[int, dict[str, str], bytes]:
    host = f"127.0.0.1:{system.port}"
    headers = {k: v.replace("{host}", host) for k, v in case.headers.items()}
    if case.cookie:
        headers["Cookie"] = credentials.cookie
    if case.csrf:
        headers.setdefault("X-CSRF-Token", credentials.csrf_token)
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    async with http.post(system.url, data=case.body, headers=headers) as response:
        headers = {k.lower(): v for k, v in response.headers.items()}
        return response.status, headers, await response.read()


async def compare(systems: list[HttpSystem], credentials: Credentials) -> list[str]:
    """Every case against every system; returns the event ids the Node peer accepted."""
    accepted: list[str] = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for case in cases():
            statuses = []
            for system in systems:
                status, headers, body = await post(http, system, case, credentials)
                statuses.append(status)
                if system.label == "node peer" and status == 202:
                    answer = json.loads(body)
                    require(answer["success"] == "true", f"node peer: {case.name} says success")
                    accepted.append(str(uuid.UUID(answer["id"])))
                if status >= 400 and system.label == "node peer":
                    error = json.loads(body)["error"]
                    require(
                        isinstance(error["code"], str) and isinstance(error["details"], list),
                        f"node peer: {case.name} answers syncgate's error shape ({error['code']})",
                    )
            require(
                statuses == [case.status] * len(systems),
                f"{case.name}: {case.status} from each of "
                f"{', '.join(s.label for s in systems)} (got {statuses})",
            )
        # The request id: a sane one is echoed, anything else is replaced.
        for offered, echoed in (("req-123.abc:x", True), ("bad id with spaces", False)):
            for system in systems:
                case = Case("request id", 202, headers={"X-Request-Id": offered})
                status, headers, body = await post(http, system, case, credentials)
                if system.label == "node peer":
                    accepted.append(json.loads(body)["id"])
                got = headers.get("x-request-id", "")
                require(
                    status == 202 and (got == offered) == echoed and bool(got),
                    f"{system.label}: X-Request-Id {offered!r} "
                    f"{'echoed' if echoed else 'replaced'} ({status}, {got!r})",
                )
    return accepted


async def check_properties(
    channel: AbstractChannel, workspace: Workspace, peer: HttpSystem, credentials: Credentials
) -> str:
    """One event's message, caught by a queue of our own bound to the peer's exchange."""
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(workspace.name("node.events"), routing_key="confluence.app.sync")
    async with aiohttp.ClientSession() as http:
        status, _, body = await post(
            http, peer, Case("x", 202, headers={"X-Request-Id": "props-check-1"}), credentials
        )
    require(status == 202, "one more event, to catch")
    event_id = str(json.loads(body)["id"])
    message = None
    for _ in range(50):
        message = await queue.get(no_ack=True, fail=False)
        if message is not None:
            break
        await asyncio.sleep(0.05)
    await queue.delete()
    assert message is not None
    event = json.loads(message.body)
    seconds = int(message.timestamp.timestamp()) if message.timestamp else None
    expected = {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "delivery_mode": 2,
        "message_id": event_id,
        "correlation_id": "props-check-1",
        "type": "confluence/app.sync",
        "timestamp": event["ts"] // 1000,
        "headers": {
            "v": "1",
            **attribute_headers(
                DEFAULT_EVENT_SOURCE,
                event_id=event_id,
                name="confluence/app.sync",
                ts=event["ts"],
                subject=event["user"]["id"],
                schema_file_name="confluence.app.sync.v1.schema.json",
            ),
            "traceparent": (message.headers or {}).get("traceparent"),
        },
        "routing_key": "confluence.app.sync",
    }
    require(
        TRACEPARENT.fullmatch(str((message.headers or {}).get("traceparent"))) is not None,
        "the message carries a W3C traceparent",
    )
    got = {
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "delivery_mode": int(message.delivery_mode or 0),
        "message_id": message.message_id,
        "correlation_id": message.correlation_id,
        "type": message.type,
        "timestamp": seconds,
        "headers": dict(message.headers or {}),
        "routing_key": message.routing_key,
    }
    require(got == expected, f"the message's properties are syncgate's (app_id {message.app_id})")
    require(
        list(event) == ["id", "name", "v", "ts", "user", "appSettings", "data"]
        and uuid.UUID(event["id"]).version == 7
        and event["user"] == {"id": "u-bench", "email": BENCH_EMAIL, "name": "Bench User"}
        and event["appSettings"]
        == {
            "baseUrl": "https://example.atlassian.net/wiki",
            "spaceKeys": ["ENG", "OPS"],
            "syncIntervalMinutes": 60,
            "includeAttachments": False,
        }
        and event["data"] == {"bench": True},
        "the event: a UUIDv7, the session's user, the app settings file and `data`",
    )
    return event_id


def run_store_ids(workspace: Workspace) -> tuple[list[str], int]:
    with sqlite3.connect(workspace.root / "node-peer-runs.sqlite3") as db:
        runs = [row[0] for row in db.execute("SELECT event_id FROM runs")]
        processed = int(db.execute("SELECT COUNT(*) FROM processed_events").fetchone()[0])
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    require(mode == "wal", "the run store is in WAL mode")
    return runs, processed


async def check_consumer(
    channel: AbstractChannel, workspace: Workspace, peer: HttpSystem, accepted: list[str]
) -> None:
    left = await wait_drained(channel, workspace.name("node.work"), within=30)
    await asyncio.sleep(0.5)  # the last batch's ack
    runs, processed = run_store_ids(workspace)
    require(
        left == 0 and sorted(runs) == sorted(accepted) and processed == len(accepted),
        f"the consumer recorded each of the {len(accepted)} accepted events once",
    )
    # A redelivered copy (same id) is acked and not recorded again; an invalid body is
    # rejected into the DLQ.
    exchange = await channel.get_exchange(workspace.name("node.events"))
    with sqlite3.connect(workspace.root / "node-peer-runs.sqlite3") as db:
        row = db.execute("SELECT * FROM runs LIMIT 1").fetchone()
    copy = {
        "id": row[0],
        "name": "confluence/app.sync",
        "v": "1",
        "ts": row[6],
        "user": {"id": row[1], "email": row[2], "name": row[3]},
        "appSettings": json.loads(row[4]),
        "data": json.loads(row[5]),
    }
    for body in (json.dumps(copy).encode(), json.dumps(copy).encode(), b'{"name":"nope"}'):
        await exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key="confluence.app.sync",
        )
    await wait_drained(channel, workspace.name("node.work"), within=30)
    await asyncio.sleep(0.5)
    runs_after, processed_after = run_store_ids(workspace)
    require(
        len(runs_after) == len(runs) and processed_after == processed,
        "two redelivered copies of a recorded event are acked, not recorded again",
    )
    dlq = workspace.name("node.work.dlq")
    for _ in range(40):
        if (await queue_counts(channel, dlq))[0] == 1:
            break
        await asyncio.sleep(0.1)
    require((await queue_counts(channel, dlq))[0] == 1, "an invalid message went to the DLQ")
    await check_follow_ups(channel, workspace, runs)


async def check_follow_ups(channel: AbstractChannel, workspace: Workspace, runs: list[str]) -> None:
    """One confluence/app.sync.completed event per recorded run, on the completed queue, with
    syncgate's consumer's properties and CloudEvents headers (consumers/follow_ups.py)."""
    queue = await channel.get_queue(workspace.name("node.work.completed"))
    announced: list[str] = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        event = json.loads(message.body)
        headers = dict(message.headers or {})
        headers.pop("x-delivery-count", None)  # the quorum queue's own count, on a basic.get
        require(
            list(event) == ["id", "name", "v", "ts", "user", "data"]
            and event["name"] == "confluence/app.sync.completed"
            and message.type == event["name"]
            and message.message_id == event["id"]
            and int(message.delivery_mode or 0) == 2
            and message.routing_key == "confluence.app.sync.completed"
            and headers
            == {
                "v": "1",
                **attribute_headers(
                    CONSUMER_SOURCE,
                    event_id=event["id"],
                    name=event["name"],
                    ts=event["ts"],
                    subject=event["user"]["id"],
                    schema_file_name="confluence.app.sync.completed.v1.schema.json",
                ),
            },
            f"a completed event with syncgate's consumer's properties ({event['id']})",
        )
        announced.append(event["data"]["syncId"])
    require(
        sorted(announced) == sorted(runs),
        f"one completed event for each of the {len(runs)} recorded runs, none for a duplicate",
    )


async def check_revocation(
    channel: AbstractChannel,
    workspace: Workspace,
    syncgate: HttpSystem,
    peer: HttpSystem,
) -> None:
    login = f"http://127.0.0.1:{syncgate.port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        # 1. A logout through syncgate: its record goes to the stream the peer follows.
        credentials = await sign_in(login, BENCH_EMAIL, BENCH_PASSWORD)
        require((await post(http, peer, Case("x", 202), credentials))[0] == 202, "a new session")
        headers = {"Cookie": credentials.cookie, "X-CSRF-Token": credentials.csrf_token}
        async with http.post(f"{login}/api/auth/logout", headers=headers) as response:
            require(response.status == 200, "logged out through syncgate")
        status = await refused_soon(http, peer, credentials)
        require(status == 401, f"the node peer refuses the logged-out session ({status})")
        # 2. A record put on the stream by hand, for a session nobody logged out.
        credentials = await sign_in(login, BENCH_EMAIL, BENCH_PASSWORD)
        require((await post(http, peer, Case("x", 202), credentials))[0] == 202, "a new session")
        token = credentials.cookie.split("=", 1)[1].strip('"')
        session = json.loads(Fernet(workspace.session_key).decrypt(token.encode()))["session"]
        record = {"sid": session["sid"], "until": int(time.time()) + 3600}
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps(record).encode()),
            routing_key=workspace.name("revocations"),
        )
        for system in (peer, syncgate):
            status = await refused_soon(http, system, credentials)
            require(status == 401, f"{system.label} refuses a session revoked on the stream")


async def refused_soon(
    http: aiohttp.ClientSession, system: HttpSystem, credentials: Credentials
) -> int:
    status = 0
    for _ in range(50):
        status = (await post(http, system, Case("x", 202), credentials))[0]
        if status != 202:
            return status
        await asyncio.sleep(0.05)
    return status


def forged(workspace: Workspace, **session: object) -> Credentials:
    """A cookie made here with the run's key, and its CSRF token by gateway/csrf.py's rule."""
    now = int(time.time())
    payload = {"created": now, "session": {"uid": "u-bench", "sid": "forged-sid", **session}}
    token = Fernet(workspace.session_key).encrypt_at_time(json.dumps(payload).encode(), now)
    key = base64.urlsafe_b64decode(workspace.session_key)
    csrf_key = hmac.new(key, b"syncgate csrf token v1", hashlib.sha256).digest()
    sid = str(payload["session"]["sid"])  # type: ignore[index]
    digest = hmac.new(csrf_key, sid.encode(), hashlib.sha256).digest()
    csrf = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return Credentials(cookie=f"syncgate={token.decode()}", csrf_token=csrf)


async def check_cookies(workspace: Workspace, systems: list[HttpSystem]) -> list[str]:
    """Cookies made with the key: timeouts, an unknown user, and the idle renewal. Returns
    the event ids the Node peer accepted."""
    accepted: list[str] = []
    now = int(time.time())
    cases: list[tuple[str, int, dict[str, object]]] = [
        ("a cookie seen 2 min ago (renewed)", 202, {"iat": now - 120, "seen": now - 120}),
        ("a cookie idle for 31 min", 401, {"iat": now - 1900, "seen": now - 1860}),
        ("a cookie signed in 9 h ago", 401, {"iat": now - 9 * 3600, "seen": now - 60}),
        ("a cookie of an unknown user", 401, {"uid": "u-gone", "iat": now, "seen": now}),
        ("a cookie without a session id", 401, {"sid": 7, "iat": now, "seen": now}),
    ]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        for name, expected, session in cases:
            credentials = forged(workspace, **session)
            statuses = []
            for system in systems:
                status, headers, body = await post(http, system, Case(name, 202), credentials)
                statuses.append(status)
                if status == 401:
                    cleared = headers.get("set-cookie", "")
                    require(
                        cleared.startswith("syncgate=") and "Max-Age=0" in cleared,
                        f"{system.label}: {name} clears the cookie",
                    )
                if status == 202 and system.label == "node peer":
                    accepted.append(json.loads(body)["id"])
                    renewed = headers.get("set-cookie", "")
                    value = renewed.split(";", 1)[0].split("=", 1)[1].strip('"')
                    data = json.loads(Fernet(workspace.session_key).decrypt(value.encode()))
                    require(
                        abs(data["session"]["seen"] - now) <= 2 and data["created"] >= now,
                        "node peer: the renewed cookie decrypts in Python, with `seen` now",
                    )
            require(
                statuses == [expected] * len(systems),
                f"{name}: {expected} from each (got {statuses})",
            )
    return accepted


async def close_connections(suffix: str, expected: int) -> int:
    """Close (through the management API) the broker connections whose name ends so, once
    `expected` of them are listed (or after 10 s, whatever is listed then)."""
    closed = 0
    async with aiohttp.ClientSession(headers=MANAGEMENT_AUTH) as http:
        for _ in range(100):  # the management API lists a new connection within seconds
            async with http.get(f"{MANAGEMENT_URL}/api/connections") as response:
                names = [
                    c["name"]
                    for c in await response.json()
                    if str(c.get("user_provided_name", "")).endswith(suffix)
                ]
            if len(names) >= expected:
                break
            await asyncio.sleep(0.1)
        for name in names:
            async with http.delete(
                f"{MANAGEMENT_URL}/api/connections/{name}", headers={"X-Reason": "bench check"}
            ) as response:
                closed += response.status == 204
    return closed


async def check_reconnect(
    channel: AbstractChannel, workspace: Workspace, peer: HttpSystem, credentials: Credentials
) -> list[str]:
    """The broker closes both of the peer's connections; both come back by themselves.
    Returns the ids of the events accepted meanwhile."""
    closed = await close_connections(f" {workspace.name('node.work')}", expected=2)
    require(closed == 2, f"the broker closed the peer's {closed} connections")
    queue = workspace.name("node.work")
    accepted: list[str] = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        status = 0
        for _ in range(100):
            await asyncio.sleep(0.1)
            status, _, body = await post(http, peer, Case("x", 202), credentials)
            if status == 202:
                accepted.append(str(json.loads(body)["id"]))
                if (await queue_counts(channel, queue))[1] == 1:
                    break
        require(status == 202, "the gateway publishes again after its reconnect")
    require((await queue_counts(channel, queue))[1] == 1, "the consumer consumes again")
    return accepted


async def check(
    workspace: Workspace, connection: AbstractConnection, children: list[Child]
) -> None:
    channel = await connection.channel()
    consumer = await start_syncgate_consumer(workspace, connection)
    children.append(consumer)
    syncgate = await start_syncgate(workspace, consumer, workers=1)
    children.extend(syncgate.servers)
    peer = await start_node_peer(workspace, connection, prefetch=64)
    children.extend(peer.children)
    say(f"started syncgate on :{syncgate.port} and the node peer on :{peer.port}")
    credentials = await sign_in(f"http://127.0.0.1:{syncgate.port}", BENCH_EMAIL, BENCH_PASSWORD)
    accepted = await compare([syncgate, peer], credentials)
    accepted += await check_cookies(workspace, [syncgate, peer])
    accepted.append(await check_properties(channel, workspace, peer, credentials))
    accepted += await check_reconnect(channel, workspace, peer, credentials)
    await check_consumer(channel, workspace, peer, accepted)
    await check_revocation(channel, workspace, syncgate, peer)
    started = [
        json.loads(line)
        for line in workspace.log_file("node-peer-consumer").read_text().splitlines()
        if '"msg":"consuming"' in line
    ]
    require(
        started[0]["journal_mode"] == "wal" and started[0]["synchronous"] == 2,
        "the consumer's connection runs WAL with synchronous = FULL",
    )
    lines = (workspace.log_file("node-peer")).read_text().splitlines()
    requests = [json.loads(line) for line in lines if '"msg":"request"' in line]
    fields = {"method", "path", "status", "duration_ms", "request_id"}
    require(
        bool(requests)
        and all(fields <= set(r) for r in requests)
        and sum(1 for r in requests if r["status"] == 202 and r.get("event_id")) >= len(accepted),
        f"one request line per request in the peer's log ({len(requests)} lines)",
    )
    say(f"a request line: {json.dumps(requests[-1])}")


async def main() -> int:
    missing = node_peer_missing()
    if missing:
        say(f"the node peer cannot run: {missing}")
        return 2
    workspace = Workspace.create()
    children: list[Child] = []
    try:
        async with bench_broker(workspace) as connection:
            try:
                await check(workspace, connection, children)
            finally:
                for child in reversed(children):
                    child.stop()
    except CheckFailed as exc:
        say(f"FAILED: {exc}; logs in {workspace.root}")
        return 1
    workspace.remove_files()
    say("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
