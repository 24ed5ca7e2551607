"""The operator's /metrics: per-Evaluation gauges from the index, and the HTTP endpoint."""

from __future__ import annotations

import socket

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from eval_operator import metrics


def _status(phase: str, reason: str = "", passed: str = "Unknown") -> dict:
    return {
        "phase": phase,
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if phase == "Succeeded" else "False",
                "reason": reason,
            },
            {"type": "Passed", "status": passed, "reason": "x"},
        ],
    }


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_view_defaults_for_an_evaluation_without_status():
    assert metrics.evaluation_view({}) == {
        "phase": "Pending",
        "reason": "",
        "passed": "Unknown",
        "jobName": None,
        "finished": False,
    }
    view = metrics.evaluation_view(_status("Failed", "FailedIndexes", "False"))
    assert {k: view[k] for k in ("phase", "reason", "passed")} == {
        "phase": "Failed",
        "reason": "FailedIndexes",
        "passed": "False",
    }


def test_collector_counts_phases_and_names_failures():
    # The shape of a kopf index: key -> a store (iterable) of values.
    index = {
        ("team-a", "ok"): [metrics.evaluation_view(_status("Succeeded", "Succeeded", "True"))],
        ("team-a", "low"): [metrics.evaluation_view(_status("Succeeded", "Succeeded", "False"))],
        ("team-a", "broken"): [
            metrics.evaluation_view(_status("Failed", "DatasetChecksumMismatch"))
        ],
        ("team-b", "new"): [metrics.evaluation_view({})],
    }
    registry = CollectorRegistry()
    registry.register(metrics.EvaluationCollector(index))
    samples = _samples(registry)

    def phase(ns: str, p: str) -> float:
        return samples[("eval_operator_evaluations", (("namespace", ns), ("phase", p)))]

    assert phase("team-a", "Succeeded") == 2
    assert phase("team-a", "Failed") == 1
    assert phase("team-a", "Running") == 0  # zeros are exported, not missing
    assert phase("team-b", "Pending") == 1
    failed = {k: v for k, v in samples.items() if k[0] == "eval_operator_evaluation_failed"}
    assert failed == {
        (
            "eval_operator_evaluation_failed",
            (
                ("evaluation", "broken"),
                ("namespace", "team-a"),
                ("reason", "DatasetChecksumMismatch"),
            ),
        ): 1.0
    }
    not_met = [k for k in samples if k[0] == "eval_operator_evaluation_thresholds_not_met"]
    assert not_met == [
        (
            "eval_operator_evaluation_thresholds_not_met",
            (("evaluation", "low"), ("namespace", "team-a")),
        )
    ]


def test_collector_follows_the_live_index():
    index: dict = {}
    registry = CollectorRegistry()
    registry.register(metrics.EvaluationCollector(index))
    assert not [k for k in _samples(registry) if k[0] == "eval_operator_evaluations"]
    index[("ns", "a")] = [metrics.evaluation_view(_status("Running"))]
    assert (
        _samples(registry)[
            ("eval_operator_evaluations", (("namespace", "ns"), ("phase", "Running")))
        ]
        == 1
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_metrics_server_serves_the_registry():
    registry = CollectorRegistry()
    registry.register(
        metrics.EvaluationCollector(
            {("ns", "x"): [metrics.evaluation_view(_status("Failed", "R"))]}
        )
    )
    server = metrics.MetricsServer(registry)
    port = _free_port()
    await server.start("127.0.0.1", port)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as rsp:
                assert rsp.status == 200
                assert rsp.headers["Content-Type"].startswith("text/plain")
                text = await rsp.text()
    finally:
        await server.stop()
    assert 'eval_operator_evaluation_failed{evaluation="x",namespace="ns",reason="R"} 1.0' in text


def test_process_metrics_are_registered_globally():
    names = {m.name for m in metrics.REGISTRY.collect()}
    assert "eval_operator_reconcile_duration_seconds" in names
    assert "eval_operator_reconcile_errors" in names  # the family name drops _total
