"""The shard's termination message, kept current while the shard runs.

The kubelet reads the termination-message file when the container ends, however it ends:
exit, crash, SIGKILL, OOM. A shard writes its summary there at the end, and also while it
runs: before every request it sends under a budget (with the worst case of what is in flight),
and otherwise every second. So a killed attempt still reports what it used, and a retry's
budget share and the run's usage count it.

Each write is one pwrite at offset 0 of the whole message, padded with spaces to the longest
message written so far: the file never holds a half-old, half-new message (a JSON parser
ignores the trailing spaces), and no truncate leaves it empty if the kill comes in between.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import structlog

from eval_api.shard import TERMINATION_MESSAGE_LIMIT, ShardSummary
from eval_runner.secrets import SECRETS

log = structlog.get_logger()


class TerminationLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._size = 0
        self._last = ""
        try:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        except OSError as err:
            log.warning("cannot write the termination log", path=str(path), error=str(err))
            self._fd = None

    def write(self, summary: ShardSummary, reserved: Decimal = Decimal(0)) -> str:
        """Put `summary` (with what is in flight) in the file; returns the message."""
        update = {"reserved_usd": format(reserved.normalize(), "f") if reserved else None}
        message = SECRETS.redact(summary.model_copy(update=update).to_message())
        if self._fd is not None and message != self._last:
            data = message.encode().ljust(self._size)[:TERMINATION_MESSAGE_LIMIT]
            os.pwrite(self._fd, data, 0)
            self._size = max(self._size, len(data))
            self._last = message
        return message

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
