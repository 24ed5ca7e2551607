"""A thin async layer over kubernetes_asyncio for the few calls reconcile makes.

kubernetes_asyncio is the async twin of the official client: no synchronous call ever blocks
kopf's event loop. Expected API answers are outcomes here, not errors: 409 on create means the
object is already there (a replayed event), 404 on delete means it is already gone.
"""

from __future__ import annotations

import os
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException


async def connect() -> client.ApiClient:
    """In-cluster credentials in a pod; otherwise the current kubeconfig (`make run`)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()
    else:
        await config.load_kube_config()
    return client.ApiClient()


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)

    async def close(self) -> None:
        await self.api_client.close()

    async def create(self, obj: dict[str, Any]) -> bool:
        """Create a namespaced ConfigMap or Job; False when it already existed."""
        namespace = obj["metadata"]["namespace"]
        create = {
            "ConfigMap": self.core.create_namespaced_config_map,
            "Job": self.batch.create_namespaced_job,
        }[obj["kind"]]
        try:
            await create(namespace, obj)
        except ApiException as err:
            if err.status == 409:
                return False
            raise
        return True

    async def delete_job(self, namespace: str, name: str) -> bool:
        """Delete a Job and, in the background, its pods; False when it was not there."""
        try:
            await self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    async def delete_config_map(self, namespace: str, name: str) -> None:
        try:
            await self.core.delete_namespaced_config_map(name, namespace)
        except ApiException as err:
            if err.status != 404:
                raise

    async def set_job_suspend(self, namespace: str, name: str, suspend: bool) -> None:
        await self.batch.patch_namespaced_job(name, namespace, {"spec": {"suspend": suspend}})

    async def secret_keys(self, namespace: str, name: str) -> set[str] | None:
        """The keys of a Secret (never its values), or None when it does not exist."""
        try:
            secret = await self.core.read_namespaced_secret(name, namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return set(secret.data or {}) | set(secret.string_data or {})

    async def config_map_keys(self, namespace: str, name: str) -> set[str] | None:
        try:
            config_map = await self.core.read_namespaced_config_map(name, namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return set(config_map.data or {}) | set(config_map.binary_data or {})
