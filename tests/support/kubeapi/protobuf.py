"""
Kubernetes protobuf request bodies, for the few kinds that Go clients send that way.

client-go's typed clients (kubectl create namespace/secret/configmap, helm's release storage
in Secrets, helm's deletions with DeleteOptions) encode bodies as
``application/vnd.kubernetes.protobuf``: the magic ``k8s\\0``, then a ``runtime.Unknown``
wrapping the object's generated protobuf. The wire format is generic; the field numbers come
from the upstream ``generated.proto`` files and are tabled here for ObjectMeta, Namespace,
Secret, ConfigMap and DeleteOptions only. Any other kind is answered 415 (the server replies
in JSON, which those clients accept).
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

MAGIC = b"k8s\x00"
_GO_ZERO_TIME = -62135596800  # 0001-01-01T00:00:00Z in Unix seconds

# field number -> (json name, kind); kinds: str, bytes, int, bool, time, map-str, map-bytes,
# a nested table's name, or "repeated:<kind>".
_TABLES: dict[str, dict[int, tuple[str, str]]] = {
    "Unknown": {1: ("typeMeta", "TypeMeta"), 2: ("raw", "bytes")},
    "TypeMeta": {1: ("apiVersion", "str"), 2: ("kind", "str")},
    "ObjectMeta": {
        1: ("name", "str"),
        2: ("generateName", "str"),
        3: ("namespace", "str"),
        5: ("uid", "str"),
        6: ("resourceVersion", "str"),
        7: ("generation", "int"),
        8: ("creationTimestamp", "time"),
        11: ("labels", "map-str"),
        12: ("annotations", "map-str"),
        13: ("ownerReferences", "repeated:OwnerReference"),
        14: ("finalizers", "repeated:str"),
    },
    "OwnerReference": {
        1: ("kind", "str"),
        3: ("name", "str"),
        4: ("uid", "str"),
        5: ("apiVersion", "str"),
        6: ("controller", "bool"),
        7: ("blockOwnerDeletion", "bool"),
    },
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec")},
    "NamespaceSpec": {1: ("finalizers", "repeated:str")},
    "Secret": {
        1: ("metadata", "ObjectMeta"),
        2: ("data", "map-bytes"),
        3: ("type", "str"),
        4: ("stringData", "map-str"),
        5: ("immutable", "bool"),
    },
    "ConfigMap": {
        1: ("metadata", "ObjectMeta"),
        2: ("data", "map-str"),
        3: ("binaryData", "map-bytes"),
        4: ("immutable", "bool"),
    },
    "DeleteOptions": {
        1: ("gracePeriodSeconds", "int"),
        2: ("preconditions", "Preconditions"),
        3: ("orphanDependents", "bool"),
        4: ("propagationPolicy", "str"),
        5: ("dryRun", "repeated:str"),
    },
    "Preconditions": {1: ("uid", "str"), 2: ("resourceVersion", "str")},
    "Time": {1: ("seconds", "int"), 2: ("nanos", "int")},
}


class UnsupportedKind(Exception):
    """A protobuf body of a kind that is not tabled here."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, Any]]:
    """(field number, raw value) pairs: ints for varints, bytes for length-delimited."""
    out: list[tuple[int, Any]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out


def _scalar(kind: str, raw: Any) -> Any:
    if kind == "str":
        return raw.decode("utf-8")
    if kind == "bytes":
        return raw
    if kind == "int":
        return raw - (1 << 64) if raw >= 1 << 63 else raw
    if kind == "bool":
        return bool(raw)
    if kind == "time":
        seconds = _scalar("int", dict(_fields(raw)).get(1, 0))
        if seconds <= _GO_ZERO_TIME:
            return None  # Go's zero time.Time: unset
        moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return _message(kind, raw)


def _message(table: str, data: bytes) -> dict[str, Any]:
    fields = _TABLES[table]
    result: dict[str, Any] = {}
    for number, raw in _fields(data):
        if number not in fields:
            continue
        name, kind = fields[number]
        if kind.startswith("repeated:"):
            result.setdefault(name, []).append(_scalar(kind.split(":", 1)[1], raw))
        elif kind.startswith("map-"):
            entry = dict(_fields(raw))
            key = entry.get(1, b"").decode("utf-8")
            value = entry.get(2, b"")
            result.setdefault(name, {})[key] = (
                base64.b64encode(value).decode() if kind == "map-bytes" else value.decode("utf-8")
            )
        else:
            value = _scalar(kind, raw)
            if value not in ("", 0, False, None):  # Go's JSON omits empty (omitempty) fields
                result[name] = value
    return result


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf-encoded object as its JSON form; raises UnsupportedKind or ValueError."""
    if not body.startswith(MAGIC):
        raise ValueError("the protobuf body does not start with the Kubernetes magic number")
    unknown = _message("Unknown", body[len(MAGIC) :])
    type_meta = unknown.get("typeMeta") or {}
    kind = type_meta.get("kind", "")
    if kind not in ("Namespace", "Secret", "ConfigMap", "DeleteOptions"):
        raise UnsupportedKind(kind)
    obj = _message(kind, unknown.get("raw", b""))
    return {"apiVersion": type_meta.get("apiVersion", "v1"), "kind": kind, **obj}
