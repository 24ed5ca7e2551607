"""lm-eval's filters and metrics, for one sample at a time.

Facts from lm-eval (filters/extraction.py, filters/selection.py, filters/transformation.py,
api/metrics.py, api/task.py process_results):
- a filter pipeline maps the sample's responses step by step and ends in take_first, giving
  one answer; each pipeline's name keys its metrics ("exact_match,strict-match");
- regex: findall of the pattern, the group_select-th match (negative from the end), the first
  non-empty group of a match with several, stripped; no match gives the fallback ("[invalid]");
- exact_match: regexes_to_ignore removed from prediction and reference in order, then
  lowercase (ignore_case), punctuation (ignore_punctuation) and digits (ignore_numbers);
- multiple choice: each choice's continuation log-likelihood; acc takes the first highest, and
  acc_norm the first highest per character of the choice (its length without the delimiter);
  the gold is the target's index (a choice text is looked up; a list is any of them).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

from eval_api.lmeval.config import FilterPipeline, MetricSpec

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_DIGITS = str.maketrans("", "", string.digits)
NO_GOLD = -100  # lm-eval's gold for a target that is not among the choices: never right


def apply_filters(pipeline: FilterPipeline, response: str) -> str:
    values: list[Any] = [response]
    for step in pipeline.steps:
        options = step.options
        if step.function == "regex":
            values = [_regex(v, **options) for v in values]
        elif step.function == "lowercase":
            values = [v.lower() for v in values]
        elif step.function == "uppercase":
            values = [v.upper() for v in values]
        elif step.function == "remove_whitespace":
            values = [v.strip() for v in values]
        elif step.function == "map":
            mapping = options.get("mapping_dict") or {}
            values = [mapping.get(v, options.get("default_value")) for v in values]
        elif step.function == "majority_vote":
            values = [Counter(values).most_common(1)[0][0]]
        elif step.function == "take_first_k":
            values = values[: int(options["k"])]
        elif step.function == "take_first":
            return values[0]
    raise AssertionError("load_task makes every pipeline end in take_first")


def _regex(
    response: Any,
    regex_pattern: str = r"#### (\-?[0-9\.\,]+)",
    group_select: int = 0,
    fallback: str = "[invalid]",
) -> str:
    if not isinstance(response, str):
        response = ""
    matches = re.findall(regex_pattern, response)
    if not matches:
        return fallback
    match = matches[group_select]
    if isinstance(match, tuple):
        groups = [m for m in match if m]
        match = groups[0] if groups else fallback
    return match.strip()


def exact_match(prediction: str, reference: str, options: dict[str, Any]) -> float:
    for pattern in options.get("regexes_to_ignore") or []:
        prediction = re.sub(pattern, "", prediction)
        reference = re.sub(pattern, "", reference)
    if options.get("ignore_case"):
        prediction, reference = prediction.lower(), reference.lower()
    if options.get("ignore_punctuation"):
        prediction = prediction.translate(_PUNCTUATION)
        reference = reference.translate(_PUNCTUATION)
    if options.get("ignore_numbers"):
        prediction, reference = prediction.translate(_DIGITS), reference.translate(_DIGITS)
    return 1.0 if prediction == reference else 0.0


def generated_reference(target: Any, choices: list[Any] | None) -> str:
    """What a generated answer is compared with: the target, or the choice it indexes."""
    if choices is not None and isinstance(target, int):
        target = choices[target]
    return target if isinstance(target, str) else str(target)


def gold_index(target: Any, choices: Sequence[Any]) -> int | list[int]:
    if isinstance(target, list):
        return [gold_index(t, choices) for t in target]  # type: ignore[misc]
    if isinstance(target, str):
        return choices.index(target) if target in choices else NO_GOLD
    if isinstance(target, int) and 0 <= target < len(choices):
        return target
    return NO_GOLD


def _first_highest(values: Sequence[float]) -> int:
    best = 0
    for index, value in enumerate(values):
        if value > values[best]:
            best = index
    return best


def choice_scores(
    metrics: Sequence[MetricSpec],
    loglikelihoods: Sequence[float],
    choices: Sequence[str],
    gold: int | list[int],
) -> dict[str, float]:
    """acc and acc_norm of one multiple-choice sample from its choices' log-likelihoods."""
    predicted = _first_highest(loglikelihoods)
    normalised = _first_highest(
        [ll / len(c) for ll, c in zip(loglikelihoods, choices, strict=True)]
    )

    def right(pick: int) -> float:
        return 1.0 if (pick in gold if isinstance(gold, list) else pick == gold) else 0.0

    scores = {"acc": right(predicted), "acc_norm": right(normalised)}
    return {m.name: scores[m.name] for m in metrics if m.name in scores}
