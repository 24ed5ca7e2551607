"""`eval-runner migrate`: the store's schema migrations and the cache check, as an EvalSuite's
Job runs them (the command itself is eval_runner.stackcheck.cmd_migrate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval_api import environment
from eval_runner.cli.common import DEFAULT_TERMINATION_LOG
from eval_runner.stackcheck import cmd_migrate


def add_parser(commands: Any) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="apply the store's schema migrations and check the cache (an EvalSuite's Job)",
        description=(
            "Apply the shipped schema migrations to the store of the environment "
            f"({environment.STORE_URI}, or {environment.STORE_HOST} and its parts) under an "
            f"advisory lock, ping the cache ({environment.CACHE_URL}), and write the report to "
            "the termination log. Exit 0 done, 3 when retrying cannot help, 1 to be retried."
        ),
    )
    migrate.add_argument("--termination-log", type=Path, default=Path(DEFAULT_TERMINATION_LOG))
    migrate.set_defaults(command=lambda args: cmd_migrate(args.termination_log))
