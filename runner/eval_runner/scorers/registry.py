"""The scorer registry: scorer type -> factory building a scorer from its ScorerSpec.

Most scorers are pure functions of (output, target). A scorer that asks a model (llm_judge)
is a JudgeScorer: async, given the sample's input too, and built with the ModelClient of its
judge.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from eval_api.v1alpha1.task import ScorerSpec
from eval_runner.client import ModelClient
from eval_runner.errors import PermanentError

# (model output, sample target) -> a score in [0, 1]
Scorer = Callable[[str, str], float]
ScorerFactory = Callable[[ScorerSpec], Scorer]


class JudgeScorer(Protocol):
    async def score(self, input: str, output: str, target: str) -> float:
        """A score in [0, 1]; RequestFailed or ScoreUnavailable when there is none."""
        ...


JudgeScorerFactory = Callable[[ScorerSpec, ModelClient], JudgeScorer]


class ScoreUnavailable(Exception):
    """The scorer could not produce a score: the sample counts as errored with this class."""

    def __init__(self, error_class: str, detail: str) -> None:
        super().__init__(f"{error_class}: {detail}")
        self.error_class = error_class


_FACTORIES: dict[str, ScorerFactory] = {}
_JUDGE_FACTORIES: dict[str, JudgeScorerFactory] = {}


def register(scorer_type: str) -> Callable[[ScorerFactory], ScorerFactory]:
    def decorate(factory: ScorerFactory) -> ScorerFactory:
        _check_new(scorer_type)
        _FACTORIES[scorer_type] = factory
        return factory

    return decorate


def register_judge(scorer_type: str) -> Callable[[JudgeScorerFactory], JudgeScorerFactory]:
    def decorate(factory: JudgeScorerFactory) -> JudgeScorerFactory:
        _check_new(scorer_type)
        _JUDGE_FACTORIES[scorer_type] = factory
        return factory

    return decorate


def _check_new(scorer_type: str) -> None:
    if scorer_type in _FACTORIES or scorer_type in _JUDGE_FACTORIES:
        raise ValueError(f"scorer {scorer_type!r} is registered twice")


def registered() -> list[str]:
    return sorted([*_FACTORIES, *_JUDGE_FACTORIES])


def needs_judge(spec: ScorerSpec) -> bool:
    return spec.type in _JUDGE_FACTORIES


def build_scorer(spec: ScorerSpec) -> Scorer:
    factory = _FACTORIES.get(spec.type)
    if factory is None:
        raise PermanentError("UnknownScorer", f"no scorer of type {spec.type!r}")
    return factory(spec)


def build_judge_scorer(spec: ScorerSpec, judge: ModelClient) -> JudgeScorer:
    factory = _JUDGE_FACTORIES.get(spec.type)
    if factory is None:
        raise PermanentError("UnknownScorer", f"no judge scorer of type {spec.type!r}")
    return factory(spec, judge)
