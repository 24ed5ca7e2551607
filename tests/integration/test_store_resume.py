"""Resuming from the store: a shard that starts again asks the model only for the samples not
stored, and its summary is the whole shard's (scores with their groups, errors by class);
`eval-runner run --store --resume` killed (SIGKILL) or interrupted (SIGINT) again and again
ends with the same results as a clean run, without one sample asked twice."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from eval_api.exitcodes import EXIT_STORE_AWAY
from eval_api.shard import ShardSummary
from eval_api.store import StoreSettings
from eval_api.v1alpha1 import Evaluation
from eval_runner.errors import PermanentError
from eval_runner.pipeline import run_shard
from eval_runner.store import RunIdentity, SampleStore
from tests.integration.test_runner_cli import runner_env
from tests.integration.test_runner_secrets import run_shard_process
from tests.support.model_server import Faults, ModelServer
from tests.support.ports import free_port
from tests.support.servers import PostgresServer, postgres_server
from tests.support.store_db import create_database, eventually, fetch, fetch_now

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IDENTITY = RunIdentity("0b9a2c1e-0000-4000-8000-0000000000bb", "grouped-run1", "team", "grouped")
N = 60
ERRORED = "What is 13 + 6?"  # answered 400: an errored sample, never scored
WRONG = ["+ 3?"]


def records(n: int = N) -> list[dict[str, str]]:
    return [
        {"input": f"What is {i} + {i % 7}?", "target": str(i + i % 7), "topic": f"t{i % 5}"}
        for i in range(n)
    ]


def spec(base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": {
            "name": "m",
            "baseURL": base_url,
            "maxConcurrency": 4,
            "parameters": {"maxTokens": 16, "temperature": "0"},
            "pricing": {"inputPerMillionUSD": "0.15", "outputPerMillionUSD": "0.60"},
        },
        "dataset": {"inline": records()},
        "task": {
            "groupField": "topic",
            "scorers": [{"type": "exact_match"}, {"type": "numeric"}],
        },
        **extra,
    }


def evaluation(base_url: str, **extra: Any) -> Evaluation:
    return Evaluation.model_validate(
        {"metadata": {"name": "grouped", "namespace": "team"}, "spec": spec(base_url, **extra)}
    )


def model_server(latency: float = 0.02) -> ModelServer:
    return ModelServer(
        faults=Faults(latency=latency, status_for={ERRORED: 400}), wrong=WRONG, record=False
    )


def counts(summary: ShardSummary) -> dict[str, Any]:
    return summary.model_dump(by_alias=True, include={"total", "completed", "failed", "errors"})


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with postgres_server() as running:
        yield running


async def test_a_resumed_shard_asks_only_the_rest_and_reports_the_whole_shard(
    server: PostgresServer,
) -> None:
    async with model_server() as model:
        clean = await run_shard(evaluation(model.base_url), 0, 1, None)
    assert clean.errors == {"http_400": 1} and clean.scores["exact_match"].groups == 5

    dsn = await create_database(server)
    settings = StoreSettings.from_uri(dsn)
    first = ShardSummary()
    async with model_server() as model:
        model.hold_after = 25
        run = asyncio.create_task(
            run_shard(
                evaluation(model.base_url),
                0,
                1,
                None,
                store=SampleStore(settings, IDENTITY),
                summary=first,
            )
        )

        async def finished_25() -> bool:
            return first.completed + first.failed == 25

        await eventually(finished_25, "25 samples finished")
        run.cancel()  # what SIGTERM does in a pod
        with pytest.raises(asyncio.CancelledError):
            await run
        # The rows of the 25 were written on the way out, though less than a second old.
        assert len(await fetch(dsn, "SELECT 1 FROM samples")) == 25

        model.hold_after = None
        second = await run_shard(
            evaluation(model.base_url), 0, 1, None, store=SampleStore(settings, IDENTITY)
        )
        assert model.count == N, "no sample was asked twice"

    assert second.state == "done"
    assert counts(second) == counts(clean)
    assert second.scores == clean.scores  # the clustered sums included
    assert second.resumed is not None and second.resumed.samples == 25
    assert second.usage.requests == N - 25  # this attempt's own
    whole = second.usage.merged(second.resumed.usage)
    assert (whole.requests, whole.input_tokens, whole.output_tokens) == (
        clean.usage.requests,
        clean.usage.input_tokens,
        clean.usage.output_tokens,
    )
    assert Decimal(whole.cost_usd) == Decimal(clean.usage.cost_usd) > 0
    attempts = await fetch(
        dsn, "SELECT attempt, resumed FROM shard_attempts WHERE run = $1 ORDER BY 1", IDENTITY.run
    )
    assert [tuple(r) for r in attempts] == [(1, 0), (2, 25)]
    by_attempt = await fetch(
        dsn, "SELECT attempt, count(*) AS n FROM samples GROUP BY attempt ORDER BY attempt"
    )
    assert [tuple(r) for r in by_attempt] == [(1, 25), (2, N - 25)]
    errored = await fetch(
        dsn, "SELECT error_class, error_message, scores FROM samples WHERE error_class IS NOT NULL"
    )
    assert [(r["error_class"], r["scores"]) for r in errored] == [("http_400", "{}")]


async def test_a_run_id_reused_with_another_spec_is_refused(server: PostgresServer) -> None:
    dsn = await create_database(server)
    settings = StoreSettings.from_uri(dsn)
    async with ModelServer() as model:
        await run_shard(
            evaluation(model.base_url), 0, 1, None, store=SampleStore(settings, IDENTITY)
        )
        asked = model.count
        changed = evaluation(model.base_url, thresholds=["exact_match >= 0.5"])
        with pytest.raises(PermanentError) as raised:
            await run_shard(changed, 0, 1, None, store=SampleStore(settings, IDENTITY))
        assert model.count == asked
    assert raised.value.reason == "StoreConflict"
    assert "already in the store with another spec" in raised.value.message


async def test_a_dataset_changed_under_the_same_run_is_refused(
    server: PostgresServer, tmp_path: Path
) -> None:
    dsn = await create_database(server)
    settings = StoreSettings.from_uri(dsn)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records(10)))
    mapped = {"configMapRef": {"name": "data", "key": "data.jsonl"}}
    async with ModelServer() as model:
        configured = evaluation(model.base_url, dataset=mapped)
        store = SampleStore(settings, IDENTITY)
        await run_shard(configured, 0, 1, None, dataset_file=data, store=store)
        changed = records(10)
        changed[3]["input"] = "What is 100 + 1?"
        data.write_text("".join(json.dumps(r) + "\n" for r in changed))
        with pytest.raises(PermanentError) as raised:
            store = SampleStore(settings, IDENTITY)
            await run_shard(configured, 0, 1, None, dataset_file=data, store=store)
    assert raised.value.reason == "StoreConflict"
    assert "1 samples stored for run grouped-run1 shard 0 are not this run's" in (
        raised.value.message
    )


# --- the local command, killed and resumed ----------------------------------------------


def write_manifest(path: Path, base_url: str) -> Path:
    manifest = {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "Evaluation",
        "metadata": {"name": "grouped", "namespace": "team"},
        "spec": spec(base_url),
    }
    path.write_text(yaml.safe_dump(manifest))
    return path


def local_run(manifest: Path, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eval_runner",
            "run",
            str(manifest),
            "--output",
            "json",
            "--no-progress",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=runner_env(),
        cwd=ROOT,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, json.loads(out) if out.strip() else {}, err


def stored(dsn: str) -> int:
    return fetch_now(dsn, "SELECT count(*) AS n FROM samples")[0]["n"]


def wait(condition: Any, what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.02)


RESULTS = ("results", "progress", "errors", "passed")


@pytest.fixture(scope="module")
def clean_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    with model_server().in_thread() as model:
        manifest = write_manifest(tmp_path_factory.mktemp("clean") / "e.yaml", model.base_url)
        code, report, err = finish(local_run(manifest))
    assert code == 0, err
    return report


def test_killed_and_interrupted_again_and_again_then_resumed_asks_each_sample_once(
    server: PostgresServer, tmp_path: Path, clean_report: dict[str, Any]
) -> None:
    dsn = asyncio.run(create_database(server))
    stops = sorted(random.Random(7).sample(range(4, N - 4), 4))
    with model_server().in_thread() as model:
        manifest = write_manifest(tmp_path / "e.yaml", model.base_url)
        for number, k in enumerate(stops):
            # The model answers k samples in all, then holds what comes next: the run is
            # stopped at a known point, with nothing it sent left unanswered. The hold is
            # moved only once the stopped run's held requests are gone: a request of a dead
            # process would otherwise be answered and counted as the next run's.
            wait(lambda: model.held == 0, "the stopped run's requests closed")
            model.hold_after = k
            process = local_run(manifest, "--store", dsn, "--resume")
            wait(lambda k=k: model.count == k, f"{k} samples asked")
            if number % 2 == 0:
                wait(lambda k=k: stored(dsn) == k, f"{k} samples stored")
                process.kill()  # kill -9: nothing runs on the way out
                assert process.wait(30) == -signal.SIGKILL
            else:
                time.sleep(0.2)  # answered, and most likely not yet written
                process.send_signal(signal.SIGINT)  # Ctrl-C: the last rows are written
                code, _, err = finish(process)
                assert code == 130, err
            assert stored(dsn) == k
        model.hold_after = None
        code, report, err = finish(local_run(manifest, "--store", dsn, "--resume"))
        asked = model.count
    assert code == 0, err
    assert asked == N, f"{asked - N} samples were asked twice"
    assert {key: report[key] for key in RESULTS} == {key: clean_report[key] for key in RESULTS}
    assert report["usage"] == clean_report["usage"]  # the whole run's, stored samples included
    assert report["store"]["attempt"] == len(stops) + 1
    assert report["store"]["resumed"] == stops[-1]
    rows = fetch_now(dsn, "SELECT count(DISTINCT sample_id) AS ids, count(*) AS n FROM samples")
    assert tuple(rows[0]) == (N, N)
    runs = fetch_now(dsn, "SELECT run FROM runs")
    assert len(runs) == 1 and runs[0]["run"] == report["store"]["run"]


def test_killed_at_random_moments_then_resumed_gives_the_clean_results(
    server: PostgresServer, tmp_path: Path, clean_report: dict[str, Any]
) -> None:
    dsn = asyncio.run(create_database(server))
    rng = random.Random(11)
    kills = 3
    # Slower answers: each run is killed long before it could finish.
    with model_server(latency=0.1).in_thread() as model:
        manifest = write_manifest(tmp_path / "e.yaml", model.base_url)
        for _ in range(kills):
            before = model.count
            process = local_run(manifest, "--store", dsn, "--resume")
            wait(lambda before=before: model.count > before, "the run asks the model")
            time.sleep(rng.uniform(0.0, 0.6))
            process.kill()
            process.wait(30)
        code, report, err = finish(local_run(manifest, "--store", dsn, "--resume"))
        asked = model.count
    assert code == 0, err
    assert {key: report[key] for key in RESULTS} == {key: clean_report[key] for key in RESULTS}
    rows = fetch_now(dsn, "SELECT count(DISTINCT sample_id) AS ids, count(*) AS n FROM samples")
    assert tuple(rows[0]) == (N, N)
    # What a kill -9 can cost: the requests in flight, and the answers of its last second
    # (not yet written), asked again. The stored rows still count each sample once.
    assert asked >= N
    assert report["usage"]["requests"] == N


def test_a_retried_pod_resumes_from_the_store(server: PostgresServer, tmp_path: Path) -> None:
    dsn = asyncio.run(create_database(server))
    env = {
        "EVAL_STORE_URI": dsn,
        "EVAL_EVALUATION_UID": IDENTITY.evaluation_uid,
        "EVAL_RUN": "pod-run",
        "EVAL_SUITE": "nightly",
    }
    for attempt in ("first", "second"):
        (tmp_path / attempt).mkdir()
    with model_server().in_thread() as model:
        first = run_shard_process(tmp_path / "first", spec(model.base_url), env)
        asked = model.count
        second = run_shard_process(tmp_path / "second", spec(model.base_url), env)
        assert model.count == asked == N, "the retry asked nothing"
    assert first.code == second.code == 0, first.output + second.output
    done, resumed = first.summary, second.summary
    assert (resumed.completed, resumed.failed, resumed.errors) == (
        done.completed,
        done.failed,
        done.errors,
    )
    assert resumed.scores == done.scores
    assert resumed.resumed is not None and resumed.resumed.samples == N
    assert resumed.usage.requests == 0 and resumed.resumed.usage.requests == N
    run = fetch_now(dsn, "SELECT namespace, evaluation_name, suite, shards FROM runs")
    assert [tuple(r) for r in run] == [("team", "secret", "nightly", 1)]
    attempts = fetch_now(dsn, "SELECT attempt, resumed FROM shard_attempts ORDER BY attempt")
    assert [tuple(r) for r in attempts] == [(1, 0), (2, N)]


# --- what is not a final answer, and a store that stays away -----------------------------

THROTTLED = "What is 20 + 6?"  # answered 429, again and again: a transient error


async def test_a_transient_error_is_not_stored_and_a_resume_asks_it_again(
    server: PostgresServer,
) -> None:
    dsn = await create_database(server)
    settings = StoreSettings.from_uri(dsn)
    async with model_server() as model:
        model.faults.status_for[THROTTLED] = 429
        first = await run_shard(
            evaluation(model.base_url), 0, 1, None, store=SampleStore(settings, IDENTITY)
        )
        # The run reports it (errored, by class), but does not store it as the sample's answer.
        assert first.errors == {"http_400": 1, "http_429": 1}
        errored = await fetch(dsn, "SELECT error_class FROM samples WHERE error_class IS NOT NULL")
        assert [r["error_class"] for r in errored] == ["http_400"]
        assert [r["n"] for r in await fetch(dsn, "SELECT count(*) AS n FROM samples")] == [N - 1]

        del model.faults.status_for[THROTTLED]  # the provider's limit passed
        asked = model.count
        second = await run_shard(
            evaluation(model.base_url), 0, 1, None, store=SampleStore(settings, IDENTITY)
        )
        assert model.count == asked + 1, "the throttled sample, and only it, asked again"
    assert second.resumed is not None and second.resumed.samples == N - 1
    assert (second.completed, second.errors) == (N - 1, {"http_400": 1})  # the 400 is final


async def test_a_shard_resumed_while_its_endpoint_is_away_keeps_the_outage_bound(
    server: PostgresServer,
) -> None:
    """A pod restarted while its endpoint is away: the endpoint answered the earlier attempt
    (its samples are stored), so the refusals of this one are an outage, given
    unreachableAfterSeconds, not the wrong URL of a shard that never got an answer."""
    dsn = await create_database(server)
    settings = StoreSettings.from_uri(dsn)
    port = free_port()
    manifest = spec(f"http://127.0.0.1:{port}/v1")
    manifest["model"]["unreachableAfterSeconds"] = 2  # below the never-answered bound: quick
    away = Evaluation.model_validate(
        {"metadata": {"name": "grouped", "namespace": "team"}, "spec": manifest}
    )
    async with ModelServer(port=port, faults=Faults(status_for={THROTTLED: 429})):
        first = await run_shard(away, 0, 1, None, store=SampleStore(settings, IDENTITY))
    assert first.errors == {"http_429": 1}  # not stored: the next attempt asks it again
    # The endpoint is gone (its port refuses) when the shard's next attempt starts.
    with pytest.raises(PermanentError) as resumed:
        await run_shard(away, 0, 1, None, store=SampleStore(settings, IDENTITY))
    with pytest.raises(PermanentError) as fresh:
        await run_shard(away, 0, 1, None)  # no store: nothing says it ever answered
    assert resumed.value.reason == fresh.value.reason == "EndpointUnreachable"
    assert resumed.value.message.endswith(
        "(model endpoint: no connection for 2s, unreachableAfterSeconds)"
    )
    assert "(the model endpoint never answered: no connection in the 2s since the first " in (
        fresh.value.message
    )


def rows_stored(dsn: str) -> int:
    """Rows stored so far; 0 before the shard applied the schema."""
    try:
        return stored(dsn)
    except asyncpg.UndefinedTableError:
        return 0


def test_a_store_outage_longer_than_its_bound_is_retried_and_resumed(
    server: PostgresServer, tmp_path: Path
) -> None:
    dsn = asyncio.run(create_database(server))
    env = {
        "EVAL_STORE_URI": dsn,
        "EVAL_EVALUATION_UID": IDENTITY.evaluation_uid,
        "EVAL_RUN": "outage-run",
        "EVAL_STORE_UNAVAILABLE_AFTER_SECONDS": "2",
    }
    for attempt in ("first", "second"):
        (tmp_path / attempt).mkdir()
    with model_server().in_thread() as model, ThreadPoolExecutor(1) as pool:
        model.hold_after = 25
        running = pool.submit(run_shard_process, tmp_path / "first", spec(model.base_url), env)
        try:
            wait(lambda: rows_stored(dsn) == 25, "25 rows stored")
            server.stop()  # a PostgreSQL restart that takes longer than the bound
            model.hold_after = None  # the other 35 are answered while the store is away
            first = running.result(timeout=60)
        finally:
            model.hold_after = None
            if server.process is not None and server.process.poll() is not None:
                server.start()
        second = run_shard_process(tmp_path / "second", spec(model.base_url), env)
        asked = model.count
    # Retried by the Job without spending a retry (its podFailurePolicy Ignores this code),
    # not the index failed for good (exit 3: FailIndex).
    assert first.code == EXIT_STORE_AWAY, first.output
    summary = first.summary
    assert (summary.state, summary.reason) == ("error", "StoreUnavailable")
    assert "(the bound is 2 s)" in (summary.message or "")
    assert "35 finished samples were not written: the shard's next attempt asks them again" in (
        summary.message or ""
    )
    # The retry resumes from the store: the 25 stored are not asked again, the 35 are.
    assert second.code == 0, second.output
    resumed = second.summary
    assert resumed.resumed is not None and resumed.resumed.samples == 25
    assert resumed.completed + resumed.failed == N
    assert asked == N + 35
    assert stored(dsn) == N
