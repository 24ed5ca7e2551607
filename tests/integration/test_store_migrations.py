"""The store's schema migrations against a real PostgreSQL: idempotent, the same schema from
every starting version, safe when run concurrently, refusing a changed migration, one
transaction each, and no DDL needed when the schema is current."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from eval_api.store import LATEST_VERSION, MIGRATIONS, Migration, MigrationChanged, migrate
from eval_api.store.migrate import applied_version
from tests.support.servers import PostgresServer, postgres_server
from tests.support.store_db import create_database, fetch, schema_of

pytestmark = pytest.mark.integration

TABLES = {"runs", "samples", "shard_attempts", "schema_migrations"}


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with postgres_server() as running:
        yield running


async def migrated(dsn: str, **kwargs) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn, **kwargs)
    finally:
        await conn.close()


async def test_the_migrations_are_numbered_and_at_least_two() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))
    assert LATEST_VERSION >= 2


async def test_applied_twice_the_second_time_does_nothing(server: PostgresServer) -> None:
    dsn = await create_database(server)
    assert await migrated(dsn) == list(range(1, LATEST_VERSION + 1))
    first = await schema_of(dsn)
    assert await migrated(dsn) == []
    assert await schema_of(dsn) == first
    tables = {r["relname"] for r in await fetch(dsn, "SELECT relname FROM pg_stat_user_tables")}
    assert tables == TABLES
    assert [(v, c) for v, _, c in first["migrations"]] == [
        (m.version, m.checksum) for m in MIGRATIONS
    ]


@pytest.mark.parametrize("start", range(LATEST_VERSION))
async def test_from_each_old_version_to_the_latest_gives_the_same_schema(
    server: PostgresServer, start: int
) -> None:
    fresh = await create_database(server)
    await migrated(fresh)
    old = await create_database(server)
    if start:
        assert await migrated(old, target=start) == list(range(1, start + 1))
    conn = await asyncpg.connect(old)
    try:
        assert await applied_version(conn) == start
    finally:
        await conn.close()
    assert await migrated(old) == list(range(start + 1, LATEST_VERSION + 1))
    assert await schema_of(old) == await schema_of(fresh)


async def test_concurrent_migrations_take_turns(server: PostgresServer) -> None:
    dsn = await create_database(server)
    connections = [await asyncpg.connect(dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(conn) for conn in connections))
    finally:
        for conn in connections:
            await conn.close()
    assert sorted(results) == [[], [], [], list(range(1, LATEST_VERSION + 1))]
    fresh = await create_database(server)
    await migrated(fresh)
    assert await schema_of(dsn) == await schema_of(fresh)


async def test_a_changed_migration_is_refused(server: PostgresServer) -> None:
    dsn = await create_database(server)
    await migrated(dsn)
    changed = list(MIGRATIONS)
    second = changed[1]
    changed[1] = Migration(second.version, second.name, second.sql + "\n-- edited later\n")
    with pytest.raises(MigrationChanged) as raised:
        await migrated(dsn, migrations=tuple(changed))
    message = str(raised.value)
    assert f"migration {second.label} was applied" in message
    assert second.checksum[:12] in message and changed[1].checksum[:12] in message
    assert "must never change" in message


async def test_a_failing_migration_leaves_nothing_and_releases_the_lock(
    server: PostgresServer,
) -> None:
    dsn = await create_database(server)
    broken = Migration(LATEST_VERSION + 1, "broken", "CREATE TABLE half_done (x int);\nSELECT 1/0;")
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrated(dsn, migrations=(*MIGRATIONS, broken))
    # Everything before it was applied, each in its own transaction; it was not.
    versions = [r["version"] for r in await fetch(dsn, "SELECT version FROM schema_migrations")]
    assert sorted(versions) == list(range(1, LATEST_VERSION + 1))
    assert (await fetch(dsn, "SELECT to_regclass('half_done') AS t"))[0]["t"] is None
    # The advisory lock went with the failure: the next migrate does not wait for it.
    assert await asyncio.wait_for(migrated(dsn), 10) == []


async def test_a_database_newer_than_the_code_is_left_alone(server: PostgresServer) -> None:
    dsn = await create_database(server)
    await migrated(dsn)
    assert await migrated(dsn, migrations=MIGRATIONS[:1]) == []


async def test_a_current_schema_needs_no_ddl_privilege(server: PostgresServer) -> None:
    dsn = await create_database(server)
    await migrated(dsn)
    bare = await create_database(server)
    admin = await asyncpg.connect(server.dsn(dbname="postgres"))
    try:
        await admin.execute("CREATE ROLE runner_only LOGIN PASSWORD 'runner-only-password'")
    finally:
        await admin.close()
    for database in (dsn, bare):
        conn = await asyncpg.connect(database)
        try:
            await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            await conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO runner_only")
        finally:
            await conn.close()

    def as_runner(database: str) -> str:
        name = database.rsplit("/", 1)[1]
        return f"postgresql://runner_only:runner-only-password@127.0.0.1:{server.port}/{name}"

    conn = await asyncpg.connect(as_runner(dsn))
    try:
        assert await migrate(conn) == []
    finally:
        await conn.close()
    conn = await asyncpg.connect(as_runner(bare))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await migrate(conn)  # an empty database needs someone allowed to create tables
    finally:
        await conn.close()
