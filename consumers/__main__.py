"""`python -m consumers`, and `syncgate consumer`: load the settings, consume until stopped."""

from __future__ import annotations

import uvloop

from common.logs import configure_logging
from common.process import load_settings, run_main, tune_collector
from consumers.service import serve
from consumers.settings import ConsumerSettings


def main() -> None:
    """Consume until SIGTERM or SIGINT, then drain; StartupError if it cannot start."""
    settings = load_settings(ConsumerSettings)
    configure_logging(settings.log_format, settings.log_level)
    settings.configure_tracing("syncgate-consumer")
    tune_collector()
    uvloop.run(serve(settings))


if __name__ == "__main__":
    run_main(main)
