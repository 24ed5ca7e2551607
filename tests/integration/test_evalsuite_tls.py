"""spec.tls through the real operator: cert-manager's CRDs served (the upstream ones) and its
controller played by tests/support/cert_manager.py, the stack by real PostgreSQL, Redis and
dashboard processes that use the Secrets it writes. The operator makes the issuer chain and the
certificates; the suite is TLSReady; an Evaluation in it runs (its runner pods verify the
store's and the cache's certificates: nothing else gets in), and the dashboard answers HTTPS.
A renewed certificate is what the store and the cache serve next (issue 17, 4.6); an API
discovery that does not answer when the operator starts neither strips TLS from the stack nor
restarts anything (4.7)."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.cert_manager import StandInCertManager
from tests.support.model_server import ModelServer
from tests.support.operator_cluster import NS, Cluster, condition, manifest, running_cluster
from tests.support.suites import reason, secret_value, store_rows, suite_manifest
from tests.support.thirdparty import thirdparty_crds

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
SUITE = "secure"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Cluster, StandInCertManager]]:
    thirdparty = thirdparty_crds()
    with (
        running_cluster(
            tmp_path_factory.mktemp("tls"),
            stack=True,
            model=ModelServer(wrong=[]),
            extra_crds=sorted(thirdparty.glob("cert-manager.io_*.yaml")),
        ) as cluster,
        StandInCertManager(cluster.api) as cert_manager,
    ):
        yield cluster, cert_manager
        assert cert_manager.errors == []


@pytest.fixture(scope="module")
def cluster(stack: tuple[Cluster, StandInCertManager]) -> Cluster:
    return stack[0]


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


def ready_suite(cluster: Cluster) -> dict[str, Any]:
    if cluster.suite(SUITE) is None:
        cluster.apply(suite_manifest(SUITE, {"tls": {"enabled": True}})).raise_for_status()
    return cluster.wait_suite(
        SUITE,
        lambda s: reason(s, "TLSReady") == "Ready" and reason(s, "Ready") == "Ready",
        timeout=180,
    )


def served_certificate(host: str, port: int, *, postgres: bool) -> bytes:
    """The certificate a server presents (DER): PostgreSQL after its SSLRequest, Redis on
    its TLS port."""
    with socket.create_connection((host, port), 5) as raw:
        if postgres:
            raw.sendall(struct.pack("!ii", 8, 80877103))
            assert raw.recv(1) == b"S"
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return der


def issued_certificate(cluster: Cluster, secret: str) -> bytes:
    """The leaf certificate in the Secret cert-manager wrote (DER)."""
    pem = base64.b64decode(cluster.api.get("", "v1", "secrets", NS, secret)["data"]["tls.crt"])
    first = pem.decode().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    return ssl.PEM_cert_to_DER_cert(first)


def revision(cluster: Cluster, certificate: str) -> int:
    found = cluster.api.get("cert-manager.io", "v1", "certificates", NS, certificate)
    return (found.get("status") or {}).get("revision") or 0


def test_a_renewed_certificate_is_what_the_store_and_the_cache_serve(
    stack: tuple[Cluster, StandInCertManager], tmp_path: Path
) -> None:
    cluster, cert_manager = stack
    assert cluster.stack is not None
    ready_suite(cluster)
    store_tls, cache_tls = f"{SUITE}-store-tls", f"{SUITE}-cache-tls"

    def served() -> tuple[bytes, bytes]:
        assert cluster.stack is not None
        store = cluster.stack.postgres(NS, f"{SUITE}-store")
        cache = cluster.stack.redis(NS, f"{SUITE}-cache")
        return (
            served_certificate(store.host, store.port, postgres=True),
            served_certificate(cache.host, cache.port, postgres=False),
        )

    first = (issued_certificate(cluster, store_tls), issued_certificate(cluster, cache_tls))
    assert served() == first
    revisions = {name: revision(cluster, name) for name in (store_tls, cache_tls)}

    # cert-manager renews both (renewBefore their end): new keys, new certificates, the
    # Secrets rewritten, each Certificate's revision one more.
    cert_manager.renew(NS, store_tls)
    cert_manager.renew(NS, cache_tls)
    deadline = time.monotonic() + 30
    while any(revision(cluster, n) != r + 1 for n, r in revisions.items()):
        assert time.monotonic() < deadline, "the stand-in cert-manager did not renew"
        time.sleep(0.2)
    renewed = (issued_certificate(cluster, store_tls), issued_certificate(cluster, cache_tls))
    assert renewed[0] != first[0] and renewed[1] != first[1]

    # The servers serve the renewed certificates (before: the first ones, until restarted by
    # hand, and verify-full clients fail once those expire).
    deadline = time.monotonic() + 60
    while True:
        try:
            now = served()
        except (OSError, KeyError, AssertionError):
            now = None  # rolling: the new pod is starting
        if now == renewed:
            break
        assert time.monotonic() < deadline, "the store and the cache still serve the old ones"
        time.sleep(0.5)
    sts = cluster.api.get("apps", "v1", "statefulsets", NS, f"{SUITE}-store")
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["evals.io/tls-revision"] == str(revisions[store_tls] + 1)
    # A verify-full client against the stack's CA gets in, and the suite is Ready again.
    suite = ready_suite(cluster)
    assert reason(suite, "TLSReady") == "Ready"
    server = cluster.stack.postgres(NS, f"{SUITE}-store")
    trusted = ssl.create_default_context(cafile=str(ca_file(cluster, tmp_path, store_tls)))
    trusted.check_hostname = False  # the test dials the IP; the runners dial the Service name

    async def connect() -> bool:
        conn = await asyncpg.connect(
            host=server.host,
            port=server.port,
            user="evals",
            password=secret_value(cluster, f"{SUITE}-store-credentials", "password"),
            database="evals",
            ssl=trusted,
            timeout=10,
        )
        try:
            return await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        finally:
            await conn.close()

    assert asyncio.run(connect()) is True


def test_an_unanswered_discovery_at_start_keeps_the_stack_as_it_is(cluster: Cluster) -> None:
    """The operator starts while /apis/cert-manager.io/v1 answers 503 (the apiserver's
    aggregation starting, an overloaded control plane): cert-manager is unknown, not absent.
    The stack keeps its TLS (before: stripped, PostgreSQL back in plain text for the 300 s
    recheck interval, then TLS added back), TLSReady says discovery has not answered, and
    once it does (retried within seconds) nothing restarts."""
    assert cluster.stack is not None
    ready_suite(cluster)

    def state() -> tuple[Any, ...]:
        assert cluster.stack is not None
        sts = cluster.api.get("apps", "v1", "statefulsets", NS, f"{SUITE}-store")
        cache = cluster.api.get("apps", "v1", "deployments", NS, f"{SUITE}-cache")
        return (
            sts["metadata"]["generation"],
            cache["metadata"]["generation"],
            cluster.stack.postgres(NS, f"{SUITE}-store").process.pid,
            cluster.stack.redis(NS, f"{SUITE}-cache").process.pid,
            len(cluster.stack.rollouts),
            sorted(
                c["metadata"]["name"]
                for c in cluster.api.list("cert-manager.io", "v1", "certificates", NS)
            ),
        )

    before = state()
    failing = {"on": True}

    def fault(request: Any) -> int | None:
        # The operator's own discovery (kopf's requests go through: its watches start).
        if (
            failing["on"]
            and request.path == "/apis/cert-manager.io/v1"
            and not request.headers.get("User-Agent", "").startswith("kopf/")
        ):
            return 503
        return None

    cluster.operator.stop()
    cluster.api.fault = fault
    try:
        cluster.operator.start()
        suite = cluster.wait_suite(
            SUITE, lambda s: reason(s, "TLSReady") == "PlatformUnknown", timeout=60
        )
        assert condition(suite, "TLSReady")["status"] == "Unknown"
        time.sleep(3)  # the suite's passes while discovery does not answer
        assert state() == before
        sts = cluster.api.get("apps", "v1", "statefulsets", NS, f"{SUITE}-store")
        assert any(v["name"] == "tls" for v in sts["spec"]["template"]["spec"]["volumes"])
    finally:
        failing["on"] = False
    started = time.monotonic()
    ready_suite(cluster)
    assert time.monotonic() - started < 30  # retried soon, not at the 300 s recheck
    time.sleep(2)
    assert state() == before  # nothing restarted, nothing stripped or added
    cluster.api.fault = None
