"""The managed store's application role (issue 17, 4.15) on a real PostgreSQL: the migration
Job's stack check (as the superuser) makes it; logged in as it, a runner shard writes and
resumes, a cell report and a comparison read and mark their runs, the backup script dumps
the whole store; and it cannot drop, alter or create a table, rewrite a stored sample, or
make a role."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest

from eval_api import environment
from eval_api.shard import ShardSummary
from eval_api.store import StoreSettings
from eval_api.store.approle import APP_ROLE, TABLE_PRIVILEGES
from eval_operator.builders.suite import backup_script
from eval_runner.cellreport import CellRun, compare_stored_runs, run_report
from eval_runner.pipeline import run_shard
from eval_runner.stackcheck import check_stack
from eval_runner.store import RunIdentity, SampleStore
from tests.integration.test_store_resume import N, evaluation, model_server
from tests.support.servers import PostgresServer, postgres_bin, postgres_server
from tests.support.store_db import create_database, eventually, fetch

pytestmark = pytest.mark.integration

UID = "0b9a2c1e-0000-4000-8000-0000000000cc"


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with postgres_server() as running:
        yield running


def migration_env(server: PostgresServer, dbname: str, app_password: str) -> dict[str, str]:
    """The migration Job's environment: the superuser's store Secret and the app Secret."""
    return {
        environment.STORE_HOST: "127.0.0.1",
        environment.STORE_PORT: str(server.port),
        environment.STORE_DBNAME: dbname,
        environment.STORE_USER: server.user,
        environment.STORE_PASSWORD: server.password,
        environment.STORE_SSLMODE: "disable",
        environment.APP_USER: APP_ROLE,
        environment.APP_PASSWORD: app_password,
    }


def app_env(server: PostgresServer, dbname: str, password: str) -> dict[str, str]:
    """A runner pod's, a cell report's or a comparison's: the app Secret, key by key."""
    return {
        environment.STORE_HOST: "127.0.0.1",
        environment.STORE_PORT: str(server.port),
        environment.STORE_DBNAME: dbname,
        environment.STORE_USER: APP_ROLE,
        environment.STORE_PASSWORD: password,
        environment.STORE_SSLMODE: "disable",
    }


async def migrated(server: PostgresServer) -> tuple[str, str]:
    """A new database migrated by the stack check, with the role made; (dbname, password)."""
    dbname = (await create_database(server)).rsplit("/", 1)[1].split("?")[0]
    password = secrets.token_urlsafe(32)
    report, code = await check_stack(migration_env(server, dbname, password))
    assert (code, report.state) == (0, "done"), report
    return dbname, password


async def test_the_application_role_runs_resumes_reports_and_compares(
    server: PostgresServer,
) -> None:
    dbname, password = await migrated(server)
    env = app_env(server, dbname, password)
    settings = StoreSettings.from_env(env)
    assert settings is not None
    runs = []
    for run in ("run-1", "run-2"):
        identity = RunIdentity(UID, run, "team", "grouped", suite="stack")
        async with model_server() as model:
            model.hold_after = 20
            first = ShardSummary()
            task = asyncio.create_task(
                run_shard(
                    evaluation(model.base_url),
                    0,
                    1,
                    None,
                    store=SampleStore(settings, identity),
                    summary=first,
                )
            )

            async def twenty(first: ShardSummary = first) -> bool:
                return first.completed + first.failed == 20

            await eventually(twenty, "20 samples finished")
            task.cancel()  # SIGTERM: the shard's rows are written on the way out
            with pytest.raises(asyncio.CancelledError):
                await task

            async def released(model: Any = model) -> bool:
                return model.held == 0  # the cancelled shard's held requests are gone

            await eventually(released, "the cancelled shard's requests closed")
            model.hold_after = None
            # The retried pod resumes from the store: what is stored is not asked again.
            second = await run_shard(
                evaluation(model.base_url), 0, 1, None, store=SampleStore(settings, identity)
            )
        assert second.state == "done"
        assert second.resumed is not None and second.resumed.samples == 20
        assert model.count == N
        runs.append((UID, run))
    for suite_run, (_, run) in zip(("s-1", "s-2"), runs, strict=True):
        cell = CellRun("team", "stack", "m-t", suite_run, UID, run)
        report, code = await run_report(
            env, cell, "previous", max_drop=Decimal("0.05"), alpha=Decimal("0.05")
        )
        assert (code, report.state) == (0, "done"), report
    assert report.comparison is not None and report.comparison.reason == "Compared"
    compared, code = await compare_stored_runs(
        env, runs[0], runs[1], max_drop=Decimal("0.05"), alpha=Decimal("0.05")
    )
    assert (code, compared.state) == (0, "done"), compared
    marked = await fetch(
        f"postgresql://{server.user}:{server.password}@127.0.0.1:{server.port}/{dbname}",
        "SELECT cell, suite_run FROM runs ORDER BY run",
    )
    assert [tuple(r) for r in marked] == [("m-t", "s-1"), ("m-t", "s-2")]


FORBIDDEN = [
    "DROP TABLE samples",
    "ALTER TABLE runs ADD COLUMN x int",
    "ALTER TABLE samples DROP COLUMN response",
    "CREATE TABLE evil (x int)",
    "CREATE INDEX evil ON samples (response)",
    "TRUNCATE samples",
    "DELETE FROM samples",
    "UPDATE samples SET response = 'rewritten'",
    "DELETE FROM runs",
    "DELETE FROM schema_migrations",
    "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'x', 'y')",
    f"CREATE ROLE evil LOGIN PASSWORD '{'x' * 12}'",
    f"ALTER ROLE {APP_ROLE} SUPERUSER",
    "CREATE DATABASE evil",
]


async def test_the_application_role_cannot_change_the_schema_rewrite_samples_or_make_roles(
    server: PostgresServer,
) -> None:
    dbname, password = await migrated(server)
    conn = await asyncpg.connect(
        host="127.0.0.1", port=server.port, user=APP_ROLE, password=password, database=dbname
    )
    try:
        attributes = await conn.fetchrow(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
            " FROM pg_roles WHERE rolname = current_user"
        )
        assert not any(attributes.values())
        for statement in FORBIDDEN:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
                pytest.fail(f"{statement}: allowed")
        # Every table of the shipped schema is in the role's grants (a new migration's table
        # must be added to eval_api.store.approle.TABLE_PRIVILEGES).
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert tables == set(TABLE_PRIVILEGES)
        owned = await conn.fetchval(
            "SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles"
            " WHERE rolname = current_user)"
        )
        assert owned == 0
    finally:
        await conn.close()


async def test_a_second_migration_resets_the_password_and_keeps_the_grants(
    server: PostgresServer,
) -> None:
    dbname, old = await migrated(server)
    new = secrets.token_urlsafe(32)
    report, code = await check_stack(migration_env(server, dbname, new))
    assert (code, report.state) == (0, "done")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(
            host="127.0.0.1", port=server.port, user=APP_ROLE, password=old, database=dbname
        )
    rows = await fetch(
        f"postgresql://{APP_ROLE}:{quote(new, safe='')}@127.0.0.1:{server.port}/{dbname}",
        "SELECT count(*) FROM schema_migrations",
    )
    assert rows[0][0] > 0


def test_the_backup_script_dumps_the_store_as_the_application_role(
    server: PostgresServer, tmp_path: Path
) -> None:
    dbname, password = asyncio.run(migrated(server))
    backups = tmp_path / "backups"
    backups.mkdir()
    env = {
        "PATH": f"{Path(postgres_bin('pg_dump')).parent}:{os.environ['PATH']}",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(server.port),
        "PGUSER": APP_ROLE,
        "PGPASSWORD": password,
        "PGDATABASE": dbname,
        "BACKUP_DIR": str(backups),
        "BACKUP_PREFIX": "stack",
        "RETENTION": "2",
    }
    done = subprocess.run(["sh", "-c", backup_script()], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (dump,) = backups.glob("stack-*.dump")
    listing = subprocess.run(
        [postgres_bin("pg_restore"), "--list", str(dump)], capture_output=True, text=True
    )
    assert listing.returncode == 0
    for table in TABLE_PRIVILEGES:
        assert f"TABLE DATA public {table} " in listing.stdout, table


def test_a_dump_restored_into_a_fresh_suites_store_is_usable_by_its_roles(tmp_path: Path) -> None:
    """The README's restore (pg_restore --clean --if-exists --no-owner as the owner) into a
    fresh managed store whose migration made the roles: the rows are there, and the fresh
    store's application role reads and writes them."""
    backups = tmp_path / "backups"
    backups.mkdir()
    with postgres_server() as source, postgres_server() as fresh:
        dbname, password = asyncio.run(migrated(source))
        identity = RunIdentity(UID, "run-1", "team", "grouped", suite="stack")

        async def one_run() -> None:
            settings = StoreSettings.from_env(app_env(source, dbname, password))
            async with model_server() as model:
                await run_shard(
                    evaluation(model.base_url), 0, 1, None, store=SampleStore(settings, identity)
                )

        asyncio.run(one_run())
        env = {
            "PATH": f"{Path(postgres_bin('pg_dump')).parent}:{os.environ['PATH']}",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(source.port),
            "PGUSER": APP_ROLE,
            "PGPASSWORD": password,
            "PGDATABASE": dbname,
            "BACKUP_DIR": str(backups),
            "BACKUP_PREFIX": "stack",
            "RETENTION": "2",
        }
        done = subprocess.run(
            ["sh", "-c", backup_script()], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        (dump,) = backups.glob("stack-*.dump")
        fresh_db, fresh_password = asyncio.run(migrated(fresh))
        restored = subprocess.run(
            [
                postgres_bin("pg_restore"),
                "--clean",
                "--if-exists",
                "--no-owner",
                "-h",
                "127.0.0.1",
                "-p",
                str(fresh.port),
                "-U",
                fresh.user,
                "-d",
                fresh_db,
                str(dump),
            ],
            env={**os.environ, "PGPASSWORD": fresh.password},
            capture_output=True,
            text=True,
        )
        assert restored.returncode == 0, restored.stderr

        async def check() -> None:
            conn = await asyncpg.connect(
                host="127.0.0.1",
                port=fresh.port,
                user=APP_ROLE,
                password=fresh_password,
                database=fresh_db,
            )
            try:
                assert await conn.fetchval("SELECT count(*) FROM samples") == N
                await conn.execute("UPDATE runs SET cell = 'm-t'")
                await conn.execute(
                    "INSERT INTO shard_attempts (evaluation_uid, run, shard, attempt, resumed)"
                    " VALUES ($1, 'run-1', 0, 99, 0)",
                    UID,
                )
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute("DELETE FROM samples")
            finally:
                await conn.close()

        asyncio.run(check())
