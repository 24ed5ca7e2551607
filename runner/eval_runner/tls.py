"""TLS trust for the model endpoint and dataset downloads."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi

from eval_runner.errors import PermanentError


def default_ssl_context() -> ssl.SSLContext:
    """Verification against the public roots (certifi's, as httpx uses)."""
    return ssl.create_default_context(cafile=certifi.where())


def verify_context(ca_bundle: Path | None) -> ssl.SSLContext | bool:
    """The public roots plus the user's private CA bundle (spec.model.caBundle), if any.

    Public roots stay trusted so that a dataset URL on a public host keeps working next to a
    model endpoint behind a private CA.
    """
    if ca_bundle is None:
        return True
    context = default_ssl_context()
    try:
        context.load_verify_locations(cafile=str(ca_bundle))
    except (OSError, ssl.SSLError) as err:
        raise PermanentError(
            "CABundleInvalid", f"cannot load CA bundle {ca_bundle}: {err}"
        ) from err
    return context
