"""spec.tls: the cert-manager objects validated against the upstream CRDs' schemas, the servers
and clients valid for the API server (kubernetes-validate --strict), and what each one is told:
PostgreSQL ssl on with a pg_hba that takes only TLS from the network, Redis on its TLS port
only, the dashboard over HTTPS, every client verify-full against the CA alone."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate

from eval_api.v1alpha1 import EvalSuiteSpec
from eval_operator.builders import dashboard, monitoring, tls
from eval_operator.builders import suite as builders
from tests.support.thirdparty import unknown_fields, upstream_schema
from tests.unit.test_suite_builders import K8S_VERSION, SETTINGS, suite_object

ON = {"tls": {"enabled": True}, "monitoring": {"enabled": True}}


def stack(spec_raw: dict[str, Any]) -> tuple[dict[str, Any], EvalSuiteSpec, list[dict[str, Any]]]:
    suite = suite_object(spec_raw)
    spec = EvalSuiteSpec.model_validate(spec_raw)
    objects = builders.desired_objects(suite, spec, SETTINGS)
    objects = monitoring.with_exporters(objects, suite, spec, SETTINGS)
    objects += dashboard.dashboard_objects(suite, spec, SETTINGS)
    objects += monitoring.prometheus_objects(suite, spec)
    return suite, spec, tls.with_tls_servers(objects, suite, spec)


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def test_the_default_chain_and_the_certificates_are_valid_cert_manager_objects() -> None:
    suite, spec, _ = stack(ON)
    objects = tls.cert_manager_objects(suite, spec)
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Issuer", "stack-selfsigned"),
        ("Certificate", "stack-ca"),
        ("Issuer", "stack-ca-issuer"),
        ("Certificate", "stack-store-tls"),
        ("Certificate", "stack-cache-tls"),
        ("Certificate", "stack-dashboard-tls"),
    ]
    for obj in objects:
        schema = upstream_schema(obj["kind"])
        jsonschema.validate(obj, schema)
        assert unknown_fields(obj, schema) == [], obj["metadata"]["name"]
    store = find(objects, "Certificate", "stack-store-tls")["spec"]
    assert "stack-store.team-a.svc" in store["dnsNames"]
    assert "stack-store-0.stack-store-headless.team-a.svc" in store["dnsNames"]
    assert store["issuerRef"] == {
        "name": "stack-ca-issuer",
        "kind": "Issuer",
        "group": "cert-manager.io",
    }
    assert (store["duration"], store["renewBefore"]) == ("2160h", "720h")
    assert store["privateKey"]["rotationPolicy"] == "Always"


def test_a_given_issuer_replaces_the_chain() -> None:
    raw = {"tls": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}}
    suite, spec, _ = stack(raw)
    objects = tls.cert_manager_objects(suite, spec)
    assert {o["kind"] for o in objects} == {"Certificate"}
    for obj in objects:
        assert obj["spec"]["issuerRef"] == {
            "name": "corp-ca",
            "kind": "ClusterIssuer",
            "group": "cert-manager.io",
        }


def test_the_servers_use_their_certificates() -> None:
    _, _, objects = stack(ON)
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com"):
            schema = upstream_schema(obj["kind"])
            jsonschema.validate(obj, schema)
            assert unknown_fields(obj, schema) == []
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    config = find(objects, "ConfigMap", "stack-store-config")["data"]
    assert "ssl = on" in config["postgresql.conf"]
    assert "hba_file = '/etc/postgresql/pg_hba.conf'" in config["postgresql.conf"]
    hba = [line for line in config["pg_hba.conf"].splitlines() if not line.startswith("#")]
    # TLS only over the network: no host line, the socket for the pod's own containers.
    assert [line.split()[0] for line in hba if line.strip()] == ["local", "hostssl"]
    sts = find(objects, "StatefulSet", "stack-store")["spec"]["template"]
    (volume,) = [v for v in sts["spec"]["volumes"] if v["name"] == "tls"]
    assert volume["secret"]["secretName"] == "stack-store-tls"
    assert volume["secret"]["defaultMode"] == 0o440
    redis_conf = find(objects, "ConfigMap", "stack-cache-config")["data"]["redis.conf"]
    assert "port 0\n" in redis_conf and "tls-port 6379\n" in redis_conf
    assert "\nport 6379\n" not in redis_conf
    cache = find(objects, "Deployment", "stack-cache")["spec"]["template"]["spec"]
    assert "--tls" in cache["containers"][0]["readinessProbe"]["exec"]["command"][2]
    exporter = {e["name"]: e.get("value") for e in cache["containers"][1]["env"]}
    assert exporter["REDIS_ADDR"] == "rediss://localhost:6379"
    dash = find(objects, "Deployment", "stack-dashboard")["spec"]["template"]["spec"]
    container = dash["containers"][0]
    assert container["args"][-4:] == [
        "--tls-cert",
        "/etc/eval/dashboard-tls/tls.crt",
        "--tls-key",
        "/etc/eval/dashboard-tls/tls.key",
    ]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    service = find(objects, "Service", "stack-dashboard")["spec"]["ports"]
    assert service == [{"name": "https", "port": 443, "targetPort": "http", "protocol": "TCP"}]
    sm = find(objects, "ServiceMonitor", "stack-dashboard")["spec"]["endpoints"][0]
    assert sm["scheme"] == "https" and sm["tlsConfig"]["serverName"] == "stack-dashboard.team-a.svc"


def test_the_clients_verify_full_against_the_ca_alone() -> None:
    suite, spec, objects = stack(ON)
    migration = tls.with_tls_clients(
        builders.build_migration_job(suite, spec, 5, SETTINGS), "stack", spec
    )
    backup = tls.with_tls_clients(find(objects, "CronJob", "stack-store-backup"), "stack", spec)
    dash = tls.with_tls_clients(find(objects, "Deployment", "stack-dashboard"), "stack", spec)
    for obj in (migration, backup, dash):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    pod = migration["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["EVAL_STORE_SSLMODE"] == "verify-full"
    assert env["EVAL_STORE_SSLROOTCERT"] == "/etc/eval/stack-ca/store-ca.crt"
    assert env["EVAL_CACHE_CA_FILE"] == "/etc/eval/stack-ca/cache-ca.crt"
    (ca,) = [v for v in pod["volumes"] if v["name"] == "stack-ca"]
    keys = [i["key"] for s in ca["projected"]["sources"] for i in s["secret"]["items"]]
    assert keys == ["ca.crt", "ca.crt"]  # never tls.key
    cron = backup["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    cron_env = {e["name"]: e.get("value") for e in cron}
    assert cron_env["PGSSLMODE"] == "verify-full"
    dash_env = {
        e["name"]: e.get("value") for e in dash["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert dash_env["EVAL_STORE_SSLMODE"] == "verify-full"
    assert dash_env["EVAL_CACHE_CA_FILE"] == "/etc/eval/stack-ca/cache-ca.crt"


def test_an_external_store_keeps_its_own_tls_settings() -> None:
    raw = {
        "tls": {"enabled": True},
        "store": {
            "mode": "External",
            "external": {"secretRef": {"name": "pg"}, "sslmode": "require"},
        },
        "cache": {"mode": "Disabled"},
        "dashboard": {"enabled": False},
    }
    suite, spec, _ = stack(raw)
    assert tls.cert_manager_objects(suite, spec)[3:] == []  # the chain, no certificate
    job = tls.with_tls_clients(
        builders.build_migration_job(suite, spec, 5, SETTINGS), "stack", spec
    )
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["EVAL_STORE_SSLMODE"] == "require" and "EVAL_STORE_SSLROOTCERT" not in env


def test_tls_is_off_without_cert_manager() -> None:
    spec = EvalSuiteSpec.model_validate(ON)
    assert tls.active(spec, cert_manager=True) and not tls.active(spec, cert_manager=False)
    assert not tls.active(EvalSuiteSpec.model_validate({}), cert_manager=True)
