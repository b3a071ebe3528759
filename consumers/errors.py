"""What a handler raises to choose how its message is settled.

Any other exception counts as retryable: a handler that did not expect a failure should get
another chance before its event is parked in the dead-letter queue.
"""


class RetryableError(Exception):
    """Try again later, up to the configured number of attempts."""


class NonRetryableError(Exception):
    """This event can never succeed: dead-letter it now."""
