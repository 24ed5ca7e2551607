"""What a task is made of, whichever way spec.task gives it: scorers, an lm-eval task file
(task.lmEval, its text read from the ConfigMap) or a preset. The operator (run plan, status,
thresholds), the store (a run's result names) and the runner read it from here, so the result
names of a run are decided once.
"""

from __future__ import annotations

from dataclasses import dataclass

from eval_api.lmeval import LM_EVAL_VERSION
from eval_api.lmeval.config import (
    TaskFileError,
    TaskSpec,
    load_task,
    result_names,
    with_num_fewshot,
)
from eval_api.lmeval.presets import (
    PRESETS,
    Preset,
    preset_dataset,
    preset_result_names,
    preset_task,
)
from eval_api.v1alpha1.dataset import DatasetSpec
from eval_api.v1alpha1.evaluation import EvaluationSpec

# The frozen run ConfigMap's key holding the task file of task.lmEval, beside the spec.
LM_EVAL_TASK_KEY = "lmeval-task.yaml"


class TaskFileMissing(Exception):
    """task.lmEval's file was not given (the operator has not read the ConfigMap yet)."""


@dataclass(frozen=True)
class TaskPlan:
    """The result names (the main score first), where the samples come from, and for an
    lm-eval task or a preset its task file read and checked."""

    names: list[str]
    dataset: DatasetSpec
    lm_task: TaskSpec | None = None
    preset: Preset | None = None
    where: str | None = None  # task.lmEval's ConfigMap and key

    def source(self) -> str | None:
        """Which lm-eval task the run is, in a few words (status.taskSource): the task's name,
        its version (metadata.version) and few-shot count; a preset's lm-eval release."""
        task = self.lm_task
        if task is None:
            return None
        version = f" version {task.version}" if task.version is not None else ""
        what = f"{task.task}{version}, {task.num_fewshot}-shot"
        if self.preset is not None:
            return f"lm-eval {LM_EVAL_VERSION} {what}"
        return f"lm-eval task {what}, from {self.where}"


def task_plan(spec: EvaluationSpec, task_file: str | None = None) -> TaskPlan:
    """The plan of `spec`; `task_file` is the text of task.lmEval's ConfigMap key. Raises
    TaskFileError when the file cannot run, TaskFileMissing when task.lmEval has none."""
    task = spec.task
    if task.preset is not None:
        return TaskPlan(
            names=preset_result_names(task.preset),
            dataset=preset_dataset(task.preset),
            lm_task=preset_task(task.preset),
            preset=PRESETS[task.preset.name],
        )
    assert spec.dataset is not None  # the schema requires one without a preset
    if task.lm_eval is not None:
        if task_file is None:
            raise TaskFileMissing("task.lmEval's task file was not read")
        ref = task.lm_eval.config_map_ref
        where = f"ConfigMap {ref.name} key {ref.key}"
        lm_task = with_num_fewshot(load_task(task_file, where), task.lm_eval.num_fewshot)
        return TaskPlan(
            names=result_names(lm_task),
            dataset=lm_eval_dataset(spec.dataset, lm_task),
            lm_task=lm_task,
            where=where,
        )
    return TaskPlan(names=[s.effective_name for s in task.scorer_list], dataset=spec.dataset)


def spec_dataset(spec: EvaluationSpec) -> DatasetSpec:
    """Where the samples come from without reading a task file: spec.dataset, or a preset's
    pinned Hub dataset (an lm-eval task's split and config are filled in by task_plan)."""
    if spec.task.preset is not None:
        return preset_dataset(spec.task.preset)
    assert spec.dataset is not None  # the schema requires one without a preset
    return spec.dataset


def lm_eval_dataset(dataset: DatasetSpec, task: TaskSpec) -> DatasetSpec:
    """A Hub dataset read for an lm-eval task: the split and configuration the task file
    names, where the spec leaves them out."""
    hub = dataset.huggingface
    if hub is None:
        return dataset
    update = {}
    if hub.split is None:
        update["split"] = task.eval_split
    if hub.config is None and task.dataset_name is not None:
        update["config"] = task.dataset_name
    return dataset.model_copy(update={"huggingface": hub.model_copy(update=update)})


__all__ = [
    "LM_EVAL_TASK_KEY",
    "TaskFileError",
    "TaskFileMissing",
    "TaskPlan",
    "spec_dataset",
    "task_plan",
]
