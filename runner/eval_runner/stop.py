"""A shard's early stop (execution.earlyStop): set once, by the progress server on the
operator's word (POST /stop) or by a local run's own decision; the workers read it before
each new sample."""

from __future__ import annotations

import structlog

log = structlog.get_logger()


class StopSignal:
    def __init__(self) -> None:
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            log.info("stopping early: no new sample starts", reason=reason)
