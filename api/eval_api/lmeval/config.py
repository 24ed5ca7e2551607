"""An lm-eval task file: the fields we run, with lm-eval's defaults, and the ones we refuse.

What cannot run here is refused with the field named, never skipped: Python functions
(`!function`, process_docs, process_results), included files, prompt sources, images and
audio, repeats. A field that changes nothing about the scores (tag, task_alias, decontamination)
is accepted and kept as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

OUTPUT_TYPES = ("generate_until", "multiple_choice", "loglikelihood")
# lm-eval's defaults (lm_eval/defaults.py, lm_eval/config/task.py).
DEFAULT_TARGET_DELIMITER = " "
DEFAULT_FEWSHOT_DELIMITER = "\n\n"
DEFAULT_MAX_GEN_TOKS = 256
FEWSHOT_SEED = 1234
DEFAULT_METRICS = {
    "generate_until": ("exact_match",),
    "multiple_choice": ("acc", "acc_norm"),
    "loglikelihood": ("perplexity", "acc"),
}
METRICS = ("exact_match", "acc", "acc_norm")
EXACT_MATCH_OPTIONS = ("ignore_case", "ignore_punctuation", "ignore_numbers", "regexes_to_ignore")
FILTERS = {
    "regex": ("regex_pattern", "group_select", "fallback"),
    "take_first": (),
    "take_first_k": ("k",),
    "lowercase": (),
    "uppercase": (),
    "remove_whitespace": (),
    "map": ("mapping_dict", "default_value"),
    "majority_vote": (),
}
GENERATION_KWARGS = ("until", "max_gen_toks", "max_tokens", "temperature", "do_sample", "top_p")
SAMPLERS = ("default", "first_n")

# Fields that change nothing about the samples, requests or scores.
INFORMATIONAL = ("task_alias", "tag", "should_decontaminate", "doc_to_decontamination_query")
REFUSED = {
    "process_docs": "a Python function over the dataset",
    "process_results": "a Python function that scores",
    "custom_dataset": "a Python function that loads the dataset",
    "use_prompt": "a promptsource template",
    "doc_to_image": "images",
    "doc_to_audio": "audio",
    "unsafe_code": "code execution",
    "include": "a file beside the task's, which a ConfigMap key does not carry (inline it)",
    "class": "a Python task class",
    "group": "a group of tasks (give each task its own entry)",
    "gen_prefix": "a generation prefix",
}
KNOWN = (
    "task",
    "dataset_path",
    "dataset_name",
    "dataset_kwargs",
    "training_split",
    "validation_split",
    "test_split",
    "fewshot_split",
    "fewshot_config",
    "doc_to_text",
    "doc_to_target",
    "doc_to_choice",
    "description",
    "target_delimiter",
    "fewshot_delimiter",
    "num_fewshot",
    "output_type",
    "generation_kwargs",
    "filter_list",
    "metric_list",
    "metadata",
    "repeats",
    *INFORMATIONAL,
)


class Function:
    """A `!function module.name` value: Python we do not run."""

    def __init__(self, target: str) -> None:
        self.target = target


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor(
    "!function", lambda loader, node: Function(str(loader.construct_scalar(node)))
)


@dataclass(frozen=True)
class FilterStep:
    function: str
    options: dict[str, Any]


@dataclass(frozen=True)
class FilterPipeline:
    name: str
    steps: tuple[FilterStep, ...]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FewShotSpec:
    sampler: str
    split: str | None
    samples: tuple[dict[str, Any], ...] | None
    doc_to_text: Any
    doc_to_target: Any
    doc_to_choice: Any
    target_delimiter: str
    fewshot_delimiter: str


@dataclass(frozen=True)
class TaskSpec:
    task: str
    dataset_path: str | None
    dataset_name: str | None
    revision: str | None
    training_split: str | None
    validation_split: str | None
    test_split: str | None
    doc_to_text: Any
    doc_to_target: Any
    doc_to_choice: Any
    description: str
    target_delimiter: str
    fewshot_delimiter: str
    num_fewshot: int
    output_type: str
    generation: dict[str, Any]
    filters: tuple[FilterPipeline, ...]
    metrics: tuple[MetricSpec, ...]
    fewshot: FewShotSpec
    version: str | None
    informational: dict[str, Any]

    @property
    def eval_split(self) -> str:
        """lm-eval evaluates test_split, else validation_split."""
        split = self.test_split or self.validation_split
        assert split is not None  # load_task refuses a task with neither
        return split

    @property
    def fewshot_split(self) -> str | None:
        """Where few-shot examples come from when not given inline (fewshot_config.samples):
        fewshot_split, else the training split, else validation, else test."""
        if self.fewshot.samples is not None and self.fewshot.split is None:
            return None
        return self.fewshot.split or self.training_split or self.validation_split or self.test_split

    @property
    def excludes_eval_doc(self) -> bool:
        """lm-eval draws one more example and drops the evaluated doc when the few-shot split
        equals test_split, including when neither is set (hellaswag, winogrande)."""
        return self.fewshot.split == self.test_split


class TaskFileError(Exception):
    """The task file cannot run: `reason` is LmEvalInvalid (it is not a valid lm-eval task) or
    LmEvalUnsupported (a valid one using something this runner refuses to fake), and the
    message names the field."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def refuse(where: str, why: str) -> TaskFileError:
    return TaskFileError("LmEvalUnsupported", f"{where}: {why}")


def load_task(text: str, source: str) -> TaskSpec:
    """The task in `text` (an lm-eval task YAML), checked; `source` names it in errors."""
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader with one tag added
    except yaml.YAMLError as err:
        raise TaskFileError("LmEvalInvalid", f"{source} is not YAML: {err}") from None
    if not isinstance(raw, dict):
        raise TaskFileError("LmEvalInvalid", f"{source} is not a mapping of task fields")
    _refuse_functions(raw, source)
    for key in raw:
        if key in REFUSED:
            raise refuse(f"{source}: {key}", f"{REFUSED[key]} cannot run here")
        if key not in KNOWN:
            raise refuse(f"{source}: {key}", "not an lm-eval task field we know")
    task = raw.get("task")
    if not isinstance(task, str) or not task:
        raise TaskFileError("LmEvalInvalid", f"{source}: task (the task's name) is required")
    output_type = raw.get("output_type", "generate_until")
    if output_type not in OUTPUT_TYPES:
        raise refuse(f"{source}: output_type", f"{output_type!r} is not one of {OUTPUT_TYPES}")
    if raw.get("repeats", 1) != 1:
        raise refuse(f"{source}: repeats", "one answer per sample only")
    if not (raw.get("test_split") or raw.get("validation_split")):
        raise TaskFileError(
            "LmEvalInvalid", f"{source}: test_split or validation_split is required"
        )
    if raw.get("doc_to_text") is None:
        raise TaskFileError("LmEvalInvalid", f"{source}: doc_to_text is required")
    if output_type == "multiple_choice" and raw.get("doc_to_choice") is None:
        raise TaskFileError("LmEvalInvalid", f"{source}: multiple_choice needs doc_to_choice")
    target_delimiter = _text(raw, "target_delimiter", DEFAULT_TARGET_DELIMITER, source)
    fewshot_delimiter = _text(raw, "fewshot_delimiter", DEFAULT_FEWSHOT_DELIMITER, source)
    num_fewshot = raw.get("num_fewshot") or 0
    if not isinstance(num_fewshot, int) or num_fewshot < 0:
        raise TaskFileError("LmEvalInvalid", f"{source}: num_fewshot must be a count")
    kwargs = raw.get("dataset_kwargs") or {}
    if not isinstance(kwargs, dict) or set(kwargs) - {"revision", "trust_remote_code"}:
        raise refuse(f"{source}: dataset_kwargs", "only revision is read")
    metadata = raw.get("metadata") or {}
    version = metadata.get("version") if isinstance(metadata, dict) else None
    return TaskSpec(
        task=task,
        dataset_path=raw.get("dataset_path"),
        dataset_name=raw.get("dataset_name"),
        revision=kwargs.get("revision"),
        training_split=raw.get("training_split"),
        validation_split=raw.get("validation_split"),
        test_split=raw.get("test_split"),
        doc_to_text=raw.get("doc_to_text"),
        doc_to_target=raw.get("doc_to_target"),
        doc_to_choice=raw.get("doc_to_choice"),
        description=_text(raw, "description", "", source),
        target_delimiter=target_delimiter,
        fewshot_delimiter=fewshot_delimiter,
        num_fewshot=num_fewshot,
        output_type=output_type,
        generation=_generation(raw, output_type, fewshot_delimiter, source),
        filters=_filters(raw.get("filter_list"), source),
        metrics=_metrics(raw.get("metric_list"), output_type, source),
        fewshot=_fewshot(raw, target_delimiter, fewshot_delimiter, source),
        version=None if version is None else str(version),
        informational={k: raw[k] for k in INFORMATIONAL if k in raw},
    )


def _refuse_functions(node: Any, where: str) -> None:
    if isinstance(node, Function):
        raise refuse(where, f"!function {node.target} is Python code, which cannot run here")
    if isinstance(node, dict):
        for key, value in node.items():
            _refuse_functions(value, f"{where}: {key}" if where else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _refuse_functions(value, f"{where}[{index}]")


def _text(raw: dict[str, Any], key: str, default: str, source: str) -> str:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise TaskFileError("LmEvalInvalid", f"{source}: {key} must be text")
    return value


def _generation(
    raw: dict[str, Any], output_type: str, fewshot_delimiter: str, source: str
) -> dict[str, Any]:
    given = raw.get("generation_kwargs")
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise TaskFileError("LmEvalInvalid", f"{source}: generation_kwargs must be a mapping")
    for key in given:
        if key not in GENERATION_KWARGS:
            raise refuse(f"{source}: generation_kwargs.{key}", "not sent by this runner")
    until = given.get("until", [fewshot_delimiter])
    until = [until] if isinstance(until, str) else list(until)
    if given.get("do_sample") or float(given.get("temperature", 0.0) or 0.0) != 0.0:
        raise refuse(
            f"{source}: generation_kwargs", "sampling (do_sample, temperature > 0) is not run"
        )
    found = {
        "until": until,
        "max_tokens": int(given.get("max_tokens", given.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))),
        "temperature": 0.0,
    }
    if "top_p" in given:
        found["top_p"] = given["top_p"]
    return found if output_type == "generate_until" else {}


def _filters(given: Any, source: str) -> tuple[FilterPipeline, ...]:
    if given is None:
        return (FilterPipeline("none", (FilterStep("take_first", {}),)),)
    if not isinstance(given, list):
        raise TaskFileError("LmEvalInvalid", f"{source}: filter_list must be a list")
    pipelines = []
    for index, entry in enumerate(given):
        where = f"{source}: filter_list[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise TaskFileError("LmEvalInvalid", f"{where} needs a name and a filter list")
        steps = []
        for number, step in enumerate(entry.get("filter") or []):
            function = step.get("function") if isinstance(step, dict) else None
            if function not in FILTERS:
                raise refuse(f"{where}.filter[{number}]", f"filter {function!r} is not run here")
            options = {k: v for k, v in step.items() if k != "function"}
            unknown = set(options) - set(FILTERS[function])
            if unknown:
                raise refuse(f"{where}.filter[{number}]", f"{function} has no {sorted(unknown)}")
            steps.append(FilterStep(function, options))
        if not steps or steps[-1].function != "take_first":
            raise refuse(where, "must end in take_first (one answer per sample is scored)")
        pipelines.append(FilterPipeline(entry["name"], tuple(steps)))
    return tuple(pipelines)


def _metrics(given: Any, output_type: str, source: str) -> tuple[MetricSpec, ...]:
    entries = given if given is not None else [{"metric": m} for m in DEFAULT_METRICS[output_type]]
    if not isinstance(entries, list) or not entries:
        raise TaskFileError("LmEvalInvalid", f"{source}: metric_list must be a non-empty list")
    found = []
    for index, entry in enumerate(entries):
        where = f"{source}: metric_list[{index}]"
        name = entry.get("metric") if isinstance(entry, dict) else None
        if name not in METRICS:
            raise refuse(where, f"metric {name!r} is not one of {METRICS}")
        if entry.get("aggregation", "mean") != "mean":
            raise refuse(f"{where}.aggregation", "only mean")
        if entry.get("higher_is_better", True) is not True:
            raise refuse(f"{where}.higher_is_better", f"{name} is higher-is-better")
        options = {
            k: v for k, v in entry.items() if k not in ("metric", "aggregation", "higher_is_better")
        }
        allowed = EXACT_MATCH_OPTIONS if name == "exact_match" else ()
        unknown = set(options) - set(allowed)
        if unknown:
            raise refuse(where, f"{name} has no option {sorted(unknown)}")
        if name == "exact_match" and output_type != "generate_until":
            raise refuse(where, "exact_match scores generated answers (generate_until)")
        if name == "acc_norm" and output_type != "multiple_choice":
            raise refuse(where, "acc_norm is for multiple_choice")
        found.append(MetricSpec(name, options))
    return tuple(found)


def _fewshot(
    raw: dict[str, Any], target_delimiter: str, fewshot_delimiter: str, source: str
) -> FewShotSpec:
    given = raw.get("fewshot_config") or {}
    if not isinstance(given, dict):
        raise TaskFileError("LmEvalInvalid", f"{source}: fewshot_config must be a mapping")
    allowed = {
        "sampler", "split", "samples", "doc_to_text", "doc_to_target", "doc_to_choice",
        "target_delimiter", "fewshot_delimiter",
    }  # fmt: skip
    for key in given:
        if key not in allowed:
            raise refuse(f"{source}: fewshot_config.{key}", "not run here")
    sampler = given.get("sampler", "default")
    if sampler not in SAMPLERS:
        raise refuse(f"{source}: fewshot_config.sampler", f"{sampler!r} is not one of {SAMPLERS}")
    samples = given.get("samples")
    if samples is not None and not (
        isinstance(samples, list) and all(isinstance(s, dict) for s in samples)
    ):
        raise TaskFileError(
            "LmEvalInvalid", f"{source}: fewshot_config.samples must be a list of docs"
        )
    return FewShotSpec(
        sampler=sampler,
        split=given.get("split", raw.get("fewshot_split")),
        samples=None if samples is None else tuple(samples),
        doc_to_text=given.get("doc_to_text", raw.get("doc_to_text")),
        doc_to_target=given.get("doc_to_target", raw.get("doc_to_target")),
        doc_to_choice=given.get("doc_to_choice", raw.get("doc_to_choice")),
        target_delimiter=given.get("target_delimiter", target_delimiter),
        fewshot_delimiter=given.get("fewshot_delimiter", fewshot_delimiter),
    )


def metric_key(metric: str, pipeline: str) -> str:
    """lm-eval's result key, "exact_match,strict-match", as a result name of ours (a scorer
    name): "exact_match_strict_match"; the filter 'none' (no filter_list) leaves the metric's
    name alone."""
    if pipeline == "none":
        return metric
    return re.sub(r"[^a-z0-9_]+", "_", f"{metric}_{pipeline}".lower()).strip("_")


def result_names(task: TaskSpec) -> list[str]:
    """The names in status.results, the main score first: each filter pipeline's metrics, in
    the task file's order. A multiple-choice task has no filters (its answer is a choice)."""
    if task.output_type != "generate_until":
        return [m.name for m in task.metrics]
    names = [metric_key(m.name, p.name) for p in task.filters for m in task.metrics]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise TaskFileError(
            "LmEvalInvalid", f"filter_list: two pipelines give the same result name {duplicated}"
        )
    return names


def with_num_fewshot(task: TaskSpec, num_fewshot: int | None) -> TaskSpec:
    """The task with spec.task's numFewshot in place of the file's (lm-eval's --num_fewshot)."""
    return task if num_fewshot is None else replace(task, num_fewshot=num_fewshot)
