"""The consumer's settings, read once from `SYNCGATE_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from syncgate.logs import LogFormat
from syncgate.topology import EventsTopology


class ConsumerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SYNCGATE_", extra="ignore", frozen=True)

    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    exchange: str = "syncgate.events"
    unrouted_exchange: str = "syncgate.unrouted"
    queue: str = "syncgate.confluence-sync"
    binding: str = "confluence.#"
    dead_letter_exchange: str = "syncgate.dlx"
    prefetch: int = Field(default=64, ge=1, le=65535)
    max_attempts: int = Field(default=5, ge=1, le=20)
    retry_base_delay: float = Field(default=1.0, gt=0)
    # A backstop against crash loops: the broker dead-letters a message after this many
    # deliveries even if the consumer never gets to settle it.
    delivery_limit: int = Field(default=20, ge=1)
    run_store: Path = Path("syncgate-runs.sqlite3")
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

    log_format: LogFormat = "json"
    log_level: str = "INFO"

    @property
    def topology(self) -> EventsTopology:
        return EventsTopology(exchange=self.exchange, unrouted=self.unrouted_exchange)

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dlq"

    def retry_queue(self, attempt: int) -> str:
        # The delay is in the name: a queue's TTL cannot change, so a new delay is a new queue.
        return f"{self.queue}.retry.{self.retry_delay_ms(attempt)}ms"

    def retry_delay_ms(self, attempt: int) -> int:
        """Exponential backoff: base, 2 x base, 4 x base, ..."""
        return int(self.retry_base_delay * 1000 * 2 ** (attempt - 1))
