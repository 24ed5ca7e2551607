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
extensions. It lacks the Kubernetes-specific libraries (quantity, URLs, IPs,
``format.*``), static type-checking, and cost limits.
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


def check_schema(schema: Any, path: str) -> list[FieldError]:
    """Reject CRD schemas we could not evaluate: bad types and uncompilable CEL rules."""
    errors: list[FieldError] = []
    if not isinstance(schema, dict):
        return [FieldError(path, "Required")]
    if schema.get("type") not in (
        None,
        "object",
        "array",
        "string",
        "integer",
        "number",
        "boolean",
    ):
        errors.append(
            FieldError(
                f"{path}.type",
                "NotSupported",
                schema.get("type"),
                'supported values: "array", "boolean", "integer", "number", "object", "string"',
            )
        )
    for i, spec in enumerate(schema.get("x-kubernetes-validations") or []):
        try:
            compile_rule(spec.get("rule", ""))
        except Exception as e:
            errors.append(
                FieldError(
                    f"{path}.x-kubernetes-validations[{i}].rule",
                    "Invalid",
                    spec.get("rule"),
                    f"compilation failed: {e}",
                )
            )
    for name, sub in (schema.get("properties") or {}).items():
        errors.extend(check_schema(sub, f"{path}.properties[{name}]"))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            errors.extend(check_schema(schema[key], f"{path}.{key}"))
    return errors
