"""The eval-runner command: `run` a manifest locally, or run one `shard` inside a Job's pod.

main() is the console script's entry point; each command is a module of its own, with its
arguments (add_parser) and what it does: run, shard, migrate, cell_report, compare_runs, and
eval_runner.dashboard.cli for `dashboard`. manifest reads manifest files, output prints what
`run` found, and common holds what several commands share.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import NoReturn

from eval_runner.cli import cell_report, compare_runs, migrate, run, shard
from eval_runner.cli.common import EXIT_CRASHED
from eval_runner.dashboard import cli as dashboard_cli
from eval_runner.secrets import SECRETS


def main(argv: list[str] | None = None) -> int:
    # A password in a --store or --cache URL is redacted from everything, argparse's own
    # errors included (they repeat the arguments they could not parse).
    for arg in sys.argv[1:] if argv is None else argv:
        SECRETS.add_url(arg.partition("=")[2] if arg.startswith("--") else arg)
    args = _parser().parse_args(argv)
    try:
        return int(args.command(args))
    except KeyboardInterrupt:
        return 130
    except Exception:
        # Never Python's own report: it would print whatever an exception's text holds.
        report = "error: the runner crashed\n" + traceback.format_exc()
        print(SECRETS.redact(report), file=sys.stderr)
        return EXIT_CRASHED


class _Parser(argparse.ArgumentParser):
    """argparse, its error messages redacted."""

    def error(self, message: str) -> NoReturn:
        super().error(SECRETS.redact(message))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="eval-runner", description="Run model evaluations (evals.io/v1alpha1 Evaluation)."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for command in (run, shard, migrate, cell_report, compare_runs, dashboard_cli):
        command.add_parser(commands)
    return parser
