"""When an EvalSuite's matrix runs, with the real operator against the API emulator and a real
PostgreSQL store: on its schedule (on the operator's clock, moved forward by the test: no waiting
for 02:00), at most maxParallelCells cells at a time, and with a failing cell among them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from eval_operator import clock
from tests.support.model_server import Faults, ModelServer
from tests.support.operator_cluster import (
    GROUP,
    NS,
    RECORDS,
    VERSION,
    Cluster,
    condition,
    events_when,
    running_cluster,
)
from tests.support.suites import suite_manifest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BROKEN = [{"question": f"BROKEN {r['question']}", "answer": r["answer"]} for r in RECORDS[:4]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    server = ModelServer(wrong=[], faults=Faults(latency=0.02, status_for={"BROKEN": 401}))
    try:
        with running_cluster(tmp_path_factory.mktemp("runs"), stack=True, model=server) as cluster:
            yield cluster
    finally:
        clock.reset()


def matrix(server: ModelServer, models: list[str], tasks: dict[str, list[dict]], **extra: Any):
    return {
        "cache": {"mode": "Disabled"},
        "models": [
            {
                "name": m,
                "model": {
                    "name": m,
                    "baseURL": server.base_url,
                    "apiKeySecretRef": {"name": "model-key", "key": "api-key"},
                },
            }
            for m in models
        ],
        "tasks": [
            {
                "name": t,
                "dataset": {"inline": records, "inputField": "question", "targetField": "answer"},
                "task": {"scorers": [{"type": "exact_match"}]},
            }
            for t, records in tasks.items()
        ],
        **extra,
    }


def finished_run(suite: dict[str, Any], not_id: str | None = None) -> bool:
    current = (suite.get("status") or {}).get("currentRun") or {}
    return bool(current.get("completionTime")) and current.get("id") != not_id


def poke(cluster: Cluster, name: str) -> None:
    """A watch event of the suite: what the operator's own wait would have brought at 02:00
    had the clock moved by itself."""
    stamp = str(time.monotonic_ns())  # digits only: a label value may not start with "."
    cluster.api.patch(
        GROUP, VERSION, "evalsuites", NS, name, {"metadata": {"labels": {"poke": stamp[-8:]}}}
    )


def test_a_nightly_schedule_runs_on_time_and_once_after_an_outage(cluster: Cluster) -> None:
    spec = matrix(cluster.model, ["demo"], {"sums": RECORDS}, schedule={"cron": "0 2 * * *"})
    cluster.apply(suite_manifest("nightly", spec)).raise_for_status()
    first = cluster.wait_suite("nightly", finished_run, timeout=180)
    status = first["status"]
    assert status["currentRun"]["trigger"] == "Created"
    next_at = datetime.fromisoformat(status["nextScheduleTime"].replace("Z", "+00:00"))
    now = clock.now()
    assert next_at.hour == 2 and timedelta(0) < next_at - now <= timedelta(days=1)

    # 02:00 comes.
    clock.advance((next_at - now).total_seconds() + 30)
    poke(cluster, "nightly")
    second = cluster.wait_suite(
        "nightly", lambda s: finished_run(s, status["currentRun"]["id"]), timeout=180
    )
    run = second["status"]["currentRun"]
    assert run["trigger"] == "Schedule"
    assert run["scheduledFor"] == status["nextScheduleTime"]
    assert second["status"]["lastScheduleTime"] == status["nextScheduleTime"]
    assert [h["trigger"] for h in second["status"]["history"]] == ["Schedule", "Created"]

    # The operator misses five nights: the matrix runs once when it is back, not five times.
    clock.advance(5 * 86400)
    poke(cluster, "nightly")
    third = cluster.wait_suite("nightly", lambda s: finished_run(s, run["id"]), timeout=180)
    assert [h["trigger"] for h in third["status"]["history"]] == ["Schedule"] * 2 + ["Created"]

    def missed(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            e
            for e in events
            if e["involvedObject"].get("name") == "nightly" and e["reason"] == "MissedSchedules"
        ]

    events = missed(events_when(cluster.api, missed))
    assert events and "4 schedule time(s)" in events[-1]["message"]
    cluster.api.delete(GROUP, VERSION, "evalsuites", NS, "nightly")


def test_max_parallel_cells_bounds_the_cells_running_at_once(cluster: Cluster) -> None:
    tasks = {f"t{i}": RECORDS for i in range(3)}
    spec = matrix(cluster.model, ["demo"], tasks, maxParallelCells=1)
    cluster.apply(suite_manifest("queue", spec)).raise_for_status()
    most, waiting_seen = 0, False
    deadline = time.monotonic() + 240
    while True:
        suite = cluster.suite("queue") or {}
        if finished_run(suite):
            break
        assert time.monotonic() < deadline, suite.get("status")
        cells = cluster.api.list(
            GROUP, VERSION, "evaluations", NS, label_selector="evals.io/suite=queue"
        )
        unsuspended = [
            c
            for c in cells
            if not c["spec"].get("suspend")
            and (c.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        most = max(most, len(unsuspended))
        progressing = condition(suite, "Progressing") if suite.get("status") else {}
        waiting_seen |= "waiting for a slot (maxParallelCells 1)" in progressing.get("message", "")
        time.sleep(0.05)
    assert most == 1 and waiting_seen
    assert suite["status"]["matrix"]["succeeded"] == 3
    cluster.api.delete(GROUP, VERSION, "evalsuites", NS, "queue")


def test_a_failing_cell_does_not_stop_the_others(cluster: Cluster) -> None:
    spec = matrix(cluster.model, ["alpha", "beta"], {"sums": RECORDS, "broken": BROKEN})
    cluster.apply(suite_manifest("mixed", spec)).raise_for_status()
    done = cluster.wait_suite("mixed", finished_run, timeout=240)
    status = done["status"]
    assert status["matrix"]["succeeded"] == 2 and status["matrix"]["failed"] == 2
    phases = {
        (b["task"], e["model"]): e["phase"] for b in status["leaderboard"] for e in b["entries"]
    }
    assert phases == {
        ("sums", "alpha"): "Succeeded",
        ("sums", "beta"): "Succeeded",
        ("broken", "alpha"): "Failed",
        ("broken", "beta"): "Failed",
    }
    passed = condition(done, "Passed")
    assert passed["status"] == "False" and passed["reason"] == "CellsFailed"
    assert "alpha/broken" in passed["message"] and "beta/broken" in passed["message"]
    assert status["currentRun"]["outcome"] == "Failed"
    assert status["leaderboard"][0]["best"] == "alpha"
    assert "best" not in status["leaderboard"][1]  # no cell of the task succeeded


def migration_jobs(cluster: Cluster, suite: str) -> dict[str, dict[str, Any]]:
    found = cluster.api.list(
        "batch", "v1", "jobs", NS,
        label_selector=f"evals.io/suite={suite},app.kubernetes.io/component=store-migration",
    )  # fmt: skip
    return {j["metadata"]["name"]: j for j in found}


def completed(job: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Complete" and c["status"] == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def test_an_older_migration_job_is_deleted_once_the_current_one_has_completed(
    cluster: Cluster,
) -> None:
    # Before: one migration Job per schema fingerprint, left forever.
    spec = {"cache": {"mode": "Disabled"}, "dashboard": {"enabled": True}}
    cluster.apply(suite_manifest("schema", spec)).raise_for_status()
    deadline = time.monotonic() + 180
    while not (jobs := migration_jobs(cluster, "schema")) or not all(
        completed(j) for j in jobs.values()
    ):
        assert time.monotonic() < deadline, jobs
        time.sleep(0.5)
    (first,) = jobs
    # The dashboard turned off: its read-only role is not needed, the fingerprint changes and
    # a new migration runs; once it has completed the older Job goes, the current one stays.
    cluster.api.patch(GROUP, VERSION, "evalsuites", NS, "schema",
                      {"spec": {"dashboard": {"enabled": False}}})  # fmt: skip
    deadline = time.monotonic() + 180
    while list(jobs := migration_jobs(cluster, "schema")) in ([first], []) or first in jobs:
        assert time.monotonic() < deadline, sorted(jobs)
        time.sleep(0.5)
    (current,) = jobs
    assert current != first and completed(jobs[current])
    cluster.wait_suite(
        "schema", lambda s: condition(s, "StoreReady")["status"] == "True", timeout=60
    )

    def pruned(events: list[dict[str, Any]]) -> bool:
        return any(
            e["involvedObject"].get("name") == "schema"
            and e["reason"] == "Pruned"
            and first in e["message"]
            and "older schema migration" in e["message"]
            for e in events
        )

    events_when(cluster.api, pruned)
    # Later passes keep the current Job (StoreReady reads it) and make no other.
    poke(cluster, "schema")
    time.sleep(2)
    assert list(migration_jobs(cluster, "schema")) == [current]
    cluster.api.delete(GROUP, VERSION, "evalsuites", NS, "schema")
