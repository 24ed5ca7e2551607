"""A shard's attempts under a budget (issue 7 item 4): the termination message kept current
while it runs, the ledger of what ended attempts spent, and a retry's share cut by it."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest

from eval_api.ledger import Ledger, Spent
from eval_api.shard import ShardSummary, ShardUsage
from eval_operator.ledger import ledger_of
from eval_operator.pods import pod_view
from eval_runner.budget import Budget
from eval_runner.checkpoint import TerminationLog
from eval_runner.cli.shard import earlier_attempts
from eval_runner.errors import PermanentError
from tests.support.factories import pod, summary

RUN = "capped-abc123"


def test_the_termination_message_is_rewritten_in_place_and_never_shrinks(tmp_path: Path) -> None:
    log = TerminationLog(tmp_path / "termination-log")
    running = ShardSummary(total=10, completed=3, usage=ShardUsage(requests=4, cost_usd="0.5"))
    first = log.write(running, reserved=Decimal("0.25"))
    assert json.loads((tmp_path / "termination-log").read_text()) == json.loads(first)
    assert json.loads(first)["reservedUSD"] == "0.25"
    done = ShardSummary(state="done", total=10, completed=10)
    last = log.write(done)
    text = (tmp_path / "termination-log").read_text()
    assert len(text) >= len(first)  # padded: no truncate between two writes
    parsed = ShardSummary.model_validate(json.loads(text))
    assert parsed == ShardSummary.model_validate_json(last)
    assert parsed.reserved_usd is None  # nothing in flight any more
    log.close()


def test_what_a_killed_attempt_spent_includes_what_was_in_flight() -> None:
    checkpoint = ShardSummary(
        usage=ShardUsage(requests=5, cost_usd="1.5", judge=ShardUsage(requests=2, cost_usd="0.25")),
        reserved_usd="0.75",
    )
    assert checkpoint.spent() == (Decimal("2.5"), 7)


def test_the_ledger_counts_the_ended_attempts_of_retried_shards_only() -> None:
    killed = ShardSummary(usage=ShardUsage(requests=4, cost_usd="1"), reserved_usd="0.5")
    pods = [
        pod(RUN, 0, phase="Failed", attempt=0, exit_code=137, termination=killed),
        pod(RUN, 0, attempt=1, created="2026-11-23T10:01:00Z"),  # the retry, running
        pod(RUN, 1, phase="Succeeded", termination=summary(1, 5, 5)),  # never retried
    ]
    ledger = ledger_of([pod_view(p) for p in pods])
    assert ledger.root == {"0": Spent(attempts=1, cost_usd="1.5", requests=4)}


def test_an_attempt_that_ran_and_left_no_summary_makes_the_spending_unknown() -> None:
    lost = pod(RUN, 0, phase="Failed", exit_code=137)
    lost["status"]["containerStatuses"][0]["state"]["terminated"]["startedAt"] = "2026-11-23"
    ledger = ledger_of([pod_view(lost)])
    assert ledger.of(0).unknown is True
    budget = Budget(max_requests=10, max_cost=Decimal(5)).after(ledger.of(0))
    assert (budget.max_requests, budget.max_cost) == (0, Decimal(0))


def test_a_retry_gets_what_its_earlier_attempts_left() -> None:
    budget = Budget(max_requests=10, max_cost=Decimal("5")).after(
        Spent(attempts=2, cost_usd="1.25", requests=4)
    )
    assert (budget.max_requests, budget.max_cost) == (6, Decimal("3.75"))
    spent_all = Budget(max_requests=3).after(Spent(attempts=1, requests=7))
    assert spent_all.max_requests == 0


async def test_a_retry_waits_for_the_ledger_of_its_earlier_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.json"
    monkeypatch.setenv("EVAL_LEDGER_FILE", str(path))
    monkeypatch.setenv("EVAL_INDEX_FAILURES", "1")
    monkeypatch.setenv("EVAL_INDEX_IGNORED_FAILURES", "1")  # an eviction: a retry all the same
    monkeypatch.setenv("EVAL_LEDGER_WAIT_SECONDS", "10")

    async def the_operator_writes_it_later() -> None:
        path.write_text(Ledger({"0": Spent(attempts=1, requests=3)}).to_json())
        await asyncio.sleep(1.2)  # one attempt known: not yet enough
        path.write_text(Ledger({"0": Spent(attempts=2, requests=5)}).to_json())

    writer = asyncio.create_task(the_operator_writes_it_later())
    spent = await earlier_attempts(0)
    await writer
    assert (spent.attempts, spent.requests) == (2, 5)

    monkeypatch.setenv("EVAL_LEDGER_WAIT_SECONDS", "0")
    with pytest.raises(PermanentError, match="BudgetLedgerMissing|accounts for 2"):
        monkeypatch.setenv("EVAL_INDEX_FAILURES", "2")
        await earlier_attempts(0)


async def test_a_first_attempt_needs_no_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVAL_INDEX_FAILURES", raising=False)
    monkeypatch.delenv("EVAL_INDEX_IGNORED_FAILURES", raising=False)
    assert await earlier_attempts(3) == Spent()
