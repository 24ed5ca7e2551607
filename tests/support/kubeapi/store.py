"""
The in-memory storage with the apiserver's object semantics.

Everything here is synchronous and guarded by one re-entrant lock, so it can be
called from the server's event loop (HTTP handlers) and from any other thread
(tests) alike. Watchers live on the server's loop; the store only appends to
their queues and wakes them thread-safely.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import datetime
import json
import random
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from eval_api.quantity import parse_quantity

from . import admission, gotypes, managed
from . import errors as err
from .crds import resource_type_from_crd
from .errors import APIError, FieldError
from .patches import (
    MalformedPatch,
    PatchError,
    json_equal,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from .resources import ResourceType, builtin_types, storage_request
from .schema import MISSING, apply_defaults, prune, validate

CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACE_KEY = ("", "namespaces")
PVC_KEY = ("", "persistentvolumeclaims")
STORAGE_CLASS_KEY = ("storage.k8s.io", "storageclasses")
OBJECT_META = {
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "selfLink",
}
SYSTEM_META = (
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "name",
    "namespace",
)
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # no vowels: no accidental words in names

Matcher = Callable[[dict[str, Any]], bool]


@dataclass
class WriteOptions:
    """How an HTTP write asks to be handled (the in-process accessors pass none).

    With options, a write decodes the body as the apiserver would (unknown fields dropped and
    reported per ``field_validation``, type errors rejected) and records field ownership in
    ``metadata.managedFields``; ``dry_run`` admits everything and stores nothing.
    """

    field_validation: str = "Warn"  # Strict | Warn | Ignore
    dry_run: bool = False
    field_manager: str = "unknown"
    force: bool = False
    warnings: list[str] = dataclasses.field(default_factory=list)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    key: tuple[str, str]
    obj: dict[str, Any]  # the new state; for DELETED, the last state. Never mutated.
    old: dict[str, Any] | None  # the previous state, for selectors' transitions


class Watcher:
    """One watch-stream's queue. Filled by the store (any thread), drained on the server loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        matches: Matcher,
    ) -> None:
        self.loop, self.rt, self.version = loop, rt, version
        self.namespace, self.matches = namespace, matches
        self.pending: deque[WatchEvent] = deque()
        self.wakeup = asyncio.Event()
        self.closed = False
        self.last_rv = 0  # the newest resource version this watcher has been given

    def _wake(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.wakeup.set)
        except RuntimeError:  # the loop is closed: nobody is listening anymore
            pass

    def push(self, event: WatchEvent) -> None:
        self.pending.append(event)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def translate(self, event: WatchEvent) -> dict[str, Any] | None:
        """The event as this watcher sees it: selectors turn modifications into adds/deletes."""
        if event.key != self.rt.key:
            return None
        if self.namespace is not None and event.obj["metadata"].get("namespace") != self.namespace:
            return None
        now_matches = self.matches(event.obj)
        was_matching = event.old is not None and self.matches(event.old)
        kind = event.type
        if kind == "MODIFIED" and now_matches != was_matching:
            kind = "ADDED" if now_matches else "DELETED"  # entered or left the selection
        elif not now_matches:
            return None
        return {"type": kind, "object": render(self.rt, event.obj, self.version, deep=False)}


def render(
    rt: ResourceType, obj: dict[str, Any], version: str | None = None, *, deep: bool = True
) -> dict[str, Any]:
    """The object as served in the requested version (no conversion, as with ``strategy: None``)."""
    body = copy.deepcopy(obj) if deep else obj
    return {
        "apiVersion": rt.api_version(version),
        "kind": rt.kind,
        **{k: v for k, v in body.items() if k not in ("apiVersion", "kind")},
    }


def bookmark(
    rt: ResourceType, version: str, rv: int, *, initial_end: bool = False
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"resourceVersion": str(rv)}
    if initial_end:
        metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {
        "type": "BOOKMARK",
        "object": {"kind": rt.kind, "apiVersion": rt.api_version(version), "metadata": metadata},
    }


def _spec_like(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """What counts for metadata.generation: all but metadata (and status, if a subresource)."""
    skipped = {"metadata", "apiVersion", "kind"} | (
        {"status"} if "status" in rt.subresources else set()
    )
    return {k: v for k, v in obj.items() if k not in skipped}


def _without_rv(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}}


def _without_managed(obj: dict[str, Any]) -> dict[str, Any]:
    skipped = ("resourceVersion", "managedFields")
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k not in skipped}}


def _strip_for_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """What field ownership is computed on: no type fields, no server-owned metadata."""
    meta = obj.get("metadata") or {}
    result = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    kept = {k: v for k, v in meta.items() if k not in managed.UNTRACKED_METADATA}
    if kept:
        result["metadata"] = kept
    return result


def _reset_fields(
    rt: ResourceType, managers: list[managed.Manager], subresource: str | None
) -> None:
    """The status subresource owns only the status; the main resource never owns it."""
    if "status" not in rt.subresources:
        return
    status = ("f", "status")
    for m in managers:
        if m.subresource == "status":
            m.fields = {p for p in m.fields if p[:1] == (status,)}
        else:
            m.fields = {p for p in m.fields if p[:1] != (status,)}


def _validate_metadata(rt: ResourceType, meta: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    name = meta.get("name") or ""
    pattern, limit, what = (
        (_LABEL, 63, "RFC 1123 label")
        if rt.key == NAMESPACE_KEY
        else (_SUBDOMAIN, 253, "RFC 1123 subdomain")
    )
    if not pattern.match(name) or len(name) > limit:
        errors.append(
            FieldError(
                "metadata.name",
                "Invalid",
                name,
                f"a lowercase {what} must consist of lower case alphanumeric "
                f"characters, '-' or '.', and must start and end with an "
                f"alphanumeric character",
            )
        )
    for field in ("labels", "annotations"):
        mapping = meta.get(field)
        if mapping is None:
            continue
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            errors.append(
                FieldError(
                    f"metadata.{field}", "Invalid", mapping, "must be a map of strings to strings"
                )
            )
            continue
        if field == "annotations":
            total = sum(len(k) + len(v) for k, v in mapping.items())
            if total > 256 * 1024:  # ValidateAnnotationsSize: what kubectl's huge CRDs hit
                errors.append(
                    FieldError(
                        "metadata.annotations", "TooLong", None, "must have at most 262144 bytes"
                    )
                )
        if field == "labels":
            for key, value in mapping.items():
                if len(value) > 63 or not _LABEL_VALUE.match(value):
                    errors.append(
                        FieldError(
                            "metadata.labels",
                            "Invalid",
                            value,
                            "a valid label must be an empty string or consist of "
                            "alphanumeric characters, '-', '_' or '.', and must "
                            "start and end with an alphanumeric character",
                        )
                    )
                short = key.rsplit("/", 1)[-1]
                if not short or len(short) > 63 or not _LABEL_VALUE.match(short):
                    errors.append(
                        FieldError(
                            "metadata.labels",
                            "Invalid",
                            key,
                            "name part must consist of alphanumeric characters, '-', '_' or '.'",
                        )
                    )
    finalizers = meta.get("finalizers")
    if finalizers is not None and (
        not isinstance(finalizers, list) or not all(isinstance(f, str) and f for f in finalizers)
    ):
        errors.append(
            FieldError(
                "metadata.finalizers", "Invalid", finalizers, "must be a list of non-empty strings"
            )
        )
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        for key in ("apiVersion", "kind", "name", "uid"):
            if not isinstance(ref, dict) or not ref.get(key):
                errors.append(FieldError(f"metadata.ownerReferences[{i}].{key}", "Required"))
    return errors


class Store:
    def __init__(self, *, history_limit: int = 10000) -> None:
        self.lock = threading.RLock()
        self.rv = 0  # the global resource version: one counter for all objects, like etcd's
        self.types: dict[tuple[str, str], ResourceType] = {}
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self.uids: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {}
        self.history: deque[WatchEvent] = deque()
        self.history_limit = history_limit
        self.floor = 0  # events with rv <= floor are forgotten (like etcd compaction)
        self.watchers: set[Watcher] = set()
        self.deletion_policies: dict[str, str] = {}  # uid -> policy, for finalizer-held deletions
        for rt in builtin_types():
            self.register(rt)

    # --- resource types -------------------------------------------------------------------------

    def register(self, rt: ResourceType) -> None:
        with self.lock:
            self.types[rt.key] = rt
            self.objects.setdefault(rt.key, {})

    def resolve(self, group: str, version: str, plural: str) -> ResourceType:
        with self.lock:
            rt = self.types.get((group, plural))
            if rt is None or version not in rt.versions:
                raise err.not_found_path()
            return rt

    def resolve_kind(self, api_version: str, kind: str) -> tuple[ResourceType, str]:
        group, _, version = api_version.rpartition("/")
        with self.lock:
            for rt in self.types.values():
                if rt.group == group and rt.kind == kind and version in rt.versions:
                    return rt, version
        raise err.not_found_path()

    def all_types(self) -> list[ResourceType]:
        with self.lock:
            return list(self.types.values())

    # --- events ---------------------------------------------------------------------------------

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _emit(
        self, kind: str, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        event = WatchEvent(
            int(obj["metadata"]["resourceVersion"]),
            kind,
            rt.key,
            copy.deepcopy(obj),
            copy.deepcopy(old),
        )
        self.history.append(event)
        while len(self.history) > self.history_limit:
            self.floor = self.history.popleft().rv
        for watcher in self.watchers:
            if watcher.rt.key == rt.key:
                watcher.push(event)

    def compact(self) -> None:
        """Forget all history, like etcd compaction: older resource versions become 410 Gone."""
        with self.lock:
            self.floor = self.rv
            self.history.clear()

    # --- reading --------------------------------------------------------------------------------

    def _stored(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        ns = (namespace or "") if rt.namespaced else ""
        obj = self.objects[rt.key].get((ns, name))
        if obj is None:
            raise err.not_found(rt, name)
        return obj

    def exists(self, rt: ResourceType, namespace: str | None, name: str) -> bool:
        ns = (namespace or "") if rt.namespaced else ""
        with self.lock:
            return (ns, name) in self.objects[rt.key]

    def get(
        self, rt: ResourceType, version: str, namespace: str | None, name: str
    ) -> dict[str, Any]:
        with self.lock:
            return render(rt, self._stored(rt, namespace, name), version)

    def _select(
        self, rt: ResourceType, namespace: str | None, matches: Matcher
    ) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
        for key in sorted(self.objects.get(rt.key, {})):
            obj = self.objects[rt.key][key]
            if (namespace is None or key[0] == namespace) and matches(obj):
                yield key, obj

    def list(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        matches: Matcher,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> dict[str, Any]:
        with self.lock:
            list_rv, after = self.rv, None
            if continue_token:
                try:
                    state = json.loads(base64.urlsafe_b64decode(continue_token))
                    list_rv, after = int(state["rv"]), tuple(state["start"])
                except (ValueError, KeyError, TypeError) as e:
                    raise err.bad_request(f"continue key is not valid: {e}") from None
                if list_rv < self.floor:
                    raise err.expired(
                        "The provided continue parameter is too old to display a "
                        "consistent list result."
                    )
            # Continuations see the current state after the last key, reported with the first
            # chunk's version: the real apiserver serves a consistent snapshot instead.
            selected = [
                (key, obj)
                for key, obj in self._select(rt, namespace, matches)
                if after is None or key > after
            ]
            metadata: dict[str, Any] = {"resourceVersion": str(list_rv)}
            if limit and len(selected) > limit:
                selected = selected[:limit]
                token = {"rv": list_rv, "start": list(selected[-1][0])}
                metadata["continue"] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
                metadata["remainingItemCount"] = sum(
                    1 for key, _ in self._select(rt, namespace, matches) if key > selected[-1][0]
                )
            return {
                "kind": rt.list_kind,
                "apiVersion": rt.api_version(version),
                "metadata": metadata,
                "items": [render(rt, obj, version) for _, obj in selected],
            }

    # --- writing --------------------------------------------------------------------------------

    def _prepare_body(self, rt: ResourceType, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise err.bad_request("the body of the request must be a JSON object")
        obj = copy.deepcopy(body)
        if obj.get("kind") not in (None, rt.kind):
            raise err.bad_request(
                f"the kind {obj['kind']!r} does not match the expected {rt.kind!r}"
            )
        if obj.get("apiVersion") not in (None, *(rt.api_version(v) for v in rt.versions)):
            raise err.bad_request(
                f"the API version {obj['apiVersion']!r} does not match "
                f"the expected {rt.api_version()!r}"
            )
        if not isinstance(obj.setdefault("metadata", {}), dict):
            raise err.bad_request("metadata must be an object")
        obj["apiVersion"], obj["kind"] = rt.api_version(), rt.kind  # stored as the storage version
        return obj

    def _decode(
        self,
        rt: ResourceType,
        version: str,
        body: Any,
        opts: WriteOptions,
        *,
        patched: bool = False,
    ) -> Any:
        """The body as the apiserver's decoder leaves it: typed, unknown fields dropped.

        Unknown fields fail a Strict request (400), become ``Warning`` headers in Warn mode,
        and are dropped silently with Ignore. Type errors fail whatever the mode.
        """
        if not isinstance(body, dict):
            return body
        unknown: list[str] = []
        if rt.custom:
            decoded = gotypes.decode_meta(body.get("metadata") or {})
            error = decoded.error
            unknown.extend(decoded.unknown)
            schema = rt.schemas.get(version)
            result = prune(body, schema, root=True, dropped=unknown) if schema else dict(body)
            if "metadata" in body and isinstance(body["metadata"], dict):
                result["metadata"] = decoded.obj
        else:
            definition = gotypes.kind_definition(rt.group, version, rt.kind)
            if definition is None:
                return body
            decoded = gotypes.decode(body, definition)
            error, result = decoded.error, decoded.obj
            unknown.extend(decoded.unknown)
        if error is not None:
            if patched:
                raise APIError(
                    422,
                    "Invalid",
                    f' "" is invalid: patch: Invalid value: '
                    f"{json.dumps(json.dumps(body, separators=(',', ':')))}: {error}",
                )
            raise err.bad_request(
                f'{rt.kind} in version "{version}" cannot be handled as a {rt.kind}: {error}'
            )
        if unknown and opts.field_validation != "Ignore":
            if patched:
                unknown.sort()
            texts = [f"unknown field {json.dumps(path)}" for path in unknown]
            if opts.field_validation == "Strict":
                message = "strict decoding error: " + ", ".join(texts)
                if not patched:
                    message = (
                        f'{rt.kind} in version "{version}" cannot be handled as a '
                        f"{rt.kind}: {message}"
                    )
                raise err.bad_request(message)
            opts.warnings.extend(texts)
        return result

    def _typed_schema(self, rt: ResourceType, version: str) -> dict[str, Any]:
        """The schema that field ownership and strategic merges are computed against."""
        if not rt.custom:
            definition = gotypes.kind_definition(rt.group, version, rt.kind)
            return {"$ref": f"#/$defs/{definition}"} if definition else {}
        schema = rt.schemas.get(version) or {"x-kubernetes-preserve-unknown-fields": True}
        props = schema.get("properties") or {}
        return {
            **schema,
            "type": "object",
            "properties": {
                **props,
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": gotypes.OBJECT_META_SCHEMA,
            },
        }

    def _ownership(
        self,
        rt: ResourceType,
        version: str,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        opts: WriteOptions,
        subresource: str | None,
    ) -> None:
        """Record an update's field ownership into ``new.metadata.managedFields``."""
        old_entries = (old or {}).get("metadata", {}).get("managedFields")
        given = new["metadata"].get("managedFields")
        # A client may rewrite managedFields itself (kubectl's client-side-apply upgrade).
        entries = given if given and given != old_entries else old_entries
        managers = managed.decode_managers(entries)
        if old is not None and not old_entries:
            managers = self._before_first_apply(rt, version, old)
        updated = managed.record_update(
            managers,
            _strip_for_fields(old) if old is not None else None,
            _strip_for_fields(new),
            self._typed_schema(rt, version),
            manager=opts.field_manager,
            api_version=rt.api_version(version),
            subresource=subresource or "",
            custom=rt.custom,
        )
        _reset_fields(rt, updated, subresource)
        encoded = managed.encode_managers(updated)
        if encoded:
            new["metadata"]["managedFields"] = encoded
        else:
            new["metadata"].pop("managedFields", None)

    def _before_first_apply(
        self, rt: ResourceType, version: str, obj: dict[str, Any]
    ) -> list[managed.Manager]:
        """An object that has no managedFields yet is owned by "before-first-apply" (as in SMD)."""
        fields = managed.to_field_set(_strip_for_fields(obj), self._typed_schema(rt, version))
        if not fields:
            return []
        return [
            managed.Manager("before-first-apply", "Update", rt.api_version(version), fields, now())
        ]

    def _admit(
        self, rt: ResourceType, version: str, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Defaulting & validation common to all writes; raises 422 with all the field errors."""
        meta = obj["metadata"]
        for key in set(meta) - OBJECT_META:
            del meta[key]  # unknown metadata fields are dropped when decoding ObjectMeta
        errors = _validate_metadata(rt, meta)
        if old is not None and old["metadata"].get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                errors.append(
                    FieldError(
                        "metadata.finalizers",
                        "Forbidden",
                        None,
                        f"no new finalizers can be added if the object is being "
                        f"deleted, found new finalizers {sorted(added)!r}",
                    )
                )
        if rt.normalize is not None:
            errors.extend(rt.normalize(obj, old))
        if rt.custom:
            schema = rt.schemas.get(version)
            obj = apply_defaults(prune(obj, schema, root=True), schema, root=True)
            errors.extend(validate(obj, schema, old=old if old is not None else MISSING, root=True))
        if errors:
            raise err.invalid(rt, meta.get("name") or "", errors)
        return obj

    def _default_storage_class(self, pvc: dict[str, Any]) -> None:
        """The DefaultStorageClass admission plugin: a claim that names no class gets the
        cluster's default one, when there is one."""
        spec = pvc.get("spec")
        if not isinstance(spec, dict) or "storageClassName" in spec:
            return
        for (_, name), sc in sorted(self.objects[STORAGE_CLASS_KEY].items()):
            annotations = sc["metadata"].get("annotations") or {}
            if annotations.get("storageclass.kubernetes.io/is-default-class") == "true":
                spec["storageClassName"] = name
                return

    def _check_resize(self, rt: ResourceType, pvc: dict[str, Any], old: dict[str, Any]) -> None:
        """The PersistentVolumeClaimResize admission plugin: a claim grows only when its
        StorageClass allows volume expansion (a 403, not a validation error)."""
        try:
            grows = parse_quantity(storage_request(pvc)) > parse_quantity(storage_request(old))
        except (TypeError, ValueError):
            return
        if not grows:
            return
        class_name = (pvc.get("spec") or {}).get("storageClassName") or ""
        sc = self.objects[STORAGE_CLASS_KEY].get(("", class_name))
        if sc is None or not sc.get("allowVolumeExpansion"):
            name = pvc["metadata"]["name"]
            raise APIError(
                403,
                "Forbidden",
                f'{rt.qualified} "{name}" is forbidden: only dynamically provisioned pvc can be '
                "resized and the storageclass that provisions the pvc must support resize",
                {"name": name, "kind": rt.plural},
            )

    def _check_namespace_accepts(self, rt: ResourceType, namespace: str, name: str) -> None:
        """The NamespaceLifecycle admission plugin: nothing is created in a namespace that does
        not exist or is being deleted."""
        found = self.objects[NAMESPACE_KEY].get(("", namespace))
        if found is None:
            raise APIError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
        if found["metadata"].get("deletionTimestamp"):
            raise APIError(
                403,
                "Forbidden",
                f'{rt.qualified} "{name}" is forbidden: unable to create new content in '
                f"namespace {namespace} because it is being terminated",
                {"name": name, "kind": rt.plural},
            )

    def _check_policies(
        self,
        rt: ResourceType,
        version: str,
        operation: str,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
        opts: WriteOptions | None,
        subresource: str | None = None,
    ) -> None:
        """Validating admission: the ValidatingAdmissionPolicies bound to this write."""
        policies = list(self.objects[admission.POLICIES].values())
        if not policies:
            return
        meta = obj["metadata"]
        namespace = None
        if rt.namespaced:
            namespace = self.objects[NAMESPACE_KEY].get(("", meta.get("namespace", "")), {})
        request = admission.Request(
            operation=operation,
            group=rt.group,
            version=version,
            resource=rt.plural,
            kind=rt.kind,
            namespace=meta.get("namespace", "") if rt.namespaced else "",
            name=meta.get("name", ""),
            sub_resource=subresource or "",
            dry_run=bool(opts and opts.dry_run),
        )
        warnings = opts.warnings if opts is not None else []
        admission.enforce(
            policies,
            list(self.objects[admission.BINDINGS].values()),
            request,
            render(rt, obj, version),
            render(rt, old, version) if old is not None else None,
            namespace,
            rt.qualified,
            warnings.append,
        )

    def _generate_name(self, rt: ResourceType, namespace: str, prefix: str) -> str:
        for _ in range(100):
            name = prefix + "".join(random.choices(_NAME_ALPHABET, k=5))
            if (namespace, name) not in self.objects[rt.key]:
                return name
        raise APIError(500, "InternalError", "could not generate a unique name")

    def create(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        body: Any,
        *,
        keep_status: bool = False,
        opts: WriteOptions | None = None,
        owned: list[managed.Manager] | None = None,
    ) -> dict[str, Any]:
        """Create; with ``opts`` (HTTP), decode first and record the creator's fields.

        ``owned`` is the ownership computed by a server-side apply that creates the object.
        """
        with self.lock:
            if opts is not None and owned is None:
                body = self._decode(rt, version, body, opts)
            obj = self._prepare_body(rt, body)
            meta = obj["metadata"]
            if rt.namespaced:
                if namespace and meta.get("namespace") not in (None, "", namespace):
                    raise err.bad_request(
                        "the namespace of the provided object does not match "
                        "the namespace sent on the request"
                    )
                meta["namespace"] = namespace or meta.get("namespace") or "default"
            else:
                meta.pop("namespace", None)  # silently ignored for cluster-scoped objects
            ns = meta.get("namespace", "")
            for key in (
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ):
                meta.pop(key, None)  # owned by the server
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise err.invalid(
                        rt,
                        "",
                        [
                            FieldError(
                                "metadata.name",
                                "Required",
                                detail="name or generateName is required",
                            )
                        ],
                    )
                meta["name"] = self._generate_name(rt, ns, meta["generateName"])
            if rt.namespaced:
                self._check_namespace_accepts(rt, ns, meta["name"])
            if (ns, meta["name"]) in self.objects[rt.key]:
                raise err.already_exists(rt, meta["name"])

            # Clients cannot create objects with a status if it is a subresource;
            # the in-process backdoor can (as if a controller had set it at once).
            given_status = obj.get("status")
            if "status" in rt.subresources:
                obj.pop("status", None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            if rt.prepare_create is not None:
                rt.prepare_create(obj)
            if keep_status and given_status is not None:
                obj["status"] = given_status
            if rt.key == PVC_KEY:
                self._default_storage_class(obj)
            obj = self._admit(rt, version, obj, None)
            self._check_policies(rt, version, "CREATE", obj, None, opts)
            if rt.has_generation:
                obj["metadata"]["generation"] = 1
            if owned is not None:
                obj["metadata"]["managedFields"] = managed.encode_managers(owned)
            elif opts is not None:
                obj["metadata"].pop("managedFields", None)
                self._ownership(rt, version, None, obj, opts, None)
            if opts is not None and opts.dry_run:
                return render(rt, obj, version)  # admitted, not stored: no resourceVersion
            obj["metadata"]["resourceVersion"] = str(self._next_rv())
            self.objects[rt.key][(ns, meta["name"])] = obj
            self.uids[meta["uid"]] = (rt.key, (ns, meta["name"]))
            self._emit("ADDED", rt, obj, None)
            if rt.key == CRD_KEY:
                self.register(resource_type_from_crd(obj))
            return render(rt, obj, version)

    def _write(
        self,
        rt: ResourceType,
        version: str,
        old: dict[str, Any],
        new: Any,
        *,
        subresource: str | None = None,
        require_rv: bool = False,
        opts: WriteOptions | None = None,
        owned: list[managed.Manager] | None = None,
    ) -> dict[str, Any]:
        """Update an existing object with a full new body (after patching or for PUT)."""
        new = self._prepare_body(rt, new)
        if "managedFields" not in new["metadata"] and "managedFields" in old["metadata"]:
            new["metadata"]["managedFields"] = old["metadata"]["managedFields"]
        meta, old_meta = new["metadata"], old["metadata"]
        if meta.get("name") not in (None, old_meta["name"]):
            raise err.bad_request(
                f"the name of the object ({meta['name']}) does not match "
                f"the name on the URL ({old_meta['name']})"
            )
        if rt.namespaced and meta.get("namespace") not in (None, "", old_meta.get("namespace")):
            raise err.bad_request(
                "the namespace of the provided object does not match "
                "the namespace sent on the request"
            )
        given_rv = meta.get("resourceVersion")
        if given_rv and given_rv != old_meta["resourceVersion"]:
            raise err.conflict(rt, old_meta["name"])  # optimistic concurrency
        if not given_rv and require_rv:
            raise err.invalid(
                rt,
                old_meta["name"],
                [
                    FieldError(
                        "metadata.resourceVersion", "Invalid", 0, "must be specified for an update"
                    )
                ],
            )

        if subresource == "status":
            # The status subresource changes the status only; everything else is ignored.
            result = copy.deepcopy(old)
            result.pop("status", None)
            if "status" in new:
                result["status"] = new["status"]
        else:
            result = new
            if "status" in rt.subresources:  # the main resource cannot change the status
                result.pop("status", None)
                if "status" in old:
                    result["status"] = copy.deepcopy(old["status"])
        for key in SYSTEM_META:  # immutable or server-owned metadata
            result["metadata"].pop(key, None)
            if key in old_meta:
                result["metadata"][key] = old_meta[key]
        result["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        result = self._admit(rt, version, result, old)
        if rt.key == PVC_KEY and subresource is None:
            self._check_resize(rt, result, old)
        self._check_policies(rt, version, "UPDATE", result, old, opts, subresource)
        if owned is not None:
            result["metadata"]["managedFields"] = managed.encode_managers(owned)
            if not result["metadata"]["managedFields"]:
                del result["metadata"]["managedFields"]
        elif opts is not None:
            if json_equal(_without_managed(result), _without_managed(old)):
                result["metadata"].pop("managedFields", None)
                if "managedFields" in old_meta:
                    result["metadata"]["managedFields"] = old_meta["managedFields"]
            else:
                self._ownership(rt, version, old, result, opts, subresource)

        if json_equal(_without_rv(result), _without_rv(old)):
            return old  # a no-op: no new resource version, no watch event
        if rt.has_generation and not json_equal(_spec_like(rt, result), _spec_like(rt, old)):
            result["metadata"]["generation"] = old_meta.get("generation", 0) + 1
        if opts is not None and opts.dry_run:
            return result  # what would be stored; the resourceVersion stays the old one
        return self._commit(rt, old, result)

    def _commit(self, rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            # The last finalizer is gone: the update becomes the deletion requested earlier
            # (one DELETED event with the final state, no MODIFIED: as the apiserver does).
            return self._remove(rt, new, self.deletion_policies.pop(meta["uid"], None), old=old)
        meta["resourceVersion"] = str(self._next_rv())
        self.objects[rt.key][(meta.get("namespace", ""), meta["name"])] = new
        self._emit("MODIFIED", rt, new, old)
        if rt.key == CRD_KEY:
            self.register(resource_type_from_crd(new))
        return new

    def replace(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        opts: WriteOptions | None = None,
    ) -> dict[str, Any]:
        with self.lock:
            old = self._stored(rt, namespace, name)
            if opts is not None:
                body = self._decode(rt, version, body, opts)
            # Custom resources require a resourceVersion on PUT; built-ins allow blind updates.
            result = self._write(
                rt, version, old, body, subresource=subresource, require_rv=rt.custom, opts=opts
            )
            return render(rt, result, version)

    def patch(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        name: str,
        patch_type: str,
        patch: Any,
        *,
        subresource: str | None = None,
        opts: WriteOptions | None = None,
    ) -> dict[str, Any]:
        """Apply a 'json', 'merge' or 'strategic' patch to the whole object, then write it."""
        with self.lock:
            old = self._stored(rt, namespace, name)
            current = render(rt, old, version)
            try:
                if patch_type == "json":
                    new = json_patch(current, patch)
                elif patch_type == "strategic" and not rt.custom:
                    new = strategic_merge_patch(current, patch, self._typed_schema(rt, version))
                elif isinstance(patch, dict):
                    new = merge_patch(current, patch)
                else:
                    raise MalformedPatch("a merge patch must be a JSON object")
            except MalformedPatch as e:
                raise err.bad_request(str(e)) from None
            except PatchError as e:
                raise APIError(
                    422,
                    "Invalid",
                    f"the server rejected our request due to an error in our request: {e}",
                ) from None
            if opts is not None:
                new = self._decode(rt, version, new, opts, patched=True)
            result = self._write(rt, version, old, new, subresource=subresource, opts=opts)
            return render(rt, result, version)

    def apply(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        name: str,
        config: dict[str, Any],
        opts: WriteOptions,
        *,
        subresource: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Server-side apply (PATCH application/apply-patch+yaml): 201 if it created."""
        meta = config.get("metadata")
        if not isinstance(meta, dict):
            meta = config["metadata"] = {}
        if meta.get("managedFields") is not None:
            raise err.bad_request("metadata.managedFields must be nil")
        api_version, kind = config.get("apiVersion"), config.get("kind")
        if not api_version or not kind:
            raise err.bad_request(
                "apiVersion and kind must be set in the applied configuration"
                if not api_version
                else "kind must be set in the applied configuration"
            )
        if api_version != rt.api_version(version):
            raise err.bad_request(
                f"Incorrect version specified in apply patch. Specified patch version: "
                f"{api_version}, expected: {rt.api_version(version)}"
            )
        if kind != rt.kind:
            raise err.bad_request(f"the kind {kind!r} does not match the expected {rt.kind!r}")
        if meta.get("name") not in (None, name):
            raise err.bad_request(
                f"the name of the object ({meta['name']}) does not match "
                f"the name on the URL ({name})"
            )
        meta["name"] = name
        if rt.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise err.bad_request(
                "the namespace of the provided object does not match "
                "the namespace sent on the request"
            )
        schema = self._typed_schema(rt, version)
        if rt.custom and rt.schemas.get(version):
            # Custom resources: metadata is typed; the rest per the structural schema.
            errors = managed.typed_errors(config, schema)
        elif rt.custom:
            errors = managed.typed_errors({"metadata": meta}, schema)
        else:
            errors = managed.typed_errors(config, schema) if schema else []
        if errors:
            where = f"{namespace or ''}/{name}; {rt.group}/{version}, Kind={rt.kind}"
            detail = errors[0] if len(errors) == 1 else "errors:\n  " + "\n  ".join(errors)
            raise APIError(500, "", f"failed to create typed patch object ({where}): {detail}")
        with self.lock:
            ns = (namespace or "") if rt.namespaced else ""
            live = self.objects[rt.key].get((ns, name))
            if live is None and subresource is not None:
                raise err.not_found(rt, name)
            if live is not None:
                entries = live["metadata"].get("managedFields")
                managers = (
                    managed.decode_managers(entries)
                    if entries
                    else self._before_first_apply(rt, version, live)
                )
            else:
                managers = []
            applied = _strip_for_fields(config)
            if subresource == "status":  # the strategy ignores all but the status there
                applied = {"status": applied["status"]} if "status" in applied else {}
            elif "status" in rt.subresources:
                applied.pop("status", None)
            try:
                result = managed.apply(
                    _strip_for_fields(render(rt, live, version)) if live is not None else None,
                    applied,
                    schema,
                    managers,
                    manager=opts.field_manager,
                    api_version=rt.api_version(version),
                    force=opts.force,
                    subresource=subresource or "",
                    custom=rt.custom,
                )
            except managed.ApplyConflict as e:
                raise APIError(409, "Conflict", e.message, {"causes": e.causes}) from None
            _reset_fields(rt, result.managers, subresource)
            merged = result.obj
            merged["apiVersion"], merged["kind"] = rt.api_version(version), rt.kind
            merged_meta = merged.setdefault("metadata", {})
            if live is None:
                merged_meta["name"] = name
                if rt.namespaced:
                    merged_meta["namespace"] = namespace
                return 201, self.create(
                    rt, version, namespace, merged, opts=opts, owned=result.managers
                )
            for key in ("name", "namespace", "resourceVersion", "uid"):
                if key in live["metadata"]:
                    merged_meta[key] = live["metadata"][key]
            written = self._write(
                rt,
                version,
                live,
                merged,
                subresource=subresource,
                opts=opts,
                owned=result.managers,
            )
            return 200, render(rt, written, version)

    # --- deleting -------------------------------------------------------------------------------

    def delete(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        dry_run: bool = False,
    ) -> tuple[int, dict[str, Any]]:
        """Returns the HTTP code (200 deleted, 202 pending on finalizers) and the reply body.

        ``dry_run`` answers what the deletion would do, and does nothing.
        """
        options = options or {}
        with self.lock:
            obj = self._stored(rt, namespace, name)
            meta = obj["metadata"]
            preconditions = options.get("preconditions") or {}
            for key in ("uid", "resourceVersion"):
                if preconditions.get(key) and preconditions[key] != meta.get(key):
                    raise err.conflict(
                        rt,
                        name,
                        f"Precondition failed: {key} in precondition: "
                        f"{preconditions[key]}, {key} in object meta: "
                        f"{meta.get(key)}",
                    )
            policy = options.get("propagationPolicy") or (
                "Orphan" if options.get("orphanDependents") is True else rt.default_gc_policy
            )
            if policy not in ("Orphan", "Background", "Foreground"):
                raise err.bad_request(f"unsupported propagationPolicy: {policy!r}")
            code, result = self._delete(rt, obj, policy, dry_run=dry_run)
            if code == 200 and not rt.return_deleted_object:
                details = {"name": name, "kind": rt.plural, "uid": meta["uid"]}
                return 200, err.success_status(
                    {**details, **({"group": rt.group} if rt.group else {})}
                )
            return code, render(rt, result, version)

    def _delete(
        self, rt: ResourceType, obj: dict[str, Any], policy: str, *, dry_run: bool = False
    ) -> tuple[int, dict[str, Any]]:
        meta = obj["metadata"]
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return 202, obj  # already being deleted: nothing changes
            new = copy.deepcopy(obj)
            new["metadata"]["deletionTimestamp"] = now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if rt.custom:  # custom resources bump the generation when marked for deletion
                new["metadata"]["generation"] = meta.get("generation", 0) + 1
            if dry_run:
                return 202, new
            self.deletion_policies[meta["uid"]] = policy
            return 202, self._commit(rt, obj, new)
        if dry_run:
            return 200, obj
        return 200, self._remove(rt, obj, policy)

    def _remove(
        self,
        rt: ResourceType,
        obj: dict[str, Any],
        policy: str | None,
        *,
        old: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Really delete the object, then everything that depended on it."""
        meta = obj["metadata"]
        del self.objects[rt.key][(meta.get("namespace", ""), meta["name"])]
        self.uids.pop(meta["uid"], None)
        self.deletion_policies.pop(meta["uid"], None)
        final = copy.deepcopy(obj)
        final["metadata"]["resourceVersion"] = str(self._next_rv())  # DELETED has a fresh version
        self._emit("DELETED", rt, final, old or obj)
        if rt.key == CRD_KEY:
            self._drop_custom_type(final)
        if rt.key == NAMESPACE_KEY:
            self._empty_namespace(meta["name"])
        self._collect_garbage(meta["uid"], policy or "Background")
        return final

    def _drop_custom_type(self, crd: dict[str, Any]) -> None:
        # Simplification: the CRD's custom resources go away at once, finalizers or not.
        key = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
        rt = self.types.get(key)
        if rt is None or not rt.custom:
            return
        for obj in list(self.objects.get(key, {}).values()):
            self._remove(rt, obj, "Background")
        del self.types[key]
        self.objects.pop(key, None)
        for watcher in list(self.watchers):
            if watcher.rt.key == key:
                watcher.close()  # as when the apiserver stops serving a resource

    def _empty_namespace(self, namespace: str) -> None:
        # Simplification: the namespace itself is gone at once; its objects are deleted
        # normally (so those with finalizers linger until released).
        for rt in list(self.types.values()):
            if rt.namespaced:
                for (ns, _), obj in list(self.objects.get(rt.key, {}).items()):
                    if ns == namespace and not obj["metadata"].get("deletionTimestamp"):
                        self._delete(rt, obj, "Background")

    def _collect_garbage(self, owner_uid: str, policy: str) -> None:
        """The garbage collector, synchronously: dependents go (or are orphaned) right away."""
        for key, objects in list(self.objects.items()):
            rt = self.types.get(key)
            for stored in list(objects.values()):
                refs = stored["metadata"].get("ownerReferences") or []
                if rt is None or not any(ref.get("uid") == owner_uid for ref in refs):
                    continue
                current = self.objects[key].get(
                    (stored["metadata"].get("namespace", ""), stored["metadata"]["name"])
                )
                if current is None:
                    continue  # already removed by a cascade within this loop
                others = [ref for ref in refs if ref.get("uid") != owner_uid]
                if policy == "Orphan" or any(ref.get("uid") in self.uids for ref in others):
                    new = copy.deepcopy(current)
                    if others:
                        new["metadata"]["ownerReferences"] = others
                    else:
                        new["metadata"].pop("ownerReferences", None)
                    self._commit(rt, current, new)
                elif not current["metadata"].get("deletionTimestamp"):
                    self._delete(rt, current, "Background")

    def delete_collection(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        matches: Matcher,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        with self.lock:
            listing = self.list(rt, version, namespace, matches)
            for item in listing["items"]:
                meta = item["metadata"]
                try:
                    self.delete(rt, version, meta.get("namespace"), meta["name"], options)
                except APIError as e:
                    if e.code != 404:  # gone via a cascade of an earlier deletion: fine
                        raise
            return listing

    # --- watching -------------------------------------------------------------------------------

    def subscribe(
        self,
        loop: asyncio.AbstractEventLoop,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        matches: Matcher,
        *,
        since: str | None,
        send_initial: bool | None,
    ) -> tuple[Watcher, list[dict[str, Any]]]:
        """Start a watch; returns the watcher and the events to send before the live ones.

        Raises a 410 ``APIError`` if ``since`` is older than the retained history.
        """
        with self.lock:
            watcher = Watcher(loop, rt, version, namespace, matches)
            initial: list[dict[str, Any]] = []
            if send_initial or (send_initial is None and since in (None, "", "0")):
                # "Get state and start at most recent": the current objects as synthetic ADDED.
                for _, obj in self._select(rt, namespace, matches):
                    initial.append({"type": "ADDED", "object": render(rt, obj, version)})
                if send_initial:
                    initial.append(bookmark(rt, version, self.rv, initial_end=True))
            elif since not in (None, "", "0"):
                if not re.fullmatch(r"\d+", since):
                    raise err.bad_request(f"invalid resource version: {since!r}")
                if int(since) < self.floor:
                    raise err.expired(f"too old resource version: {since} ({self.floor + 1})")
                for event in self.history:
                    if event.rv > int(since) and (translated := watcher.translate(event)):
                        initial.append(translated)
            watcher.last_rv = self.rv
            self.watchers.add(watcher)
            return watcher, initial

    def drain(self, watcher: Watcher) -> list[dict[str, Any]]:
        with self.lock:
            events = []
            while watcher.pending:
                event = watcher.pending.popleft()
                watcher.last_rv = event.rv
                if translated := watcher.translate(event):
                    events.append(translated)
            return events

    def progress_rv(self, watcher: Watcher) -> int:
        """The version a bookmark may claim: never beyond an event not yet delivered."""
        with self.lock:
            if not watcher.pending:
                watcher.last_rv = self.rv  # events are queued under this lock, so none is missed
            return watcher.last_rv

    def unsubscribe(self, watcher: Watcher) -> None:
        with self.lock:
            self.watchers.discard(watcher)

    def close_watchers(self) -> None:
        with self.lock:
            for watcher in self.watchers:
                watcher.close()
