"""`eval-runner compare-runs`: the paired comparison of two stored runs, the Job `kubectl evals
compare` runs (the command itself is eval_runner.cellreport.cmd_compare_runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval_runner.cli.common import DEFAULT_TERMINATION_LOG


def add_parser(commands: Any) -> None:
    pair = commands.add_parser(
        "compare-runs",
        help="compare two stored runs sample by sample (kubectl evals compare runs it as a Job)",
        description=(
            "The paired comparison of two runs in the store (candidate minus baseline), per "
            "scorer: a one-sided test of 'worse by more than maxDrop' (McNemar's exact test, and "
            "Tango's score test at a margin, for 0/1 scores; a paired t-test of the mean "
            "otherwise), a seeded paired bootstrap interval and the minimum detectable effect; "
            "written to the termination log."
        ),
    )
    for flag in ("--baseline-uid", "--baseline-run", "--candidate-uid", "--candidate-run"):
        pair.add_argument(flag, required=True)
    pair.add_argument("--max-drop", default="0", help='largest drop tolerated (default "0")')
    pair.add_argument("--alpha", default="0.05", help='significance level (default "0.05")')
    pair.add_argument("--termination-log", type=Path, default=Path(DEFAULT_TERMINATION_LOG))
    pair.set_defaults(command=_compare_runs)


# Its statistics (scipy, numpy: ~75 MB and a second to import) are loaded when the command
# runs, not by every process of the image (a shard, the dashboard).
def _compare_runs(args: Any) -> int:
    from eval_runner.cellreport import cmd_compare_runs

    return cmd_compare_runs(args)
