"""Every typed key the gateway stores on the app or on a request, in one place."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from common.stores.runs import RunReader
from gateway.app_settings import AppSettingsProvider
from gateway.audit import AuditTrail
from gateway.dead_letters import OperatorQueues
from gateway.deadlines import InFlight, RequestBudget
from gateway.idempotency import IdempotencyCache
from gateway.identity import SignedIn
from gateway.login_limits import LoginLimits
from gateway.metrics import GatewayMetrics
from gateway.publisher import EventPublisher
from gateway.revocation import RevocationList
from gateway.settings import GatewaySettings
from gateway.users import UserStore

Clock = Callable[[], float]

SETTINGS = web.AppKey("settings", GatewaySettings)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
USERS = web.AppKey("users", UserStore)
APP_SETTINGS = web.AppKey("app_settings", AppSettingsProvider)
PUBLISHER = web.AppKey("publisher", EventPublisher)
IDEMPOTENCY = web.AppKey("idempotency", IdempotencyCache)
REVOCATIONS = web.AppKey("revocations", RevocationList)
LOGIN_LIMITS = web.AppKey("login_limits", LoginLimits)
METRICS = web.AppKey("metrics", GatewayMetrics)
RUNS = web.AppKey("runs", RunReader)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
OPERATOR_QUEUES: web.AppKey[OperatorQueues] = web.AppKey("operator_queues")
AUDIT = web.AppKey("audit", AuditTrail)

REQUEST_ID = web.RequestKey("request_id", str)
SIGNED_IN = web.RequestKey("signed_in", SignedIn)
BUDGET = web.RequestKey("budget", RequestBudget)
