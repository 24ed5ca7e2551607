"""The upstream CRDs of the optional platforms (cert-manager and the Prometheus Operator), as
schemas the tests validate the operator's objects against and as CRDs installed into the emulator.

Where they are is hack/thirdparty_crds.py's to say (EVAL_THIRDPARTY_CRDS, ../shared, or what
`make tools` fetched); a test that needs them and finds none skips with one line saying how."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

_spec = importlib.util.spec_from_file_location(
    "thirdparty_crds", Path(__file__).resolve().parents[2] / "hack" / "thirdparty_crds.py"
)
locator = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(locator)


def thirdparty_crds() -> Path:
    """The folder holding every pinned upstream CRD; the calling test skips when there is none."""
    folder = locator.find_folder()
    if folder is None and locator.SHARED.parent.is_dir():
        # CI has ../shared: there, a missing or changed folder is a failure, never a skip.
        pytest.fail(f"{locator.SHARED} is missing files of hack/thirdparty-crds.lock or differs")
    if folder is None:
        places = ", ".join(str(p) for p in locator.candidates())
        pytest.skip(
            f"no upstream cert-manager/Prometheus Operator CRDs in {places}: {locator.HOW_TO_GET}"
        )
    return folder


def _python_patterns(node: Any) -> Any:
    """Go's regexp takes an inline flag after ^ ('^(?i)...'), Python's only at the start."""
    if isinstance(node, dict):
        found = {k: _python_patterns(v) for k, v in node.items()}
        pattern = found.get("pattern")
        if isinstance(pattern, str) and pattern.startswith("^(?i)"):
            found["pattern"] = "(?i)^" + pattern[5:]
        return found
    if isinstance(node, list):
        return [_python_patterns(v) for v in node]
    return node


def upstream_schema(kind: str) -> dict[str, Any]:
    """The v1 schema of an upstream kind (the test skips when the folder is absent)."""
    for path in thirdparty_crds().glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
            return _python_patterns(version["schema"]["openAPIV3Schema"])
    raise AssertionError(f"no CRD of {kind}")


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the schema does not know (what the API server would prune): --strict's check."""
    found: list[str] = []
    if isinstance(obj, dict) and "properties" in schema:
        for key, value in obj.items():
            if key not in schema["properties"]:
                if path == "" and key in ("apiVersion", "kind", "metadata"):
                    continue
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(value, schema["properties"][key], f"{path}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found
