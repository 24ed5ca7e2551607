"""`eval-runner dashboard` as a process of its own, over a test PostgreSQL server, logged in as
the read-only role the seeds make (tests/support/results_seed.py callers create it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
READER = "evals_dashboard"
READER_PASSWORD = "reader-Pa55-word-not-to-be-shown"  # noqa: S105 - the tests' own


def spawn_dashboard(
    pg_port: int, dbname: str, *args: str, output: IO[Any] | int = subprocess.DEVNULL, **env: str
) -> tuple[subprocess.Popen, int]:
    """The process and its port; `env` adds to (or replaces) the store's variables."""
    port = free_port()
    environment = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("api", "runner")),
        "EVAL_STORE_HOST": "127.0.0.1",
        "EVAL_STORE_PORT": str(pg_port),
        "EVAL_STORE_DBNAME": dbname,
        "EVAL_STORE_USER": READER,
        "EVAL_STORE_PASSWORD": READER_PASSWORD,
        "EVAL_STORE_SSLMODE": "disable",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "eval_runner", "dashboard", "--host", "127.0.0.1"]
        + ["--port", str(port), *args],
        env=environment,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    return process, port
