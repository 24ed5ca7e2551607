"""Command-line tools the tests run: helm and kubectl.

`make tools` (hack/install-tools.sh) puts pinned builds into .tools/bin; HELM and KUBECTL may
name other binaries. A missing tool fails the test that needs it, with the command to fix it:
a chart test that silently skipped would hide a broken chart.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / ".tools" / "bin"


def tool(name: str) -> str:
    """Path of `name`: $NAME (upper case), else .tools/bin/name, else PATH."""
    candidates = [os.environ.get(name.upper()), str(TOOLS_BIN / name), shutil.which(name)]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        f"{name} not found (looked at ${name.upper()}, {TOOLS_BIN}, PATH): "
        "run `make tools` (hack/install-tools.sh) to install the pinned helm and kubectl",
        pytrace=False,
    )
