"""What the images install is the wheel (Dockerfile.runner: `pip install ".[runner]"`): it must
carry the files the code reads at run time, not only the Python modules."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_templates_migrations_and_datasets(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q"]
        + ["-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("eval_operator-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in ("base", "home", "suite", "run", "compare"):
        assert f"eval_runner/dashboard/templates/{template}.html" in names
    migrations = sorted(n for n in names if n.startswith("eval_api/store/migrations/"))
    assert [Path(n).name for n in migrations] == sorted(
        p.name for p in (ROOT / "api/eval_api/store/migrations").glob("*.sql")
    )
    assert any(n.startswith("eval_runner/datasets/") and n.endswith(".jsonl") for n in names)
