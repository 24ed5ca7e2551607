"""What the CRD cannot refuse at `kubectl apply` but the operator can see, with the real operator
against the API emulator: a cron field out of range (the CRD's pattern checks the shape only),
cells that would share a name (no CEL rule can: see eval_api.matrix). Each becomes an InvalidSpec
condition naming the field within one reconcile, with a Warning event (never a suite without
status while the operator retries), the rest of the stack reconciled, and the suite recovers by
itself once the spec is fixed. (A time zone that is no IANA zone is refused at apply:
test_evalsuite_admission; the operator says the same of one admitted before that rule, with the
same code as the cron's: eval_operator.schedule.problems.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.operator_cluster import (
    GROUP,
    NS,
    VERSION,
    Cluster,
    events_when,
    running_cluster,
)
from tests.support.suites import reason, suite_manifest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# The first reconcile comes within a second or two: this is one pass, not a retry loop's luck.
ONE_RECONCILE = 15.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("spec-problems")) as cluster:
        yield cluster


def matrix(cluster: Cluster, models: list[str], tasks: list[str], **extra: Any) -> dict:
    return {
        "cache": {"mode": "Disabled"},
        "models": [
            {
                "name": m,
                "model": {
                    "name": m,
                    "baseURL": cluster.model.base_url,
                    "apiKeySecretRef": {"name": "model-key", "key": "api-key"},
                },
            }
            for m in models
        ],
        "tasks": [
            {
                "name": t,
                "dataset": {"builtin": "arithmetic"},
                "task": {"scorers": [{"type": "exact_match"}]},
            }
            for t in tasks
        ],
        **extra,
    }


def condition(suite: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in suite["status"]["conditions"] if c["type"] == type_)


def invalid(cluster: Cluster, name: str, type_: str) -> dict[str, Any]:
    """The suite once its condition says InvalidSpec for its current generation."""
    return cluster.wait_suite(
        name,
        lambda s: (
            reason(s, type_) == "InvalidSpec"
            and s["status"].get("observedGeneration") == s["metadata"]["generation"]
        ),
        timeout=ONE_RECONCILE,
    )


def warned(cluster: Cluster, name: str, text: str) -> bool:
    """Whether an InvalidSpec Warning about suite `name` says `text` (waited for: the event
    follows the status write)."""

    def said(events: list[dict[str, Any]]) -> bool:
        return any(
            e["involvedObject"].get("kind") == "EvalSuite"
            and e["involvedObject"].get("name") == name
            and e["type"] == "Warning"
            and e["reason"] == "InvalidSpec"
            and text in e["message"]
            for e in events
        )

    return said(events_when(cluster.api, said, timeout=ONE_RECONCILE))


def cells(cluster: Cluster, suite: str) -> list[str]:
    return sorted(
        e["metadata"]["name"]
        for e in cluster.api.list(GROUP, VERSION, "evaluations", NS)
        if e["spec"].get("suiteRef", {}).get("name") == suite
    )


def backups(cluster: Cluster, suite: str) -> list[dict[str, Any]]:
    return [
        c
        for c in cluster.api.list("batch", "v1", "cronjobs", NS)
        if c["metadata"]["name"].startswith(f"{suite}-")
    ]


def change(cluster: Cluster, name: str, spec: dict[str, Any]) -> None:
    cluster.api.patch(GROUP, VERSION, "evalsuites", NS, name, {"spec": spec})


def test_a_schedule_the_operator_cannot_run_is_invalid_spec_at_once(cluster: Cluster) -> None:
    """Before: schedule.parse's ValueError escaped the reconcile, which kopf retried forever;
    the suite had no status at all."""
    name, field = "cron-range", "spec.schedule.cron: '99 99 * * *' is not a cron expression"
    cluster.apply(
        suite_manifest(name, matrix(cluster, ["m"], ["t"], schedule={"cron": "99 99 * * *"}))
    )
    suite = invalid(cluster, name, "Ready")
    for type_ in ("Ready", "Progressing", "Passed"):
        assert field in condition(suite, type_)["message"]
    assert condition(suite, "Stalled")["status"] == "True"
    # The rest of the stack is reconciled; no run starts from a schedule that cannot run.
    assert reason(suite, "StoreReady") == "StoreProvisioning"
    assert "currentRun" not in suite["status"]
    assert cells(cluster, name) == []
    assert warned(cluster, name, field)

    change(cluster, name, {"schedule": {"cron": "0 2 * * *", "timeZone": "Europe/Paris"}})
    fixed = cluster.wait_suite(name, lambda s: bool(s["status"].get("nextScheduleTime")))
    assert "InvalidSpec" not in {c["reason"] for c in fixed["status"]["conditions"]}
    assert cells(cluster, name) == [f"{name}-m-t"]


def test_a_backup_schedule_out_of_range_is_the_stores_invalid_spec(cluster: Cluster) -> None:
    """Before: the CronJob went to the apiserver (a real one refuses it: ObjectRejected with
    its raw message; the emulator stored it); now StoreReady names the suite's field."""
    backup = {"schedule": "0 24 * * *"}
    cluster.apply(suite_manifest("tz", {"store": {"managed": {"backup": backup}}}))
    suite = invalid(cluster, "tz", "StoreReady")
    message = condition(suite, "StoreReady")["message"]
    assert "spec.store.managed.backup.schedule: '0 24 * * *' is not a cron expression" in message
    assert reason(suite, "CacheReady") != "InvalidSpec"
    assert cluster.api.get("apps", "v1", "statefulsets", NS, "tz-store") is not None
    assert backups(cluster, "tz") == []  # not applied with a zone the apiserver refuses
    assert warned(cluster, "tz", "backup.schedule")

    backup = {"schedule": "0 23 * * *", "timeZone": "Europe/Paris"}
    change(cluster, "tz", {"store": {"managed": {"backup": backup}}})
    fixed = cluster.wait_suite("tz", lambda s: reason(s, "StoreReady") != "InvalidSpec")
    assert reason(fixed, "StoreReady") == "StoreProvisioning"
    (cronjob,) = backups(cluster, "tz")
    assert (cronjob["spec"]["schedule"], cronjob["spec"]["timeZone"]) == (
        "0 23 * * *",
        "Europe/Paris",
    )


def test_cells_that_would_share_a_name_are_refused_and_none_is_applied(
    cluster: Cluster,
) -> None:
    """Before: llama-3 x gsm and llama x 3-gsm were both applied as clash-llama-3-gsm on every
    pass, each over the other."""
    spec = matrix(cluster, ["llama", "llama-3"], ["gsm", "3-gsm"])
    cluster.apply(suite_manifest("clash", spec))
    suite = invalid(cluster, "clash", "Ready")
    assert (
        "spec.models, spec.tasks: cells llama/3-gsm and llama-3/gsm would all be the "
        "Evaluation clash-llama-3-gsm: rename a model or a task"
    ) in condition(suite, "Ready")["message"]
    assert cells(cluster, "clash") == []

    spec["tasks"][1]["name"] = "gsm3"
    change(cluster, "clash", {"tasks": spec["tasks"]})
    cluster.wait_suite("clash", lambda s: reason(s, "Ready") != "InvalidSpec")
    wanted = ["clash-llama-3-gsm", "clash-llama-3-gsm3", "clash-llama-gsm", "clash-llama-gsm3"]
    cluster.wait_suite("clash", lambda s: cells(cluster, "clash") == wanted)
