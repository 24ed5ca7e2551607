"""`eval-runner migrate` (an EvalSuite's migration Job) against real PostgreSQL and Redis
servers: the report it leaves as its termination message, its exit codes, and no password
anywhere in what it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from eval_api.stackcheck import StackReport
from eval_api.store.migrate import LATEST_VERSION
from tests.support.ports import free_port
from tests.support.servers import PostgresServer, RedisServer, postgres_server, redis_server

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def cache() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def migrate(tmp_path: Path, env: dict[str, str]) -> tuple[int, StackReport, str]:
    log = tmp_path / "termination-log"
    done = subprocess.run(
        [sys.executable, "-m", "eval_runner", "migrate", "--termination-log", str(log)],
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("api", "runner")),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    return (
        done.returncode,
        StackReport.model_validate_json(log.read_text()),
        done.stdout + done.stderr,
    )


def parts(pg: PostgresServer, password: str | None = None) -> dict[str, str]:
    return {
        "EVAL_STORE_HOST": "127.0.0.1",
        "EVAL_STORE_PORT": str(pg.port),
        "EVAL_STORE_DBNAME": pg.dbname,
        "EVAL_STORE_USER": pg.user,
        "EVAL_STORE_PASSWORD": pg.password if password is None else password,
        "EVAL_STORE_SSLMODE": "disable",
    }


def test_migrates_reports_the_version_and_checks_the_cache(
    tmp_path: Path, pg: PostgresServer, cache: RedisServer
) -> None:
    code, report, out = migrate(tmp_path, {**parts(pg), "EVAL_CACHE_URL": cache.url()})
    assert code == 0, out
    assert report.state == "done" and report.schema_version == LATEST_VERSION
    assert report.endpoint == f"127.0.0.1:{pg.port}/{pg.dbname}"
    assert report.cache.state == "ok" and report.cache.endpoint == f"127.0.0.1:{cache.port}"
    # Again (a second Job, a second suite on the same store): nothing to apply, same answer.
    code, again, _ = migrate(tmp_path, {**parts(pg), "EVAL_CACHE_URL": cache.url()})
    assert code == 0 and again.applied == [] and again.schema_version == LATEST_VERSION
    assert pg.password not in out and cache.password not in out


def test_the_migration_makes_the_dashboards_read_only_role_and_resets_its_password(
    tmp_path: Path, pg: PostgresServer
) -> None:
    import asyncio

    import asyncpg

    async def login(password: str) -> int:
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=pg.port,
            user="evals_reader_t",
            password=password,
            database=pg.dbname,
        )
        try:
            assert await conn.fetchval("SHOW default_transaction_read_only") == "on"
            return await conn.fetchval("SELECT count(*) FROM schema_migrations")
        finally:
            await conn.close()

    for password in ("first-reader-pw-1a2b", "second-reader-pw-3c4d"):
        env = {**parts(pg), "EVAL_READER_USER": "evals_reader_t", "EVAL_READER_PASSWORD": password}
        code, report, out = migrate(tmp_path, env)
        assert code == 0, out
        assert report.reader.state == "ok" and report.reader.role == "evals_reader_t"
        assert asyncio.run(login(password)) == LATEST_VERSION
        assert password not in out and password not in (tmp_path / "termination-log").read_text()
    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(login("first-reader-pw-1a2b"))
    # A role name that is not an identifier is the report's, and the migration still done.
    bad = {**parts(pg), "EVAL_READER_USER": "x; DROP", "EVAL_READER_PASSWORD": "pw-5e6f"}
    code, report, _ = migrate(tmp_path, bad)
    assert code == 0 and report.state == "done"
    assert report.reader.state == "failed" and "identifier" in (report.reader.message or "")


def test_a_uri_wins_over_the_parts_as_in_a_cloudnativepg_secret(
    tmp_path: Path, pg: PostgresServer
) -> None:
    env = {**parts(pg, password="wrong"), "EVAL_STORE_URI": pg.dsn()}
    code, report, out = migrate(tmp_path, env)
    assert code == 0, out
    assert report.cache.state == "disabled"


def test_a_wrong_password_is_retried_with_a_clear_reason_and_never_shown(
    tmp_path: Path, pg: PostgresServer
) -> None:
    canary = "canary-pw-9f3e1c"
    code, report, out = migrate(tmp_path, parts(pg, password=canary))
    assert code == 1  # the Job retries: the Secret may be fixed
    assert report.reason == "StoreAuthenticationFailed"
    assert f"127.0.0.1:{pg.port}/{pg.dbname}" in (report.message or "")
    assert canary not in out and canary not in (tmp_path / "termination-log").read_text()


def test_an_unreachable_store_says_where(tmp_path: Path, pg: PostgresServer) -> None:
    env = {**parts(pg), "EVAL_STORE_PORT": str(free_port())}
    code, report, _ = migrate(tmp_path, env)
    assert code == 1 and report.reason == "StoreUnreachable"
    assert "cannot connect to 127.0.0.1" in (report.message or "")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "holds neither uri nor host"),
        ({"EVAL_STORE_URI": "mysql://u:canary-pw-9f3e1c@db/x"}, "must start with postgresql://"),
        (
            {"EVAL_STORE_HOST": "db.example", "EVAL_STORE_PASSWORD": "canary-pw-9f3e1c"},
            "EVAL_STORE_USER",
        ),
    ],
)
def test_a_malformed_secret_is_invalid_store_secret(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    code, report, out = migrate(tmp_path, env)
    assert code == 1 and report.reason == "InvalidStoreSecret"
    assert expected in (report.message or "")
    assert "canary-pw-9f3e1c" not in out


def test_a_cache_that_refuses_or_is_down_never_fails_the_migration(
    tmp_path: Path, pg: PostgresServer, cache: RedisServer
) -> None:
    code, report, out = migrate(
        tmp_path, {**parts(pg), "EVAL_CACHE_URL": cache.url(password="canary-pw-9f3e1c")}
    )
    assert code == 0
    assert report.cache.state == "unavailable" and report.cache.reason == "CacheUnreachable"
    assert "canary-pw-9f3e1c" not in out and "canary-pw-9f3e1c" not in json.dumps(
        report.model_dump()
    )
    down = f"redis://:x@127.0.0.1:{free_port()}/0"
    code, report, _ = migrate(tmp_path, {**parts(pg), "EVAL_CACHE_URL": down})
    assert code == 0 and report.cache.state == "unavailable"
    code, report, _ = migrate(tmp_path, {**parts(pg), "EVAL_CACHE_URL": "http://nope"})
    assert code == 0 and report.cache.reason == "InvalidCacheURL"
