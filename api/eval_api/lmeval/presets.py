"""The built-in benchmarks (task.preset): lm-eval's task of each name as a task file of the same
format (presets/*.yaml, held field by field to lm-eval's own by tests/unit/test_lmeval_presets.py),
plus what the file cannot say: the dataset revision it is read at, and for MMLU how its 57
subject tasks are read as one.

The revisions are commits of the Hub repositories in their parquet layout (no loading script),
the same ones other harnesses pin (inspect_evals): a dataset that moves under a baseline breaks
every comparison, so a preset never reads a branch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.resources import files

from eval_api.lmeval.config import TaskSpec, load_task, result_names, with_num_fewshot
from eval_api.v1alpha1.dataset import DatasetSpec, HuggingFaceDataset
from eval_api.v1alpha1.task import PresetTask

# MMLU's subjects by lm-eval's category (tasks/mmlu/default/*.yaml tags: mmlu_<category>_tasks).
MMLU_CATEGORIES: dict[str, tuple[str, ...]] = {
    "stem": (
        "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry",
        "college_computer_science", "college_mathematics", "college_physics",
        "computer_security", "conceptual_physics", "electrical_engineering",
        "elementary_mathematics", "high_school_biology", "high_school_chemistry",
        "high_school_computer_science", "high_school_mathematics", "high_school_physics",
        "high_school_statistics", "machine_learning",
    ),
    "other": (
        "business_ethics", "clinical_knowledge", "college_medicine", "global_facts",
        "human_aging", "management", "marketing", "medical_genetics", "miscellaneous",
        "nutrition", "professional_accounting", "professional_medicine", "virology",
    ),
    "social_sciences": (
        "econometrics", "high_school_geography", "high_school_government_and_politics",
        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology",
        "human_sexuality", "professional_psychology", "public_relations", "security_studies",
        "sociology", "us_foreign_policy",
    ),
    "humanities": (
        "formal_logic", "high_school_european_history", "high_school_us_history",
        "high_school_world_history", "international_law", "jurisprudence",
        "logical_fallacies", "moral_disputes", "moral_scenarios", "philosophy", "prehistory",
        "professional_law", "world_religions",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Preset:
    """A benchmark: its task file, the revision its dataset is read at, and how a task made of
    several (MMLU's subjects) is read as one."""

    name: str
    revision: str
    # Few-shot examples are drawn among the rows with the evaluated row's value of this column
    # (MMLU: a subject's examples are its own dev rows, as each subject task of lm-eval has).
    fewshot_by: str | None = None
    # Results besides the task's metrics: the metric over the rows of each category, where
    # category_of maps the category column's value (lm-eval's subgroups: mmlu_stem, ...).
    category_column: str | None = None
    categories: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def file_name(self, generative: bool) -> str:
        return f"{self.name}_generative.yaml" if generative else f"{self.name}.yaml"

    def category_of(self, value: str) -> str | None:
        for category, members in self.categories:
            if value in members:
                return category
        return None


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("gsm8k", "cc7b047b6e5bb11b4f1af84efc572db110a51b3c"),
        Preset(
            "mmlu",
            "c30699e8356da336a370243923dbaf21066bb9fe",
            fewshot_by="subject",
            category_column="subject",
            categories=tuple(MMLU_CATEGORIES.items()),
        ),
        Preset("arc_easy", "210d026faf9955653af8916fad021475a3f00453"),
        Preset("arc_challenge", "210d026faf9955653af8916fad021475a3f00453"),
        Preset("hellaswag", "218ec52e09a7e7462a5400043bb9a69a41d06b76"),
        Preset("truthfulqa_mc1", "741b8276f2d1982aa3d5b832d3ee81ed3b896490"),
        Preset("winogrande", "01e74176c63542e6b0bcb004dcdea22d94fb67b5"),
    )
}


def preset_text(name: str, generative: bool = False) -> str:
    """The task file of a preset (or of its generative variant)."""
    return (files("eval_api.lmeval") / "presets" / PRESETS[name].file_name(generative)).read_text(
        encoding="utf-8"
    )


def preset_task(spec: PresetTask) -> TaskSpec:
    """The preset's task as spec.task.preset asks for it (variant and numFewshot)."""
    return with_num_fewshot(_file_task(spec.name, spec.generative), spec.num_fewshot)


@functools.lru_cache(maxsize=32)
def _file_task(name: str, generative: bool) -> TaskSpec:
    """A preset's file, read and parsed once: a run plan asks for its task, dataset and result
    names (TaskSpec is frozen)."""
    return load_task(preset_text(name, generative), f"preset {name}")


def preset_dataset(spec: PresetTask) -> DatasetSpec:
    """Where a preset's samples come from: its Hub repository at the pinned revision, the
    task's evaluated split, and spec.task.preset.limit."""
    task = preset_task(spec)
    assert task.dataset_path is not None  # every preset file names its repository
    return DatasetSpec(
        huggingface=HuggingFaceDataset(
            repo=task.dataset_path,
            revision=PRESETS[spec.name].revision,
            config=task.dataset_name,
            split=task.eval_split,
        ),
        limit=spec.limit,
    )


def preset_result_names(spec: PresetTask) -> list[str]:
    """The task's result names, then one per category of the metric it reports first."""
    task = preset_task(spec)
    names = result_names(task)
    preset = PRESETS[spec.name]
    return names + [f"{names[0]}_{category}" for category, _ in preset.categories]
