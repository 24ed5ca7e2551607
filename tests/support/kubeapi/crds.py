"""
CustomResourceDefinitions: their own validation/defaulting, and their resource types.

The emulator plays the CRD controllers synchronously: a valid CRD is accepted
and "Established" at once, and the resource is served right after the write.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import FieldError
from .resources import ResourceType, sort_versions
from .schema import check_schema

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def crd_normalize(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    errors: list[FieldError] = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [FieldError("spec", "Required")]
    group, names = spec.get("group"), spec.get("names")
    if not isinstance(group, str) or not group:
        errors.append(FieldError("spec.group", "Required"))
    elif "." not in group:
        errors.append(
            FieldError("spec.group", "Invalid", group, "should be a domain with at least one dot")
        )
    if not isinstance(names, dict):
        return errors + [FieldError("spec.names", "Required")]
    for key in ("plural", "kind"):
        if not names.get(key):
            errors.append(FieldError(f"spec.names.{key}", "Required"))
    plural, kind = names.get("plural") or "", names.get("kind") or ""
    if plural and not _DNS_LABEL.match(plural):
        errors.append(
            FieldError(
                "spec.names.plural",
                "Invalid",
                plural,
                "a lowercase RFC 1123 label must consist of lower case "
                "alphanumeric characters or '-'",
            )
        )
    names.setdefault("singular", kind.lower())
    names.setdefault("listKind", f"{kind}List")
    if obj["metadata"].get("name") != f"{plural}.{group}":
        errors.append(
            FieldError(
                "metadata.name",
                "Invalid",
                obj["metadata"].get("name"),
                'must be spec.names.plural+"."+spec.group',
            )
        )
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        errors.append(
            FieldError(
                "spec.scope",
                "NotSupported",
                spec.get("scope"),
                'supported values: "Cluster", "Namespaced"',
            )
        )
    spec.setdefault("conversion", {"strategy": "None"})

    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        errors.append(FieldError("spec.versions", "Required"))
        versions = []
    if sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        errors.append(
            FieldError(
                "spec.versions",
                "Invalid",
                [v.get("name") for v in versions if isinstance(v, dict)],
                "must have exactly one version marked as storage version",
            )
        )
    seen: set[str] = set()
    for i, version in enumerate(versions):
        where = f"spec.versions[{i}]"
        if not isinstance(version, dict) or not version.get("name"):
            errors.append(FieldError(f"{where}.name", "Required"))
            continue
        if version["name"] in seen:
            errors.append(FieldError(f"{where}.name", "Duplicate", version["name"]))
        seen.add(version["name"])
        for flag in ("served", "storage"):
            if not isinstance(version.get(flag), bool):
                errors.append(FieldError(f"{where}.{flag}", "Required"))
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if not isinstance(schema, dict):
            errors.append(
                FieldError(
                    f"{where}.schema.openAPIV3Schema", "Required", detail="schemas are required"
                )
            )
            continue
        errors.extend(check_schema(schema, f"{where}.schema.openAPIV3Schema"))

    if old is not None:
        old_spec = old.get("spec") or {}
        for path, new_value, old_value in (
            ("spec.group", group, old_spec.get("group")),
            ("spec.scope", spec.get("scope"), old_spec.get("scope")),
            ("spec.names.plural", plural, (old_spec.get("names") or {}).get("plural")),
        ):
            if new_value != old_value:
                errors.append(FieldError(path, "Invalid", new_value, "field is immutable"))

    if not errors:
        # What the CRD controllers would report a moment later: names accepted, established.
        storage = [v["name"] for v in versions if v.get("storage")]
        stored = list((old or {}).get("status", {}).get("storedVersions") or [])
        condition = {
            "status": "True",
            "lastTransitionTime": obj["metadata"].get("creationTimestamp"),
        }
        obj["status"] = {
            "acceptedNames": {k: v for k, v in names.items()},
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                    **condition,
                },
                {
                    "type": "Established",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    **condition,
                },
            ],
            "storedVersions": list(dict.fromkeys(stored + storage)),
        }
    return errors


def resource_type_from_crd(crd: dict[str, Any]) -> ResourceType:
    spec = crd["spec"]
    names = spec["names"]
    versions = [v for v in spec["versions"] if v.get("served")]
    storage = next(v for v in spec["versions"] if v.get("storage"))
    selectable = tuple(
        f["jsonPath"].lstrip(".")
        for v in spec["versions"]
        if v is storage
        for f in v.get("selectableFields") or []
        if f.get("jsonPath")
    )
    return ResourceType(
        group=spec["group"],
        versions=sort_versions(v["name"] for v in versions),
        plural=names["plural"],
        kind=names["kind"],
        singular=names.get("singular") or names["kind"].lower(),
        namespaced=spec["scope"] == "Namespaced",
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        # Per resource, not per version: the storage version's subresources apply to all.
        # Only /status is served (no /scale): advertise only what works.
        subresources=frozenset({"status"} & set(storage.get("subresources") or {})),
        has_generation=True,
        custom=True,
        schemas={v["name"]: (v.get("schema") or {}).get("openAPIV3Schema") for v in versions},
        printer_columns={
            v["name"]: list(v.get("additionalPrinterColumns") or []) for v in versions
        },
        storage_version=storage["name"],
        field_labels=selectable,
        return_deleted_object=True,
    )
