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

What is real: discovery (``/version`` says Kubernetes 1.36, ``/api``, ``/apis``,
``/api[s]/{g}/{v}``), OpenAPI v3 (``/openapi/v3``: an index with hashes, and a document per
served group/version, built-in and custom, with every resource's operations, their query
parameters and ``x-kubernetes-group-version-kind``, and the kinds' schemas; see ``openapi``),
CRUD with ``Status`` errors, a global ``resourceVersion``, ``uid``, ``generation`` (bumped only
by non-metadata/non-status changes), ``generateName``, optimistic concurrency (PUT and
merge-patch ``metadata.resourceVersion`` preconditions), JSON merge & JSON patches (a failing
``test`` op gives 422), strategic merge patches of built-ins (merge keys, strategies and
directives from the Go types' schemas; 415 for custom resources, as upstream), server-side
apply (``application/apply-patch+yaml``, field managers, ``force``, 409 conflicts, fields
that the applier stops applying removed) with ``metadata.managedFields`` (see ``managed``),
``dryRun=All`` on every write, ``fieldValidation`` Strict/Warn/Ignore (400 or ``Warning``
headers), built-in bodies decoded like the Go types do (unknown fields dropped, type errors
400; see ``gotypes``), protobuf bodies of Namespaces, Secrets, ConfigMaps and DeleteOptions
(what kubectl create and helm send that way), the status subresource isolation both ways,
finalizers and ``deletionTimestamp``, owner-reference garbage collection (Background/Orphan;
batch/v1 Jobs orphan by default), label & field selectors, paginated lists, watches with
resumption from a bounded history (410 Expired when too old), initial events with the end
bookmark, periodic bookmarks, ``timeoutSeconds``; CRDs checked as the apiserver checks them
(decoded as the Go type, then the structural-schema rules with the apiserver's paths and
texts) with pruning, defaulting, OpenAPI validation and CEL rules (see ``schema``).
Built-in kinds: core (namespaces, pods, secrets, configmaps, events, serviceaccounts,
services, persistentvolumeclaims, persistentvolumes, endpoints, resourcequotas,
limitranges), apps (deployments, statefulsets, replicasets, daemonsets), batch (jobs,
cronjobs), autoscaling/v2, policy/v1, networking.k8s.io, rbac.authorization.k8s.io,
admissionregistration.k8s.io (policies, bindings, webhook configurations), storage.k8s.io,
coordination.k8s.io, events.k8s.io, apiextensions.k8s.io; nothing reconciles them (no
Deployment ever gets ready), but their defaults that clients observe are applied
(Deployment replicas/strategy, pod template and container defaults, Service ports and
cluster IP, ...).

What is approximated (on purpose, to keep it small):

* Server-side apply: field sets follow SMD's rules, but the member markers (``.``) that
  updates record are approximated, merged list items keep the live order (new ones are
  appended), there is no version conversion of field sets, and a client that rewrites
  ``managedFields`` is taken at its word. The in-process accessors record no ownership.
* Strategic merge patch: ``$patch: merge`` on a map is a plain merge; no patch-of-patch
  (``MergeParallelList`` off) semantics. Duplicate JSON keys are not reported by
  ``fieldValidation`` (Python's JSON reader keeps the last one).
* Type errors of server-side apply bodies use SMD's words for the common cases only.
* The garbage collector and CRD/namespace controllers run synchronously inside the
  deleting request; Foreground deletion behaves as Background; deleting a CRD removes
  its custom resources at once (ignoring their finalizers); deleting a namespace removes
  it at once and deletes its objects normally.
* Pods are deleted at once (no kubelet, no grace period); nothing is scheduled or run.
* No conversion between CRD versions (as ``conversion.strategy: None``); the storage
  version's subresources apply to all versions. No ``/scale`` subresource.
* Lists always serve the latest state (``resourceVersion``/``resourceVersionMatch``
  are ignored); continuations serve the current state after the last key (not a snapshot).
  Lists are JSON only (no Table rendering: kubectl shows only NAME and AGE columns).
* Too-old watch versions get an ``ERROR`` event with code 410 and reason ``Expired``,
  as the modern apiserver sends (``Gone`` was the reason in old versions).
* Built-in types validate only a little beyond decoding (names, labels, annotation size,
  pod containers, Job templates, workload selectors).
* core/v1 and events.k8s.io/v1 Events are stored separately.
* No admission webhooks or policies are run, no RBAC (any bearer token is accepted).
* A delete-collection does not support ``dryRun``.
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
