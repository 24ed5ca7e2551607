"""Plays cert-manager's controller for the API emulator: issues the Certificates of Issuers
that are self-signed or CAs, as cert-manager's own issuers of those two types do.

For each Certificate it writes the Secret `spec.secretName` (type kubernetes.io/tls, keys
tls.crt, tls.key and ca.crt) and sets the Certificate's Ready condition: a Certificate with
`isCA` issued by a self-signed Issuer becomes a CA (trustme), one issued by a CA Issuer
(`spec.ca.secretName`) a server certificate for its dnsNames signed by that CA. Its keys are
throwaway ones; a Certificate whose issuer is missing (or not ready) waits, Ready False, as it
would with cert-manager. Each issuance writes the Secret, then counts itself in the
Certificate's status.revision (1, 2, ...) with its notAfter, in that order as cert-manager's
issuing controller does; `renew()` issues a certificate again (a new key and certificate from
the same issuer), as cert-manager does renewBefore its end or on `cmctl renew`.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import trustme
from cryptography import x509

from tests.support.kubeapi import KubeAPIServer
from tests.support.kubeapi.errors import APIError

GROUP, VERSION = "cert-manager.io", "v1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _not_after(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    return cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


class StandInCertManager:
    def __init__(self, api: KubeAPIServer, interval: float = 0.2) -> None:
        self.api = api
        self.interval = interval
        self.issued: dict[tuple[str, str], str] = {}  # (namespace, certificate) -> its uid
        self._renew: set[tuple[str, str]] = set()  # asked to be issued again
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cert-manager", daemon=True)

    def __enter__(self) -> StandInCertManager:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def renew(self, namespace: str, name: str) -> None:
        """Issue the Certificate again at the next round (its revision grows by one)."""
        self._renew.add((namespace, name))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                for cert in self.api.list(GROUP, VERSION, "certificates"):
                    self._issue(cert)
            except APIError:
                pass  # the CRD is not installed yet, or an object went away meanwhile
            except Exception as err:  # a harness bug: tests assert there was none
                self.errors.append(err)

    def _ca_of(self, namespace: str, issuer_name: str) -> trustme.CA | None | str:
        """The CA an Issuer signs with; "selfsigned" for a self-signed Issuer; None if not ready."""
        issuer = self.api.get(GROUP, VERSION, "issuers", namespace, issuer_name)
        if issuer is None:
            return None
        spec = issuer.get("spec") or {}
        if "selfSigned" in spec:
            return "selfsigned"
        secret_name = (spec.get("ca") or {}).get("secretName")
        secret = self.api.get("", "v1", "secrets", namespace, secret_name) if secret_name else None
        if secret is None:
            return None
        data = secret.get("data") or {}
        return trustme.CA.from_pem(
            base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])
        )

    def _issue(self, cert: dict[str, Any]) -> None:
        meta, spec = cert["metadata"], cert["spec"]
        key = (meta["namespace"], meta["name"])
        if self.issued.get(key) == meta["uid"] and key not in self._renew:
            return
        ref = spec["issuerRef"]
        ca = self._ca_of(meta["namespace"], ref["name"]) if ref.get("kind") == "Issuer" else None
        if ca is None:
            self._ready(cert, "False", "Pending", f"issuer {ref['name']} is not ready")
            return
        if ca == "selfsigned":
            if not spec.get("isCA"):
                self._ready(cert, "False", "Unsupported", "the stand-in signs only CAs itself")
                return
            new_ca = trustme.CA()
            crt, tls_key, ca_crt = (
                new_ca.cert_pem.bytes(),
                new_ca.private_key_pem.bytes(),
                new_ca.cert_pem.bytes(),
            )
        else:
            assert isinstance(ca, trustme.CA)
            leaf = ca.issue_cert(*spec["dnsNames"])
            crt = b"".join(p.bytes() for p in leaf.cert_chain_pems)
            tls_key, ca_crt = leaf.private_key_pem.bytes(), ca.cert_pem.bytes()
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": spec["secretName"],
                "namespace": meta["namespace"],
                "annotations": {"cert-manager.io/certificate-name": meta["name"]},
            },
            "data": {"tls.crt": _b64(crt), "tls.key": _b64(tls_key), "ca.crt": _b64(ca_crt)},
        }
        existing = self.api.get("", "v1", "secrets", meta["namespace"], spec["secretName"])
        if existing is None:
            self.api.create(secret)
        else:
            secret["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            self.api.replace(secret)
        revision = ((cert.get("status") or {}).get("revision") or 0) + 1
        self.api.patch_status(
            GROUP,
            VERSION,
            "certificates",
            meta["namespace"],
            meta["name"],
            {"revision": revision, "notAfter": _not_after(crt)},
        )
        self._ready(cert, "True", "Ready", "Certificate is up to date and has not expired")
        self.issued[key] = meta["uid"]
        self._renew.discard(key)

    def _ready(self, cert: dict[str, Any], status: str, reason: str, message: str) -> None:
        meta = cert["metadata"]
        current = next(
            (c for c in (cert.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"),
            {},
        )
        if (current.get("status"), current.get("reason")) == (status, reason):
            return
        condition = {
            "type": "Ready",
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.api.patch_status(
            GROUP,
            VERSION,
            "certificates",
            meta["namespace"],
            meta["name"],
            {"conditions": [condition]},
        )
