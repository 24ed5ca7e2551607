"""Optional platforms an EvalSuite uses when the cluster has them: the Prometheus Operator
(ServiceMonitor, PodMonitor, PrometheusRule) and cert-manager (Issuer, Certificate).

Found by API discovery (GET /apis/<group>/<version>: the resources the API server serves) at
start, then again every `platform_recheck_seconds` by one loop: never per reconcile, never in a
hot loop. When what is served changes (the CRDs were installed, or removed), every suite is
reconciled again, so MonitoringReady and TLSReady follow without a restart.

Each platform is known present (True), known absent (False: a 404, or its resources not
served) or unknown (None): discovery has not answered (the API server away at start, a 5xx, a
timeout). Unknown is never taken for absent: a suite keeps what it has of that platform (its
TLS settings, its monitors) until discovery answers, and discovery is asked again soon (1 s,
doubling up to the recheck interval) rather than at the next recheck. A platform once known
stays as it was known while discovery fails later.
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
# While a platform is unknown, discovery is asked again after this, doubling to the interval.
RETRY_FIRST_SECONDS = 1.0


@dataclass(frozen=True)
class Platforms:
    """True: served; False: not served; None: unknown (discovery has not answered)."""

    prometheus_operator: bool | None = None
    cert_manager: bool | None = None

    @property
    def known(self) -> bool:
        return self.prometheus_operator is not None and self.cert_manager is not None


async def _serves(discover: Callable[[str], Awaitable[dict | None]], spec: tuple) -> bool | None:
    group, version, plurals = spec
    try:
        found = await discover(f"/apis/{group}/{version}")
    except Exception as err:  # the API server is away, or answered 5xx: unknown, not absent
        log.warning("platform discovery failed", group=group, error=f"{type(err).__name__}: {err}")
        return None
    if not found:
        return False
    served = {r.get("name") for r in found.get("resources") or []}
    return all(plural in served for plural in plurals)


async def discover(get: Callable[[str], Awaitable[dict | None]]) -> Platforms:
    """What the API server serves now. `get` answers a path, None for a 404; a platform whose
    discovery raised is None (unknown)."""
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
        self._retry = RETRY_FIRST_SECONDS

    async def check(self) -> Platforms:
        found = await discover(self._get)
        # What discovery could not tell is what we knew (unknown at first).
        merged = Platforms(
            prometheus_operator=(
                self.current.prometheus_operator
                if found.prometheus_operator is None
                else found.prometheus_operator
            ),
            cert_manager=(
                self.current.cert_manager if found.cert_manager is None else found.cert_manager
            ),
        )
        if merged != self.current:
            log.info(
                "platforms",
                prometheus_operator=merged.prometheus_operator,
                cert_manager=merged.cert_manager,
            )
            self.current = merged
            self._changed(merged)
        return merged

    def next_delay(self) -> float:
        """The recheck interval once every platform is known; while one is not, soon, then
        doubling (never a hot loop)."""
        if self.current.known:
            self._retry = RETRY_FIRST_SECONDS
            return self.interval
        delay = min(self._retry, self.interval)
        self._retry = min(self._retry * 2, self.interval)
        return delay

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.next_delay())
            await self.check()
