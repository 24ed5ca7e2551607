"""Generate CustomResourceDefinitions from the typed API models.

pydantic emits JSON Schema with $refs, anyOf-with-null for optional fields and
titles; a CRD needs a *structural* OpenAPI v3 schema: every node typed, refs
inlined, no anyOf for nullability, free-form maps marked
x-kubernetes-preserve-unknown-fields and int-or-string marked as such.

Run `python -m eval_api.crdgen crds/` (or `make crds`) to rewrite crds/.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from eval_api import v1alpha1

# Keys of JSON Schema that mean the same in OpenAPI v3 and are allowed in structural schemas.
_PASSTHROUGH_KEYS = {
    "description",
    "type",
    "format",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "default",
    "nullable",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-map-type",
}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    target = defs[ref.rsplit("/", 1)[-1]]
    # Sibling keys of a $ref (pydantic puts description/default there) override the target's.
    merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return _resolve(merged, defs)


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _resolve(node, defs)
    variants = node.get("anyOf") or node.get("oneOf")
    if variants is not None:
        non_null = [_resolve(v, defs) for v in variants if v.get("type") != "null"]
        outer = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf")}
        if outer.get("default", "absent") is None:
            del outer["default"]
        types = sorted({v.get("type") for v in non_null})
        if len(non_null) == 1:
            return _structural({**non_null[0], **outer}, defs)
        if types == ["integer", "string"]:
            out = _structural(outer, defs)
            out.pop("type", None)
            out["x-kubernetes-int-or-string"] = True
            # Each form's own constraints (a quantity's syntax, its sign): the apiserver checks
            # pattern and maxLength only on strings and minimum/maximum only on numbers, as
            # the model does.
            string = next(v for v in non_null if v.get("type") == "string")
            integer = next(v for v in non_null if v.get("type") == "integer")
            out.update({k: string[k] for k in ("pattern", "maxLength") if k in string})
            out.update({k: integer[k] for k in ("minimum", "maximum") if k in integer})
            return out
        raise ValueError(f"cannot express {variants!r} in a structural schema")

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _PASSTHROUGH_KEYS:
            out[key] = value
        elif key == "const":
            out["enum"] = [value]
    if "const" in node and "type" not in out:
        out["type"] = "string"

    kind = node.get("type")
    if kind == "object" or "properties" in node:
        out["type"] = "object"
        properties = node.get("properties")
        if properties:
            out["properties"] = {name: _structural(prop, defs) for name, prop in properties.items()}
        additional = node.get("additionalProperties")
        if isinstance(additional, dict) and additional:
            out["additionalProperties"] = _structural(additional, defs)
        elif not properties:
            # A free-form object (e.g. an inline dataset record).
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        items = node.get("items", {})
        out["items"] = (
            _structural(items, defs)
            if items
            else {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
            }
        )
    if out.get("default", "absent") is None:
        del out["default"]
    if out.get("type") == "string" and "enum" in out and "maxLength" not in out:
        # The apiserver estimates CEL cost from maxLength, not from enum: bound every string.
        out["maxLength"] = max(len(str(v)) for v in out["enum"])
    return out


_KEY_ORDER = ("description", "type")


def _ordered(node: Any) -> Any:
    """Description and type first, nested schemas last: the YAML reads top-down like docs."""
    if isinstance(node, list):
        return [_ordered(item) for item in node]
    if not isinstance(node, dict):
        return node
    nested = ("items", "additionalProperties", "properties")
    first = [k for k in _KEY_ORDER if k in node]
    middle = sorted(k for k in node if k not in _KEY_ORDER and k not in nested)
    last = [k for k in nested if k in node]
    out = {k: _ordered(node[k]) for k in first + middle + last}
    if "properties" in node:  # a map of field names: keep the model's field order
        out["properties"] = {name: _ordered(prop) for name, prop in node["properties"].items()}
    return out


class GoYAMLSafeDumper(yaml.SafeDumper):
    """YAML that Go's YAML 1.1 readers (kubectl, helm, Argo CD, Flux) read back as written.

    PyYAML quotes a string only when its own resolver would read it as something else, and its
    resolver is not Go's: go-yaml also reads y/Y/n/N as booleans, 1e3 as a float and 0o17 as an
    integer. Teaching the dumper those readings makes it quote such strings, as keys and as
    values (an unquoted `n` in a `required` list broke `kubectl apply` of the CRD). Shared
    sub-schemas are written out in full: kubectl and helm dislike YAML anchors.
    """

    def ignore_aliases(self, data: Any) -> bool:
        return True


GoYAMLSafeDumper.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"), list("yYnN")
)
GoYAMLSafeDumper.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)
GoYAMLSafeDumper.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?0o[0-7_]+$"), list("-+0")
)


def dump_yaml(data: Any) -> str:
    """One YAML document, safe for Go's YAML 1.1 readers (see GoYAMLSafeDumper)."""
    return yaml.dump(data, Dumper=GoYAMLSafeDumper, sort_keys=False, width=100)


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _ordered(_structural(raw, defs))


def _top_level_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The object schema: apiVersion/kind/metadata are the apiserver's; spec/status are ours."""
    full = openapi_schema(model)
    props = full["properties"]
    return {
        "type": "object",
        "description": (model.__doc__ or "").strip().replace("\n    ", " "),
        "required": ["spec"],
        # Child objects carry the name in label values, which hold at most 63 characters.
        "x-kubernetes-validations": [
            {
                "rule": "self.metadata.name.size() <= 63",
                "message": "metadata.name must be at most 63 characters",
            }
        ],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this object.",
            },
            "kind": {
                "type": "string",
                "description": "Kind is a string value representing the REST resource.",
            },
            "metadata": {"type": "object"},
            "spec": props["spec"],
            "status": props["status"],
        },
    }


def crd_for(model: type[BaseModel]) -> dict[str, Any]:
    extra = model.model_config["json_schema_extra"]["x-crd"]  # type: ignore[index]
    kind = model.__name__
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{extra['plural']}.{v1alpha1.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "eval-operator"},
        },
        "spec": {
            "group": v1alpha1.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": extra["plural"],
                "singular": extra["singular"],
                "shortNames": extra["shortNames"],
                "categories": extra["categories"],
            },
            "versions": [
                {
                    "name": v1alpha1.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": extra["printerColumns"],
                    "schema": {"openAPIV3Schema": _top_level_schema(model)},
                }
            ],
        },
    }


ALL_KINDS: tuple[type[BaseModel], ...] = (v1alpha1.Evaluation, v1alpha1.EvalSuite)


def render_all() -> dict[str, str]:
    """File name -> YAML text for every CRD."""
    header = "# Generated from api/eval_api by `make crds`; do not edit.\n"
    files = {}
    for model in ALL_KINDS:
        crd = crd_for(model)
        files[f"{crd['metadata']['name']}.yaml"] = header + dump_yaml(crd)
    return files


def _type_of(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = node.get("type", "object")
    if kind == "array":
        return f"[]{_type_of(node.get('items', {}))}"
    if kind == "object" and "additionalProperties" in node:
        return f"map[string]{_type_of(node['additionalProperties'])}"
    if "enum" in node:
        return " \\| ".join(str(v) for v in node["enum"])
    return kind


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    for key in (
        "default",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "pattern",
    ):
        if key in node:
            value = node[key]
            parts.append(f"{key}: `{value}`" if key != "default" else f"default: `{value!r}`")
    for rule in node.get("x-kubernetes-validations", []):
        parts.append(f"rule: {rule['message']}")
    return "; ".join(parts).replace("|", "\\|")


def _field_rows(node: dict[str, Any], path: str, required: bool) -> list[str]:
    rows = []
    if path:
        description = (node.get("description") or "").replace("\n", " ").replace("|", "\\|")
        flag = " (required)" if required else ""
        rows.append(f"| `{path}`{flag} | {_type_of(node)} | {description} | {_constraints(node)} |")
    target = node.get("items", node) if node.get("type") == "array" else node
    wanted = set(target.get("required", []))
    for name, child in (target.get("properties") or {}).items():
        child_path = f"{path}{'[]' if node.get('type') == 'array' else ''}.{name}" if path else name
        rows.extend(_field_rows(child, child_path, name in wanted))
    return rows


def render_reference(models: tuple[type[BaseModel], ...] = ()) -> str:
    """Markdown reference of every field, from the same schema the CRDs carry."""
    lines = [
        "# API reference (evals.io/v1alpha1)",
        "",
        "Generated from api/eval_api by `make crds`; do not edit.",
        "`kubectl explain evaluation.spec --recursive` shows the same from a cluster.",
    ]
    for model in models or ALL_KINDS:
        crd = crd_for(model)
        version = crd["spec"]["versions"][0]
        schema = version["schema"]["openAPIV3Schema"]
        names = crd["spec"]["names"]
        lines += [
            "",
            f"## {names['kind']}",
            "",
            schema["description"],
            "",
            f"Short name `{', '.join(names['shortNames'])}`, "
            f"category `{', '.join(names['categories'])}`.",
            "",
            "| Field | Type | Description | Constraints |",
            "|---|---|---|---|",
        ]
        for part in ("spec", "status"):
            lines += _field_rows(schema["properties"][part], part, part == "spec")
        lines += [
            "",
            "Printer columns: "
            + ", ".join(c["name"] for c in version["additionalPrinterColumns"])
            + ".",
        ]
    return "\n".join(lines) + "\n"


REFERENCE_PATH = "docs/api-reference.md"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out_dir = Path(args[0] if args else "crds")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (out_dir / name).write_text(text)
        print(f"wrote {out_dir / name}")
    reference = out_dir.parent / REFERENCE_PATH
    reference.parent.mkdir(parents=True, exist_ok=True)
    reference.write_text(render_reference())
    print(f"wrote {reference}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
