"""
Exact apiserver semantics of the API emulator, over HTTP: OpenAPI v3, fieldValidation, Go-type
decoding, dry runs, server-side apply and field ownership, strategic merge patch, CRD rules.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.kubeapi import KubeAPIServer
from tests.support.tools import ROOT

pytestmark = pytest.mark.integration

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
APPLY = "application/apply-patch+yaml"
SMP = "application/strategic-merge-patch+json"


@pytest.fixture
async def api():
    async with KubeAPIServer() as server:
        async with aiohttp.ClientSession(server.url) as session:
            yield Client(server, session)
        assert not server.internal_errors


class Client:
    def __init__(self, server: KubeAPIServer, session: aiohttp.ClientSession) -> None:
        self.server, self.session = server, session

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        **query: str,
    ) -> tuple[int, Any, list[str]]:
        """(status, body, the Warning headers)."""
        data = body if isinstance(body, str) or body is None else json.dumps(body)
        async with self.session.request(
            method, path, data=data, params=query, headers={"Content-Type": content_type}
        ) as rsp:
            return rsp.status, await rsp.json(), rsp.headers.getall("Warning", [])


def deployment(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
            **spec,
        },
    }


# --- 1. OpenAPI v3 ------------------------------------------------------------------------------


async def test_openapi_v3_documents_every_group_version(api: Client) -> None:
    crd = yaml.safe_load((ROOT / "crds" / "evaluations.evals.io.yaml").read_text())
    assert (await api.call("POST", CRDS, crd))[0] == 201
    _, index, _ = await api.call("GET", "/openapi/v3")
    served = set(index["paths"])
    assert {"api/v1", "apis/apps/v1", "apis/rbac.authorization.k8s.io/v1"} <= served
    assert {"apis/apiextensions.k8s.io/v1", "apis/evals.io/v1alpha1"} <= served
    assert index["paths"]["apis/apps/v1"]["serverRelativeURL"].startswith(
        "/openapi/v3/apis/apps/v1?hash="
    )
    for api_path, entry in index["paths"].items():
        status, doc, _ = await api.call("GET", entry["serverRelativeURL"].split("?")[0])
        assert status == 200, api_path
        patches = [p["patch"] for p in doc["paths"].values() if "patch" in p]
        assert patches, api_path
        for op in patches:
            assert op["x-kubernetes-group-version-kind"]["kind"]
            names = {p["name"] for p in op["parameters"]}
            assert {"dryRun", "fieldManager", "fieldValidation", "force"} <= names
        for path, item in doc["paths"].items():
            if path.endswith("}") and "/status" not in path:
                assert {"get", "put", "patch", "delete"} <= set(item), path
    _, apps, _ = await api.call("GET", "/openapi/v3/apis/apps/v1")
    containers = apps["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"][
        "containers"
    ]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["items"] == {"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}
    _, evals, _ = await api.call("GET", "/openapi/v3/apis/evals.io/v1alpha1")
    evaluation = evals["components"]["schemas"]["io.evals.v1alpha1.Evaluation"]
    assert evaluation["x-kubernetes-group-version-kind"] == [
        {"group": "evals.io", "version": "v1alpha1", "kind": "Evaluation"}
    ]
    _, version, _ = await api.call("GET", "/version")
    assert (version["major"], version["minor"]) == ("1", "36")


# --- 2./3. fieldValidation and Go decoding ------------------------------------------------------


async def test_field_validation_strict_warn_ignore(api: Client) -> None:
    body = deployment(paused=False)
    body["spec"]["foo"] = 1
    body["spec"]["template"]["spec"]["containers"][0]["bar"] = "x"
    body["metadata"]["nope"] = True
    status, reply, _ = await api.call("POST", DEPLOYMENTS, body, fieldValidation="Strict")
    assert status == 400 and reply["reason"] == "BadRequest"
    assert reply["message"] == (
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
        'unknown field "metadata.nope", '
        'unknown field "spec.template.spec.containers[0].bar", unknown field "spec.foo"'
    )  # in the order of the document
    status, reply, warnings = await api.call("POST", DEPLOYMENTS, body)  # Warn is the default
    assert status == 201
    assert warnings == [
        '299 - "unknown field \\"metadata.nope\\""',
        '299 - "unknown field \\"spec.template.spec.containers[0].bar\\""',
        '299 - "unknown field \\"spec.foo\\""',
    ]
    assert (
        "foo" not in reply["spec"]
        and "bar" not in reply["spec"]["template"]["spec"]["containers"][0]
    )
    body["metadata"]["name"] = "quiet"
    status, reply, warnings = await api.call("POST", DEPLOYMENTS, body, fieldValidation="Ignore")
    assert status == 201 and warnings == [] and "foo" not in reply["spec"]
    # A patch's unknown fields: sorted, without the kind prefix.
    status, reply, _ = await api.call(
        "PATCH",
        f"{DEPLOYMENTS}/quiet",
        {"spec": {"zz": 1, "aa": 2}},
        "application/merge-patch+json",
        fieldValidation="Strict",
    )
    assert status == 400
    assert (
        reply["message"]
        == 'strict decoding error: unknown field "spec.aa", unknown field "spec.zz"'
    )


async def test_type_errors_are_decode_errors_whatever_the_mode(api: Client) -> None:
    crd = yaml.safe_load((ROOT / "crds" / "evaluations.evals.io.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["required"] = [*spec.get("required", []), False]
    for mode in ("Strict", "Warn", "Ignore"):
        status, reply, _ = await api.call("POST", CRDS, crd, fieldValidation=mode)
        assert status == 400 and reply["reason"] == "BadRequest"
        assert reply["message"] == (
            'CustomResourceDefinition in version "v1" cannot be handled as a '
            "CustomResourceDefinition: json: cannot unmarshal bool into Go struct field "
            "JSONSchemaProps.spec.versions.schema.openAPIV3Schema.properties.required "
            "of type string"
        )
    status, reply, _ = await api.call("POST", DEPLOYMENTS, deployment(replicas="2"))
    assert status == 400
    assert reply["message"].endswith(
        "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas "
        "of type int32"
    )


# --- 4. built-in kinds --------------------------------------------------------------------------


async def test_more_builtin_kinds_with_their_discovery_and_defaults(api: Client) -> None:
    _, apps, _ = await api.call("GET", "/apis/apps/v1")
    by_name = {r["name"]: r for r in apps["resources"]}
    assert by_name["deployments"]["shortNames"] == ["deploy"]
    assert by_name["deployments"]["categories"] == ["all"]
    assert "deployments/status" in by_name
    _, rbac, _ = await api.call("GET", "/apis/rbac.authorization.k8s.io/v1")
    assert {r["name"]: r["namespaced"] for r in rbac["resources"]} == {
        "clusterroles": False,
        "clusterrolebindings": False,
        "roles": True,
        "rolebindings": True,
    }
    status, created, _ = await api.call("POST", DEPLOYMENTS, deployment())
    assert status == 201
    assert created["spec"]["replicas"] == 1 and created["metadata"]["generation"] == 1
    assert created["spec"]["strategy"]["rollingUpdate"] == {
        "maxSurge": "25%",
        "maxUnavailable": "25%",
    }
    assert created["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == (
        "IfNotPresent"
    )
    status, updated, _ = await api.call(
        "PATCH", f"{DEPLOYMENTS}/web", {"spec": {"replicas": 3}}, "application/merge-patch+json"
    )
    assert updated["metadata"]["generation"] == 2


# --- 5. dry runs --------------------------------------------------------------------------------


async def test_dry_run_admits_everything_and_stores_nothing(api: Client) -> None:
    before = api.server.resource_version
    status, would, _ = await api.call("POST", DEPLOYMENTS, deployment(), dryRun="All")
    assert status == 201 and would["spec"]["replicas"] == 1 and would["metadata"]["uid"]
    assert "resourceVersion" not in would["metadata"]
    status, reply, _ = await api.call(
        "POST", DEPLOYMENTS, deployment(replicas=-1), dryRun="All", fieldValidation="Strict"
    )
    assert api.server.resource_version == before
    assert api.server.get("apps", "v1", "deployments", "default", "web") is None

    status, live, _ = await api.call("POST", DEPLOYMENTS, deployment())
    rv = api.server.resource_version
    for method, body, content_type in (
        ("PUT", {**live, "spec": {**live["spec"], "replicas": 5}}, "application/json"),
        ("PATCH", {"spec": {"replicas": 5}}, "application/merge-patch+json"),
        ("PATCH", {"spec": {"replicas": 5}}, SMP),
        ("PATCH", {**deployment(), "spec": {"replicas": 5}}, APPLY),
    ):
        # (apply: forced, the creator owns spec.replicas)
        query = {
            "dryRun": "All",
            **({"fieldManager": "t", "force": "true"} if content_type == APPLY else {}),
        }
        status, reply, _ = await api.call(method, f"{DEPLOYMENTS}/web", body, content_type, **query)
        assert status == 200, reply
        assert reply["spec"]["replicas"] == 5
        assert reply["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]
    status, reply, _ = await api.call("DELETE", f"{DEPLOYMENTS}/web", dryRun="All")
    assert status == 200
    assert api.server.resource_version == rv
    assert api.server.get("apps", "v1", "deployments", "default", "web")["spec"]["replicas"] == 1
    assert [e.type for e in api.server.store.history][-1] == "ADDED"  # no event since


# --- 6. server-side apply -----------------------------------------------------------------------


def config_map(**data: str) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}
    if data:
        body["data"] = data  # (an empty data: {} would be owned as a value of its own)
    return body


async def test_server_side_apply_ownership_conflicts_and_force(api: Client) -> None:
    path = f"{CONFIGMAPS}/cm"
    status, reply, _ = await api.call("PATCH", path, config_map(a="1", b="2"), APPLY)
    assert status == 400 and "fieldManager: Required value" in reply["message"]

    status, reply, _ = await api.call(
        "PATCH", path, yaml.safe_dump(config_map(a="1", b="2")), APPLY, fieldManager="alice"
    )
    assert status == 201 and reply["data"] == {"a": "1", "b": "2"}
    (entry,) = reply["metadata"]["managedFields"]
    assert entry["manager"] == "alice" and entry["operation"] == "Apply"
    assert entry["fieldsType"] == "FieldsV1" and entry["apiVersion"] == "v1"
    assert entry["fieldsV1"] == {"f:data": {"f:a": {}, "f:b": {}}}

    # Bob applies the same value: shared; a different one: a conflict.
    status, reply, _ = await api.call("PATCH", path, config_map(a="1"), APPLY, fieldManager="bob")
    assert status == 200
    status, reply, _ = await api.call("PATCH", path, config_map(b="X"), APPLY, fieldManager="bob")
    assert status == 409 and reply["reason"] == "Conflict"
    assert reply["message"] == 'Apply failed with 1 conflict: conflict with "alice": .data.b'
    assert reply["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "alice"', "field": ".data.b"}
    ]
    status, reply, _ = await api.call(
        "PATCH", path, config_map(a="1", b="X"), APPLY, fieldManager="bob", force="true"
    )
    assert status == 200 and reply["data"]["b"] == "X"
    owners = {m["manager"]: m["fieldsV1"] for m in reply["metadata"]["managedFields"]}
    assert owners == {
        "alice": {"f:data": {"f:a": {}}},
        "bob": {"f:data": {"f:a": {}, "f:b": {}}},
    }
    # Alice stops applying a: still owned by bob, so it stays; bob drops b: it goes.
    await api.call("PATCH", path, config_map(), APPLY, fieldManager="alice")
    status, reply, _ = await api.call("PATCH", path, config_map(a="1"), APPLY, fieldManager="bob")
    assert reply["data"] == {"a": "1"}
    # An update by another manager takes ownership of what it changed.
    status, reply, _ = await api.call(
        "PATCH", path, {"data": {"a": "2"}}, "application/merge-patch+json", fieldManager="carol"
    )
    owners = {(m["manager"], m["operation"]) for m in reply["metadata"]["managedFields"]}
    assert owners == {("carol", "Update")}
    status, reply, _ = await api.call("PATCH", path, config_map(a="3"), APPLY, fieldManager="bob")
    assert status == 409
    assert reply["message"] == (
        'Apply failed with 1 conflict: conflict with "carol" using v1: .data.a'
    )


async def test_server_side_apply_merges_lists_by_their_schema(api: Client) -> None:
    path = f"{DEPLOYMENTS}/web"
    first = deployment()
    first["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "2"},
    ]
    status, reply, _ = await api.call("PATCH", path, first, APPLY, fieldManager="helm")
    assert status == 201
    other = deployment()
    other["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "C", "value": "3"}]
    other["spec"]["template"]["spec"]["containers"][0].pop("image")
    status, reply, _ = await api.call("PATCH", path, other, APPLY, fieldManager="sidecar")
    assert status == 200, reply
    env = reply["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "2"},
        {"name": "C", "value": "3"},
    ]  # a list-map: merged by name
    third = copy.deepcopy(first)
    third["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "9"}]
    status, reply, _ = await api.call("PATCH", path, third, APPLY, fieldManager="helm")
    env = reply["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "A", "value": "9"}, {"name": "C", "value": "3"}]  # B: no longer applied

    status, reply, _ = await api.call(
        "PATCH", path, {**third, "spec": {"replicas": "two"}}, APPLY, fieldManager="helm"
    )
    assert status == 500
    assert reply["message"] == (
        "failed to create typed patch object (default/web; apps/v1, Kind=Deployment): "
        ".spec.replicas: expected numeric (int or float), got string"
    )


async def test_server_side_apply_of_a_crd_reports_conflicts_with_smd_paths(api: Client) -> None:
    crd = yaml.safe_load((ROOT / "crds" / "evaluations.evals.io.yaml").read_text())
    status, _, _ = await api.call(
        "PATCH", f"{CRDS}/evaluations.evals.io", crd, APPLY, fieldManager="helm"
    )
    assert status == 201
    changed = copy.deepcopy(crd)
    root = changed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    root["description"] = "changed by kubectl"
    status, reply, _ = await api.call(
        "PATCH", f"{CRDS}/evaluations.evals.io", changed, APPLY, fieldManager="kubectl"
    )
    assert status == 409
    # spec.versions is an atomic list in the Go type (+listType=atomic): owned as a whole.
    assert reply["message"] == 'Apply failed with 1 conflict: conflict with "helm": .spec.versions'
    status, reply, _ = await api.call(
        "PATCH",
        f"{CRDS}/evaluations.evals.io",
        crd,
        "application/merge-patch+json",
        fieldManager="kubectl-edit",
    )
    changed["spec"]["names"]["shortNames"] = ["ev2"]
    status, reply, _ = await api.call(
        "PATCH", f"{CRDS}/evaluations.evals.io", changed, APPLY, fieldManager="kubectl"
    )
    assert status == 409
    assert reply["message"].startswith('Apply failed with 2 conflicts: conflicts with "helm":\n- ')


async def test_status_subresource_apply_owns_only_the_status(api: Client) -> None:
    await api.call("POST", DEPLOYMENTS, deployment())
    status, reply, _ = await api.call(
        "PATCH",
        f"{DEPLOYMENTS}/web/status",
        {**deployment(replicas=7), "status": {"replicas": 1}},
        APPLY,
        fieldManager="ctrl",
    )
    assert status == 200, reply
    assert reply["status"] == {"replicas": 1} and reply["spec"]["replicas"] == 1
    entry = next(m for m in reply["metadata"]["managedFields"] if m["manager"] == "ctrl")
    assert entry["subresource"] == "status"
    assert entry["fieldsV1"] == {"f:status": {"f:replicas": {}}}


# --- 7. strategic merge patch -------------------------------------------------------------------


async def test_strategic_merge_patch_directives(api: Client) -> None:
    body = deployment()
    spec = body["spec"]["template"]["spec"]
    spec["containers"] = [
        {"name": "a", "image": "a:1", "args": ["x"], "env": [{"name": "E", "value": "1"}]},
        {"name": "b", "image": "b:1"},
    ]
    spec["volumes"] = [{"name": "v", "emptyDir": {}}]
    body["metadata"]["finalizers"] = ["f/1", "f/2"]
    await api.call("POST", DEPLOYMENTS, body)
    patch = {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["f/1"]},
        "spec": {
            "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
                    "containers": [
                        {"name": "c", "image": "c:1"},
                        {"name": "a", "env": [{"name": "F", "value": "2"}]},
                        {"name": "b", "$patch": "delete"},
                    ],
                    "volumes": [{"name": "w", "configMap": {"name": "cm"}}, {"$patch": "replace"}],
                }
            },
        },
    }
    status, reply, _ = await api.call("PATCH", f"{DEPLOYMENTS}/web", patch, SMP)
    assert status == 200, reply
    assert reply["metadata"]["finalizers"] == ["f/2"]
    assert reply["spec"]["strategy"] == {"type": "Recreate"}
    containers = reply["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["c", "a"]
    assert containers[1]["env"] == [{"name": "E", "value": "1"}, {"name": "F", "value": "2"}]
    assert containers[1]["args"] == ["x"]  # not a merge list: untouched unless patched
    assert reply["spec"]["template"]["spec"]["volumes"] == [
        {"name": "w", "configMap": {"name": "cm", "defaultMode": 420}}
        if "defaultMode" in reply["spec"]["template"]["spec"]["volumes"][0]["configMap"]
        else {"name": "w", "configMap": {"name": "cm"}}
    ]
    status, _, _ = await api.call(
        "PATCH", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x", {}, SMP
    )
    assert status == 404


# --- 8. CRD rules -------------------------------------------------------------------------------


def crd_with(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "things", "kind": "Thing"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


ROOT_PATH = "spec.versions[0].schema.openAPIV3Schema"


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (
            {"type": "object", "properties": {"spec": {"properties": {"a": {"type": "string"}}}}},
            f"{ROOT_PATH}.properties[spec].type: Required value: "
            "must not be empty for specified object fields",
        ),
        (
            {"type": "object", "properties": {"l": {"type": "array"}}},
            f"{ROOT_PATH}.properties[l].items: Required value: must be specified",
        ),
        (
            {
                "type": "object",
                "properties": {
                    "m": {
                        "type": "object",
                        "properties": {"a": {"type": "string"}},
                        "additionalProperties": {"type": "string"},
                    }
                },
            },
            f"{ROOT_PATH}.properties[m].additionalProperties: Forbidden: "
            "additionalProperties and properties are mutual exclusive",
        ),
        (
            {"type": "object", "properties": {"r": {"$ref": "#/definitions/x"}}},
            f"{ROOT_PATH}.properties[r].$ref: Forbidden: $ref is not supported",
        ),
        (
            {
                "type": "object",
                "properties": {
                    "v": {"type": "string", "anyOf": [{"type": "string", "minLength": 1}]}
                },
            },
            f"{ROOT_PATH}.properties[v].anyOf[0].type: Forbidden: must be empty to be structural",
        ),
        (
            {
                "type": "object",
                "properties": {
                    "metadata": {
                        "type": "object",
                        "properties": {"labels": {"type": "object"}},
                    }
                },
            },
            f"{ROOT_PATH}.properties[metadata]: Forbidden: must not specify anything other "
            "than name and generateName, but metadata is implicitly specified",
        ),
        (
            {
                "type": "object",
                "properties": {
                    "l": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                        "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                    }
                },
            },
            f"{ROOT_PATH}.properties[l].items.properties[name]: Required value: this property "
            "is in x-kubernetes-list-map-keys, so it must have a default or be a required "
            "property",
        ),
        (
            {
                "type": "object",
                "properties": {"n": {"type": "integer", "default": "three"}},
            },
            f"{ROOT_PATH}.properties[n].default: Invalid value",
        ),
        (
            {
                "type": "object",
                "x-kubernetes-validations": [{"rule": "true", "messageExpression": "'unclosed"}],
            },
            f"{ROOT_PATH}.x-kubernetes-validations[0].messageExpression: Invalid value",
        ),
    ],
    ids=[
        "untyped-field",
        "array-without-items",
        "properties-and-additional",
        "ref",
        "typed-value-validation",
        "metadata-schema",
        "list-map-key-optional",
        "invalid-default",
        "message-expression",
    ],
)
async def test_crd_structural_schema_rules(
    api: Client, schema: dict[str, Any], message: str
) -> None:
    status, reply, _ = await api.call("POST", CRDS, crd_with(schema))
    assert status == 422, reply
    assert reply["reason"] == "Invalid"
    assert message in reply["message"]


async def test_valid_crd_schemas_are_accepted(api: Client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "metadata": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 20}},
            },
            "spec": {
                "type": "object",
                "properties": {
                    "port": {
                        "x-kubernetes-int-or-string": True,
                        "anyOf": [{"type": "integer"}, {"type": "string"}],
                    },
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "anything": {"x-kubernetes-preserve-unknown-fields": True},
                    "items": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {"name": {"type": "string"}},
                        },
                    },
                },
            },
        },
    }
    status, reply, _ = await api.call("POST", CRDS, crd_with(schema))
    assert status == 201, reply


# --- ValidatingAdmissionPolicy ----------------------------------------------------------------

VAPS = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
VAP_BINDINGS = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"


def admission_policy(name: str, expression: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["configmaps"],
                    }
                ]
            },
            "validations": [{"expression": expression}],
            **spec,
        },
    }


def policy_binding(name: str, actions: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": actions, **spec},
    }


async def test_validating_admission_policies_deny_warn_and_fail_closed(api: Client) -> None:
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}
    checks = [
        admission_policy("small", "size(object.data) <= 1", matchConditions=[]),
        admission_policy(
            "typed",
            "object.data.mode == 'safe'",  # errors on a ConfigMap without data.mode
            failurePolicy="Ignore",
        ),
        admission_policy("broken", "object.data.mode == 'safe'"),  # Fail (the default)
    ]
    checks[0]["spec"]["validations"][0]["messageExpression"] = (
        "'at most one key, got ' + string(size(object.data))"
    )
    for body in checks:
        assert (await api.call("POST", VAPS, body))[0] == 201
    # No binding, no effect.
    assert (await api.call("POST", CONFIGMAPS, {**config_map, "data": {"a": "1", "b": "2"}}))[
        0
    ] == 201
    assert (await api.call("POST", VAP_BINDINGS, policy_binding("small", ["Deny"])))[0] == 201
    code, body, _ = await api.call(
        "POST", CONFIGMAPS, {**config_map, "metadata": {"name": "d"}, "data": {"a": "1", "b": "2"}}
    )
    assert (code, body["reason"]) == (422, "Invalid")
    assert body["message"] == (
        "configmaps \"d\" is forbidden: ValidatingAdmissionPolicy 'small' with binding 'small' "
        "denied request: at most one key, got 2"
    )
    # An update is checked too; a namespace outside the binding's selector is not.
    code, _, _ = await api.call(
        "PUT", f"{CONFIGMAPS}/c", {**config_map, "data": {"a": "1", "b": "3"}}
    )
    assert code == 422
    # An expression error: skipped under Ignore, a denial under Fail.
    assert (await api.call("POST", VAP_BINDINGS, policy_binding("typed", ["Deny"])))[0] == 201
    assert (await api.call("POST", CONFIGMAPS, {**config_map, "metadata": {"name": "e"}}))[0] == 201
    assert (await api.call("POST", VAP_BINDINGS, policy_binding("broken", ["Warn"])))[0] == 201
    code, _, warnings = await api.call(
        "POST", CONFIGMAPS, {**config_map, "metadata": {"name": "f"}}
    )
    assert code == 201
    assert any("Validation failed for ValidatingAdmissionPolicy 'broken'" in w for w in warnings)
    selective = policy_binding(
        "small",
        ["Deny"],
        matchResources={"namespaceSelector": {"matchLabels": {"strict": "yes"}}},
    )
    selective["metadata"]["name"] = "small-strict-only"
    await api.call("DELETE", f"{VAP_BINDINGS}/small")
    assert (await api.call("POST", VAP_BINDINGS, selective))[0] == 201
    code, _, _ = await api.call(
        "PUT", f"{CONFIGMAPS}/c", {**config_map, "data": {"a": "1", "b": "3"}}
    )
    assert code == 200  # default is not labelled strict=yes
