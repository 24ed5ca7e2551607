"""The store's schema: versioned SQL migrations, applied once each, in order, never changed.

The migrations ship as package data (migrations/NNNN_<name>.sql). `migrate` applies the ones a
database lacks, each in its own transaction, under a PostgreSQL advisory lock so that the
operator and any number of runner shards may call it at the same time, and records each in
`schema_migrations` with the sha256 of its text. A shipped migration whose text differs from
what was applied is an error (MigrationChanged): a migration is never edited, a new one is
added. Migrations only add (tables, columns, indexes); nothing here drops or rewrites data.

A database that already holds migrations newer than the shipped ones (a newer operator or
runner went first) is fine: every migration is additive, so older code still finds what it
needs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

# pg_advisory_lock key of the migrations: any constant that no other application on the same
# database uses; this one is the first 8 bytes of sha256("eval-operator schema migrations").
ADVISORY_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"eval-operator schema migrations").digest()[:8], "big", signed=True
)
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


class MigrationError(Exception):
    """The database's schema cannot be brought to what this code needs."""


class MigrationChanged(MigrationError):
    """A migration applied to the database differs from the one shipped under its version."""


def shipped_migrations() -> tuple[Migration, ...]:
    """The migrations in this package, by version; their numbers run 1, 2, 3, ... with no gap."""
    found = []
    for resource in files("eval_api.store").joinpath("migrations").iterdir():
        match = _FILE_NAME.match(resource.name)
        if match is None:
            continue
        found.append(
            Migration(int(match["version"]), match["name"], resource.read_text(encoding="utf-8"))
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"the shipped migrations are not numbered 1..n: {versions}")
    return tuple(found)


MIGRATIONS = shipped_migrations()
LATEST_VERSION = MIGRATIONS[-1].version


async def migrate(
    conn: Any,
    *,
    migrations: tuple[Migration, ...] = MIGRATIONS,
    target: int | None = None,
) -> list[int]:
    """Bring the database of asyncpg connection `conn` up to `target` (default: the latest
    shipped migration); returns the versions applied now, [] when there was nothing to do.

    Raises MigrationChanged when a migration already applied differs from the shipped text.
    Safe to run concurrently from many connections: they take turns on an advisory lock, and
    those after the first find nothing to do. A database already up to date needs no DDL
    privilege (the runner's user may have none)."""
    wanted = [m for m in migrations if target is None or m.version <= target]
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
            await conn.execute(CREATE_SCHEMA_MIGRATIONS)
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {row["version"]: row for row in rows}
        for migration in wanted:
            row = applied.get(migration.version)
            if row is not None and row["checksum"] != migration.checksum:
                raise MigrationChanged(
                    f"migration {migration.label} was applied as "
                    f"{row['version']:04d}_{row['name']} with checksum {row['checksum'][:12]}, "
                    f"but the shipped file's checksum is {migration.checksum[:12]}: a shipped "
                    "migration must never change (add a new one instead)"
                )
        done = []
        for migration in wanted:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            done.append(migration.version)
        return done
    finally:
        # A connection that broke has lost its session, and the lock with it.
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


async def applied_version(conn: Any) -> int:
    """The highest migration applied to the database (0 for an empty one)."""
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))
