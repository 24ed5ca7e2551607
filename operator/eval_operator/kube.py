"""A thin async layer over kubernetes_asyncio for the calls reconcile makes.

kubernetes_asyncio is the async twin of the official client: no synchronous call ever blocks
kopf's event loop. Expected API answers are outcomes here, not errors: 409 on create means the
object is already there (a replayed event), 404 on delete means it is already gone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException

from eval_api.v1alpha1.common import GROUP, VERSION
from eval_operator.conditions import now_rfc3339

log = logging.getLogger(__name__)

PLURAL = "evaluations"
SUITES = "evalsuites"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "eval-operator"
# Where each kind the operator makes lives in the API.
COLLECTIONS = {
    "ConfigMap": "/api/v1/namespaces/{}/configmaps",
    "Secret": "/api/v1/namespaces/{}/secrets",
    "Service": "/api/v1/namespaces/{}/services",
    "PersistentVolumeClaim": "/api/v1/namespaces/{}/persistentvolumeclaims",
    "Pod": "/api/v1/namespaces/{}/pods",
    "Job": "/apis/batch/v1/namespaces/{}/jobs",
    "CronJob": "/apis/batch/v1/namespaces/{}/cronjobs",
    "StatefulSet": "/apis/apps/v1/namespaces/{}/statefulsets",
    "Deployment": "/apis/apps/v1/namespaces/{}/deployments",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{}/networkpolicies",
    "HorizontalPodAutoscaler": "/apis/autoscaling/v2/namespaces/{}/horizontalpodautoscalers",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{}/poddisruptionbudgets",
    "ServiceMonitor": "/apis/monitoring.coreos.com/v1/namespaces/{}/servicemonitors",
    "PodMonitor": "/apis/monitoring.coreos.com/v1/namespaces/{}/podmonitors",
    "PrometheusRule": "/apis/monitoring.coreos.com/v1/namespaces/{}/prometheusrules",
    "Issuer": "/apis/cert-manager.io/v1/namespaces/{}/issuers",
    "Certificate": "/apis/cert-manager.io/v1/namespaces/{}/certificates",
    "Evaluation": f"/apis/{GROUP}/{VERSION}/namespaces/{{}}/{PLURAL}",
}
COMPONENT = "eval-operator"
# How the apiserver words an authorization refusal (responsewriters.forbiddenMessage); an
# admission plugin's or policy's 403 says something else.
RBAC_REFUSAL = re.compile(r'cannot (\S+) resource "([^"]+)" in API group "([^"]*)"')


class Conflict(Exception):
    """The object changed since it was read (a resourceVersion precondition failed)."""


class Rejected(Exception):
    """The apiserver refused an object as invalid (422): retrying the same object cannot help."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Forbidden(Exception):
    """The operator's own service account may not do this (RBAC): a permission the operator
    lacks, not a fault in anyone's spec. Retrying with back-off is right: a fixed Role or
    ClusterRole takes effect without a restart."""

    def __init__(self, verb: str, resource: str, group: str, message: str) -> None:
        super().__init__(message)
        self.verb, self.resource, self.group, self.message = verb, resource, group, message

    @property
    def permission(self) -> str:
        """e.g. `create services` or `patch statefulsets.apps`."""
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {resource}"

    def explained(self) -> str:
        """What a condition says of it: the permission, who can grant it, the refusal."""
        return (
            f"the operator may not {self.permission} (grant it to the operator's "
            f"ServiceAccount, as the chart's ClusterRole does): {self.message}"
        )


async def connect() -> client.ApiClient:
    """In-cluster credentials in a pod; otherwise the current kubeconfig (`make run`)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()
    else:
        await config.load_kube_config()
    return client.ApiClient()


def _message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body).get("message") or err.reason)
    except (TypeError, ValueError):
        return str(err.reason)


class Kube:
    """The operator's API calls, all as plain JSON: objects are dicts in and out.

    kubernetes_asyncio's typed models (V1Job & co.) are not used: building them from every
    answer cost more CPU than everything else a reconcile does.
    """

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client

    async def close(self) -> None:
        await self.api_client.close()

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        try:
            return await self.api_client.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                response_types_map={200: "object", 201: "object", 202: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
            )
        except ApiException as err:
            if err.status == 403 and (refusal := RBAC_REFUSAL.search(_message(err))):
                raise Forbidden(*refusal.groups(), _message(err)) from err
            raise

    # --- Evaluations ----------------------------------------------------------------------

    async def _get(self, path: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", path)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    async def _patch_status(
        self, path: str, resource_version: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A merge patch of the status, only if the object is still at `resource_version`:
        a status computed from a stale snapshot is never written over a newer one."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": dict(status)}
        try:
            return await self._call("PATCH", path + "/status", body, content_type=MERGE_PATCH)
        except ApiException as err:
            if err.status in (404, 409):
                raise Conflict(path) from err
            raise

    async def get_evaluation(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(_evaluation_path(namespace, name))

    async def patch_evaluation_status(
        self, namespace: str, name: str, resource_version: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._patch_status(_evaluation_path(namespace, name), resource_version, status)

    # --- children -------------------------------------------------------------------------

    async def create(self, obj: dict[str, Any]) -> bool:
        """Create a namespaced object; False when it already existed (a 409 is success: a
        Secret made once is never overwritten)."""
        collection = COLLECTIONS[obj["kind"]]
        try:
            await self._call("POST", collection.format(obj["metadata"]["namespace"]), obj)
        except ApiException as err:
            if err.status == 409:
                return False
            if err.status == 422:
                raise Rejected(_message(err)) from err
            raise
        return True

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of the fields the operator owns (created when absent); what
        others set on the object (an HPA's replicas, a user's annotations) stays."""
        meta = obj["metadata"]
        path = COLLECTIONS[obj["kind"]].format(meta["namespace"]) + f"/{meta['name']}"
        try:
            return await self._call(
                "PATCH", path, obj, content_type=APPLY_PATCH,
                query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            )  # fmt: skip
        except ApiException as err:
            # 422: the schema or a field's immutability refused it; 403: an admission policy
            # or plugin did (the chart's ValidatingAdmissionPolicy checks the cells of a
            # matrix as any Evaluation; a PVC's StorageClass may not allow it to grow). RBAC's
            # own 403 is Forbidden, raised by _call.
            if err.status in (403, 422):
                raise Rejected(_message(err)) from err
            raise

    async def list_objects(
        self, kind: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        answer = await self._call(
            "GET", COLLECTIONS[kind].format(namespace), query=[("labelSelector", label_selector)]
        )
        return list(answer.get("items") or [])

    async def get_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(COLLECTIONS[kind].format(namespace) + f"/{name}")

    async def merge_patch(self, kind: str, namespace: str, name: str, patch: Any) -> None:
        """A JSON merge patch of one object (a claim's storage request)."""
        path = COLLECTIONS[kind].format(namespace) + f"/{name}"
        try:
            await self._call("PATCH", path, patch, content_type=MERGE_PATCH)
        except ApiException as err:
            if err.status in (403, 422):  # an admission plugin's refusal, or validation's
                raise Rejected(_message(err)) from err
            raise

    async def delete(
        self, kind: str, namespace: str, name: str, *, propagation: str = "Background"
    ) -> bool:
        """Delete an object and, in the background, what it owns (`Orphan`: leave what it
        owns running); False when it was not there."""
        path = COLLECTIONS[kind].format(namespace) + f"/{name}"
        try:
            await self._call("DELETE", path, {"propagationPolicy": propagation})
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    # --- EvalSuites -----------------------------------------------------------------------

    async def discovery(self, path: str) -> dict[str, Any] | None:
        """An API group version's resource list (GET /apis/<group>/<version>); None when the
        API server does not serve it."""
        return await self._get(path)

    async def get_suite(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(_suite_path(namespace, name))

    async def patch_suite_status(
        self, namespace: str, name: str, resource_version: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._patch_status(_suite_path(namespace, name), resource_version, status)

    async def put_config_map(self, obj: dict[str, Any]) -> None:
        """Create a ConfigMap, or replace the data of the one that is there."""
        if not await self.create(obj):
            meta = obj["metadata"]
            await self._call(
                "PATCH", f"/api/v1/namespaces/{meta['namespace']}/configmaps/{meta['name']}",
                {"data": obj["data"]}, content_type=MERGE_PATCH,
            )  # fmt: skip

    async def delete_job(self, namespace: str, name: str) -> bool:
        """Delete a Job and, in the background, its pods; False when it was not there."""
        return await self.delete("Job", namespace, name)

    async def delete_config_maps(self, namespace: str, label_selector: str) -> None:
        await self._call(
            "DELETE",
            f"/api/v1/namespaces/{namespace}/configmaps",
            query=[("labelSelector", label_selector)],
        )

    async def patch_job(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        await self._call(
            "PATCH", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}", dict(patch),
            content_type=MERGE_PATCH,
        )  # fmt: skip

    async def config_map_keys(self, namespace: str, name: str) -> set[str] | None:
        try:
            config_map = await self._call(
                "GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}"
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return set(config_map.get("data") or {}) | set(config_map.get("binaryData") or {})

    async def config_map_value(self, namespace: str, name: str, key: str) -> str | None:
        """The text of a ConfigMap's key (data), or None when the ConfigMap or key is gone."""
        try:
            config_map = await self._call(
                "GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}"
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        value = (config_map.get("data") or {}).get(key)
        return value if isinstance(value, str) else None

    # --- events ---------------------------------------------------------------------------

    async def post_event(
        self, regarding: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event about an object; a failure to post is logged, never raised."""
        meta = regarding["metadata"]
        now = now_rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": regarding.get("apiVersion"),
                "kind": regarding.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": os.environ.get("HOSTNAME", COMPONENT),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._call("POST", f"/api/v1/namespaces/{meta['namespace']}/events", event)
        except ApiException as err:
            log.warning("could not post event %s for %s: %s", reason, meta["name"], err.status)


def _suite_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{SUITES}/{name}"


def _evaluation_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
