"""The gateway's settings, read once from `SYNCGATE_*` environment variables."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.amqp import broker_nodes
from common.cloudevents import DEFAULT_SOURCE, EventSource, absolute_uri, public_base_url
from common.logs import LogFormat
from common.stores.backends import RedisOptions
from common.stores.login_failures import LockoutPolicy
from common.stores.runs import DEFAULT_LOCATION as DEFAULT_RUN_STORE
from common.stores.runs import RunStoreLocation
from common.topology import ConsumerTopology, EventsTopology
from common.tracing import TraceSettings
from gateway.client_address import TrustedProxies, parse_trusted_proxies


def parse_session_keys(raw: str) -> list[str]:
    """Comma-separated Fernet keys; the first encrypts, all of them decrypt."""
    keys = [key.strip() for key in raw.split(",") if key.strip()]
    if not keys:
        raise ValueError("at least one key is required; make one with `syncgate keygen`")
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ValueError(
                f"key {position} is not a Fernet key (32 url-safe base64-encoded bytes); "
                "make one with `syncgate keygen`"
            ) from None
    return keys


class GatewaySettings(TraceSettings, BaseSettings):
    # hide_input_in_errors: a ValidationError never quotes a value (a session key, a URL with
    # its password), wherever it is printed or logged.
    model_config = SettingsConfigDict(
        env_prefix="SYNCGATE_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # One node's URL, or a cluster's, comma-separated: common/amqp.py connects to the first
    # that answers and fails over round robin. A secret: a URL may carry a password.
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    exchange: str = "syncgate.events"
    unrouted_exchange: str = "syncgate.unrouted"
    # The consumer's work queue (the consumer's SYNCGATE_QUEUE): its DLQ, `<queue>.dlq`, is
    # what the operators' DLQ page reads.
    queue: str = ConsumerTopology().queue
    # How many messages from the head of a queue the DLQ page reads at most (basic.get has no
    # offset: a page reads every message before it). What lies deeper is counted, not shown.
    dlq_read_depth: int = Field(default=500, ge=1, le=10_000)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # SO_REUSEPORT, so several gateway processes can share one port (the kernel spreads
    # connections between them).
    reuse_port: bool = False

    users_file: Path = Path("users.json")
    app_settings_file: Path = Path("app-settings.toml")
    # The consumer's run store (a SQLite file or a postgresql:// URL), read-only here:
    # GET /api/runs/{id} answers from it. A secret, as in the consumer's settings.
    run_store: RunStoreLocation = SecretStr(str(DEFAULT_RUN_STORE))

    # No default: a key that ships with the code is a key every attacker has.
    session_keys: SecretStr
    cookie_secure: bool = True
    cookie_samesite: Literal["Lax", "Strict"] = "Lax"
    session_idle_timeout: int = Field(default=30 * 60, gt=0)
    session_absolute_timeout: int = Field(default=8 * 60 * 60, gt=0)

    publish_deadline: float = Field(default=5.0, gt=0)
    retry_after: int = Field(default=5, ge=1)
    # How long an Idempotency-Key stands for its event: 24 h covers a client's retries across
    # a long outage or an overnight batch, as payment APIs do. The count bounds the confirmed
    # keys (100k is tens of MB at worst); the oldest go first. Failed attempts keep their
    # whole event for the retry, so they have a byte budget of their own.
    idempotency_window: float = Field(default=24 * 60 * 60, gt=0)
    idempotency_max_keys: int = Field(default=100_000, ge=1)
    idempotency_max_attempt_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    # Time and room for clients (README "Slow clients and overload"); aiohttp bounds none of
    # them. The request line and headers must be in within header_timeout of the request's
    # first byte (of the connection's opening, for its first request); else the connection is
    # closed after a 408. A body must be in within body_timeout of its headers: else 408.
    header_timeout: float = Field(default=10.0, gt=0)
    body_timeout: float = Field(default=30.0, gt=0)
    # Open connections per gateway process; one more is answered 503 and closed at once. The
    # process raises its own RLIMIT_NOFILE soft limit to fit them (gateway/connections.py).
    max_connections: int = Field(default=4096, ge=1)
    # Requests being handled at once per process; one more answers 503 with Retry-After
    # before any session or body work. Sized from the bench (README "Slow clients and
    # overload"): one process's throughput is reached by 64 in flight (about 3,500 req/s on
    # the 2-core bench machine); past that, more in flight only wait longer. 256 keeps that
    # wait near 75 ms at full speed, and under the handling deadline on a machine 20x slower.
    max_in_flight: int = Field(default=256, ge=1)
    # A request's whole time in the gateway, from the start of handling (its wait for the
    # client's body aside, which body_timeout bounds) is at most publish_deadline plus this;
    # then 503 with Retry-After.
    deadline_margin: float = Field(default=1.0, ge=0)
    max_json_depth: int = Field(default=32, ge=2)
    # POST /api/events: a batch holds at most this many events, in a body of at most this
    # many bytes (once inflated): its own limit, above the 64 KiB of every other route.
    events_max_batch: int = Field(default=100, ge=1, le=10_000)
    events_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)

    # The load balancers (addresses or networks, comma-separated: "10.0.0.5, 10.1.0.0/16")
    # whose Forwarded or X-Forwarded-For header names the client (gateway/client_address.py).
    # Empty: trust nobody, and the client is the TCP peer.
    trusted_proxies: str = ""

    # Security (see README "Security"). Origins allowed to send state-changing requests, comma-
    # separated (e.g. "https://app.example.com"); empty means only the gateway's own origin.
    allowed_origins: str = ""
    # A RabbitMQ stream every gateway replays on start and then follows: logged-out sessions.
    revocation_stream: str = "syncgate.revocations"
    # Failed logins allowed before a lockout, per account and per client address; each further
    # failure doubles the lockout, from the base up to the cap.
    login_max_failures: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=20, ge=1)
    login_lockout_base: int = Field(default=30, ge=1)
    login_lockout_max: int = Field(default=15 * 60, ge=1)
    # A key's count (and so its escalation) lasts until a success, or until this long passes
    # with no failure: at least the longest lockout, or a patient guesser gets a fresh budget
    # after every one.
    login_quiet_period: int = Field(default=24 * 60 * 60, ge=1)

    # Redis, for what every gateway must share: Idempotency-Keys and login-failure counts. Unset,
    # they live in this process's memory. A secret: the URL may carry a password.
    redis_url: SecretStr | None = None
    # Prepended to every key this gateway writes, so deployments (or tests) can share a Redis.
    redis_prefix: str = "syncgate:"
    # The bound on each Redis call (the wait for a connection included): then 503.
    redis_timeout: float = Field(default=0.5, gt=0)
    # Per store and gateway process. A call holds a connection for well under a millisecond, so
    # a few serve thousands of requests a second; a burst waits for one (within the timeout).
    redis_max_connections: int = Field(default=16, ge=1)

    # CloudEvents (common/cloudevents.py): the `source` attribute of every event published here,
    # an absolute URI naming this deployment's gateway.
    cloudevents_source: str = DEFAULT_SOURCE
    # The gateway's public URL (e.g. "https://sync.example.com", or with the path prefix a
    # proxy serves it under): every event's `dataschema` is <it>/schemas/<file>, served by
    # GET /schemas/{file}. Unset: `dataschema` is urn:syncgate:schema:<file> (EventSource says
    # why it is never guessed).
    public_base_url: str | None = None

    log_format: LogFormat = "json"
    log_level: str = "INFO"

    @field_validator("cloudevents_source")
    @classmethod
    def _source_is_a_uri(cls, value: str) -> str:
        return absolute_uri(value)

    @field_validator("public_base_url")
    @classmethod
    def _public_base_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # an empty value, as compose passes an unset variable, is none
        return public_base_url(value.strip())

    @field_validator("amqp_url")
    @classmethod
    def _amqp_nodes(cls, value: SecretStr) -> SecretStr:
        broker_nodes(value.get_secret_value())  # the message never quotes the value
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_trusted_proxies(cls, value: str) -> str:
        parse_trusted_proxies(value)
        return value

    @field_validator("session_keys")
    @classmethod
    def _valid_session_keys(cls, value: SecretStr) -> SecretStr:
        parse_session_keys(value.get_secret_value())
        return value

    @field_validator("login_quiet_period")
    @classmethod
    def _quiet_outlasts_lockouts(cls, value: int, info: ValidationInfo) -> int:
        longest = info.data.get("login_lockout_max")
        if longest is not None and value < longest:
            raise ValueError(
                f"must be at least SYNCGATE_LOGIN_LOCKOUT_MAX ({longest} s), or a count would "
                "start over after the longest lockout"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None  # an empty value, as compose passes an unset variable, is no Redis
        # The message never quotes the value: it may carry a password.
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @property
    def redis(self) -> RedisOptions | None:
        """Where the shared stores live; None: in this process's memory."""
        if self.redis_url is None:
            return None
        return RedisOptions(
            url=self.redis_url,
            prefix=self.redis_prefix,
            timeout=self.redis_timeout,
            max_connections=self.redis_max_connections,
        )

    @property
    def account_lockout(self) -> LockoutPolicy:
        return LockoutPolicy(
            max_failures=self.login_max_failures,
            base=self.login_lockout_base,
            cap=self.login_lockout_max,
            quiet=self.login_quiet_period,
        )

    @property
    def address_lockout(self) -> LockoutPolicy:
        return LockoutPolicy(
            max_failures=self.login_max_failures_per_address,
            base=self.login_lockout_base,
            cap=self.login_lockout_max,
            quiet=self.login_quiet_period,
        )

    @cached_property
    def fernet_keys(self) -> list[str]:
        return parse_session_keys(self.session_keys.get_secret_value())

    @cached_property
    def proxies(self) -> TrustedProxies:
        return parse_trusted_proxies(self.trusted_proxies)

    @cached_property
    def origins(self) -> frozenset[str]:
        origins = (origin.strip().rstrip("/") for origin in self.allowed_origins.split(","))
        return frozenset(origin for origin in origins if origin)

    @property
    def event_source(self) -> EventSource:
        return EventSource.of(self.cloudevents_source, self.public_base_url)

    @property
    def handling_deadline(self) -> float:
        """The bound on a request's time in the gateway (its body's arrival aside)."""
        return self.publish_deadline + self.deadline_margin

    @property
    def topology(self) -> EventsTopology:
        return EventsTopology(exchange=self.exchange, unrouted=self.unrouted_exchange)
