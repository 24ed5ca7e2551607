"""Prometheus metrics of the operator process, served at GET /metrics (EVAL_OPERATOR_METRICS_PORT).

Two kinds:
- process-level counters and histograms, updated where the work happens (reconcile);
- per-Evaluation state, computed at scrape time from a kopf index of the Evaluations the
  operator watches, so the numbers are always those of the cluster, with no bookkeeping of
  creations and deletions and no state lost on restart.

Label values are namespaces, Evaluation names and condition reasons: only Evaluations that
failed or missed their thresholds get a series of their own, the rest are counted per phase.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from eval_operator.status import run_is_finished

PHASES = ("Pending", "Running", "Succeeded", "Failed")

RECONCILE_SECONDS = Histogram(
    "eval_operator_reconcile_duration_seconds",
    "Time of one reconcile of an Evaluation (handlers and the follow-up timer).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_ERRORS = Counter(
    "eval_operator_reconcile_errors_total",
    "Reconciles that raised an error (kopf retries them with a backoff).",
)


def evaluation_view(status: Mapping[str, Any]) -> dict[str, Any]:
    """What the metrics (and the pod watch) need of one Evaluation's status; the kopf index
    keeps only this."""
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = conditions.get("Ready") or {}
    passed = conditions.get("Passed") or {}
    return {
        "phase": status.get("phase") or "Pending",
        "reason": ready.get("reason") or "",
        "passed": passed.get("status") or "Unknown",
        "jobName": status.get("jobName"),
        "finished": run_is_finished(dict(status), status.get("jobName") or ""),
    }


def _views(index: Mapping[Any, Iterable[Mapping[str, str]]]) -> Iterator[tuple[Any, Any]]:
    for key, store in list(index.items()):
        for view in store:
            yield key, view


class EvaluationCollector(Collector):
    """Gauges computed from the index of Evaluations at each scrape."""

    def __init__(self, index: Mapping[Any, Iterable[Mapping[str, str]]]) -> None:
        self.index = index

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        by_phase: Tally[tuple[str, str]] = Tally()
        failed = self._failed_family()
        not_met = self._not_met_family()
        for (namespace, name), view in _views(self.index):
            by_phase[namespace, view["phase"]] += 1
            if view["phase"] == "Failed":
                failed.add_metric([namespace, name, view["reason"]], 1)
            elif view["phase"] == "Succeeded" and view["passed"] == "False":
                not_met.add_metric([namespace, name], 1)
        evaluations = self._phase_family()
        namespaces = sorted({namespace for namespace, _ in by_phase})
        for namespace in namespaces:
            for phase in PHASES:  # every phase, zeros included: rate() and alerts need them
                evaluations.add_metric([namespace, phase], by_phase[namespace, phase])
        yield from (evaluations, failed, not_met)

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        return (self._phase_family(), self._failed_family(), self._not_met_family())

    @staticmethod
    def _phase_family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "eval_operator_evaluations",
            "Evaluations the operator watches, by namespace and phase.",
            labels=["namespace", "phase"],
        )

    @staticmethod
    def _failed_family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "eval_operator_evaluation_failed",
            "1 for each Evaluation whose run failed, with the Ready condition's reason.",
            labels=["namespace", "evaluation", "reason"],
        )

    @staticmethod
    def _not_met_family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "eval_operator_evaluation_thresholds_not_met",
            "1 for each Evaluation that finished but missed a threshold (Passed=False).",
            labels=["namespace", "evaluation"],
        )


class MetricsServer:
    """GET /metrics on its own port, in the operator's event loop (aiohttp, no thread)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
