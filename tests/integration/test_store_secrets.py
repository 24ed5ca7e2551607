"""Canary passwords of the store and the cache through every way a run can go: a pod's shard
(URI or parts, a refused password, a store that cannot be reached, a crash), and a local run
(a mistyped flag, an unreachable store, a run that works). Neither password is ever in a log
line, the termination message, a scrape of /progress or /metrics, stdout or stderr, in any
form an error text could print it (as is, percent-encoded, repr, JSON-escaped)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest
import redis.asyncio as aioredis

from eval_api.exitcodes import EXIT_PERMANENT, EXIT_STORE_AWAY
from tests.integration.test_runner_cli import QUICKSTART, runner_env
from tests.integration.test_runner_secrets import (
    CANARY,
    CRASHING_SCORER,
    forms,
    run_shard_process,
    spec_for,
)
from tests.support.model_server import ModelServer
from tests.support.ports import free_port
from tests.support.servers import PostgresServer, RedisServer, postgres_server, redis_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Characters a URI must percent-encode: the password appears in two forms.
STORE_CANARY = "pg-canary-5b2e77/never@anywhere"  # noqa: S105
CACHE_CANARY = "cache-canary-8d41c0-never-anywhere"  # noqa: S105
WRONG_CANARY = "wrong-canary-a07f3b-never-anywhere"  # noqa: S105
SECRETS = (STORE_CANARY, CACHE_CANARY, WRONG_CANARY, CANARY)


def all_forms(secret: str) -> list[str]:
    return [*forms(secret), quote(secret, safe="")]


@pytest.fixture(scope="module")
def store() -> Iterator[PostgresServer]:
    with postgres_server() as running:

        async def add_role() -> None:
            conn = await asyncpg.connect(running.dsn())
            try:
                await conn.execute(f"CREATE ROLE canary LOGIN SUPERUSER PASSWORD '{STORE_CANARY}'")
            finally:
                await conn.close()

        asyncio.run(add_role())
        yield running


@pytest.fixture(scope="module")
def cache() -> Iterator[RedisServer]:
    with redis_server() as running:

        async def add_user() -> None:
            admin = aioredis.Redis.from_url(running.url())
            try:
                await admin.acl_setuser(
                    "canary",
                    enabled=True,
                    passwords=[f"+{CACHE_CANARY}"],
                    keys=["*"],
                    commands=["+@all"],
                )
            finally:
                await admin.aclose()

        asyncio.run(add_user())
        yield running


def store_uri(server: PostgresServer, password: str = STORE_CANARY, port: int | None = None) -> str:
    return f"postgresql://canary:{quote(password, safe='')}@127.0.0.1:{port or server.port}/evals"


def cache_url(server: RedisServer, password: str = CACHE_CANARY) -> str:
    return f"redis://canary:{password}@127.0.0.1:{server.port}/0"


def pod_env(**extra: str) -> dict[str, str]:
    return {
        "EVAL_API_KEY": CANARY,
        "EVAL_EVALUATION_UID": "0b9a2c1e-0000-4000-8000-0000000000cc",
        "EVAL_RUN": f"secret-{free_port()}",  # a new run each time
        **extra,
    }


def assert_nowhere(*texts: str) -> None:
    for secret in SECRETS:
        for form in all_forms(secret):
            for text in texts:
                assert form not in text, f"{form!r} was shown"


def test_a_pod_with_store_and_cache_by_uri(
    store: PostgresServer, cache: RedisServer, tmp_path: Path
) -> None:
    env = pod_env(EVAL_STORE_URI=store_uri(store), EVAL_CACHE_URL=cache_url(cache))
    with ModelServer().in_thread() as model:
        outcome = run_shard_process(tmp_path, spec_for(model.base_url), env)
    assert outcome.code == 0, outcome.output
    summary = outcome.summary
    assert (summary.state, summary.completed, summary.cache_unavailable) == ("done", 12, None)
    assert "store opened" in outcome.output  # it did use the store
    outcome.assert_secret(*SECRETS)
    assert_nowhere(outcome.output, outcome.message, outcome.scrapes)


def test_a_pod_with_store_parts_and_a_refused_cache_password(
    store: PostgresServer, cache: RedisServer, tmp_path: Path
) -> None:
    env = pod_env(
        EVAL_STORE_HOST="127.0.0.1",
        EVAL_STORE_PORT=str(store.port),
        EVAL_STORE_DBNAME="evals",
        EVAL_STORE_USER="canary",
        EVAL_STORE_PASSWORD=STORE_CANARY,
        EVAL_CACHE_URL=cache_url(cache, password=WRONG_CANARY),
    )
    with ModelServer().in_thread() as model:
        outcome = run_shard_process(tmp_path, spec_for(model.base_url), env)
    assert outcome.code == 0, outcome.output
    summary = outcome.summary
    assert summary.state == "done"
    assert f"redis://canary@127.0.0.1:{cache.port}/0 was unavailable" in (
        summary.cache_unavailable or ""
    )
    assert_nowhere(outcome.output, outcome.message, outcome.scrapes)


@pytest.mark.parametrize("problem", ["refused", "unreachable"])
def test_a_pod_whose_store_cannot_be_used(
    store: PostgresServer, cache: RedisServer, tmp_path: Path, problem: str
) -> None:
    uri = (
        store_uri(store, password=WRONG_CANARY)
        if problem == "refused"
        else store_uri(store, port=free_port())
    )
    env = pod_env(
        EVAL_STORE_URI=uri,
        EVAL_STORE_UNAVAILABLE_AFTER_SECONDS="1",
        EVAL_CACHE_URL=cache_url(cache),
    )
    with ModelServer().in_thread() as model:
        outcome = run_shard_process(tmp_path, spec_for(model.base_url), env)
        assert model.count == 0
    # A password the store refuses is permanent (the index fails); a store that cannot be
    # reached is retried by the Job (exit 4: a new pod, no retry spent) and resumes from it.
    expected = {
        "refused": (EXIT_PERMANENT, "StoreCredentialsRefused"),
        "unreachable": (EXIT_STORE_AWAY, "StoreUnavailable"),
    }
    summary = outcome.summary
    assert (outcome.code, summary.reason) == expected[problem]
    assert summary.state == "error"
    assert "the store postgresql://canary@127.0.0.1:" in (summary.message or "")
    assert_nowhere(outcome.output, outcome.message, outcome.scrapes)


def test_a_pod_that_crashes_with_a_store_and_a_cache(
    store: PostgresServer, cache: RedisServer, tmp_path: Path
) -> None:
    env = pod_env(EVAL_STORE_URI=store_uri(store), EVAL_CACHE_URL=cache_url(cache))
    with ModelServer().in_thread() as model:
        outcome = run_shard_process(
            tmp_path, spec_for(model.base_url), env, prelude=CRASHING_SCORER
        )
    assert outcome.code == 1
    assert outcome.summary.reason == "RunnerError"
    assert "Traceback" in outcome.output or '"exception"' in outcome.output
    assert_nowhere(outcome.output, outcome.message, outcome.scrapes)


def local(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eval_runner", "run", str(QUICKSTART), *args],
        capture_output=True,
        text=True,
        env=runner_env(EVAL_API_KEY=CANARY),
        cwd=ROOT,
        timeout=60,
    )


def test_local_runs_never_show_the_passwords(store: PostgresServer, cache: RedisServer) -> None:
    with ModelServer().in_thread() as model:
        ok = local(
            "--base-url", model.base_url, "--limit", "5", "--no-progress",
            "--store", store_uri(store), "--cache", cache_url(cache),
        )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "store: run local-" in ok.stdout
    mistyped = local("--sotre", store_uri(store), "--cache", cache_url(cache))
    assert mistyped.returncode == 2
    assert "unrecognized arguments: --sotre [redacted]" in mistyped.stderr
    unreachable = local("--store", store_uri(store, port=free_port()))
    assert unreachable.returncode == EXIT_PERMANENT
    assert "error: StoreUnavailable: cannot connect to the store postgresql://canary@" in (
        unreachable.stderr
    )
    invalid = local("--store", store_uri(store).replace("@127.0.0.1:", "@127.0.0.1:x"))
    assert invalid.returncode == 2 and "--store is not a valid postgresql:// URI" in invalid.stderr
    for done in (ok, mistyped, unreachable, invalid):
        assert_nowhere(done.stdout, done.stderr)
