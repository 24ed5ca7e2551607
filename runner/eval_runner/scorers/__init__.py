"""Stage 4: scorers, one module each. Adding one = a new module with @register (or
@register_judge for one that asks a model) plus its import here (and its name in
v1alpha1.ScorerType, so the API accepts it)."""

from eval_runner.scorers import (  # noqa: F401  (imported to register)
    contains,
    exact_match,
    json_valid,
    llm_judge,
    numeric,
    regex,
    token_f1,
)
from eval_runner.scorers.registry import (
    JudgeScorer,
    Scorer,
    ScoreUnavailable,
    build_judge_scorer,
    build_scorer,
    needs_judge,
    register,
    register_judge,
)

__all__ = [
    "JudgeScorer",
    "ScoreUnavailable",
    "Scorer",
    "build_judge_scorer",
    "build_scorer",
    "needs_judge",
    "register",
    "register_judge",
]
