"""Errors that stop a shard: those retrying cannot fix, and those only a later attempt can."""

from __future__ import annotations


class PermanentError(Exception):
    """Bad input (dataset, template, config): the shard fails at once with exit code 3, so the
    Job does not retry it, and the operator shows `reason` and `message` in a condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class RetryableError(Exception):
    """Something the shard depends on is away for longer than it waits (the store): the shard
    stops with a retryable exit code, and the Job's next attempt resumes where it stopped."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
