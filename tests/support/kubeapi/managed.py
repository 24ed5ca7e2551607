"""
Server-side apply and field ownership, after sigs.k8s.io/structured-merge-diff (SMD).

A field set is a Python ``set`` of paths; a path is a tuple of path elements, each one of
``("f", name)`` (a struct field or map key), ``("k", '{"name":"x"}')`` (an item of a
list-map, by its key fields), ``("v", '"x"')`` (an item of a set) or ``("i", 3)`` (an index,
in atomic contexts only). They serialize to ``FieldsV1`` as the apiserver does: a path that is
both a member and a prefix of other members carries ``".": {}``.

The schema of a node decides how it merges, as SMD's schema conversion does:

* an object with ``properties`` is a struct; ``x-kubernetes-map-type: atomic`` makes it a leaf;
* an object with ``additionalProperties`` (or none, or preserve-unknown-fields) is a granular
  map;
* a list has its ``x-kubernetes-list-type``; without one, built-ins fall back to their
  ``x-kubernetes-patch-strategy: merge`` (a list-map on ``x-kubernetes-patch-merge-key``, or a
  set of scalars), anything else is atomic;
* everything else (scalars, int-or-string, quantities) is a leaf.

What is simplified: update operations own the paths that changed (added or modified, by
``Compare``); the member markers of nodes created by an update are set for every new map,
list and item, and for new structs of custom resources only (Go structs of built-ins always
exist, so they never appear as new). The merge keeps the live order of list items and
appends new ones in the applied order. There is no version conversion of field sets.
"""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .gotypes import resolve, types_of
from .patches import json_equal

Path = tuple[tuple[str, Any], ...]
FieldSet = set[Path]
Schema = dict[str, Any]

# Metadata that structured-merge-diff never tracks (stripmeta.go).
UNTRACKED_METADATA = frozenset(
    {
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "generation",
        "managedFields",
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    }
)
# ... and, as field paths, with the root's type fields.
_STRIPPED: FieldSet = {
    (("f", "apiVersion"),),
    (("f", "kind"),),
    *((("f", "metadata"), ("f", name)) for name in UNTRACKED_METADATA),
}


def _time() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the shape of a node ------------------------------------------------------------------------


def node_kind(schema: Schema) -> str:
    """'struct' | 'map' | 'list' | 'leaf' | 'untyped' for a resolved schema."""
    if schema.get("x-kubernetes-int-or-string") or "oneOf" in schema and not types_of(schema):
        return "leaf"
    kinds = types_of(schema)
    if "object" in kinds or "properties" in schema:
        if schema.get("x-kubernetes-map-type") == "atomic":
            return "leaf"
        return "struct" if "properties" in schema else "map"
    if "array" in kinds:
        return "list"
    if not kinds:
        return "untyped"  # deduced from the value, like SMD's __untyped_deduced_
    return "leaf"


def list_type(schema: Schema) -> tuple[str, list[str]]:
    """('map', keys) | ('set', []) | ('atomic', [])."""
    declared = schema.get("x-kubernetes-list-type")
    if declared == "map":
        return "map", list(schema.get("x-kubernetes-list-map-keys") or [])
    if declared in ("set", "atomic"):
        return declared, []
    if "merge" in (schema.get("x-kubernetes-patch-strategy") or "").split(","):
        key = schema.get("x-kubernetes-patch-merge-key")
        return ("map", [key]) if key else ("set", [])
    return "atomic", []


def _field_schema(schema: Schema, kind: str, key: str) -> Schema | None:
    """The schema of a struct field or map value; None when undeclared."""
    if kind == "struct":
        props = schema.get("properties") or {}
        if key in props:
            return resolve(props[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return resolve(extra)
        if schema.get("x-kubernetes-preserve-unknown-fields") or extra is True:
            return {}
        return None
    extra = schema.get("additionalProperties")
    return resolve(extra) if isinstance(extra, dict) else {}


def _items(schema: Schema) -> Schema:
    items = schema.get("items")
    return resolve(items) if isinstance(items, dict) else {}


def item_element(value: Any, lt: str, keys: list[str], index: int) -> tuple[str, Any]:
    if lt == "map" and isinstance(value, dict):
        return ("k", json.dumps({k: value.get(k) for k in sorted(keys)}, separators=(",", ":")))
    if lt == "set":
        return ("v", json.dumps(value, separators=(",", ":"), sort_keys=True))
    return ("i", index)


def path_string(path: Path) -> str:
    """SMD's Path.String(): .spec.versions[name="v1"].schema, [=value], [0]."""
    out = []
    for kind, value in path:
        if kind == "f":
            out.append(f".{value}")
        elif kind == "k":
            fields = json.loads(value)
            out.append(
                "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(fields.items())) + "]"
            )
        elif kind == "v":
            out.append(f"[={value}]")
        else:
            out.append(f"[{value}]")
    return "".join(out)


# --- typed checks of an applied configuration ---------------------------------------------------


def typed_errors(value: Any, schema: Schema) -> list[str]:
    """What SMD's ObjectToTyped rejects: undeclared fields, wrong scalar types, bad keys."""
    errors: list[str] = []
    _check(value, resolve(schema), (), errors)
    return errors


def _check(value: Any, schema: Schema, path: Path, errors: list[str]) -> None:
    if value is None:
        return
    kind = node_kind(schema)
    where = path_string(path)
    if kind in ("struct", "map"):
        if not isinstance(value, dict):
            errors.append(f"{where}: expected map, got {_go_unstructured(value)}")
            return
        for key, item in value.items():
            sub = _field_schema(schema, kind, key)
            if sub is None:
                errors.append(f"{where}.{key}: field not declared in schema")
                continue
            _check(item, sub, (*path, ("f", key)), errors)
    elif kind == "list":
        if not isinstance(value, list):
            errors.append(f"{where}: expected list, got {_go_unstructured(value)}")
            return
        lt, keys = list_type(schema)
        items = _items(schema)
        seen: set[Any] = set()
        for i, item in enumerate(value):
            if lt == "map":
                if not isinstance(item, dict):
                    errors.append(f"{where}: element {i}: expected map, got {item!r}")
                    continue
                missing = [k for k in keys if k not in item]
                if missing and not all(k in (items.get("properties") or {}) for k in missing):
                    continue
                if missing:
                    errors.append(
                        f"{where}: element {i}: associative list with keys has an element "
                        f'that omits key field "{missing[0]}" (and doesn\'t have default value)'
                    )
                    continue
            element = item_element(item, lt, keys, i)
            if lt in ("map", "set"):
                if element in seen:
                    errors.append(
                        f"{where}: duplicate entries for key {path_string((element,))}"
                        if lt == "map"
                        else f"{where}: duplicate entries for key {path_string((element,))}"
                    )
                seen.add(element)
            _check(item, items, (*path, element), errors)
    elif kind == "leaf":
        kinds = types_of(schema)
        if schema.get("x-kubernetes-int-or-string") or "oneOf" in schema:
            return
        if kinds & {"integer", "number"} and (
            isinstance(value, bool) or not isinstance(value, (int, float))
        ):
            errors.append(f"{where}: expected numeric (int or float), got {_go_type_name(value)}")
        elif "string" in kinds and not isinstance(value, str):
            errors.append(f"{where}: expected string, got {_go_unstructured(value)}")
        elif "boolean" in kinds and not isinstance(value, bool):
            errors.append(f"{where}: expected boolean, got &{{{value}}}")


def _go_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return "int64" if isinstance(value, int) else "float64"


def _go_unstructured(value: Any) -> str:
    """Go's %#v of SMD's value wrapper, as it appears in its messages."""
    if isinstance(value, bool):
        rendered = "true" if value else "false"
    elif isinstance(value, str):
        rendered = json.dumps(value)
    elif isinstance(value, (int, float)):
        rendered = json.dumps(value)
    else:
        rendered = _go_type_name(value) + "{...}"
    return f"&value.valueUnstructured{{Value:{rendered}}}"


# --- field sets from values ---------------------------------------------------------------------


def to_field_set(value: Any, schema: Schema) -> FieldSet:
    """SMD's ToFieldSet: the leaves, the list items, the empty or null map entries."""
    result: FieldSet = set()
    _to_set(value, resolve(schema), (), result)
    return result - _STRIPPED


def _to_set(value: Any, schema: Schema, path: Path, out: FieldSet) -> None:
    kind = node_kind(schema)
    if kind == "untyped":
        kind = "map" if isinstance(value, dict) else "leaf"
    if kind == "leaf" or value is None:
        if path:
            out.add(path)
        return
    if kind in ("struct", "map") and isinstance(value, dict):
        for key, item in value.items():
            sub = _field_schema(schema, kind, key)
            child = (*path, ("f", key))
            _to_set(item, sub or {}, child, out)
            declared = kind == "struct" and key in (schema.get("properties") or {})
            if item is None or (isinstance(item, dict) and not item) or not declared:
                out.add(child)
        return
    if kind == "list" and isinstance(value, list):
        lt, keys = list_type(schema)
        if lt == "atomic":
            out.add(path)
            return
        items = _items(schema)
        for i, item in enumerate(value):
            child = (*path, item_element(item, lt, keys, i))
            _to_set(item, items, child, out)
            out.add(child)
        return
    if path:
        out.add(path)


def _nodes(
    value: Any, schema: Schema, path: Path, out: dict[Path, tuple[bool, Any]], custom: bool
) -> None:
    """Every node of a value: path -> (is_leaf, value); for Compare."""
    kind = node_kind(schema)
    if kind == "untyped":
        kind = "map" if isinstance(value, dict) else "leaf"
    if kind == "leaf" or value is None or (kind == "list" and list_type(schema)[0] == "atomic"):
        out[path] = (True, value)
        return
    if kind in ("struct", "map") and isinstance(value, dict):
        if not value:
            out[path] = (True, value)  # an empty map or struct is a value of its own
            return
        if path and (kind == "map" or custom):
            out[path] = (False, None)
        for key, item in value.items():
            sub = _field_schema(schema, kind, key)
            _nodes(item, sub or {}, (*path, ("f", key)), out, custom)
        return
    if kind == "list" and isinstance(value, list):
        lt, keys = list_type(schema)
        out[path] = (False, None)
        items = _items(schema)
        for i, item in enumerate(value):
            child = (*path, item_element(item, lt, keys, i))
            _nodes(item, items, child, out, custom)
            out.setdefault(child, (False, None))  # every list item is a member
        return
    out[path] = (True, value)


@dataclass
class Comparison:
    added: FieldSet = field(default_factory=set)
    modified: FieldSet = field(default_factory=set)
    removed: FieldSet = field(default_factory=set)


def compare(old: Any, new: Any, schema: Schema, *, custom: bool) -> Comparison:
    before: dict[Path, tuple[bool, Any]] = {}
    after: dict[Path, tuple[bool, Any]] = {}
    root = resolve(schema)
    if old is not None:
        _nodes(old, root, (), before, custom)
    _nodes(new, root, (), after, custom)
    before.pop((), None)
    after.pop((), None)
    result = Comparison(
        added=set(after) - set(before),
        removed=set(before) - set(after),
        modified={
            p
            for p in set(before) & set(after)
            if (before[p][0] or after[p][0])
            and (before[p][0] != after[p][0] or not json_equal(before[p][1], after[p][1]))
        },
    )
    for fieldset in (result.added, result.modified, result.removed):
        fieldset -= _STRIPPED
    return result


# --- FieldsV1 -----------------------------------------------------------------------------------


def _element_key(element: tuple[str, Any]) -> str:
    kind, value = element
    return f"{kind}:{value}"


def _prefixes(fieldset: Iterable[Path]) -> set[Path]:
    """Every proper prefix of every path: what has children in the set."""
    return {path[:i] for path in fieldset for i in range(len(path))}


def encode_fields(fieldset: FieldSet) -> dict[str, Any]:
    trie: dict[str, Any] = {}
    parents = _prefixes(fieldset)
    for path in sorted(fieldset, key=lambda p: [_element_key(e) for e in p]):
        node = trie
        for element in path:
            node = node.setdefault(_element_key(element), {})
        if path in parents:
            node["."] = {}
    return trie


def _parse_element(key: str) -> tuple[str, Any]:
    kind, _, value = key.partition(":")
    if kind == "i":
        return ("i", int(value))
    return (kind, value)


def decode_fields(fields: Any) -> FieldSet:
    result: FieldSet = set()

    def walk(node: Any, path: Path) -> None:
        if not isinstance(node, dict):
            return
        if not node and path:
            result.add(path)
        for key, child in node.items():
            if key == ".":
                result.add(path)
            else:
                walk(child, (*path, _parse_element(key)))

    walk(fields, ())
    result.discard(())
    return result


# --- managers -----------------------------------------------------------------------------------


@dataclass
class Manager:
    manager: str
    operation: str  # Apply | Update
    api_version: str
    fields: FieldSet
    time: str
    subresource: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.manager, self.operation, self.subresource)

    def describe(self) -> str:
        """How conflicts name the manager (conflict.go printManager; no time in identities)."""
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}"
        return text


def decode_managers(entries: Any) -> list[Manager]:
    managers = []
    for entry in entries or []:
        if not isinstance(entry, dict) or not entry.get("manager") and not entry.get("fieldsV1"):
            continue
        managers.append(
            Manager(
                manager=str(entry.get("manager", "")),
                operation=str(entry.get("operation", "Update")),
                api_version=str(entry.get("apiVersion", "")),
                fields=decode_fields(entry.get("fieldsV1") or {}),
                time=str(entry.get("time") or _time()),
                subresource=str(entry.get("subresource") or ""),
            )
        )
    return managers


def encode_managers(managers: Iterable[Manager]) -> list[dict[str, Any]]:
    ordered = sorted(
        (m for m in managers if m.fields),
        key=lambda m: (m.operation, m.time, m.manager, m.api_version, m.subresource),
    )
    entries = []
    for m in ordered:
        entry: dict[str, Any] = {
            "manager": m.manager,
            "operation": m.operation,
            "apiVersion": m.api_version,
            "time": m.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": encode_fields(m.fields),
        }
        if m.subresource:
            entry["subresource"] = m.subresource
        entries.append(entry)
    return entries


class ApplyConflict(Exception):
    def __init__(self, conflicts: list[tuple[Manager, Path]]) -> None:
        self.conflicts = conflicts
        super().__init__(self.message)

    @property
    def message(self) -> str:
        if len(self.conflicts) == 1:
            manager, path = self.conflicts[0]
            return (
                f"Apply failed with 1 conflict: conflict with {manager.describe()}: "
                f"{path_string(path)}"
            )
        by_manager: dict[str, list[Path]] = {}
        for manager, path in self.conflicts:
            by_manager.setdefault(manager.describe(), []).append(path)
        lines = []
        for name in sorted(by_manager):
            lines.append(f"conflicts with {name}:")
            lines.extend(f"- {path_string(p)}" for p in by_manager[name])
        return f"Apply failed with {len(self.conflicts)} conflicts: " + "\n".join(lines)

    @property
    def causes(self) -> list[dict[str, str]]:
        return [
            {
                "reason": "FieldManagerConflict",
                "message": f"conflict with {manager.describe()}",
                "field": path_string(path),
            }
            for manager, path in self.conflicts
        ]


def _leaves(fieldset: FieldSet) -> list[Path]:
    parents = _prefixes(fieldset)
    ordered = sorted(fieldset, key=lambda p: [_element_key(e) for e in p])
    return [p for p in ordered if p not in parents]


def _update_others(
    managers: list[Manager],
    me: tuple[str, str, str],
    comparison: Comparison,
    *,
    force: bool,
) -> None:
    conflicts: list[tuple[Manager, Path]] = []
    changed = comparison.modified | comparison.added
    for m in managers:
        if m.key == me:
            continue
        clash = m.fields & changed
        if clash:
            conflicts.extend((m, p) for p in _leaves(clash))
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    for m in managers:
        if m.key != me:
            m.fields = m.fields - changed - comparison.removed


def record_update(
    managers: list[Manager],
    old: Any,
    new: Any,
    schema: Schema,
    *,
    manager: str,
    api_version: str,
    subresource: str = "",
    custom: bool,
) -> list[Manager]:
    """Ownership after an update: the writer takes what it changed (SMD Updater.Update)."""
    managers = [copy.copy(m) for m in managers]
    comparison = compare(old, new, schema, custom=custom)
    key = (manager, "Update", subresource)
    _update_others(managers, key, comparison, force=True)
    mine = next((m for m in managers if m.key == key), None)
    changed = comparison.modified | comparison.added
    if mine is None:
        if not changed:
            return managers
        mine = Manager(manager, "Update", api_version, set(), _time(), subresource)
        managers.append(mine)
    before = set(mine.fields)
    mine.fields = (mine.fields - comparison.removed) | changed
    if mine.fields != before:
        mine.time, mine.api_version = _time(), api_version
    return [m for m in managers if m.fields]


# --- merging ------------------------------------------------------------------------------------


def merge(live: Any, config: Any, schema: Schema) -> Any:
    """SMD's live.Merge(config): the config's values win, structure merges by the schema."""
    return _merge(live, config, resolve(schema))


def _merge(live: Any, config: Any, schema: Schema) -> Any:
    kind = node_kind(schema)
    if kind == "untyped":
        kind = "map" if isinstance(live, dict) and isinstance(config, dict) else "leaf"
    if config is None:
        return None
    if kind in ("struct", "map") and isinstance(live, dict) and isinstance(config, dict):
        result = dict(live)
        for key, item in config.items():
            sub = _field_schema(schema, kind, key) or {}
            result[key] = _merge(live.get(key), item, sub) if key in live else copy.deepcopy(item)
        return result
    if kind == "list" and isinstance(live, list) and isinstance(config, list):
        lt, keys = list_type(schema)
        if lt == "atomic":
            return copy.deepcopy(config)
        items = _items(schema)
        incoming = {item_element(c, lt, keys, i): c for i, c in enumerate(config)}
        result = []
        seen = set()
        for i, item in enumerate(live):
            element = item_element(item, lt, keys, i)
            if element in incoming:
                result.append(_merge(item, incoming[element], items))
            else:
                result.append(item)
            seen.add(element)
        result.extend(copy.deepcopy(c) for e, c in incoming.items() if e not in seen)
        return result
    return copy.deepcopy(config)


def remove_paths(value: Any, paths: Iterable[Path], schema: Schema) -> Any:
    """Remove the members at these paths (shallowest first: an item goes with its fields)."""
    result = copy.deepcopy(value)
    root = resolve(schema)
    for path in sorted(paths, key=len):
        _remove(result, root, path)
    return result


def _remove(node: Any, schema: Schema, path: Path) -> None:
    # The containers walked through, to drop the ones the removal leaves empty: SMD's
    # removingWalker returns nothing for a map or list left without members, so the parent
    # holds null there, which decoding (or a CRD's pruning) then drops.
    trail: list[tuple[Any, Any]] = []
    for depth, (kind, key) in enumerate(path):
        last = depth == len(path) - 1
        node_type = node_kind(schema)
        if isinstance(node, dict) and kind == "f":
            if key not in node:
                return
            if last:
                del node[key]
                _drop_emptied(trail)
                return
            trail.append((node, key))
            schema = (
                _field_schema(schema, node_type if node_type != "untyped" else "map", key) or {}
            )
            node = node[key]
        elif isinstance(node, list):
            lt, keys = list_type(schema)
            index = next(
                (
                    i
                    for i, item in enumerate(node)
                    if item_element(item, lt, keys, i) == (kind, key)
                ),
                None,
            )
            if index is None:
                return
            if last:
                del node[index]
                _drop_emptied(trail)
                return
            trail.append((node, index))
            schema = _items(schema)
            node = node[index]
        else:
            return


def _drop_emptied(trail: list[tuple[Any, Any]]) -> None:
    for container, key in reversed(trail):
        child = container[key]
        if not isinstance(child, (dict, list)) or child:
            return
        del container[key]


@dataclass
class ApplyResult:
    obj: dict[str, Any]
    managers: list[Manager]


def apply(
    live: dict[str, Any] | None,
    config: dict[str, Any],
    schema: Schema,
    managers: list[Manager],
    *,
    manager: str,
    api_version: str,
    force: bool,
    subresource: str = "",
    custom: bool,
    strip: Callable[[dict[str, Any]], dict[str, Any]] = lambda o: o,
) -> ApplyResult:
    """SMD's Updater.Apply: merge, drop what this manager no longer applies, check conflicts."""
    managers = [copy.copy(m) for m in managers]
    key = (manager, "Apply", subresource)
    base = strip(copy.deepcopy(live)) if live is not None else {}
    merged = merge(base, config, schema)
    new_set = to_field_set(config, schema)
    previous = next((m for m in managers if m.key == key), None)
    if previous is not None:
        others: FieldSet = set().union(*(m.fields for m in managers if m.key != key))
        dropped = previous.fields - new_set
        removable = [p for p in dropped if not any(o[: len(p)] == p for o in others | new_set)]
        merged = remove_paths(merged, removable, schema)
    comparison = compare(base if live is not None else None, merged, schema, custom=custom)
    _update_others(managers, key, comparison, force=force)
    if previous is None:
        previous = Manager(manager, "Apply", api_version, set(), _time(), subresource)
        managers.append(previous)
    if previous.fields != new_set or previous.api_version != api_version:
        previous.time = _time()
    previous.fields, previous.api_version = new_set, api_version
    return ApplyResult(merged, [m for m in managers if m.fields])
