"""`make bench-early-stop`: how much of a run execution.earlyStop pays for (issue 20).

`eval-runner run` (the local path, which decides as the operator does) against the local model
server, on 5,000 arithmetic samples of which the server answers a known share wrong:

- true accuracy 0.90 against the threshold `exact_match >= 0.80`, over 20 seeds of the asking
  order: the median fraction of the samples asked (goal: at most 15%) and whether every
  verdict was right (Passed);
- true accuracy 0.80, at the threshold (undecidable): each run should go to the end.

    python bench/early_stop.py [--samples 5000] [--seeds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "api"), str(ROOT / "runner"), str(ROOT)]

from tests.support.model_server import ModelServer  # noqa: E402

THRESHOLD = "exact_match >= 0.80"


def records(samples: int) -> list[dict[str, str]]:
    return [{"input": f"What is {i} + {i + 1}?", "target": str(2 * i + 1)} for i in range(samples)]


def wrong_share(samples: int, every: int) -> list[str]:
    """Every `every`-th question answered wrong: accuracy 1 - 1/every."""
    return [f"What is {i} + {i + 1}?" for i in range(0, samples, every)]


def run(server: ModelServer, data: Path, samples: int, seed: int, tmp: Path) -> dict[str, Any]:
    manifest = {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "Evaluation",
        "metadata": {"name": "bench-early-stop"},
        "spec": {
            "model": {"name": "bench", "baseURL": server.base_url, "maxConcurrency": 8},
            "dataset": {"configMapRef": {"name": "data", "key": "data.jsonl"}},
            "task": {"promptTemplate": "{{ input }}", "scorers": [{"type": "exact_match"}]},
            "execution": {"earlyStop": {"when": "Verdict", "seed": seed}},
            "thresholds": [THRESHOLD],
        },
    }
    path = tmp / f"evaluation-{seed}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["PYTHONPATH"] = os.pathsep.join(str(ROOT / p) for p in ("api", "runner", "operator"))
    done = subprocess.run(
        [sys.executable, "-m", "eval_runner", "run", str(path), "--dataset-file", str(data),
         "--output", "json", "--no-progress"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    if done.returncode not in (0, 1):
        raise SystemExit(f"eval-runner run failed ({done.returncode}): {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    asked = report["progress"]["completed"] + report["progress"]["failed"]
    return {"asked": asked, "of": samples, "passed": report["passed"], "report": report}


def series(samples: int, seeds: int, every: int, tmp: Path) -> list[dict[str, Any]]:
    data = tmp / f"data-{every}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records(samples)))
    with ModelServer(wrong=wrong_share(samples, every), record=False).in_thread() as server:
        return [run(server, data, samples, seed, tmp) for seed in range(seeds)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/early_stop.py", description=__doc__)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-early-stop-") as name:
        tmp = Path(name)
        above = series(args.samples, args.seeds, 10, tmp)  # accuracy 0.90
        fractions = [r["asked"] / r["of"] for r in above]
        right = sum(r["passed"] is True for r in above)
        print(
            f"accuracy 0.90, {THRESHOLD}, {args.samples} samples, {args.seeds} seeds: median "
            f"{statistics.median(fractions):.1%} of the samples asked (min {min(fractions):.1%}, "
            f"max {max(fractions):.1%}; goal <= 15%); verdict right (Passed) in {right} of "
            f"{len(above)}"
        )
        at = series(args.samples, args.seeds, 5, tmp)  # accuracy 0.80: undecidable
        to_end = sum(r["asked"] == r["of"] for r in at)
        decided = [r for r in at if r["asked"] < r["of"]]
        print(
            f"accuracy 0.80 (at the threshold): {to_end} of {len(at)} runs went to the end"
            + (
                f"; {len(decided)} stopped early (each a wrong verdict; at most 5% expected)"
                if decided
                else ""
            )
        )
    return 0 if right == len(above) else 1


if __name__ == "__main__":
    sys.exit(main())
