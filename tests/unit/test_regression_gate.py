"""The suite's regression gate deciding a cell early (issue 20), on the operator's side: which
runs get a gate and what their pods are told, how status decides on the shards' paired sums,
and how the suite reads a cell the gate decided."""

from __future__ import annotations

from typing import Any

import pytest

from eval_api import environment
from eval_api.cellreport import comparison_columns, decided_early
from eval_api.earlystop import GROUPED_GATE, RegressionGate, evaluate, gate_state
from eval_api.shard import BaselineSums, PairedSums, ScoreSums, ShardSummary
from eval_api.v1alpha1 import EvalSuiteSpec, EvaluationSpec
from eval_api.v1alpha1.execution import EarlyStopSpec
from eval_operator import matrix
from eval_operator.builders.job import build_job
from eval_operator.runplan import GatePlan, RunPlan
from eval_operator.status import _paired
from tests.support.factories import evaluation, job, plan, pod
from tests.unit.test_matrix import Matrix, compared, grid
from tests.unit.test_status import RUN, observe, status_of
from tests.unit.test_suite_builders import SETTINGS

EARLY_STOP = {"when": "Verdict"}
PREVIOUS = "nightly-m0-t0-prev"


def cell(
    *, early_stop: bool = True, group_field: str | None = None, token: str = "20261206-020000"
) -> dict[str, Any]:
    ev = evaluation(
        name="nightly-m0-t0",
        labels={"evals.io/suite": "nightly", "evals.io/model": "m0", "evals.io/task": "t0"},
        annotations={"evals.io/rerun": token},
    )
    ev["spec"]["suiteRef"] = {"name": "nightly"}
    if early_stop:
        ev["spec"]["execution"] = {"earlyStop": dict(EARLY_STOP)}
    if group_field:
        ev["spec"]["task"]["groupField"] = group_field
    return ev


def suite(**extra: Any) -> EvalSuiteSpec:
    return EvalSuiteSpec.model_validate(grid(models=1, tasks=1, **extra))


def test_a_cell_with_early_stop_and_a_baseline_gets_a_gate() -> None:
    gate = matrix.gate_of(cell(), suite(baseline="previous", regression={"maxDrop": "0.02"}), None)
    assert gate == GatePlan(cell="m0/t0", baseline="previous", max_drop="0.02", alpha="0.05")
    accepted = matrix.gate_of(cell(), suite(baseline="accepted"), "20261205-020000")
    assert accepted is not None and accepted.baseline == "suite-run:20261205-020000"
    named = matrix.gate_of(cell(), suite(baseline="20261201-020000"), None)
    assert named is not None and named.baseline == "suite-run:20261201-020000"


@pytest.mark.parametrize(
    ("ev", "spec", "accepted"),
    [
        (cell(), suite(), None),  # no baseline: nothing to compare with
        (cell(early_stop=False), suite(baseline="previous"), None),  # runs to the end anyway
        (cell(), suite(baseline="accepted"), None),  # no run accepted yet
        (cell(token="20261205-020000"), suite(baseline="accepted"), "20261205-020000"),
        (evaluation(), suite(baseline="previous"), None),  # not a cell of the matrix
    ],
)
def test_no_gate_where_there_is_nothing_to_decide(
    ev: dict[str, Any], spec: EvalSuiteSpec, accepted: str | None
) -> None:
    assert matrix.gate_of(ev, spec, accepted) is None


def test_the_cells_pods_are_told_their_cell_and_baseline() -> None:
    ev = cell()
    spec = EvaluationSpec.model_validate(ev["spec"])
    suite_spec = suite(baseline="previous")
    run_plan = RunPlan.of(spec, ev["spec"], 1, "run-1").model_copy(
        update={"regression": matrix.gate_of(ev, suite_spec, None)}
    )
    built = build_job(ev, spec, "run-1", run_plan, SETTINGS, ("nightly", suite_spec))
    env = {
        e["name"]: e.get("value") for e in built["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env[environment.CELL] == "m0/t0"
    assert env[environment.BASELINE] == "previous"
    # The plan travels on the Job (what status decides by).
    assert (
        RunPlan.model_validate_json(
            built["metadata"]["annotations"]["evals.io/run-plan"]
        ).regression
        == run_plan.regression
    )
    without = RunPlan.of(spec, ev["spec"], 1, "run-1")
    built = build_job(ev, spec, "run-1", without, SETTINGS, ("nightly", suite_spec))
    names = {e["name"] for e in built["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert environment.CELL not in names and environment.BASELINE not in names


def shard(index: int, paired: PairedSums | None, run: str | None = PREVIOUS) -> ShardSummary:
    """A running shard of 1,000 whose prefix of 300 scored 290 right, paired as given."""
    sums = ScoreSums(n=300, sum=290.0, sumsq=290.0, seq_n=300, seq_sum=290.0)
    baseline = None
    if paired is not None or run is None:
        baseline = BaselineSums(
            run=run, suite_run=None if run is None else "20261205-020000",
            paired={} if paired is None else {"exact_match": paired, "numeric": paired},
        )  # fmt: skip
    return ShardSummary(
        shard=index, shards=2, state="running", total=1000, completed=300,
        scores={"exact_match": sums, "numeric": sums.model_copy()}, run_total=2000,
        baseline=baseline,
    )  # fmt: skip


def gated_status(
    *summaries: ShardSummary, old: dict[str, Any] | None = None, sequential: bool = True
) -> dict[str, Any]:
    run_plan = plan(RUN, shards=2).model_copy(
        update={
            "early_stop": EarlyStopSpec.model_validate(EARLY_STOP),
            "regression": GatePlan(
                cell="m0/t0", baseline="previous", max_drop="0.02", alpha="0.05",
                sequential=sequential,
            ),
        }
    )  # fmt: skip
    pods = [pod(RUN, 0), pod(RUN, 1)]
    obs = observe(
        job=job(RUN, run_plan=run_plan, active=2),
        plan=run_plan,
        pods=pods,
        live={f"{RUN}-{s.shard}-0": s for s in summaries},
    )
    return status_of(obs, old)


def test_the_run_is_decided_once_thresholds_and_gate_are() -> None:
    # Every pair the same: the candidate is shown not worse by more than maxDrop.
    same = PairedSums(n=300, sum=150.0, variance=0.0)
    status = gated_status(shard(0, same), shard(1, same))
    stopped = status["stoppedEarly"]
    assert stopped["reason"] == "VerdictKnown" and stopped["passed"] is True
    regression = stopped["regression"]
    assert regression["decision"] == "NotRegressed"
    assert regression["baselineRun"] == "nightly-m0-t0-prev" and regression["pairs"] == 600
    lower, upper = regression["differences"]["exact_match"]
    assert -0.02 < lower < 0 < upper
    assert "not worse than baseline run nightly-m0-t0-prev" in stopped["message"]
    # A clear drop: 20% of the pairs only the baseline got right.
    worse = PairedSums()
    for i in range(300):
        worse.add(0.0, 1.0) if i % 5 == 0 else worse.add(1.0, 1.0)
    status = gated_status(shard(0, worse), shard(1, worse))
    assert status["stoppedEarly"]["regression"]["decision"] == "Regressed"
    # The first decision is kept whatever later sums say.
    later = gated_status(shard(0, same), shard(1, same), old=status)
    assert later["stoppedEarly"]["regression"]["decision"] == "Regressed"


def test_an_undecided_gate_or_shards_paired_with_different_runs_keep_the_run_going() -> None:
    close = PairedSums()
    for i in range(300):
        close.add(0.0, 1.0) if i % 25 == 0 else close.add(1.0, 1.0)  # 4% worse: undecided
    status = gated_status(shard(0, close), shard(1, close))
    assert "stoppedEarly" not in status
    other = shard(1, PairedSums(n=300, sum=150.0), run="nightly-m0-t0-older")
    status = gated_status(shard(0, PairedSums(n=300, sum=150.0)), other)
    assert "stoppedEarly" not in status
    # No earlier run of the cell: no gate, the thresholds decide.
    status = gated_status(shard(0, None, run=None), shard(1, None, run=None))
    assert status["stoppedEarly"]["reason"] == "VerdictKnown"
    assert "regression" not in status["stoppedEarly"]


def test_the_suite_takes_the_gates_decision_over_the_fixed_sample_tests() -> None:
    m = Matrix(grid(models=1, tasks=1, baseline="previous", regression={"maxDrop": "0.01"}))
    m.step()
    m.react("Succeeded")
    for view in m.cells.values():
        view["regressionDecision"] = {
            "decision": "NotRegressed",
            "baselineRun": "nightly-m0-t0-abcdef",
            "pairs": 320,
            "message": "not worse than baseline run nightly-m0-t0-abcdef by more than maxDrop 0.01",
        }
    m.report_all(compared(True))  # the fixed-sample test on the asked samples says regressed
    entry = m.status["leaderboard"][0]["entries"][0]
    assert entry["comparison"]["decidedEarly"] is True
    assert entry["comparison"]["regressed"] is False
    assert entry["comparison"]["message"].startswith(
        "decided early by the regression gate: not worse"
    )
    assert m.status["matrix"]["regressed"] == 0
    # A report against another run than the gate's is left as the report says.
    for view in m.cells.values():
        view["regressionDecision"]["baselineRun"] = "nightly-m0-t0-older"
    m.status = {}
    m.batches = {}
    m.report_all(compared(True))
    entry = m.status["leaderboard"][0]["entries"][0]
    assert "decidedEarly" not in entry["comparison"]
    assert entry["comparison"]["regressed"] is True


def test_the_leaderboards_show_a_verdict_decided_early_without_its_fixed_sample_p_value() -> None:
    decided = compared(True).model_copy(update={"decided_early": True})
    assert comparison_columns(decided) == ("-0.2000", "early", "yes")
    assert comparison_columns(compared(True)) == ("-0.2000", "0.001", "yes")


def test_the_gate_decides_on_the_results_the_baseline_has() -> None:
    """A scorer added since the baseline run has no pairs: it neither blocks NotRegressed nor
    takes a share of alpha."""
    same = PairedSums(n=600, sum=300.0, variance=0.0)
    sums = BaselineSums(run=PREVIOUS, scorers=["exact_match"], paired={"exact_match": same})
    state = gate_state(RegressionGate(0.02, 0.05), sums, ["exact_match", "numeric"], 100, 30)
    assert state.decision == "NotRegressed" and list(state.differences) == ["exact_match"]
    # Nothing in common with the baseline: no gate, the thresholds decide.
    spec = EarlyStopSpec.model_validate(EARLY_STOP)
    scores = ScoreSums(n=300, sum=290.0, sumsq=290.0, seq_n=300, seq_sum=290.0)
    none_shared = BaselineSums(run=PREVIOUS, scorers=[])
    state = evaluate(
        spec, ["exact_match >= 0.8"], {"exact_match": scores}, 1000,
        gate=RegressionGate(0.02, 0.05), baseline=none_shared,
    )  # fmt: skip
    assert state.decision == "VerdictKnown" and state.regression is None


def test_shards_paired_with_different_runs_say_so() -> None:
    pairs = PairedSums(n=300, sum=150.0)
    status = gated_status(shard(0, pairs), shard(1, pairs, run="nightly-m0-t0-older"))
    assert "stoppedEarly" not in status
    baseline, note = _paired({0: shard(0, pairs), 1: shard(1, pairs, run="nightly-m0-t0-older")})
    assert baseline is None
    assert note == (
        "the shards paired with different baseline runs (nightly-m0-t0-older, "
        "nightly-m0-t0-prev): not decided"
    )
    assert _paired({})[1] == "waiting for the shards' pairs with the baseline"


def test_taking_the_gates_decision_twice_changes_nothing() -> None:
    cached = compared(False).model_dump(mode="json", by_alias=True, exclude_none=True)
    cached.update(reason="CachedAnswers", message="most answers came from the cache")
    decided = {"decision": "Regressed", "baselineRun": cached["baselineRun"], "message": "worse"}
    once = decided_early(cached, decided, 200)
    assert once["regressed"] is True and once["message"].endswith(
        "; decided early by the regression gate: worse"
    )
    assert decided_early(once, decided, 200) == once


def test_a_grouped_cell_of_a_gated_suite_asks_every_sample() -> None:
    """task.groupField: its pairs are not independent, so no sequential gate; stopping on the
    thresholds would leave the cell report's tests on a sample the stop chose."""
    ev = cell(group_field="passage")
    suite_spec = suite(baseline="previous", regression={"maxDrop": "0.02"})
    gate = matrix.gate_of(ev, suite_spec, None)
    assert gate is not None and gate.sequential is False
    spec = EvaluationSpec.model_validate(ev["spec"])
    run_plan = RunPlan.of(spec, ev["spec"], 1, "run-1").model_copy(update={"regression": gate})
    built = build_job(ev, spec, "run-1", run_plan, SETTINGS, ("nightly", suite_spec))
    names = {e["name"] for e in built["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert environment.CELL not in names  # its shards pair nothing
    decided = evaluate(
        EarlyStopSpec.model_validate(EARLY_STOP),
        ["exact_match >= 0.8"],
        {"exact_match": ScoreSums(n=300, sum=290.0, sumsq=290.0, seq_n=300, seq_sum=290.0)},
        1000,
        hold=GROUPED_GATE,
    )
    assert decided.decision is None and decided.message.endswith(GROUPED_GATE)
    # The operator holds it whatever the shards report.
    grouped = shard(0, None, run=None), shard(1, None, run=None)
    assert "stoppedEarly" not in gated_status(*grouped, sequential=False)
    assert gated_status(*grouped)["stoppedEarly"]["reason"] == "VerdictKnown"
