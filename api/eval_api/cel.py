"""The CEL rules of the API, evaluated in Python: one text, enforced in two places.

Each cross-field rule is written once, as CEL, on the model it constrains
(x-kubernetes-validations). The CRD carries it to the apiserver, which checks it at `kubectl
apply`; the models evaluate the very same text when a manifest is read outside a cluster
(`eval-runner run`), with the `cel` package (a binding of the Rust CEL implementation).
"""

from __future__ import annotations

import functools
from typing import Any

import cel
from cel.stdlib import add_stdlib_to_context


@functools.lru_cache(maxsize=512)
def _program(rule: str) -> Any:
    return cel.compile(rule)


def holds(rule: str, value: Any) -> bool:
    """Whether `rule` is true for `self` = value (JSON-like data, as the apiserver sees it).

    A rule that cannot be evaluated (say, a type error on an unexpected shape) does not hold,
    as in the apiserver.
    """
    context = cel.Context({"self": value})
    add_stdlib_to_context(context)  # cel-go's strings/lists extensions, as Kubernetes enables
    try:
        return _program(rule).execute(context) is True
    except Exception:
        return False
