"""Live progress of running shards, read from each runner pod's GET /progress.

Polling the pods (bounded by the running Evaluations' pods) keeps runner pods free of any
Kubernetes credentials: they never write to the API, so they need no RBAC at all.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from pydantic import ValidationError

from eval_api.shard import ShardSummary

_MAX_PARALLEL_POLLS = 32


async def poll_pods(
    session: aiohttp.ClientSession, pods: list[dict[str, Any]], timeout_seconds: float
) -> dict[str, ShardSummary]:
    """pod name -> its live summary, for the running pods that answered in time."""
    gate = asyncio.Semaphore(_MAX_PARALLEL_POLLS)

    async def one(pod: dict[str, Any]) -> tuple[str, ShardSummary | None]:
        name = pod["metadata"]["name"]
        url = f"http://{pod['status']['podIP']}:{pod['progressPort']}/progress"
        async with gate:
            try:
                async with session.get(
                    url, timeout=aiohttp.ClientTimeout(total=timeout_seconds)
                ) as rsp:
                    if rsp.status != 200:
                        return name, None
                    return name, ShardSummary.model_validate(await rsp.json())
            except (aiohttp.ClientError, TimeoutError, ValueError, ValidationError):
                # A pod starting up or going away: its next poll or termination message tells.
                return name, None

    running = [
        pod
        for pod in pods
        if (pod.get("status") or {}).get("phase") == "Running"
        and pod["status"].get("podIP")
        and pod.get("progressPort")
    ]
    answers = await asyncio.gather(*(one(pod) for pod in running))
    return {name: summary for name, summary in answers if summary is not None}
