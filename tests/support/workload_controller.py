"""Plays the Deployment and StatefulSet controllers (and their kubelets) for the API emulator.

Nothing runs the containers of a Deployment here; what tools wait for is its status: `kubectl
rollout status`, `helm install --wait` (kstatus) and Argo CD read observedGeneration, the
replica counts and the Available/Progressing conditions. This reports each Deployment and
StatefulSet as fully rolled out, as the real controllers do once every pod is ready; the tests
that use it run the workload's process themselves where it matters (the operator in-process,
the model server as a local process).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.support.kubeapi import KubeAPIServer
from tests.support.kubeapi.errors import APIError

KINDS = (("apps", "v1", "deployments"), ("apps", "v1", "statefulsets"))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def rolled_out(obj: dict[str, Any]) -> dict[str, Any]:
    """The status the controllers report for a workload whose every replica is ready."""
    replicas = (obj.get("spec") or {}).get("replicas", 1)
    status: dict[str, Any] = {
        "observedGeneration": obj["metadata"].get("generation", 1),
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }
    if obj["kind"] == "Deployment":
        status["conditions"] = [
            {
                "type": "Available",
                "status": "True",
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
                "lastTransitionTime": _now(),
                "lastUpdateTime": _now(),
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable",
                "message": f'ReplicaSet "{obj["metadata"]["name"]}" has successfully progressed.',
                "lastTransitionTime": _now(),
                "lastUpdateTime": _now(),
            },
        ]
    else:
        status.update(currentReplicas=replicas, currentRevision="r1", updateRevision="r1")
    return status


class WorkloadController:
    """Polls the emulator in a thread and rolls out every Deployment and StatefulSet."""

    def __init__(self, api: KubeAPIServer, interval: float = 0.2) -> None:
        self.api = api
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="workload-controller", daemon=True)

    def __enter__(self) -> WorkloadController:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for group, version, plural in KINDS:
                for obj in self.api.list(group, version, plural):
                    status = obj.get("status") or {}
                    if status.get("observedGeneration") == obj["metadata"].get("generation"):
                        continue
                    meta = obj["metadata"]
                    try:
                        self.api.patch_status(
                            group, version, plural, meta["namespace"], meta["name"], rolled_out(obj)
                        )
                    except APIError:
                        pass  # deleted meanwhile: the next round sees it gone
