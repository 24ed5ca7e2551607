"""The managed store's backups: the backup CronJob's own script (builders.suite.backup_script)
run against a real PostgreSQL with the real pg_dump, the oldest dumps pruned, and a dump
restored with pg_restore into a fresh server giving identical per-sample rows (the README's
restore procedure)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest

from eval_api.store.migrate import migrate
from eval_operator.builders.suite import backup_script
from tests.support.servers import PostgresServer, postgres_bin, postgres_server

pytestmark = pytest.mark.integration

SAMPLES = 500


def dsn_kwargs(server: PostgresServer) -> dict[str, object]:
    return {
        "host": "127.0.0.1",
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "database": server.dbname,
    }


async def fill(server: PostgresServer) -> None:
    conn = await asyncpg.connect(**dsn_kwargs(server))
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO runs (evaluation_uid, run, namespace, evaluation_name, suite, provider,"
            " model, dataset_source, spec_hash, shards, scorers)"
            " VALUES ('uid-1', 'run-1', 'team', 'ev', 'stack', 'openai', 'm', 'inline', 'h', 2,"
            " ARRAY['exact_match', 'close'])"
        )
        rows = [
            (
                "uid-1",
                "run-1",
                i,
                i % 2,
                1 + i % 3,
                f"in-{i}",
                f"prompt-{i}",
                None if i % 50 == 0 else f"answer {i} — ünïcødé, 'quotes', \"double\"\n",
                json.dumps({} if i % 50 == 0 else {"exact_match": i % 2, "close": 0.5}),
                1,
                10 + i,
                2,
                i % 7 == 0,
                0,
                f"0.{i:04d}",
                i % 5 == 0,
                "0",
                12.5 + i,
                "timeout" if i % 50 == 0 else None,
            )
            for i in range(SAMPLES)
        ]
        await conn.executemany(
            "INSERT INTO samples (evaluation_uid, run, sample_id, shard, attempt, input_hash,"
            " prompt_hash, response, scores, requests, input_tokens, output_tokens, truncated,"
            " timed_out, cost_usd, cache_hit, cache_saved_usd, latency_ms, error_class)"
            " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9::jsonb,$10,$11,$12,$13,$14,$15::numeric,$16,"
            "$17::numeric,$18,$19)",
            rows,
        )
    finally:
        await conn.close()


async def every_row(server: PostgresServer) -> tuple[list[tuple], list[tuple]]:
    conn = await asyncpg.connect(**dsn_kwargs(server))
    try:
        samples = await conn.fetch("SELECT * FROM samples ORDER BY evaluation_uid, run, sample_id")
        runs = await conn.fetch("SELECT * FROM runs ORDER BY evaluation_uid, run")
        return [tuple(r) for r in samples], [tuple(r) for r in runs]
    finally:
        await conn.close()


def run_backup(
    server: PostgresServer, backups: Path, retention: int
) -> subprocess.CompletedProcess:
    env = {
        "PATH": f"{Path(postgres_bin('pg_dump')).parent}:{os.environ['PATH']}",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(server.port),
        "PGUSER": server.user,
        "PGPASSWORD": server.password,
        "PGDATABASE": server.dbname,
        "BACKUP_DIR": str(backups),
        "BACKUP_PREFIX": "stack",
        "RETENTION": str(retention),
    }
    return subprocess.run(["sh", "-c", backup_script()], env=env, capture_output=True, text=True)


def test_a_dump_restored_into_a_fresh_store_gives_identical_rows(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    with postgres_server() as source, postgres_server() as fresh:
        asyncio.run(fill(source))
        for _ in range(3):
            done = run_backup(source, backups, retention=2)
            assert done.returncode == 0, done.stderr
            time.sleep(1.1)  # dumps are named by the second
        dumps = sorted(backups.glob("stack-*.dump"))
        # The newest two kept, no partial file left.
        assert len(dumps) == 2 and not list(backups.glob("*.partial"))
        assert "pruned" in done.stdout
        restored = subprocess.run(
            [
                postgres_bin("pg_restore"),
                "--no-owner",
                "-h",
                "127.0.0.1",
                "-p",
                str(fresh.port),
                "-U",
                fresh.user,
                "-d",
                fresh.dbname,
                str(dumps[-1]),
            ],
            env={**os.environ, "PGPASSWORD": fresh.password},
            capture_output=True,
            text=True,
        )
        assert restored.returncode == 0, restored.stderr
        original, copied = asyncio.run(every_row(source)), asyncio.run(every_row(fresh))
        assert len(original[0]) == SAMPLES
        assert copied == original


def test_a_failed_dump_leaves_no_file_that_looks_like_a_backup(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    with postgres_server() as server:
        server.password = "wrong"  # noqa: S105 - the dump authenticates and fails
        done = run_backup(server, backups, retention=2)
    assert done.returncode != 0
    assert list(backups.glob("*.dump")) == []
