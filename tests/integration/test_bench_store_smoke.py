"""A small-N run of bench/store.py (the second half of `make bench`): it runs end to end and
prints what it promises. No timing is asserted (that is the benchmark's job, on a quiet
machine); its own checks (rows all stored, resumed and warm runs identical to the clean and
cold ones, nothing asked warm) fail it with exit code 1."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_bench_store_smoke() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "store.py"),
            "--rows",
            "3000",
            "--batch-rows",
            "500,2000",
            "--samples",
            "300",
            "--latency",
            "0.01",
            "--concurrency",
            "16",
            "--cache-samples",
            "200",
            "--cache-latency",
            "0.05",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for line in (
        r"store write throughput: 3000 rows into PostgreSQL on loopback",
        r"batch 500: [0-9,]+ rows/s",
        r"best: [0-9,]+ rows/s \(goal >= 50,000\)",
        r"resume overhead: N=300 L=10 ms C=16, 270 of 300 samples already stored",
        r"ratio resumed/clean wall: [0-9.]+",
        r"model requests of the resumed run: 30 \(the 30 not stored\)",
        r"results identical to the clean run: yes",
        r"warm: wall [0-9.]+ s \(start-up [0-9.]+ s\), 0 model requests, 200 cache hits, cost \$0",
        r"ratio cold/warm wall: [0-9.]+x",
        r"scores identical, nothing asked, saving = the cold cost: yes",
    ):
        assert re.search(line, out), f"{line!r} not in:\n{out}"
