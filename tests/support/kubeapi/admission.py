"""ValidatingAdmissionPolicy, as the apiserver enforces it (admissionregistration.k8s.io/v1).

A write is checked against every policy whose matchConstraints match it and every binding of
that policy whose matchResources match too: matchConditions first (all true, or the policy
does not apply), then variables (in order, each seeing the ones before), then validations. A
false validation is a decision with its message (message, messageExpression, or "failed
expression: ..."); an expression that errors denies under failurePolicy Fail and is skipped
under Ignore. The binding's validationActions say what a decision does: Deny rejects the write
with the apiserver's wording and code (reason Invalid: 422), Warn adds a warning header, Audit
is recorded nowhere here (the emulator has no audit log).

Not emulated: paramKind/paramRef (policies with parameters are denied as misconfigured, as
the apiserver does when a binding names no params), the authorizer library, type checking
(status.typeChecking); CEL runs with dynamic types, as the apiserver evaluates it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cel
from cel.stdlib import add_stdlib_to_context

from .errors import APIError

ADMISSION_GROUP = "admissionregistration.k8s.io"
POLICIES = (ADMISSION_GROUP, "validatingadmissionpolicies")
BINDINGS = (ADMISSION_GROUP, "validatingadmissionpolicybindings")
REASON_CODES = {"Unauthorized": 401, "Forbidden": 403, "Invalid": 422, "RequestEntityTooLarge": 413}


@dataclass(frozen=True)
class Request:
    """What a policy sees of one write (the fields of CEL's `request`)."""

    operation: str  # CREATE, UPDATE or DELETE
    group: str
    version: str
    resource: str
    kind: str
    namespace: str
    name: str
    sub_resource: str = ""
    dry_run: bool = False

    def as_cel(self) -> dict[str, Any]:
        return {
            "kind": {"group": self.group, "version": self.version, "kind": self.kind},
            "resource": {"group": self.group, "version": self.version, "resource": self.resource},
            "subResource": self.sub_resource,
            "name": self.name,
            "namespace": self.namespace,
            "operation": self.operation,
            "dryRun": self.dry_run,
            "userInfo": {"username": "system:admin", "groups": ["system:masters"]},
        }


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector; an empty or missing one matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _rule_matches(rule: Mapping[str, Any], request: Request, namespaced: bool) -> bool:
    def listed(values: list[str] | None, value: str) -> bool:
        return "*" in (values or []) or value in (values or [])

    resource = request.resource + (f"/{request.sub_resource}" if request.sub_resource else "")
    resources = rule.get("resources") or []
    scope = rule.get("scope", "*")
    return (
        listed(rule.get("apiGroups"), request.group)
        and listed(rule.get("apiVersions"), request.version)
        and listed(rule.get("operations"), request.operation)
        and (
            resource in resources
            or (not request.sub_resource and "*" in resources)
            or (request.sub_resource and f"*/{request.sub_resource}" in resources)
            or (request.sub_resource and f"{request.resource}/*" in resources)
            or "*/*" in resources
        )
        and (scope == "*" or scope == ("Namespaced" if namespaced else "Cluster"))
    )


def resources_match(
    match: Mapping[str, Any] | None,
    request: Request,
    obj: Mapping[str, Any],
    namespace_labels: Mapping[str, str] | None,
    *,
    rules_required: bool,
) -> bool:
    """A MatchResources (a policy's matchConstraints or a binding's matchResources)."""
    match = match or {}
    namespaced = namespace_labels is not None
    rules = match.get("resourceRules")
    if rules is None and rules_required:
        return False
    if rules is not None and not any(_rule_matches(r, request, namespaced) for r in rules):
        return False
    if any(_rule_matches(r, request, namespaced) for r in match.get("excludeResourceRules") or []):
        return False
    if namespaced and not selector_matches(match.get("namespaceSelector"), namespace_labels or {}):
        return False
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return selector_matches(match.get("objectSelector"), labels)


class _Evaluator:
    def __init__(self, bound: dict[str, Any]) -> None:
        self.bound = bound

    def __call__(self, expression: str) -> Any:
        context = cel.Context(self.bound)
        add_stdlib_to_context(context)
        return cel.compile(expression).execute(context)


def decisions(
    policy: Mapping[str, Any], request: Request, obj: Any, old: Any, namespace: Any
) -> list[tuple[str, str]]:
    """(reason, message) of each failed validation of one policy for one write."""
    spec = policy.get("spec") or {}
    fail_closed = spec.get("failurePolicy", "Fail") == "Fail"
    if spec.get("paramKind"):
        return [("Invalid", "failed to configure binding: no params found")]
    bound: dict[str, Any] = {
        "object": obj,
        "oldObject": old,
        "request": request.as_cel(),
        "namespaceObject": namespace,
        "variables": {},
    }
    evaluate = _Evaluator(bound)

    def errored(what: str, error: Exception) -> list[tuple[str, str]]:
        return [("Invalid", f"{what} resulted in error: {error}")] if fail_closed else []

    for condition in spec.get("matchConditions") or []:
        try:
            if evaluate(condition["expression"]) is not True:
                return []
        except Exception as error:  # noqa: BLE001 - a CEL runtime error is a decision
            return errored(f"matchCondition '{condition['name']}'", error)
    for variable in spec.get("variables") or []:
        try:
            bound["variables"] = {
                **bound["variables"],
                variable["name"]: evaluate(variable["expression"]),
            }
        except Exception as error:  # noqa: BLE001
            return errored(f"variable '{variable['name']}'", error)
    found = []
    for validation in spec.get("validations") or []:
        expression = validation["expression"]
        try:
            holds = evaluate(expression)
        except Exception as error:  # noqa: BLE001
            found += errored(f"expression '{expression.strip()}'", error)
            continue
        if holds is True:
            continue
        message = validation.get("message") or f"failed expression: {expression.strip()}"
        if validation.get("messageExpression"):
            try:
                computed = evaluate(validation["messageExpression"])
                if isinstance(computed, str) and computed.strip():
                    message = computed
            except Exception:  # noqa: BLE001 - the apiserver falls back to the static message
                pass
        found.append((validation.get("reason") or "Invalid", message))
    return found


def enforce(
    policies: list[dict[str, Any]],
    bindings: list[dict[str, Any]],
    request: Request,
    obj: Any,
    old: Any,
    namespace: dict[str, Any] | None,
    qualified_resource: str,
    warn: Callable[[str], None],
) -> None:
    """Raise the apiserver's denial for the first Deny decision; add warnings for Warn ones."""
    namespace_labels = (
        ((namespace or {}).get("metadata") or {}).get("labels") if namespace else None
    )
    if namespace is not None and namespace_labels is None:
        namespace_labels = {}
    target = obj if obj is not None else old
    for policy in sorted(policies, key=lambda p: p["metadata"]["name"]):
        name = policy["metadata"]["name"]
        constraints = (policy.get("spec") or {}).get("matchConstraints")
        if not resources_match(constraints, request, target, namespace_labels, rules_required=True):
            continue
        for binding in sorted(bindings, key=lambda b: b["metadata"]["name"]):
            binding_spec = binding.get("spec") or {}
            if binding_spec.get("policyName") != name:
                continue
            match = binding_spec.get("matchResources")
            if match and not resources_match(
                match, request, target, namespace_labels, rules_required=False
            ):
                continue
            actions = binding_spec.get("validationActions") or []
            for reason, message in decisions(policy, request, obj, old, namespace):
                binding_name = binding["metadata"]["name"]
                if "Warn" in actions:
                    warn(
                        f"Validation failed for ValidatingAdmissionPolicy '{name}' with binding "
                        f"'{binding_name}': {message}"
                    )
                if "Deny" in actions:
                    denial = (
                        f"ValidatingAdmissionPolicy '{name}' with binding '{binding_name}' "
                        f"denied request: {message}"
                    )
                    raise APIError(
                        REASON_CODES.get(reason, 422),
                        reason,
                        f'{qualified_resource} "{request.name}" is forbidden: {denial}',
                        {
                            "name": request.name,
                            "group": request.group,
                            "kind": request.resource,
                            "causes": [{"message": denial}],
                        },
                    )
