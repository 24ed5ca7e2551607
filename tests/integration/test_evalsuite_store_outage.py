"""A store away for longer than a shard waits (a node drain, a PostgreSQL restart after a
config change) does not fail the run: the shard stops with exit code 4, the Job's
podFailurePolicy Ignores it (no retry of backoffLimitPerIndex spent, even at 0), the new pod
waits for the store again, and once it is back the run resumes from the store and finishes
with every sample once. Real operator, real PostgreSQL, the stand-in Job controller honouring
the podFailurePolicy's Ignore rule."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from eval_api.environment import STORE_UNAVAILABLE_AFTER_SECONDS
from tests.support.model_server import Faults, ModelServer
from tests.support.operator_cluster import NS, manifest, running_cluster
from tests.support.suites import reason, store_rows, suite_manifest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RECORDS = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(40)]


def test_a_store_away_longer_than_a_shard_waits_costs_no_retry(tmp_path: Path) -> None:
    model = ModelServer(wrong=[], faults=Faults(latency=0.02))
    with running_cluster(
        tmp_path, stack=True, model=model, runner_env={STORE_UNAVAILABLE_AFTER_SECONDS: "1"}
    ) as cluster:
        assert cluster.stack is not None
        cluster.apply(suite_manifest("drained", {"cache": {"mode": "Disabled"}}))
        cluster.wait_suite("drained", lambda s: reason(s, "Ready") == "Ready", timeout=120)
        evaluation = manifest(
            "through-outage",
            cluster.model,
            suiteRef={"name": "drained"},
            dataset={"inline": RECORDS, "inputField": "question", "targetField": "answer"},
            execution={"shards": 1, "backoffLimitPerIndex": 0},
        )
        cluster.model.hold_after = 15  # the run is held midway while the store goes away
        cluster.apply(evaluation)
        deadline = time.monotonic() + 120
        while cluster.model.count < 15:
            assert time.monotonic() < deadline, "the run did not get going"
            time.sleep(0.1)
        claim = "data-drained-store-0"
        cluster.stack.pause(NS, claim)
        cluster.stack.postgres(NS, "drained-store").kill()
        cluster.model.hold_after = None
        # Attempts end with exit code 4 while the store is away: each one Ignored.
        cluster.wait(
            "through-outage",
            lambda ev: any(
                p["metadata"]["annotations"].get(
                    "batch.kubernetes.io/job-index-ignored-failure-count", "0"
                )
                != "0"
                for p in cluster.api.list("", "v1", "pods", NS)
                if p["metadata"].get("labels", {}).get("job-name")
                == (ev.get("status") or {}).get("jobName")
            ),
            timeout=120,
        )
        cluster.stack.resume(NS, claim)  # the store is back (the stand-in kubelet starts it)
        done = cluster.wait_phase("through-outage", "Succeeded", timeout=180)
        rows = store_rows(
            cluster,
            "drained",
            "SELECT count(*) AS n, count(DISTINCT sample_id) AS d FROM samples "
            "WHERE evaluation_uid = $1",
            done["metadata"]["uid"],
        )[0]
        assert rows["n"] == rows["d"] == len(RECORDS)
