"""An EvalSuite's matrix as data: its cells (one Evaluation spec per model x task), their names,
and what each cell's run is compared with. Shared by the operator (which makes the cells child
Evaluations) and the runner (`eval-runner run suite.yaml` runs them locally).

Two cells may come out with one name: `llama-3` x `gsm` and `llama` x `3-gsm` are both
`<suite>-llama-3-gsm`. Such a matrix is refused by cell_problems (the operator's InvalidSpec,
naming the cells, with no cell applied; eval-runner refuses the manifest), not at `kubectl
apply`: a CEL rule would have to compare every pair of models with every pair of tasks, 50^4 =
6.25M steps at the caps of 50 each, over the apiserver's per-expression limits (an estimated
cost of 10M refuses the CRD at install; 1M stops a rule at run time), and a membership test
("t in names") costs the list's size, so no three-loop form is cheaper. Renaming every cell
injectively would instead rename the cells of every existing suite.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from eval_api.cellreport import (
    BASELINE_NONE,
    BASELINE_PREVIOUS,
    BASELINE_SUITE_RUN_PREFIX,
    IS_BASELINE,
    NO_BASELINE,
)
from eval_api.checks import spec_problems
from eval_api.earlystop import GatePlan
from eval_api.v1alpha1.evalsuite import EvalSuiteSpec
from eval_api.v1alpha1.evaluation import EvaluationSpec
from eval_api.v1alpha1.matrix import ACCEPT_RUN_ANNOTATION, RegressionSpec, SuiteModel, SuiteTask

_MAX_NAME = 63  # a cell's name goes into its Jobs' and pods' label values
_HASH_LEN = 6


def cell_id(model: str, task: str) -> str:
    """The cell's identity in the store and in messages: <model>/<task>."""
    return f"{model}/{task}"


def cell_name(suite: str, model: str, task: str) -> str:
    """`<suite>-<model>-<task>`, shortened with a hash of the whole when longer than 63."""
    name = f"{suite}-{model}-{task}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_LEN]
    return f"{name[: _MAX_NAME - _HASH_LEN - 1].rstrip('-')}-{digest}"


def cell_spec(suite_name: str, spec: EvalSuiteSpec, model: SuiteModel, task: SuiteTask) -> dict:
    """The cell's Evaluation spec as the apiserver would store it (camelCase, no nulls)."""
    body: dict[str, Any] = {
        "model": model.model.model_dump(mode="json", by_alias=True, exclude_none=True),
        "task": task.task.model_dump(mode="json", by_alias=True, exclude_none=True),
        "thresholds": list(task.thresholds),
        "suiteRef": {"name": suite_name},
    }
    if task.dataset is not None:  # a preset brings its own
        body["dataset"] = task.dataset.model_dump(mode="json", by_alias=True, exclude_none=True)
    defaults = spec.defaults
    if defaults is not None and defaults.execution is not None:
        body["execution"] = defaults.execution.model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
    if defaults is not None and defaults.budget is not None:
        body["budget"] = defaults.budget.model_dump(mode="json", by_alias=True, exclude_none=True)
    return body


@dataclass(frozen=True)
class Cell:
    model: str
    task: str
    name: str
    spec: dict[str, Any]

    @property
    def id(self) -> str:
        return cell_id(self.model, self.task)


def cells_of(suite_name: str, spec: EvalSuiteSpec) -> list[Cell]:
    """The matrix in order: every task of the first model, then of the second, ..."""
    return [
        Cell(
            m.name, t.name, cell_name(suite_name, m.name, t.name), cell_spec(suite_name, spec, m, t)
        )
        for m in spec.models or []
        for t in spec.tasks or []
    ]


def cell_problems(cells: list[Cell]) -> list[str]:
    """What would make a cell's Evaluation invalid (the rules of Evaluation, written once
    there): "cell <model>/<task>: spec.<path>: ...", and cells that would share a name."""
    problems = []
    for cell in cells:
        try:
            parsed = EvaluationSpec.model_validate(cell.spec)
        except ValidationError as err:
            for error in err.errors():
                path = ".".join(str(p) for p in ("spec", *error["loc"]))
                problems.append(f"cell {cell.id}: {path}: {error['msg']}")
            continue
        problems += [f"cell {cell.id}: {p}" for p in spec_problems(parsed)]
    named: dict[str, list[Cell]] = {}
    for cell in cells:
        named.setdefault(cell.name, []).append(cell)
    for name, same in named.items():
        if len(same) > 1:
            problems.append(
                f"spec.models, spec.tasks: cells {' and '.join(c.id for c in same)} would all be "
                f"the Evaluation {name}: rename a model or a task"
            )
    return problems


def regression_of(spec: EvalSuiteSpec) -> RegressionSpec:
    return spec.regression or RegressionSpec()


def baseline_selector(
    spec: EvalSuiteSpec, accepted: str | None, suite_run: str
) -> tuple[str, tuple[str, str] | None]:
    """What the cell report compares with, or (reason, message) of why nothing is."""
    if spec.baseline is None:
        return BASELINE_NONE, None
    if spec.baseline == "previous":
        return BASELINE_PREVIOUS, None
    wanted = accepted if spec.baseline == "accepted" else spec.baseline
    if wanted is None:
        return BASELINE_NONE, (
            NO_BASELINE,
            f"no suite run is accepted yet: annotate {ACCEPT_RUN_ANNOTATION}=<run> (kubectl "
            "evals accept)",
        )
    if wanted == suite_run:
        return BASELINE_NONE, (IS_BASELINE, f"suite run {suite_run} is the baseline")
    return BASELINE_SUITE_RUN_PREFIX + wanted, None


def gate_plan(
    spec: EvalSuiteSpec,
    cell: str,
    cell_spec: EvaluationSpec,
    accepted: str | None,
    suite_run: str,
) -> GatePlan | None:
    """The regression gate of a run of cell `cell` (<model>/<task>) in suite run `suite_run`:
    when the cell has execution.earlyStop and the suite compares it with a baseline (None
    otherwise). With task.groupField the gate is not sequential (pairs within a group are not
    independent): the run then asks every sample and the cell report decides the regression at
    the end. `accepted`: the suite's accept-run annotation."""
    if cell_spec.execution.early_stop is None:
        return None
    selector, _ = baseline_selector(spec, accepted, suite_run)
    if selector == BASELINE_NONE:
        return None
    regression = regression_of(spec)
    return GatePlan(
        cell=cell,
        baseline=selector,
        max_drop=regression.max_drop,
        alpha=regression.alpha,
        sequential=cell_spec.task.group_field is None,
    )
