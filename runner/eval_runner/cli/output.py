"""What `eval-runner run` prints: the results table or the JSON report, and one JSON line per
sample (--output jsonl, --samples).
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from eval_api.aggregate import Aggregate
from eval_api.v1alpha1.evaluation import Evaluation
from eval_api.verdict import Verdict
from eval_runner.results import SampleResult


class SampleLog:
    """What a local run keeps of its samples: the first failure of each error class (for the
    error table), and one JSON line per sample for --output jsonl / --samples."""

    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self.examples: dict[str, SampleResult] = {}

    def __call__(self, result: SampleResult) -> None:
        if result.error_class is not None:
            self.examples.setdefault(result.error_class, result)
        if self.out is not None:
            self.out.write(json.dumps(sample_line(result), ensure_ascii=False) + "\n")
            self.out.flush()


def sample_line(result: SampleResult) -> dict[str, Any]:
    completion = result.completion
    line = {
        "id": result.sample.id,
        "input": result.sample.input,
        "target": result.sample.target,
        "prompt": result.messages,
        "response": None if completion is None else completion.text,
        "scores": result.scores,
        "inputTokens": None if completion is None else completion.input_tokens,
        "outputTokens": None if completion is None else completion.output_tokens,
        "truncated": None if completion is None else completion.truncated,
        "latencySeconds": None if completion is None else round(completion.latency, 6),
        "errorClass": result.error_class,
        "error": result.error,
    }
    if result.details is not None:
        # An lm-eval task's: each filter's answer and the reference, or every choice's
        # log-likelihood with the chosen one and the gold.
        line["details"] = result.details
    return line


def json_report(
    evaluation: Evaluation,
    result: Aggregate,
    verdict: Verdict,
    passed: bool | None,
) -> dict[str, Any]:
    return {
        "evaluation": evaluation.metadata.name,
        "model": evaluation.spec.model.name,
        "results": [r.model_dump(mode="json", by_alias=True) for r in result.results],
        "usage": result.usage.model_dump(mode="json", by_alias=True, exclude_none=True),
        "progress": result.progress.model_dump(mode="json", by_alias=True),
        "errors": result.errors,
        "thresholds": [{"threshold": c.text, "passed": c.holds} for c in verdict.checks],
        "passed": passed,
    }


def print_table(
    console: Console,
    evaluation: Evaluation,
    result: Aggregate,
    verdict: Verdict,
    samples: SampleLog,
) -> None:
    spec = evaluation.spec
    table = Table(title=Text(f"{evaluation.metadata.name}: {spec.model.name}"))
    table.add_column("scorer")
    for column in ("value", "stderr", "ci95", "n"):
        table.add_column(column, justify="right")
    for r in result.results:
        table.add_row(
            Text(r.name),
            "-" if r.value is None else f"{r.value:.4f}",
            "-" if r.stderr is None else f"{r.stderr:.4f}",
            Text("-" if r.ci95 is None else f"[{r.ci95[0]:.4f}, {r.ci95[1]:.4f}]"),
            str(r.n),
        )
    console.print(table)
    if result.errors:
        console.print(Text("errored samples (never scored), by class:"))
        for error_class, count in sorted(result.errors.items(), key=lambda item: -item[1]):
            line = f"  {error_class}: {count}"
            example = samples.examples.get(error_class)
            if example is not None and example.url:
                line += f"; the first: POST {example.url}"
            if example is not None and example.error:
                line += f" -> {example.error}"
            console.print(Text(line))
    p, u = result.progress, result.usage
    lines = [f"samples: {p.completed} scored, {p.failed} errored, {p.total} total"]
    lines.append(
        f"usage: {u.requests} requests ({u.timed_out} timed out), {u.input_tokens} input "
        f"tokens, {u.output_tokens} output tokens, {u.prompt_cache_tokens} prompt-cache tokens, "
        f"{u.truncated} truncated answers, cost ${u.cost_usd}"
        + (f", {u.cache_hits} cache hits saving ${u.cache_saved_usd}" if u.cache_hits else "")
    )
    if u.judge is not None:
        j = u.judge
        lines.append(
            f"judge usage: {j.requests} requests ({j.timed_out} timed out), {j.input_tokens} "
            f"input tokens, {j.output_tokens} output tokens, cost ${j.cost_usd}"
        )
    lines += [f"threshold {c.text}: {'PASS' if c.holds else 'FAIL'}" for c in verdict.checks]
    for line in lines:
        console.print(Text(line))
