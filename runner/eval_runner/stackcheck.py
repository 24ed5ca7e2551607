"""`eval-runner migrate`: an EvalSuite's schema migration and stack check, run as a Job.

It connects to the store the way runner pods do (the same environment), applies the shipped
migrations under the advisory lock, pings the cache, and reports the outcome as its
termination message (eval_api.stackcheck.StackReport), which the operator turns into the
suite's StoreReady and CacheReady conditions.

Exit codes: 0 done; 3 (permanent: the Job fails at once) when retrying cannot help (a shipped
migration changed, a schema newer than this runner); 1 otherwise, so that the Job controller
retries with its backoff: a store still starting, a wrong password or a Secret fixed later all
recover without anyone deleting the Job. A cache that does not answer never fails the Job:
runs go on without it.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as redis

from eval_api import environment
from eval_api.exitcodes import EXIT_OK, EXIT_PERMANENT
from eval_api.stackcheck import (
    CACHE_UNREACHABLE,
    INVALID_CACHE_URL,
    INVALID_STORE_SECRET,
    MIGRATION_FAILED,
    STORE_AUTHENTICATION_FAILED,
    STORE_UNREACHABLE,
    CacheCheck,
    ReaderCheck,
    StackReport,
)
from eval_api.store.approle import AppRoleError, ensure_app_role
from eval_api.store.migrate import MigrationError, applied_version, migrate
from eval_api.store.reader import ReaderRoleError, ensure_reader_role
from eval_api.store.settings import StoreSettings, StoreSettingsError
from eval_runner.cache import CacheSettingsError, redacted_url, tls_url
from eval_runner.secrets import SECRETS

EXIT_RETRY = 1
CONNECT_TIMEOUT_SECONDS = 10.0
CACHE_TIMEOUT_SECONDS = 5.0


class _Failed(Exception):
    def __init__(self, reason: str, message: str, code: int = EXIT_RETRY) -> None:
        super().__init__(message)
        self.reason, self.message, self.code = reason, message, code


def register_secrets(env: dict[str, str] | os._Environ[str]) -> None:
    """Before anything can print them: every form of the store's and the cache's passwords."""
    for name in (environment.STORE_URI, environment.CACHE_URL):
        SECRETS.add_url(env.get(name, ""))
    for name in (environment.STORE_PASSWORD, environment.READER_PASSWORD, environment.APP_PASSWORD):
        if env.get(name):
            SECRETS.add(env[name])


async def check_reader(conn: Any, role: str | None, password: str | None) -> ReaderCheck:
    """The dashboard's read-only role, when the environment asks for one. Its failure never
    fails the migration: runs go on, and only the dashboard waits for it."""
    if not role or not password:
        return ReaderCheck(state="none")
    try:
        await ensure_reader_role(conn, role, password)
    except ReaderRoleError as err:
        return ReaderCheck(state="failed", role=role, message=str(err))
    except (asyncpg.PostgresError, OSError) as err:
        return ReaderCheck(
            state="failed", role=role, message=SECRETS.redact(f"{type(err).__name__}: {err}")
        )
    return ReaderCheck(state="ok", role=role)


async def make_app_role(conn: Any, role: str | None, password: str | None) -> None:
    """The application role of a managed store, when the environment asks for one. The runners
    log in as it: unlike the dashboard's, its failure fails the migration (retried)."""
    if not role or not password:
        return
    try:
        await ensure_app_role(conn, role, password)
    except AppRoleError as err:
        raise _Failed(MIGRATION_FAILED, str(err), EXIT_PERMANENT) from None
    except (asyncpg.PostgresError, OSError) as err:
        raise _Failed(
            MIGRATION_FAILED,
            SECRETS.redact(f"application role {role}: {type(err).__name__}: {err}"),
        ) from None


async def check_store(
    settings: StoreSettings,
    reader: tuple[str | None, str | None] = (None, None),
    app: tuple[str | None, str | None] = (None, None),
) -> StackReport:
    endpoint = f"{settings.host}:{settings.port}/{settings.dbname}"
    try:
        conn = await asyncpg.connect(**settings.connect_kwargs(), timeout=CONNECT_TIMEOUT_SECONDS)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as err:
        raise _Failed(
            STORE_AUTHENTICATION_FAILED,
            f"{settings.display()}: the server refused the user or password ({type(err).__name__})",
        ) from None
    except (ssl.SSLError, ssl.CertificateError) as err:
        raise _Failed(STORE_UNREACHABLE, f"{settings.display()}: TLS: {err}") from None
    except asyncpg.InvalidCatalogNameError:
        raise _Failed(STORE_UNREACHABLE, f"{settings.display()}: no such database") from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        detail = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise _Failed(STORE_UNREACHABLE, f"cannot connect to {endpoint}: {detail}") from None
    try:
        applied = await migrate(conn)
        version = await applied_version(conn)
        await make_app_role(conn, *app)
        reader_check = await check_reader(conn, *reader)
    except MigrationError as err:
        raise _Failed(MIGRATION_FAILED, str(err), EXIT_PERMANENT) from None
    except (asyncpg.PostgresError, OSError) as err:
        raise _Failed(MIGRATION_FAILED, f"{type(err).__name__}: {err}") from None
    finally:
        await conn.close()
    return StackReport(
        state="done",
        endpoint=endpoint,
        schema_version=version,
        applied=applied,
        reader=reader_check,
    )


async def check_cache(url: str | None, ca_file: str | None = None) -> CacheCheck:
    if not url:
        return CacheCheck(state="disabled")
    try:
        where = redacted_url(url)
    except CacheSettingsError as err:
        return CacheCheck(state="unavailable", reason=INVALID_CACHE_URL, message=str(err))
    endpoint = where.split("://", 1)[1].rsplit("/", 1)[0].split("@")[-1]
    url, tls = tls_url(url, ca_file)
    client = redis.Redis.from_url(
        url,
        socket_timeout=CACHE_TIMEOUT_SECONDS,
        socket_connect_timeout=CACHE_TIMEOUT_SECONDS,
        **tls,
    )
    try:
        await client.ping()
    except Exception as err:  # redis-py's errors, OSError, timeouts: the cache is unavailable
        return CacheCheck(
            state="unavailable",
            reason=CACHE_UNREACHABLE,
            endpoint=endpoint,
            message=SECRETS.redact(f"{where}: {type(err).__name__}: {err}"),
        )
    finally:
        await client.aclose()
    return CacheCheck(state="ok", endpoint=endpoint)


async def check_stack(env: dict[str, str] | os._Environ[str]) -> tuple[StackReport, int]:
    try:
        try:
            settings = StoreSettings.from_env(env)
        except StoreSettingsError as err:
            raise _Failed(INVALID_STORE_SECRET, str(err)) from None
        if settings is None:
            raise _Failed(
                INVALID_STORE_SECRET,
                "the store's Secret holds neither uri nor host (with dbname, username, password)",
            )
        reader = (env.get(environment.READER_USER), env.get(environment.READER_PASSWORD))
        app = (env.get(environment.APP_USER), env.get(environment.APP_PASSWORD))
        report = await check_store(settings, reader, app)
        code = EXIT_OK
    except _Failed as failed:
        report = StackReport(state="error", reason=failed.reason, message=failed.message)
        code = failed.code
    report.cache = await check_cache(
        env.get(environment.CACHE_URL), env.get(environment.CACHE_CA_FILE) or None
    )
    return report, code


def cmd_migrate(termination_log: Path) -> int:
    register_secrets(os.environ)
    report, code = asyncio.run(check_stack(os.environ))
    message = SECRETS.redact(report.to_message())
    try:
        termination_log.write_text(message)
    except OSError as err:
        print(f"warning: cannot write {termination_log}: {err.strerror}", file=sys.stderr)
    print(message)
    return code
