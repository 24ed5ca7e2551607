"""Malformed EvalSuites are refused at `kubectl apply` (the real binary, against the emulated
apiserver enforcing the generated CRD's schema and CEL rules) with a message that names the
field; the same texts hold a manifest read by the Python models. A valid suite is stored with
its defaults filled in, and `kubectl get evs` prints the suite's columns.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from eval_api.v1alpha1 import EvalSuite
from tests.support.clis import Cluster
from tests.support.kubeapi import running_kubeapi
from tests.support.tools import ROOT

pytestmark = pytest.mark.integration

NS = "default"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_kubeapi() as server:
        cluster = Cluster(server, tmp_path_factory.mktemp("evalsuite"))
        cluster.kubectl("apply", "-f", str(ROOT / "crds" / "evalsuites.evals.io.yaml"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/evalsuites.evals.io")
        yield cluster
        assert server.internal_errors == []


def suite(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "EvalSuite",
        "metadata": {"name": name, "namespace": NS},
        "spec": copy.deepcopy(spec),
    }


EXTERNAL = {"secretRef": {"name": "pg-app"}}
MODEL = {"name": "small", "model": {"name": "small-1", "baseURL": "https://llm.example/v1"}}
TASK = {
    "name": "sums",
    "dataset": {"builtin": "arithmetic"},
    "task": {"scorers": [{"type": "exact_match"}]},
}
# name: (spec, a text the 422 message contains)
REJECTED: dict[str, tuple[dict[str, Any], str]] = {
    "storage size not a quantity": (
        {"store": {"managed": {"size": "ten gigs"}}},
        "spec.store.managed.size",
    ),
    "backup size not a quantity": (
        {"store": {"managed": {"backup": {"size": "-1Gi"}}}},
        "spec.store.managed.backup.size",
    ),
    "storage size of zero": (
        {"store": {"managed": {"size": "0"}}},
        "spec.store.managed.size: Invalid value: \"object\": the data volume's size must be "
        "more than 0",
    ),
    "backup size of zero": (
        {"store": {"managed": {"backup": {"size": "0Gi"}}}},
        "the backup volume's size must be more than 0",
    ),
    "unknown store mode": ({"store": {"mode": "Cloud"}}, "spec.store.mode"),
    "external mode without external": (
        {"store": {"mode": "External"}},
        "mode External needs external.secretRef",
    ),
    "external settings in managed mode": (
        {"store": {"external": EXTERNAL}},
        "external is only for mode External",
    ),
    "managed settings in external mode": (
        {"store": {"mode": "External", "external": EXTERNAL, "managed": {}}},
        "managed is only for mode Managed",
    ),
    "verify-full without a CA": (
        {"store": {"mode": "External", "external": {**EXTERNAL, "sslmode": "verify-full"}}},
        "sslmode verify-ca and verify-full need caBundle",
    ),
    "unknown sslmode": (
        {"store": {"mode": "External", "external": {**EXTERNAL, "sslmode": "on"}}},
        "spec.store.external.sslmode",
    ),
    "a parameter the operator owns": (
        {"store": {"managed": {"parameters": {"listen_addresses": "*"}}}},
        "parameters may not set listen_addresses",
    ),
    "a parameter name that is no postgresql.conf name": (
        {"store": {"managed": {"parameters": {"Work Mem": "1MB"}}}},
        "parameter names are lower-case postgresql.conf names",
    ),
    "a parameter value holding a line break": (
        # Written as is, the second line would be a setting of its own (or a file PostgreSQL
        # refuses to start with); a quote is fine: doubled, as postgresql.conf reads it.
        {"store": {"managed": {"parameters": {"log_line_prefix": "%m\nssl = off"}}}},
        "parameter values may not hold a line break",
    ),
    "renewBefore as long as the certificate's duration": (
        {"tls": {"enabled": True, "duration": "720h", "renewBefore": "720h"}},
        "spec.tls.renewBefore: Invalid value: \"object\": renewBefore must be shorter than "
        "duration",
    ),
    "renewBefore longer than the default duration": (
        {"tls": {"renewBefore": "2400h"}},
        "renewBefore must be shorter than duration",
    ),
    "a backup time zone that is no IANA zone": (
        {"store": {"managed": {"backup": {"timeZone": "Mars/Olympus"}}}},
        # A rule evaluation error on a real apiserver too (cel-go's getFullYear(timeZone)).
        "spec.store.managed.backup.timeZone: Invalid value: \"object\": rule evaluation error",
    ),
    "a schedule time zone that is no IANA zone": (
        {"models": [MODEL], "tasks": [TASK],
         "schedule": {"cron": "@daily", "timeZone": "Europe/Atlantis"}},
        "unknown time zone Europe/Atlantis",
    ),
    "the apiserver's own time zone": (
        {"models": [MODEL], "tasks": [TASK], "schedule": {"cron": "@daily", "timeZone": "Local"}},
        "spec.schedule.timeZone: Invalid value: \"object\": timeZone must be an IANA time zone",
    ),
    "a time zone as an offset": (
        {"models": [MODEL], "tasks": [TASK],
         "schedule": {"cron": "@daily", "timeZone": "+01:00"}},
        "spec.schedule.timeZone",
    ),
    "backup schedule not cron": (
        {"store": {"managed": {"backup": {"schedule": "every night"}}}},
        "spec.store.managed.backup.schedule",
    ),
    "zero backups kept": (
        {"store": {"managed": {"backup": {"retention": 0}}}},
        "spec.store.managed.backup.retention",
    ),
    "cache ttl below a minute": ({"cache": {"ttlSeconds": 5}}, "spec.cache.ttlSeconds"),
    "external cache without a secret": (
        {"cache": {"mode": "External"}},
        "mode External needs external.secretRef",
    ),
    "external cache secret without a key": (
        {"cache": {"mode": "External", "external": {"secretRef": {"name": "redis"}}}},
        "spec.cache.external.secretRef.key",
    ),
    "managed cache settings with the cache disabled": (
        {"cache": {"mode": "Disabled", "managed": {}}},
        "managed is only for mode Managed",
    ),
    "cache maxMemory not a quantity": (
        {"cache": {"managed": {"maxMemory": "lots"}}},
        "spec.cache.managed.maxMemory",
    ),
    "unknown field": ({"store": {"managed": {"sise": "1Gi"}}}, "sise"),
    # The matrix.
    "models without tasks": ({"models": [MODEL]}, "models and tasks go together"),
    "tasks without models": ({"tasks": [TASK]}, "models and tasks go together"),
    "an empty list of models": ({"models": [], "tasks": [TASK]}, "spec.models"),
    "two models of one name": (
        {"models": [MODEL, MODEL], "tasks": [TASK]},
        "model names must be unique",
    ),
    "two tasks of one name": (
        {"models": [MODEL], "tasks": [TASK, TASK]},
        "task names must be unique",
    ),
    "a model name that is no DNS label": (
        {"models": [{**MODEL, "name": "GPT_4"}], "tasks": [TASK]},
        "spec.models[0].name",
    ),
    "a task name too long for a cell's name": (
        {"models": [MODEL], "tasks": [{**TASK, "name": "t" * 41}]},
        "spec.tasks[0].name",
    ),
    "more than 400 cells": (
        {
            "models": [{**MODEL, "name": f"m{i}"} for i in range(21)],
            "tasks": [{**TASK, "name": f"t{i}"} for i in range(20)],
        },
        "at most 400 cells",
    ),
    "a baseline without a matrix": ({"baseline": "previous"}, "need a matrix"),
    "a baseline that is no run id": (
        {"models": [MODEL], "tasks": [TASK], "baseline": "last week"},
        "spec.baseline",
    ),
    "a regression rule without a baseline": (
        {"models": [MODEL], "tasks": [TASK], "regression": {"maxDrop": "0.02"}},
        "regression needs a baseline",
    ),
    "alpha of 1": (
        {"models": [MODEL], "tasks": [TASK], "baseline": "previous", "regression": {"alpha": "1"}},
        "spec.regression.alpha",
    ),
    "maxDrop above 1": (
        {"models": [MODEL], "tasks": [TASK], "baseline": "previous",
         "regression": {"maxDrop": "1.5"}},
        "spec.regression.maxDrop",
    ),
    "cells that stop at a verdict of a task with no thresholds": (
        {"models": [MODEL], "tasks": [{**TASK, "thresholds": []}],
         "defaults": {"execution": {"earlyStop": {"when": "Verdict"}}}},
        "defaults.execution.earlyStop when Verdict requires thresholds on every task",
    ),
    "cells that stop early against a baseline at maxDrop 0": (
        {"models": [MODEL], "tasks": [TASK], "baseline": "previous",
         "defaults": {"execution": {"earlyStop": {"when": "Verdict"}}}},
        "defaults.execution.earlyStop with a baseline requires regression.maxDrop above 0",
    ),
    "cells that stop early against a baseline at maxDrop 0.00": (
        {"models": [MODEL], "tasks": [TASK], "baseline": "accepted",
         "regression": {"maxDrop": "0.00"},
         "defaults": {"execution": {"earlyStop": {"when": "Verdict"}}}},
        "defaults.execution.earlyStop with a baseline requires regression.maxDrop above 0",
    ),
    "a schedule that is no cron": (
        {"models": [MODEL], "tasks": [TASK], "schedule": {"cron": "nightly"}},
        "spec.schedule.cron",
    ),
    "an unknown concurrency policy": (
        {"models": [MODEL], "tasks": [TASK],
         "schedule": {"cron": "@daily", "concurrencyPolicy": "Queue"}},
        "spec.schedule.concurrencyPolicy",
    ),
    "no parallel cells": (
        {"models": [MODEL], "tasks": [TASK], "maxParallelCells": 0},
        "spec.maxParallelCells",
    ),
    "more dashboard replicas at least than at most": (
        {"dashboard": {"minReplicas": 4, "maxReplicas": 2}},
        "minReplicas cannot exceed maxReplicas",
    ),
    "a dashboard's minimum above the default maximum": (
        {"dashboard": {"minReplicas": 5}},
        "minReplicas cannot exceed maxReplicas",
    ),
    "a CPU target above 100%": (
        {"dashboard": {"targetCPUUtilizationPercentage": 150}},
        "spec.dashboard.targetCPUUtilizationPercentage",
    ),
    "no requests a second": (
        {"dashboard": {"rateLimit": {"requestsPerSecond": 0}}},
        "spec.dashboard.rateLimit.requestsPerSecond",
    ),
    "a dashboard peer without a selector": (
        {"networkPolicy": {"dashboardFrom": [{}]}},
        "a peer needs namespaceSelector, podSelector or both",
    ),
    "an unknown label selector operator": (
        {"networkPolicy": {"dashboardFrom": [{"podSelector": {"matchExpressions": [
            {"key": "app", "operator": "Like"}]}}]}},
        "spec.networkPolicy.dashboardFrom[0].podSelector.matchExpressions[0].operator",
    ),
    "a cell's dataset with two sources": (
        {"models": [MODEL],
         "tasks": [{**TASK, "dataset": {"builtin": "arithmetic", "url": "https://x.example/d"}}]},
        "spec.tasks[0].dataset",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_rejected_at_apply_with_a_clear_message(cluster: Cluster, case: str) -> None:
    spec, expected = REJECTED[case]
    name = "bad-" + str(sorted(REJECTED).index(case))
    done = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(suite(name, spec)), check=False)
    assert done.returncode != 0, f"{case}: admitted"
    assert expected in done.stderr, f"{case}: {done.stderr}"
    assert cluster.kubectl("get", "evs", name, "-n", NS, check=False).returncode != 0


@pytest.mark.parametrize("case", sorted(set(REJECTED) - {"unknown field"}))
def test_the_python_models_refuse_the_same_manifests(case: str) -> None:
    spec, _ = REJECTED[case]
    with pytest.raises(ValidationError):
        EvalSuite.model_validate(suite("bad", spec))


def test_a_valid_suite_is_stored_with_its_defaults(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(suite("stack", {})))
    stored = json.loads(cluster.kubectl("get", "evs", "stack", "-n", NS, "-o", "json").stdout)
    assert stored["spec"]["store"] == {"mode": "Managed"}
    assert stored["spec"]["cache"] == {"mode": "Managed", "ttlSeconds": 604800}
    external = suite(
        "external",
        {
            "store": {
                "mode": "External",
                "external": {
                    "secretRef": {"name": "pg-app"},
                    "sslmode": "verify-full",
                    "caBundle": {"secretRef": {"name": "pg-ca", "key": "ca.crt"}},
                },
            },
            "cache": {"mode": "Disabled"},
        },
    )
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(external))
    EvalSuite.model_validate(external)
    managed = suite(
        "tuned",
        {"store": {"managed": {"size": "50Gi", "parameters": {"work_mem": "16MB"}}}},
    )
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(managed))
    stored = json.loads(cluster.kubectl("get", "evs", "tuned", "-n", NS, "-o", "json").stdout)
    # The schema's defaults are filled in by the apiserver, as the models fill them in.
    assert stored["spec"]["store"]["mode"] == "Managed"
    assert stored["spec"]["store"]["managed"]["retainOnDelete"] is True
    assert stored["spec"]["store"]["managed"]["backup"]["schedule"] == "0 3 * * *"
    assert stored["spec"]["cache"]["ttlSeconds"] == 604800
    nightly = suite(
        "nightly",
        {
            "models": [MODEL],
            "tasks": [TASK],
            "baseline": "accepted",
            "regression": {"maxDrop": "0.02"},
            "schedule": {"cron": "0 2 * * *", "timeZone": "Europe/Paris"},
        },
    )
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(nightly))
    stored = json.loads(cluster.kubectl("get", "evs", "nightly", "-n", NS, "-o", "json").stdout)
    assert stored["spec"]["regression"] == {"maxDrop": "0.02", "alpha": "0.05"}
    assert stored["spec"]["schedule"]["concurrencyPolicy"] == "Forbid"
    assert stored["spec"]["schedule"]["historyLimit"] == 10
    EvalSuite.model_validate(stored)
    table = cluster.kubectl("get", "evs", "-n", NS).stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "READY",
        "MODELS",
        "TASKS",
        "DONE",
        "BEST",
        "REGRESSED",
        "AGE",
    ]
    assert {line.split()[0] for line in table[1:]} >= {"stack", "external", "tuned"}
    # The category: `kubectl get evals` lists suites beside Evaluations.
    assert (
        "evalsuite.evals.io/tuned" in cluster.kubectl("get", "evals", "-n", NS, "-o", "name").stdout
    )


# What cannot change on a live suite: refused at `kubectl apply` of the change (CEL rules on
# oldSelf), while what can, is admitted. name: (before, after, a text of the 422 or None)
CHANGES: dict[str, tuple[dict[str, Any], dict[str, Any], str | None]] = {
    "the store grows": (
        {"store": {"managed": {"size": "1Gi"}}},
        {"store": {"managed": {"size": "2Gi"}}},
        None,
    ),
    "the same size in other words": (
        {"store": {"managed": {"size": "1Gi"}}},
        {"store": {"managed": {"size": "1024Mi"}}},
        None,
    ),
    "the store shrinks": (
        {"store": {"managed": {"size": "2Gi"}}},
        {"store": {"managed": {"size": "1Gi"}}},
        "spec.store.managed.size: Invalid value: \"object\": the data volume may grow but "
        "never shrink",
    ),
    "the store's class changes": (
        {"store": {"managed": {"storageClassName": "standard"}}},
        {"store": {"managed": {"storageClassName": "fast"}}},
        "spec.store.managed.storageClassName: Invalid value: \"object\": the data volume's "
        "storageClassName cannot change once it exists",
    ),
    "the store's class is set later": (
        {"store": {"managed": {}}},
        {"store": {"managed": {"storageClassName": "fast"}}},
        "storageClassName cannot change once it exists",
    ),
    "the backup volume shrinks": (
        {"store": {"managed": {"backup": {"size": "5Gi"}}}},
        {"store": {"managed": {"backup": {"size": "4Gi"}}}},
        "spec.store.managed.backup.size: Invalid value: \"object\": the backup volume may "
        "grow but never shrink",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CHANGES))
def test_a_change_of_a_live_suite_is_admitted_or_refused_at_apply(
    cluster: Cluster, case: str
) -> None:
    before, after, refusal = CHANGES[case]
    name = "live-" + str(sorted(CHANGES).index(case))
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(suite(name, before)))
    done = cluster.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(suite(name, after)), check=False
    )
    if refusal is None:
        assert done.returncode == 0, f"{case}: {done.stderr}"
    else:
        assert done.returncode != 0, f"{case}: admitted"
        assert refusal in done.stderr, f"{case}: {done.stderr}"
        # Outside a cluster there is no old object: the new spec alone is valid.
        EvalSuite.model_validate(suite(name, after))
