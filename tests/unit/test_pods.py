"""Runner pods as the operator sees them: progress URLs and why a pod is stuck."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from eval_operator.pods import not_starting_in, pod_view, progress_url, stuck
from tests.support.factories import pod

SCHEDULED_AT = "2026-12-01T10:00:00Z"
T0 = datetime.datetime(2026, 12, 1, 10, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("ip", "url"),
    [
        ("10.244.1.7", "http://10.244.1.7:9090/progress"),
        ("fd00:10:244::7", "http://[fd00:10:244::7]:9090/progress"),
        ("2001:db8::1", "http://[2001:db8::1]:9090/progress"),
    ],
)
def test_progress_urls_bracket_ipv6_addresses(ip: str, url: str) -> None:
    view = {"phase": "Running", "podIP": ip, "progressPort": 9090}
    assert progress_url(view) == url


@pytest.mark.parametrize(
    "view",
    [
        {"phase": "Pending", "podIP": "10.0.0.1", "progressPort": 9090},
        {"phase": "Running", "podIP": None, "progressPort": 9090},
        {"phase": "Running", "podIP": "10.0.0.1", "progressPort": None},
        {"phase": "Succeeded", "podIP": "10.0.0.1", "progressPort": 9090},
    ],
)
def test_no_progress_url_for_a_pod_that_cannot_answer(view: dict[str, Any]) -> None:
    assert progress_url(view) is None


def creating(name: str = "run-0-abcde", scheduled: bool = True) -> dict[str, Any]:
    body = pod("run", 0, phase="Pending")
    body["metadata"]["name"] = name
    body["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "True" if scheduled else "False"}
        | ({"lastTransitionTime": SCHEDULED_AT} if scheduled else {})
    ]
    body["status"]["containerStatuses"] = [
        {"name": "runner", "state": {"waiting": {"reason": "ContainerCreating"}}}
    ]
    return pod_view(body)


def test_a_pod_creating_its_container_too_long_is_stuck_and_says_where_to_look() -> None:
    view = creating()
    assert stuck([view], T0 + datetime.timedelta(seconds=299), 300) is None
    assert not_starting_in([view], T0 + datetime.timedelta(seconds=299), 300) == pytest.approx(1)
    reason, message = stuck([view], T0 + datetime.timedelta(seconds=301), 300)
    assert reason == "PodNotStarting"
    assert message.startswith("pod run-0-abcde has been in ContainerCreating for 301s")
    assert "kubectl describe pod run-0-abcde" in message
    assert not_starting_in([view], T0 + datetime.timedelta(seconds=301), 300) is None


def test_only_scheduled_creating_pods_count_and_without_a_clock_never() -> None:
    later = T0 + datetime.timedelta(hours=1)
    assert stuck([creating(scheduled=False)], later, 300) is None
    assert stuck([creating()]) is None  # no clock given: the old behaviour
    running = creating()
    running["phase"] = "Running"
    assert stuck([running], later, 300) is None
    assert not_starting_in([running], later, 300) is None
