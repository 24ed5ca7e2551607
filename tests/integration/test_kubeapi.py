"""
Tests of the Kubernetes API emulator, over real HTTP only.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import kopf
import pytest
from kopf.testing import KopfRunner
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio import watch as k8s_watch

from tests.support.kubeapi import KubeAPIServer, running_kubeapi, use_kubeconfig

pytestmark = pytest.mark.integration

NS = "default"
WIDGETS = f"/apis/example.com/v1/namespaces/{NS}/widgets"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
PODS = f"/api/v1/namespaces/{NS}/pods"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {
            "plural": "widgets",
            "singular": "widget",
            "kind": "Widget",
            "shortNames": ["wd"],
            "categories": ["toys"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "!has(self.tags) || size(self.tags) <= 3",
                                        "message": "at most 3 tags",
                                    },
                                    {
                                        "rule": "self.mode != 'locked' || oldSelf.mode != 'locked' "
                                        "|| self.size == oldSelf.size",
                                        "message": "a locked size cannot change",
                                    },
                                ],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                    "title": {
                                        "type": "string",
                                        "pattern": "^[a-z]+$",
                                        "maxLength": 8,
                                    },
                                    "mode": {
                                        "type": "string",
                                        "enum": ["fast", "slow", "locked"],
                                        "default": "fast",
                                    },
                                    "tags": {
                                        "type": "array",
                                        "items": {
                                            "type": "string",
                                            "x-kubernetes-validations": [
                                                {
                                                    "rule": "self.matches('^[a-z]+$')",
                                                    "message": "tags are lowercase words",
                                                }
                                            ],
                                        },
                                    },
                                    "options": {
                                        "type": "object",
                                        "default": {},
                                        "properties": {
                                            "retries": {"type": "integer", "default": 3}
                                        },
                                    },
                                    "extra": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                    },
                                    "port": {"x-kubernetes-int-or-string": True},
                                    "note": {"type": "string", "nullable": True},
                                    "labels": {
                                        "type": "object",
                                        "additionalProperties": {"type": "string"},
                                        "x-kubernetes-validations": [
                                            {
                                                "rule": "self.all(k, size(k) < 10)",
                                                "message": "short keys only",
                                            }
                                        ],
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"size": 1, **spec},
    }


def job(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, **meta},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "runner", "image": "busybox"}],
                }
            }
        },
    }


def pod(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, **meta},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }


def owned_by(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "ownerReferences": [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
            }
        ]
    }


@pytest.fixture
async def server():
    async with KubeAPIServer(bookmark_interval=0.2) as srv:
        yield srv
    assert not srv.internal_errors  # no emulator bugs surfaced as HTTP 500s


@pytest.fixture
async def http(server):
    async with aiohttp.ClientSession(server.url) as session:
        yield Http(session)


@pytest.fixture
async def crd(http):
    status, body = await http.post(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD
    )
    assert status == 201, body
    return body


class Http:
    """Tiny JSON-over-HTTP helper: every call returns (status, parsed body)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        data = json.dumps(body) if body is not None else None
        async with self.session.request(
            method, path, data=data, headers={"Content-Type": content_type}
        ) as rsp:
            return rsp.status, await rsp.json()

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.call("GET", path)

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        return await self.call("POST", path, body)

    async def put(self, path: str, body: Any) -> tuple[int, Any]:
        return await self.call("PUT", path, body)

    async def patch(self, path: str, body: Any, content_type: str = MERGE) -> tuple[int, Any]:
        return await self.call("PATCH", path, body, content_type)

    async def delete(self, path: str, body: Any = None) -> tuple[int, Any]:
        return await self.call("DELETE", path, body)

    async def watch(
        self, path: str, *, until: int | None = None, limit: float = 5.0
    ) -> list[dict[str, Any]]:
        """Read watch events until the stream ends or ``until`` events were received."""
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(limit):
            async with self.session.get(path) as rsp:
                assert rsp.status == 200
                async for line in rsp.content:
                    events.append(json.loads(line))
                    if until is not None and len(events) >= until:
                        break
        return events


# --- discovery ----------------------------------------------------------------------------------


async def test_discovery_as_kopf_scans_it(server, crd):
    from kopf._cogs.clients import auth, scanning
    from kopf._cogs.structs import credentials

    vault = credentials.Vault()
    await vault.populate({"emulator": credentials.ConnectionInfo(server=server.url, token="t")})
    auth.vault_var.set(vault)
    try:
        settings = kopf.OperatorSettings()
        logger = logging.getLogger(__name__)
        found = {
            (r.group, r.version, r.plural): r
            for r in await scanning.scan_resources(settings=settings, logger=logger)
        }
        version = await scanning.read_version(settings=settings, logger=logger)
    finally:
        await vault.close()

    assert version["major"] == "1" and version["gitVersion"]
    pods = found[("", "v1", "pods")]
    assert pods.kind == "Pod" and pods.namespaced and pods.subresources == {"status"}
    assert pods.shortcuts == {"po"} and "all" in pods.categories and pods.preferred
    assert {"list", "watch", "patch"} <= pods.verbs
    assert not found[("", "v1", "namespaces")].namespaced
    assert found[("batch", "v1", "jobs")].subresources == {"status"}
    assert found[("events.k8s.io", "v1", "events")].namespaced
    assert ("coordination.k8s.io", "v1", "leases") in found
    crds = found[("apiextensions.k8s.io", "v1", "customresourcedefinitions")]
    assert not crds.namespaced and crds.shortcuts == {"crd", "crds"}
    widgets = found[("example.com", "v1", "widgets")]
    assert widgets.kind == "Widget" and widgets.singular == "widget"
    assert widgets.subresources == {"status"} and widgets.shortcuts == {"wd"}
    assert widgets.categories == {"toys"}
    assert not any(r.group == "kopf.dev" for r in found.values())


async def test_discovery_documents(http):
    status, api = await http.get("/api")
    assert status == 200 and api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    status, core = await http.get("/api/v1")
    assert core["kind"] == "APIResourceList" and core["groupVersion"] == "v1"
    names = {r["name"]: r for r in core["resources"]}
    assert names["pods/status"] == {
        "name": "pods/status",
        "singularName": "",
        "namespaced": True,
        "kind": "Pod",
        "verbs": ["get", "patch", "update"],
    }
    assert names["namespaces"]["namespaced"] is False
    assert {"secrets", "configmaps", "events", "serviceaccounts", "services"} <= set(names)
    status, groups = await http.get("/apis")
    assert groups["kind"] == "APIGroupList"
    batch = next(g for g in groups["groups"] if g["name"] == "batch")
    assert batch["preferredVersion"] == {"groupVersion": "batch/v1", "version": "v1"}
    status, group = await http.get("/apis/batch")
    assert status == 200 and group["kind"] == "APIGroup"

    for path in (
        "/apis/kopf.dev/v1",
        "/apis/batch/v2",
        "/api/v1/widgets",
        "/apis/kopf.dev/v1/namespaces/default/kopfpeerings",
        "/nonsense",
    ):
        status, body = await http.get(path)
        assert status == 404 and body["kind"] == "Status" and body["reason"] == "NotFound", path


# --- basic object semantics ---------------------------------------------------------------------


async def test_create_get_list_conflict_notfound(http, server):
    status, created = await http.post(CONFIGMAPS, {"metadata": {"name": "cm1"}, "data": {"a": "b"}})
    assert status == 201
    meta = created["metadata"]
    assert created["kind"] == "ConfigMap" and created["apiVersion"] == "v1"
    assert len(meta["uid"]) == 36 and meta["creationTimestamp"].endswith("Z")
    assert meta["namespace"] == NS and int(meta["resourceVersion"]) > 0
    assert "generation" not in meta  # configmaps have no spec, hence no generation

    status, again = await http.get(f"{CONFIGMAPS}/cm1")
    assert status == 200 and again == created

    status, body = await http.post(CONFIGMAPS, {"metadata": {"name": "cm1"}})
    assert status == 409 and body["reason"] == "AlreadyExists" and body["status"] == "Failure"
    assert body["message"] == 'configmaps "cm1" already exists'

    status, body = await http.get(f"{CONFIGMAPS}/missing")
    assert (status, body["reason"], body["code"]) == (404, "NotFound", 404)
    assert body["details"] == {"name": "missing", "kind": "configmaps"}

    status, generated = await http.post(CONFIGMAPS, {"metadata": {"generateName": "gen-"}})
    assert status == 201 and generated["metadata"]["name"].startswith("gen-")
    assert len(generated["metadata"]["name"]) == len("gen-") + 5

    status, body = await http.post(CONFIGMAPS, {"metadata": {"name": "Bad_Name"}})
    assert status == 422 and body["reason"] == "Invalid"
    status, body = await http.post(CONFIGMAPS, {"metadata": {"name": "x", "namespace": "other"}})
    assert status == 400 and body["reason"] == "BadRequest"
    status, body = await http.call("POST", f"{CONFIGMAPS}/cm1", {})
    assert status == 405 and body["reason"] == "MethodNotAllowed"

    status, body = await http.post(
        "/api/v1/namespaces/other/configmaps", {"metadata": {"name": "cm-other"}}
    )
    assert (status, body["message"]) == (404, 'namespaces "other" not found')  # not yet
    await http.post("/api/v1/namespaces", {"metadata": {"name": "other"}})
    await http.post("/api/v1/namespaces/other/configmaps", {"metadata": {"name": "cm-other"}})
    status, listing = await http.get(CONFIGMAPS)
    assert listing["kind"] == "ConfigMapList" and listing["apiVersion"] == "v1"
    assert listing["metadata"]["resourceVersion"] == str(server.resource_version)
    assert [i["metadata"]["name"] for i in listing["items"]] == [
        "cm1",
        generated["metadata"]["name"],
    ]
    assert all(i["kind"] == "ConfigMap" and i["apiVersion"] == "v1" for i in listing["items"])
    status, everywhere = await http.get(
        "/api/v1/configmaps?fieldSelector=metadata.namespace%3Dother"
    )
    assert [i["metadata"]["name"] for i in everywhere["items"]] == ["cm-other"]

    # Events are just objects, in both API groups.
    status, event = await http.post(
        f"/apis/events.k8s.io/v1/namespaces/{NS}/events",
        {
            "metadata": {"generateName": "ev-"},
            "reason": "Tested",
            "note": "hi",
            "regarding": {"kind": "ConfigMap", "name": "cm1", "namespace": NS},
        },
    )
    assert status == 201 and event["apiVersion"] == "events.k8s.io/v1"
    status, events = await http.get(
        f"/apis/events.k8s.io/v1/namespaces/{NS}/events?fieldSelector=regarding.name%3Dcm1"
    )
    assert [e["note"] for e in events["items"]] == ["hi"]

    # Pagination, as kopf does with settings.watching.chunk_size.
    status, page1 = await http.get("/api/v1/configmaps?limit=2")
    assert len(page1["items"]) == 2 and page1["metadata"]["continue"]
    status, page2 = await http.get(
        f"/api/v1/configmaps?limit=2&continue={page1['metadata']['continue']}"
    )
    assert len(page2["items"]) == 1 and not page2["metadata"].get("continue")

    # Namespaces: objects need theirs (above); they are served properly.
    status, ns = await http.post("/api/v1/namespaces", {"metadata": {"name": "team-a"}})
    assert status == 201 and ns["status"]["phase"] == "Active"
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-a"}
    status, namespaces = await http.get("/api/v1/namespaces")
    assert namespaces["kind"] == "NamespaceList"
    assert [n["metadata"]["name"] for n in namespaces["items"]] == [
        "default",
        "kube-node-lease",
        "kube-public",
        "kube-system",
        "other",
        "team-a",
    ]
    assert all("namespace" not in n["metadata"] for n in namespaces["items"])


async def test_generation_bumps_only_on_spec_changes(http, crd):
    status, obj = await http.post(WIDGETS, widget("w1"))
    assert status == 201 and obj["metadata"]["generation"] == 1
    rv1 = obj["metadata"]["resourceVersion"]

    status, obj = await http.patch(f"{WIDGETS}/w1", {"metadata": {"labels": {"a": "b"}}})
    assert obj["metadata"]["generation"] == 1 and obj["metadata"]["resourceVersion"] != rv1
    status, obj = await http.patch(f"{WIDGETS}/w1/status", {"status": {"phase": "Ready"}})
    assert obj["metadata"]["generation"] == 1 and obj["status"] == {"phase": "Ready"}
    status, obj = await http.patch(f"{WIDGETS}/w1", {"spec": {"size": 2}})
    assert obj["metadata"]["generation"] == 2

    # A no-op write changes nothing at all: no new resourceVersion, no watch event.
    rv = obj["metadata"]["resourceVersion"]
    status, same = await http.patch(f"{WIDGETS}/w1", {"spec": {"size": 2}})
    assert same["metadata"]["resourceVersion"] == rv

    # Built-ins with a status subresource behave the same.
    status, created = await http.post(JOBS, job("j1"))
    assert created["metadata"]["generation"] == 1 and created["status"] == {}
    status, updated = await http.patch(f"{JOBS}/j1/status", {"status": {"active": 1}})
    assert updated["metadata"]["generation"] == 1 and updated["status"] == {"active": 1}
    status, updated = await http.patch(f"{JOBS}/j1", {"spec": {"parallelism": 2}})
    assert updated["metadata"]["generation"] == 2


async def test_status_subresource_isolation(http, crd):
    body = widget("w1")
    body["status"] = {"phase": "Forged"}
    status, obj = await http.post(WIDGETS, body)
    assert "status" not in obj  # dropped on creation, as the status is a subresource

    # The main resource ignores the status...
    status, obj = await http.patch(f"{WIDGETS}/w1", {"spec": {"size": 3}, "status": {"phase": "X"}})
    assert obj["spec"]["size"] == 3 and "status" not in obj
    # ... and the status subresource ignores everything but the status.
    status, obj = await http.patch(
        f"{WIDGETS}/w1/status",
        {"spec": {"size": 9}, "metadata": {"labels": {"sneaky": "yes"}}, "status": {"phase": "Ok"}},
    )
    assert obj["spec"]["size"] == 3 and "labels" not in obj["metadata"]
    assert obj["status"] == {"phase": "Ok"}

    # PUT behaves the same both ways.
    full = copy.deepcopy(obj)
    full["spec"]["size"] = 4
    full["status"] = {"phase": "Ignored"}
    status, obj = await http.put(f"{WIDGETS}/w1", full)
    assert status == 200 and obj["spec"]["size"] == 4 and obj["status"] == {"phase": "Ok"}
    full = copy.deepcopy(obj)
    full["spec"]["size"] = 5
    full["status"] = {"phase": "Done"}
    status, obj = await http.put(f"{WIDGETS}/w1/status", full)
    assert obj["spec"]["size"] == 4 and obj["status"] == {"phase": "Done"}
    status, obj = await http.get(f"{WIDGETS}/w1/status")
    assert status == 200 and obj["status"] == {"phase": "Done"}

    # Pods too: creation resets the status, the subresource sets it.
    status, created = await http.post(PODS, pod("p1"))
    assert created["status"] == {"phase": "Pending"}
    status, updated = await http.patch(f"{PODS}/p1/status", {"status": {"phase": "Running"}})
    assert updated["status"]["phase"] == "Running"


async def test_merge_and_json_patches(http, server):
    status, obj = await http.post(
        CONFIGMAPS, {"metadata": {"name": "cm", "labels": {"a": "1", "b": "2"}}, "data": {"x": "1"}}
    )
    rv = obj["metadata"]["resourceVersion"]

    status, obj = await http.patch(
        f"{CONFIGMAPS}/cm", {"metadata": {"labels": {"a": None, "c": "3"}}, "data": {"y": "2"}}
    )
    assert status == 200
    assert obj["metadata"]["labels"] == {"b": "2", "c": "3"} and obj["data"] == {"x": "1", "y": "2"}

    # A stale resourceVersion in a merge patch is a precondition: 409.
    status, body = await http.patch(
        f"{CONFIGMAPS}/cm", {"metadata": {"resourceVersion": rv}, "data": {"z": "1"}}
    )
    assert status == 409 and body["reason"] == "Conflict"

    current = obj["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": current},
        {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/f"]},
        {"op": "remove", "path": "/data/x"},
        {"op": "replace", "path": "/data/y", "value": "two"},
        {"op": "copy", "from": "/data/y", "path": "/data/k~1v"},
    ]
    status, obj = await http.patch(f"{CONFIGMAPS}/cm", ops, JSON_PATCH)
    assert status == 200, obj
    assert obj["metadata"]["finalizers"] == ["example.com/f"]
    assert obj["data"] == {"y": "two", "k/v": "two"}

    # The failing "test" op (kopf's optimistic concurrency) is 422 and changes nothing.
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": current},
        {"op": "add", "path": "/data/never", "value": "set"},
    ]
    status, body = await http.patch(f"{CONFIGMAPS}/cm", ops, JSON_PATCH)
    assert status == 422 and body["kind"] == "Status" and body["reason"] == "Invalid"
    assert "never" not in server.get("", "v1", "configmaps", NS, "cm")["data"]

    status, body = await http.patch(
        f"{CONFIGMAPS}/cm", [{"op": "remove", "path": "/nope"}], JSON_PATCH
    )
    assert status == 422
    status, body = await http.patch(f"{CONFIGMAPS}/cm", {"not": "a list"}, JSON_PATCH)
    assert status == 400 and body["reason"] == "BadRequest"
    # Server-side apply needs a field manager (the apiserver's 400 without one).
    status, body = await http.patch(f"{CONFIGMAPS}/cm", {}, "application/apply-patch+yaml")
    assert status == 400 and "fieldManager: Required value" in body["message"]

    # Strategic merge: real for built-ins (ConfigMap data is a plain map); refused for CRs.
    status, obj = await http.patch(
        f"{CONFIGMAPS}/cm", {"data": {"s": "smp"}}, "application/strategic-merge-patch+json"
    )
    assert status == 200 and obj["data"]["s"] == "smp"


async def test_put_optimistic_concurrency(http, crd):
    status, obj = await http.post(WIDGETS, widget("w1"))
    stale = copy.deepcopy(obj)
    obj["spec"]["size"] = 2
    status, fresh = await http.put(f"{WIDGETS}/w1", obj)
    assert status == 200 and fresh["spec"]["size"] == 2
    stale["spec"]["size"] = 3
    status, body = await http.put(f"{WIDGETS}/w1", stale)
    assert status == 409 and body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]

    # Custom resources demand a resourceVersion on PUT; built-ins allow blind updates.
    del stale["metadata"]["resourceVersion"]
    status, body = await http.put(f"{WIDGETS}/w1", stale)
    assert status == 422 and "metadata.resourceVersion" in body["message"]
    status, cm = await http.post(CONFIGMAPS, {"metadata": {"name": "cm"}})
    status, cm = await http.put(
        f"{CONFIGMAPS}/cm", {"metadata": {"name": "cm"}, "data": {"a": "b"}}
    )
    assert status == 200 and cm["data"] == {"a": "b"}
    status, body = await http.put(f"{CONFIGMAPS}/cm", {"metadata": {"name": "other"}})
    assert status == 400

    status, body = await http.patch(
        f"{WIDGETS}/w1", {"spec": {"size": 4}}, "application/strategic-merge-patch+json"
    )
    assert status == 415 and body["reason"] == "UnsupportedMediaType"


# --- CRDs ---------------------------------------------------------------------------------------


async def test_crd_registration_and_removal(http, server):
    status, body = await http.get(WIDGETS)
    assert status == 404

    status, crd = await http.post(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD
    )
    assert status == 201
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd["spec"]["names"]["listKind"] == "WidgetList"

    status, resources = await http.get("/apis/example.com/v1")
    assert {r["name"] for r in resources["resources"]} == {"widgets", "widgets/status"}
    status, groups = await http.get("/apis")
    assert any(g["name"] == "example.com" for g in groups["groups"])

    status, obj = await http.post(WIDGETS, widget("w1"))
    assert status == 201 and obj["apiVersion"] == "example.com/v1" and obj["kind"] == "Widget"
    status, listing = await http.get("/apis/example.com/v1/widgets")
    assert listing["kind"] == "WidgetList" and len(listing["items"]) == 1

    status, body = await http.delete(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com"
    )
    assert status == 200
    status, body = await http.get(WIDGETS)
    assert status == 404
    status, body = await http.get("/apis/example.com/v1")
    assert status == 404

    broken = copy.deepcopy(WIDGET_CRD)
    broken["metadata"]["name"] = "wrong.example.com"
    broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"] = [
        {"rule": "self.spec.size >"}
    ]
    status, body = await http.post(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", broken
    )
    assert status == 422
    fields = {c["field"] for c in body["details"]["causes"]}
    assert fields == {
        "metadata.name",
        "spec.versions[0].schema.openAPIV3Schema.x-kubernetes-validations[0].rule",
    }


async def test_crd_validation(http, crd):
    bad = widget("w1", size=0, title="Not-Low", mode="turbo", port=1.5, tags=["a", "b", "c", "D"])
    del bad["spec"]["size"]
    status, body = await http.post(WIDGETS, bad)
    assert status == 422 and body["kind"] == "Status" and body["status"] == "Failure"
    assert body["reason"] == "Invalid" and body["code"] == 422
    assert body["details"]["kind"] == "Widget" and body["details"]["group"] == "example.com"
    causes = {c["field"]: c for c in body["details"]["causes"]}
    assert causes["spec.size"]["reason"] == "FieldValueRequired"
    assert causes["spec.mode"]["reason"] == "FieldValueNotSupported"
    assert causes["spec.title"]["message"] == (
        "Invalid value: \"Not-Low\": spec.title in body should match '^[a-z]+$'"
    )
    assert causes["spec.tags[3]"]["message"] == 'Invalid value: "string": tags are lowercase words'
    assert causes["spec"]["message"] == 'Invalid value: "object": at most 3 tags'
    assert "spec.port" in causes
    assert body["message"].startswith('Widget.example.com "w1" is invalid: [')
    assert (
        'spec.mode: Unsupported value: "turbo": supported values: "fast", "slow", "locked"'
        in body["message"]
    )

    status, body = await http.post(WIDGETS, widget("w1", size=11, title="waytoolongtitle"))
    assert status == 422
    assert {c["field"] for c in body["details"]["causes"]} == {"spec.size", "spec.title"}
    assert "should be less than or equal to 10" in body["message"]

    status, body = await http.post(WIDGETS, widget("w1", labels={"averyverylongkey": "v"}))
    assert status == 422 and "short keys only" in body["message"]

    # Valid objects pass; a CEL transition rule (oldSelf) applies only to updates.
    status, obj = await http.post(WIDGETS, widget("w1", size=2, mode="locked", port="http"))
    assert status == 201, obj
    status, body = await http.patch(f"{WIDGETS}/w1", {"spec": {"size": 3}})
    assert status == 422 and "a locked size cannot change" in body["message"]
    status, obj = await http.patch(f"{WIDGETS}/w1", {"spec": {"mode": "slow", "size": 3}})
    assert status == 200 and obj["spec"]["size"] == 3

    # Validation applies to JSON patches too.
    status, body = await http.patch(
        f"{WIDGETS}/w1", [{"op": "replace", "path": "/spec/size", "value": "big"}], JSON_PATCH
    )
    assert status == 422
    assert body["details"]["causes"][0]["message"] == (
        'Invalid value: "string": spec.size in body must be of type integer: "string"'
    )


async def test_crd_pruning_and_defaulting(http, crd):
    body = widget(
        "w1",
        unknown="dropped",
        extra={"anything": {"goes": [1, 2]}},
        note=None,
        options={"retries": 5, "bogus": True},
    )
    body["topLevelJunk"] = 1
    status, obj = await http.post(WIDGETS, body)
    assert status == 201, obj
    assert "topLevelJunk" not in obj
    assert obj["spec"] == {
        "size": 1,
        "mode": "fast",
        "note": None,
        "options": {"retries": 5},
        "extra": {"anything": {"goes": [1, 2]}},
    }

    status, obj = await http.post(WIDGETS, widget("w2", mode=None))
    assert obj["spec"] == {"size": 1, "mode": "fast", "options": {"retries": 3}}

    status, obj = await http.patch(f"{WIDGETS}/w2", {"spec": {"options": None, "junk": 1}})
    assert obj["spec"]["options"] == {"retries": 3}  # removed, then defaulted again
    assert "junk" not in obj["spec"]


# --- watching -----------------------------------------------------------------------------------


async def test_watch_resumes_from_resource_version(http, server):
    await http.post(CONFIGMAPS, {"metadata": {"name": "before"}})
    status, listing = await http.get(CONFIGMAPS)
    since = listing["metadata"]["resourceVersion"]
    await http.post(CONFIGMAPS, {"metadata": {"name": "after"}})
    await http.patch(f"{CONFIGMAPS}/after", {"data": {"a": "b"}})
    await http.delete(f"{CONFIGMAPS}/before")
    await http.post(PODS, pod("unrelated"))

    events = await http.watch(f"{CONFIGMAPS}?watch=true&resourceVersion={since}", until=3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "after"),
        ("MODIFIED", "after"),
        ("DELETED", "before"),
    ]
    assert all(e["object"]["kind"] == "ConfigMap" for e in events)
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and versions[0] > int(since)

    # Live events follow the replayed ones in one stream.
    async def later() -> None:
        await asyncio.sleep(0.1)
        await http.post(CONFIGMAPS, {"metadata": {"name": "live"}})

    task = asyncio.create_task(later())
    events = await http.watch(f"{CONFIGMAPS}?watch=1&resourceVersion={since}", until=4)
    await task
    assert events[-1]["type"] == "ADDED" and events[-1]["object"]["metadata"]["name"] == "live"

    # Without a version: the current state as synthetic ADDED events, then live ones.
    events = await http.watch(f"{CONFIGMAPS}?watch=true&timeoutSeconds=0.3")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "after"),
        ("ADDED", "live"),
    ]


async def test_watch_too_old_resource_version_is_gone(http, server):
    status, obj = await http.post(CONFIGMAPS, {"metadata": {"name": "cm"}})
    old_rv = obj["metadata"]["resourceVersion"]
    await http.patch(f"{CONFIGMAPS}/cm", {"data": {"a": "b"}})
    server.compact()
    events = await http.watch(f"{CONFIGMAPS}?watch=true&resourceVersion={old_rv}", limit=2)
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    error = events[0]["object"]
    assert error["kind"] == "Status" and error["code"] == 410 and error["reason"] == "Expired"

    # Bounded history: the oldest events fall out by themselves, too.
    async with KubeAPIServer(history_limit=3) as small:
        async with aiohttp.ClientSession(small.url) as session:
            client = Http(session)
            versions = []
            for i in range(5):
                status, obj = await client.post(CONFIGMAPS, {"metadata": {"name": f"cm{i}"}})
                versions.append(obj["metadata"]["resourceVersion"])
            events = await client.watch(
                f"{CONFIGMAPS}?watch=true&resourceVersion={versions[0]}", limit=2
            )
            assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410
            events = await client.watch(
                f"{CONFIGMAPS}?watch=true&resourceVersion={versions[1]}", until=3
            )
            assert [e["object"]["metadata"]["name"] for e in events] == ["cm2", "cm3", "cm4"]


async def test_watch_initial_events_end_with_a_bookmark(http, server):
    for name in ("a", "b"):
        await http.post(CONFIGMAPS, {"metadata": {"name": name}})
    events = await http.watch(
        f"{CONFIGMAPS}?watch=true&sendInitialEvents=true"
        f"&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
        until=3,
    )
    assert [e["type"] for e in events] == ["ADDED", "ADDED", "BOOKMARK"]
    mark = events[-1]["object"]
    assert mark["kind"] == "ConfigMap" and mark["apiVersion"] == "v1"
    assert mark["metadata"] == {
        "resourceVersion": str(server.resource_version),
        "annotations": {"k8s.io/initial-events-end": "true"},
    }

    status, body = await http.get(f"{CONFIGMAPS}?watch=true&sendInitialEvents=true")
    assert status == 422


async def test_watch_bookmarks_and_timeout(http, server):
    await http.post(CONFIGMAPS, {"metadata": {"name": "a"}})
    rv = server.resource_version
    start = time.monotonic()
    events = await http.watch(
        f"{CONFIGMAPS}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=1",
        limit=5,
    )
    assert 0.9 < time.monotonic() - start < 3  # closed by the server, on time
    assert len(events) >= 3 and {e["type"] for e in events} == {"BOOKMARK"}
    assert events[0]["object"] == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": str(rv)},
    }


async def test_label_and_field_selectors(http):
    labels = {
        "one": {"app": "web", "tier": "front"},
        "two": {"app": "db"},
        "three": {"app": "web", "env": "prod"},
        "four": {},
    }
    for name, value in labels.items():
        await http.post(CONFIGMAPS, {"metadata": {"name": name, "labels": value}})

    async def names(selector: str) -> set[str]:
        status, listing = await http.get(f"{CONFIGMAPS}?{selector}")
        assert status == 200, listing
        return {i["metadata"]["name"] for i in listing["items"]}

    assert await names("labelSelector=app%3Dweb") == {"one", "three"}
    assert await names("labelSelector=app%3D%3Dweb,tier") == {"one"}
    assert await names("labelSelector=app!%3Dweb") == {"two", "four"}
    assert await names("labelSelector=app in (db, web),!tier") == {"two", "three"}
    assert await names("labelSelector=app notin (web)") == {"two", "four"}
    assert await names("labelSelector=env") == {"three"}
    assert await names("fieldSelector=metadata.name%3Dtwo") == {"two"}
    assert await names("fieldSelector=metadata.name!%3Dtwo&labelSelector=app") == {"one", "three"}
    status, body = await http.get(f"{CONFIGMAPS}?fieldSelector=spec.nope%3D1")
    assert status == 400 and body["reason"] == "BadRequest"
    status, body = await http.get(f"{CONFIGMAPS}?labelSelector=a in b")
    assert status == 400

    # Watches with selectors see objects entering and leaving the selection.
    async def relabel() -> None:
        await asyncio.sleep(0.1)
        await http.patch(f"{CONFIGMAPS}/two", {"metadata": {"labels": {"app": "web"}}})
        await http.patch(f"{CONFIGMAPS}/two", {"data": {"k": "v"}})
        await http.patch(f"{CONFIGMAPS}/one", {"metadata": {"labels": {"app": None}}})

    task = asyncio.create_task(relabel())
    events = await http.watch(f"{CONFIGMAPS}?watch=true&labelSelector=app%3Dweb", until=5)
    await task
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "one"),
        ("ADDED", "three"),  # the initial state
        ("ADDED", "two"),
        ("MODIFIED", "two"),
        ("DELETED", "one"),
    ]


# --- deletion -----------------------------------------------------------------------------------


async def test_finalizers_hold_the_deletion(http, crd):
    status, obj = await http.post(
        WIDGETS,
        {
            **widget("w1"),
            "metadata": {"name": "w1", "finalizers": ["example.com/a", "example.com/b"]},
        },
    )
    status, deleting = await http.delete(f"{WIDGETS}/w1")
    assert status == 202
    assert deleting["metadata"]["deletionTimestamp"].endswith("Z")
    assert deleting["metadata"]["generation"] == 2  # custom resources bump it on deletion

    status, again = await http.delete(f"{WIDGETS}/w1")
    assert (
        status == 202
        and again["metadata"]["resourceVersion"] == deleting["metadata"]["resourceVersion"]
    )

    status, body = await http.patch(
        f"{WIDGETS}/w1",
        {"metadata": {"finalizers": ["example.com/a", "example.com/b", "example.com/new"]}},
    )
    assert status == 422 and "no new finalizers" in body["message"]

    status, obj = await http.patch(f"{WIDGETS}/w1", {"metadata": {"finalizers": ["example.com/b"]}})
    assert status == 200 and obj["metadata"]["deletionTimestamp"]
    rv = obj["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    status, final = await http.patch(f"{WIDGETS}/w1", ops, JSON_PATCH)
    assert status == 200 and final["metadata"]["finalizers"] == []
    status, body = await http.get(f"{WIDGETS}/w1")
    assert status == 404

    events = await http.watch(f"{WIDGETS}?watch=true&resourceVersion={rv}", until=1)
    assert events[0]["type"] == "DELETED"
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) > int(rv)


async def test_owner_references_garbage_collection(http, server):
    status, owner = await http.post(CONFIGMAPS, {"metadata": {"name": "owner"}})
    status, other = await http.post(CONFIGMAPS, {"metadata": {"name": "other-owner"}})
    status, child = await http.post(CONFIGMAPS, {"metadata": {"name": "child", **owned_by(owner)}})
    status, grandchild = await http.post(PODS, pod("grandchild", **owned_by(child)))
    refs = owned_by(owner)["ownerReferences"] + owned_by(other)["ownerReferences"]
    status, shared = await http.post(
        CONFIGMAPS, {"metadata": {"name": "shared", "ownerReferences": refs}}
    )
    status, held = await http.post(
        CONFIGMAPS,
        {"metadata": {"name": "held", "finalizers": ["example.com/hold"], **owned_by(owner)}},
    )

    status, body = await http.delete(f"{CONFIGMAPS}/owner")
    assert status == 200 and body["status"] == "Success" and body["details"]["name"] == "owner"
    assert server.get("", "v1", "configmaps", NS, "child") is None
    assert server.get("", "v1", "pods", NS, "grandchild") is None  # a cascade
    survivor = server.get("", "v1", "configmaps", NS, "shared")  # still has a living owner
    assert [r["name"] for r in survivor["metadata"]["ownerReferences"]] == ["other-owner"]
    assert server.get("", "v1", "configmaps", NS, "held")["metadata"]["deletionTimestamp"]

    # Orphaning strips the owner references instead.
    status, parent = await http.post(CONFIGMAPS, {"metadata": {"name": "parent"}})
    status, orphan = await http.post(
        CONFIGMAPS, {"metadata": {"name": "orphan", **owned_by(parent)}}
    )
    status, body = await http.delete(f"{CONFIGMAPS}/parent?propagationPolicy=Orphan")
    assert status == 200
    assert "ownerReferences" not in server.get("", "v1", "configmaps", NS, "orphan")["metadata"]

    # batch/v1 Jobs orphan their pods unless told otherwise, exactly like the real apiserver.
    for name, options in (
        ("job-orphaning", None),
        ("job-cascading", {"propagationPolicy": "Background"}),
    ):
        status, owner_job = await http.post(JOBS, job(name))
        status, job_pod = await http.post(PODS, pod(f"{name}-pod", **owned_by(owner_job)))
        status, body = await http.delete(f"{JOBS}/{name}", options)
        assert status == 200
    assert server.get("", "v1", "pods", NS, "job-orphaning-pod") is not None
    assert server.get("", "v1", "pods", NS, "job-cascading-pod") is None


async def test_delete_preconditions_and_collections(http, server):
    status, obj = await http.post(CONFIGMAPS, {"metadata": {"name": "cm", "labels": {"x": "y"}}})
    status, body = await http.delete(f"{CONFIGMAPS}/cm", {"preconditions": {"uid": "wrong"}})
    assert status == 409
    status, body = await http.delete(
        f"{CONFIGMAPS}/cm", {"preconditions": {"uid": obj["metadata"]["uid"]}}
    )
    assert status == 200
    status, body = await http.delete(f"{CONFIGMAPS}/cm")
    assert status == 404

    for name in ("a", "b", "c"):
        await http.post(
            CONFIGMAPS,
            {"metadata": {"name": name, "labels": {"del": "yes" if name != "c" else "no"}}},
        )
    status, body = await http.delete(f"{CONFIGMAPS}?labelSelector=del%3Dyes")
    assert status == 200 and [i["metadata"]["name"] for i in body["items"]] == ["a", "b"]
    assert [c["metadata"]["name"] for c in server.list("", "v1", "configmaps", NS)] == ["c"]


# --- robustness ---------------------------------------------------------------------------------


async def test_many_watchers_disconnects_and_stop_are_clean():
    srv = KubeAPIServer()
    await srv.start()
    sessions = [aiohttp.ClientSession(srv.url) for _ in range(20)]
    responses = [await s.get(f"{CONFIGMAPS}?watch=true&allowWatchBookmarks=true") for s in sessions]
    srv.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hello", "namespace": NS}}
    )
    for rsp in responses:
        assert json.loads(await rsp.content.readline())["type"] == "ADDED"
    assert len(srv.store.watchers) == 20

    for rsp, session in zip(
        responses[:10], sessions[:10], strict=True
    ):  # abrupt client disconnects
        rsp.close()
        await session.close()
    for _ in range(100):
        if len(srv.store.watchers) == 10:
            break
        await asyncio.sleep(0.02)
    assert len(srv.store.watchers) == 10

    await srv.stop()  # with 10 streams still open: they end gracefully
    for rsp in responses[10:]:
        assert await rsp.content.read() == b""  # EOF, no error
    for session in sessions[10:]:
        await session.close()
    assert not srv.store.watchers
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not leftovers


def test_threaded_server_with_sync_accessors():
    with running_kubeapi(require_auth=True) as srv:
        srv.create(pod("p1") | {"status": {"phase": "Running"}})  # the backdoor keeps the status
        request = urllib.request.Request(
            f"{srv.url}{PODS}/p1", headers={"Authorization": "Bearer anything"}
        )
        with urllib.request.urlopen(request) as rsp:
            body = json.loads(rsp.read())
        assert body["status"] == {"phase": "Running"}
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{srv.url}{PODS}/p1")
        assert info.value.code == 401 and json.loads(info.value.read())["reason"] == "Unauthorized"
        srv.patch_status("", "v1", "pods", NS, "p1", {"phase": "Succeeded"})
        assert srv.wait_for(
            "", "v1", "pods", NS, "p1", lambda o: o["status"]["phase"] == "Succeeded"
        )
        assert [r.method for r in srv.find_requests(path=f"{PODS}/p1")] == ["GET", "GET"]


# --- real clients -------------------------------------------------------------------------------


async def test_kubernetes_asyncio_round_trip(server, tmp_path):
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration
    )
    async with k8s.ApiClient(configuration) as api:
        batch, core = k8s.BatchV1Api(api), k8s.CoreV1Api(api)
        body = k8s.V1Job(
            metadata=k8s.V1ObjectMeta(name="eval-job", labels={"app": "eval"}),
            spec=k8s.V1JobSpec(
                backoff_limit=0,
                template=k8s.V1PodTemplateSpec(
                    spec=k8s.V1PodSpec(
                        restart_policy="Never",
                        containers=[k8s.V1Container(name="runner", image="busybox", args=["run"])],
                    )
                ),
            ),
        )
        created = await batch.create_namespaced_job(NS, body)
        assert created.metadata.uid and created.metadata.generation == 1
        assert created.spec.backoff_limit == 0 and created.spec.parallelism == 1
        uid = created.metadata.uid
        assert created.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
        assert created.spec.template.metadata.labels["job-name"] == "eval-job"

        with pytest.raises(k8s.ApiException) as info:
            await batch.create_namespaced_job(NS, body)
        assert info.value.status == 409

        # The test plays the job controller: a pod, then the job's status.
        server.create(
            pod(
                "eval-job-abcde",
                labels={"job-name": "eval-job"},
                **owned_by(server.get("batch", "v1", "jobs", NS, "eval-job")),
            )
            | {"status": {"phase": "Succeeded"}}
        )
        server.patch_status(
            "batch",
            "v1",
            "jobs",
            NS,
            "eval-job",
            {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
        )
        fresh = await batch.read_namespaced_job_status("eval-job", NS)
        assert fresh.status.succeeded == 1 and fresh.status.conditions[0].type == "Complete"
        pods = await core.list_namespaced_pod(NS, label_selector="job-name=eval-job")
        assert [p.status.phase for p in pods.items] == ["Succeeded"]

        patched = await batch.patch_namespaced_job(
            "eval-job", NS, {"metadata": {"labels": {"seen": "yes"}}}
        )
        assert patched.metadata.labels == {"app": "eval", "seen": "yes"}
        jobs = await batch.list_namespaced_job(NS, label_selector="app=eval")
        assert [j.metadata.name for j in jobs.items] == ["eval-job"]

        async def delete_soon() -> None:
            await asyncio.sleep(0.1)
            await batch.delete_namespaced_job("eval-job", NS, propagation_policy="Background")

        task = asyncio.create_task(delete_soon())
        async with asyncio.timeout(5), k8s_watch.Watch() as watcher:
            async for event in watcher.stream(
                batch.list_namespaced_job,
                NS,
                timeout_seconds=2,
                resource_version=jobs.metadata.resource_version,
            ):
                assert event["type"] == "DELETED" and event["object"].metadata.name == "eval-job"
                break
        await task
        assert (await core.list_namespaced_pod(NS)).items == []

        with pytest.raises(k8s.ApiException) as info:
            await batch.read_namespaced_job("eval-job", NS)
        assert info.value.status == 404

        await core.create_namespaced_event(
            NS,
            k8s.CoreV1Event(
                metadata=k8s.V1ObjectMeta(generate_name="eval-"),
                reason="Tested",
                message="hi",
                involved_object=k8s.V1ObjectReference(kind="Job", name="eval-job", namespace=NS),
            ),
        )
        events = await core.list_namespaced_event(NS, field_selector="reason=Tested")
        assert [e.message for e in events.items] == ["hi"]


OPERATOR_SOURCE = """
import kopf

# Its own registry has none of kopf's default login handlers: log in as they would.
@kopf.on.login()
def login(**kwargs):
    return kopf.login_with_kubeconfig(**kwargs)

@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.watching.server_timeout = 10

@kopf.on.create('example.com', 'v1', 'widgets')
def created(body, spec, patch, **_):
    kopf.info(body, reason='Created', message='A widget is born.')
    patch.status['phase'] = 'Ready'
    patch.status['doubled'] = spec['size'] * 2
    return {'message': 'created'}

@kopf.on.update('example.com', 'v1', 'widgets', field='spec.size')
def resized(new, patch, **_):
    patch.status['doubled'] = new * 2

@kopf.on.delete('example.com', 'v1', 'widgets')
def deleted(**_):
    pass
"""


def test_kopf_operator_against_the_emulator(tmp_path):
    finalizer = "kopf.zalando.org/KopfFinalizerMarker"
    module = tmp_path / "smoke_operator.py"
    module.write_text(OPERATOR_SOURCE)
    with (
        running_kubeapi(bookmark_interval=1.0) as srv,
        use_kubeconfig(srv.write_kubeconfig(tmp_path / "kubeconfig")),
    ):
        srv.create(WIDGET_CRD)
        args = ["run", "--standalone", "--namespace", NS, str(module)]
        # A registry of its own: the process-wide default one may hold another operator's
        # handlers (eval_operator.main, loaded by other test modules). `kopf run` makes it the
        # default, so the default is put back afterwards for those modules.
        default_registry = kopf.get_default_registry()
        with (
            contextlib.ExitStack() as restore,
            KopfRunner(args, timeout=30, registry=kopf.OperatorRegistry()) as runner,
        ):
            restore.callback(kopf.set_default_registry, default_registry)
            srv.create(widget("w1", size=2))
            obj = srv.wait_for(
                "example.com",
                "v1",
                "widgets",
                NS,
                "w1",
                lambda o: (
                    (o.get("status") or {}).get("phase") == "Ready"
                    and finalizer in o["metadata"].get("finalizers", [])
                    and "kopf.zalando.org/last-handled-configuration"
                    in o["metadata"].get("annotations", {})
                ),
                timeout=20,
            )
            assert obj["status"]["doubled"] == 4 and obj["status"]["created"] == {
                "message": "created"
            }

            # Settled: no more patches keep coming (no loops on stale events).
            time.sleep(1.0)
            settled = len(srv.find_requests("PATCH"))
            time.sleep(2.0)
            assert len(srv.find_requests("PATCH")) == settled
            assert settled <= 6

            srv.patch("example.com", "v1", "widgets", NS, "w1", {"spec": {"size": 5}})
            srv.wait_for(
                "example.com",
                "v1",
                "widgets",
                NS,
                "w1",
                lambda o: o["status"].get("doubled") == 10,
                timeout=20,
            )

            srv.delete("example.com", "v1", "widgets", NS, "w1")
            srv.wait_for("example.com", "v1", "widgets", NS, "w1", lambda o: o is None, timeout=20)
            # kopf posts events from a queue of its own: wait for it, not for a lucky moment.
            for _ in range(200):
                if srv.list("", "v1", "events", NS, field_selector="reason=Created"):
                    break
                time.sleep(0.05)

        assert runner.exit_code == 0, runner.output
        # kopf's optimistic JSON-patches (finalizers) carried the resourceVersion test, and worked.
        json_patches = [
            r
            for r in srv.find_requests("PATCH", path_prefix="/apis/example.com/")
            if r.content_type == JSON_PATCH
        ]
        assert json_patches
        assert all(
            r.body[0]["op"] == "test" and r.body[0]["path"] == "/metadata/resourceVersion"
            for r in json_patches
        )
        status_patches = srv.find_requests("PATCH", f"{WIDGETS}/w1/status")
        assert status_patches and all(r.content_type == MERGE for r in status_patches)
        for _ in range(100):  # kopf's watch-streams are gone with it, server-side too
            if not srv.store.watchers:
                break
            time.sleep(0.05)
        assert not srv.store.watchers
        [event] = srv.list("", "v1", "events", NS, field_selector="reason=Created")
        assert event["involvedObject"]["name"] == "w1" and event["message"] == "A widget is born."


async def test_crd_with_several_versions(http):
    crd = copy.deepcopy(WIDGET_CRD)
    v1 = crd["spec"]["versions"][0]
    v1beta1 = {**copy.deepcopy(v1), "name": "v1beta1", "storage": False}
    v1beta1["schema"]["openAPIV3Schema"]["properties"]["spec"]["required"] = []
    crd["spec"]["versions"] = [
        v1beta1,
        v1,
        {**copy.deepcopy(v1), "name": "v2alpha1", "storage": False, "served": False},
    ]
    status, body = await http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert status == 201, body
    status, group = await http.get("/apis/example.com")
    assert [v["version"] for v in group["versions"]] == ["v1", "v1beta1"]  # unserved: hidden
    assert group["preferredVersion"]["version"] == "v1"

    # One object, served in every version (no conversion); each version has its own schema.
    beta = f"/apis/example.com/v1beta1/namespaces/{NS}/widgets"
    status, obj = await http.post(beta, {"metadata": {"name": "w1"}, "spec": {}})
    assert status == 201 and obj["apiVersion"] == "example.com/v1beta1"
    status, obj = await http.get(f"{WIDGETS}/w1")
    assert status == 200 and obj["apiVersion"] == "example.com/v1"
    status, body = await http.get(f"/apis/example.com/v2alpha1/namespaces/{NS}/widgets")
    assert status == 404
