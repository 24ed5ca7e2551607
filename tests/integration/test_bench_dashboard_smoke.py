"""A small run of bench/dashboard.py (`make bench-dashboard`): it runs end to end and prints
what it promises. No timing is asserted (the benchmark's job, on a quiet machine); its own
checks (the leaderboard's numbers are the seeded ones, no answer but 200) fail it with exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_bench_dashboard_smoke() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "dashboard.py"), "--rows", "20000"]
        + ["--seconds", "1", "--concurrency", "4", "--no-goals"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "seeded 20,000 sample rows" in out
    for line in ("leaderboard", "samples page of 50", "samples page of 50 (wrong only)"):
        assert any(row.strip().startswith(line + " ") for row in out.splitlines()), out
    assert "first leaderboard answer (cold)" in out
    assert " errors" not in out, out
