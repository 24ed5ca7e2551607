"""The store's read-only role, for the results dashboard.

The migration Job (which logs in as the store's owner) creates the role, or resets its password,
and grants it SELECT on the schema's tables, present and future; the role's sessions are
read-only by default too (default_transaction_read_only), so that even a mistake in the
dashboard's SQL cannot write. The password is sent as a SCRAM-SHA-256 verifier computed here,
never as text: it cannot show in the server's statement log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from typing import Any

SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)
ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ReaderRoleError(ValueError):
    """The role's name is not usable; the message never holds the password."""


def scram_sha256_verifier(password: str, *, salt: bytes | None = None) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802 and 7677):
    SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, all base64."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


async def upsert_login_role(
    conn: Any, role: str, password: str, *, lock: str, attributes: str
) -> tuple[str, str]:
    """Inside the caller's transaction: create the login role, or reset its password, with
    `attributes` (NOSUPERUSER ...), the password sent as a SCRAM verifier. A role is
    cluster-wide: the advisory lock named `lock` keeps two suites' migration Jobs on one
    server from racing. `role` is one the caller checked against ROLE_NAME. Returns the role
    and the current database, quoted for SQL."""
    verifier = "'" + scram_sha256_verifier(password).replace("'", "''") + "'"
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", lock)
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
    ident = f'"{role}"'
    await conn.execute(
        f"{'ALTER' if exists else 'CREATE'} ROLE {ident} WITH LOGIN {attributes} "
        f"PASSWORD {verifier}"
    )
    database = await conn.fetchval("SELECT current_database()")
    return ident, '"' + database.replace('"', '""') + '"'


async def ensure_reader_role(conn: Any, role: str, password: str) -> None:
    """Create the role or reset its password; grant it reading and nothing else. Idempotent."""
    if not ROLE_NAME.match(role):
        raise ReaderRoleError(f"reader role {role!r} must be a lower-case SQL identifier")
    async with conn.transaction():
        ident, quoted_database = await upsert_login_role(
            conn, role, password, lock="eval-operator reader role",
            attributes="NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION",
        )  # fmt: skip
        await conn.execute(f"ALTER ROLE {ident} SET default_transaction_read_only = on")
        await conn.execute(f"GRANT CONNECT ON DATABASE {quoted_database} TO {ident}")
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {ident}")
        await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ident}")
        await conn.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {ident}"
        )
