"""Exceptions a handler raises to tell `settle` what to do with its message (no broker here)."""


class HandBack(Exception):
    """Raised in a handler that gives its message back on purpose (its agent is stopping)."""


class RetryLater(Exception):
    """Raised by a handler that is early, not failing (what it needs is about to exist)."""

    def __init__(self, reason: str, delay_s: float = 0.2) -> None:
        super().__init__(reason)
        self.delay_s = delay_s
