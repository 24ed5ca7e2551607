"""Reading a manifest file: strict YAML (a duplicate key is an error), the Evaluation or the
EvalSuite in it, and every problem listed by its field path (InvalidInput: exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from eval_api.checks import spec_problems
from eval_api.matrix import cell_problems, cells_of
from eval_api.v1alpha1.evalsuite import EvalSuite
from eval_api.v1alpha1.evaluation import Evaluation


class InvalidInput(Exception):
    """The manifest or the arguments are wrong: exit 2 with this message."""


class _StrictLoader(yaml.SafeLoader):
    """YAML with duplicate keys rejected: PyYAML keeps the last one silently, Kubernetes'
    decoder rejects the manifest; either way the first value would be lost."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _documents(path: Path) -> list[Any]:
    try:
        return [d for d in yaml.load_all(path.read_text(), _StrictLoader) if d is not None]
    except OSError as err:
        raise InvalidInput(f"cannot read {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise InvalidInput(f"{path} is not valid YAML: {err}") from err


def load_suite_manifest(path: Path) -> EvalSuite | None:
    """The EvalSuite with a matrix in a YAML file, or None when it holds none."""
    suites = [d for d in _documents(path) if isinstance(d, dict) and d.get("kind") == "EvalSuite"]
    if not suites:
        return None
    if len(suites) > 1:
        raise InvalidInput(f"{path} holds {len(suites)} EvalSuites; run one at a time")
    try:
        suite = EvalSuite.model_validate(suites[0])
    except ValidationError as err:
        raise InvalidInput(f"{path} is not a valid EvalSuite:\n{format_errors(err)}") from err
    if not suite.spec.has_matrix:
        raise InvalidInput(f"{path}: the EvalSuite has no matrix (spec.models and spec.tasks)")
    problems = cell_problems(cells_of(suite.metadata.name, suite.spec))
    if problems:
        raise InvalidInput(f"{path} is not a valid EvalSuite:\n" + "\n".join(problems))
    return suite


def load_manifest(path: Path) -> Evaluation:
    """The Evaluation in a YAML file (which may hold other documents too, e.g. its Secret)."""
    try:
        documents = [d for d in yaml.load_all(path.read_text(), _StrictLoader) if d is not None]
    except OSError as err:
        raise InvalidInput(f"cannot read {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise InvalidInput(f"{path} is not valid YAML: {err}") from err
    evaluations = [d for d in documents if isinstance(d, dict) and d.get("kind") == "Evaluation"]
    if len(evaluations) > 1:
        raise InvalidInput(f"{path} holds {len(evaluations)} Evaluations; run one at a time")
    if not evaluations and len(documents) != 1:
        raise InvalidInput(f"{path} holds no Evaluation")
    document = evaluations[0] if evaluations else documents[0]
    try:
        evaluation = Evaluation.model_validate(document)
    except ValidationError as err:
        raise InvalidInput(f"{path} is not a valid Evaluation:\n{format_errors(err)}") from err
    # What the operator checks before a run starts (InvalidSpec in a cluster).
    problems = spec_problems(evaluation.spec)
    if problems:
        raise InvalidInput(f"{path} is not a valid Evaluation:\n" + "\n".join(problems))
    return evaluation


def format_errors(err: ValidationError) -> str:
    """One line per problem, named by its field path as written in the manifest."""
    lines = []
    for error in err.errors():
        path = ""
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        lines.append(f"  {path or '(document)'}: {error['msg']}")
    return "\n".join(lines)
