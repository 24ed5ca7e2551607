"""
An in-memory Kubernetes API server emulator for integration tests, over real HTTP.

Usage::

    async with KubeAPIServer() as server:          # on the test's own event loop
        server.write_kubeconfig(tmp_path / 'kubeconfig')
        ...

    with running_kubeapi() as server:              # in a background thread (sync tests, KopfRunner)
        with use_kubeconfig(server.write_kubeconfig(tmp_path / 'kubeconfig')):
            with kopf.testing.KopfRunner(['run', '--standalone', ...]):
                ...

The cluster starts like a fresh one: namespaces ``default``, ``kube-system``,
``kube-public`` and ``kube-node-lease`` exist (kopf only watches in existing
namespaces); objects may still be created in namespaces that do not exist.

The in-process accessors (``server.create/get/list/replace/patch/patch_status/
delete/wait_for``) are thread-safe; ``server.requests`` logs every HTTP request,
and ``server.internal_errors`` collects emulator bugs (served as HTTP 500).

What is real: discovery (``/version``, ``/api``, ``/apis``, ``/api[s]/{g}/{v}``), the
OpenAPI v3 documents of custom resources (``/openapi/v3``: what ``kubectl explain`` reads),
CRUD with ``Status`` errors, a global ``resourceVersion``, ``uid``, ``generation``
(bumped only by non-metadata/non-status changes), ``generateName``, optimistic
concurrency (PUT and merge-patch ``metadata.resourceVersion`` preconditions),
JSON merge & JSON patches (a failing ``test`` op gives 422), the status
subresource isolation both ways, finalizers and ``deletionTimestamp``, owner-
reference garbage collection (Background/Orphan; batch/v1 Jobs orphan by default),
label & field selectors, paginated lists, watches with resumption from a bounded
history (410 Expired when too old), initial events with the end bookmark,
periodic bookmarks, ``timeoutSeconds``; CRDs with structural-schema pruning,
defaulting, OpenAPI validation and CEL rules (see ``schema``).

What is approximated (on purpose, to keep it small):

* Strategic merge patch is a JSON merge patch (lists are replaced, not merged by key);
  custom resources reject it with 415, as the real apiserver does.
* Server-side apply and ``dryRun`` are not supported (415 and 400 respectively).
* The garbage collector and CRD/namespace controllers run synchronously inside the
  deleting request; Foreground deletion behaves as Background; deleting a CRD removes
  its custom resources at once (ignoring their finalizers); deleting a namespace removes
  it at once and deletes its objects normally.
* Pods are deleted at once (no kubelet, no grace period); nothing is scheduled or run.
* No conversion between CRD versions (as ``conversion.strategy: None``); the storage
  version's subresources apply to all versions.
* Lists always serve the latest state (``resourceVersion``/``resourceVersionMatch``
  are ignored); continuations serve the current state after the last key (not a snapshot).
* Too-old watch versions get an ``ERROR`` event with code 410 and reason ``Expired``,
  as the modern apiserver sends (``Gone`` was the reason in old versions).
* Built-in types validate only a little (names, labels, pod containers, Job templates).
* core/v1 and events.k8s.io/v1 Events are stored separately.
* No ``managedFields``, no admission webhooks, no RBAC (any bearer token is accepted).
"""

from .errors import APIError, FieldError
from .server import KubeAPIServer, RequestRecord, running_kubeapi, use_kubeconfig
from .store import Store

__all__ = [
    "APIError",
    "FieldError",
    "KubeAPIServer",
    "RequestRecord",
    "Store",
    "running_kubeapi",
    "use_kubeconfig",
]
