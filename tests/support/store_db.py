"""Databases on a test PostgresServer, and what the store tests read back from them."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from tests.support.servers import PostgresServer

_names = itertools.count()


async def create_database(server: PostgresServer) -> str:
    """A new empty database on `server`; returns its DSN."""
    name = f"t{next(_names)}"
    conn = await asyncpg.connect(server.dsn(dbname="postgres"))
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return server.dsn(dbname=name)


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def fetch_now(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """`fetch` from a test that has no event loop running (subprocess tests)."""
    return asyncio.run(fetch(dsn, sql, *args))


SCHEMA_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default,
               col_description(format('%I', table_name)::regclass, ordinal_position) AS comment
        FROM information_schema.columns WHERE table_schema = 'public'
        ORDER BY table_name, ordinal_position
    """,
    "indexes": """
        SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname
    """,
    "constraints": """
        SELECT conrelid::regclass::text AS table_name, conname, pg_get_constraintdef(oid) AS def
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2
    """,
    "tables": """
        SELECT c.relname, obj_description(c.oid, 'pg_class') AS comment FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' ORDER BY 1
    """,
    "migrations": "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
}


async def schema_of(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the migrations define, comparable between two databases."""
    return {name: [tuple(r) for r in await fetch(dsn, sql)] for name, sql in SCHEMA_QUERIES.items()}


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 30) -> float:
    """Poll `check` until it holds; returns the seconds it took (AssertionError after
    `within` seconds)."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started
