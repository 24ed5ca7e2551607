"""
OpenAPI v3 discovery (``/openapi/v3``) and one document per served group/version.

What clients read here: kubectl's query-param verifier looks for the ``fieldValidation``
parameter of the PATCH operation tagged with the kind's ``x-kubernetes-group-version-kind``
(and, for a group without a document, falls back to the Namespace's), to decide that it may
send ``fieldValidation=Strict``; ``kubectl explain`` and kubectl's strategic-merge patch
computation read ``components.schemas``.

Built-in documents are built from kubernetes-validate's schemas (see ``gotypes``), converted
to the apiserver's OpenAPI v3 shape (``$ref`` under ``allOf`` when it has siblings, no
``null`` types, no ``additionalProperties: false``), once per process; custom resources
serve their structural schemas, as the apiserver does.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from typing import Any

from . import errors as err
from . import gotypes
from .resources import ResourceType

_OPTIONS = {
    "dryRun": "When present, indicates that modifications should not be persisted. An "
    "invalid or unrecognized dryRun directive will result in an error response and no "
    "further processing of the request. Valid values are: - All: all dry run stages will "
    "be processed",
    "fieldManager": "fieldManager is a name associated with the actor or entity that is "
    "making these changes. The value must be less than or 128 characters long, and only "
    "contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
    "fieldValidation": "fieldValidation instructs the server on how to handle objects in "
    "the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: "
    "- Ignore - Warn (the default) - Strict",
    "force": 'Force is going to "force" Apply requests. It means user will re-acquire '
    "conflicting fields owned by other people. Force flag must be unset for non-apply "
    "patch requests.",
    "gracePeriodSeconds": "The duration in seconds before the object should be deleted.",
    "propagationPolicy": "Whether and how garbage collection will be performed: 'Orphan', "
    "'Background' or 'Foreground'.",
    "labelSelector": "A selector to restrict the list of returned objects by their labels.",
    "fieldSelector": "A selector to restrict the list of returned objects by their fields.",
    "limit": "limit is a maximum number of responses to return for a list call.",
    "continue": "The continue option should be set when retrieving more results from the server.",
    "resourceVersion": "resourceVersion sets a constraint on what resource versions a "
    "request may be served from.",
    "watch": "Watch for changes to the described resources and return them as a stream of "
    "add, update, and remove notifications.",
    "timeoutSeconds": "Timeout for the list/watch call.",
}
_TYPES = {"force": "boolean", "gracePeriodSeconds": "integer", "limit": "integer"}
_TYPES.update(watch="boolean", timeoutSeconds="integer")
_WRITE = ("dryRun", "fieldManager", "fieldValidation")
_LIST = (
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "timeoutSeconds",
    "watch",
)


def _params(*names: str) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "query",
            "description": _OPTIONS[name],
            "schema": {"type": _TYPES.get(name, "string"), "uniqueItems": True},
        }
        for name in names
    ]


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(name: str) -> dict[str, Any]:
    return {
        "content": {
            media: {"schema": _ref(name)}
            for media in (
                "application/json",
                "application/yaml",
                "application/vnd.kubernetes.protobuf",
            )
        }
    }


def _operations(
    rt: ResourceType, version: str, kind_schema: str, *, sub: str | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the item path's operations, the collection path's operations or None)."""
    gvk = {"group": rt.group, "version": version, "kind": rt.kind}
    suffix = f"{rt.kind}{sub.capitalize() if sub else ''}"
    body = {"required": True, **_content(kind_schema)}
    ok = {"200": {"description": "OK", **_content(kind_schema)}}

    def op(action: str, verb: str, params: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "operationId": f"{verb}{suffix}",
            "parameters": params,
            "responses": ok,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            **extra,
        }

    patch_body = {
        "required": True,
        "content": {
            media: {"schema": _ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")}
            for media in (
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            )
        },
    }
    item = {
        "get": op("get", "read", []),
        "put": op("put", "replace", _params(*_WRITE), requestBody=body),
        "patch": op("patch", "patch", _params(*_WRITE, "force"), requestBody=patch_body),
    }
    if sub is not None:
        return item, None
    item["delete"] = op(
        "delete", "delete", _params("dryRun", "gracePeriodSeconds", "propagationPolicy")
    )
    collection = {
        "get": op("list", "list", _params(*_LIST)),
        "post": op("post", "create", _params(*_WRITE), requestBody=body),
        "delete": op("deletecollection", "deleteCollection", _params("dryRun", *_LIST)),
    }
    return item, collection


def _paths(rt: ResourceType, version: str, kind_schema: str) -> dict[str, Any]:
    base = f"/api/{version}" if not rt.group else f"/apis/{rt.group}/{version}"
    scope = "/namespaces/{namespace}" if rt.namespaced else ""
    common = [
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
        *(
            [{"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}]
            if rt.namespaced
            else []
        ),
        {"name": "pretty", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
    ]
    item, collection = _operations(rt, version, kind_schema)
    paths: dict[str, Any] = {
        f"{base}{scope}/{rt.plural}/{{name}}": {**item, "parameters": common},
        f"{base}{scope}/{rt.plural}": {**(collection or {}), "parameters": common[1:]},
    }
    for sub in sorted(rt.subresources):
        sub_item, _ = _operations(rt, version, kind_schema, sub=sub)
        paths[f"{base}{scope}/{rt.plural}/{{name}}/{sub}"] = {**sub_item, "parameters": common}
    return paths


# --- built-in schemas ---------------------------------------------------------------------------

_REF_KEYS = ("items", "additionalProperties", "not")


def _convert(schema: Any, refs: set[str]) -> Any:
    """A kubernetes-validate JSON schema node, in the apiserver's OpenAPI v3 form."""
    if isinstance(schema, list):
        return [_convert(s, refs) for s in schema]
    if not isinstance(schema, dict):
        return schema
    name = gotypes.ref_name(schema)
    if name is not None:
        refs.add(name)
        siblings = {k: _convert(v, refs) for k, v in schema.items() if k != "$ref"}
        return {**siblings, "allOf": [_ref(name)]} if siblings else _ref(name)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("$schema", "$id") or (key == "additionalProperties" and value is False):
            continue
        if key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            if kinds:
                out["type"] = kinds[0]
            continue
        if key == "properties":
            out[key] = {k: _convert(v, refs) for k, v in value.items()}
        elif key in _REF_KEYS or key in ("oneOf", "anyOf", "allOf"):
            out[key] = _convert(value, refs)
        else:
            out[key] = value
    return out


def _special(name: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    description = {"description": schema["description"]} if "description" in schema else {}
    if name == gotypes.INT_OR_STRING:
        return {**description, "type": "string", "format": "int-or-string"}
    if name == gotypes.QUANTITY:
        return {**description, "type": "string"}
    return None


def _builtin_components(roots: list[str]) -> dict[str, Any]:
    definitions = gotypes.definitions()
    components: dict[str, Any] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in components or name not in definitions:
            continue
        refs: set[str] = set()
        source = definitions[name]
        converted = _special(name, source) or _convert(source, refs)
        if "x-kubernetes-group-version-kind" in source:
            for key in ("apiVersion", "kind"):
                converted.get("properties", {}).get(key, {}).pop("enum", None)
        components[name] = converted
        pending.extend(refs - components.keys())
    return components


@functools.lru_cache(maxsize=64)
def _builtin_document(key: tuple[Any, ...]) -> tuple[str, str]:
    """(the JSON text, its hash) of a built-in group/version; the key lists its resources."""
    group, version, entries = key
    resources = [
        ResourceType(
            group, [version], plural, kind, namespaced=namespaced, subresources=frozenset(subs)
        )
        for plural, kind, namespaced, subs in entries
    ]
    paths: dict[str, Any] = {}
    roots = [
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
    ]
    for rt in resources:
        definition = gotypes.kind_definition(group, version, rt.kind)
        if definition is None:
            continue
        roots.append(definition)
        list_definition = gotypes.kind_definition(group, version, rt.list_kind)
        if list_definition:
            roots.append(list_definition)
        paths.update(_paths(rt, version, definition))
    components = _builtin_components(roots)
    components.setdefault(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
        {
            "type": "object",
            "description": "Patch is provided to give a concrete name and type "
            "to the Kubernetes PATCH request body.",
        },
    )
    document = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.36.0"},
        "paths": paths,
        "components": {"schemas": components},
    }
    text = json.dumps(document, separators=(",", ":"), sort_keys=True)
    return text, hashlib.sha512(text.encode()).hexdigest().upper()


def _custom_document(group: str, version: str, types: list[ResourceType]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for rt in types:
        schema = rt.schemas.get(version)
        if not schema:
            continue
        name = ".".join([*reversed(group.split(".")), version, rt.kind])
        gvk = {"group": group, "version": version, "kind": rt.kind}
        body = copy.deepcopy(schema)
        props = body.setdefault("properties", {})
        props.setdefault("metadata", _ref("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"))
        schemas[name] = {**body, "x-kubernetes-group-version-kind": [gvk]}
        schemas[f"{name}List"] = {
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "items": {"type": "array", "items": _ref(name)},
                "metadata": _ref("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"),
            },
            "x-kubernetes-group-version-kind": [{**gvk, "kind": rt.list_kind}],
        }
        paths.update(_paths(rt, version, name))
    if not schemas:
        raise err.not_found_path()
    meta = _builtin_components(
        [
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
            "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        ]
    )
    meta.setdefault("io.k8s.apimachinery.pkg.apis.meta.v1.Patch", {"type": "object"})
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": {**meta, **schemas}},
    }


def _group_versions(types: list[ResourceType]) -> dict[tuple[str, str], list[ResourceType]]:
    served: dict[tuple[str, str], list[ResourceType]] = {}
    for rt in types:
        for version in rt.versions:
            served.setdefault((rt.group, version), []).append(rt)
    return served


def _is_builtin(members: list[ResourceType]) -> bool:
    return not any(rt.custom for rt in members)


def _builtin_key(group: str, version: str, members: list[ResourceType]) -> tuple[Any, ...]:
    """Hashable and the same across emulators (whose ResourceType objects differ)."""
    return (
        group,
        version,
        tuple(
            (rt.plural, rt.kind, rt.namespaced, tuple(sorted(rt.subresources))) for rt in members
        ),
    )


def _custom_hash(group: str, version: str, members: list[ResourceType]) -> str:
    state = [(rt.plural, rt.kind, rt.namespaced, rt.schemas.get(version)) for rt in members]
    text = json.dumps([group, version, state], sort_keys=True, default=str)
    return hashlib.sha512(text.encode()).hexdigest().upper()


def serve(rest: list[str], types: list[ResourceType]) -> dict[str, Any] | str:
    """The reply to GET /openapi/v3[/api/v1 | /apis/{group}/{version}] (query ignored).

    Built-in documents come back as their cached JSON text.
    """
    served = _group_versions(types)
    if not rest:
        paths = {}
        for (group, version), members in sorted(served.items()):
            api_path = f"api/{version}" if not group else f"apis/{group}/{version}"
            if _is_builtin(members):
                digest = _builtin_document(_builtin_key(group, version, members))[1]
            else:
                if not any(rt.schemas.get(version) for rt in members):
                    continue
                digest = _custom_hash(group, version, members)
            paths[api_path] = {"serverRelativeURL": f"/openapi/v3/{api_path}?hash={digest}"}
        return {"paths": paths}
    if rest[:1] == ["api"] and len(rest) == 2:
        group, version = "", rest[1]
    elif rest[:1] == ["apis"] and len(rest) == 3:
        group, version = rest[1], rest[2]
    else:
        raise err.not_found_path()
    members = served.get((group, version))
    if not members:
        raise err.not_found_path()
    if _is_builtin(members):
        return _builtin_document(_builtin_key(group, version, members))[0]
    return _custom_document(group, version, members)
