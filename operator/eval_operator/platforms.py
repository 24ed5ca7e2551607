"""Optional platforms an EvalSuite uses when the cluster has them: the Prometheus Operator
(ServiceMonitor, PodMonitor, PrometheusRule) and cert-manager (Issuer, Certificate).

Found by API discovery (GET /apis/<group>/<version>: the resources the API server serves) at
start, then again every `platform_recheck_seconds` by one loop: never per reconcile, never in a
hot loop. When what is served changes (the CRDs were installed, or removed), every suite is
reconciled again, so MonitoringReady and TLSReady follow without a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger()

PROMETHEUS_OPERATOR = (
    "monitoring.coreos.com",
    "v1",
    ("servicemonitors", "podmonitors", "prometheusrules"),
)
CERT_MANAGER = ("cert-manager.io", "v1", ("issuers", "certificates"))


@dataclass(frozen=True)
class Platforms:
    prometheus_operator: bool = False
    cert_manager: bool = False


async def _serves(discover: Callable[[str], Awaitable[dict | None]], spec: tuple) -> bool:
    group, version, plurals = spec
    found = await discover(f"/apis/{group}/{version}")
    if not found:
        return False
    served = {r.get("name") for r in found.get("resources") or []}
    return all(plural in served for plural in plurals)


async def discover(get: Callable[[str], Awaitable[dict | None]]) -> Platforms:
    """What the API server serves now. `get` answers a path, None for a 404."""
    return Platforms(
        prometheus_operator=await _serves(get, PROMETHEUS_OPERATOR),
        cert_manager=await _serves(get, CERT_MANAGER),
    )


class PlatformWatch:
    """The current Platforms, kept up to date by `run()`; `changed` is called on a change."""

    def __init__(
        self,
        get: Callable[[str], Awaitable[dict | None]],
        interval: float,
        changed: Callable[[Platforms], None],
    ) -> None:
        self._get, self.interval, self._changed = get, interval, changed
        self.current = Platforms()

    async def check(self) -> Platforms:
        try:
            found = await discover(self._get)
        except Exception as err:  # the API server is away: keep what we knew, try later
            log.warning("platform discovery failed", error=f"{type(err).__name__}: {err}")
            return self.current
        if found != self.current:
            log.info(
                "platforms",
                prometheus_operator=found.prometheus_operator,
                cert_manager=found.cert_manager,
            )
            self.current = found
            self._changed(found)
        return found

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()
