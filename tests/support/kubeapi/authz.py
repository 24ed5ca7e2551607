"""
RBAC authorization of resource requests, as the apiserver's RBAC authorizer decides it.

Only the users a test names are held to rules (a token -> a user name and the rules of the
roles bound to it); every other caller is as cluster-admin, which is what the tests' own
clients and the stand-in controllers are. Each decision is kept in ``decisions``, so a test can
compare what a component was authorized for with what a chart grants.

What the apiserver does, and the emulator with it:
- The verb comes from the method: GET is get, list (no name) or watch (``watch=true``); POST is
  create; PUT update; PATCH patch; DELETE delete, or deletecollection without a name.
- A server-side apply (PATCH application/apply-patch+yaml) is a patch, and when the object does
  not exist it is a create too (k8s.io/apiserver/pkg/endpoints/handlers/patch.go authorizes
  ``createAuthorizerAttributes``, verb "create", before the object is created): applying a
  missing object needs both verbs.
- A rule matches when its apiGroups, resources ("resource/subresource" for a subresource) and
  verbs each hold the request's value or "*", and its resourceNames (if any) hold the name
  (never for create, list, watch or deletecollection, which have no name to match).
- A denial is a 403 Forbidden whose message says who may not do what, worded as
  responsewriters.forbiddenMessage words it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import APIError

NAMELESS_VERBS = frozenset({"create", "list", "watch", "deletecollection"})


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do (authorizer.AttributesRecord, for resource requests)."""

    verb: str
    group: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None

    @property
    def resource_path(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass(frozen=True)
class Decision:
    token: str | None
    attributes: Attributes
    allowed: bool


def _matches(values: Iterable[str], wanted: str) -> bool:
    values = list(values)
    return "*" in values or wanted in values


def rule_allows(rule: Mapping[str, Any], attrs: Attributes) -> bool:
    names = rule.get("resourceNames") or []
    return (
        _matches(rule.get("apiGroups") or [], attrs.group)
        and _matches(rule.get("resources") or [], attrs.resource_path)
        and _matches(rule.get("verbs") or [], attrs.verb)
        and (not names or (attrs.verb not in NAMELESS_VERBS and attrs.name in names))
    )


@dataclass
class Subject:
    user: str  # e.g. system:serviceaccount:eval-system:eval-operator
    rules: list[dict[str, Any]]


@dataclass
class RBACAuthorizer:
    """Bearer token -> the subject it authenticates as; other tokens are not restricted.

    A request that impersonates a subject's user (`kubectl --as=USER`: kubectl sends no bearer
    token over plain HTTP) is held to that subject's rules too.
    """

    subjects: dict[str, Subject] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def authorize(
        self, token: str | None, attrs: Attributes, impersonate: str | None = None
    ) -> None:
        """Record the decision; raise the apiserver's 403 when the subject may not."""
        subject = self.subjects.get(token or "")
        if impersonate:
            subject = next((s for s in self.subjects.values() if s.user == impersonate), subject)
        allowed = subject is None or any(rule_allows(r, attrs) for r in subject.rules)
        with self._lock:
            self.decisions.append(Decision(token, attrs, allowed))
        if not allowed:
            assert subject is not None
            raise forbidden(subject.user, attrs)

    def decisions_of(self, token: str) -> list[Decision]:
        with self._lock:
            return [d for d in self.decisions if d.token == token]


def forbidden(user: str, attrs: Attributes) -> APIError:
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    why = (
        f'User "{user}" cannot {attrs.verb} resource "{attrs.resource_path}" '
        f'in API group "{attrs.group}" {where}'
    )
    qualified = f"{attrs.resource}.{attrs.group}" if attrs.group else attrs.resource
    subject = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    details: dict[str, Any] = {"kind": attrs.resource}
    if attrs.name:
        details["name"] = attrs.name
    if attrs.group:
        details["group"] = attrs.group
    return APIError(403, "Forbidden", f"{subject} is forbidden: {why}", details)


def request_verb(method: str, name: str | None, watch: bool) -> str:
    if method == "GET":
        return "get" if name else ("watch" if watch else "list")
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}[method]
