"""The scorer registry: scorer type -> factory building a scorer from its ScorerSpec."""

from __future__ import annotations

from collections.abc import Callable

from eval_operator.api.v1alpha1 import ScorerSpec
from eval_runner.errors import PermanentError

# (model output, sample target) -> a score in [0, 1]
Scorer = Callable[[str, str], float]
ScorerFactory = Callable[[ScorerSpec], Scorer]

_FACTORIES: dict[str, ScorerFactory] = {}


def register(scorer_type: str) -> Callable[[ScorerFactory], ScorerFactory]:
    def decorate(factory: ScorerFactory) -> ScorerFactory:
        if scorer_type in _FACTORIES:
            raise ValueError(f"scorer {scorer_type!r} is registered twice")
        _FACTORIES[scorer_type] = factory
        return factory

    return decorate


def registered() -> list[str]:
    return sorted(_FACTORIES)


def build_scorer(spec: ScorerSpec) -> Scorer:
    factory = _FACTORIES.get(spec.type)
    if factory is None:
        raise PermanentError("UnknownScorer", f"no scorer of type {spec.type!r}")
    return factory(spec)
