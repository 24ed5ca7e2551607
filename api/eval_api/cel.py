"""The CEL rules of the API, evaluated in Python: one text, enforced in two places.

Each cross-field rule is written once, as CEL, on the model it constrains
(x-kubernetes-validations). The CRD carries it to the apiserver, which checks it at `kubectl
apply`; the models evaluate the very same text when a manifest is read outside a cluster
(`eval-runner run`), with the `cel` package (a binding of the Rust CEL implementation).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

# What validating an object the apiserver already admitted passes as pydantic's context: its
# rules held at `kubectl apply`, so they are not evaluated again (the operator, the runner in a
# pod). Importing the `cel` package also costs ~27 MB (its __init__ loads a CLI), which the
# operator does not pay.
ADMITTED = {"admitted": True}


@functools.cache
def _cel() -> Any:
    return importlib.import_module("cel")


@functools.lru_cache(maxsize=512)
def _program(rule: str) -> Any:
    return _cel().compile(rule)


def holds(rule: str, value: Any) -> bool:
    """Whether `rule` is true for `self` = value (JSON-like data, as the apiserver sees it).

    A rule that cannot be evaluated (say, a type error on an unexpected shape) does not hold,
    as in the apiserver.
    """
    context = _cel().Context({"self": value})
    # cel-go's strings/lists extensions, as Kubernetes enables them.
    importlib.import_module("cel.stdlib").add_stdlib_to_context(context)
    try:
        return _program(rule).execute(context) is True
    except Exception:
        return False
