"""kopf wiring: the only module with @kopf decorators; each handler calls into handlers/.

Run with `kopf run -m eval_operator.main` (or `make run`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp
import kopf

from eval_api.v1alpha1 import GROUP, VERSION
from eval_operator import kube, metrics
from eval_operator.builders.meta import EVALUATION_LABEL, MANAGED_BY, RUN_LABEL
from eval_operator.handlers import evaluation as evaluation_handlers
from eval_operator.settings import OperatorSettings
from eval_operator.status import TERMINAL_PHASES

EVALUATIONS = (GROUP, VERSION, "evaluations")
KOPF_PREFIX = f"operator.{GROUP}"
# Read at import because the timer interval is fixed when the decorator runs; the same values
# go into the memo at start-up.
SETTINGS = OperatorSettings.from_env()


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    evaluation_states: kopf.Index,
    **_: Any,
) -> None:
    # Our CRD schema has no room for kopf's bookkeeping in status (it would be pruned), so
    # handler progress and the last-handled spec live in annotations. Their prefix must differ
    # from the user-facing evals.io/ one: kopf ignores changes of its own prefix's annotations,
    # and evals.io/rerun must trigger a reconcile.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Watches reconnect every few minutes instead of trusting one long connection through
    # proxies and load balancers that drop idle streams silently.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # One slow API call must not hang a handler forever.
    settings.networking.request_timeout = 60
    # Events from kopf itself at WARNING and above; ours are posted explicitly.
    settings.posting.level = logging.WARNING
    memo.ctx = evaluation_handlers.Context(
        settings=SETTINGS,
        kube=kube.Kube(await kube.connect()),
        http=aiohttp.ClientSession(),
    )
    if SETTINGS.metrics_port:
        memo.collector = metrics.EvaluationCollector(evaluation_states)
        metrics.REGISTRY.register(memo.collector)
        memo.metrics_server = metrics.MetricsServer()
        await memo.metrics_server.start("0.0.0.0", SETTINGS.metrics_port)


@kopf.on.cleanup()
async def close_clients(memo: kopf.Memo, **_: Any) -> None:
    if memo.get("metrics_server") is not None:
        await memo.metrics_server.stop()
        metrics.REGISTRY.unregister(memo.collector)
    ctx = memo.get("ctx")
    if ctx is not None:
        await ctx.http.close()
        await ctx.kube.close()


@kopf.on.probe(id="ready")
def ready(memo: kopf.Memo, **_: Any) -> bool:
    return memo.get("ctx") is not None


@kopf.index("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
def evaluation_jobs(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): evaluation_handlers.job_view(body)}


@kopf.index("", "v1", "pods", labels={EVALUATION_LABEL: kopf.PRESENT, RUN_LABEL: kopf.PRESENT})
def evaluation_pods(
    namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[Any, Any]:
    return {(namespace, labels[RUN_LABEL]): evaluation_handlers.pod_view(body)}


@kopf.index(*EVALUATIONS)
def evaluation_states(namespace: str, name: str, status: kopf.Status, **_: Any) -> dict[Any, Any]:
    """Phase and verdict of every watched Evaluation, for the metrics computed at scrape time."""
    return {(namespace, name): metrics.evaluation_view(status)}


def _unfinished(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in TERMINAL_PHASES


@kopf.on.resume(*EVALUATIONS, id="reconcile-on-resume")
@kopf.on.create(*EVALUATIONS, id="reconcile-on-create")
@kopf.on.update(*EVALUATIONS, id="reconcile-on-update")
@kopf.timer(
    *EVALUATIONS,
    id="follow-run",
    # While a run is unfinished: progress from the pods, the Job's outcome, missing inputs.
    interval=SETTINGS.reconcile_interval_seconds,
    # The create/resume handlers reconcile first; the timer follows up.
    initial_delay=SETTINGS.reconcile_interval_seconds,
    when=_unfinished,
)
async def reconcile_evaluation(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    evaluation_jobs: kopf.Index,
    evaluation_pods: kopf.Index,
    **_: Any,
) -> None:
    started = time.monotonic()
    try:
        await _reconcile(body, patch, memo, evaluation_jobs, evaluation_pods)
    except Exception:
        metrics.RECONCILE_ERRORS.inc()
        raise
    finally:
        metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)


async def _reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    evaluation_jobs: kopf.Index,
    evaluation_pods: kopf.Index,
) -> None:
    evaluation = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": dict(body.metadata),
        "spec": dict(body.spec),
        "status": dict(body.status),
    }
    status, events = await evaluation_handlers.reconcile(
        evaluation, memo.ctx, evaluation_jobs, evaluation_pods
    )
    old = evaluation["status"]
    if status != old:
        patch.status.update(evaluation_handlers.status_patch(old, status))
    for message in events:
        # kopf.event, not kopf.info: posting.level (WARNING) filters kopf.info out.
        kopf.event(body, type="Normal", reason="Reconciled", message=message)
