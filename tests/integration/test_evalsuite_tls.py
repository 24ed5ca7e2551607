"""spec.tls through the real operator: cert-manager's CRDs served (the upstream ones) and its
controller played by tests/support/cert_manager.py, the stack by real PostgreSQL, Redis and
dashboard processes that use the Secrets it writes. The operator makes the issuer chain and the
certificates; the suite is TLSReady; an Evaluation in it runs (its runner pods verify the
store's and the cache's certificates: nothing else gets in), and the dashboard answers HTTPS."""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.cert_manager import StandInCertManager
from tests.support.model_server import ModelServer
from tests.support.operator_cluster import NS, Cluster, manifest, running_cluster
from tests.support.suites import reason, secret_value, store_rows, suite_manifest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
THIRDPARTY = Path(__file__).resolve().parents[3] / "shared" / "thirdparty-crds"
SUITE = "secure"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not THIRDPARTY.is_dir():
        pytest.skip(f"the upstream CRDs are not at {THIRDPARTY} (shared/thirdparty-crds)")
    with (
        running_cluster(
            tmp_path_factory.mktemp("tls"),
            stack=True,
            model=ModelServer(wrong=[]),
            extra_crds=sorted(THIRDPARTY.glob("cert-manager.io_*.yaml")),
        ) as cluster,
        StandInCertManager(cluster.api) as cert_manager,
    ):
        yield cluster
        assert cert_manager.errors == []


def ca_file(cluster: Cluster, tmp_path: Path, secret: str) -> Path:
    found = cluster.api.get("", "v1", "secrets", NS, secret)
    path = tmp_path / f"{secret}-ca.crt"
    path.write_bytes(base64.b64decode(found["data"]["ca.crt"]))
    return path


def test_a_suite_with_tls_runs_over_tls_only(cluster: Cluster, tmp_path: Path) -> None:
    cluster.apply(suite_manifest(SUITE, {"tls": {"enabled": True}})).raise_for_status()
    suite = cluster.wait_suite(
        SUITE,
        lambda s: reason(s, "TLSReady") == "Ready" and reason(s, "Ready") == "Ready",
        timeout=180,
    )
    certificates = {
        c["metadata"]["name"]: c
        for c in cluster.api.list("cert-manager.io", "v1", "certificates", NS)
    }
    assert sorted(certificates) == [
        f"{SUITE}-ca",
        f"{SUITE}-cache-tls",
        f"{SUITE}-dashboard-tls",
        f"{SUITE}-store-tls",
    ]
    issuers = {
        i["metadata"]["name"] for i in cluster.api.list("cert-manager.io", "v1", "issuers", NS)
    }
    assert issuers == {f"{SUITE}-selfsigned", f"{SUITE}-ca-issuer"}
    assert suite["status"]["dashboard"]["url"] == f"https://{SUITE}-dashboard.{NS}.svc:443"

    # An Evaluation in the suite: its shards write every sample through verify-full TLS.
    body = manifest("over-tls", cluster.model, suiteRef={"name": SUITE})
    cluster.apply(body).raise_for_status()
    done = cluster.wait(
        "over-tls",
        lambda e: (e.get("status") or {}).get("phase") in ("Succeeded", "Failed"),
        timeout=180,
    )
    assert done["status"]["phase"] == "Succeeded", done["status"]
    rows = store_rows(cluster, SUITE, "SELECT count(*) AS n FROM samples")
    assert rows[0]["n"] == done["status"]["progress"]["completed"]

    # The store itself: the CA's clients in, anyone without TLS or without the CA out.
    server = cluster.stack.postgres(NS, f"{SUITE}-store")
    password = secret_value(cluster, f"{SUITE}-store-credentials", "password")
    store_ca = ca_file(cluster, tmp_path, f"{SUITE}-store-tls")

    async def connect(context: Any) -> bool:
        conn = await asyncpg.connect(
            host=server.host,
            port=server.port,
            user="evals",
            password=password,
            database="evals",
            ssl=context,
            timeout=10,
        )
        try:
            return await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        finally:
            await conn.close()

    trusted = ssl.create_default_context(cafile=str(store_ca))
    trusted.check_hostname = False  # the test dials the IP; the runners dial the Service name
    assert asyncio.run(connect(trusted)) is True
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        asyncio.run(connect(False))
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(connect(ssl.create_default_context()))

    # The dashboard answers HTTPS with the dashboard's certificate.
    dashboard = cluster.stack.dashboard(NS, f"{SUITE}-dashboard")
    context = ssl.create_default_context(
        cafile=str(ca_file(cluster, tmp_path, f"{SUITE}-dashboard-tls"))
    )
    context.check_hostname = False
    deadline = time.monotonic() + 30
    while True:
        try:
            ready = httpx.get(f"https://{dashboard.host}:{dashboard.port}/readyz", verify=context)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert ready.status_code == 200
    components = ready.json()["components"]
    assert components["store"]["status"] == "ok" and components["cache"]["status"] == "ok"
