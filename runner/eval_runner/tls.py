"""TLS trust for the model endpoints and dataset downloads."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi

from eval_runner.errors import PermanentError


def ssl_context(ca_bundle: Path | None = None) -> ssl.SSLContext:
    """Verification against the public roots (certifi's, the same in every image), plus the
    user's private CA bundle (spec.model.caBundle), if any.

    Public roots stay trusted so that a dataset URL on a public host keeps working next to a
    model endpoint behind a private CA.
    """
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=str(ca_bundle))
        except (OSError, ssl.SSLError) as err:
            raise PermanentError(
                "CABundleInvalid", f"cannot load CA bundle {ca_bundle}: {err}"
            ) from err
    return context
