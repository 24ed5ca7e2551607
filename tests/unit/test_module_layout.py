"""The shape of the source tree, read with ast (nothing is imported): the runner's pipeline and
store stay out of import cycles, and the API's and the CLI's modules stay a size a reader can
find their way in (they were split from one 2,500-line and one 1,100-line file)."""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "runner"
# The largest module of each package is about two thirds of this.
MAX_LINES = 600


def _modules(source_root: Path, package: str) -> dict[str, Path]:
    modules = {}
    for path in (source_root / package).rglob("*.py"):
        parts = list(path.relative_to(source_root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of `modules` that `name` imports, wherever the import statement is (at
    module level, under TYPE_CHECKING or inside a function), with the packages a dotted import
    runs the __init__ of (but not the packages `name` itself lives in)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            for end in range(1, len(parts) + 1):
                module = ".".join(parts[:end])
                if module in modules and not (name == module or name.startswith(module + ".")):
                    found.add(module)
    return found


def _cycle_through(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A shortest import path from `start` back to itself, or None."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for imported in sorted(graph[module]):
            if imported == start:
                path = [module]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if imported not in came_from:
                came_from[imported] = module
                queue.append(imported)
    return None


@pytest.mark.parametrize("module", ["eval_runner.pipeline", "eval_runner.store"])
def test_the_pipeline_and_the_store_are_in_no_import_cycle(module: str) -> None:
    modules = _modules(RUNNER, "eval_runner")
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert module in graph
    assert _cycle_through(module, graph) is None, " -> ".join(_cycle_through(module, graph) or [])


def test_the_store_reads_the_sample_result_type_from_below_the_pipeline() -> None:
    modules = _modules(RUNNER, "eval_runner")
    store = _imports("eval_runner.store", modules["eval_runner.store"], modules)
    assert "eval_runner.results" in store
    assert "eval_runner.pipeline" not in store


@pytest.mark.parametrize(
    "package", [ROOT / "api" / "eval_api" / "v1alpha1", RUNNER / "eval_runner" / "cli"]
)
def test_no_module_of_the_api_or_the_cli_grows_past_the_bound(package: Path) -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in package.glob("*.py")}
    assert len(sizes) > 1, f"{package} is a package of modules"
    too_long = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert not too_long, f"split these by topic (at most {MAX_LINES} lines each): {too_long}"
