"""An operator installed with less RBAC than it needs: the suite says which permission is
missing (not InvalidSpec: the user's spec is fine), only the part that needs it is held back,
the operator retries with back-off instead of a hot loop, and once the permission is granted
the suite comes up without a restart. The emulator holds the operator to the chart's rules,
as a real apiserver's RBAC authorizer does (tests/support/kubeapi/authz.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.chart_rbac import OPERATOR_USER, operator_rules, render_cluster_wide_chart
from tests.support.kubeapi.authz import RBACAuthorizer, Subject
from tests.support.operator_cluster import (
    NS,
    OPERATOR_TOKEN,
    events_when,
    manifest,
    running_cluster,
)
from tests.support.suites import reason, suite_manifest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def test_a_missing_permission_is_named_holds_back_its_part_and_heals_once_granted(
    tmp_path: Path,
) -> None:
    rules = operator_rules(render_cluster_wide_chart())
    (services,) = [r for r in rules if r["resources"] == ["services"]]
    services["verbs"].remove("create")  # as the chart was before: patch alone
    authorizer = RBACAuthorizer({OPERATOR_TOKEN: Subject(OPERATOR_USER, rules)})
    with running_cluster(tmp_path, stack=True, authorizer=authorizer) as cluster:
        cluster.apply(suite_manifest("perm", {"cache": {"mode": "Disabled"}}))
        denied = cluster.wait_suite("perm", lambda s: reason(s, "StoreReady") == "PermissionDenied")
        store = condition(denied, "StoreReady")["message"]
        assert "Service perm-store: the operator may not create services" in store
        assert (
            'User "system:serviceaccount:eval-system:eval-operator" cannot create resource '
            '"services" in API group "" in the namespace "default"'
        ) in store
        assert reason(denied, "Ready") == "PermissionDenied"
        assert condition(denied, "Stalled")["status"] == "True"
        # The parts that need no Service are as they are: not InvalidSpec.
        assert reason(denied, "CacheReady") == "Disabled"
        assert reason(denied, "TLSReady") == "Disabled"
        assert "InvalidSpec" not in {c["reason"] for c in denied["status"]["conditions"]}

        def denials(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [
                e
                for e in events
                if e["involvedObject"].get("name") == "perm" and e["reason"] == "PermissionDenied"
            ]

        warnings = denials(events_when(cluster.api, denials))  # it follows the status write
        assert warnings and all(e["type"] == "Warning" for e in warnings)

        # Retried with back-off, not in a hot loop: a handful of refused creates while the
        # suite waits, however many watch events its StatefulSet's pod brings.
        def refused() -> int:
            return sum(
                1
                for d in authorizer.decisions_of(OPERATOR_TOKEN)
                if not d.allowed and d.attributes.resource == "services"
            )

        before, started = refused(), time.monotonic()
        while time.monotonic() - started < 12:
            time.sleep(0.5)
        assert refused() - before <= 12, f"{refused() - before} refused creates in 12 s"

        services["verbs"].append("create")  # the ClusterRole fixed, the operator not restarted
        ready = cluster.wait_suite("perm", lambda s: reason(s, "Ready") == "Ready", timeout=240)
        assert condition(ready, "StoreReady")["status"] == "True"
        assert cluster.api.get("", "v1", "services", NS, "perm-store") is not None


def test_an_evaluation_whose_job_the_operator_may_not_create_says_so_and_runs_once_granted(
    tmp_path: Path,
) -> None:
    rules = operator_rules(render_cluster_wide_chart())
    (jobs,) = [r for r in rules if r["resources"] == ["jobs"]]
    jobs["verbs"].remove("create")
    authorizer = RBACAuthorizer({OPERATOR_TOKEN: Subject(OPERATOR_USER, rules)})
    with running_cluster(tmp_path, authorizer=authorizer) as cluster:
        cluster.apply(manifest("denied", cluster.model))
        denied = cluster.wait(
            "denied",
            lambda ev: any(
                c["type"] == "Ready" and c["reason"] == "PermissionDenied"
                for c in (ev.get("status") or {}).get("conditions") or []
            ),
        )
        ready = condition(denied, "Ready")
        assert "the operator may not create jobs.batch" in ready["message"]
        assert 'cannot create resource "jobs" in API group "batch"' in ready["message"]
        assert denied["status"]["phase"] == "Pending"  # nothing wrong with the spec
        cluster.wait_event("denied", ("PermissionDenied",))
        jobs["verbs"].append("create")  # the ClusterRole fixed, no restart
        cluster.wait_phase("denied", "Succeeded", timeout=120)
