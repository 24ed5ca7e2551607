"""
Kubernetes-style errors: every failure leaves the emulator as a ``Status`` object.

Clients (kopf, kubernetes_asyncio) look at the HTTP code and at ``reason``,
so both must be right; the ``message`` texts follow the real apiserver's wording
closely enough for humans and for substring assertions in tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class APIError(Exception):
    """An API failure with its HTTP code; rendered as a ``Status`` body."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def success_status(details: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


def _details(rt: Any, name: str | None, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"kind": rt.plural} if rt is not None else {}
    if name is not None:
        details["name"] = name
    if rt is not None and rt.group:
        details["group"] = rt.group
    details.update(extra)
    return details


def not_found(rt: Any, name: str) -> APIError:
    return APIError(404, "NotFound", f'{rt.qualified} "{name}" not found', _details(rt, name))


def already_exists(rt: Any, name: str) -> APIError:
    return APIError(
        409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', _details(rt, name)
    )


def conflict(rt: Any, name: str, why: str | None = None) -> APIError:
    why = why or (
        "the object has been modified; "
        "please apply your changes to the latest version and try again"
    )
    return APIError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
        _details(rt, name),
    )


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


def method_not_allowed(method: str) -> APIError:
    return APIError(
        405,
        "MethodNotAllowed",
        f"the server does not allow this method on the requested resource ({method})",
    )


def unsupported_media_type(content_type: str) -> APIError:
    return APIError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types "
        f"include: application/json-patch+json, application/merge-patch+json, "
        f"application/apply-patch+yaml (got {content_type!r})",
    )


def expired(message: str) -> APIError:
    # The real apiserver says "Expired" (HTTP 410 Gone) for compacted resource versions.
    return APIError(410, "Expired", message)


def not_found_path() -> APIError:
    # What the apiserver says for unknown groups, versions and resources.
    return APIError(404, "NotFound", "the server could not find the requested resource", {})


def fmt_value(value: Any) -> str:
    """Render a value like Go's validation errors do: strings quoted, numbers bare."""
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass
class FieldError:
    """One field-level validation failure (k8s.io/apimachinery field.Error)."""

    field: str
    kind: str  # Required | Invalid | NotSupported | Forbidden | TooLong | TooMany | Duplicate
    value: Any = None
    detail: str = ""

    @property
    def body(self) -> str:
        """The message without the field prefix, as used in ``details.causes``."""
        if self.kind == "Required":
            return "Required value" + (f": {self.detail}" if self.detail else "")
        if self.kind == "Forbidden":
            return f"Forbidden: {self.detail}"
        if self.kind == "NotSupported":
            return f"Unsupported value: {fmt_value(self.value)}: {self.detail}"
        if self.kind == "TooLong":
            return f"Too long: {self.detail}"
        if self.kind == "TooMany":
            return f"Too many: {fmt_value(self.value)}: {self.detail}"
        if self.kind == "Duplicate":
            return f"Duplicate value: {fmt_value(self.value)}"
        return f"Invalid value: {fmt_value(self.value)}: {self.detail}"

    @property
    def text(self) -> str:
        return f"{self.field}: {self.body}"

    @property
    def cause(self) -> dict[str, Any]:
        return {"reason": f"FieldValue{self.kind}", "message": self.body, "field": self.field}


def invalid(rt: Any, name: str, errors: list[FieldError]) -> APIError:
    """HTTP 422 for one or more field errors, formatted like the apiserver does."""
    texts = [e.text for e in errors]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    group = f".{rt.group}" if rt.group else ""
    return APIError(
        422,
        "Invalid",
        f'{rt.kind}{group} "{name}" is invalid: {joined}',
        _details(rt, name, kind=rt.kind, causes=[e.cause for e in errors]),
    )
