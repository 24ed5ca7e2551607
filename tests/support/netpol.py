"""Who may connect to whom under a set of NetworkPolicies, by the semantics of networking.k8s.io/v1
(https://kubernetes.io/docs/concepts/services-networking/network-policies/):

- a pod is isolated for ingress (egress) when some policy in its namespace selects it with
  Ingress (Egress) in policyTypes; a pod no policy selects that way allows everything;
- an isolated pod allows a connection when some selecting policy has a rule whose peers and
  ports match; rules and policies add up, none takes anything away;
- a connection from A to B needs A's egress and B's ingress to allow it;
- a peer is an ipBlock (cidr minus except), or pods chosen by podSelector within the policy's
  own namespace, or within the namespaces namespaceSelector chooses; a rule without peers
  matches every peer, without ports every port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.support.kubeapi.admission import selector_matches


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]
    ip: str


@dataclass(frozen=True)
class External:
    """An address outside the cluster (a model endpoint)."""

    name: str
    ip: str


Endpoint = Pod | External


@dataclass
class Cluster:
    policies: list[dict[str, Any]]
    namespaces: dict[str, Mapping[str, str]] = field(default_factory=dict)  # name -> labels

    def namespace_labels(self, name: str) -> Mapping[str, str]:
        return {"kubernetes.io/metadata.name": name, **self.namespaces.get(name, {})}

    def allows(self, source: Endpoint, target: Endpoint, port: int, protocol: str = "TCP") -> bool:
        out = isinstance(source, External) or self._direction(
            source, target, port, protocol, "Egress"
        )
        into = isinstance(target, External) or self._direction(
            target, source, port, protocol, "Ingress"
        )
        return out and into

    def _direction(self, subject: Pod, peer: Endpoint, port: int, protocol: str, kind: str) -> bool:
        selecting = [
            p
            for p in self.policies
            if p["metadata"]["namespace"] == subject.namespace
            and kind in p["spec"].get("policyTypes", [])
            and selector_matches(p["spec"].get("podSelector"), subject.labels)
        ]
        if not selecting:
            return True
        key, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
        for policy in selecting:
            for rule in policy["spec"].get(key) or []:
                if _ports_match(rule.get("ports"), port, protocol) and self._peers_match(
                    rule.get(peers_key), peer, policy["metadata"]["namespace"]
                ):
                    return True
        return False

    def _peers_match(self, peers: list[dict[str, Any]] | None, peer: Endpoint, own: str) -> bool:
        if not peers:
            return True
        for entry in peers:
            if "ipBlock" in entry:
                block = entry["ipBlock"]
                address = ipaddress.ip_address(peer.ip)
                if address in ipaddress.ip_network(block["cidr"], strict=False) and not any(
                    address in ipaddress.ip_network(e, strict=False)
                    for e in block.get("except") or []
                ):
                    return True
                continue
            if isinstance(peer, External):
                continue  # pod and namespace selectors choose pods only
            if "namespaceSelector" in entry:
                in_namespace = selector_matches(
                    entry["namespaceSelector"], self.namespace_labels(peer.namespace)
                )
            else:
                in_namespace = peer.namespace == own
            if in_namespace and selector_matches(entry.get("podSelector"), peer.labels):
                return True
        return False


def _ports_match(ports: Iterable[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    ports = list(ports or [])
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry:
            return True
        low, high = entry["port"], entry.get("endPort", entry["port"])
        if isinstance(low, int) and low <= port <= high:
            return True
    return False
