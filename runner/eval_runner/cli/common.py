"""What several eval-runner commands share: the exit code of a crash, the termination log's
path, logging with every secret redacted, the judges' keys, the CA bundle and the cache TTL
from the environment.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, TextIO

import structlog

from eval_api import environment
from eval_api.environment import judge_key_env
from eval_api.v1alpha1.evaluation import Evaluation
from eval_runner.cache import DEFAULT_TTL_SECONDS, CacheSettingsError
from eval_runner.secrets import SECRETS, read_key

EXIT_CRASHED = 1  # unexpected error in a pod: the Job retries the index
DEFAULT_TERMINATION_LOG = "/dev/termination-log"


def _redact_event(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """The last processor before rendering: no key leaves in any value, however nested."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return SECRETS.redact(value)
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [clean(item) for item in value]
        return value

    return {key: clean(value) for key, value in event.items()}


def configure_logging(stream: TextIO, *, json_logs: bool, level: int = logging.INFO) -> None:
    # Tracebacks never show local variables: the key is a local of the frames that call the
    # model. They are rendered to plain values first, so the redaction sees their text.
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    exceptions: Any = (
        structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        if json_logs
        else structlog.processors.format_exc_info
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            exceptions,
            _redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )


def judge_api_keys(evaluation: Evaluation) -> list[str | None]:
    """The judges' keys, in the order of the llm_judge scorers (as the Job builder mounts them)."""
    judges = sum(1 for s in evaluation.spec.task.scorer_list if s.judge is not None)
    names = [judge_key_env(index) for index in range(judges)]
    return [read_key(name, os.environ.get(name)) for name in names]


def ca_bundle() -> Path | None:
    value = os.environ.get(environment.CA_BUNDLE)
    return Path(value) if value else None


def cache_ttl_seconds() -> int:
    value = os.environ.get(environment.CACHE_TTL_SECONDS) or str(DEFAULT_TTL_SECONDS)
    if not value.isdigit() or int(value) < 1:
        raise CacheSettingsError(
            f"{environment.CACHE_TTL_SECONDS}={value!r} is not a whole number of seconds"
        )
    return int(value)
