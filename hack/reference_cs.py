"""`make reference-cs`: confseq's confidence sequences on a grid of inputs, kept as a golden file.

confseq (CONFSEQ_VERSION, Howard's implementation of "Time-uniform, nonparametric, nonasymptotic
confidence sequences"; C++ with Boost, built in its own venv, .confseq/venv) computes
`bernoulli_confidence_interval(successes, trials, alpha, t_opt, alpha_opt)` for every input of
the grid below; tests/parity/confseq.json keeps inputs and bounds. tests/unit/test_sequential.py
holds eval_api.sequential.confidence_sequence to them within 1e-9.

    .confseq/venv/bin/python hack/reference_cs.py
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

from confseq import boundaries

CONFSEQ_VERSION = "0.0.11"
GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "parity" / "confseq.json"


def grid() -> list[dict[str, float]]:
    """Sample sizes from 1 to 100,000; means at and near 0 and 1, at thresholds people gate
    on, and sums that are not whole (graded scores); levels and tunings a run may use."""
    cases = []
    for trials in (1, 2, 5, 10, 37, 100, 600, 1000, 5000, 100_000):
        for mean in (0.0, 0.03, 0.5, 0.8, 0.9, 0.97, 1.0):
            for alpha in (0.05, 0.01, 0.2):
                for t_opt in (30, 500, 5000):
                    whole = round(mean * trials)
                    for successes in sorted({whole, mean * trials}):
                        cases.append(
                            {"successes": successes, "trials": trials, "alpha": alpha,
                             "t_opt": t_opt, "alpha_opt": alpha}
                        )  # fmt: skip
    return cases


def main() -> int:
    found = importlib.metadata.version("confseq")
    if found != CONFSEQ_VERSION:
        print(f"confseq {found} is installed; the golden file is for {CONFSEQ_VERSION}")
        return 2
    rows = []
    for case in grid():
        lower, upper = boundaries.bernoulli_confidence_interval(
            case["successes"], case["trials"], case["alpha"], case["t_opt"], case["alpha_opt"]
        )
        rows.append({**case, "lower": lower, "upper": upper})
    GOLDEN.write_text(
        json.dumps({"confseq": CONFSEQ_VERSION, "cases": rows}, indent=0, sort_keys=True) + "\n"
    )
    print(f"wrote {len(rows)} intervals of confseq {CONFSEQ_VERSION} to {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
