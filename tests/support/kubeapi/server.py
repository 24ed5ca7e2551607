"""
The HTTP face of the emulator (aiohttp), its lifecycle, and the in-process accessors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from multidict import CIMultiDict

from . import errors as err
from . import openapi, protobuf, resources, tables
from .authz import Attributes, RBACAuthorizer, request_verb
from .codec import load_yaml
from .errors import APIError
from .resources import ResourceType
from .selectors import make_matcher, parse_field_selector, parse_label_selector
from .store import Store, WriteOptions, bookmark

logger = logging.getLogger(__name__)

VERSION_INFO = {
    "major": "1",
    "minor": "36",
    "emulationMajor": "1",
    "emulationMinor": "36",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "35",
    "gitVersion": "v1.36.0+kubeapi-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-04-22T00:00:00Z",
    "goVersion": "go1.26.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}
WRITE_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))
DEFAULT_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    APPLY_PATCH: "apply",
}
FIELD_VALIDATION = ("Ignore", "Strict", "Warn")
BINARY_TYPES = ("application/vnd.kubernetes.protobuf", "application/cbor")


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any  # the parsed JSON, or None
    # Who asked: the bearer token (the emulator's stand-in for a user), or None.
    token: str | None = None


def _flag(value: str | None) -> bool | None:
    return None if value is None else value.lower() in ("true", "1")


class KubeAPIServer:
    """An in-memory Kubernetes API server emulator, served over real HTTP.

    The in-process accessors (``create``, ``get``, ``patch_status``, ...) are
    thread-safe: call them from the test's thread or from the server's loop.
    """

    def __init__(
        self,
        *,
        history_limit: int = 10000,
        bookmark_interval: float = 5.0,
        require_auth: bool = False,
        namespaces: Iterable[str] = DEFAULT_NAMESPACES,
        authorizer: RBACAuthorizer | None = None,
        write_latency: float = 0.0,
        write_throughput: float | None = None,
    ) -> None:
        self.store = Store(history_limit=history_limit)
        # Like a fresh cluster. Needed: kopf's namespace observer only watches in existing ones.
        for name in namespaces:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        self.bookmark_interval = bookmark_interval
        self.require_auth = require_auth
        # RBAC for the tokens it names (the others are as cluster-admin); see authz.
        self.authorizer = authorizer
        self.requests: list[RequestRecord] = []
        self.internal_errors: list[Exception] = []  # emulator bugs; tests may assert it is empty
        # A test's outage of part of the API: the HTTP status this request is answered with
        # instead (e.g. 503 for a discovery endpoint, as apiservers answer while starting), or
        # None to serve it.
        self.fault: Callable[[web.Request], int | None] | None = None
        # What a write waits before it is carried out and answered: a real apiserver answers
        # once etcd has committed the object (Raft, fdatasync), which the in-memory store does
        # not do. Each write waits `write_latency` seconds, side by side with the others, and,
        # with `write_throughput`, its turn among commits made at most that many a second (a
        # burst queues, as it does for etcd's disk). Reads and dry runs never wait. The figures
        # bench-operator uses are measured with a real etcd by bench/etcd_write_latency.py.
        self.write_latency = write_latency
        self.write_throughput = write_throughput
        self._next_commit = 0.0
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._closing = False

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> KubeAPIServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Cancel the handlers of disconnected clients: watch-streams would linger otherwise.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=5.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockname = self._runner.addresses[0]
        self._url = f"http://{sockname[0]}:{sockname[1]}"
        self._closing = False
        return self

    async def stop(self) -> None:
        if self._runner is None:
            return
        self._closing = True
        self.store.close_watchers()  # watch-streams end gracefully instead of being cancelled
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> KubeAPIServer:
        return await self.start()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the server is not started")
        return self._url

    def write_kubeconfig(
        self, path: str | Path, *, namespace: str = "default", token: str = "kubeapi-emulator-token"
    ) -> Path:
        """A kubeconfig for kopf & kubernetes_asyncio: plain HTTP, any bearer token."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": "kubeapi-emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "kubeapi-emulator", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "kubeapi-emulator",
                    "context": {
                        "cluster": "kubeapi-emulator",
                        "user": "kubeapi-emulator",
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": "kubeapi-emulator",
        }
        path = Path(path)
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    # --- in-process accessors for tests ---------------------------------------------------------

    def _rt(self, group: str, version: str, plural: str) -> ResourceType:
        return self.store.resolve(group, version, plural)

    def create(self, obj: dict[str, Any], *, keep_status: bool = True) -> dict[str, Any]:
        """Create from a full body (apiVersion & kind required); the status is kept by default."""
        rt, version = self.store.resolve_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
        namespace = (obj.get("metadata") or {}).get("namespace") if rt.namespaced else None
        return self.store.create(rt, version, namespace, obj, keep_status=keep_status)

    def get(
        self, group: str, version: str, plural: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            return self.store.get(self._rt(group, version, plural), version, namespace, name)
        except APIError as e:
            if e.code == 404:
                return None
            raise

    def list(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        rt = self._rt(group, version, plural)
        matches = make_matcher(
            parse_label_selector(label_selector),
            parse_field_selector(field_selector, rt.supported_fields),
        )
        return self.store.list(rt, version, namespace, matches)["items"]

    def replace(self, obj: dict[str, Any], *, subresource: str | None = None) -> dict[str, Any]:
        rt, version = self.store.resolve_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
        meta = obj.get("metadata") or {}
        return self.store.replace(
            rt, version, meta.get("namespace"), meta.get("name", ""), obj, subresource=subresource
        )

    def patch(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: str = "merge",
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """Patch like a client would: ``patch_type`` is 'merge', 'json' or 'strategic'."""
        return self.store.patch(
            self._rt(group, version, plural),
            version,
            namespace,
            name,
            patch_type,
            patch,
            subresource=subresource,
        )

    def patch_status(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None,
        name: str,
        status: dict[str, Any],
    ) -> dict[str, Any]:
        """Merge-patch the ``.status`` (``None`` values delete keys), as a controller would."""
        rt = self._rt(group, version, plural)
        subresource = "status" if "status" in rt.subresources else None
        return self.store.patch(
            rt, version, namespace, name, "merge", {"status": status}, subresource=subresource
        )

    def delete(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None,
        name: str,
        *,
        propagation_policy: str | None = None,
    ) -> dict[str, Any]:
        options = {"propagationPolicy": propagation_policy} if propagation_policy else {}
        _, body = self.store.delete(
            self._rt(group, version, plural), version, namespace, name, options
        )
        return body

    def compact(self) -> None:
        """Forget the watch history: resuming from any older version then gets 410 Gone."""
        self.store.compact()

    @property
    def resource_version(self) -> int:
        return self.store.rv

    def wait_for(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None,
        name: str,
        predicate: Callable[[dict[str, Any] | None], bool] = lambda obj: obj is not None,
        *,
        timeout: float = 10.0,
    ) -> dict[str, Any] | None:
        """Poll until the predicate holds for the object (None if absent).

        Blocking: for sync tests only, never on the server's loop.
        """
        deadline = time.monotonic() + timeout
        while True:
            obj = self.get(group, version, plural, namespace, name)
            if predicate(obj):
                return obj
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{plural} {namespace}/{name} did not reach the state; last seen: {obj!r}"
                )
            time.sleep(0.05)

    def find_requests(
        self, method: str | None = None, path: str | None = None, *, path_prefix: str | None = None
    ) -> list[RequestRecord]:
        return [
            r
            for r in list(self.requests)
            if (method is None or r.method == method.upper())
            and (path is None or r.path == path)
            and (path_prefix is None or r.path.startswith(path_prefix))
        ]

    # --- HTTP -----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            raw = await request.read()
            if raw and request.content_type in BINARY_TYPES:
                body = self._decode_binary(request, raw)
                self._record(request, body)
                return await self._dispatch(request, body)
            try:
                if request.content_type == APPLY_PATCH:
                    body = load_yaml(raw) if raw.strip() else None
                else:
                    body = json.loads(raw) if raw.strip() else None
            except ValueError as e:
                self._record(request, None)
                if request.content_type == APPLY_PATCH:
                    raise err.bad_request(f"error decoding YAML: {e}") from None
                raise err.bad_request(f"the body is not valid JSON: {e}") from None
            self._record(request, body)
            if self.require_auth and not request.headers.get("Authorization", "").startswith(
                "Bearer "
            ):
                raise APIError(401, "Unauthorized", "Unauthorized")
            if (
                (self.write_latency > 0 or self.write_throughput)
                and request.method in WRITE_METHODS
                and "dryRun" not in request.query
            ):
                await asyncio.sleep(self._commit_wait())
            return await self._dispatch(request, body)
        except APIError as e:
            return web.json_response(e.status(), status=e.code)
        except Exception as e:  # a bug in the emulator: make it loud, but keep serving
            logger.exception(
                "Internal error in the emulator for %s %s", request.method, request.path
            )
            self.internal_errors.append(e)
            return web.json_response(APIError(500, "InternalError", repr(e)).status(), status=500)

    def _commit_wait(self) -> float:
        wait = self.write_latency
        if self.write_throughput:
            now = asyncio.get_running_loop().time()
            self._next_commit = max(self._next_commit, now) + 1 / self.write_throughput
            wait += self._next_commit - now
        return wait

    @staticmethod
    def _decode_binary(request: web.Request, raw: bytes) -> Any:
        """Protobuf bodies of the kinds Go clients send that way; 415 for anything else."""
        unsupported = APIError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types "
            f"include: application/json, application/yaml (got {request.content_type})",
        )
        if request.content_type != "application/vnd.kubernetes.protobuf":
            raise unsupported
        try:
            return protobuf.decode(raw)
        except protobuf.UnsupportedKind:
            raise unsupported from None
        except (ValueError, IndexError, UnicodeDecodeError) as e:
            raise err.bad_request(f"the protobuf body could not be decoded: {e}") from None

    def _record(self, request: web.Request, body: Any) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        self.requests.append(
            RequestRecord(
                request.method,
                request.path,
                dict(request.query),
                request.content_type,
                body,
                token if scheme == "Bearer" and token else None,
            )
        )

    async def _dispatch(self, request: web.Request, body: Any) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        fault = self.fault(request) if self.fault is not None else None
        if fault is not None:
            raise APIError(
                fault, "ServiceUnavailable", "the server is currently unable to handle the request"
            )
        if request.path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if request.path == "/version":
            return web.json_response(VERSION_INFO)
        types = self.store.all_types()
        if parts[:2] == ["openapi", "v3"] and request.method == "GET":
            document = openapi.serve(parts[2:], types)
            if isinstance(document, str):
                return web.Response(text=document, content_type="application/json")
            return web.json_response(document)
        if parts[:1] == ["api"]:
            if len(parts) == 1:
                host = request.host
                return web.json_response(resources.api_versions(host))
            if parts[1] != "v1":
                raise err.not_found_path()
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"]:
            if len(parts) == 1:
                return web.json_response(resources.api_group_list(types))
            group = parts[1]
            if not any(rt.group == group for rt in types):
                raise err.not_found_path()
            if len(parts) == 2:
                return web.json_response(resources.api_group(group, types))
            version, rest = parts[2], parts[3:]
            if not any(rt.group == group and version in rt.versions for rt in types):
                raise err.not_found_path()
        else:
            raise err.not_found_path()
        if not rest:
            if request.method != "GET":
                raise err.method_not_allowed(request.method)
            return web.json_response(resources.api_resource_list(group, version, types))
        return await self._serve_resource(request, body, group, version, rest)

    def _parse_target(
        self, group: str, version: str, rest: list[str]
    ) -> tuple[ResourceType, str | None, str | None, str | None]:
        # /namespaces/{ns}/{plural}[/{name}[/{sub}]], except the Namespace's own subresources.
        is_namespace_sub = group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")
        if rest[0] == "namespaces" and len(rest) >= 3 and not is_namespace_sub:
            namespace, rest = rest[1], rest[2:]
        else:
            namespace = None
        if len(rest) > 3:
            raise err.not_found_path()
        plural, name, sub = (rest + [None, None])[:3]
        rt = self.store.resolve(group, version, plural or "")
        if namespace is not None and not rt.namespaced:
            raise err.not_found_path()
        if namespace is None and rt.namespaced and name is not None:
            raise err.not_found_path()
        if sub is not None and sub not in rt.subresources:
            raise err.not_found_path()
        return rt, namespace, name, sub

    @staticmethod
    def _write_options(request: web.Request, *, apply: bool = False) -> WriteOptions:
        query = request.query
        validation = query.get("fieldValidation") or "Warn"
        if validation not in FIELD_VALIDATION:
            raise err.bad_request(
                f"fieldValidation: Unsupported value: {json.dumps(validation)}: "
                'supported values: "Ignore", "Strict", "Warn"'
            )
        dry_run = query.getall("dryRun", [])
        if any(value != "All" for value in dry_run):
            raise err.bad_request(
                f'dryRun: Unsupported value: {json.dumps(dry_run[0])}: supported values: "All"'
            )
        manager = query.get("fieldManager")
        if apply and not manager:
            raise err.bad_request(
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                "is required for apply patch"
            )
        if manager is None:
            # As the apiserver: the user agent's product name ("kubectl", "kopf", ...).
            manager = (request.headers.get("User-Agent") or "unknown").split("/", 1)[0]
        if len(manager) > 128:
            raise err.bad_request("fieldManager: Too long: may not be more than 128 bytes")
        force = _flag(query.get("force"))
        if force and not apply:
            raise err.bad_request("force: Forbidden: may not be specified for non-apply patch")
        return WriteOptions(
            field_validation=validation,
            dry_run=bool(dry_run),
            field_manager=manager,
            force=bool(force),
        )

    @staticmethod
    def _reply(data: Any, opts: WriteOptions, status: int = 200) -> web.Response:
        headers: CIMultiDict[str] = CIMultiDict()
        for text in dict.fromkeys(opts.warnings):  # each warning once, in order
            headers.add("Warning", f"299 - {json.dumps(text)}")
        return web.json_response(data, status=status, headers=headers)

    async def _serve_resource(
        self, request: web.Request, body: Any, group: str, version: str, rest: list[str]
    ) -> web.StreamResponse:
        rt, namespace, name, sub = self._parse_target(group, version, rest)
        query, method, store = request.query, request.method, self.store
        self._authorize(
            request, rt, namespace, name, sub, request_verb(method, name, _flag(query.get("watch")))
        )

        if name is None:
            matches = make_matcher(
                parse_label_selector(query.get("labelSelector")),
                parse_field_selector(query.get("fieldSelector"), rt.supported_fields),
            )
            if method == "GET" and _flag(query.get("watch")):
                return await self._watch(request, rt, version, namespace, matches)
            if method == "GET":
                limit = query.get("limit")
                if limit is not None and not limit.isdigit():
                    raise err.bad_request(f"invalid limit: {limit!r}")
                listing = store.list(
                    rt,
                    version,
                    namespace,
                    matches,
                    limit=int(limit) if limit else None,
                    continue_token=query.get("continue"),
                )
                if tables.wants_table(request.headers.get("Accept", "")):
                    columns = rt.printer_columns.get(version) or []
                    return web.json_response(
                        tables.table(listing["items"], columns, listing["metadata"])
                    )
                return web.json_response(listing)
            if method == "POST" and (namespace is not None or not rt.namespaced):
                opts = self._write_options(request)
                created = store.create(rt, version, namespace, body, opts=opts)
                return self._reply(created, opts, status=201)
            if method == "DELETE":
                if query.get("dryRun"):
                    raise err.bad_request("dryRun is not supported on collections by the emulator")
                return web.json_response(
                    store.delete_collection(
                        rt, version, namespace, matches, self._delete_options(query, body)
                    )
                )
            raise err.method_not_allowed(method)

        if method == "GET":
            obj = store.get(rt, version, namespace, name)
            if tables.wants_table(request.headers.get("Accept", "")):
                columns = rt.printer_columns.get(version) or []
                rv = {"resourceVersion": obj["metadata"].get("resourceVersion")}
                return web.json_response(tables.table([obj], columns, rv))
            return web.json_response(obj)
        if method == "PUT":
            opts = self._write_options(request)
            replaced = store.replace(rt, version, namespace, name, body, subresource=sub, opts=opts)
            return self._reply(replaced, opts)
        if method == "PATCH":
            content_type = request.content_type.lower()
            patch_type = PATCH_TYPES.get(content_type)
            # Custom resources do not support strategic merge patches: there is no Go struct.
            if patch_type is None or (patch_type == "strategic" and rt.custom):
                raise err.unsupported_media_type(content_type)
            opts = self._write_options(request, apply=patch_type == "apply")
            if patch_type == "apply":
                if not isinstance(body, dict):
                    raise err.bad_request("error decoding YAML: the applied object must be a map")
                if not store.exists(rt, namespace, name):
                    # An apply that creates is authorized as a create too (patch.go).
                    self._authorize(request, rt, namespace, name, sub, "create")
                code, applied = store.apply(
                    rt, version, namespace, name, body, opts, subresource=sub
                )
                return self._reply(applied, opts, status=code)
            patched = store.patch(
                rt, version, namespace, name, patch_type, body, subresource=sub, opts=opts
            )
            return self._reply(patched, opts)
        if method == "DELETE" and sub is None:
            opts = self._write_options(request)
            code, reply = store.delete(
                rt,
                version,
                namespace,
                name,
                self._delete_options(query, body),
                dry_run=opts.dry_run,
            )
            return web.json_response(reply, status=code)
        raise err.method_not_allowed(method)

    def _authorize(
        self,
        request: web.Request,
        rt: ResourceType,
        namespace: str | None,
        name: str | None,
        sub: str | None,
        verb: str,
    ) -> None:
        if self.authorizer is None:
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        self.authorizer.authorize(
            token if scheme == "Bearer" and token else None,
            Attributes(verb, rt.group, rt.plural, sub, namespace, name),
            impersonate=request.headers.get("Impersonate-User"),
        )

    @staticmethod
    def _delete_options(query: Any, body: Any) -> dict[str, Any]:
        options = dict(body) if isinstance(body, dict) else {}
        if query.get("propagationPolicy"):
            options["propagationPolicy"] = query["propagationPolicy"]
        if query.get("orphanDependents"):
            options["orphanDependents"] = _flag(query["orphanDependents"])
        return options

    async def _watch(
        self,
        request: web.Request,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        matches: Any,
    ) -> web.StreamResponse:
        query = request.query
        send_initial = _flag(query.get("sendInitialEvents"))
        if send_initial and query.get("resourceVersionMatch") != "NotOlderThan":
            raise APIError(
                422,
                "Invalid",
                'ListOptions.meta.k8s.io "" is invalid: '
                "resourceVersionMatch: Forbidden: sendInitialEvents requires setting "
                "resourceVersionMatch to NotOlderThan",
            )
        try:
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        except ValueError:
            raise err.bad_request(f"invalid timeoutSeconds: {query['timeoutSeconds']!r}") from None
        bookmarks = bool(_flag(query.get("allowWatchBookmarks")))
        loop = asyncio.get_running_loop()

        watcher = None
        try:
            watcher, initial = self.store.subscribe(
                loop,
                rt,
                version,
                namespace,
                matches,
                since=query.get("resourceVersion"),
                send_initial=send_initial,
            )
        except APIError as e:
            if e.code != 410:
                raise
            initial = [{"type": "ERROR", "object": e.status()}]  # in-stream, as the apiserver does

        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            await self._send(response, initial)
            if watcher is not None:
                await self._stream(response, watcher, rt, version, timeout, bookmarks)
            await response.write_eof()
        except ConnectionError:  # the client has gone away; nobody to tell
            pass
        finally:
            if watcher is not None:
                self.store.unsubscribe(watcher)
        return response

    async def _stream(
        self,
        response: web.StreamResponse,
        watcher: Any,
        rt: ResourceType,
        version: str,
        lifetime: float | None,
        bookmarks: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + lifetime if lifetime is not None else None
        next_bookmark = loop.time() + self.bookmark_interval if bookmarks else None
        while not watcher.closed and not self._closing:
            watcher.wakeup.clear()  # before draining, so that no push is missed
            await self._send(response, self.store.drain(watcher))
            now = loop.time()
            if next_bookmark is not None and now >= next_bookmark:
                rv = self.store.progress_rv(watcher)
                await self._send(response, [bookmark(rt, version, rv)])
                next_bookmark = now + self.bookmark_interval
            if deadline is not None and now >= deadline:
                return
            wake_at = min((t for t in (deadline, next_bookmark) if t is not None), default=None)
            try:
                async with asyncio.timeout_at(wake_at):
                    await watcher.wakeup.wait()
            except TimeoutError:
                pass

    @staticmethod
    async def _send(response: web.StreamResponse, events: list[dict[str, Any]]) -> None:
        if events:
            data = "".join(json.dumps(event, separators=(",", ":")) + "\n" for event in events)
            await response.write(data.encode("utf-8"))


@contextlib.contextmanager
def use_kubeconfig(path: str | Path) -> Iterator[Path]:
    """Point ``KUBECONFIG`` at the file for kopf & kubernetes_asyncio; restore it on exit.

    Why not just the env var: kubernetes_asyncio reads ``KUBECONFIG`` once, at import
    time, into ``kube_config.KUBE_CONFIG_DEFAULT_LOCATION`` (used by kopf's login).
    """
    from kubernetes_asyncio.config import kube_config  # imported late: only if used

    path = Path(path)
    saved_env, saved_default = (
        os.environ.get("KUBECONFIG"),
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION,
    )
    os.environ["KUBECONFIG"] = str(path)
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(path)
    try:
        yield path
    finally:
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = saved_default
        if saved_env is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = saved_env


@contextlib.contextmanager
def running_kubeapi(
    host: str = "127.0.0.1", port: int = 0, **kwargs: Any
) -> Iterator[KubeAPIServer]:
    """Run the emulator on its own event loop in a background thread (for sync tests)."""
    server = KubeAPIServer(**kwargs)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="kubeapi-emulator", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(host, port), loop).result(timeout=10)
        yield server
    finally:
        try:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()
