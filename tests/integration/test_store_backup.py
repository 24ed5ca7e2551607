"""The managed store's backups: the backup CronJob's own script (builders.suite.backup_script)
run against a real PostgreSQL with the real pg_dump, the oldest dumps pruned, and a dump
restored with pg_restore into a fresh server giving identical per-sample rows (the README's
restore procedure)."""

from __future__ import annotations

import asyncio
import contextlib
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


def old_dumps(backups: Path, count: int) -> list[Path]:
    """`count` whole dumps of earlier days, oldest first (ls -t orders them by mtime)."""
    made = []
    for day in range(count):
        path = backups / f"stack-202612{day + 1:02d}T030000Z.dump"
        path.write_bytes(b"PGDMP" + bytes(1000))
        os.utime(path, (1_800_000_000 + day * 86400,) * 2)
        made.append(path)
    return made


def test_a_dump_that_fails_midway_removes_its_partial_and_prunes_first(tmp_path: Path) -> None:
    """pg_dump dying midway (ENOSPC on a full volume, an OOM kill): before, the partial file
    stayed and nothing was pruned (pruning ran only after a successful dump), so a full volume
    stayed full and every later backup failed too."""
    backups, bin_dir = tmp_path / "backups", tmp_path / "bin"
    backups.mkdir()
    bin_dir.mkdir()
    days = old_dumps(backups, 3)
    (backups / "stack-20261130T030000Z.dump.partial").write_bytes(bytes(5000))  # a killed run's
    fake = bin_dir / "pg_dump"
    fake.write_text(
        "#!/bin/sh\n"
        'for arg; do case "$arg" in --file=*) out="${arg#--file=}";; esac; done\n'
        'head -c 4096 /dev/zero > "$out"\n'
        'echo "pg_dump: error: could not write to output file: No space left on device" >&2\n'
        "exit 1\n"
    )
    fake.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "BACKUP_DIR": str(backups),
        "BACKUP_PREFIX": "stack",
        "RETENTION": "3",
    }
    done = subprocess.run(["sh", "-c", backup_script()], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert list(backups.glob("*.partial")) == []
    # The oldest dump went before the dump was tried: retention - 1 kept, room for the next.
    assert sorted(backups.glob("*.dump")) == days[1:]
    assert f"pruned {days[0]}" in done.stdout
    assert "No space left on device" in done.stderr and "backup failed" in done.stderr


@contextlib.contextmanager
def small_volume(path: Path, size: int):
    """A size-limited file system (tmpfs): a backup volume that can fill up. Needs root."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


async def grow(server: PostgresServer, rows: int) -> None:
    """Rows that compress little (md5 hex), so that each dump takes a known room."""
    conn = await asyncpg.connect(**dsn_kwargs(server))
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS ballast (t text)")
        await conn.execute(
            "INSERT INTO ballast SELECT md5(random()::text) || md5(random()::text)"
            " FROM generate_series(1, $1)",
            rows,
        )
    finally:
        await conn.close()


def test_a_full_backup_volume_recovers_by_itself(tmp_path: Path) -> None:
    """A real full volume (tmpfs) and the real pg_dump: the oldest dump is pruned before the
    next is written, so a volume holding `retention` dumps keeps taking backups; a dump that
    does not fit even then fails the Job with no partial file left, and the next run after
    the volume grew succeeds."""
    with postgres_server() as server:
        asyncio.run(fill(server))
        asyncio.run(grow(server, 20_000))
        probe = tmp_path / "probe"
        probe.mkdir()
        assert run_backup(server, probe, retention=1).returncode == 0
        one = next(probe.glob("*.dump")).stat().st_size
        page = 4096
        size = (int(one * 3.5) // page + 1) * page
        with small_volume(tmp_path / "backups", size) as backups:
            for attempt in range(5):
                done = run_backup(server, backups, retention=3)
                # Before: the 4th dump hit ENOSPC, its partial stayed, nothing was pruned,
                # and every later run failed the same way.
                assert done.returncode == 0, (attempt, done.stderr)
                assert len(list(backups.glob("*.dump"))) == min(attempt + 1, 3)
                assert list(backups.glob("*.partial")) == []
                time.sleep(1.1)  # dumps are named by the second
            assert "pruned" in done.stdout
            # The store doubles: even with the oldest pruned, a dump no longer fits.
            asyncio.run(grow(server, 20_000))
            failed = run_backup(server, backups, retention=3)
            assert failed.returncode != 0
            assert "backup failed" in failed.stderr
            assert list(backups.glob("*.partial")) == []
            assert len(list(backups.glob("*.dump"))) == 2  # retention - 1, pruned first
            time.sleep(1.1)
            # The volume grows (the suite's backup.size raised): the next run succeeds.
            subprocess.run(["mount", "-o", f"remount,size={size * 3}", str(backups)], check=True)
            done = run_backup(server, backups, retention=3)
            assert done.returncode == 0, done.stderr
            dumps = sorted(backups.glob("*.dump"))
            assert len(dumps) == 3 and not list(backups.glob("*.partial"))
