"""What a run was started with: frozen when its Job is created, read back from the Job.

A run is judged by the spec it ran with, never the live spec: the scorers, thresholds and shard
count that status needs travel on the Job as an annotation (they arrive with every Job watch
event, so judging needs no extra read), and the whole frozen spec is in the run's ConfigMap,
named by the spec's hash, for the runner pods.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eval_api.earlystop import GatePlan
from eval_api.tasks import task_plan
from eval_api.v1alpha1.common import GROUP
from eval_api.v1alpha1.evaluation import EvaluationSpec
from eval_api.v1alpha1.execution import EarlyStopSpec

__all__ = ["GatePlan", "RunPlan"]  # GatePlan: the plan's regression gate, from eval_api

RUN_PLAN_ANNOTATION = f"{GROUP}/run-plan"
# The spec.suspend the operator last applied to the Job: it acts only when spec.suspend changes,
# so whoever else suspends or resumes the Job (Kueue, a person) is not overridden.
SUSPEND_ANNOTATION = f"{GROUP}/suspend"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def spec_hash(spec: Mapping[str, Any]) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class RunPlan(BaseModel):
    """The parts of a run's frozen spec the operator judges it by."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    spec_hash: str = Field(alias="specHash")
    generation: int
    config_map: str = Field(alias="configMap")
    shards: int
    scorers: list[str]
    thresholds: list[str]
    dataset: str = ""  # where the samples come from, for display
    task: str = ""  # which lm-eval task, with its version, for display
    max_errored_fraction: str = Field(default="0.05", alias="maxErroredFraction")
    budgeted: bool = False  # spec.budget is set: the run keeps a ledger of its attempts
    suite: str = ""  # the EvalSuite the run is in (spec.suiteRef), for display
    cached: bool = False  # the suite has a response cache: status says whether it served
    # execution.earlyStop as the run was started with: how the operator decides to stop it.
    early_stop: EarlyStopSpec | None = Field(default=None, alias="earlyStop")
    regression: GatePlan | None = None

    @classmethod
    def of(
        cls,
        spec: EvaluationSpec,
        raw_spec: Mapping[str, Any],
        generation: int,
        run: str,
        task_file: str | None = None,
    ):
        """The plan of a run of `spec`; `task_file` is task.lmEval's file as read (part of
        what the run is judged by, so part of its hash)."""
        digest = spec_hash(
            raw_spec if task_file is None else {"spec": raw_spec, "taskFile": task_file}
        )
        task = task_plan(spec, task_file)
        return cls(
            spec_hash=digest,
            generation=generation,
            config_map=f"{run}-{digest[:8]}",
            shards=spec.execution.shards,
            scorers=task.names,
            thresholds=list(spec.thresholds),
            dataset=task.dataset.source(),
            task=task.source() or "",
            max_errored_fraction=spec.execution.max_errored_fraction,
            budgeted=spec.budget is not None,
            early_stop=spec.execution.early_stop,
        )

    def to_annotation(self) -> str:
        return self.model_dump_json(by_alias=True)

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str]) -> RunPlan | None:
        raw = annotations.get(RUN_PLAN_ANNOTATION)
        if raw is None:
            return None
        try:
            return cls.model_validate_json(raw)
        except ValidationError:
            return None
