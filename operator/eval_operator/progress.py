"""Live progress of running shards: one operator-wide loop polls runner pods' GET /progress.

Polling the pods keeps runner pods free of any Kubernetes credentials: they never write to the
API, so they need no RBAC at all. One loop for the whole operator, with bounded concurrency and
jitter, instead of a timer per Evaluation: its cost grows with the pods running now, never with
the Evaluations that exist. When a run's live numbers change, its Evaluation is queued for a
reconcile; the reconcile throttles progress-only status writes.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Any

import aiohttp
from pydantic import ValidationError

from eval_api.shard import ShardSummary
from eval_operator.pods import progress_url

if TYPE_CHECKING:
    from eval_operator.handlers.evaluation import Context
    from eval_operator.workqueue import WorkQueue

log = logging.getLogger(__name__)

MAX_PARALLEL_POLLS = 32


async def poll(
    session: aiohttp.ClientSession, url: str, timeout_seconds: float
) -> ShardSummary | None:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_seconds)) as rsp:
            if rsp.status != 200:
                return None
            return ShardSummary.model_validate(await rsp.json())
    except (aiohttp.ClientError, TimeoutError, ValueError, ValidationError):
        # A pod starting up or going away: its next poll or termination message tells.
        return None


async def poll_once(ctx: Context, queue: WorkQueue) -> int:
    """Poll every running pod of every unfinished run once; returns how many answered."""
    gate = asyncio.Semaphore(MAX_PARALLEL_POLLS)
    targets: list[tuple[str, str, str, str]] = []  # namespace, evaluation, pod, url
    for (namespace, _run), pods in ctx.pods:
        for pod in pods:
            url = progress_url(pod)
            if url is not None and pod.get("evaluation"):
                targets.append((namespace, pod["evaluation"], pod["name"], url))

    async def one(target: tuple[str, str, str, str]) -> tuple[Any, ShardSummary | None]:
        async with gate:
            return target, await poll(ctx.http, target[3], ctx.settings.progress_timeout_seconds)

    answered = 0
    for (namespace, evaluation, pod, _), summary in await asyncio.gather(*map(one, targets)):
        if summary is None:
            continue
        answered += 1
        if ctx.live.get((namespace, pod)) != summary:
            ctx.live[(namespace, pod)] = summary
            queue.add((namespace, evaluation))
    return answered


async def follow(ctx: Context, queue: WorkQueue) -> None:
    interval = ctx.settings.progress_interval_seconds
    while True:
        # Jitter: many operators (or restarts) never poll in lockstep.
        await asyncio.sleep(interval * random.uniform(0.8, 1.2))
        try:
            await poll_once(ctx, queue)
        except Exception:  # never let one bad round stop progress for good
            log.exception("progress poll failed")
