"""kopf wiring: the only module with @kopf decorators; each handler calls into the others.

Run with `kopf run -m eval_operator.main` (or `make run`).

Everything is watch-driven and nothing is stored on the Evaluations by kopf: only event
handlers and indexes are registered (no create/update/resume handlers, whose bookkeeping
annotations would copy the spec, and no timers or daemons, which would put a finalizer on every
Evaluation). Watch events of Evaluations, their Jobs and their pods all ask the work queue to
reconcile the Evaluation; one operator-wide loop polls running pods for live progress.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import kopf

from eval_api.v1alpha1.common import GROUP, VERSION
from eval_operator import kube, metrics, platforms, progress
from eval_operator.builders.meta import EVALUATION_LABEL, MANAGED_BY, RUN_LABEL
from eval_operator.builders.netpol import member_view
from eval_operator.builders.suite import SUITE_LABEL
from eval_operator.control import process_key
from eval_operator.handlers import evaluation as evaluation_handlers
from eval_operator.handlers import suite as suite_handlers
from eval_operator.matrix import cell_view
from eval_operator.settings import OperatorSettings
from eval_operator.suite_status import suite_view
from eval_operator.workqueue import WorkQueue

EVALUATIONS = (GROUP, VERSION, "evaluations")
EVALSUITES = (GROUP, VERSION, "evalsuites")
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    evaluation_states: kopf.Index,
    evaluation_jobs: kopf.Index,
    evaluations_by_suite: kopf.Index,
    suite_views: kopf.Index,
    suite_statefulsets: kopf.Index,
    suite_deployments: kopf.Index,
    suite_cells: kopf.Index,
    **_: Any,
) -> None:
    operator_settings = OperatorSettings.from_env()  # fails fast on a bad value
    # Only our own Jobs and pods are sent to us: a server-side label selector, so a cluster
    # with thousands of other pods costs the operator nothing.
    settings.watching.label_selectors["batch", "jobs"] = MANAGED_SELECTOR
    settings.watching.label_selectors["", "pods"] = f"{MANAGED_SELECTOR},{RUN_LABEL}"
    settings.watching.label_selectors["apps", "statefulsets"] = f"{MANAGED_SELECTOR},{SUITE_LABEL}"
    settings.watching.label_selectors["apps", "deployments"] = f"{MANAGED_SELECTOR},{SUITE_LABEL}"
    settings.watching.label_selectors["cert-manager.io", "certificates"] = (
        f"{MANAGED_SELECTOR},{SUITE_LABEL}"
    )
    # Watches reconnect every few minutes instead of trusting one long connection through
    # proxies and load balancers that drop idle streams silently.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # A watched object's kopf worker (with the last body it saw) lives this long after its
    # last event, not kopf's default 5 s: a burst of thousands of Evaluations and Jobs would
    # otherwise hold thousands of bodies at once (the operator's memory high-water mark).
    settings.queueing.idle_timeout = 1.0
    # One slow API call must not hang a reconcile forever.
    settings.networking.request_timeout = 60
    # kopf's own events only for its errors; ours are posted by the reconcile.
    settings.posting.level = logging.WARNING
    # kopf's liveness endpoint would log every probe at INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    ctx = evaluation_handlers.Context(
        settings=operator_settings,
        kube=kube.Kube(await kube.connect()),
        http=aiohttp.ClientSession(),
        jobs=evaluation_jobs,
        suites=suite_views,
        workloads=_Workloads(suite_statefulsets, suite_deployments),
        cells=suite_cells,
        members=evaluations_by_suite,
        control_key=process_key(
            operator_settings.control_key.get_secret_value()
            if operator_settings.control_key is not None
            else None
        ),
    )

    async def reconcile(key: Any, hint: Any) -> float | None:
        with metrics.RECONCILE_SECONDS.time():
            if key[0] == suite_handlers.SUITE_KIND:
                return await suite_handlers.reconcile(ctx, key[1:], hint)
            return await evaluation_handlers.reconcile(ctx, key, hint)

    memo.ctx = ctx
    memo.queue = WorkQueue(
        reconcile,
        workers=operator_settings.reconcile_workers,
        on_error=lambda key, err: metrics.RECONCILE_ERRORS.inc(),
    )
    memo.queue.start()
    memo.progress = asyncio.create_task(progress.follow(ctx, memo.queue), name="progress-loop")

    def platforms_changed(found: platforms.Platforms) -> None:
        # Every suite again: MonitoringReady and TLSReady follow what the cluster serves.
        ctx.platforms = found
        for namespace, name in list(suite_views.keys()):
            memo.queue.add(suite_handlers.suite_key(namespace, name))

    memo.platforms = platforms.PlatformWatch(
        ctx.kube.discovery, operator_settings.platform_recheck_seconds, platforms_changed
    )
    await memo.platforms.check()
    memo.platform_loop = asyncio.create_task(memo.platforms.run(), name="platform-discovery")
    if operator_settings.metrics_port:
        memo.collector = metrics.EvaluationCollector(evaluation_states)
        metrics.REGISTRY.register(memo.collector)
        memo.metrics_server = metrics.MetricsServer()
        await memo.metrics_server.start("0.0.0.0", operator_settings.metrics_port)


@kopf.on.cleanup()
async def close_clients(memo: kopf.Memo, **_: Any) -> None:
    for task in ("progress", "platform_loop"):
        if memo.get(task) is not None:
            memo[task].cancel()
            await asyncio.gather(memo[task], return_exceptions=True)
    if memo.get("queue") is not None:
        await memo.queue.stop()
    if memo.get("metrics_server") is not None:
        await memo.metrics_server.stop()
        metrics.REGISTRY.unregister(memo.collector)
    ctx = memo.get("ctx")
    if ctx is not None:
        await ctx.http.close()
        await ctx.kube.close()


@kopf.on.probe(id="ready")
async def ready(memo: kopf.Memo, **_: Any) -> bool:
    return memo.get("ctx") is not None


# --- Evaluations ----------------------------------------------------------------------------


# Every handler is async: kopf runs sync handlers in a thread pool, which costs more than they do.


@kopf.index(*EVALUATIONS)
async def evaluation_states(
    namespace: str, name: str, status: kopf.Status, **_: Any
) -> dict[Any, Any]:
    """Phase and verdict of every watched Evaluation: for /metrics, and to know finished runs."""
    return {(namespace, name): metrics.evaluation_view(status)}


@kopf.index(*EVALUATIONS)
async def evaluations_by_suite(
    namespace: str, name: str, spec: kopf.Spec, **_: Any
) -> dict[Any, Any]:
    """Which Evaluations run in which suite (a suite's change asks them to reconcile), and the
    ports of their endpoints (the suite's NetworkPolicy lets its runners reach them)."""
    suite = (spec.get("suiteRef") or {}).get("name")
    return {(namespace, suite): member_view(name, spec)} if suite else {}


@kopf.index(*EVALUATIONS, labels={SUITE_LABEL: kopf.PRESENT})
async def suite_cells(
    namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[Any, Any]:
    """The cells of every suite's matrix, as the suite needs them."""
    return {(namespace, labels[SUITE_LABEL]): cell_view(body)}


@kopf.on.event(*EVALUATIONS)
async def evaluation_event(
    type: str | None,
    namespace: str,
    name: str,
    labels: kopf.Labels,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    key = (namespace, name)
    cell_of = labels.get(SUITE_LABEL)
    if cell_of:  # a cell of a suite's matrix: the suite's leaderboard and runs follow it
        memo.queue.add(suite_handlers.suite_key(namespace, cell_of))
    suite = ((body.get("spec") or {}).get("suiteRef") or {}).get("name")
    # An Evaluation in a suite: the ports of its endpoints are in the suite's NetworkPolicy.
    # Only a change of them (or of its suite) wakes the suite, not every progress write.
    joined = None if type == "DELETED" or not suite else (suite, member_view(name, body["spec"]))
    before = memo.ctx.memberships.get(key)
    if joined != before:
        for changed in {m[0] for m in (joined, before) if m is not None} - {cell_of}:
            memo.queue.add(suite_handlers.suite_key(namespace, changed))
        if joined is None:
            memo.ctx.memberships.pop(key, None)
        else:
            memo.ctx.memberships[key] = joined
    if type == "DELETED":
        memo.queue.forget(key)
        memo.ctx.forget(key)
        return
    memo.queue.add(key, _plain(body))


# --- the children: every change asks for a reconcile of the owning Evaluation ------------------


@kopf.index("batch", "v1", "jobs", labels=MANAGED)
async def evaluation_jobs(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): evaluation_handlers.job_view(body)}


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def job_event(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    owner = labels.get(EVALUATION_LABEL)
    if owner:
        memo.queue.add((namespace, owner))
    elif labels.get(SUITE_LABEL):  # a suite's schema migration
        memo.queue.add(suite_handlers.suite_key(namespace, labels[SUITE_LABEL]))


@kopf.on.event("", "v1", "pods", labels={**MANAGED, RUN_LABEL: kopf.PRESENT})
async def pod_event(
    type: str | None,
    namespace: str,
    labels: kopf.Labels,
    body: kopf.Body,
    memo: kopf.Memo,
    evaluation_states: kopf.Index,
    **_: Any,
) -> None:
    owner = labels.get(EVALUATION_LABEL)
    run = labels.get(RUN_LABEL)
    state = next(iter(evaluation_states.get((namespace, owner), [])), None)
    if state is not None and state["finished"] and state["jobName"] == run:
        # The run's outcome is in status: nothing about its pods matters any more.
        memo.ctx.pods.forget_run(namespace, run)
        return
    memo.ctx.pods.observe(type, _plain(body))
    if type == "DELETED":
        memo.ctx.live.pop((namespace, body["metadata"]["name"]), None)
    if owner:
        memo.queue.add((namespace, owner))


# --- EvalSuites: the stack and the Evaluations that run in it ---------------------------------


@kopf.index(*EVALSUITES)
async def suite_views(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): suite_view(body)}


@kopf.on.event(*EVALSUITES)
async def suite_event(
    type: str | None,
    namespace: str,
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    evaluations_by_suite: kopf.Index,
    **_: Any,
) -> None:
    key = suite_handlers.suite_key(namespace, name)
    if type == "DELETED":
        memo.queue.forget(key)
        suite_handlers.forget(memo.ctx, namespace, name)
        memo.ctx.suite_readiness.pop((namespace, name), None)
    else:
        memo.queue.add(key, _plain(body))
    # Evaluations waiting for the suite see it become ready (or change): only then, not on
    # every write of its leaderboard, which would wake every cell of a big matrix.
    view = suite_view(body)
    readiness = (type == "DELETED", view["storeReady"], body["metadata"].get("generation"))
    if memo.ctx.suite_readiness.get((namespace, name)) == readiness:
        return
    if type != "DELETED":
        memo.ctx.suite_readiness[(namespace, name)] = readiness
    for member in evaluations_by_suite.get((namespace, name), []):
        memo.queue.add((namespace, member["name"]))


@kopf.index("apps", "v1", "statefulsets", labels={**MANAGED, SUITE_LABEL: kopf.PRESENT})
async def suite_statefulsets(
    namespace: str, name: str, body: kopf.Body, **_: Any
) -> dict[Any, Any]:
    return {(namespace, "StatefulSet", name): suite_handlers.workload_view(body)}


@kopf.index("apps", "v1", "deployments", labels={**MANAGED, SUITE_LABEL: kopf.PRESENT})
async def suite_deployments(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, "Deployment", name): suite_handlers.workload_view(body)}


@kopf.on.event("apps", "v1", "statefulsets", labels={**MANAGED, SUITE_LABEL: kopf.PRESENT})
async def statefulset_event(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    memo.queue.add(suite_handlers.suite_key(namespace, labels[SUITE_LABEL]))


@kopf.on.event("apps", "v1", "deployments", labels={**MANAGED, SUITE_LABEL: kopf.PRESENT})
async def deployment_event(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    memo.queue.add(suite_handlers.suite_key(namespace, labels[SUITE_LABEL]))


# A suite's Certificate issued or renewed (where cert-manager's CRDs are served; kopf starts
# the watch when they appear): TLSReady follows it, and a renewal rolls its server onto the
# new certificate (its status.revision is in the server's pod template).
@kopf.on.event(
    "cert-manager.io", "v1", "certificates", labels={**MANAGED, SUITE_LABEL: kopf.PRESENT}
)
async def certificate_event(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    memo.queue.add(suite_handlers.suite_key(namespace, labels[SUITE_LABEL]))


class _Workloads:
    """The StatefulSet and Deployment indexes as one mapping keyed (namespace, kind, name)."""

    def __init__(self, statefulsets: kopf.Index, deployments: kopf.Index) -> None:
        self._indexes = (statefulsets, deployments)

    def get(self, key: Any, default: Any = None) -> Any:
        for index in self._indexes:
            if key in index:
                return index[key]
        return default


def _plain(body: kopf.Body) -> dict[str, Any]:
    """The raw object under a kopf body: each watch event brings a new one that nothing
    changes afterwards (kopf included), so keeping it needs no copy."""
    return dict(body)
