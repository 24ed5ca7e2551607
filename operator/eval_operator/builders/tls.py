"""TLS inside an EvalSuite's stack (spec.tls), with cert-manager: pure builders.

- the issuers: the user's (spec.tls.issuerRef), or a self-signed bootstrap Issuer that signs a
  CA Certificate <suite>-ca, and a CA Issuer of that CA;
- one Certificate per server (the managed store, the managed cache, the dashboard) for the DNS
  names of its Services, renewed renewBefore its end, its key rotated at each renewal;
- the servers using them: PostgreSQL with ssl on and a pg_hba that takes only TLS from the
  network (loopback, for the exporter sidecar, and the pod's socket excepted); Redis on its
  TLS port only; the dashboard over HTTPS;
- the clients verifying them (`with_tls_clients`): sslmode verify-full against the CA of the
  store's certificate (key ca.crt of its Secret, mounted alone), the cache URL taken as
  rediss:// with the same kind of CA file.

TLS is on only where the spec asks for it and cert-manager's API is served
(eval_operator.platforms): otherwise the stack runs as without it and TLSReady says why. While
discovery has not said whether it is served (unknown, never taken for absent), `stack_objects`
holds back every object TLS would change: what exists stays as it is, neither stripped of TLS
nor given it, and is not pruned.

A renewed certificate reaches PostgreSQL and Redis by a rollout (the dashboard re-reads its own
files): the Certificate's status.revision (cert-manager counts its issuances, and writes the
Secret before the revision) is an annotation of the server's pod template, so a renewal makes
a new pod that mounts the new Secret. Both servers read their files again only when told
(PostgreSQL on SIGHUP, Redis on CONFIG SET tls-cert-file), which takes a process in the pod
timed to the kubelet's refresh of the volume, which nothing outside the pod can see; a rollout
needs no sidecar, no exec permission and no guess, and fails loudly if the new certificate is
wrong. It costs the store a restart of seconds once per renewal (every 60 days by default),
which the runners ride out as any store outage. Revision 1 is the certificate a pod starts
with (it cannot start before its Secret exists), so only renewals change the template.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import Any

from eval_api import environment
from eval_api.v1alpha1.evalsuite import EvalSuiteSpec
from eval_operator.builders import dashboard as dashboards
from eval_operator.builders.suite import (
    REDIS_PORT,
    _meta,
    cache_name,
    child_name,
    managed_cache,
    managed_store,
    store_name,
)

CERT_API = "cert-manager.io/v1"
STORE_TLS_DIR = "/etc/postgresql/tls"
CACHE_TLS_DIR = "/etc/redis-tls"
DASHBOARD_TLS_DIR = "/etc/eval/dashboard-tls"
CLIENT_CA_DIR = "/etc/eval/stack-ca"
STORE_CA_FILE = f"{CLIENT_CA_DIR}/store-ca.crt"
CACHE_CA_FILE = f"{CLIENT_CA_DIR}/cache-ca.crt"
CA_FILES = {"store": STORE_CA_FILE, "cache": CACHE_CA_FILE}
DASHBOARD_HTTPS_PORT = 443
# The pod template annotation that carries the certificate's revision (from the first renewal).
REVISION_ANNOTATION = "evals.io/tls-revision"
POD_KINDS = ("StatefulSet", "Deployment", "CronJob", "Job")
# Files of a Secret volume belong to root, group fsGroup: PostgreSQL takes a key owned by root
# with at most u=rw,g=r.
KEY_MODE = 0o440


def active(spec: EvalSuiteSpec, cert_manager: bool | None) -> bool:
    return spec.tls.enabled and cert_manager is True


def undecided(spec: EvalSuiteSpec, cert_manager: bool | None) -> bool:
    """spec.tls asks for TLS, and whether cert-manager is served is not known yet."""
    return spec.tls.enabled and cert_manager is None


def _revised(template: dict[str, Any], revision: int | None) -> None:
    if revision is not None and revision > 1:
        template["metadata"].setdefault("annotations", {})[REVISION_ANNOTATION] = str(revision)


def tls_secret(suite: str, component: str) -> str:
    return child_name(suite, f"{component}-tls")


def ca_secret(suite: str) -> str:
    return child_name(suite, "ca")


def _issuer_ref(suite_name: str, spec: EvalSuiteSpec) -> dict[str, str]:
    given = spec.tls.issuer_ref
    if given is not None:
        return {"name": given.name, "kind": given.kind, "group": given.group}
    return {
        "name": child_name(suite_name, "ca-issuer"),
        "kind": "Issuer",
        "group": "cert-manager.io",
    }


def build_issuers(suite: Mapping[str, Any], spec: EvalSuiteSpec) -> list[dict[str, Any]]:
    """The self-signed bootstrap chain, when no issuerRef is given."""
    if spec.tls.issuer_ref is not None:
        return []
    name = suite["metadata"]["name"]
    bootstrap = child_name(name, "selfsigned")
    return [
        {
            "apiVersion": CERT_API,
            "kind": "Issuer",
            "metadata": _meta(suite, bootstrap, "tls", "eval-operator"),
            "spec": {"selfSigned": {}},
        },
        {
            "apiVersion": CERT_API,
            "kind": "Certificate",
            "metadata": _meta(suite, ca_secret(name), "tls", "eval-operator"),
            "spec": {
                "isCA": True,
                "commonName": f"{name} stack CA",
                "secretName": ca_secret(name),
                "duration": "87600h",  # ten years: the CA outlives its certificates
                "renewBefore": "720h",
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                "issuerRef": {"name": bootstrap, "kind": "Issuer", "group": "cert-manager.io"},
            },
        },
        {
            "apiVersion": CERT_API,
            "kind": "Issuer",
            "metadata": _meta(suite, child_name(name, "ca-issuer"), "tls", "eval-operator"),
            "spec": {"ca": {"secretName": ca_secret(name)}},
        },
    ]


def service_names(service: str, namespace: str) -> list[str]:
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _certificate(
    suite: Mapping[str, Any], spec: EvalSuiteSpec, component: str, dns_names: list[str]
) -> dict[str, Any]:
    name = suite["metadata"]["name"]
    return {
        "apiVersion": CERT_API,
        "kind": "Certificate",
        "metadata": _meta(suite, tls_secret(name, component), "tls", "eval-operator"),
        "spec": {
            "secretName": tls_secret(name, component),
            "commonName": dns_names[2],
            "dnsNames": dns_names,
            "duration": spec.tls.duration,
            "renewBefore": spec.tls.renew_before,
            "usages": ["server auth", "digital signature", "key encipherment"],
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "issuerRef": _issuer_ref(name, spec),
        },
    }


def certificate_names(suite_name: str, spec: EvalSuiteSpec) -> list[str]:
    """The Certificates the suite's servers use (what TLSReady waits for)."""
    found = []
    if managed_store(spec):
        found.append(tls_secret(suite_name, "store"))
    if managed_cache(spec):
        found.append(tls_secret(suite_name, "cache"))
    if dashboards.wanted(spec):
        found.append(tls_secret(suite_name, "dashboard"))
    return found


def build_certificates(suite: Mapping[str, Any], spec: EvalSuiteSpec) -> list[dict[str, Any]]:
    name, namespace = suite["metadata"]["name"], suite["metadata"]["namespace"]
    found = []
    if managed_store(spec):
        headless = child_name(name, "store-headless")
        names = service_names(store_name(name), namespace) + service_names(headless, namespace)
        names.append(f"{store_name(name)}-0.{headless}.{namespace}.svc")
        found.append(_certificate(suite, spec, "store", names))
    if managed_cache(spec):
        found.append(_certificate(suite, spec, "cache", service_names(cache_name(name), namespace)))
    if dashboards.wanted(spec):
        dns = service_names(dashboards.dashboard_name(name), namespace)
        found.append(_certificate(suite, spec, "dashboard", dns))
    return found


def cert_manager_objects(suite: Mapping[str, Any], spec: EvalSuiteSpec) -> list[dict[str, Any]]:
    return build_issuers(suite, spec) + build_certificates(suite, spec)


# --- the servers ---------------------------------------------------------------------------


def pg_hba() -> str:
    return "\n".join(
        [
            "# Generated by eval-operator: over the network, TLS only.",
            # The pod's own socket (the image's init and probes, the exporter sidecar): an
            # emptyDir no other pod reaches.
            "local all all trust",
            "hostssl all all all scram-sha-256",
            "",
        ]
    )


def _secret_volume(name: str, secret: str, items: list[tuple[str, str]], mode: int) -> dict:
    return {
        "name": name,
        "secret": {
            "secretName": secret,
            "defaultMode": mode,
            "items": [{"key": key, "path": path} for key, path in items],
        },
    }


def _config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    return next((o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name), None)


def _store_server(objects: list[dict[str, Any]], name: str, revision: int | None) -> None:
    config = _find(objects, "ConfigMap", child_name(name, "store-config"))
    sts = _find(objects, "StatefulSet", store_name(name))
    if config is None or sts is None:
        return
    config["data"]["postgresql.conf"] += "\n".join(
        [
            "# spec.tls: cert-manager's certificate; the network takes TLS only (pg_hba.conf).",
            "ssl = on",
            f"ssl_cert_file = '{STORE_TLS_DIR}/tls.crt'",
            f"ssl_key_file = '{STORE_TLS_DIR}/tls.key'",
            "ssl_min_protocol_version = 'TLSv1.2'",
            "hba_file = '/etc/postgresql/pg_hba.conf'",
            "",
        ]
    )
    config["data"]["pg_hba.conf"] = pg_hba()
    template = _pod(sts)
    template["metadata"]["annotations"]["evals.io/config-hash"] = _config_hash(
        config["data"]["postgresql.conf"] + config["data"]["pg_hba.conf"]
    )
    _revised(template, revision)
    pod = template["spec"]
    pod["volumes"].append(
        _secret_volume(
            "tls",
            tls_secret(name, "store"),
            [("tls.crt", "tls.crt"), ("tls.key", "tls.key")],
            KEY_MODE,
        )
    )
    pod["containers"][0]["volumeMounts"].append(
        {"name": "tls", "mountPath": STORE_TLS_DIR, "readOnly": True}
    )


def _cache_server(objects: list[dict[str, Any]], name: str, revision: int | None) -> None:
    config = _find(objects, "ConfigMap", child_name(name, "cache-config"))
    deployment = _find(objects, "Deployment", cache_name(name))
    if config is None or deployment is None:
        return
    key = next(iter(config["data"]))
    config["data"][key] = config["data"][key].replace(
        f"port {REDIS_PORT}\n",
        "\n".join(
            [
                "# spec.tls: the TLS port only.",
                "port 0",
                f"tls-port {REDIS_PORT}",
                f"tls-cert-file {CACHE_TLS_DIR}/tls.crt",
                f"tls-key-file {CACHE_TLS_DIR}/tls.key",
                f"tls-ca-cert-file {CACHE_TLS_DIR}/ca.crt",
                "tls-auth-clients no",
                "",
            ]
        ),
    )
    template = _pod(deployment)
    annotations = template["metadata"].setdefault("annotations", {})
    annotations["evals.io/config-hash"] = _config_hash(config["data"][key])
    _revised(template, revision)
    pod = template["spec"]
    pod["volumes"].append(
        _secret_volume(
            "tls",
            tls_secret(name, "cache"),
            [("tls.crt", "tls.crt"), ("tls.key", "tls.key"), ("ca.crt", "ca.crt")],
            KEY_MODE,
        )
    )
    redis = pod["containers"][0]
    redis["volumeMounts"].append({"name": "tls", "mountPath": CACHE_TLS_DIR, "readOnly": True})
    # The probe is the pod's own, on loopback: the certificate names the Service, not
    # 127.0.0.1, so it is not verified there (clients verify it).
    probe = [
        "sh",
        "-c",
        f"exec redis-cli --tls --insecure -h 127.0.0.1 -p {REDIS_PORT} ping | grep -q PONG",
    ]
    for kind in ("readinessProbe", "livenessProbe"):
        redis[kind]["exec"]["command"] = probe
    for exporter in pod["containers"][1:]:  # redis_exporter, with spec.monitoring
        for entry in exporter.get("env", []):
            if entry["name"] == "REDIS_ADDR":
                entry["value"] = f"rediss://localhost:{REDIS_PORT}"
        exporter["env"].append({"name": "REDIS_EXPORTER_SKIP_TLS_VERIFICATION", "value": "true"})


def _dashboard_server(objects: list[dict[str, Any]], name: str) -> None:
    for obj in objects:
        if obj["metadata"]["name"] != dashboards.dashboard_name(name):
            continue
        if obj["kind"] == "Deployment":
            pod = _pod(obj)["spec"]
            container = pod["containers"][0]
            container["args"] += [
                "--tls-cert",
                f"{DASHBOARD_TLS_DIR}/tls.crt",
                "--tls-key",
                f"{DASHBOARD_TLS_DIR}/tls.key",
            ]
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                container[probe]["httpGet"]["scheme"] = "HTTPS"
            pod["volumes"].append(
                _secret_volume(
                    "tls",
                    tls_secret(name, "dashboard"),
                    [("tls.crt", "tls.crt"), ("tls.key", "tls.key")],
                    0o400,
                )
            )
            container["volumeMounts"].append(
                {"name": "tls", "mountPath": DASHBOARD_TLS_DIR, "readOnly": True}
            )
        elif obj["kind"] == "Service":
            obj["spec"]["ports"] = [
                {
                    "name": "https",
                    "port": DASHBOARD_HTTPS_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                }
            ]
        elif obj["kind"] == "ServiceMonitor":
            (endpoint,) = obj["spec"]["endpoints"]
            host = service_names(dashboards.dashboard_name(name), obj["metadata"]["namespace"])[2]
            endpoint.update(
                port="https",
                scheme="https",
                tlsConfig={
                    "ca": {"secret": {"name": tls_secret(name, "dashboard"), "key": "ca.crt"}},
                    "serverName": host,
                },
            )


def with_tls_servers(
    objects: list[dict[str, Any]],
    suite: Mapping[str, Any],
    spec: EvalSuiteSpec,
    revisions: Mapping[str, int | None] | None = None,
) -> list[dict[str, Any]]:
    """The stack's objects with the servers on TLS (copies; the input is kept); `revisions`:
    the status.revision of each Certificate by name, which rolls its server on renewal."""
    found = copy.deepcopy(objects)
    name = suite["metadata"]["name"]
    revisions = revisions or {}
    _store_server(found, name, revisions.get(tls_secret(name, "store")))
    _cache_server(found, name, revisions.get(tls_secret(name, "cache")))
    _dashboard_server(found, name)  # it re-reads its renewed certificate itself
    return found


def stack_objects(
    objects: list[dict[str, Any]],
    suite: Mapping[str, Any],
    spec: EvalSuiteSpec,
    cert_manager: bool | None,
    revisions: Mapping[str, int | None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(what to apply, what to keep as it is) of the stack's objects under spec.tls: with
    cert-manager served, the servers on TLS, the issuers and certificates, and every pod's
    clients verifying them; without it, the objects as they are; while it is unknown, only
    the objects TLS does not change, the others kept as they are (not applied, not pruned)."""
    if not spec.tls.enabled or cert_manager is False:
        return objects, []
    name = suite["metadata"]["name"]
    secured = with_tls_servers(objects, suite, spec, revisions) + cert_manager_objects(suite, spec)
    secured = [
        with_tls_clients(obj, name, spec) if obj["kind"] in POD_KINDS else obj for obj in secured
    ]
    if cert_manager:
        return secured, []
    same = {(o["kind"], o["metadata"]["name"]): o for o in secured}
    apply = [o for o in objects if same.get((o["kind"], o["metadata"]["name"])) == o]
    kept = [o for o in objects if same.get((o["kind"], o["metadata"]["name"])) != o]
    return apply, kept


# --- the clients ---------------------------------------------------------------------------


def with_tls_clients(obj: dict[str, Any], suite_name: str, spec: EvalSuiteSpec) -> dict[str, Any]:
    """A pod-bearing object of the suite (a runner Job, the migration, a report, the
    dashboard, the backup CronJob) whose store and cache clients verify the servers'
    certificates (a copy). Only the managed servers are ours to verify: an external store
    keeps its own sslmode and caBundle."""
    found = copy.deepcopy(obj)
    pod = _pod(found)["spec"]
    verified: set[str] = set()  # the servers some container here connects to
    for container in pod.get("containers", []):
        env = container.get("env", [])
        names = {e["name"] for e in env}
        uses_store = False
        for entry in env:
            if managed_store(spec) and entry["name"] == environment.STORE_SSLMODE:
                entry["value"] = "verify-full"
                uses_store = True
            if managed_store(spec) and entry["name"] == "PGHOST":  # pg_dump's libpq
                uses_store = True
        if uses_store:
            if "PGHOST" in names:
                env += [
                    {"name": "PGSSLMODE", "value": "verify-full"},
                    {"name": "PGSSLROOTCERT", "value": STORE_CA_FILE},
                ]
            else:
                env.append({"name": environment.STORE_SSLROOTCERT, "value": STORE_CA_FILE})
            verified.add("store")
        # The cache's URL (runners, the migration) or endpoint (the dashboard's ping).
        uses_cache = managed_cache(spec) and bool(
            names & {environment.CACHE_URL, environment.CACHE_ENDPOINT}
        )
        if uses_cache:
            env.append({"name": environment.CACHE_CA_FILE, "value": CACHE_CA_FILE})
            verified.add("cache")
        if uses_store or uses_cache:
            mounts = container.setdefault("volumeMounts", [])
            if not any(m["name"] == "stack-ca" for m in mounts):
                mounts.append({"name": "stack-ca", "mountPath": CLIENT_CA_DIR, "readOnly": True})
    if verified:
        sources = [
            {
                "secret": {
                    "name": tls_secret(suite_name, component),
                    "items": [{"key": "ca.crt", "path": CA_FILES[component].rsplit("/", 1)[1]}],
                }
            }
            for component in sorted(verified)
        ]
        pod.setdefault("volumes", []).append(
            {"name": "stack-ca", "projected": {"sources": sources, "defaultMode": 0o444}}
        )
    return found
