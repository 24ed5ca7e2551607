"""`eval-runner cell-report` takes several cells in one invocation (issue 17, 4.18): one store
connection, each cell reported in the order asked, a cell whose run is not in the store
reported as failed without failing the others, a store that fails failing the batch."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from eval_api.cellreport import BatchReport
from eval_runner import cellreport
from eval_runner.cellreport import CellRun, report_cells
from eval_runner.cli import _parser


class FakeStore:
    """The three queries a report without a baseline asks, per cell."""

    def __init__(self, stored: set[str], fail_on: str | None = None) -> None:
        self.stored, self.fail_on, self.asked = stored, fail_on, []

    async def fetchrow(self, query: str, uid: str, run: str, *args: Any) -> Any:
        self.asked.append(run)
        if run == self.fail_on:
            raise OSError("connection reset")
        if run not in self.stored:
            return None
        return {"namespace": "team", "suite": "s", "started_at": None, "scorers": ["em"]}

    async def fetchval(self, query: str, uid: str, run: str) -> Any:
        return [10.0 * len(run), 20.0 * len(run)]


def cell(run: str) -> CellRun:
    return CellRun("team", "s", f"m/{run}", "20261201-010000", f"uid-{run}", run)


def test_several_cells_on_one_connection_and_a_missing_run_fails_only_its_cell() -> None:
    store = FakeStore({"a", "ccc"})
    reports = asyncio.run(
        report_cells(store, [cell("a"), cell("bb"), cell("ccc")], "none",
                     max_drop=Decimal(0), alpha=Decimal("0.05"))
    )  # fmt: skip
    assert store.asked == ["a", "bb", "ccc"]
    assert [r.state for r in reports] == ["done", "error", "done"]
    assert reports[1].reason == "RunNotStored"
    assert reports[2].latency_p50_ms == 30.0
    message = BatchReport.of(reports).to_message()
    back = BatchReport.model_validate_json(message).reports(["a", "bb", "ccc"], "0.05")
    assert back["a"].latency_p95_ms == 20.0 and back["bb"].reason == "RunNotStored"


def test_a_store_that_fails_fails_the_batch_to_be_retried() -> None:
    with pytest.raises(OSError):
        asyncio.run(
            report_cells(FakeStore({"a", "b"}, fail_on="b"), [cell("a"), cell("b")], "none",
                         max_drop=Decimal(0), alpha=Decimal("0.05"))
        )  # fmt: skip


def test_the_cli_takes_every_cell_and_writes_one_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    async def fake_run_reports(env: Any, cells: list[CellRun], baseline: str, **kw: Any):
        seen.update(cells=cells, baseline=baseline, **kw)
        return BatchReport.failed("StoreUnreachable", "down"), 1

    monkeypatch.setattr(cellreport, "run_reports", fake_run_reports)
    log = tmp_path / "termination-log"
    args = _parser().parse_args(
        ["cell-report", "--namespace", "team", "--suite", "s", "--suite-run", "r1",
         "--cell-run", "m/t1", "uid-1", "run-1", "--cell-run", "m/t2", "uid-2", "run-2",
         "--baseline", "previous", "--max-drop", "0.05", "--termination-log", str(log)]
    )  # fmt: skip
    assert args.command(args) == 1
    assert [(c.cell, c.evaluation_uid, c.run, c.suite_run) for c in seen["cells"]] == [
        ("m/t1", "uid-1", "run-1", "r1"),
        ("m/t2", "uid-2", "run-2", "r1"),
    ]
    assert seen["baseline"] == "previous" and seen["max_drop"] == Decimal("0.05")
    assert json.loads(log.read_text()) == {"error": ["StoreUnreachable", "down"]}
