"""`eval-runner cell-report`: an EvalSuite's cell report Job (the command itself is
eval_runner.cellreport.cmd_cell_report).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval_runner.cli.common import DEFAULT_TERMINATION_LOG


def add_parser(commands: Any) -> None:
    report = commands.add_parser(
        "cell-report",
        help="report EvalSuite matrix cells' runs from the store (an EvalSuite's Job)",
        description=(
            "For each cell asked (--cell-run, once per cell, on one store connection): record "
            "its succeeded run in the store, measure its latency percentiles, and compare it "
            "sample by sample with its baseline run; write the reports (what the suite's "
            "status keeps of each) to the termination log. Exit 0 done, 3 when retrying "
            "cannot help, 1 to be retried."
        ),
    )
    for flag in ("--namespace", "--suite", "--suite-run"):
        report.add_argument(flag, required=True)
    report.add_argument(
        "--cell-run",
        nargs=3,
        action="append",
        required=True,
        metavar=("CELL", "EVALUATION_UID", "RUN"),
        help="a cell (model/task), its Evaluation's uid and its run; once per cell",
    )
    report.add_argument(
        "--baseline", default="none", help="none, previous, or suite-run:<id> (default none)"
    )
    report.add_argument("--max-drop", default="0", help='largest drop tolerated (default "0")')
    report.add_argument("--alpha", default="0.05", help='significance level (default "0.05")')
    report.add_argument("--termination-log", type=Path, default=Path(DEFAULT_TERMINATION_LOG))
    report.set_defaults(command=_cell_report)


# Its statistics (scipy, numpy: ~75 MB and a second to import) are loaded when the command
# runs, not by every process of the image (a shard, the dashboard).
def _cell_report(args: Any) -> int:
    from eval_runner.cellreport import cmd_cell_report

    return cmd_cell_report(args)
