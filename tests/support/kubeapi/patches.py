"""
Patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and the strategic merge
patch of built-in kinds (k8s.io/apimachinery/pkg/util/strategicpatch, as the apiserver applies
it: ``MergeParallelList`` and ``IgnoreUnmatchedNulls`` on).

The strategic merge reads the Go types' patch metadata from their schemas
(``x-kubernetes-patch-strategy`` and ``x-kubernetes-patch-merge-key``) and honours the
directives ``$patch: replace|delete|merge``, ``$setElementOrder/<list>``,
``$deleteFromPrimitiveList/<list>`` and ``$retainKeys``; ``null`` deletes a key.
"""

from __future__ import annotations

import copy
import json
from typing import Any


class PatchError(Exception):
    """The patch cannot be applied to the document (the apiserver replies 422)."""


class MalformedPatch(Exception):
    """The patch itself is not a valid patch document (the apiserver replies 400)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike Python's ``==``, ``true`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise MalformedPatch(f"invalid JSON pointer: {path!r}")
    if path == "":
        return []
    # Unescape in this order, as RFC 6901 demands: "~01" means "~1", not "/".
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, *, for_insert: bool) -> int:
    if token == "-" and for_insert:
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchError(f"invalid array index: {token!r}")
    idx = int(token)
    if idx > len(container) or (idx == len(container) and not for_insert):
        raise PatchError(f"array index out of bounds: {idx}")
    return idx


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for token in parts[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, for_insert=False)]
        else:
            raise PatchError(f"path does not exist: {path}")
    return node


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts, path)
    token = parts[-1]
    if isinstance(parent, dict) and token in parent:
        return parent[token]
    if isinstance(parent, list):
        return parent[_index(parent, token, for_insert=False)]
    raise PatchError(f"path does not exist: {path}")


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, parts, path)
    token = parts[-1]
    if isinstance(parent, dict) and token in parent:
        return parent.pop(token)
    if isinstance(parent, list):
        return parent.pop(_index(parent, token, for_insert=False))
    raise PatchError(f"path does not exist: {path}")


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value  # replaces the whole document
    parent = _parent(doc, parts, path)
    token = parts[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, for_insert=True), value)
    else:
        raise PatchError(f"cannot add to a non-container at: {path}")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902, applied atomically: on any failure, the original is untouched."""
    if not isinstance(ops, list):
        raise MalformedPatch("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise MalformedPatch(f"invalid JSON patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise MalformedPatch(f'"value" is missing in: {op!r}')
        if kind in ("move", "copy") and "from" not in op:
            raise MalformedPatch(f'"from" is missing in: {op!r}')
        value = copy.deepcopy(op.get("value"))
        if kind == "add":
            doc = _add(doc, path, value)
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)  # "replace" requires the target to exist
            if _pointer(path):
                _remove(doc, path)
            doc = _add(doc, path, value)
        elif kind == "move":
            moved = _remove(doc, op["from"])
            doc = _add(doc, path, moved)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            actual = _get(doc, path)
            if not json_equal(actual, value):
                raise PatchError(
                    f"testing value {path} failed: expected {value!r}, found {actual!r}"
                )
        else:
            raise MalformedPatch(f"unknown JSON patch operation: {kind!r}")
    return doc


# --- strategic merge patch ----------------------------------------------------------------------

DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
SET_ORDER = "$setElementOrder/"
DELETE_PRIMITIVES = "$deleteFromPrimitiveList/"


def strategic_merge_patch(original: Any, patch: Any, schema: dict[str, Any]) -> Any:
    """Apply a strategic merge patch to an object, guided by its (Go type's) schema."""
    if not isinstance(patch, dict):
        raise MalformedPatch("a strategic merge patch must be a JSON object")
    from .gotypes import resolve  # the schemas of built-ins live there

    return _smp_map(
        copy.deepcopy(original) if isinstance(original, dict) else {},
        copy.deepcopy(patch),
        resolve(schema),
    )


def _patch_meta(schema: dict[str, Any], key: str) -> tuple[dict[str, Any], list[str], str]:
    """(the field's resolved schema, its patch strategies, its merge key)."""
    from .gotypes import resolve

    props = schema.get("properties") or {}
    raw = props.get(key)
    if raw is None and isinstance(schema.get("additionalProperties"), dict):
        raw = schema["additionalProperties"]
    raw = raw or {}
    strategies = [s for s in (raw.get("x-kubernetes-patch-strategy") or "").split(",") if s]
    return resolve(raw), strategies, raw.get("x-kubernetes-patch-merge-key") or ""


def _smp_map(original: dict[str, Any], patch: dict[str, Any], schema: dict[str, Any]) -> Any:
    if DIRECTIVE in patch:
        directive = patch.pop(DIRECTIVE)
        if directive == "replace":
            return patch
        if directive == "delete":
            return {}
        if directive != "merge":
            raise PatchError(f"Unknown patch type: {directive} in map: {patch}")
    _retain_keys(original, patch)
    _merge_ordered_lists(original, patch, schema)
    for key, value in list(patch.items()):
        delete_list = key.startswith(DELETE_PRIMITIVES)
        if delete_list:
            key = key[len(DELETE_PRIMITIVES) :]
        if value is None:
            original.pop(key, None)
            continue
        if key not in original:
            if not delete_list:
                original[key] = _discard_nulls(value)
            continue
        current = original[key]
        if type(current) is not type(value) or not isinstance(value, (dict, list)):
            if not delete_list:
                original[key] = _discard_nulls(value)
            continue
        sub, strategies, merge_key = _patch_meta(schema, key)
        if isinstance(value, dict):
            original[key] = value if "replace" in strategies else _smp_map(current, value, sub)
        elif "merge" in strategies:
            original[key] = _smp_list(current, value, sub, merge_key, delete_list=delete_list)
        elif not delete_list:
            original[key] = value
    return original


def _discard_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _discard_nulls(v) for k, v in value.items() if v is not None}
    return value


def _retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    if RETAIN_KEYS not in patch:
        return
    keep = patch.pop(RETAIN_KEYS)
    if not isinstance(keep, list):
        raise MalformedPatch("invalid patch: $retainKeys must be a list")
    for key, value in patch.items():
        if value is None or key.startswith((DELETE_PRIMITIVES, SET_ORDER)):
            continue
        if key not in keep:
            raise PatchError("doesn't match the format for retainKeys")
    for key in list(original):
        if key not in keep:
            del original[key]


def _identity(item: Any, merge_key: str) -> Any:
    if merge_key and isinstance(item, dict):
        return json.dumps(item.get(merge_key), sort_keys=True)
    return json.dumps(item, sort_keys=True)


def _merge_ordered_lists(
    original: dict[str, Any], patch: dict[str, Any], schema: dict[str, Any]
) -> None:
    """``$setElementOrder/<list>``: merge that list now, then order it as the directive says."""
    for directive in [k for k in patch if k.startswith(SET_ORDER)]:
        order = patch.pop(directive)
        key = directive[len(SET_ORDER) :]
        if not isinstance(order, list):
            raise MalformedPatch(f"invalid patch: {directive} must be a list")
        sub, strategies, merge_key = _patch_meta(schema, key)
        current = original.get(key) if isinstance(original.get(key), list) else []
        patch_list = patch.pop(key, None)
        if patch_list is None:
            merged = list(current)
        elif "merge" in strategies:
            merged = _smp_list(current, patch_list, sub, merge_key, delete_list=False)
        else:
            merged = patch_list
        wanted = {_identity(o, merge_key) for o in order}
        in_patch = [m for m in merged if _identity(m, merge_key) in wanted]
        server_only = [m for m in merged if _identity(m, merge_key) not in wanted]
        original[key] = _normalize_order(in_patch, server_only, order, current, merge_key)


def _smp_list(
    original: list[Any],
    patch: list[Any],
    schema: dict[str, Any],
    merge_key: str,
    *,
    delete_list: bool,
) -> list[Any]:
    from .gotypes import resolve

    if not original and not patch:
        return original
    sample = next(iter(original or patch))
    if not isinstance(sample, dict):
        if delete_list:
            doomed = {_identity(v, "") for v in patch}
            return [v for v in original if _identity(v, "") not in doomed]
        merged: list[Any] = []
        seen: set[str] = set()
        for value in [*original, *patch]:
            if _identity(value, "") not in seen:
                seen.add(_identity(value, ""))
                merged.append(value)
    else:
        if not merge_key:
            raise PatchError("cannot merge lists without merge key")
        items = resolve(schema.get("items") or {})
        original = list(original)
        plain: list[Any] = []
        replace = False
        for item in patch:
            directive = item.get(DIRECTIVE) if isinstance(item, dict) else None
            if directive is None:
                plain.append(item)
            elif directive == "delete":
                if merge_key not in item:
                    raise PatchError(
                        f"map: {item} does not contain declared merge key: {merge_key}"
                    )
                original = [
                    o
                    for o in original
                    if not (isinstance(o, dict) and o.get(merge_key) == item[merge_key])
                ]
            elif directive == "replace":
                replace = True
            elif directive == "merge":
                raise PatchError("merging lists cannot yet be specified in the patch")
            else:
                raise PatchError(f"Unknown patch type: {directive} in map: {item}")
        if replace:
            return plain
        merged = original
        for item in plain:
            if not isinstance(item, dict) or merge_key not in item:
                raise PatchError(f"map: {item} does not contain declared merge key: {merge_key}")
            index = next(
                (
                    i
                    for i, o in enumerate(merged)
                    if isinstance(o, dict) and merge_key in o and o[merge_key] == item[merge_key]
                ),
                None,
            )
            if index is None:
                merged.append(_discard_nulls(item))
            else:
                merged[index] = _smp_map(merged[index], item, items)
        patch = plain
    wanted = {_identity(p, merge_key) for p in patch}
    in_patch = [m for m in merged if _identity(m, merge_key) in wanted]
    server_only = [m for m in merged if _identity(m, merge_key) not in wanted]
    return _normalize_order(in_patch, server_only, patch, original, merge_key)


def _normalize_order(
    in_patch: list[Any],
    server_only: list[Any],
    patch_order: list[Any],
    server_order: list[Any],
    merge_key: str,
) -> list[Any]:
    """strategicpatch.normalizeElementOrder: the patch's order, server-only items in between."""

    def position(order: list[Any]) -> dict[str, int]:
        return {_identity(o, merge_key): i for i, o in reversed(list(enumerate(order)))}

    in_patch_at, server_at = position(patch_order), position(server_order)
    in_patch = sorted(in_patch, key=lambda m: in_patch_at.get(_identity(m, merge_key), 0))
    server_only = sorted(server_only, key=lambda m: server_at.get(_identity(m, merge_key), 0))
    result: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(in_patch):
        if i >= len(server_only):
            result.append(in_patch[j])
            j += 1
        elif j >= len(in_patch):
            result.append(server_only[i])
            i += 1
        else:
            left = server_at.get(_identity(server_only[i], merge_key))
            right = server_at.get(_identity(in_patch[j], merge_key))
            if left is not None and right is not None and left < right:
                result.append(server_only[i])
                i += 1
            else:
                result.append(in_patch[j])
                j += 1
    return result
