"""An EvalSuite's matrix: its cells as child Evaluations, its runs, leaderboard and verdict.

Pure functions of the suite, its cells as the watch sees them, the cell reports read so far and
the clock; the suite's reconcile (handlers/suite.py) applies what they decide.

- Cells: one Evaluation per model x task, named <suite>-<model>-<task> (shortened with a hash
  when too long), labelled with suite, model and task, owned by the suite, with spec.suiteRef.
- Runs: a suite run has an id (the UTC time it started, e.g. 20261201-020000), which is every
  cell's evals.io/rerun token: a new id re-runs every cell. Runs start when the matrix first
  exists, when the suite's own evals.io/rerun annotation changes, and on spec.schedule.
- maxParallelCells: the cells past the bound are created suspended and resumed in matrix order
  as others finish.
- Once a cell's run has succeeded, a cell report Job (eval-runner cell-report) records it in the
  store, measures its latency and compares it with the baseline; its report is kept in the
  leaderboard entry, which says which Job produced it. One report Job answers every cell of a
  suite run that waits for a report when it is made (up to REPORT_BATCH_CELLS: what its
  termination message holds), named by what it is asked (the suite run, the baseline, the
  regression rule, the cells' runs); a cell waiting while a Job that asks for it runs is not
  asked again, and the cells that succeed later go into later Jobs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from eval_api import cel
from eval_api.cellreport import (
    CACHED_ANSWERS,
    REPORT_BATCH_CELLS,
    REPORT_FAILED,
    CellReport,
    decided_early,
)
from eval_api.earlystop import GatePlan
from eval_api.exitcodes import EXIT_PERMANENT
from eval_api.matrix import (
    Cell,
    baseline_selector,
    cell_id,
    cell_problems,
    cells_of,
    gate_plan,
    regression_of,
)
from eval_api.v1alpha1.common import API_VERSION, RERUN_ANNOTATION
from eval_api.v1alpha1.evalsuite import EvalSuiteSpec
from eval_api.v1alpha1.evaluation import EvaluationSpec
from eval_api.v1alpha1.matrix import ACCEPT_RUN_ANNOTATION, RegressionSpec
from eval_operator import clock, schedule
from eval_operator.builders.meta import (
    MANAGED_BY,
    RUNNER_UID,
    owner_reference,
    restricted_container,
)
from eval_operator.builders.suite import (
    SUITE_LABEL,
    client_secret_of,
    restricted_pod,
    store_ca_volume,
    store_env,
)
from eval_operator.conditions import condition_of
from eval_operator.settings import OperatorSettings

MODEL_LABEL = "evals.io/model"
TASK_LABEL = "evals.io/task"
# sha256 of what the operator last applied to a cell: a pass that wants the same changes
# nothing (a 20 x 20 matrix would otherwise cost 400 requests per pass).
CELL_HASH_ANNOTATION = "evals.io/cell-hash"
REPORT_COMPONENT = "cell-report"
# On a report Job: the runs of the cells it was asked about, in the order asked.
REPORT_RUNS_ANNOTATION = "evals.io/report-runs"
FINISHED_PHASES = ("Succeeded", "Failed")
_MAX_NAME = 63  # a cell's name goes into its Jobs' and pods' label values
_HASH_LEN = 6
# The status is bounded by design, whatever the matrix (400 cells, 16 scorers each, 100 runs of
# history): etcd refuses an object over 1.5 MiB, and the store and the dashboard hold the
# detail. Names of cells in a run's lists and in condition messages are capped at this many
# (with counts of all), and a leaderboard entry keeps the main scorer's comparison alone.
LISTED_CELLS = 10
# A comparison's message in a leaderboard entry is cut at this many characters.
COMPARISON_MESSAGE_LIMIT = 200


def build_cell(suite: Mapping[str, Any], cell: Cell, token: str, suspend: bool) -> dict[str, Any]:
    meta = suite["metadata"]
    body = {
        "apiVersion": API_VERSION,
        "kind": "Evaluation",
        "metadata": {
            "name": cell.name,
            "namespace": meta["namespace"],
            "labels": {
                "app.kubernetes.io/managed-by": MANAGED_BY,
                "app.kubernetes.io/part-of": "eval-operator",
                SUITE_LABEL: meta["name"],
                MODEL_LABEL: cell.model,
                TASK_LABEL: cell.task,
            },
            "annotations": {RERUN_ANNOTATION: token},
            "ownerReferences": [owner_reference(suite)],
        },
        "spec": {**cell.spec, "suspend": suspend},
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    body["metadata"]["annotations"][CELL_HASH_ANNOTATION] = digest
    return body


def gate_of(
    evaluation: Mapping[str, Any], suite: EvalSuiteSpec, accepted: str | None
) -> GatePlan | None:
    """The regression gate of a run of `evaluation` when it is one of `suite`'s cells
    (eval_api.matrix.gate_plan; None for an Evaluation of its own in the suite's stack).
    `accepted`: the suite's accept-run annotation."""
    meta = evaluation.get("metadata") or {}
    labels = meta.get("labels") or {}
    model, task = labels.get(MODEL_LABEL), labels.get(TASK_LABEL)
    token = (meta.get("annotations") or {}).get(RERUN_ANNOTATION)
    if not model or not task or not token:
        return None
    spec = EvaluationSpec.model_validate(evaluation["spec"], context=cel.ADMITTED)
    return gate_plan(suite, cell_id(model, task), spec, accepted, token)


def cell_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the suite needs of one of its cells (the kopf index keeps only this)."""
    meta = body["metadata"]
    status = body.get("status") or {}
    results = status.get("results") or []
    first = results[0] if results else {}
    usage = status.get("usage") or {}
    cost = Decimal(usage.get("costUSD") or "0") + Decimal(
        (usage.get("judge") or {}).get("costUSD") or "0"
    )
    return {
        "name": meta["name"],
        "uid": meta.get("uid"),
        "owners": [ref.get("uid") for ref in meta.get("ownerReferences") or []],
        "hash": (meta.get("annotations") or {}).get(CELL_HASH_ANNOTATION),
        "suspend": bool((body.get("spec") or {}).get("suspend")),
        "spec": dict(body.get("spec") or {}),
        "phase": status.get("phase"),
        "token": status.get("rerunToken"),
        "run": status.get("jobName"),
        "score": first.get("value"),
        "ci95": first.get("ci95"),
        "n": first.get("n"),
        "cost": format(cost, "f") if usage else None,
        "cacheHits": usage.get("cacheHits") if usage else None,
        "passed": condition_of(status, "Passed").get("status"),
        # The regression gate's decision when the run stopped early (execution.earlyStop).
        "regressionDecision": (status.get("stoppedEarly") or {}).get("regression"),
        "reason": condition_of(status, "Ready").get("reason"),
        "message": condition_of(status, "Ready").get("message"),
    }


def contains(actual: Any, desired: Any) -> bool:
    """Whether `actual` (a stored spec, defaults filled in) holds every field of `desired` with
    its value: what server-side apply of `desired` would leave unchanged."""
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and contains(actual[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(desired)
            and all(contains(a, d) for a, d in zip(actual, desired, strict=True))
        )
    return bool(actual == desired)


def finished(view: Mapping[str, Any] | None, token: str) -> bool:
    return view is not None and view["token"] == token and view["phase"] in FINISHED_PHASES


# --- the cell report Job --------------------------------------------------------------------


def report_job_name(run: str, selector: str, regression: RegressionSpec) -> str:
    """The name an older operator gave a one-cell report Job: a leaderboard entry it wrote
    with it is still the answer to the same question."""
    key = f"{run}/{selector}/{regression.max_drop}/{regression.alpha}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:_HASH_LEN]
    return f"{run[: _MAX_NAME - _HASH_LEN - len('-report-')].rstrip('-')}-report-{digest}"


def report_prefix(suite: str, suite_run: str, selector: str, regression: RegressionSpec) -> str:
    """The start of the names of the report Jobs asking one question (a suite run's cells
    against a baseline, by a regression rule): a leaderboard entry whose reportJob starts
    with it answers that question."""
    key = f"{suite_run}/{selector}/{regression.max_drop}/{regression.alpha}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:_HASH_LEN]
    room = _MAX_NAME - len("-report-") - 2 * _HASH_LEN - 1
    return f"{suite[:room].rstrip('-')}-report-{digest}-"


def report_batch_name(prefix: str, runs: Sequence[str]) -> str:
    """A report Job's name: its question and the cells' runs it asks about."""
    return prefix + hashlib.sha256("\n".join(runs).encode()).hexdigest()[:_HASH_LEN]


def report_runs(job: Mapping[str, Any]) -> tuple[str, ...]:
    """The runs a report Job was asked about, in order (from its annotation)."""
    text = ((job.get("metadata") or {}).get("annotations") or {}).get(REPORT_RUNS_ANNOTATION)
    return tuple(text.split(",")) if text else ()


def build_report_job(
    suite: Mapping[str, Any],
    spec: EvalSuiteSpec,
    members: Sequence[tuple[Cell, Mapping[str, Any]]],
    suite_run: str,
    selector: str,
    settings: OperatorSettings,
    name: str | None = None,
) -> dict[str, Any]:
    """One Job reporting `members` (cells of one suite run, with their views): one pod, one
    store connection, the reports in its termination message."""
    meta = suite["metadata"]
    regression = regression_of(spec)
    runs = [view["run"] for _, view in members]
    args = [
        "cell-report",
        "--namespace", meta["namespace"],
        "--suite", meta["name"],
        "--suite-run", suite_run,
        "--baseline", selector,
        "--max-drop", regression.max_drop,
        "--alpha", regression.alpha,
    ]  # fmt: skip
    for cell, view in members:
        args += ["--cell-run", cell.id, view["uid"], view["run"]]
    prefix = report_prefix(meta["name"], suite_run, selector, regression)
    job = build_store_job(
        suite,
        spec,
        name=name or report_batch_name(prefix, runs),
        component=REPORT_COMPONENT,
        args=args,
        extra_labels={},
        image=settings.runner_image,
        pull_policy=settings.runner_image_pull_policy,
    )
    job["metadata"]["annotations"] = {REPORT_RUNS_ANNOTATION: ",".join(runs)}
    return job


def build_store_job(
    suite: Mapping[str, Any],
    spec: EvalSuiteSpec,
    *,
    name: str,
    component: str,
    args: list[str],
    extra_labels: Mapping[str, str],
    image: str,
    pull_policy: str,
) -> dict[str, Any]:
    """A one-pod Job of the runner image that reads the suite's store (with the credentials the
    runner pods use, by reference: a managed store's application role) and reports in its
    termination message."""
    meta = suite["metadata"]
    env, env_from = store_env(spec.store, client_secret_of(meta["name"], spec))
    env.append({"name": "PYTHONUNBUFFERED", "value": "1"})
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}]
    ca = store_ca_volume(spec.store)
    if ca is not None:
        volumes.append(ca[0])
        mounts.append(ca[1])
    labels = {
        "app.kubernetes.io/name": "eval-runner",
        "app.kubernetes.io/instance": meta["name"],
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "eval-operator",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        SUITE_LABEL: meta["name"],
        **extra_labels,
    }
    container = {
        "name": "report",
        "image": image,
        "imagePullPolicy": pull_policy,
        "args": args,
        "env": env,
        **({"envFrom": env_from} if env_from else {}),
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": restricted_container(RUNNER_UID),
        "volumeMounts": mounts,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [owner_reference(suite)],
        },
        "spec": {
            "backoffLimit": 6,
            # Once its report is read the Job is deleted; this is a backstop.
            "ttlSecondsAfterFinished": 86400,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                    # Exit 3: retrying cannot help (a run that is not in the store).
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": "report",
                            "operator": "In",
                            "values": [EXIT_PERMANENT],
                        },
                    },
                ]
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": restricted_pod(RUNNER_UID),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


# --- one pass ---------------------------------------------------------------------------------


@dataclass
class MatrixInput:
    suite: Mapping[str, Any]
    spec: EvalSuiteSpec
    old: Mapping[str, Any]  # the suite's status
    cells: Mapping[str, Mapping[str, Any]]  # the index: cell name -> view
    # Finished report Jobs by name: the report of each run they answered.
    reports: Mapping[str, Mapping[str, CellReport]]
    now: datetime
    # The suite's report Jobs asked for so far by name: the runs they ask about.
    batches: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass
class MatrixPlan:
    status: dict[str, Any]  # the matrix's part of the suite's status
    apply: list[dict[str, Any]] = field(default_factory=list)  # cells to apply
    delete: list[str] = field(default_factory=list)  # cells no longer in the matrix
    report_jobs: list[dict[str, Any]] = field(default_factory=list)  # wanted report Jobs
    # Report Jobs of inp.batches no cell waits for any more (reported, or their runs replaced).
    stale_reports: list[str] = field(default_factory=list)
    conditions: list[tuple[str, str, str, str]] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    recheck: float | None = None
    problems: list[str] = field(default_factory=list)


MATRIX_STATUS_KEYS = (
    "matrix",
    "leaderboard",
    "currentRun",
    "history",
    "rerunToken",
    "acceptedRun",
    "lastScheduleTime",
    "nextScheduleTime",
)


def new_run_id(now: datetime, taken: set[str]) -> str:
    base = clock.rfc3339(now)[:19].replace("-", "").replace(":", "").replace("T", "-")
    run, n = base, 1
    while run in taken:
        n += 1
        run = f"{base}-{n}"
    return run


def plan(inp: MatrixInput, settings: OperatorSettings) -> MatrixPlan:
    meta = inp.suite["metadata"]
    name = meta["name"]
    annotations = meta.get("annotations") or {}
    old = inp.old
    spec = inp.spec
    cells = cells_of(name, spec)
    wanted_names = {c.name for c in cells}
    result = MatrixPlan(status={})
    result.delete = sorted(
        view["name"]
        for view in inp.cells.values()
        if view["name"] not in wanted_names and meta.get("uid") in view["owners"]
    )
    result.problems = cell_problems(cells)
    if spec.schedule is not None:
        result.problems += schedule.problems(
            spec.schedule.cron,
            spec.schedule.time_zone,
            cron_at="spec.schedule.cron",
            zone_at="spec.schedule.timeZone",
        )
    if result.problems:
        # Nothing is started or changed from an invalid matrix; what ran stays as it was.
        result.status = {k: old[k] for k in MATRIX_STATUS_KEYS if k in old}
        return result

    status: dict[str, Any] = {}
    # Entries written when more names were listed are cut to today's bound too.
    history = [
        {**h, "regressed": h.get("regressed", [])[:LISTED_CELLS],
         "notPassed": h.get("notPassed", [])[:LISTED_CELLS]}
        for h in old.get("history") or []
    ]  # fmt: skip
    current = dict(old["currentRun"]) if old.get("currentRun") else None
    taken = {h["id"] for h in history} | ({current["id"]} if current else set())
    now_text = clock.rfc3339(inp.now)
    token = annotations.get(RERUN_ANNOTATION)
    status["rerunToken"] = old.get("rerunToken")
    accepted = annotations.get(ACCEPT_RUN_ANNOTATION)
    if accepted:
        status["acceptedRun"] = accepted

    def cell_done(cell: Cell, run_id: str) -> bool:
        return finished(inp.cells.get(cell.name), run_id)

    running = current is not None and current.get("completionTime") is None
    start: tuple[str, str | None] | None = None  # (trigger, scheduled for)
    if current is None:
        start = ("Created", None)
        status["rerunToken"] = token  # an annotation the suite was created with is this run
    elif token is not None and token != old.get("rerunToken"):
        start = ("Rerun", None)
        status["rerunToken"] = token
    if spec.schedule is not None:
        since_text = old.get("lastScheduleTime") or meta.get("creationTimestamp") or now_text
        decision = schedule.decide(
            spec.schedule.cron,
            spec.schedule.time_zone,
            since=clock.parse_rfc3339(since_text),
            now=inp.now,
            starting_deadline_seconds=spec.schedule.starting_deadline_seconds,
        )
        status["nextScheduleTime"] = clock.rfc3339(decision.next_at)
        wait = (decision.next_at - inp.now).total_seconds()
        result.recheck = max(wait, 1.0)
        if old.get("lastScheduleTime"):
            status["lastScheduleTime"] = old["lastScheduleTime"]
        if decision.too_late and decision.scheduled_for is not None:
            status["lastScheduleTime"] = clock.rfc3339(decision.scheduled_for)
            result.events.append(
                (
                    "Warning",
                    "MissedSchedule",
                    f"skipped the run of {clock.rfc3339(decision.scheduled_for)}: more than "
                    f"startingDeadlineSeconds late",
                )
            )
        elif decision.run_now and decision.scheduled_for is not None and start is None:
            policy = spec.schedule.concurrency_policy
            if running and policy == "Forbid":
                pass  # runs once the current run has finished (a missed time, run once)
            else:
                start = ("Schedule", clock.rfc3339(decision.scheduled_for))
                status["lastScheduleTime"] = start[1]
                if decision.missed:
                    result.events.append(
                        (
                            "Normal",
                            "MissedSchedules",
                            f"{decision.missed} schedule time(s) before {start[1]} were missed; "
                            "they run once, as this run",
                        )
                    )
    if start is not None:
        if current is not None and running:
            policy = spec.schedule.concurrency_policy if spec.schedule else "Replace"
            outcome = "Superseded" if start[0] == "Schedule" and policy == "Allow" else "Replaced"
            ended = {**current, "outcome": outcome, "completionTime": now_text}
            history = _pushed(history, ended, spec)
        run_id = new_run_id(inp.now, taken)
        current = {
            "id": run_id,
            "trigger": start[0],
            "startTime": now_text,
            **({"scheduledFor": start[1]} if start[1] else {}),
        }
        result.events.append(("Normal", "RunStarted", f"suite run {run_id} ({start[0]})"))
    assert current is not None
    run_id = current["id"]

    # Each cell's token: the current run, except (Allow) a cell still running a run that was
    # superseded, which finishes that one first.
    superseded = {h["id"] for h in history if h.get("outcome") == "Superseded"}
    tokens: dict[str, str] = {}
    for cell in cells:
        view = inp.cells.get(cell.name)
        if (
            view is not None
            and view["token"] in superseded
            and view["phase"] not in FINISHED_PHASES
        ):
            tokens[cell.name] = view["token"]
        else:
            tokens[cell.name] = run_id

    # maxParallelCells: cells already running this run keep going; free slots go in order.
    unfinished = [c for c in cells if not cell_done(c, tokens[c.name])]
    suspend: dict[str, bool] = {c.name: False for c in cells}
    waiting = 0
    bound = spec.parallel_cells  # maxParallelCells or its default
    active = [
        c
        for c in unfinished
        if (view := inp.cells.get(c.name)) is not None
        and not view["suspend"]
        and view["token"] == tokens[c.name]
    ][:bound]
    chosen = {c.name for c in active}
    for c in unfinished:
        if len(chosen) >= bound:
            break
        chosen.add(c.name)
    for c in unfinished:
        if c.name not in chosen:
            suspend[c.name] = True
            waiting += 1
    for c in cells:
        view = inp.cells.get(c.name)
        if c not in unfinished and view is not None:
            suspend[c.name] = view["suspend"]  # a finished cell is left as it is
    for cell in cells:
        desired = build_cell(inp.suite, cell, tokens[cell.name], suspend[cell.name])
        view = inp.cells.get(cell.name)
        if (
            view is None
            or view["hash"] != desired["metadata"]["annotations"][CELL_HASH_ANNOTATION]
            or not contains(view["spec"], desired["spec"])
        ):
            # New, changed by the suite, or changed by someone else: the suite's fields win.
            result.apply.append(desired)

    # Reports of the succeeded cells, and the leaderboard.
    regression = regression_of(spec)
    old_entries = {
        (board["task"], entry["model"]): entry
        for board in old.get("leaderboard") or []
        for entry in board.get("entries") or []
    }
    boards: dict[str, list[dict[str, Any]]] = {t.name: [] for t in spec.tasks or []}
    counts = {"waiting": waiting, "pending": 0, "running": 0, "succeeded": 0, "failed": 0}
    regressed: list[str] = []
    not_passed: list[str] = []
    underpowered: list[str] = []
    cached: list[str] = []  # compared with answers mostly the baseline's own, from the cache
    detectable: list[tuple[float, str]] = []  # (the main scorer's minDetectableEffect, cell)
    unreported = 0
    # Cells waiting for a report that no report Job asks about yet, by question (prefix).
    awaiting: dict[str, list[tuple[Cell, Mapping[str, Any], str, str]]] = {}
    # Report Jobs still at work for waiting cells, with those cells; and those answered.
    following: dict[str, tuple[list[tuple[Cell, Mapping[str, Any]]], str, str]] = {}
    used: set[str] = set()
    done = 0
    for cell in cells:
        view = inp.cells.get(cell.name)
        entry: dict[str, Any] = {"model": cell.model, "evaluation": cell.name}
        token_of_cell = tokens[cell.name]
        this_run = view is not None and view["token"] == token_of_cell
        phase = view["phase"] if this_run and view is not None else None
        if suspend[cell.name] and not cell_done(cell, token_of_cell):
            phase = phase if phase in ("Running",) else None
        entry["phase"] = phase or ("Waiting" if suspend[cell.name] else "Pending")
        if phase in FINISHED_PHASES:
            done += 1
            counts["succeeded" if phase == "Succeeded" else "failed"] += 1
        elif phase == "Running":
            counts["running"] += 1
        elif not suspend[cell.name]:
            counts["pending"] += 1
        if this_run and view is not None:
            for key in ("run", "score", "ci95", "n"):
                if view.get(key) is not None:
                    entry[key] = view[key]
            if view.get("cost") is not None:
                entry["costUSD"] = view["cost"]
            if view.get("cacheHits") is not None:
                entry["cacheHits"] = view["cacheHits"]
            if phase in FINISHED_PHASES and view.get("passed") in ("True", "False"):
                entry["passed"] = view["passed"] == "True"
        if phase == "Failed" or entry.get("passed") is False:
            not_passed.append(cell.id)
        if phase == "Succeeded" and view is not None and view.get("run"):
            selector, no_compare = baseline_selector(spec, accepted, token_of_cell)
            run = view["run"]
            prefix = report_prefix(name, token_of_cell, selector, regression)
            previous = old_entries.get((cell.task, cell.model)) or {}
            asked = previous.get("reportJob") or ""
            covering = [
                b for b, runs in inp.batches.items() if b.startswith(prefix) and run in runs
            ]
            answer = next(
                ((b, inp.reports[b][run]) for b in covering if run in inp.reports.get(b, {})),
                None,
            )
            if previous.get("run") == run and (
                asked.startswith(prefix) or asked == report_job_name(run, selector, regression)
            ):
                for key in ("latencyP50Ms", "latencyP95Ms", "reportJob"):
                    if key in previous:
                        entry[key] = previous[key]
                if "comparison" in previous:  # as an older operator may have kept it whole
                    entry["comparison"] = _bounded_comparison(previous["comparison"])
            elif answer is not None:
                entry["reportJob"] = answer[0]
                entry.update(_report_fields(answer[1], no_compare, regression))
                used.add(answer[0])
            else:
                unreported += 1
                at_work = [b for b in covering if b not in inp.reports]
                if at_work:  # asked already: not asked again while that Job runs
                    members = following.setdefault(at_work[0], ([], token_of_cell, selector))[0]
                    members.append((cell, view))
                else:
                    awaiting.setdefault(prefix, []).append((cell, view, token_of_cell, selector))
            decided = view.get("regressionDecision") if view is not None else None
            if decided and "comparison" in entry:
                entry["comparison"] = decided_early(
                    entry["comparison"], decided, COMPARISON_MESSAGE_LIMIT
                )
            comparison = entry.get("comparison") or {}
            if comparison.get("regressed"):
                regressed.append(cell.id)
            if comparison.get("reason") == "Compared" and comparison.get("underpowered"):
                underpowered.append(cell.id)
            if comparison.get("reason") == CACHED_ANSWERS and not comparison.get("regressed"):
                cached.append(cell.id)
            main = (comparison.get("scorers") or [{}])[0]
            if comparison.get("reason") == "Compared" and main.get("minDetectableEffect"):
                detectable.append((main["minDetectableEffect"], cell.id))
        boards[cell.task].append(entry)
    for batch, (members, suite_run, selector) in following.items():
        result.report_jobs.append(
            build_report_job(inp.suite, spec, members, suite_run, selector, settings, name=batch)
        )
    for waiting_cells in awaiting.values():
        for first in range(0, len(waiting_cells), REPORT_BATCH_CELLS):
            chunk = waiting_cells[first : first + REPORT_BATCH_CELLS]
            _, _, suite_run, selector = chunk[0]
            members = [(c, v) for c, v, _, _ in chunk]
            result.report_jobs.append(
                build_report_job(inp.suite, spec, members, suite_run, selector, settings)
            )
    result.stale_reports = sorted(b for b in inp.batches if b not in following and b not in used)

    leaderboard = []
    for task in spec.tasks or []:
        entries = boards[task.name]
        scored = [e for e in entries if e["phase"] == "Succeeded" and e.get("score") is not None]
        board: dict[str, Any] = {"task": task.name, "entries": entries}
        if scored:
            board["best"] = max(scored, key=lambda e: e["score"])["model"]  # first wins ties
        leaderboard.append(board)
    status["leaderboard"] = leaderboard
    total = len(cells)
    status["matrix"] = {
        "models": len(spec.models or []),
        "tasks": len(spec.tasks or []),
        "cells": total,
        **counts,
        "done": f"{done}/{total}",
        "regressed": len(regressed),
    }
    current.update(
        {
            "cells": total,
            "succeeded": counts["succeeded"],
            "failed": counts["failed"],
            "regressed": regressed[:LISTED_CELLS],
            "notPassed": not_passed[:LISTED_CELLS],
            "regressedCount": len(regressed),
            "notPassedCount": len(not_passed),
        }
    )
    complete = done == total and unreported == 0
    if complete:
        if current.get("completionTime") is None:
            current["completionTime"] = now_text
            result.events.append(
                (
                    "Normal" if not regressed and not not_passed else "Warning",
                    "RunFinished",
                    f"suite run {run_id}: {counts['succeeded']}/{total} cells succeeded"
                    + (f", regressed: {listed(regressed)}" if regressed else ""),
                )
            )
        current["outcome"] = "Succeeded" if counts["failed"] == 0 else "Failed"
        current["passed"] = not regressed and not not_passed
        history = _pushed(history, current, spec)
    else:
        for key in ("completionTime", "outcome", "passed"):
            current.pop(key, None)
        if unreported:
            result.recheck = _sooner(result.recheck, 10.0)
    status["currentRun"] = current
    status["history"] = history

    # The verdict.
    waiting_note = (
        f", {waiting} waiting for a slot (maxParallelCells {spec.parallel_cells})"
        if waiting
        else ""
    )
    progress = f"suite run {run_id}: {done}/{total} cells finished{waiting_note}"
    if complete:
        result.conditions.append(("Progressing", "False", "RunFinished", progress))
    else:
        result.conditions.append(("Progressing", "True", "RunInProgress", progress))
    if not complete:
        result.conditions.append(("Passed", "Unknown", "RunInProgress", progress))
    elif regressed:
        result.conditions.append(
            ("Passed", "False", "Regressed", f"regressed: {listed(regressed)}")
        )
    elif not_passed:
        result.conditions.append(
            (
                "Passed",
                "False",
                "CellsFailed" if counts["failed"] else "ThresholdsNotMet",
                f"not passed: {listed(not_passed)}",
            )
        )
    else:
        result.conditions.append(
            ("Passed", "True", "Passed", f"all {total} cells passed their thresholds")
        )
    if spec.baseline is not None:
        power = _power_note(regression, underpowered, detectable)
        if regressed:
            result.conditions.append(
                (
                    "Regressed",
                    "True",
                    "Regression",
                    f"worse than baseline {spec.baseline} by more than {regression.max_drop} "
                    f"(p < {regression.alpha}): {listed(regressed)}{power}",
                )
            )
        elif not complete:
            result.conditions.append(("Regressed", "Unknown", "RunInProgress", progress))
        elif cached:
            result.conditions.append(
                (
                    "Regressed",
                    "Unknown",
                    CACHED_ANSWERS,
                    f"not measured: most answers of {listed(cached)} came from the "
                    "response cache and are their baseline's own (execution.cache.reuse "
                    "AcrossRuns), so they say nothing of the model as it is now",
                )
            )
        else:
            reasons = {
                (e.get("comparison") or {}).get("reason")
                for board in leaderboard
                for e in board["entries"]
                if e["phase"] == "Succeeded"
            }
            reason = "NoRegression" if reasons <= {"Compared", "IsBaseline"} else "NoBaseline"
            message = (
                f"no cell is worse than baseline {spec.baseline} by more than "
                f"{regression.max_drop} at alpha {regression.alpha}"
                if reason == "NoRegression"
                else "some cells have no baseline run to compare with (see the leaderboard)"
            )
            result.conditions.append(("Regressed", "False", reason, message + power))
    result.status = {k: v for k, v in status.items() if v is not None}
    return result


def _power_note(
    regression: RegressionSpec, underpowered: list[str], detectable: list[tuple[float, str]]
) -> str:
    """What a "no regression" says nothing about. With a margin: the cells whose samples would
    likely miss a drop of twice maxDrop. At maxDrop 0 every finite sample misses some drop
    beyond 0, so the note is how small a drop the cells detect."""
    if Decimal(regression.max_drop) != 0:
        if not underpowered:
            return ""
        return (
            f"; {len(underpowered)} cell(s) too small to detect a drop of "
            f"{Decimal(regression.max_drop) * 2} (twice maxDrop) at alpha {regression.alpha}: "
            f"{', '.join(underpowered[:10])} (see minDetectableEffect)"
        )
    if not detectable:
        return ""
    (low, low_cell), (high, high_cell) = min(detectable), max(detectable)
    if low == high:
        names = ", ".join(cell for _, cell in sorted(detectable)[:10])
        where = f"{high:.3g} ({names}"
    else:
        where = f"{low:.3g} ({low_cell}) to {high:.3g} ({high_cell}"
    return (
        f"; the smallest drop detected with 80% power at alpha {regression.alpha} is {where}; "
        "see minDetectableEffect)"
    )


def listed(cells: list[str]) -> str:
    """The first LISTED_CELLS names, and how many more: a message stays short at 400 cells."""
    shown = ", ".join(cells[:LISTED_CELLS])
    more = len(cells) - LISTED_CELLS
    return f"{shown} and {more} more (see the leaderboard)" if more > 0 else shown


def _bounded_comparison(comparison: dict[str, Any]) -> dict[str, Any]:
    """A cell's comparison as the status keeps it: the main scorer's, how many regressed, the
    message cut (the cell report had them all; the dashboard shows them)."""
    scorers = comparison.get("scorers") or []
    bounded = {**comparison, "scorers": scorers[:1]}
    # Counted already when it was bounded (its other scorers are gone then).
    regressed = comparison.get("regressedScorers") or sum(1 for s in scorers if s.get("regressed"))
    if regressed:
        bounded["regressedScorers"] = regressed
    if len(bounded.get("message") or "") > COMPARISON_MESSAGE_LIMIT:
        bounded["message"] = bounded["message"][: COMPARISON_MESSAGE_LIMIT - 1] + "…"
    return bounded


def _report_fields(
    report: CellReport, no_compare: tuple[str, str] | None, regression: RegressionSpec
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if report.state == "error":
        return {
            "comparison": {
                "reason": REPORT_FAILED,
                "message": f"{report.reason}: {report.message or ''}",
            }
        }
    if report.latency_p50_ms is not None:
        fields["latencyP50Ms"] = report.latency_p50_ms
    if report.latency_p95_ms is not None:
        fields["latencyP95Ms"] = report.latency_p95_ms
    if no_compare is not None:
        fields["comparison"] = {"reason": no_compare[0], "message": no_compare[1]}
    elif report.comparison is not None:
        fields["comparison"] = _bounded_comparison(
            report.comparison.model_dump(mode="json", by_alias=True, exclude_none=True)
        )
    return fields


def _pushed(history: list[dict[str, Any]], run: dict[str, Any], spec: EvalSuiteSpec) -> list:
    limit = spec.schedule.history_limit if spec.schedule else 10
    kept = [h for h in history if h["id"] != run["id"]]
    return sorted([dict(run), *kept], key=lambda h: h["startTime"], reverse=True)[:limit]


def _sooner(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)
