"""
Resource types (built-in and CRD-defined) and the discovery documents for them.

Built-ins carry small "strategy" hooks mimicking what the real apiserver does
on writes (Job selectors, Secret ``stringData``, Pod phase, etc.), because
operators observe those effects.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from eval_api.quantity import parse_quantity

from .errors import FieldError
from .podspec import validate_pod_spec

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")
METADATA_FIELDS = ("metadata.name", "metadata.namespace")

# Hooks: ``prepare_create(obj)`` resets what clients may not set on creation;
# ``normalize(obj, old)`` defaults & validates on every write (old is None on create).
PrepareHook = Callable[[dict[str, Any]], None]
NormalizeHook = Callable[[dict[str, Any], dict[str, Any] | None], list[FieldError]]


@dataclass(eq=False)
class ResourceType:
    group: str
    versions: list[str]  # served versions
    plural: str
    kind: str
    namespaced: bool = True
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    has_generation: bool = False  # objects with a spec get metadata.generation
    custom: bool = False  # defined by a CRD
    schemas: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # version -> schema
    # version -> a CRD's additionalPrinterColumns (what `kubectl get` prints)
    printer_columns: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    storage_version: str = ""
    field_labels: tuple[str, ...] = ()  # field selectors beyond metadata.name/namespace
    return_deleted_object: bool = False  # DELETE replies with the object, not a Status
    default_gc_policy: str = "Background"
    prepare_create: PrepareHook | None = None
    normalize: NormalizeHook | None = None

    def __post_init__(self) -> None:
        self.singular = self.singular or self.kind.lower()
        self.storage_version = self.storage_version or self.versions[0]

    @property
    def key(self) -> tuple[str, str]:
        return self.group, self.plural

    @property
    def qualified(self) -> str:
        """How the apiserver names the resource in messages: ``pods``, ``jobs.batch``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def api_version(self, version: str | None = None) -> str:
        version = version or self.storage_version
        return f"{self.group}/{version}" if self.group else version

    @property
    def supported_fields(self) -> tuple[str, ...]:
        return METADATA_FIELDS + self.field_labels


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Kubernetes version ordering: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > others."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0, version)  # non-kube-like versions go last, alphabetically
    stability = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    return (stability, -int(m.group(1)), -int(m.group(3) or 0), "")


def sort_versions(versions: Iterable[str]) -> list[str]:
    return sorted(versions, key=version_priority)


# --- built-in strategies ------------------------------------------------------------------------


def _namespace_normalize(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    # The apiserver always labels namespaces with their name (for namespaceSelectors).
    name = obj["metadata"].get("name", "")
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")
    return []


def _pod_prepare(obj: dict[str, Any]) -> None:
    obj["status"] = {"phase": "Pending"}  # no kubelet here, but creation resets the status


def _pod_normalize(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("restartPolicy", "Always")
    return validate_pod_spec(spec, "spec")


def _job_prepare(obj: dict[str, Any]) -> None:
    obj["status"] = {}
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict) or spec.get("manualSelector"):
        return
    # Like the real Job strategy: a selector on the (future) uid, and matching template labels.
    # The uid is assigned before hooks run (see Store._create).
    uid, name = obj["metadata"]["uid"], obj["metadata"].get("name", "")
    labels = {
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": name,
        "controller-uid": uid,
        "job-name": name,
    }
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    template = spec.setdefault("template", {})
    if isinstance(template, dict):
        template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)


def _job_normalize(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [FieldError("spec", "Required")]
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
    pod_spec = template.get("spec") if isinstance(template.get("spec"), dict) else {}
    errors = validate_pod_spec(pod_spec, "spec.template.spec")
    policy = pod_spec.get("restartPolicy")
    if policy not in ("Never", "OnFailure"):
        errors.append(
            FieldError(
                "spec.template.spec.restartPolicy",
                "Required" if policy is None else "NotSupported",
                policy,
                'supported values: "OnFailure", "Never"',
            )
        )
    if old is not None:
        for name in ("selector", "template", "completions"):
            if spec.get(name) != (old.get("spec") or {}).get(name):
                errors.append(
                    FieldError(f"spec.{name}", "Invalid", spec.get(name), "field is immutable")
                )
    return errors


def _secret_normalize(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    # The apiserver folds write-only stringData into base64-encoded data.
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
    obj.setdefault("type", "Opaque")
    if old is not None and obj["type"] != old.get("type"):
        return [FieldError("type", "Invalid", obj["type"], "field is immutable")]
    return []


def _template_defaults(template: Any) -> None:
    """What the apiserver defaults in a pod template (core/v1 SetDefaults_PodSpec & co.)."""
    if not isinstance(template, dict):
        return
    spec = template.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            if not isinstance(container, dict):
                continue
            image = str(container.get("image") or "")
            tag = image.rsplit("/", 1)[-1].partition(":")[2] if "@" not in image else "digest"
            container.setdefault(
                "imagePullPolicy", "Always" if tag in ("", "latest") else "IfNotPresent"
            )
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("resources", {})
            for port in container.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")


def _deployment_normalize(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [FieldError("spec.selector", "Required"), FieldError("spec.template", "Required")]
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                rolling.setdefault("maxUnavailable", "25%")
                rolling.setdefault("maxSurge", "25%")
    _template_defaults(spec.get("template"))
    return _workload_errors(obj, old)


def _workload_normalize(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [FieldError("spec.selector", "Required"), FieldError("spec.template", "Required")]
    if obj.get("kind") in ("StatefulSet", "ReplicaSet"):
        spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    _template_defaults(spec.get("template"))
    return _workload_errors(obj, old)


# What an update may change in a StatefulSet's spec (ValidateStatefulSetUpdate in
# pkg/apis/apps/validation): everything else is refused whole.
STATEFULSET_MUTABLE = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
)


def _statefulset_normalize(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    spec = obj.get("spec")
    errors = _workload_normalize(obj, old)
    if old is None or not isinstance(spec, dict):
        return errors

    def fixed(s: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in s.items() if k not in STATEFULSET_MUTABLE}

    if fixed(spec) != fixed(old.get("spec") or {}):
        errors.append(
            FieldError(
                "spec",
                "Forbidden",
                None,
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', "
                "'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and "
                "'minReadySeconds' are forbidden",
            )
        )
    return errors


def storage_request(pvc: dict[str, Any]) -> Any:
    return (((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")


def storage_capacity(pvc: dict[str, Any]) -> Any:
    return ((pvc.get("status") or {}).get("capacity") or {}).get("storage")


def _same_quantity(a: Any, b: Any) -> bool:
    try:
        return a == b or parse_quantity(a) == parse_quantity(b)
    except (TypeError, ValueError):
        return False


def _pvc_normalize(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    """ValidatePersistentVolumeClaimUpdate (pkg/apis/core/validation): a claim's spec is fixed
    once made, but for its storage request, which only a bound claim may change, and never
    below what its volume already has; the binder sets volumeName once."""
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return []
    spec.setdefault("volumeMode", "Filesystem")
    if old is None:
        return []
    old_spec = old.get("spec") or {}
    bound = (old.get("status") or {}).get("phase") == "Bound"

    def fixed(s: dict[str, Any], *, volume_name: Any) -> dict[str, Any]:
        kept = {k: v for k, v in s.items() if k not in ("volumeAttributesClassName",)}
        kept["volumeName"] = volume_name
        if bound:
            resources = dict(kept.get("resources") or {})
            resources.pop("requests", None)
            kept["resources"] = resources
        return kept

    # The binder may set volumeName on a claim that has none yet.
    volume_name = old_spec.get("volumeName") or spec.get("volumeName")
    new_fixed = fixed(spec, volume_name=volume_name)
    old_fixed = fixed(old_spec, volume_name=volume_name)
    if not bound and _same_quantity(storage_request(obj), storage_request(old)):
        new_fixed.pop("resources", None)
        old_fixed.pop("resources", None)
    if new_fixed != old_fixed:
        return [
            FieldError(
                "spec",
                "Forbidden",
                None,
                "spec is immutable after creation except resources.requests and "
                "volumeAttributesClassName for bound claims",
            )
        ]
    capacity = storage_capacity(old)
    try:
        shrunk = capacity is not None and parse_quantity(storage_request(obj)) < parse_quantity(
            capacity
        )
    except (TypeError, ValueError):
        shrunk = False
    if shrunk:
        return [
            FieldError(
                "spec.resources.requests.storage",
                "Forbidden",
                None,
                "field can not be less than status.capacity",
            )
        ]
    return []


def _workload_errors(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    """apps/v1 validation that operators hit: a selector that matches the template labels."""
    spec = obj["spec"]
    errors: list[FieldError] = []
    selector = spec.get("selector")
    template = spec.get("template") if isinstance(spec.get("template"), dict) else None
    if not isinstance(selector, dict) or not selector:
        errors.append(FieldError("spec.selector", "Required"))
    if template is None:
        errors.append(FieldError("spec.template", "Required"))
        return errors
    errors.extend(validate_pod_spec(template.get("spec"), "spec.template.spec"))
    labels = (template.get("metadata") or {}).get("labels") or {}
    wanted = (selector or {}).get("matchLabels") or {}
    if (
        isinstance(selector, dict)
        and selector
        and any(labels.get(k) != v for k, v in wanted.items())
    ):
        errors.append(
            FieldError(
                "spec.template.metadata.labels",
                "Invalid",
                labels,
                "`selector` does not match template `labels`",
            )
        )
    if old is not None and selector != (old.get("spec") or {}).get("selector"):
        errors.append(FieldError("spec.selector", "Invalid", selector, "field is immutable"))
    return errors


# The emulated cluster's service range (--service-cluster-ip-range) is 127.96.0.0/11, inside
# loopback: a test standing in for a Service's pods can listen on the ClusterIP itself, and
# every process on this machine reaches it there, as pods reach a ClusterIP through kube-proxy.
SERVICE_RANGE_BASE = (127 << 24) | (96 << 16)
SERVICE_RANGE_SIZE = 1 << 21


def cluster_ip(uid: str) -> str:
    """A ClusterIP for the Service with this uid: spread over the range by a hash, so that
    emulators in different processes hardly ever hand out the same address."""
    offset = int(hashlib.sha256(uid.encode()).hexdigest(), 16) % (SERVICE_RANGE_SIZE - 2) + 1
    address = SERVICE_RANGE_BASE + offset
    return ".".join(str((address >> shift) & 255) for shift in (24, 16, 8, 0))


def _service_normalize(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return []
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    errors: list[FieldError] = []
    if spec["type"] != "ExternalName":
        old_spec = (old or {}).get("spec") or {}
        given, kept = spec.get("clusterIP"), old_spec.get("clusterIP")
        if old is not None and given and kept and given != kept:
            # ValidateServiceUpdate: the address (or "None" of a headless Service) stays.
            errors.append(
                FieldError("spec.clusterIPs[0]", "Invalid", [given], "may not change once set")
            )
        if not spec.get("clusterIP"):
            # Allocated once, kept by updates (as the real IP allocator does).
            spec["clusterIP"] = old_spec.get("clusterIP") or cluster_ip(
                obj["metadata"].get("uid", "")
            )
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if "port" in port:
                port.setdefault("targetPort", port["port"])
    return errors


def _cronjob_normalize(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [FieldError("spec.schedule", "Required")]
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    errors = [] if spec.get("schedule") else [FieldError("spec.schedule", "Required")]
    job = spec.get("jobTemplate")
    if isinstance(job, dict):
        _template_defaults((job.get("spec") or {}).get("template"))
    return errors


def _with_generation(**kwargs: Any) -> dict[str, Any]:
    return {"has_generation": True, **kwargs}


def _more_builtin_types() -> list[ResourceType]:
    """Kinds that charts and operators create; nothing reconciles them here."""
    all_ = ("all",)
    status = frozenset({"status"})
    api_ext = ("api-extensions",)
    rbac = "rbac.authorization.k8s.io"
    admission = "admissionregistration.k8s.io"
    return [
        ResourceType(
            "",
            ["v1"],
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            short_names=("pvc",),
            subresources=status,
            normalize=_pvc_normalize,
        ),
        ResourceType(
            "",
            ["v1"],
            "persistentvolumes",
            "PersistentVolume",
            namespaced=False,
            short_names=("pv",),
            subresources=status,
        ),
        ResourceType("", ["v1"], "endpoints", "Endpoints", short_names=("ep",)),
        ResourceType(
            "",
            ["v1"],
            "resourcequotas",
            "ResourceQuota",
            short_names=("quota",),
            subresources=status,
        ),
        ResourceType("", ["v1"], "limitranges", "LimitRange", short_names=("limits",)),
        ResourceType(
            "apps",
            ["v1"],
            "deployments",
            "Deployment",
            short_names=("deploy",),
            categories=all_,
            subresources=status,
            normalize=_deployment_normalize,
            **_with_generation(),
        ),
        ResourceType(
            "apps",
            ["v1"],
            "statefulsets",
            "StatefulSet",
            short_names=("sts",),
            categories=all_,
            subresources=status,
            normalize=_statefulset_normalize,
            **_with_generation(),
        ),
        ResourceType(
            "apps",
            ["v1"],
            "replicasets",
            "ReplicaSet",
            short_names=("rs",),
            categories=all_,
            subresources=status,
            normalize=_workload_normalize,
            **_with_generation(),
        ),
        ResourceType(
            "apps",
            ["v1"],
            "daemonsets",
            "DaemonSet",
            short_names=("ds",),
            categories=all_,
            subresources=status,
            normalize=_workload_normalize,
            **_with_generation(),
        ),
        ResourceType(
            "batch",
            ["v1"],
            "cronjobs",
            "CronJob",
            short_names=("cj",),
            categories=all_,
            subresources=status,
            normalize=_cronjob_normalize,
            **_with_generation(),
        ),
        ResourceType(
            "autoscaling",
            ["v2"],
            "horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
            short_names=("hpa",),
            categories=all_,
            subresources=status,
        ),
        ResourceType(
            "policy",
            ["v1"],
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            short_names=("pdb",),
            subresources=status,
            **_with_generation(),
        ),
        ResourceType(
            "networking.k8s.io",
            ["v1"],
            "networkpolicies",
            "NetworkPolicy",
            short_names=("netpol",),
            **_with_generation(),
        ),
        ResourceType(
            "networking.k8s.io",
            ["v1"],
            "ingresses",
            "Ingress",
            short_names=("ing",),
            subresources=status,
            **_with_generation(),
        ),
        ResourceType(rbac, ["v1"], "clusterroles", "ClusterRole", namespaced=False),
        ResourceType(rbac, ["v1"], "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
        ResourceType(rbac, ["v1"], "roles", "Role"),
        ResourceType(rbac, ["v1"], "rolebindings", "RoleBinding"),
        ResourceType(
            admission,
            ["v1"],
            "validatingadmissionpolicies",
            "ValidatingAdmissionPolicy",
            namespaced=False,
            categories=api_ext,
            subresources=status,
            **_with_generation(),
        ),
        ResourceType(
            admission,
            ["v1"],
            "validatingadmissionpolicybindings",
            "ValidatingAdmissionPolicyBinding",
            namespaced=False,
            categories=api_ext,
            **_with_generation(),
        ),
        ResourceType(
            admission,
            ["v1"],
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            namespaced=False,
            categories=api_ext,
        ),
        ResourceType(
            admission,
            ["v1"],
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            namespaced=False,
            categories=api_ext,
        ),
        ResourceType(
            "storage.k8s.io",
            ["v1"],
            "storageclasses",
            "StorageClass",
            namespaced=False,
            short_names=("sc",),
        ),
    ]


def builtin_types() -> list[ResourceType]:
    from .crds import crd_normalize  # the CRD strategy lives with the CRD machinery

    all_ = ("all",)
    status = frozenset({"status"})
    return [
        ResourceType(
            "",
            ["v1"],
            "namespaces",
            "Namespace",
            namespaced=False,
            short_names=("ns",),
            subresources=status,
            field_labels=("status.phase",),
            normalize=_namespace_normalize,
        ),
        ResourceType(
            "",
            ["v1"],
            "pods",
            "Pod",
            short_names=("po",),
            categories=all_,
            subresources=status,
            has_generation=True,
            return_deleted_object=True,
            field_labels=(
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "status.phase",
                "status.podIP",
            ),
            prepare_create=_pod_prepare,
            normalize=_pod_normalize,
        ),
        ResourceType(
            "", ["v1"], "secrets", "Secret", field_labels=("type",), normalize=_secret_normalize
        ),
        ResourceType("", ["v1"], "configmaps", "ConfigMap", short_names=("cm",)),
        ResourceType(
            "",
            ["v1"],
            "events",
            "Event",
            short_names=("ev",),
            field_labels=(
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "reason",
                "type",
                "reportingComponent",
                "source",
            ),
        ),
        ResourceType("", ["v1"], "serviceaccounts", "ServiceAccount", short_names=("sa",)),
        ResourceType(
            "",
            ["v1"],
            "services",
            "Service",
            short_names=("svc",),
            categories=all_,
            subresources=status,
            normalize=_service_normalize,
        ),
        # batch/v1 Jobs orphan their pods by default on deletion (a real, surprising quirk).
        ResourceType(
            "batch",
            ["v1"],
            "jobs",
            "Job",
            categories=all_,
            subresources=status,
            has_generation=True,
            default_gc_policy="Orphan",
            field_labels=("status.successful",),
            prepare_create=_job_prepare,
            normalize=_job_normalize,
        ),
        ResourceType(
            "events.k8s.io",
            ["v1"],
            "events",
            "Event",
            short_names=("ev",),
            field_labels=(
                "reason",
                "type",
                "regarding.kind",
                "regarding.name",
                "regarding.namespace",
                "regarding.uid",
            ),
        ),
        ResourceType("coordination.k8s.io", ["v1"], "leases", "Lease"),
        ResourceType(
            "apiextensions.k8s.io",
            ["v1"],
            "customresourcedefinitions",
            "CustomResourceDefinition",
            namespaced=False,
            short_names=("crd", "crds"),
            categories=("api-extensions",),
            subresources=status,
            has_generation=True,
            normalize=crd_normalize,
        ),
        *_more_builtin_types(),
    ]


# --- discovery documents ------------------------------------------------------------------------


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group_info(group: str, types: list[ResourceType]) -> dict[str, Any]:
    versions = sort_versions({v for rt in types if rt.group == group for v in rt.versions})
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(types: list[ResourceType]) -> dict[str, Any]:
    groups = list(dict.fromkeys(rt.group for rt in types if rt.group))  # in registration order
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_info(g, types) for g in groups],
    }


def api_group(group: str, types: list[ResourceType]) -> dict[str, Any]:
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_info(group, types)}


def api_resource_list(group: str, version: str, types: list[ResourceType]) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for rt in types:
        if rt.group != group or version not in rt.versions:
            continue
        entry: dict[str, Any] = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(ALL_VERBS),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        resources.append(entry)
        for sub in sorted(rt.subresources):
            resources.append(
                {
                    "name": f"{rt.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": list(SUBRESOURCE_VERBS),
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
