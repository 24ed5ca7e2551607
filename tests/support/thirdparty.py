"""The upstream CRDs of the optional platforms (../shared/thirdparty-crds: cert-manager and the
Prometheus Operator), as schemas the tests validate the operator's objects against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

THIRDPARTY = Path(__file__).resolve().parents[3] / "shared" / "thirdparty-crds"


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
    if not THIRDPARTY.is_dir():
        pytest.skip(f"the upstream CRDs are not at {THIRDPARTY} (shared/thirdparty-crds)")
    for path in THIRDPARTY.glob("*.yaml"):
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
