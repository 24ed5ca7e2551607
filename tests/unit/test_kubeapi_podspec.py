"""The emulator's pod-spec validation: what the apiserver rejects beyond the Go types."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.support.kubeapi.podspec import parse_quantity, validate_pod_spec


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        (2, Decimal(2)),
        ("1.5Gi", Decimal(1.5 * 2**30)),
        ("128974848", Decimal(128974848)),
        ("129e6", Decimal(129_000_000)),
        ("123Mi", Decimal(123 * 2**20)),
        ("1k", Decimal(1000)),
        ("lots", None),
        ("1 GB", None),
        ("1GB", None),
    ],
)
def test_quantities_parse_as_the_apiserver_parses_them(text, value) -> None:
    assert parse_quantity(text) == value


def container(**resources) -> dict:
    return {"name": "runner", "image": "i", "resources": resources}


def messages(spec: dict) -> list[str]:
    return [f"{e.field}: {e.body}" for e in validate_pod_spec(spec, "spec.template.spec")]


def test_requests_above_limits_are_rejected() -> None:
    spec = {"containers": [container(requests={"cpu": "2"}, limits={"cpu": "1"})]}
    (message,) = messages(spec)
    assert "spec.template.spec.containers[0].resources.requests" in message
    assert "must be less than or equal to cpu limit of 1" in message
    assert messages({"containers": [container(requests={"cpu": "1"}, limits={"cpu": "2"})]}) == []


def test_node_selectors_must_be_labels_and_tolerations_consistent() -> None:
    spec = {
        "containers": [container()],
        "nodeSelector": {"bad key!": "x", "pool": "has space"},
        "tolerations": [{"key": "k", "operator": "Exists", "value": "v"}, {"value": "v"}],
    }
    found = messages(spec)
    assert len(found) == 4, found
    assert any("nodeSelector" in m and "name part must consist" in m for m in found)
    assert any("a valid label must be an empty string" in m for m in found)
    assert any("tolerations[0].operator" in m and "value must be empty" in m for m in found)
    assert any("tolerations[1].operator" in m and "operator must be Exists" in m for m in found)
