"""spec.tls with real servers: PostgreSQL, Redis and the dashboard started from the very
configuration the operator generates (eval_operator.builders.tls, only the paths of the mounted
files and where it listens changed), with a certificate from a throwaway CA (trustme, as
cert-manager's CA Issuer would issue it). A client that trusts the CA gets in, verifying the
server's name; a client that does not trust it, or that does not use TLS, is refused."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import trustme

from eval_api.store.settings import StoreSettings
from eval_api.v1alpha1 import EvalSuiteSpec
from eval_operator.builders import suite as builders
from eval_operator.builders import tls
from eval_runner.stackcheck import check_cache
from tests.integration.test_dashboard import _seed
from tests.support.dashboard_process import spawn_dashboard
from tests.support.ports import free_port
from tests.support.servers import PostgresServer, as_postgres_user, postgres_bin, postgres_server
from tests.support.store_db import create_database
from tests.unit.test_suite_builders import SETTINGS, suite_object

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SPEC = {"tls": {"enabled": True}}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def stranger_ca() -> trustme.CA:
    return trustme.CA()


def generated() -> list[dict[str, Any]]:
    suite = suite_object(SPEC)
    spec = EvalSuiteSpec.model_validate(SPEC)
    return tls.with_tls_servers(builders.desired_objects(suite, spec, SETTINGS), suite, spec)


def config_of(name: str) -> dict[str, str]:
    return next(o for o in generated() if o["metadata"]["name"] == name)["data"]


def _files(ca: trustme.CA, root: Path, owner: str | None) -> tuple[Path, Path]:
    cert = ca.issue_cert("127.0.0.1", "127.0.0.2", "localhost")
    crt, key = root / "tls.crt", root / "tls.key"
    cert.cert_chain_pems[0].write_to_path(str(crt))
    cert.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    if owner and os.geteuid() == 0:
        shutil.chown(crt, owner, owner)
        shutil.chown(key, owner, owner)
    return crt, key


@pytest.fixture(scope="module")
def tls_postgres(ca: trustme.CA) -> Iterator[tuple[PostgresServer, Path]]:
    """A PostgreSQL server on the generated postgresql.conf and pg_hba.conf."""
    with postgres_server() as pg:
        pg.stop()
        root = Path(tempfile.mkdtemp(prefix="evals-tls-pg-"))
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        _files(ca, root, "postgres")
        data = config_of("stack-store-config")
        conf = data["postgresql.conf"].replace(tls.STORE_TLS_DIR, str(root))
        conf = conf.replace("/etc/postgresql/pg_hba.conf", str(root / "pg_hba.conf"))
        (root / "postgresql.conf").write_text(conf)
        (root / "pg_hba.conf").write_text(data["pg_hba.conf"])
        ca_file = root / "ca.crt"
        ca.cert_pem.write_to_path(str(ca_file))
        if os.geteuid() == 0:
            for path in root.iterdir():
                shutil.chown(path, "postgres", "postgres")
        process = subprocess.Popen(
            [
                *as_postgres_user(),
                postgres_bin("postgres"),
                "-D",
                str(pg.data),
                "-c",
                f"config_file={root / 'postgresql.conf'}",
                # Where it listens: the only change to the generated settings but the paths.
                # 127.0.0.2 stands for the pod's IP: pg_hba's loopback rule (the exporter
                # sidecar's) is 127.0.0.1 only.
                "-c",
                "listen_addresses=127.0.0.1,127.0.0.2",
                "-c",
                f"port={pg.port}",
                "-c",
                "unix_socket_directories=",
                "-c",
                "shared_buffers=32MB",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(root / "postgres.log").open("wb"),
            start_new_session=True,
        )
        pg.process = process
        deadline = time.monotonic() + 30
        while True:
            try:
                asyncio.run(_connect(pg, ca_file, "verify-full"))
                break
            except (OSError, asyncpg.PostgresError, ssl.SSLError):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError((root / "postgres.log").read_text()) from None
                time.sleep(0.2)
        yield pg, ca_file


async def _connect(
    pg: PostgresServer, ca_file: Path | None, sslmode: str, host: str = "127.0.0.2"
) -> bool:
    settings = StoreSettings(
        host=host,
        port=pg.port,
        dbname=pg.dbname,
        user=pg.user,
        password=pg.password,
        sslmode=sslmode,
        sslrootcert=str(ca_file) if ca_file else None,
    )
    conn = await asyncpg.connect(**settings.connect_kwargs(), timeout=10)
    try:
        return await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await conn.close()


def test_postgres_takes_a_client_that_trusts_the_ca_over_tls(
    tls_postgres: tuple[PostgresServer, Path],
) -> None:
    pg, ca_file = tls_postgres
    assert asyncio.run(_connect(pg, ca_file, "verify-full")) is True


def test_postgres_refuses_a_client_that_does_not_trust_the_ca(
    tls_postgres: tuple[PostgresServer, Path], stranger_ca: trustme.CA, tmp_path: Path
) -> None:
    pg, _ = tls_postgres
    other = tmp_path / "other-ca.crt"
    stranger_ca.cert_pem.write_to_path(str(other))
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(_connect(pg, other, "verify-full"))


def test_postgres_refuses_a_client_without_tls(tls_postgres: tuple[PostgresServer, Path]) -> None:
    pg, _ = tls_postgres
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        asyncio.run(_connect(pg, None, "disable"))
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        asyncio.run(_connect(pg, None, "disable", host="127.0.0.1"))  # loopback alike


def test_the_migration_job_verifies_the_store_and_says_why_it_cannot(
    tls_postgres: tuple[PostgresServer, Path], stranger_ca: trustme.CA, tmp_path: Path
) -> None:
    pg, ca_file = tls_postgres
    other = tmp_path / "other-ca.crt"
    stranger_ca.cert_pem.write_to_path(str(other))
    from eval_api.stackcheck import StackReport

    for root_cert, expected in ((ca_file, "done"), (other, "error")):
        log = tmp_path / f"termination-{expected}"
        done = subprocess.run(
            [sys.executable, "-m", "eval_runner", "migrate", "--termination-log", str(log)],
            env={
                "PATH": os.environ["PATH"],
                "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("api", "runner")),
                "EVAL_STORE_HOST": "127.0.0.2",
                "EVAL_STORE_PORT": str(pg.port),
                "EVAL_STORE_DBNAME": pg.dbname,
                "EVAL_STORE_USER": pg.user,
                "EVAL_STORE_PASSWORD": pg.password,
                "EVAL_STORE_SSLMODE": "verify-full",
                "EVAL_STORE_SSLROOTCERT": str(root_cert),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        report = StackReport.model_validate_json(log.read_text())
        assert report.state == expected, done.stdout + done.stderr
        if expected == "error":
            assert report.reason == "StoreUnreachable" and "TLS" in (report.message or "")
        assert pg.password not in done.stdout + done.stderr


@pytest.fixture(scope="module")
def tls_redis(ca: trustme.CA) -> Iterator[tuple[str, Path]]:
    """A redis-server on the generated redis.conf: its TLS port only."""
    root = Path(tempfile.mkdtemp(prefix="evals-tls-redis-"))
    _files(ca, root, None)
    ca_file = root / "ca.crt"
    ca.cert_pem.write_to_path(str(ca_file))
    password = "cache-pw-not-shown"
    (root / "auth.conf").write_text(f"requirepass {password}\n")
    (root / "data").mkdir()
    port = free_port()
    conf = config_of("stack-cache-config")["redis.conf"]
    conf = conf.replace(tls.CACHE_TLS_DIR, str(root)).replace(
        f"tls-port {builders.REDIS_PORT}", f"tls-port {port}"
    )
    conf = conf.replace("/etc/redis-auth/auth.conf", str(root / "auth.conf"))
    conf = conf.replace("dir /data", f"dir {root / 'data'}").replace(
        "bind * -::*", "bind 127.0.0.1"
    )
    (root / "redis.conf").write_text(conf)
    process = subprocess.Popen(
        ["redis-server", str(root / "redis.conf")],
        stdout=(root / "redis.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        while asyncio.run(check_cache(url, str(ca_file))).state != "ok":
            assert time.monotonic() < deadline and process.poll() is None, (
                root / "redis.log"
            ).read_text()
            time.sleep(0.2)
        yield url, ca_file
    finally:
        process.kill()
        process.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def test_redis_takes_a_client_that_trusts_the_ca_on_rediss(tls_redis: tuple[str, Path]) -> None:
    url, ca_file = tls_redis
    assert asyncio.run(check_cache(url, str(ca_file))).state == "ok"


def test_redis_refuses_a_client_that_does_not_trust_the_ca_or_speaks_plain(
    tls_redis: tuple[str, Path], stranger_ca: trustme.CA, tmp_path: Path
) -> None:
    url, _ = tls_redis
    other = tmp_path / "other-ca.crt"
    stranger_ca.cert_pem.write_to_path(str(other))
    refused = asyncio.run(check_cache(url, str(other)))
    assert refused.state == "unavailable" and "certificate verify failed" in (refused.message or "")
    plain = asyncio.run(check_cache(url, None))  # redis://, no TLS: the TLS port drops it
    assert plain.state == "unavailable"
    assert "cache-pw-not-shown" not in (refused.message or "") + (plain.message or "")


def test_the_dashboard_serves_https_to_clients_that_trust_the_ca(
    ca: trustme.CA, stranger_ca: trustme.CA, tmp_path: Path
) -> None:

    crt, key = _files(ca, tmp_path, None)
    ca_file, other = tmp_path / "ca.crt", tmp_path / "other.crt"
    ca.cert_pem.write_to_path(str(ca_file))
    stranger_ca.cert_pem.write_to_path(str(other))
    with postgres_server() as pg:
        dsn = asyncio.run(create_database(pg))
        asyncio.run(_seed(dsn))
        process, port = spawn_dashboard(
            pg.port, dsn.rsplit("/", 1)[1], "--tls-cert", str(crt), "--tls-key", str(key)
        )
        try:
            base = f"https://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    answer = httpx.get(
                        f"{base}/readyz",
                        verify=ssl.create_default_context(cafile=str(ca_file)),
                        timeout=5,
                    )
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline and process.poll() is None
                    time.sleep(0.2)
            assert answer.status_code == 200 and answer.json()["status"] == "ok"
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                httpx.get(
                    f"{base}/readyz",
                    verify=ssl.create_default_context(cafile=str(other)),
                    timeout=5,
                )
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)  # no plain HTTP
        finally:
            process.terminate()
            process.wait(10)
