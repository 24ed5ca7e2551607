"""
Structural schemas of CRDs: pruning, defaulting, validation, and CEL rules.

The order mirrors the apiserver: unknown fields are pruned (and non-nullable
nulls dropped), then defaults are applied (and pruned themselves), then the
object is validated against the OpenAPI constraints and the CEL rules
(``x-kubernetes-validations``).

CEL is evaluated with the ``cel`` package (PyPI: common-expression-language,
a binding to the Rust ``cel`` crate): it supports ``has()``, ``size()``,
``matches()``, ``all()``, ``exists()``, ``exists_one()``, ``map()``,
``filter()`` and, via ``cel.stdlib``, most of the cel-go string/list/math
extensions, Kubernetes' quantity library and CEL's getFullYear(timeZone) (eval_api.cel).
It lacks the other Kubernetes-specific libraries (URLs, IPs, ``format.*``), static
type-checking, and cost limits.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import functools
import ipaddress
import re
from typing import Any

import cel
from cel.stdlib import add_stdlib_to_context

from eval_api.cel import add_quantity_library, add_time_zone_accessors

from .errors import FieldError, fmt_value

MISSING: Any = object()  # "no old value": distinct from an explicit null
ROOT_KEPT = ("apiVersion", "kind", "metadata")  # never pruned at the root of an object


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- pruning and defaulting ---------------------------------------------------------------------


def _is_nullable(schema: dict[str, Any] | None) -> bool:
    return bool(schema and schema.get("nullable"))


def prune(
    value: Any,
    schema: dict[str, Any] | None,
    *,
    root: bool = False,
    dropped: list[str] | None = None,
    path: str = "",
) -> Any:
    """Drop the fields the schema does not specify, like the apiserver does silently.

    ``dropped`` collects the paths of what was pruned (``spec.items[0].foo``): the unknown
    fields that ``fieldValidation`` reports.
    """
    schema = schema or {}
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields") is True or extra is True
        embedded = schema.get("x-kubernetes-embedded-resource") is True
        result: dict[str, Any] = {}
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            where = f"{path}.{key}" if path else key
            if (root or embedded) and key in ROOT_KEPT:
                result[key] = item  # metadata is ObjectMeta, never pruned by the schema
            elif (
                item is None and (key in props or isinstance(extra, dict)) and not _is_nullable(sub)
            ):
                continue  # nulls of non-nullable fields are dropped (so defaults can apply)
            elif key in props or isinstance(extra, dict):
                result[key] = prune(item, sub, dropped=dropped, path=where)
            elif keep_unknown:
                result[key] = item
            elif dropped is not None:
                dropped.append(where)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [
            prune(item, schema["items"], dropped=dropped, path=f"{path}[{i}]")
            for i, item in enumerate(value)
        ]
    return value


def apply_defaults(value: Any, schema: dict[str, Any] | None, *, root: bool = False) -> Any:
    """Fill in absent fields that have a ``default``; defaults are pruned, then defaulted too."""
    schema = schema or {}
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub and not (root and key in ROOT_KEPT):
                value[key] = prune(copy.deepcopy(sub["default"]), sub)
        for key, item in list(value.items()):
            if root and key in ROOT_KEPT:
                continue
            if key in props:
                value[key] = apply_defaults(item, props[key])
            elif isinstance(schema.get("additionalProperties"), dict):
                value[key] = apply_defaults(item, schema["additionalProperties"])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


# --- validation ---------------------------------------------------------------------------------

_TYPE_NAMES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
    type(None): "null",
}


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _type_ok(value: Any, expected: str) -> bool:
    if expected == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return expected == _type_name(value)


_HOSTNAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.I)
_DURATION = re.compile(r"^-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _format_ok(value: Any, fmt: str) -> bool:
    """The formats that are cheap to check; unknown formats pass, as in the apiserver."""
    try:
        if fmt in ("int32", "int64") and isinstance(value, int):
            bits = 31 if fmt == "int32" else 63
            return -(2**bits) <= value < 2**bits
        if not isinstance(value, str):
            return True
        if fmt == "date-time":
            return bool(
                re.fullmatch(
                    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", value
                )
            ) and bool(
                datetime.datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
            )
        if fmt == "date":
            return bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)) and bool(
                datetime.date.fromisoformat(value)
            )
        if fmt == "uuid":
            return bool(_UUID.match(value))
        if fmt == "byte":
            base64.b64decode(value, validate=True)
            return True
        if fmt == "ipv4":
            return isinstance(ipaddress.ip_address(value), ipaddress.IPv4Address)
        if fmt == "ipv6":
            return isinstance(ipaddress.ip_address(value), ipaddress.IPv6Address)
        if fmt == "cidr":  # Go's net.ParseCIDR: an address, a slash, a prefix length
            return "/" in value and bool(ipaddress.ip_network(value, strict=False))
        if fmt == "hostname":
            return len(value) <= 253 and bool(_HOSTNAME.match(value))
        if fmt == "duration":
            return bool(_DURATION.match(value))
        if fmt == "email":
            return bool(_EMAIL.match(value))
    except (ValueError, binascii.Error):
        return False
    return True


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def validate(
    value: Any,
    schema: dict[str, Any] | None,
    path: str = "",
    *,
    old: Any = MISSING,
    root: bool = False,
) -> list[FieldError]:
    """All violations of the schema by the value, with the apiserver's field paths & texts."""
    errors: list[FieldError] = []
    _validate(value, schema or {}, path, old, errors, root=root)
    return errors


def _validate(
    value: Any,
    s: dict[str, Any],
    path: str,
    old: Any,
    errors: list[FieldError],
    *,
    root: bool = False,
) -> None:
    where = path or "<root>"
    if value is None:
        if not s.get("nullable") and (s.get("type") or s.get("x-kubernetes-int-or-string")):
            errors.append(
                FieldError(
                    path,
                    "Invalid",
                    "null",
                    f'{where} in body must be of type {s.get("type", "integer-or-string")}: "null"',
                )
            )
        return

    expected = s.get("type")
    if s.get("x-kubernetes-int-or-string"):
        if not (_type_ok(value, "integer") or isinstance(value, str)):
            errors.append(
                FieldError(
                    path,
                    "Invalid",
                    _type_name(value),
                    f'{where} in body must be of type integer-or-string: "{_type_name(value)}"',
                )
            )
            return
    elif expected and not _type_ok(value, expected):
        errors.append(
            FieldError(
                path,
                "Invalid",
                _type_name(value),
                f'{where} in body must be of type {expected}: "{_type_name(value)}"',
            )
        )
        return  # nothing else makes sense for a value of a wrong type

    _validate_value(value, s, path, where, errors)

    if isinstance(value, dict):
        props: dict[str, Any] = s.get("properties") or {}
        for name in s.get("required") or []:
            if name not in value:
                errors.append(FieldError(_child(path, name), "Required"))
        extra = s.get("additionalProperties")
        for key, item in value.items():
            if root and key in ROOT_KEPT:
                continue  # apiVersion/kind/metadata are validated by the apiserver itself
            old_item = old.get(key, MISSING) if isinstance(old, dict) else MISSING
            if key in props:
                _validate(item, props[key], _child(path, key), old_item, errors)
            elif isinstance(extra, dict):
                _validate(item, extra, f"{path}[{key}]", old_item, errors)
        for bound, check in (
            ("minProperties", len(value) < s.get("minProperties", 0)),
            ("maxProperties", len(value) > s.get("maxProperties", len(value))),
        ):
            if check:
                errors.append(
                    FieldError(
                        path,
                        "Invalid",
                        len(value),
                        f"{where} in body should have "
                        f"{'at least' if bound.startswith('min') else 'at most'} "
                        f"{s[bound]} properties",
                    )
                )

    if isinstance(value, list):
        items = s.get("items") if isinstance(s.get("items"), dict) else {}
        old_by_key = _list_correlation(old, s)
        for i, item in enumerate(value):
            _validate(item, items, f"{path}[{i}]", old_by_key(item), errors)
        if "minItems" in s and len(value) < s["minItems"]:
            errors.append(
                FieldError(
                    path,
                    "Invalid",
                    len(value),
                    f"{where} in body should have at least {s['minItems']} items",
                )
            )
        if "maxItems" in s and len(value) > s["maxItems"]:
            errors.append(
                FieldError(path, "TooMany", len(value), f"must have at most {s['maxItems']} items")
            )
        _validate_list_type(value, s, path, errors)

    _validate_rules(value, s, path, old, errors)


def _validate_value(
    value: Any, s: dict[str, Any], path: str, where: str, errors: list[FieldError]
) -> None:
    """Scalar constraints, and the logic combinators (which hold only value validations)."""
    if "enum" in s and not any(_same(value, choice) for choice in s["enum"]):
        supported = ", ".join(f'"{c}"' if isinstance(c, str) else str(c) for c in s["enum"])
        errors.append(FieldError(path, "NotSupported", value, f"supported values: {supported}"))
    if isinstance(value, str):
        if "pattern" in s and not _regex(s["pattern"]).search(value):
            errors.append(
                FieldError(path, "Invalid", value, f"{where} in body should match '{s['pattern']}'")
            )
        if "minLength" in s and len(value) < s["minLength"]:
            errors.append(
                FieldError(
                    path,
                    "Invalid",
                    value,
                    f"{where} in body should be at least {s['minLength']} chars long",
                )
            )
        if "maxLength" in s and len(value) > s["maxLength"]:
            errors.append(
                FieldError(path, "TooLong", value, f"may not be more than {s['maxLength']} bytes")
            )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in s:
            exclusive = s.get("exclusiveMinimum") is True
            if value < s["minimum"] or (exclusive and value == s["minimum"]):
                errors.append(
                    FieldError(
                        path,
                        "Invalid",
                        value,
                        f"{where} in body should be greater than "
                        f"{'' if exclusive else 'or equal to '}{s['minimum']}",
                    )
                )
        if "maximum" in s:
            exclusive = s.get("exclusiveMaximum") is True
            if value > s["maximum"] or (exclusive and value == s["maximum"]):
                errors.append(
                    FieldError(
                        path,
                        "Invalid",
                        value,
                        f"{where} in body should be less than "
                        f"{'' if exclusive else 'or equal to '}{s['maximum']}",
                    )
                )
        if s.get("multipleOf") and (value / s["multipleOf"]) % 1:
            errors.append(
                FieldError(
                    path,
                    "Invalid",
                    value,
                    f"{where} in body should be a multiple of {s['multipleOf']}",
                )
            )
    if "format" in s and not _format_ok(value, s["format"]):
        errors.append(
            FieldError(
                path,
                "Invalid",
                value,
                f"{where} in body must be of type {s['format']}: {fmt_value(value)}",
            )
        )
    for sub in s.get("allOf") or []:
        _validate_value(value, sub, path, where, errors)
    for key in ("anyOf", "oneOf"):
        if key in s:
            passing = sum(1 for sub in s[key] if not _combinator_errors(value, sub, path, where))
            if passing == 0 or (key == "oneOf" and passing > 1):
                errors.append(
                    FieldError(
                        path,
                        "Invalid",
                        value,
                        f"{where} in body must validate "
                        f"{'any' if key == 'anyOf' else 'one and only one'} "
                        f"schema ({key})",
                    )
                )
    if "not" in s and not _combinator_errors(value, s["not"], path, where):
        errors.append(
            FieldError(
                path, "Invalid", value, f"{where} in body must not validate the schema (not)"
            )
        )


def _combinator_errors(value: Any, sub: dict[str, Any], path: str, where: str) -> list[FieldError]:
    errors: list[FieldError] = []
    if sub.get("type") and not _type_ok(value, sub["type"]):
        errors.append(FieldError(path, "Invalid", value, "type"))
    if isinstance(value, dict):
        errors.extend(
            FieldError(path, "Required", None)
            for name in sub.get("required") or []
            if name not in value
        )
    _validate_value(value, sub, path, where, errors)
    return errors


def _same(a: Any, b: Any) -> bool:
    return (
        type(a) is type(b)
        and a == b
        or (
            isinstance(a, (int, float))
            and isinstance(b, (int, float))
            and not isinstance(a, bool)
            and not isinstance(b, bool)
            and a == b
        )
    )


def _list_correlation(old: Any, s: dict[str, Any]) -> Any:
    """How list items find their old selves: only map-lists correlate (by keys), as in k8s."""
    keys = s.get("x-kubernetes-list-map-keys") or []
    if s.get("x-kubernetes-list-type") != "map" or not keys or not isinstance(old, list):
        return lambda item: MISSING
    index = {tuple(o.get(k) for k in keys): o for o in old if isinstance(o, dict)}
    return lambda item: (
        index.get(tuple(item.get(k) for k in keys), MISSING) if isinstance(item, dict) else MISSING
    )


def _validate_list_type(
    value: list[Any], s: dict[str, Any], path: str, errors: list[FieldError]
) -> None:
    list_type = s.get("x-kubernetes-list-type")
    if list_type == "set":
        seen: list[Any] = []
        for i, item in enumerate(value):
            if any(_same(item, other) for other in seen):
                errors.append(FieldError(f"{path}[{i}]", "Duplicate", item))
            seen.append(item)
    elif list_type == "map":
        keys = s.get("x-kubernetes-list-map-keys") or []
        seen_keys: set[tuple[Any, ...]] = set()
        for i, item in enumerate(value):
            if isinstance(item, dict):
                key = tuple(repr(item.get(k)) for k in keys)
                if key in seen_keys:
                    errors.append(
                        FieldError(f"{path}[{i}]", "Duplicate", {k: item.get(k) for k in keys})
                    )
                seen_keys.add(key)


# --- CEL rules ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def compile_rule(rule: str) -> cel.Program:
    """Compile once per rule text; raises ValueError on syntax errors."""
    return cel.compile(rule)


def is_transition_rule(rule: str) -> bool:
    return "oldSelf" in compile_rule(rule).variables()


_REASONS = {
    "FieldValueInvalid": "Invalid",
    "FieldValueForbidden": "Forbidden",
    "FieldValueRequired": "Required",
    "FieldValueDuplicate": "Duplicate",
}


def _evaluate(rule: str, variables: dict[str, Any]) -> Any:
    context = cel.Context(variables)
    add_stdlib_to_context(context)  # cel-go's strings/lists/sets/math extensions
    add_quantity_library(context)  # Kubernetes' quantity(), compareTo() & co.
    add_time_zone_accessors(context)  # CEL's getFullYear(timeZone)
    return compile_rule(rule).execute(context)


def _validate_rules(
    value: Any, s: dict[str, Any], path: str, old: Any, errors: list[FieldError]
) -> None:
    for spec in s.get("x-kubernetes-validations") or []:
        rule = spec.get("rule", "")
        variables: dict[str, Any] = {"self": value}
        if is_transition_rule(rule):
            if old is MISSING:
                continue  # transition rules apply only to updates of an existing value
            variables["oldSelf"] = old
        field_path = path + (spec.get("fieldPath") or "")
        field_path = field_path.lstrip(".") or "<nil>"
        kind = _REASONS.get(spec.get("reason", ""), "Invalid")
        try:
            result = _evaluate(rule, variables)
        except Exception as e:  # any evaluation failure is a validation failure, as in k8s
            errors.append(
                FieldError(field_path, "Invalid", _type_name(value), f"rule evaluation error: {e}")
            )
            continue
        if result is True:
            continue
        message = spec.get("message") or (
            f"failed rule: {rule}"
            if result is False
            else f"rule did not evaluate to a bool: {rule}"
        )
        if spec.get("messageExpression"):
            try:
                dynamic = _evaluate(spec["messageExpression"], variables)
                message = dynamic if isinstance(dynamic, str) and dynamic.strip() else message
            except Exception:  # a broken messageExpression falls back to the message
                pass
        if kind in ("Forbidden", "Required"):
            errors.append(FieldError(field_path, kind, None, message))
        else:
            errors.append(FieldError(field_path, kind, _type_name(value), message))


_FORBIDDEN = {
    "id": "id is not supported",
    "$schema": "$schema is not supported",
    "$ref": "$ref is not supported",
    "definitions": "definitions is not supported",
    "dependencies": "dependencies is not supported",
    "additionalItems": "additionalItems is not supported",
    "patternProperties": "patternProperties is not supported",
}
_SCALARS = ("string", "integer", "number", "boolean")
# What a value validation (inside anyOf/allOf/oneOf/not) must not hold, and the words for it.
_NOT_IN_VALUE_VALIDATION = {
    "type": "must be empty to be structural",
    "additionalProperties": "must be undefined to be structural",
    "default": "must be undefined to be structural",
    "title": "must be empty to be structural",
    "description": "must be empty to be structural",
    "nullable": "must be false to be structural",
    "x-kubernetes-preserve-unknown-fields": "must be undefined to be structural",
    "x-kubernetes-embedded-resource": "must be false to be structural",
    "x-kubernetes-int-or-string": "must be false to be structural",
    "x-kubernetes-list-map-keys": "must be empty to be structural",
    "x-kubernetes-list-type": "must be undefined to be structural",
    "x-kubernetes-map-type": "must be undefined to be structural",
}


def check_schema(schema: Any, path: str) -> list[FieldError]:
    """A CRD version's openAPIV3Schema as the apiserver checks it (structural schema rules).

    Field paths and texts are the apiserver's (``...openAPIV3Schema.properties[spec].type:
    Required value: must not be empty for specified object fields``).
    """
    if not isinstance(schema, dict):
        return [FieldError(path, "Required")]
    errors: list[FieldError] = []
    _structural(schema, path, "root", errors, embedded_root=False)
    return errors


def _is_int_or_string_pattern(schema: dict[str, Any]) -> bool:
    def pair(options: Any) -> bool:
        return isinstance(options, list) and sorted(
            (o or {}).get("type", "") for o in options if isinstance(o, dict)
        ) == ["integer", "string"]

    return bool(schema.get("x-kubernetes-int-or-string")) and (
        pair(schema.get("anyOf"))
        or (isinstance(schema.get("allOf"), list) and pair((schema["allOf"][0] or {}).get("anyOf")))
    )


def _structural(
    s: dict[str, Any], path: str, level: str, errors: list[FieldError], *, embedded_root: bool
) -> None:
    for key, why in _FORBIDDEN.items():
        if key in s:
            errors.append(FieldError(f"{path}.{key}", "Forbidden", None, why))
    kind = s.get("type")
    if kind == "null":
        errors.append(
            FieldError(
                f"{path}.type",
                "Forbidden",
                None,
                "type cannot be set to null, use nullable as an alternative",
            )
        )
    elif kind not in (None, "object", "array", *_SCALARS):
        errors.append(
            FieldError(
                f"{path}.type",
                "NotSupported",
                kind,
                'supported values: "array", "boolean", "integer", "number", "object", "string"',
            )
        )
    embedded = s.get("x-kubernetes-embedded-resource") is True
    int_or_string = s.get("x-kubernetes-int-or-string") is True
    if embedded and kind != "object":
        if not kind:
            errors.append(
                FieldError(
                    f"{path}.type",
                    "Required",
                    detail="must be object if x-kubernetes-embedded-resource is true",
                )
            )
        else:
            errors.append(
                FieldError(
                    f"{path}.type",
                    "Invalid",
                    kind,
                    "must be object if x-kubernetes-embedded-resource is true",
                )
            )
    elif (
        not kind
        and not int_or_string
        and not (level == "field" and s.get("x-kubernetes-preserve-unknown-fields") is True)
    ):
        where = {
            "root": "must not be empty at the root",
            "item": "must not be empty for specified array items",
            "field": "must not be empty for specified object fields",
        }[level]
        errors.append(FieldError(f"{path}.type", "Required", detail=where))
    if level == "root" and kind and kind != "object":
        errors.append(FieldError(f"{path}.type", "Invalid", kind, "must be object at the root"))
    if kind == "array" and not isinstance(s.get("items"), dict):
        if isinstance(s.get("items"), list):
            errors.append(
                FieldError(
                    f"{path}.items",
                    "Forbidden",
                    None,
                    "items must be a schema object and not an array",
                )
            )
        else:
            errors.append(FieldError(f"{path}.items", "Required", detail="must be specified"))
    props = s.get("properties") or {}
    extra = s.get("additionalProperties")
    if extra is False:
        errors.append(
            FieldError(
                f"{path}.additionalProperties",
                "Forbidden",
                None,
                "additionalProperties cannot be set to false",
            )
        )
    elif extra is not None and props:
        errors.append(
            FieldError(
                f"{path}.additionalProperties",
                "Forbidden",
                None,
                "additionalProperties and properties are mutual exclusive",
            )
        )
    if s.get("uniqueItems") is True:
        errors.append(
            FieldError(
                f"{path}.uniqueItems",
                "Forbidden",
                None,
                "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
            )
        )
    _list_extensions(s, path, errors)
    skip_any_of = _is_int_or_string_pattern(s) and "anyOf" in s
    skip_first_all_of = _is_int_or_string_pattern(s) and "allOf" in s
    for key in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(s.get(key) or []):
            if isinstance(sub, dict) and not (
                (key == "anyOf" and skip_any_of)
                or (key == "allOf" and i == 0 and skip_first_all_of)
            ):
                _value_validation(sub, f"{path}.{key}[{i}]", errors)
    if isinstance(s.get("not"), dict):
        _value_validation(s["not"], f"{path}.not", errors)
    check_metadata = level == "root" or embedded
    for key in ("kind", "apiVersion"):
        if check_metadata and key in props and (props[key] or {}).get("type") != "string":
            errors.append(
                FieldError(
                    f"{path}.properties[{key}].type",
                    "Invalid",
                    (props[key] or {}).get("type"),
                    "must be string",
                )
            )
    if "metadata" in props and check_metadata:
        _metadata(props["metadata"] or {}, f"{path}.properties[metadata]", level, errors)
    if embedded and not s.get("x-kubernetes-preserve-unknown-fields") and not props:
        errors.append(
            FieldError(
                f"{path}.properties",
                "Required",
                detail="must not be empty if x-kubernetes-embedded-resource is true without "
                "x-kubernetes-preserve-unknown-fields",
            )
        )
    if "default" in s:
        _check_default(s, path, errors)
    _rules(s, path, errors)
    for name, sub in props.items():
        if isinstance(sub, dict):
            _structural(sub, f"{path}.properties[{name}]", "field", errors, embedded_root=False)
    if isinstance(s.get("items"), dict):
        _structural(s["items"], f"{path}.items", "item", errors, embedded_root=False)
    if isinstance(extra, dict):
        _structural(extra, f"{path}.additionalProperties", "field", errors, embedded_root=False)


def _list_extensions(s: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    list_type = s.get("x-kubernetes-list-type")
    keys = s.get("x-kubernetes-list-map-keys")
    items = s.get("items") if isinstance(s.get("items"), dict) else {}
    if list_type is not None and list_type not in ("atomic", "set", "map"):
        errors.append(
            FieldError(
                f"{path}.x-kubernetes-list-type",
                "NotSupported",
                list_type,
                'supported values: "atomic", "map", "set"',
            )
        )
    if keys and list_type != "map":
        errors.append(
            FieldError(
                f"{path}.x-kubernetes-list-map-keys",
                "Forbidden",
                None,
                "must not be set if x-kubernetes-list-type is not map",
            )
        )
    if list_type == "map":
        if not keys:
            errors.append(
                FieldError(
                    f"{path}.x-kubernetes-list-map-keys",
                    "Required",
                    detail="must not be empty if x-kubernetes-list-type is map",
                )
            )
        if items.get("type") != "object":
            errors.append(
                FieldError(
                    f"{path}.items.type",
                    "Invalid",
                    items.get("type"),
                    "must be object for an array of list-type map",
                )
            )
        props = items.get("properties") or {}
        required = set(items.get("required") or [])
        for key in keys or []:
            if key not in props:
                errors.append(
                    FieldError(
                        f"{path}.x-kubernetes-list-map-keys",
                        "Invalid",
                        keys,
                        "entries must all be names of item properties",
                    )
                )
                continue
            prop = props[key] or {}
            if prop.get("type") in ("array", "object"):
                errors.append(
                    FieldError(
                        f"{path}.items.properties[{key}].type",
                        "Invalid",
                        prop.get("type"),
                        "must be a scalar type if used as list map key",
                    )
                )
            if key not in required and "default" not in prop and not prop.get("nullable"):
                errors.append(
                    FieldError(
                        f"{path}.items.properties[{key}]",
                        "Required",
                        detail="this property is in x-kubernetes-list-map-keys, so it must have "
                        "a default or be a required property",
                    )
                )
    if list_type == "set" and items:
        atomic = (
            items.get("type") in _SCALARS
            or items.get("x-kubernetes-int-or-string")
            or (items.get("type") == "object" and items.get("x-kubernetes-map-type") == "atomic")
            or (items.get("type") == "array" and items.get("x-kubernetes-list-type") == "atomic")
        )
        if not atomic:
            errors.append(
                FieldError(
                    f"{path}.items.x-kubernetes-map-type",
                    "Invalid",
                    items.get("x-kubernetes-map-type"),
                    "must be atomic as item of a list with x-kubernetes-list-type=set",
                )
            )


def _value_validation(s: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    for key, why in _NOT_IN_VALUE_VALIDATION.items():
        if key in s and s[key] not in (False, None, "", []):
            errors.append(FieldError(f"{path}.{key}", "Forbidden", None, why))
    for key in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(s.get(key) or []):
            if isinstance(sub, dict):
                _value_validation(sub, f"{path}.{key}[{i}]", errors)
    if isinstance(s.get("not"), dict):
        _value_validation(s["not"], f"{path}.not", errors)
    if isinstance(s.get("items"), dict):
        _value_validation(s["items"], f"{path}.items", errors)
    for name, sub in (s.get("properties") or {}).items():
        if name == "metadata":
            errors.append(
                FieldError(
                    f"{path}.properties[metadata]",
                    "Forbidden",
                    None,
                    "must not be specified in a nested context",
                )
            )
        elif isinstance(sub, dict):
            _value_validation(sub, f"{path}.properties[{name}]", errors)


def _metadata(meta: dict[str, Any], path: str, level: str, errors: list[FieldError]) -> None:
    if meta.get("type") not in (None, "object"):
        errors.append(FieldError(f"{path}.type", "Invalid", meta.get("type"), "must be object"))
    if level != "root":
        return
    allowed = {"name", "generateName"}
    rest = {k: v for k, v in meta.items() if k not in ("type", "properties", "default")}
    names = set(meta.get("properties") or {})
    if rest or (names - allowed):
        errors.append(
            FieldError(
                path,
                "Forbidden",
                None,
                "must not specify anything other than name and generateName, "
                "but metadata is implicitly specified",
            )
        )


def _check_default(s: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    default = s["default"]
    if default is None and not s.get("nullable"):
        return
    dropped: list[str] = []
    pruned = prune(copy.deepcopy(default), s, dropped=dropped)
    if dropped:
        errors.append(
            FieldError(f"{path}.default", "Invalid", pruned, "must not have unknown fields")
        )
    for problem in validate(default, s, "default"):
        errors.append(
            FieldError(f"{path}.default", "Invalid", problem.value, problem.detail or problem.body)
        )


def _rules(s: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    for i, spec in enumerate(s.get("x-kubernetes-validations") or []):
        if not isinstance(spec, dict):
            continue
        where = f"{path}.x-kubernetes-validations[{i}]"
        try:
            compile_rule(spec.get("rule", ""))
        except Exception as e:
            errors.append(
                FieldError(f"{where}.rule", "Invalid", spec.get("rule"), f"compilation failed: {e}")
            )
        if spec.get("messageExpression"):
            try:
                compile_rule(spec["messageExpression"])
            except Exception as e:
                errors.append(
                    FieldError(
                        f"{where}.messageExpression",
                        "Invalid",
                        spec["messageExpression"],
                        f"messageExpression compilation failed: {e}",
                    )
                )
