"""An EvalSuite's matrix as pure decisions (eval_operator.matrix): its cells, its runs on an
injected clock, maxParallelCells, the leaderboard and verdict, and the size of its status."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from eval_api import matrix as cells
from eval_api.cellreport import REPORT_BATCH_CELLS, BatchReport, CellReport
from eval_api.v1alpha1 import (
    DEFAULT_MAX_PARALLEL_CELLS,
    MATRIX_NAME_MAX,
    CellComparison,
    EvalSuiteSpec,
    EvaluationSpec,
    ScorerComparison,
)
from eval_operator import matrix
from eval_operator.settings import OperatorSettings
from tests.support.kubeapi.schema import apply_defaults, prune, validate
from tests.unit.test_health_flux import flux_health
from tests.unit.test_health_lua import health as argo_health

T0 = datetime(2026, 12, 1, 1, 0, 0, tzinfo=UTC)
SETTINGS = OperatorSettings()
ROOT = Path(__file__).resolve().parents[2]


def _schema(plural: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / f"{plural}.evals.io.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


SCHEMAS = {"Evaluation": _schema("evaluations"), "EvalSuite": _schema("evalsuites")}


def schema_errors(obj: dict[str, Any]) -> list[Any]:
    """What the apiserver would say of the object: nothing pruned, every rule held."""
    schema = SCHEMAS[obj["kind"]]
    assert prune(obj, schema, root=True) == obj, "a field the schema does not know"
    return validate(apply_defaults(obj, schema), schema, root=True)


UID = "5f0d6c1e-0000-4000-8000-000000000001"


def suite_body(spec: dict[str, Any], **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "EvalSuite",
        "metadata": {
            "name": "nightly",
            "namespace": "team",
            "uid": UID,
            "generation": 1,
            "creationTimestamp": "2026-12-01T00:30:00Z",
            "annotations": dict(annotations),
        },
        "spec": spec,
    }


def grid(models: int = 3, tasks: int = 2, **extra: Any) -> dict[str, Any]:
    return {
        "models": [
            {"name": f"m{i}", "model": {"name": f"model-{i}", "baseURL": "https://llm.example/v1"}}
            for i in range(models)
        ],
        "tasks": [
            {
                "name": f"t{j}",
                "dataset": {"builtin": "arithmetic"},
                "task": {"scorers": [{"type": "exact_match"}]},
                "thresholds": ["exact_match >= 0.5"],
            }
            for j in range(tasks)
        ],
        **extra,
    }


def view(cell: dict[str, Any], *, token: str, phase: str | None, score: float = 0.9) -> dict:
    """The cell as the index would show it once the operator had reacted to `token`."""
    name = cell["metadata"]["name"]
    return {
        "name": name,
        "uid": f"uid-{name}",
        "owners": [UID],
        "hash": cell["metadata"]["annotations"][matrix.CELL_HASH_ANNOTATION],
        "suspend": cell["spec"]["suspend"],
        "spec": dict(cell["spec"]),
        "phase": phase,
        "token": token,
        "run": f"{name}-{token[-6:]}",
        "score": score if phase == "Succeeded" else None,
        "ci95": [score - 0.1, min(score + 0.05, 1.0)] if phase == "Succeeded" else None,
        "n": 100 if phase == "Succeeded" else None,
        "cost": "0.25",
        "passed": "True" if phase == "Succeeded" else None,
        "reason": phase,
        "message": "",
    }


class Matrix:
    """A suite driven pass by pass, the way its reconcile would, on a clock the test moves."""

    def __init__(self, spec: dict[str, Any], **annotations: str) -> None:
        self.body = suite_body(spec, **annotations)
        self.spec = EvalSuiteSpec.model_validate(spec)
        self.status: dict[str, Any] = {}
        self.cells: dict[str, dict[str, Any]] = {}  # name -> view
        self.applied: dict[str, dict[str, Any]] = {}  # name -> last applied manifest
        self.now = T0
        self.last: matrix.MatrixPlan | None = None
        # The report Jobs made and not deleted yet: name -> the runs they ask about.
        self.batches: dict[str, tuple[str, ...]] = {}

    def step(self, reports: dict[str, dict[str, CellReport]] | None = None) -> matrix.MatrixPlan:
        inp = matrix.MatrixInput(
            suite=self.body,
            spec=self.spec,
            old=self.status,
            cells=self.cells,
            reports=reports or {},
            now=self.now,
            batches=dict(self.batches),
        )
        planned = matrix.plan(inp, SETTINGS)
        # What the suite's reconcile does with the report Jobs: makes the wanted ones, deletes
        # the ones no cell waits for.
        for job in planned.report_jobs:
            self.batches.setdefault(job["metadata"]["name"], matrix.report_runs(job))
        for name in planned.stale_reports:
            self.batches.pop(name, None)
        for cell in planned.apply:
            self.applied[cell["metadata"]["name"]] = cell
            existing = self.cells.get(cell["metadata"]["name"])
            if existing is not None:
                existing["hash"] = cell["metadata"]["annotations"][matrix.CELL_HASH_ANNOTATION]
                existing["suspend"] = cell["spec"]["suspend"]
                existing["spec"] = dict(cell["spec"])
        self.status = planned.status
        self.last = planned
        return planned

    def react(self, phase: str | None = "Running", names: list[str] | None = None) -> None:
        """The cells' own reconciles take up their tokens (all, or only `names`)."""
        for name, cell in self.applied.items():
            if names is not None and name not in names:
                continue
            token = cell["metadata"]["annotations"]["evals.io/rerun"]
            self.cells[name] = view(cell, token=token, phase=phase)

    def answers(
        self, jobs: list[dict[str, Any]], report: CellReport | BatchReport
    ) -> dict[str, dict[str, CellReport]]:
        """The report Jobs' termination messages as the reconcile reads them: every cell of
        each answered with `report` (or the batch failed as a whole)."""
        found = {}
        for job in jobs:
            runs = matrix.report_runs(job)
            batch = (
                report if isinstance(report, BatchReport) else BatchReport.of([report] * len(runs))
            )
            message = batch.to_message()
            assert len(message.encode()) <= 4096
            parsed = BatchReport.model_validate_json(message)
            found[job["metadata"]["name"]] = parsed.reports(
                runs, cells.regression_of(self.spec).alpha
            )
        return found

    def report_all(self, comparison: CellComparison | None = None) -> matrix.MatrixPlan:
        planned = self.step()
        report = CellReport(
            state="done", latency_p50_ms=120.0, latency_p95_ms=480.0, comparison=comparison
        )
        reports = self.answers(planned.report_jobs, report)
        planned = self.step(reports)
        for name in reports:  # deleted once the status holds their reports
            self.batches.pop(name, None)
        return planned


def test_cell_names_are_deterministic_label_safe_and_distinct() -> None:
    assert cells.cell_name("nightly", "gpt", "mmlu") == "nightly-gpt-mmlu"
    long = cells.cell_name("a" * 40, "b" * 40, "c" * 40)
    assert len(long) <= 63 and long == cells.cell_name("a" * 40, "b" * 40, "c" * 40)
    assert long != cells.cell_name("a" * 40, "b" * 40, "c" * 39 + "d")


def test_the_matrix_is_one_valid_owned_evaluation_per_cell() -> None:
    m = Matrix(grid())
    planned = m.step()
    assert [c["metadata"]["name"] for c in planned.apply] == [
        f"nightly-m{i}-t{j}" for i in range(3) for j in range(2)
    ]
    run_id = m.status["currentRun"]["id"]
    assert run_id == "20261201-010000" and m.status["currentRun"]["trigger"] == "Created"
    for cell in planned.apply:
        assert cell["metadata"]["ownerReferences"][0]["uid"] == UID
        assert cell["metadata"]["annotations"]["evals.io/rerun"] == run_id
        assert cell["metadata"]["labels"]["evals.io/suite"] == "nightly"
        EvaluationSpec.model_validate(cell["spec"])  # every CEL rule of Evaluation holds
        assert schema_errors(cell) == []
    # Nothing changed: nothing is applied again; the apiserver's defaults are no change.
    m.react()
    for view in m.cells.values():
        view["spec"] = {**view["spec"], "cancel": False, "execution": {"shards": 1}}
    assert m.step().apply == []
    # Someone edits a cell: the suite's fields are put back.
    m.cells["nightly-m0-t0"]["spec"] = {**m.cells["nightly-m0-t0"]["spec"], "thresholds": []}
    assert [c["metadata"]["name"] for c in m.step().apply] == ["nightly-m0-t0"]


def test_a_suite_created_with_a_rerun_annotation_runs_once() -> None:
    m = Matrix(grid(models=1, tasks=1), **{"evals.io/rerun": "1"})
    m.step()
    first = m.status["currentRun"]["id"]
    m.react("Running")
    m.step()
    assert m.status["currentRun"]["id"] == first and m.status["history"] == []


def test_an_invalid_cell_is_a_problem_not_a_half_applied_matrix() -> None:
    m = Matrix(grid(defaults={"budget": {"maxCostUSD": "5"}}))
    planned = m.step()
    assert planned.apply == []
    assert planned.problems and all("budget.maxCostUSD requires" in p for p in planned.problems)
    assert planned.problems[0].startswith("cell m0/t0: ")


def test_max_parallel_cells_runs_the_matrix_in_order_never_more_at_once() -> None:
    m = Matrix(grid(models=3, tasks=2, maxParallelCells=2))
    planned = m.step()
    assert [c["spec"]["suspend"] for c in planned.apply] == [False, False, True, True, True, True]
    m.react("Running")
    assert m.status["matrix"]["waiting"] == 4
    assert "4 waiting for a slot (maxParallelCells 2)" in m.last.conditions[0][3]
    most = 0
    while m.status["matrix"]["done"] != "6/6":
        running = [n for n, v in m.cells.items() if v["phase"] == "Running" and not v["suspend"]]
        most = max(most, len(running))
        if running:
            m.react("Succeeded", names=[running[0]])
        m.report_all()
        m.react("Running", names=[n for n, v in m.cells.items() if v["phase"] != "Succeeded"])
        m.step()
    assert most == 2
    assert m.status["currentRun"]["completionTime"]


def test_without_max_parallel_cells_the_default_bounds_the_cells_at_once() -> None:
    m = Matrix(grid(models=5, tasks=5))  # 25 cells, maxParallelCells unset
    planned = m.step()
    suspended = [c["spec"]["suspend"] for c in planned.apply]
    assert suspended.count(False) == DEFAULT_MAX_PARALLEL_CELLS == 20
    assert suspended == sorted(suspended)  # the first cells in matrix order run
    m.react("Running")
    assert m.status["matrix"]["waiting"] == 5
    assert "5 waiting for a slot (maxParallelCells 20)" in m.last.conditions[0][3]


def finish(m: Matrix, score: float = 0.9) -> None:
    m.step()
    m.react("Running")
    m.step()
    for name, cell in m.applied.items():
        token = cell["metadata"]["annotations"]["evals.io/rerun"]
        m.cells[name] = view(cell, token=token, phase="Succeeded", score=score)
    m.report_all()


def test_the_leaderboard_and_the_verdict_of_a_finished_run() -> None:
    m = Matrix(grid())
    m.step()
    m.react("Running")
    m.step()
    scores = {"m0": 0.7, "m1": 0.9, "m2": 0.9}
    for name, cell in m.applied.items():
        m.cells[name] = view(
            cell,
            token=cell["metadata"]["annotations"]["evals.io/rerun"],
            phase="Succeeded",
            score=scores[cell["metadata"]["labels"]["evals.io/model"]],
        )
    m.report_all()
    status = m.status
    assert [b["best"] for b in status["leaderboard"]] == ["m1", "m1"]  # first of the ties
    entry = status["leaderboard"][0]["entries"][0]
    assert entry["latencyP50Ms"] == 120.0 and entry["costUSD"] == "0.25" and entry["n"] == 100
    assert status["matrix"]["done"] == "6/6"
    assert status["history"][0]["passed"] is True and status["history"][0]["outcome"] == "Succeeded"
    assert ("Passed", "True", "Passed", "all 6 cells passed their thresholds") in m.last.conditions
    obj = {**m.body, "status": {**status, "observedGeneration": 1, "conditions": [
        {"type": t, "status": s, "reason": r, "message": msg} for t, s, r, msg in m.last.conditions
    ] + [{"type": "Ready", "status": "True", "reason": "Ready", "message": ""}]}}  # fmt: skip
    assert argo_health("EvalSuite", obj)["status"] == "Healthy"
    assert flux_health(obj) == "current"


def compared(regressed: bool, mde: float = 0.03) -> CellComparison:
    return CellComparison(
        reason="Compared",
        baseline="20261201-010000",
        baseline_run="nightly-m0-t0-abcdef",
        alpha="0.05",
        regressed=regressed,
        underpowered=mde > 0.02,
        scorers=[
            ScorerComparison(
                name="exact_match",
                test="mcnemar-exact",
                pairs=100,
                excluded=0,
                difference=-0.2 if regressed else -0.01,
                ci95=[-0.3, -0.1],
                p_value=0.001 if regressed else 0.6,
                min_detectable_effect=mde,
                regressed=regressed,
            )
        ],
    )


def test_a_regressed_cell_fails_the_run_and_gitops_sees_it() -> None:
    m = Matrix(grid(models=1, tasks=1, baseline="previous", regression={"maxDrop": "0.01"}))
    m.step()
    m.react("Succeeded")
    planned = m.report_all(compared(True))
    conditions = {c[0]: c for c in planned.conditions}
    assert conditions["Regressed"][1:3] == ("True", "Regression")
    assert conditions["Regressed"][3].startswith(
        "worse than baseline previous by more than 0.01 (p < 0.05): m0/t0; 1 cell(s) too small"
    )
    assert conditions["Passed"][1:3] == ("False", "Regressed")
    assert m.status["matrix"]["regressed"] == 1
    obj = {**m.body, "status": {**m.status, "observedGeneration": 1, "conditions": [
        {"type": t, "status": s, "reason": r, "message": msg} for t, s, r, msg in planned.conditions
    ] + [{"type": "Ready", "status": "True", "reason": "Ready", "message": ""}]}}  # fmt: skip
    assert argo_health("EvalSuite", obj)["status"] == "Degraded"
    assert flux_health(obj) == "failed"


def test_at_max_drop_0_the_power_note_says_the_smallest_drop_detected() -> None:
    # maxDrop 0 (the default): every finite sample misses some drop beyond 0, so "too small to
    # detect a drop of 0" said nothing; the note says how small a drop the cells do detect.
    m = Matrix(grid(models=2, tasks=1, baseline="previous"))
    m.step()
    m.react("Succeeded")
    planned = m.report_all(compared(False, mde=0.031))
    conditions = {c[0]: c for c in planned.conditions}
    assert conditions["Regressed"][1:3] == ("False", "NoRegression")
    assert conditions["Regressed"][3] == (
        "no cell is worse than baseline previous by more than 0 at alpha 0.05; the smallest "
        "drop detected with 80% power at alpha 0.05 is 0.031 (m0/t0, m1/t0; see "
        "minDetectableEffect)"
    )
    # With a margin, the note names the cells that would likely miss twice maxDrop.
    m = Matrix(grid(models=1, tasks=1, baseline="previous", regression={"maxDrop": "0.01"}))
    m.step()
    m.react("Succeeded")
    planned = m.report_all(compared(False, mde=0.031))
    assert {c[0]: c for c in planned.conditions}["Regressed"][3].endswith(
        "; 1 cell(s) too small to detect a drop of 0.02 (twice maxDrop) at alpha 0.05: m0/t0 "
        "(see minDetectableEffect)"
    )


def test_baseline_accepted_needs_an_accepted_run_and_a_run_is_not_its_own_baseline() -> None:
    spec = EvalSuiteSpec.model_validate(grid(baseline="accepted"))
    assert cells.baseline_selector(spec, None, "20261202-000000")[1][0] == "NoBaseline"
    assert cells.baseline_selector(spec, "20261201-000000", "20261202-000000") == (
        "suite-run:20261201-000000",
        None,
    )
    assert cells.baseline_selector(spec, "20261202-000000", "20261202-000000")[1][0] == (
        "IsBaseline"
    )


def test_a_rerun_annotation_starts_a_new_run_and_replaces_an_unfinished_one() -> None:
    m = Matrix(grid(models=1, tasks=1))
    m.step()
    m.react("Running")
    first = m.status["currentRun"]["id"]
    m.body["metadata"]["annotations"]["evals.io/rerun"] = "1"
    m.now += timedelta(seconds=5)
    planned = m.step()
    second = m.status["currentRun"]["id"]
    assert second != first and m.status["currentRun"]["trigger"] == "Rerun"
    assert m.status["history"][0]["id"] == first and m.status["history"][0]["outcome"] == "Replaced"
    assert planned.apply[0]["metadata"]["annotations"]["evals.io/rerun"] == second
    # The same annotation again starts nothing.
    m.react("Running")
    assert m.step().apply == [] and m.status["currentRun"]["id"] == second


def nightly(policy: str = "Forbid", **extra: Any) -> dict[str, Any]:
    return grid(
        models=1, tasks=1, schedule={"cron": "0 2 * * *", "concurrencyPolicy": policy, **extra}
    )


def test_a_schedule_reruns_the_matrix_on_time_and_a_long_outage_once() -> None:
    m = Matrix(nightly(historyLimit=3))
    finish(m)
    assert m.status["nextScheduleTime"] == "2026-12-01T02:00:00Z"
    assert m.last.recheck == pytest.approx(3600 - 0, abs=1)  # the operator asks again at 02:00
    m.now = datetime(2026, 12, 1, 2, 0, 5, tzinfo=UTC)
    m.step()
    assert m.status["currentRun"]["trigger"] == "Schedule"
    assert m.status["currentRun"]["scheduledFor"] == "2026-12-01T02:00:00Z"
    assert m.status["lastScheduleTime"] == "2026-12-01T02:00:00Z"
    finish(m)
    # The operator was down for five nights: one run, not five.
    m.now = datetime(2026, 12, 6, 9, 0, 0, tzinfo=UTC)
    planned = m.step()
    assert m.status["lastScheduleTime"] == "2026-12-06T02:00:00Z"
    assert ("Normal", "MissedSchedules") in {(e[0], e[1]) for e in planned.events}
    finish(m)
    m.now += timedelta(hours=1)
    m.step()
    assert len(m.status["history"]) == 3  # historyLimit
    assert [h["trigger"] for h in m.status["history"]] == ["Schedule", "Schedule", "Created"]


def test_forbid_waits_for_the_running_run_then_runs_once() -> None:
    m = Matrix(nightly("Forbid"))
    m.step()
    m.react("Running")
    first = m.status["currentRun"]["id"]
    m.now = datetime(2026, 12, 2, 2, 0, 10, tzinfo=UTC)
    m.step()
    assert m.status["currentRun"]["id"] == first  # still the first, still running
    finish(m)
    assert m.status["currentRun"]["id"] == first and m.status["currentRun"]["completionTime"]
    m.step()  # the first pass after it finished starts the missed 02:00 run, once
    assert m.status["currentRun"]["id"] != first and m.status["currentRun"]["trigger"] == "Schedule"


def test_a_starting_deadline_skips_a_run_that_is_too_late() -> None:
    m = Matrix(nightly(startingDeadlineSeconds=600))
    finish(m)
    first = m.status["currentRun"]["id"]
    m.now = datetime(2026, 12, 1, 3, 0, 0, tzinfo=UTC)  # an hour after 02:00
    planned = m.step()
    assert m.status["currentRun"]["id"] == first
    assert ("Warning", "MissedSchedule") in {(e[0], e[1]) for e in planned.events}
    assert m.status["lastScheduleTime"] == "2026-12-01T02:00:00Z"


def test_allow_lets_a_running_cell_finish_the_old_run_first() -> None:
    m = Matrix(
        grid(models=2, tasks=1, schedule={"cron": "0 2 * * *", "concurrencyPolicy": "Allow"})
    )
    m.step()
    m.react("Running")
    first = m.status["currentRun"]["id"]
    # One cell finishes, the other still runs when 02:00 comes.
    m.react("Succeeded", names=["nightly-m0-t0"])
    m.report_all()
    m.now = datetime(2026, 12, 1, 2, 0, 1, tzinfo=UTC)
    planned = m.step()
    tokens = {
        c["metadata"]["name"]: c["metadata"]["annotations"]["evals.io/rerun"] for c in planned.apply
    }
    second = m.status["currentRun"]["id"]
    assert tokens == {"nightly-m0-t0": second}  # m1 keeps running the first run
    assert m.status["history"][0]["id"] == first
    assert m.status["history"][0]["outcome"] == "Superseded"
    m.react("Succeeded", names=["nightly-m1-t0"])
    planned = m.step()
    assert [c["metadata"]["annotations"]["evals.io/rerun"] for c in planned.apply] == [second]


def test_a_20_by_20_matrix_status_stays_small() -> None:
    m = Matrix(grid(models=20, tasks=20, baseline="previous"))
    finish(m)
    m.step()
    report = CellReport(
        state="done", latency_p50_ms=1.0, latency_p95_ms=2.0, comparison=compared(False)
    )
    planned = m.step(m.answers(m.step().report_jobs, report))
    assert m.status["matrix"]["cells"] == 400 and m.status["matrix"]["done"] == "400/400"
    size = len(json.dumps(m.status, separators=(",", ":")))
    print(f"status of a 20 x 20 matrix: {size} bytes")
    # etcd's limit is 1.5 MiB per object; the status of 400 compared cells stays far below.
    assert size < 400 * 1024
    conditions = [
        {"type": t, "status": s, "reason": r, "message": msg,
         "lastTransitionTime": "2026-12-01T00:00:00Z"}
        for t, s, r, msg in planned.conditions
    ]  # fmt: skip
    assert schema_errors({**m.body, "status": {**m.status, "conditions": conditions}}) == []


# etcd refuses a request over 1.5 MiB (--max-request-bytes' default), the whole object: the
# metadata, the spec and the status.
ETCD_OBJECT_LIMIT = 1536 * 1024


def test_the_largest_matrix_admission_allows_stays_within_etcds_limit() -> None:
    """50 models x 8 tasks (400 cells, admission's maximum) with the longest names, 16 scorers
    a task, every cell regressed on every scorer with a long message, 100 runs of history
    (historyLimit's maximum) written by an operator that listed 50 names a run."""
    long = "x" * (MATRIX_NAME_MAX - 6)
    spec = {
        "models": [
            {"name": f"m{i:02d}-{long}"[: MATRIX_NAME_MAX],
             "model": {"name": f"vendor/model-{i}-" + "n" * 100,
                       "baseURL": f"https://gateway.example/v1/{i}/" + "p" * 80}}
            for i in range(50)
        ],
        "tasks": [
            {"name": f"t{j}-{long}"[: MATRIX_NAME_MAX],
             "dataset": {"builtin": "arithmetic"},
             "task": {"scorers": [
                 {"type": "exact_match", "name": f"s{k:02d}_" + "z" * 59} for k in range(16)]},
             "thresholds": ["s00_" + "z" * 59 + " >= 0.5"]}
            for j in range(8)
        ],
        "baseline": "previous",
        "schedule": {"cron": "0 2 * * *", "historyLimit": 100},
    }  # fmt: skip
    worst = compared(True).model_copy(update={"message": "m" * 3000})
    worst = worst.model_copy(
        update={"scorers": [
            worst.scorers[0].model_copy(update={"name": f"s{k:02d}_" + "z" * 59})
            for k in range(16)]}
    )  # fmt: skip

    def run_night(m: Matrix) -> None:
        m.step()
        m.react("Running")
        m.step()
        for name, cell in m.applied.items():
            token = cell["metadata"]["annotations"]["evals.io/rerun"]
            m.cells[name] = view(cell, token=token, phase="Succeeded", score=0.1)
        m.report_all(worst)

    m = Matrix(spec)
    run_night(m)
    assert m.status["matrix"]["cells"] == 400 and m.status["matrix"]["regressed"] == 400
    # 98 earlier runs, as an operator that listed up to 50 cells a run wrote them.
    (latest,) = m.status["history"]
    names = [f"{'m' * 40}/{'t' * 40}"] * 50
    m.status["history"] = [latest] + [
        {**latest, "id": f"2026{i:04d}-010000", "startTime": f"2026-01-01T{i % 24:02d}:00:00Z",
         "regressed": names, "notPassed": names}
        for i in range(98)
    ]  # fmt: skip
    m.now += timedelta(days=1)  # the next night's run, regressed the same way
    run_night(m)
    assert len(m.status["history"]) == 100 and m.status["matrix"]["regressed"] == 400
    assert all(len(h["regressed"]) <= matrix.LISTED_CELLS for h in m.status["history"])
    assert m.status["history"][0]["regressedCount"] == 400
    entry = m.status["leaderboard"][0]["entries"][0]
    assert (
        len(entry["comparison"]["scorers"]) == 1 and entry["comparison"]["regressedScorers"] == 16
    )

    conditions = [
        {"type": t, "status": v, "reason": r, "message": msg,
         "lastTransitionTime": "2026-12-01T00:00:00Z", "observedGeneration": 1}
        for t, v, r, msg in m.last.conditions
    ]  # fmt: skip
    status = {**m.status, "conditions": conditions}
    body = {**m.body, "status": status}
    assert schema_errors(body) == []
    assert all(len(c["message"]) < 4096 for c in conditions)
    status_size = len(json.dumps(status, separators=(",", ":")))
    object_size = len(json.dumps(body, separators=(",", ":")))
    print(f"largest matrix: status {status_size} bytes, object {object_size} bytes")
    assert status_size < 768 * 1024  # the design's bound: half of etcd's limit
    assert object_size < ETCD_OBJECT_LIMIT


def test_the_report_job_is_valid_restricted_and_named_by_its_question() -> None:
    m = Matrix(grid(models=1, tasks=1, baseline="previous"))
    finish(m)
    m.step()
    (job,) = m.step().report_jobs or [None]
    if job is None:  # reported already by finish(): ask for one with another rule
        m.spec = EvalSuiteSpec.model_validate(grid(models=1, tasks=1, baseline="previous",
                                                   regression={"maxDrop": "0.1"}))  # fmt: skip
        (job,) = m.step().report_jobs
    kubernetes_validate.validate(job, "1.30", strict=True)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "cell-report" and "--baseline" in args and "previous" in args
    assert len(job["metadata"]["name"]) <= 63
    assert job["metadata"]["name"] != matrix.report_job_name(
        "nightly-m0-t0-abcdef", "previous", EvalSuiteSpec.model_validate(
            grid(models=1, tasks=1, baseline="previous", regression={"maxDrop": "0.2"})
        ).regression)  # fmt: skip


# --- batched cell reports (issue 17, 4.18) -----------------------------------------------------


def succeed(m: Matrix, names: list[str] | None = None) -> None:
    """The cells (all, or `names`) succeed in the current run."""
    for name, cell in m.applied.items():
        if names is None or name in names:
            token = cell["metadata"]["annotations"]["evals.io/rerun"]
            m.cells[name] = view(cell, token=token, phase="Succeeded")


def asked(jobs: list[dict[str, Any]]) -> list[str]:
    return [run for job in jobs for run in matrix.report_runs(job)]


DONE = CellReport(state="done", latency_p50_ms=120.0, latency_p95_ms=480.0)


def test_a_20_by_20_run_finishing_at_once_is_reported_by_a_few_jobs() -> None:
    # Before: one report Job (one pod) per cell, 400 for this run.
    m = Matrix(grid(models=20, tasks=20, maxParallelCells=400))
    m.step()
    m.react("Running")
    m.step()
    succeed(m)
    planned = m.step()
    jobs = planned.report_jobs
    runs = [v["run"] for v in m.cells.values()]
    print(f"report Jobs for a 20 x 20 run: {len(jobs)} (batches of {REPORT_BATCH_CELLS})")
    assert len(jobs) == -(-400 // REPORT_BATCH_CELLS) == 50
    assert sorted(asked(jobs)) == sorted(runs)  # every cell asked, once
    for job in jobs:
        kubernetes_validate.validate(job, "1.30", strict=True)
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args.count("--cell-run") == len(matrix.report_runs(job)) <= REPORT_BATCH_CELLS
        assert len(job["metadata"]["name"]) <= 63
    names = [j["metadata"]["name"] for j in jobs]
    assert len(set(names)) == 50
    # A replayed pass asks for the same Jobs, by the same names: nothing new.
    assert [j["metadata"]["name"] for j in m.step().report_jobs] == names
    # So does a pass of an operator that does not know of them (the same waiting cells).
    m.batches.clear()
    assert [j["metadata"]["name"] for j in m.step().report_jobs] == names
    planned = m.step(m.answers(jobs, DONE))
    for name in names:
        m.batches.pop(name)
    assert m.status["matrix"]["done"] == "400/400"
    assert m.status["currentRun"]["completionTime"]
    entries = [e for board in m.status["leaderboard"] for e in board["entries"]]
    assert all(e["latencyP50Ms"] == 120.0 and e["reportJob"] in names for e in entries)
    assert m.step().report_jobs == [] and m.last.stale_reports == []


def test_cells_finishing_at_different_times_are_reported_by_later_batches() -> None:
    m = Matrix(grid(models=2, tasks=5, maxParallelCells=10))
    m.step()
    m.react("Running")
    m.step()
    first_cells = [f"nightly-m0-t{j}" for j in range(3)]
    succeed(m, first_cells)
    (first,) = m.step().report_jobs
    assert asked([first]) == [m.cells[n]["run"] for n in first_cells]
    # Two more succeed while the first Job runs: a second Job asks for them alone.
    later_cells = ["nightly-m0-t3", "nightly-m1-t0"]
    succeed(m, later_cells)
    jobs = m.step().report_jobs
    assert [j["metadata"]["name"] for j in jobs][0] == first["metadata"]["name"]
    (second,) = jobs[1:]
    assert asked([second]) == [m.cells[n]["run"] for n in later_cells]
    # The first Job's reports arrive: its cells are reported, the others still wait.
    m.step(m.answers([first], DONE))
    m.batches.pop(first["metadata"]["name"])
    entries = {e["evaluation"]: e for b in m.status["leaderboard"] for e in b["entries"]}
    assert all(entries[n]["reportJob"] == first["metadata"]["name"] for n in first_cells)
    assert all("reportJob" not in entries[n] for n in later_cells)
    assert [j["metadata"]["name"] for j in m.step().report_jobs] == [second["metadata"]["name"]]
    # The rest succeed: a third Job for them; the status is kept from pass to pass.
    succeed(m)
    jobs = m.step().report_jobs
    assert [j["metadata"]["name"] for j in jobs[:1]] == [second["metadata"]["name"]]
    assert len(asked(jobs[1:])) == 5
    m.step(m.answers(jobs, DONE))
    assert m.status["matrix"]["done"] == "10/10" and m.status["currentRun"]["completionTime"]


def test_a_failed_batch_is_retried_and_a_permanent_failure_is_reported() -> None:
    m = Matrix(grid(models=1, tasks=3))
    m.step()
    m.react("Running")
    m.step()
    succeed(m)
    (job,) = m.step().report_jobs
    name = job["metadata"]["name"]
    # The store was down: the Job controller gave up, the reconcile deleted the Job; the
    # same cells are asked again, by the same name.
    m.batches.pop(name)
    (again,) = m.step().report_jobs
    assert again["metadata"]["name"] == name and asked([again]) == asked([job])
    # A report that left a cell out (never expected: a batch is sized to fit) asks for it.
    runs = matrix.report_runs(job)
    partial = BatchReport(cells=BatchReport.of([DONE, DONE]).cells)
    planned = m.step(m.answers([job], partial))
    m.batches.pop(name)
    (rest,) = m.step().report_jobs
    assert matrix.report_runs(rest) == runs[2:] and rest["metadata"]["name"] != name
    assert planned.stale_reports == []
    # A permanent failure of the whole batch: its cells say so and are not asked again.
    planned = m.step(m.answers([rest], BatchReport.failed("InvalidBaseline", "not understood")))
    m.batches.pop(rest["metadata"]["name"])
    entries = [e for b in m.status["leaderboard"] for e in b["entries"]]
    assert entries[2]["comparison"] == {
        "reason": "ReportFailed",
        "message": "InvalidBaseline: not understood",
    }
    assert m.step().report_jobs == [] and m.status["currentRun"]["completionTime"]


def test_a_report_job_of_a_replaced_run_is_deleted() -> None:
    m = Matrix(grid(models=1, tasks=2))
    m.step()
    m.react("Running")
    m.step()
    succeed(m)
    (job,) = m.step().report_jobs
    # The suite is run again before the report came: no cell waits for that Job any more.
    m.body["metadata"]["annotations"]["evals.io/rerun"] = "again"
    m.now += timedelta(seconds=5)
    planned = m.step()
    assert planned.stale_reports == [job["metadata"]["name"]] and planned.report_jobs == []


def test_a_leaderboard_entry_keeps_its_count_of_regressed_scorers_from_pass_to_pass() -> None:
    m = Matrix(grid(models=1, tasks=1, baseline="previous"))
    m.step()
    m.react("Succeeded")
    many = compared(True).model_copy(
        update={"scorers": [compared(True).scorers[0].model_copy(update={"name": f"s{k}"})
                            for k in range(5)]}
    )  # fmt: skip
    m.report_all(many)
    entry = m.status["leaderboard"][0]["entries"][0]
    assert entry["comparison"]["regressedScorers"] == 5
    m.step()  # the next pass keeps the entry as it was
    assert m.status["leaderboard"][0]["entries"][0]["comparison"]["regressedScorers"] == 5
