"""An EvalSuite's stack when things go wrong, with the real operator and real PostgreSQL and
Redis servers (tests/support/stack_controller.py): the data outlives a deleted suite (or not,
as retainOnDelete says), the cache and the store go away mid-run and come back, and bad
external settings become clear conditions that recover once fixed, without a hot loop.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.model_server import Faults, ModelServer
from tests.support.operator_cluster import NS, Cluster, manifest, running_cluster
from tests.support.suites import reason, secret_value, store_rows, suite_manifest
from tests.unit.test_health_flux import flux_health
from tests.unit.test_health_lua import health as argo_health

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

GROUP, VERSION = "evals.io", "v1alpha1"
RECORDS = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(40)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    model = ModelServer(wrong=[], faults=Faults(latency=0.05))
    with running_cluster(tmp_path_factory.mktemp("recovery"), stack=True, model=model) as cluster:
        yield cluster


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def in_suite(cluster: Cluster, name: str, suite: str, **changes: Any) -> dict[str, Any]:
    spec = {
        "suiteRef": {"name": suite},
        "dataset": {"inline": RECORDS, "inputField": "question", "targetField": "answer"},
        "execution": {"shards": 1},
        **changes,
    }
    return manifest(name, cluster.model, **spec)


def wait_for(what: str, check: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def held_midway(cluster: Cluster, answered: int = 12) -> Iterator[None]:
    """The next run is held by the model server after `answered` answers, until the block
    ends: what a test does meanwhile happens in the middle of the run, not after it."""
    cluster.model.hold_after = cluster.model.count + answered
    try:
        yield
    finally:
        cluster.model.hold_after = None


def model_held(cluster: Cluster) -> bool:
    return cluster.model.count == cluster.model.hold_after


def wait_ready(cluster: Cluster, name: str) -> dict[str, Any]:
    return cluster.wait_suite(name, lambda s: reason(s, "Ready") == "Ready", timeout=120)


def test_a_deleted_suite_keeps_its_data_and_the_same_name_reattaches_it(cluster: Cluster) -> None:
    cluster.apply(suite_manifest("keep", {"cache": {"mode": "Disabled"}})).raise_for_status()
    wait_ready(cluster, "keep")
    password = secret_value(cluster, "keep-store-credentials", "password")
    cluster.apply(in_suite(cluster, "kept-run", "keep")).raise_for_status()
    ev = cluster.wait_phase("kept-run", "Succeeded", timeout=120)
    uid = ev["metadata"]["uid"]
    assert (
        store_rows(
            cluster, "keep", "SELECT count(*) AS n FROM samples WHERE evaluation_uid = $1", uid
        )[0]["n"]
        == 40
    )

    cluster.api.delete(GROUP, VERSION, "evalsuites", NS, "keep")
    wait_for(
        "the stack to go",
        lambda: cluster.api.get("apps", "v1", "statefulsets", NS, "keep-store") is None,
    )
    # retainOnDelete (the default): the data volume, the backups and the credentials stay.
    assert cluster.api.get("", "v1", "persistentvolumeclaims", NS, "data-keep-store-0") is not None
    assert cluster.api.get("", "v1", "persistentvolumeclaims", NS, "keep-store-backups") is not None
    assert secret_value(cluster, "keep-store-credentials", "password") == password
    for kind, name in (("services", "keep-store"), ("configmaps", "keep-store-config")):
        assert cluster.api.get("", "v1", kind, NS, name) is None

    cluster.apply(suite_manifest("keep", {"cache": {"mode": "Disabled"}})).raise_for_status()
    wait_ready(cluster, "keep")
    assert secret_value(cluster, "keep-store-credentials", "password") == password  # not replaced
    # The same data: the earlier run's rows are there.
    assert (
        store_rows(
            cluster, "keep", "SELECT count(*) AS n FROM samples WHERE evaluation_uid = $1", uid
        )[0]["n"]
        == 40
    )


def test_retain_on_delete_false_takes_the_data_with_the_suite(cluster: Cluster) -> None:
    spec = {"cache": {"mode": "Disabled"}, "store": {"managed": {"retainOnDelete": False}}}
    cluster.apply(suite_manifest("drop", spec)).raise_for_status()
    wait_ready(cluster, "drop")
    cluster.api.delete(GROUP, VERSION, "evalsuites", NS, "drop")
    for kind, name in (
        ("persistentvolumeclaims", "data-drop-store-0"),
        ("persistentvolumeclaims", "drop-store-backups"),
        ("secrets", "drop-store-credentials"),
    ):
        wait_for(
            f"{kind}/{name} to go",
            lambda kind=kind, name=name: cluster.api.get("", "v1", kind, NS, name) is None,
        )


def test_redis_killed_mid_run_the_run_completes_and_the_cache_comes_back(cluster: Cluster) -> None:
    cluster.apply(suite_manifest("flaky-cache", {})).raise_for_status()
    wait_ready(cluster, "flaky-cache")
    redis = cluster.stack.redis(NS, "flaky-cache-cache")
    with held_midway(cluster):
        cluster.apply(in_suite(cluster, "no-cache-midway", "flaky-cache")).raise_for_status()
        wait_for("the run to be held midway", lambda: model_held(cluster))
        cluster.stack.pause(NS, "flaky-cache-cache")
        redis.kill()
    cluster.wait_suite(
        "flaky-cache", lambda s: reason(s, "CacheReady") == "CacheUnavailable", timeout=30
    )
    ev = cluster.wait_phase("no-cache-midway", "Succeeded", timeout=120)
    assert condition(ev, "CacheAvailable")["status"] == "False"
    assert condition(ev, "CacheAvailable")["reason"] == "CacheUnavailable"
    assert redis.password not in str(ev)
    results = {r["name"]: r for r in ev["status"]["results"]}
    assert results["exact_match"]["n"] == 40
    cluster.stack.resume(NS, "flaky-cache-cache")
    suite = cluster.wait_suite(
        "flaky-cache", lambda s: reason(s, "CacheReady") == "Ready", timeout=30
    )
    assert reason(suite, "Ready") == "Ready"


def test_postgres_restarted_mid_run_loses_and_duplicates_nothing(cluster: Cluster) -> None:
    cluster.apply(suite_manifest("bumpy", {"cache": {"mode": "Disabled"}})).raise_for_status()
    wait_ready(cluster, "bumpy")
    before = cluster.model.count
    with held_midway(cluster):
        cluster.apply(in_suite(cluster, "through-restart", "bumpy")).raise_for_status()
        wait_for("the run to be held midway", lambda: model_held(cluster))
        cluster.stack.postgres(NS, "bumpy-store").restart()
    ev = cluster.wait_phase("through-restart", "Succeeded", timeout=120)
    found = store_rows(
        cluster,
        "bumpy",
        "SELECT count(*) AS n, count(DISTINCT sample_id) AS d FROM samples "
        "WHERE evaluation_uid = $1",
        ev["metadata"]["uid"],
    )[0]
    assert found["n"] == found["d"] == 40
    assert cluster.model.count - before == 40  # the pod never died: nothing asked twice
    assert {r["name"]: r for r in ev["status"]["results"]}["exact_match"]["n"] == 40


def test_bad_external_settings_are_conditions_that_recover_without_a_hot_loop(
    cluster: Cluster,
) -> None:
    cluster.apply(suite_manifest("target", {"cache": {"mode": "Disabled"}})).raise_for_status()
    wait_ready(cluster, "target")
    good_uri = secret_value(cluster, "target-store-credentials", "uri")
    external = {
        "store": {
            "mode": "External",
            "external": {"secretRef": {"name": "pg-app"}, "sslmode": "disable"},
        },
        "cache": {"mode": "Disabled"},
    }
    cluster.apply(suite_manifest("outside", external)).raise_for_status()
    suite = cluster.wait_suite(
        "outside", lambda s: reason(s, "StoreReady") == "ExternalSecretNotFound", timeout=60
    )
    assert "pg-app" in condition(suite, "StoreReady")["message"]

    def put_secret(data: dict[str, str]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "pg-app", "namespace": NS},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }
        if cluster.api.get("", "v1", "secrets", NS, "pg-app") is None:
            cluster.api.create(body)
        else:
            cluster.api.replace(body)

    put_secret({"uri": "mysql://root:canary-pw-5150@db.example/x"})
    suite = cluster.wait_suite(
        "outside", lambda s: reason(s, "StoreReady") == "InvalidStoreSecret", timeout=60
    )
    assert "postgresql://" in condition(suite, "StoreReady")["message"]
    wrong = good_uri.replace(good_uri.split("://evals:")[1].split("@")[0], "canary-pw-5150")
    put_secret({"uri": wrong})
    suite = cluster.wait_suite(
        "outside", lambda s: reason(s, "StoreReady") == "StoreAuthenticationFailed", timeout=60
    )
    pods_before = len(cluster.controller.pods_created)
    time.sleep(5)
    # The Job controller's backoff paces the retries: a few attempts, not a loop.
    assert len(cluster.controller.pods_created) - pods_before <= 3
    put_secret({"uri": good_uri})
    suite = wait_ready(cluster, "outside")
    assert suite["status"]["store"]["endpoint"] == f"target-store.{NS}.svc:5432/evals"
    assert argo_health("EvalSuite", suite)["status"] == "Healthy"
    assert flux_health(suite) == "current"
    everything = str(suite) + str(cluster.api.list("", "v1", "events", NS))
    assert "canary-pw-5150" not in everything
    # An Evaluation in the external store runs.
    cluster.apply(in_suite(cluster, "outside-run", "outside")).raise_for_status()
    cluster.wait_phase("outside-run", "Succeeded", timeout=120)


def test_a_suite_deleted_under_its_evaluations_is_a_clear_condition(cluster: Cluster) -> None:
    cluster.apply(suite_manifest("short-lived", {"cache": {"mode": "Disabled"}})).raise_for_status()
    wait_ready(cluster, "short-lived")
    cluster.api.delete(GROUP, VERSION, "evalsuites", NS, "short-lived")
    cluster.apply(in_suite(cluster, "orphan", "short-lived")).raise_for_status()
    ev = cluster.wait("orphan", lambda ev: reason(ev, "Ready") == "SuiteNotFound", timeout=30)
    assert ev["status"]["phase"] == "Pending"

    def writes_for_the_orphan() -> int:
        # Other suites of this module may still be settling: count what concerns this one.
        return sum(
            1
            for r in cluster.operator_requests()
            if r.method in ("PATCH", "POST", "PUT")
            and ("/evaluations/orphan" in r.path or "short-lived" in r.path)
        )

    writes = writes_for_the_orphan()
    time.sleep(3)
    assert writes_for_the_orphan() - writes <= 2  # waiting is quiet
