"""`make reference-cs`: confseq's confidence sequences on a grid of inputs, kept as a golden file.

confseq (CONFSEQ_VERSION, Howard's implementation of "Time-uniform, nonparametric, nonasymptotic
confidence sequences"; C++ with Boost, built in its own venv, .confseq/venv) computes
`bernoulli_confidence_interval(successes, trials, alpha, t_opt, alpha_opt)` for every input of
the grid below, the empirical-Bernstein boundary `gamma_exponential_mixture_bound(v, alpha, v_opt,
c, alpha_opt)` on a second grid, and `conjmix_empbern_lower_cs` on a few seeded streams of
paired values; tests/parity/confseq.json keeps inputs and results. tests/unit/test_sequential.py
and test_sequential_bernstein.py hold eval_api.sequential to them within 1e-9.

    .confseq/venv/bin/python hack/reference_cs.py
"""

from __future__ import annotations

import importlib.metadata
import json
import random
import sys
from pathlib import Path

from confseq import boundaries
from confseq.conjmix_bounded import conjmix_empbern_lower_cs

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


def bernstein_grid() -> list[dict[str, float]]:
    """Variance processes from none to a 100,000-sample run's worst; scales 1 (values in [0, 1])
    and 2 (differences in [-1, 1]); the levels and tunings of a gate."""
    cases = []
    for v in (1e-6, 0.01, 0.5, 3.0, 25.0, 250.0, 2500.0, 25_000.0):
        for alpha in (0.05, 0.01, 0.025, 0.2):
            for v_opt in (0.75, 12.5, 125.0):
                for c in (1.0, 2.0):
                    cases.append(
                        {"v": v, "alpha": alpha, "v_opt": v_opt, "c": c, "alpha_opt": alpha}
                    )
    return cases


def streams() -> list[dict[str, object]]:
    """Seeded streams of paired values (candidate - baseline + 1) / 2 of 0/1 scores: mostly 1/2,
    some 0 and 1; and one of graded values in [0, 1]. Each starts with a discordant pair:
    confseq cannot bound a variance process of 0 (its search for the boundary starts at v)."""
    rng = random.Random(20)
    found = []
    for worse, better in ((0.06, 0.04), (0.2, 0.02), (0.01, 0.01)):
        values = [0.0] + [0.0 if (u := rng.random()) < worse else 1.0 if u < worse + better else 0.5
                          for _ in range(299)]  # fmt: skip
        found.append({"values": values, "v_opt": 7.5, "alpha": 0.025})
    found.append({"values": [rng.random() for _ in range(300)], "v_opt": 25.0, "alpha": 0.05})
    for stream in found:
        stream["lower"] = [float(x) for x in conjmix_empbern_lower_cs(
            stream["values"], v_opt=stream["v_opt"], alpha=stream["alpha"])]  # fmt: skip
    return found


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
    bounds = []
    for case in bernstein_grid():
        bound = boundaries.gamma_exponential_mixture_bound(
            case["v"], case["alpha"], case["v_opt"], case["c"], case["alpha_opt"]
        )
        bounds.append({**case, "bound": bound})
    golden = {"confseq": CONFSEQ_VERSION, "cases": rows, "bernstein": bounds, "streams": streams()}
    GOLDEN.write_text(json.dumps(golden, indent=0, sort_keys=True) + "\n")
    print(
        f"wrote {len(rows)} intervals, {len(bounds)} empirical-Bernstein bounds and "
        f"{len(golden['streams'])} streams of confseq {CONFSEQ_VERSION} to {GOLDEN}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
