"""Optional platforms by API discovery (eval_operator.platforms): present, absent, or unknown
when discovery does not answer; unknown is never absent, it is asked again soon, and while it
lasts a suite keeps the TLS it has (builders.tls.stack_objects). Issue 17, 4.7 and 4.6."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eval_api.v1alpha1 import EvalSuiteSpec
from eval_operator import platforms
from eval_operator.builders import dashboard, tls
from eval_operator.builders import suite as builders
from eval_operator.conditions import condition_of
from eval_operator.suite_status import desired_suite_status
from tests.unit.test_suite_builders import SETTINGS, suite_object
from tests.unit.test_suite_status import observe

SERVED = {
    "/apis/monitoring.coreos.com/v1": {
        "resources": [{"name": n} for n in ("servicemonitors", "podmonitors", "prometheusrules")]
    },
    "/apis/cert-manager.io/v1": {"resources": [{"name": "issuers"}, {"name": "certificates"}]},
}


class Discovery:
    """GET of a discovery path: what is served, None for a 404, or an error (a 503)."""

    def __init__(self, failing: set[str] | None = None, served: dict | None = None) -> None:
        self.failing = failing if failing is not None else set()
        self.served = SERVED if served is None else served

    async def __call__(self, path: str) -> dict[str, Any] | None:
        if path in self.failing:
            raise RuntimeError("(503) the server is currently unable to handle the request")
        return self.served.get(path)


def test_a_platform_discovery_cannot_reach_is_unknown_not_absent() -> None:
    found = asyncio.run(platforms.discover(Discovery({"/apis/cert-manager.io/v1"})))
    assert found == platforms.Platforms(prometheus_operator=True, cert_manager=None)
    assert not found.known
    absent = asyncio.run(platforms.discover(Discovery(served={})))
    assert absent == platforms.Platforms(prometheus_operator=False, cert_manager=False)


def test_unknown_is_asked_again_soon_and_a_known_platform_is_kept_through_a_failure() -> None:
    changes: list[platforms.Platforms] = []
    discovery = Discovery({"/apis/cert-manager.io/v1", "/apis/monitoring.coreos.com/v1"})
    watch = platforms.PlatformWatch(discovery, 300.0, changes.append)
    assert asyncio.run(watch.check()) == platforms.Platforms()  # unknown at start
    assert changes == []  # nothing was known: nothing changed
    assert [watch.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    discovery.failing.clear()
    assert asyncio.run(watch.check()) == platforms.Platforms(True, True)
    assert changes == [platforms.Platforms(True, True)]
    assert watch.next_delay() == 300.0
    discovery.failing.add("/apis/cert-manager.io/v1")
    assert asyncio.run(watch.check()) == platforms.Platforms(True, True)  # as it was known
    assert len(changes) == 1


def objects_of(spec: EvalSuiteSpec, suite: dict[str, Any]) -> list[dict[str, Any]]:
    found = builders.desired_objects(suite, spec, SETTINGS)
    return found + dashboard.dashboard_objects(suite, spec, SETTINGS)


def test_while_cert_manager_is_unknown_what_tls_changes_is_kept_as_it_is() -> None:
    raw = {"tls": {"enabled": True}}
    suite, spec = suite_object(raw), EvalSuiteSpec.model_validate(raw)
    plain = objects_of(spec, suite)
    on, kept = tls.stack_objects(plain, suite, spec, True)
    assert kept == [] and len(on) > len(plain)
    off, kept = tls.stack_objects(plain, suite, spec, False)
    assert off == plain and kept == []
    apply, kept = tls.stack_objects(plain, suite, spec, None)
    names = {(o["kind"], o["metadata"]["name"]) for o in kept}
    # Neither stripped nor given TLS: the servers, their configs, the dashboard and every
    # pod that is a client of the store or the cache are not applied (nor pruned).
    assert ("StatefulSet", "stack-store") in names
    assert ("ConfigMap", "stack-store-config") in names
    assert ("Deployment", "stack-cache") in names
    assert ("Deployment", "stack-dashboard") in names
    assert not any(o["kind"] in ("Issuer", "Certificate") for o in apply)
    # What TLS does not touch is applied as usual; nothing is in both.
    assert ("Service", "stack-store-headless") in {
        (o["kind"], o["metadata"]["name"]) for o in apply
    }
    assert len(apply) + len(kept) == len(plain)
    # Without spec.tls, an unknown cert-manager changes nothing.
    assert tls.stack_objects(plain, suite, EvalSuiteSpec(), None) == (plain, [])


@pytest.mark.parametrize(("revision", "expected"), [(None, None), (1, None), (2, "2"), (7, "7")])
def test_a_renewal_is_a_new_pod_template_for_the_server_that_uses_the_certificate(
    revision: int | None, expected: str | None
) -> None:
    raw = {"tls": {"enabled": True}}
    suite, spec = suite_object(raw), EvalSuiteSpec.model_validate(raw)
    revisions = {
        "stack-store-tls": revision,
        "stack-cache-tls": revision,
        "stack-dashboard-tls": revision,
    }
    objects, _ = tls.stack_objects(objects_of(spec, suite), suite, spec, True, revisions)
    for kind, name, wanted in (
        ("StatefulSet", "stack-store", expected),
        ("Deployment", "stack-cache", expected),
        ("Deployment", "stack-dashboard", None),  # it re-reads its certificate: no rollout
    ):
        obj = next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)
        annotations = obj["spec"]["template"]["metadata"].get("annotations") or {}
        # The first issuance is what the pod starts with: only renewals change the template.
        assert annotations.get(tls.REVISION_ANNOTATION) == wanted, name


def test_an_unknown_platform_is_said_unknown_and_the_dashboard_keeps_its_scheme() -> None:
    spec = {"tls": {"enabled": True}, "monitoring": {"enabled": True}}
    obs = observe(spec, cert_manager=None, prometheus_operator=None)
    status = desired_suite_status({}, obs)
    for type_ in ("TLSReady", "MonitoringReady"):
        found = condition_of(status, type_)
        assert (found["status"], found["reason"]) == ("Unknown", "PlatformUnknown"), type_
    assert status["dashboard"]["url"].startswith("https://")
    absent = desired_suite_status({}, observe(spec, cert_manager=False, prometheus_operator=False))
    assert condition_of(absent, "TLSReady")["reason"] == "CertManagerNotInstalled"
    assert condition_of(absent, "MonitoringReady")["reason"] == "PrometheusOperatorNotInstalled"
