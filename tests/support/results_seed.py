"""Stored suite runs for the dashboard's tests, its browser test and `make bench-dashboard`:
rows as the runner and the cell report write them (runs with cell, suite_run, succeeded_at;
samples by COPY), with known scores so that every number the dashboard shows can be checked.

A model's sample i in suite run r is right when (i * 7919 + r * 104729) % 100 < its accuracy
in percent: an exact count of right answers per run, different samples wrong in each run.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from eval_runner.store import COLUMNS

EPOCH = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def right(model_accuracy: int, sample: int, suite_run: int) -> bool:
    return (sample * 7919 + suite_run * 104729) % 100 < model_accuracy


def expected_score(model_accuracy: int, samples: int, suite_run: int) -> float:
    return sum(right(model_accuracy, i, suite_run) for i in range(samples)) / samples


@dataclass
class SeededRun:
    evaluation_uid: str
    run: str
    cell: str
    suite_run: str
    model: str
    task: str
    index: int
    right: int
    samples: int
    errored: int


@dataclass
class Seeded:
    namespace: str
    suite: str
    runs: list[SeededRun] = field(default_factory=list)

    def latest(self, model: str, task: str) -> SeededRun:
        return max(
            (r for r in self.runs if r.model == model and r.task == task), key=lambda r: r.index
        )

    def of_cell(self, model: str, task: str) -> list[SeededRun]:
        return sorted(
            (r for r in self.runs if r.model == model and r.task == task), key=lambda r: r.index
        )


def suite_run_id(index: int) -> str:
    return (EPOCH + timedelta(days=index)).strftime("%Y%m%d-%H%M%S")


def _sample(
    uid: str, run: str, i: int, ok: bool, errored: bool, model: str, task: str
) -> tuple[Any, ...]:
    question = f"{task} question {i}: what is {i} + {i}?"
    prompt = json.dumps([{"role": "user", "content": question}])
    answer = str(2 * i) if ok else f"{model} thinks {2 * i + 1}"
    values: dict[str, Any] = {
        "evaluation_uid": uid,
        "run": run,
        "sample_id": i,
        "shard": i % 2,
        "attempt": 1,
        "input_hash": f"{task}-{i:08d}",
        "prompt_hash": f"p-{task}-{i}",
        "prompt": prompt,
        "response": None if errored else answer,
        "scores": "{}" if errored else json.dumps({"exact_match": 1.0 if ok else 0.0}),
        "requests": 1,
        "input_tokens": 0 if errored else 12,
        "output_tokens": 0 if errored else 3,
        "truncated": False,
        "timed_out": 0,
        "cost_usd": Decimal("0") if errored else Decimal("0.00001"),
        "cache_hit": False,
        "cache_saved_usd": Decimal("0"),
        "latency_ms": None if errored else float(20 + (i % 50)),
        "error_class": "http_500" if errored else None,
        "error_message": "server error" if errored else None,
        "sample_group": None,
        "details": None,
    }
    return tuple(values[c] for c in COLUMNS)


async def seed_suite(
    conn: Any,
    *,
    namespace: str = "team-a",
    suite: str = "nightly",
    models: dict[str, int],
    tasks: list[str],
    suite_runs: int,
    samples: int,
    errored_every: int = 0,
) -> Seeded:
    """`suite_runs` succeeded suite runs of every model (accuracy in percent) on every task.
    With errored_every n, every n-th sample of a run errored (http_500, unscored)."""
    seeded = Seeded(namespace=namespace, suite=suite)
    for model, accuracy in models.items():
        for task in tasks:
            uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{suite}/{model}/{task}"))
            for index in range(suite_runs):
                run = f"{suite}-{model}-{task}-r{index}"
                started = EPOCH + timedelta(days=index)
                await conn.execute(
                    """INSERT INTO runs (evaluation_uid, run, namespace, evaluation_name, suite,
                       provider, model, dataset_source, spec_hash, shards, scorers, started_at,
                       cell, suite_run, succeeded_at)
                       VALUES ($1, $2, $3, $4, $5, 'openai', $6, 'builtin:sums', 'h', 2,
                       ARRAY['exact_match'], $7, $8, $9, $10)""",
                    uid,
                    run,
                    namespace,
                    f"{suite}-{model}-{task}",
                    suite,
                    model,
                    started,
                    f"{model}/{task}",
                    suite_run_id(index),
                    started + timedelta(minutes=10),
                )
                rows, right_count, errored = [], 0, 0
                for i in range(samples):
                    is_error = bool(errored_every) and i % errored_every == errored_every - 1
                    ok = not is_error and right(accuracy, i, index)
                    right_count += ok
                    errored += is_error
                    rows.append(_sample(uid, run, i, ok, is_error, model, task))
                await conn.copy_records_to_table("samples", records=rows, columns=COLUMNS)
                seeded.runs.append(
                    SeededRun(
                        evaluation_uid=uid,
                        run=run,
                        cell=f"{model}/{task}",
                        suite_run=suite_run_id(index),
                        model=model,
                        task=task,
                        index=index,
                        right=right_count,
                        samples=samples,
                        errored=errored,
                    )
                )
    return seeded
