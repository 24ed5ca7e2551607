"""The managed store's application role: what runner pods, cell reports, comparisons and
backups log in as, instead of the store's superuser.

The migration Job (the only client that keeps the owner's credentials) creates the role, or
resets its password, and grants it exactly what those clients do, table by table:

- runner shards: register their run (INSERT on runs), their attempts (INSERT on
  shard_attempts, reading the last one), their samples (INSERT on samples, from a TEMPORARY
  staging table: TEMPORARY on the database), and read them back to resume (SELECT);
  they read schema_migrations to see the schema is current (no DDL then);
- cell reports: mark a run reported (UPDATE on runs) and read samples;
- comparisons: read;
- backups (pg_dump): read every table and sequence; pg_dump's transaction is READ ONLY.

It owns nothing, cannot create (no CREATE on the schema or the database, NOCREATEDB,
NOCREATEROLE), so it can neither drop nor alter a table, delete or rewrite a stored sample, nor
make a role. A table a new migration adds must be listed here: a test checks the shipped schema
against TABLE_PRIVILEGES. The password is sent as a SCRAM-SHA-256 verifier, never as text.
"""

from __future__ import annotations

from typing import Any

from eval_api.store.reader import ROLE_NAME, ReaderRoleError, upsert_login_role

APP_ROLE = "evals_app"
# What the role may do on each table of the schema, beyond reading (SELECT on every table).
TABLE_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "runs": ("SELECT", "INSERT", "UPDATE"),
    "samples": ("SELECT", "INSERT"),
    "shard_attempts": ("SELECT", "INSERT"),
    "schema_migrations": ("SELECT",),
}


class AppRoleError(ReaderRoleError):
    """The role's name is not usable; the message never holds the password."""


async def ensure_app_role(conn: Any, role: str, password: str) -> None:
    """Create the role or reset its password; grant it what the store's clients do and
    nothing else. Idempotent; run after the migrations (the tables must exist)."""
    if not ROLE_NAME.match(role):
        raise AppRoleError(f"application role {role!r} must be a lower-case SQL identifier")
    async with conn.transaction():
        ident, quoted_database = await upsert_login_role(
            conn, role, password, lock="eval-operator app role",
            attributes="NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
        )  # fmt: skip
        await conn.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {quoted_database} TO {ident}")
        # PostgreSQL before 15 lets every role create in the public schema.
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        await conn.execute(f"REVOKE CREATE ON SCHEMA public FROM {ident}")
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {ident}")
        # pg_dump reads everything: every table and sequence, present and future.
        await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ident}")
        await conn.execute(f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {ident}")
        await conn.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {ident}"
        )
        await conn.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON SEQUENCES TO {ident}"
        )
        present = {
            row["tablename"]
            for row in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        for table, privileges in TABLE_PRIVILEGES.items():
            if table in present:
                await conn.execute(f'GRANT {", ".join(privileges)} ON "{table}" TO {ident}')
