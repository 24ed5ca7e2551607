"""A small-N run of `make bench`: it runs end to end and prints what it promises.

No timing is asserted (that is the benchmark's job, on a quiet machine); the fault run's
scores must equal the clean run's, which bench/run.py also checks (exit code 1 otherwise).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--samples",
            "200",
            "--latency",
            "0.01",
            "--concurrency",
            "16",
            "--truncated",
            "0.02",
            "--provider-rpm",
            "100",
            "--provider-tpm",
            "3000",
            "--provider-window",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for line in (
        r"clean run: N=200 L=10 ms C=16 transport=aiohttp \d+\.\d+",
        r"start-up: [0-9.]+ s \(not in the wall: process spawn -> first request",
        r"wall: [0-9.]+ s \(first request -> last sample scored\)",
        r"physical limit N\*L/C: 0\.125 s",
        r"ratio wall/limit: [0-9.]+",
        r"runner CPU: [0-9.]+ ms/sample",
        r"fault run: 20% 429 \(Retry-After: 1\), 5% 500, 2% timeouts",
        r"ratio of scores, exact_match: 1\.000000",
        r"ratio of scores, numeric: 1\.000000",
        r"scores identical to the clean run: yes",
        r"samples: 200 scored, 0 errored",
        r"retries: .*http_429=\d+.*\(total \d+\)",
        r"adaptive concurrency: gauge minimum \d+ of 16, \d+ cuts",
        r"provider-like run: buckets of 100 requests and 3000 tokens per 1 s",
        r"wall: [0-9.]+ s; the buckets allow [0-9.]+ s",
        r"ratio wall/allowed: [0-9.]+",
        r"answered 429: \d+ of \d+ requests \([0-9.]+%\)",
        r"200 scored, 0 errored; scores identical to the clean run: yes",
    ):
        assert re.search(line, out), f"{line!r} not in:\n{out}"
