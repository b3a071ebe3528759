"""The consumer's settings, read once from `SYNCGATE_*` environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.amqp import broker_nodes
from common.logs import LogFormat
from common.stores.runs import DEFAULT_LOCATION as DEFAULT_RUN_STORE
from common.stores.runs import RunStoreLocation
from common.topology import ConsumerTopology, EventsTopology
from common.tracing import TraceSettings

# The production topology's names and limits, the defaults of the settings that change them.
_DEFAULT = ConsumerTopology()


class ConsumerSettings(TraceSettings, BaseSettings):
    # hide_input_in_errors: a ValidationError never quotes a value (a URL with its password).
    model_config = SettingsConfigDict(
        env_prefix="SYNCGATE_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # One node's URL, or a cluster's, comma-separated (common/amqp.py); a secret.
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    exchange: str = _DEFAULT.events.exchange
    unrouted_exchange: str = _DEFAULT.events.unrouted
    queue: str = _DEFAULT.queue
    binding: str = _DEFAULT.binding
    dead_letter_exchange: str = _DEFAULT.dead_letter_exchange
    # The broker's management API (http://user:password@host:15672/), which on RabbitMQ 4.x
    # sets the policy that lifts the DLQ's and the unrouted queue's delivery limit
    # (common.broker_version); unused on 3.x. A secret: the URL carries a password.
    management_url: SecretStr | None = None
    prefetch: int = Field(default=64, ge=1, le=65535)
    max_attempts: int = Field(default=_DEFAULT.max_attempts, ge=1, le=20)
    retry_base_delay: float = Field(default=_DEFAULT.retry_base_delay, gt=0)
    delivery_limit: int = Field(default=_DEFAULT.delivery_limit, ge=1)
    # A SQLite file, or a postgresql:// URL that consumers on several hosts share; a secret
    # (a URL may carry a password): shown only through common.stores.backends.describe.
    run_store: RunStoreLocation = SecretStr(str(DEFAULT_RUN_STORE))
    # How long a commit waits for more messages to share it (and its fsync and its ack),
    # unless every message the prefetch allows is already waiting; 0 commits after one turn of
    # the loop. Only the ack waits, never the publisher: 20 ms rather than 5 cut the consumer's
    # and the broker's CPU per event by about a tenth at c=64 (README, Benchmarks).
    commit_delay: float = Field(default=0.02, ge=0, le=1.0)
    # Prometheus metrics on http://<host>:<port>/metrics; port 0 turns them off. Loopback by
    # default: the endpoint has no authentication.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    # How often syncgate_dlq_messages is sampled (a passive declare of the DLQ); 0 turns it off.
    metrics_dlq_interval: float = Field(default=15.0, ge=0)

    # Follow-up events (confluence/app.sync.completed), published after the run store's
    # commit: tries per event, and the bound on each try's confirm (consumers/follow_ups.py).
    follow_up_attempts: int = Field(default=3, ge=1, le=10)
    follow_up_timeout: float = Field(default=5.0, gt=0)

    log_format: LogFormat = "json"
    log_level: str = "INFO"

    @field_validator("amqp_url")
    @classmethod
    def _amqp_nodes(cls, value: SecretStr) -> SecretStr:
        broker_nodes(value.get_secret_value())  # the message never quotes the value
        return value

    @property
    def topology(self) -> ConsumerTopology:
        return ConsumerTopology(
            events=EventsTopology(exchange=self.exchange, unrouted=self.unrouted_exchange),
            queue=self.queue,
            binding=self.binding,
            dead_letter_exchange=self.dead_letter_exchange,
            max_attempts=self.max_attempts,
            retry_base_delay=self.retry_base_delay,
            delivery_limit=self.delivery_limit,
        )
