"""
The Go types of the built-in kinds, as the apiserver's decoder sees them.

The schemas come from kubernetes-validate's bundled JSON schemas of Kubernetes 1.36
(``v1.36.0-local-strict``: one ``_definitions.json`` with ``$defs`` named like the OpenAPI
definitions, ``io.k8s.api.apps.v1.Deployment``). They are loaded on first use and cached:
an emulator that serves no built-in write never reads them.

Decoding mimics ``sigs.k8s.io/json`` (the apiserver's case-sensitive, strict JSON decoder):

* a value of the wrong JSON type is a decode error whatever ``fieldValidation`` says, in Go's
  words: ``json: cannot unmarshal bool into Go struct field JSONSchemaProps.spec.versions.
  schema.openAPIV3Schema.properties.required of type string`` (Go's field path: struct field
  names from the root, no map keys, no indexes; it stops growing at a type with its own
  ``UnmarshalJSON``, such as ``JSONSchemaPropsOrBool`` or ``IntOrString``);
* a field the Go struct does not have is dropped and reported as ``unknown field
  "spec.template.spec.containers[0].foo"`` (the strict path: map keys and indexes included),
  for ``fieldValidation`` to decide what to do with it. Fields under a type with its own
  ``UnmarshalJSON`` are dropped silently (that decoder is not strict), as upstream.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_DIR = "v1.36.0-local-strict"
_REF_PREFIXES = ("#/$defs/", "/api/_definitions.json#/$defs/")

# Types whose Go implementation has its own UnmarshalJSON: what they accept, by JSON type.
_APIEXT = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1."
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
JSON_SCHEMA_PROPS = _APIEXT + "JSONSchemaProps"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_CUSTOM = {
    _APIEXT + "JSON",
    _APIEXT + "JSONSchemaPropsOrArray",
    _APIEXT + "JSONSchemaPropsOrBool",
    _APIEXT + "JSONSchemaPropsOrStringArray",
    QUANTITY,
    INT_OR_STRING,
    _META + "Time",
    _META + "MicroTime",
    _META + "FieldsV1",
    "io.k8s.apimachinery.pkg.runtime.RawExtension",
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")


@functools.cache
def definitions() -> dict[str, dict[str, Any]]:
    import kubernetes_validate  # imported late: only emulators that decode built-ins need it

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / SCHEMA_DIR
    with open(base / "_definitions.json", encoding="utf-8") as f:
        return json.load(f)["$defs"]


@functools.cache
def _kind_index() -> dict[tuple[str, str, str], str]:
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or ():
            index.setdefault((gvk["group"], gvk["version"], gvk["kind"]), name)
    return index


def kind_definition(group: str, version: str, kind: str) -> str | None:
    """The definition name of a served kind, e.g. ``io.k8s.api.apps.v1.Deployment``."""
    return _kind_index().get((group, version, kind))


def ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    if not isinstance(ref, str):
        return None
    for prefix in _REF_PREFIXES:
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return None


def resolve(schema: dict[str, Any] | None) -> dict[str, Any]:
    """Follow a ``$ref`` (keeping the referring node's own list/patch annotations)."""
    if not schema:
        return {}
    name = ref_name(schema)
    if name is None:
        return schema
    target = definitions().get(name, {})
    extra = {k: v for k, v in schema.items() if k.startswith("x-kubernetes-")}
    return {**target, **extra} if extra else target


def types_of(schema: dict[str, Any]) -> set[str]:
    t = schema.get("type")
    if t is None:
        return set()
    return {t} if isinstance(t, str) else set(t) - {"null"}


def go_type(schema: dict[str, Any]) -> str:
    """How Go's reflect names the field's type in decode errors (pointers dereferenced)."""
    name = ref_name(schema)
    if name is not None:
        parts = name.split(".")
        return f"{parts[-2]}.{parts[-1]}"  # "v1.PodSpec"
    kinds = types_of(schema)
    if "array" in kinds:
        return "[]" + go_type(schema.get("items") or {})
    if "object" in kinds:
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return "map[string]" + go_type(extra)
        return "map[string]interface {}"
    if "integer" in kinds:
        return {"int32": "int32", "int64": "int64"}.get(schema.get("format", ""), "int")
    if "number" in kinds:
        return "float64"
    if "boolean" in kinds:
        return "bool"
    if "string" in kinds:
        return "[]uint8" if schema.get("format") == "byte" else "string"
    return "interface {}"


def _json_kind(value: Any) -> str:
    """Go's name of a JSON value in UnmarshalTypeError ('number 1.5' for a lossy number)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


@dataclass
class Decoded:
    obj: Any
    unknown: list[str] = field(default_factory=list)  # strict paths of the dropped fields
    error: str | None = None  # the first type error, as Go words it


class _Decoder:
    def __init__(self) -> None:
        self.unknown: list[str] = []
        self.error: str | None = None

    def fail(self, value: Any, struct: str | None, go_path: list[str], type_name: str) -> None:
        if self.error is not None:
            return  # Go reports the first type error (and keeps decoding)
        what = _json_kind(value)
        if what == "number" and type_name.startswith(("int", "uint")):
            what = f"number {json.dumps(value)}"
        if struct and go_path:
            where = f"Go struct field {struct}.{'.'.join(go_path)}"
        else:
            where = "Go value"
        self.error = f"json: cannot unmarshal {what} into {where} of type {type_name}"

    def value(
        self,
        value: Any,
        schema: dict[str, Any],
        path: str,
        struct: str | None,
        go_path: list[str],
        strict: bool,
    ) -> Any:
        if value is None:
            return None
        name = ref_name(schema)
        if name in _CUSTOM:
            return self.custom(value, name, path, struct, go_path)
        if name is not None:
            target = definitions().get(name, {})
            if "properties" in target and "object" in types_of(target):
                return self.struct(value, target, name, path, struct, go_path, strict)
            schema = target
        kinds = types_of(schema)
        if "object" in kinds:
            if not isinstance(value, dict):
                self.fail(value, struct, go_path, go_type(schema))
                return None
            extra = schema.get("additionalProperties")
            if "properties" in schema:
                return self.struct(value, schema, None, path, struct, go_path, strict)
            if not isinstance(extra, dict):
                return value  # map[string]interface{}: anything goes
            return {
                k: self.value(v, extra, f"{path}.{k}" if path else k, struct, go_path, strict)
                for k, v in value.items()
            }
        if "array" in kinds:
            if not isinstance(value, list):
                self.fail(value, struct, go_path, go_type(schema))
                return None
            items = schema.get("items") or {}
            return [
                self.value(item, items, f"{path}[{i}]", struct, go_path, strict)
                for i, item in enumerate(value)
            ]
        return self.scalar(value, schema, struct, go_path)

    def scalar(
        self, value: Any, schema: dict[str, Any], struct: str | None, go_path: list[str]
    ) -> Any:
        kinds = types_of(schema)
        ok = (
            ("string" in kinds and isinstance(value, str))
            or ("boolean" in kinds and isinstance(value, bool))
            or (
                "integer" in kinds
                and not isinstance(value, bool)
                and (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))
            )
            or (
                "number" in kinds
                and not isinstance(value, bool)
                and isinstance(value, (int, float))
            )
            or not kinds
        )
        if not ok:
            self.fail(value, struct, go_path, go_type(schema))
            return None
        if "integer" in kinds and isinstance(value, float):
            return int(value)
        return value

    def struct(
        self,
        value: Any,
        schema: dict[str, Any],
        name: str | None,
        path: str,
        struct: str | None,
        go_path: list[str],
        strict: bool,
    ) -> Any:
        go_name = name.rsplit(".", 1)[-1] if name else struct
        if not isinstance(value, dict):
            self.fail(value, struct, go_path, go_type({"$ref": f"#/$defs/{name}"}) if name else "")
            return None
        props = schema.get("properties") or {}
        result: dict[str, Any] = {}
        for key, item in value.items():
            sub = props.get(key)
            where = f"{path}.{key}" if path else key
            if sub is None:
                if strict:
                    self.unknown.append(where)
                continue
            result[key] = self.value(item, sub, where, go_name, [*go_path, key], strict)
        return result

    def custom(
        self, value: Any, name: str, path: str, struct: str | None, go_path: list[str]
    ) -> Any:
        """Types with their own UnmarshalJSON: not strict inside, errors at their boundary."""
        if name == INT_OR_STRING:
            if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
                return value
            self.fail(value, None, [], "int32" if not isinstance(value, str) else "string")
            return None
        if name == QUANTITY:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return value
            if isinstance(value, str) and _QUANTITY.match(value):
                return value
            if self.error is None:
                self.error = (
                    "quantities must match the regular expression "
                    "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
                )
            return None
        if name in (_META + "Time", _META + "MicroTime"):
            if isinstance(value, str):
                return value
            self.fail(value, None, [], "string")
            return None
        if name == _APIEXT + "JSONSchemaPropsOrArray":
            if isinstance(value, list):
                return [self._props(v, struct, go_path) for v in value]
            return self._props(value, struct, go_path)
        if name == _APIEXT + "JSONSchemaPropsOrBool":
            if isinstance(value, bool):
                return value
            return self._props(value, struct, go_path)
        if name == _APIEXT + "JSONSchemaPropsOrStringArray":
            if isinstance(value, list):
                for item in value:
                    if not isinstance(item, str):
                        self.fail(item, struct, go_path, "string")
                return value
            return self._props(value, struct, go_path)
        return value  # JSON, RawExtension, FieldsV1: any JSON

    def _props(self, value: Any, struct: str | None, go_path: list[str]) -> Any:
        # A nested, non-strict decode; a failure there is reported at the boundary's path.
        inner = _Decoder()
        result = inner.value(
            value, {"$ref": f"#/$defs/{JSON_SCHEMA_PROPS}"}, "", None, [], strict=False
        )
        if inner.error is not None and self.error is None:
            type_name = inner.error.rsplit(" of type ", 1)[-1]
            what = inner.error.removeprefix("json: cannot unmarshal ").split(" into ", 1)[0]
            where = f"Go struct field {struct}.{'.'.join(go_path)}" if struct else "Go value"
            self.error = f"json: cannot unmarshal {what} into {where} of type {type_name}"
        return result


def decode(obj: dict[str, Any], definition: str) -> Decoded:
    """Decode a whole object of a built-in kind the way the apiserver's decoder does."""
    decoder = _Decoder()
    result = decoder.value(obj, {"$ref": f"#/$defs/{definition}"}, "", None, [], strict=True)
    return Decoded(result if isinstance(result, dict) else {}, decoder.unknown, decoder.error)


def decode_meta(meta: Any) -> Decoded:
    """ObjectMeta alone (for custom resources, whose schema says only ``type: object``)."""
    decoder = _Decoder()
    result = decoder.value(
        meta, {"$ref": f"#/$defs/{_META}ObjectMeta"}, "metadata", None, [], strict=True
    )
    return Decoded(result if isinstance(result, dict) else {}, decoder.unknown, decoder.error)


OBJECT_META_SCHEMA = {"$ref": f"#/$defs/{_META}ObjectMeta"}
