"""An EvalSuite's NetworkPolicies (spec.networkPolicy): default deny, then what the stack needs.

Every pod of the suite carries the label evals.io/suite=<suite> (the store and cache pods, the
migration, cell report, comparison and backup Jobs' pods, and the runner pods of every
Evaluation in the suite), and `app.kubernetes.io/component` says which it is. Who may talk to
whom (tests/unit/test_netpol.py evaluates these policies with the NetworkPolicy semantics):

- the store (5432): from the runners, the migration, the cell reports and comparisons, the
  backups; nothing else, and it reaches nothing;
- the cache (6379): from the runners and the migration (which pings it);
- the runners: to the store, the cache, DNS and the model endpoints (spec.networkPolicy
  modelEgressCIDRs / modelEgressPorts; default any address on 443, 80 and the ports of the
  baseURLs of the suite's models and judges and of the Evaluations in it), which is also how
  they reach the Hugging Face Hub (the operator's HF_ENDPOINT's port too, for a mirror on a
  port of its own); from the operator only, on their progress port;
- the migration, report and backup Jobs: to the store (the migration also the cache) and DNS;
- with spec.monitoring: Prometheus (spec.networkPolicy.prometheusFrom, default the namespace
  monitoring) to the metrics ports: runners' progress port, the dashboard, the exporters;
- the dashboard (8080): from spec.networkPolicy.dashboardFrom (default the ingress controller's
  namespace, ingress-nginx); to the store, the cache (its readiness ping) and DNS: never to a
  model endpoint;
- an external store (cache): its clients reach it where spec.networkPolicy storeEgress
  (cacheEgress) says, in place of the managed pods. Without it, its default port (5432, 6379)
  at any address: a default-deny policy must not break a mode the user chose, the managed
  pods' rules do not apply, and the opening is as narrow as the operator can know it (the
  address is in the user's Secret, which the operator does not read); it mirrors the model
  endpoints' default (any address on 443 and 80). Nothing else gains egress.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from eval_api.v1alpha1.evalsuite import EvalSuiteSpec
from eval_api.v1alpha1.netpol import DEFAULT_DASHBOARD_FROM, DEFAULT_PROMETHEUS_FROM, ExternalEgress
from eval_operator.builders import dashboard as dashboards
from eval_operator.builders.monitoring import POSTGRES_EXPORTER_PORT, REDIS_EXPORTER_PORT
from eval_operator.builders.suite import (
    POSTGRES_PORT,
    REDIS_PORT,
    SUITE_LABEL,
    _meta,
    child_name,
)
from eval_operator.settings import OperatorSettings

COMPONENT = "app.kubernetes.io/component"
RUNNER = "runner"
STORE = "store"
CACHE = "cache"
MIGRATION = "store-migration"
BACKUP = "store-backup"
REPORT = "cell-report"
COMPARE = "compare"
DASHBOARD = dashboards.COMPONENT
# Pods that read the store besides the runners.
STORE_CLIENTS = (RUNNER, MIGRATION, REPORT, COMPARE, BACKUP, DASHBOARD)
CACHE_CLIENTS = (RUNNER, MIGRATION, DASHBOARD)
DEFAULT_MODEL_PORTS = (443, 80)
DNS_PORT = 53


def _pods(suite_name: str, *components: str) -> dict[str, Any]:
    """A selector of the suite's pods of these components."""
    selector: dict[str, Any] = {"matchLabels": {SUITE_LABEL: suite_name}}
    if len(components) == 1:
        selector["matchLabels"][COMPONENT] = components[0]
    elif components:
        selector["matchExpressions"] = [
            {"key": COMPONENT, "operator": "In", "values": list(components)}
        ]
    return selector


def _tcp(port: int) -> dict[str, Any]:
    return {"port": port, "protocol": "TCP"}


def _dns() -> dict[str, Any]:
    # The cluster's DNS, wherever it runs (kube-dns, CoreDNS, NodeLocal DNSCache on the node).
    return {"ports": [{"port": DNS_PORT, "protocol": "UDP"}, _tcp(DNS_PORT)]}


def _url_ports(urls: Iterable[str | None]) -> list[int]:
    ports = []
    for url in urls:
        if url:
            try:
                port = urlsplit(url).port
            except ValueError:
                continue  # not a URL a request could go to either
            if port is not None and port not in ports:
                ports.append(port)
    return ports


def model_ports(spec: EvalSuiteSpec, extra_ports: Iterable[int] = ()) -> list[int]:
    """443, 80, the explicit port of every model's and judge's baseURL, and `extra_ports` (those
    of the Evaluations that join the suite by spec.suiteRef)."""
    urls = [m.model.base_url for m in spec.models or []]
    urls += [s.judge.base_url for t in spec.tasks or [] for s in t.task.scorer_list if s.judge]
    ports = list(DEFAULT_MODEL_PORTS)
    for port in [*_url_ports(urls), *extra_ports]:
        if port not in ports:
            ports.append(port)
    return ports


def member_view(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """An Evaluation in a suite, as the suite needs it: its name, and the ports of its model's
    and judges' baseURLs."""
    urls = [(spec.get("model") or {}).get("baseURL")]
    urls += [
        (scorer.get("judge") or {}).get("baseURL")
        for scorer in (spec.get("task") or {}).get("scorers") or []
    ]
    return {"name": name, "ports": _url_ports(urls)}


def _peers(given: Iterable[Any] | None, default: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = [peer.model_dump(by_alias=True, exclude_none=True) for peer in given or []]
    return found or copy.deepcopy(default)


def _server_rule(
    managed_peer: dict[str, Any], port: int, mode: str, egress: ExternalEgress | None
) -> dict[str, Any]:
    """Egress to the store or the cache: its managed pods, or where an external one is
    (spec.networkPolicy storeEgress / cacheEgress; default its port at any address)."""
    if mode != "External":
        return {"to": [managed_peer], "ports": [_tcp(port)]}
    rule: dict[str, Any] = {"ports": [_tcp(p) for p in (egress and egress.ports) or [port]]}
    peers = [p.model_dump(by_alias=True, exclude_none=True) for p in (egress and egress.to) or []]
    if peers:
        rule["to"] = peers
    return rule


def _policy(
    suite: Mapping[str, Any], name: str, selector: dict[str, Any], **rules: Any
) -> dict[str, Any]:
    types = [t for t, key in (("Ingress", "ingress"), ("Egress", "egress")) if key in rules]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(
            suite, child_name(suite["metadata"]["name"], name), "network", "eval-operator"
        ),
        "spec": {"podSelector": selector, "policyTypes": types, **rules},
    }


def build_network_policies(
    suite: Mapping[str, Any],
    spec: EvalSuiteSpec,
    settings: OperatorSettings,
    extra_ports: Iterable[int] = (),
) -> list[dict[str, Any]]:
    if not spec.network_policy.enabled:
        return []
    name = suite["metadata"]["name"]
    operator_peer: dict[str, Any] = {"podSelector": {"matchLabels": dict(settings.pod_labels)}}
    if settings.namespace:
        operator_peer["namespaceSelector"] = {
            "matchLabels": {"kubernetes.io/metadata.name": settings.namespace}
        }
    else:
        operator_peer["namespaceSelector"] = {}  # wherever the operator runs
    # Hub datasets (and presets) are read by the runners through the same opening.
    extra_ports = [*extra_ports, *_url_ports([settings.hf_endpoint])]
    models: dict[str, Any] = {
        "ports": [
            _tcp(p)
            for p in (spec.network_policy.model_egress_ports or model_ports(spec, extra_ports))
        ]
    }
    if spec.network_policy.model_egress_cidrs:
        models["to"] = [{"ipBlock": {"cidr": c}} for c in spec.network_policy.model_egress_cidrs]
    net = spec.network_policy
    to_store = _server_rule(
        {"podSelector": _pods(name, STORE)}, POSTGRES_PORT, spec.store.mode, net.store_egress
    )
    to_cache = _server_rule(
        {"podSelector": _pods(name, CACHE)}, REDIS_PORT, spec.cache.mode, net.cache_egress
    )
    scrapers = _peers(spec.network_policy.prometheus_from, DEFAULT_PROMETHEUS_FROM)
    exporters = spec.monitoring.enabled and spec.monitoring.exporters

    def scraped(port: int, when: bool = True) -> list[dict[str, Any]]:
        """Prometheus on a metrics port, with spec.monitoring."""
        if not (spec.monitoring.enabled and when):
            return []
        return [{"from": scrapers, "ports": [_tcp(port)]}]

    policies = [
        # Every pod of the suite: nothing in, nothing out, but what the policies below allow.
        _policy(suite, "default-deny", _pods(name), ingress=[], egress=[]),
        _policy(
            suite,
            "store",
            _pods(name, STORE),
            ingress=[
                {
                    "from": [{"podSelector": _pods(name, *STORE_CLIENTS)}],
                    "ports": [_tcp(POSTGRES_PORT)],
                },
                *scraped(POSTGRES_EXPORTER_PORT, exporters),
            ],
        ),
        _policy(
            suite,
            "cache",
            _pods(name, CACHE),
            ingress=[
                {
                    "from": [{"podSelector": _pods(name, *CACHE_CLIENTS)}],
                    "ports": [_tcp(REDIS_PORT)],
                },
                *scraped(REDIS_EXPORTER_PORT, exporters),
            ],
        ),
        _policy(
            suite,
            "runners",
            _pods(name, RUNNER),
            ingress=[
                {"from": [operator_peer], "ports": [_tcp(settings.progress_port)]},
                *scraped(settings.progress_port),
            ],
            egress=[
                to_store,
                to_cache,
                _dns(),
                models,
            ],
        ),
        _policy(
            suite,
            "store-clients",
            _pods(name, MIGRATION, REPORT, COMPARE, BACKUP),
            egress=[to_store, _dns()],
        ),
        _policy(
            suite,
            "migration-cache",
            _pods(name, MIGRATION),
            egress=[to_cache],
        ),
    ]
    if dashboards.wanted(spec):
        peers = _peers(spec.network_policy.dashboard_from, DEFAULT_DASHBOARD_FROM)
        policies.append(
            _policy(
                suite,
                "dashboard",
                _pods(name, DASHBOARD),
                ingress=[
                    {"from": peers, "ports": [_tcp(dashboards.PORT)]},
                    *scraped(dashboards.PORT),
                ],
                egress=[
                    to_store,
                    to_cache,
                    _dns(),
                ],
            )
        )
    return policies
