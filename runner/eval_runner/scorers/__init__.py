"""Stage 4: scorers, one module each. Adding one = a new module with @register plus its import
here (and its name in v1alpha1.ScorerType, so the API accepts it)."""

from eval_runner.scorers import (  # noqa: F401  (imported to register)
    contains,
    exact_match,
    json_valid,
    numeric,
    regex,
    token_f1,
)
from eval_runner.scorers.registry import Scorer, build_scorer, register

__all__ = ["Scorer", "build_scorer", "register"]
