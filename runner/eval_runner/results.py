"""What became of one sample (SampleResult): the pipeline makes it, the store writes it as a row,
`eval-runner run` prints it. It sits below all of them, so none imports another for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eval_runner.client import Completion, Spend
from eval_runner.dataset import Sample
from eval_runner.prompt import Message


@dataclass(frozen=True)
class SampleResult:
    """What became of one sample: its answer and scores, or the error that stopped it."""

    sample: Sample
    messages: list[Message]
    completion: Completion | None = None
    scores: dict[str, float] = field(default_factory=dict)
    error_class: str | None = None
    error: str | None = None  # the detail, the key redacted
    url: str | None = None  # where the failing request went
    spend: Spend | None = None  # what its failed requests used (an answered one: completion's)
    # It failed for a reason that passes (429, 5xx, a timeout, a lost connection): not a final
    # answer, so it is not stored and a resumed shard asks it again.
    transient: bool = False
    # An lm-eval task's explanation of the scores: the filtered answers and the reference, or
    # each choice's log-likelihood with the chosen one and the gold (eval_runner.lmeval.run).
    details: dict[str, Any] | None = None
