"""The results dashboard (`eval-runner dashboard`, a process of its own) on a real PostgreSQL
with seeded suite runs and a real Redis: every number it answers is the seeded one, it reads
with the read-only role (which cannot write), pages and filters samples, compares runs with
the regression gate's test, rate limits per client, says which component is down, and never
shows a password."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import scipy.stats

from eval_api.shard import ScoreSums
from eval_api.stats import score_result, wilson
from eval_api.store.migrate import migrate
from eval_api.store.reader import ensure_reader_role
from eval_runner.client import Completion
from eval_runner.compare import mcnemar_margin_p
from eval_runner.dashboard import models, queries
from eval_runner.dataset import Sample
from eval_runner.results import SampleResult
from eval_runner.store import COLUMNS, RunIdentity, sample_row
from tests.support.dashboard_process import READER, READER_PASSWORD, spawn_dashboard
from tests.support.ports import free_port
from tests.support.results_seed import Seeded, seed_suite
from tests.support.servers import PostgresServer, RedisServer, postgres_server, redis_server
from tests.support.store_db import create_database

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MODELS = {"small": 90, "medium": 70, "large": 40}
TASKS = ["sums", "big"]
SAMPLES = 40
SUITE_RUNS = 3


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def cache() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


async def _seed(dsn: str) -> Seeded:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        seeded = await seed_suite(
            conn,
            models=MODELS,
            tasks=TASKS,
            suite_runs=SUITE_RUNS,
            samples=SAMPLES,
            errored_every=10,
        )
        await ensure_reader_role(conn, READER, READER_PASSWORD)
        return seeded
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def seeded(pg: PostgresServer) -> tuple[str, Seeded]:
    dsn = asyncio.run(create_database(pg))
    return dsn, asyncio.run(_seed(dsn))


def start_dashboard(
    pg: PostgresServer, dbname: str, *args: str, cache_url: str | None = None, **env: str
) -> tuple[subprocess.Popen, str, Path]:
    log = Path(tempfile.mkstemp(prefix="dashboard-", suffix=".log")[1])
    extra = {"EVAL_CACHE_URL": cache_url} if cache_url else {}
    process, port = spawn_dashboard(pg.port, dbname, *args, output=log.open("w"), **extra, **env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"dashboard did not start: {log.read_text()}")
        time.sleep(0.1)
    return process, base, log


@pytest.fixture(scope="module")
def dashboard(
    pg: PostgresServer, cache: RedisServer, seeded: tuple[str, Seeded]
) -> Iterator[tuple[str, Seeded, Path]]:
    dsn, data = seeded
    process, base, log = start_dashboard(
        pg, dsn.rsplit("/", 1)[1], "--rate", "1000", "--burst", "1000", cache_url=cache.url()
    )
    yield base, data, log
    process.terminate()
    process.wait(timeout=10)


def get(base: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(base + path, params=params, timeout=30)


def test_the_leaderboard_has_each_models_newest_run_with_its_wilson_interval(
    dashboard: tuple[str, Seeded, Path],
) -> None:
    base, data, _ = dashboard
    answer = get(base, "/api/v1/suites/team-a/nightly/leaderboard")
    assert answer.status_code == 200, answer.text
    board = answer.json()
    assert [t["task"] for t in board["tasks"]] == ["big", "sums"]
    for task in board["tasks"]:
        assert task["scorer"] == "exact_match"
        assert [e["model"] for e in task["entries"]] == ["small", "medium", "large"]
        assert task["best"] == "small"
        for entry in task["entries"]:
            latest = data.latest(entry["model"], task["task"])
            scored = latest.samples - latest.errored
            assert entry["run"] == latest.run and entry["suiteRun"] == latest.suite_run
            assert entry["n"] == scored == 36
            assert entry["errored"] == latest.errored == 4
            assert entry["score"] == pytest.approx(latest.right / scored)
            assert entry["ci95"] == pytest.approx(list(wilson(latest.right / scored, scored)))
            assert entry["costUSD"] == pytest.approx(36 * 0.00001)
            assert entry["latencyP50Ms"] is not None and entry["latencyP95Ms"] is not None


def test_suites_evaluations_runs_and_history(dashboard: tuple[str, Seeded, Path]) -> None:
    base, data, _ = dashboard
    suites = get(base, "/api/v1/suites").json()["items"]
    assert [(s["namespace"], s["suite"], s["cells"], s["runs"]) for s in suites] == [
        ("team-a", "nightly", 6, 18)
    ]
    evaluations = get(base, "/api/v1/evaluations", namespace="team-a").json()["items"]
    assert len(evaluations) == 6 and all(e["runs"] == SUITE_RUNS for e in evaluations)
    runs = get(base, "/api/v1/evaluations/team-a/nightly-large-sums/runs").json()["items"]
    assert [r["run"] for r in runs] == [r.run for r in reversed(data.of_cell("large", "sums"))]
    history = get(base, "/api/v1/suites/team-a/nightly/history", cell="large/sums").json()
    (cell,) = history["cells"]
    assert cell["model"] == "large" and cell["task"] == "sums"
    assert [p["suiteRun"] for p in cell["points"]] == [
        r.suite_run for r in data.of_cell("large", "sums")
    ]
    for point, run in zip(cell["points"], data.of_cell("large", "sums"), strict=True):
        assert point["score"] == pytest.approx(run.right / 36)


def test_a_run_summary_and_its_samples_page_by_page_with_filters(
    dashboard: tuple[str, Seeded, Path],
) -> None:
    base, data, _ = dashboard
    run = data.latest("medium", "sums")
    summary = get(base, f"/api/v1/runs/{run.evaluation_uid}/{run.run}").json()
    assert summary["samples"] == SAMPLES and summary["errored"] == 4
    assert summary["errorsByClass"] == {"http_500": 4}
    assert summary["scorers"][0]["n"] == 36 and summary["mainScorer"] == "exact_match"
    assert summary["inputTokens"] == 36 * 12 and summary["outputTokens"] == 36 * 3

    seen, cursor, pages = [], None, 0
    while True:
        page = get(
            base,
            f"/api/v1/runs/{run.evaluation_uid}/{run.run}/samples",
            limit=7,
            **({"cursor": cursor} if cursor else {}),
        ).json()
        seen += [s["sampleId"] for s in page["items"]]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == list(range(SAMPLES)) and pages == 6
    first = get(base, f"/api/v1/runs/{run.evaluation_uid}/{run.run}/samples", limit=1).json()
    assert first["items"][0]["prompt"] == [
        {"role": "user", "content": "sums question 0: what is 0 + 0?"}
    ]

    wrong = get(
        base,
        f"/api/v1/runs/{run.evaluation_uid}/{run.run}/samples",
        scorer="exact_match",
        wrong="true",
        limit=200,
    ).json()["items"]
    assert len(wrong) == 36 - run.right
    assert all(s["scores"]["exact_match"] == 0.0 for s in wrong)
    errored = get(
        base, f"/api/v1/runs/{run.evaluation_uid}/{run.run}/samples", errored="true"
    ).json()["items"]
    assert [s["sampleId"] for s in errored] == [9, 19, 29, 39]
    assert all(s["errorClass"] == "http_500" and s["scores"] == {} for s in errored)


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"limit": "0"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"wrong": "true"}, "scorer"),
        ({"errored": "maybe"}, "errored"),
        ({"scorer": "exact_match", "wrong": "true", "below": "2"}, "below"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(
    dashboard: tuple[str, Seeded, Path], params: dict[str, str], says: str
) -> None:
    base, data, _ = dashboard
    run = data.latest("small", "big")
    answer = get(base, f"/api/v1/runs/{run.evaluation_uid}/{run.run}/samples", **params)
    assert answer.status_code == 400
    problem = answer.json()
    assert problem["reason"] == "BadRequest" and says in problem["message"]


def test_an_unknown_run_is_a_404(dashboard: tuple[str, Seeded, Path]) -> None:
    base, _, _ = dashboard
    for path in ("/api/v1/runs/nope/nope", "/api/v1/runs/nope/nope/samples"):
        answer = get(base, path)
        assert answer.status_code == 404 and answer.json()["reason"] == "NotFound"


def test_the_comparison_is_the_paired_test_and_counts_what_changed(
    dashboard: tuple[str, Seeded, Path],
) -> None:
    base, data, _ = dashboard
    before, after = data.of_cell("large", "sums")[-2:]
    answer = get(
        base,
        "/api/v1/compare",
        baselineUid=before.evaluation_uid,
        baselineRun=before.run,
        candidateUid=after.evaluation_uid,
        candidateRun=after.run,
        maxDrop="0.05",
    )
    assert answer.status_code == 200, answer.text
    comparison = answer.json()
    changes = comparison["changes"]
    assert sum(changes[k] for k in ("bothRight", "bothWrong", "fixed", "broken")) == 36
    assert changes["unpaired"] == 0
    assert changes["bothRight"] + changes["broken"] == before.right
    assert changes["bothRight"] + changes["fixed"] == after.right
    (scorer,) = comparison["scorers"]
    assert scorer["test"] == "mcnemar-exact"
    discordant = changes["fixed"] + changes["broken"]
    # One-sided, of "worse by more than maxDrop": McNemar's exact test and Tango's score test
    # at the margin (tests/unit/test_compare.py checks both against scipy).
    expected = mcnemar_margin_p(changes["broken"], changes["fixed"], 36, 0.05)
    assert scorer["pValue"] == pytest.approx(expected)
    if discordant:
        exact = scipy.stats.binomtest(changes["broken"], discordant, alternative="greater")
        assert scorer["pValue"] >= exact.pvalue
    assert scorer["difference"] == pytest.approx((after.right - before.right) / 36)
    assert len(comparison["changed"]) == discordant
    flipped = comparison["changed"][0]
    assert flipped["prompt"][0]["content"].startswith("sums question")
    assert {flipped["baselineScore"], flipped["candidateScore"]} == {0.0, 1.0}


def test_the_read_only_role_cannot_write(pg: PostgresServer, seeded: tuple[str, Seeded]) -> None:
    dsn, _ = seeded

    async def attempt() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=pg.port,
            user=READER,
            password=READER_PASSWORD,
            database=dsn.rsplit("/", 1)[1],
        )
        try:
            assert await conn.fetchval("SELECT count(*) FROM runs") == 18
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await conn.execute("DELETE FROM runs")
            await conn.execute("SET default_transaction_read_only = off")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM runs")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("CREATE TABLE mine (x int)")
        finally:
            await conn.close()

    asyncio.run(attempt())


def test_readiness_names_each_component(
    pg: PostgresServer, cache: RedisServer, seeded: tuple[str, Seeded]
) -> None:
    dsn, _ = seeded
    dbname = dsn.rsplit("/", 1)[1]
    process, base, log = start_dashboard(pg, dbname, cache_url=cache.url())
    try:
        ready = get(base, "/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "ok"
        assert body["components"]["store"]["status"] == "ok"
        assert body["components"]["cache"]["status"] == "ok"
    finally:
        process.terminate()
        process.wait(timeout=10)
    # The managed cache's endpoint without a password (what a suite's dashboard gets): its
    # NOAUTH answer is an answer.
    process, base, log = start_dashboard(pg, dbname, EVAL_CACHE_ENDPOINT=f"127.0.0.1:{cache.port}")
    try:
        body = get(base, "/readyz").json()
        assert body["status"] == "ok" and body["components"]["cache"]["status"] == "ok"
    finally:
        process.terminate()
        process.wait(timeout=10)
    # A cache nobody listens on: degraded, still ready (no page needs the cache).
    process, base, log = start_dashboard(pg, dbname, EVAL_CACHE_ENDPOINT=f"127.0.0.1:{free_port()}")
    try:
        ready = get(base, "/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["components"]["cache"]["status"] == "error"
    finally:
        process.terminate()
        process.wait(timeout=10)
    # A cache nobody listens on, a wrong password: each component says what is wrong; the
    # process stays alive (healthz) and no password shows anywhere.
    dead_cache = f"redis://:cache-secret-xyz@127.0.0.1:{free_port()}/0"
    process, base, log = start_dashboard(
        pg, dbname, cache_url=dead_cache, EVAL_STORE_PASSWORD="wrong-secret-abc"
    )
    try:
        ready = get(base, "/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "error"
        assert body["components"]["store"]["status"] == "error"
        assert body["components"]["cache"]["status"] == "error"
        assert get(base, "/healthz").status_code == 200
        board = get(base, "/api/v1/suites/team-a/nightly/leaderboard")
        assert board.status_code == 503 and board.json()["reason"] == "StoreUnavailable"
        page = get(base, "/suites/team-a/nightly")
        assert page.status_code == 503
        shown = ready.text + board.text + page.text + get(base, "/metrics").text
    finally:
        process.terminate()
        process.wait(timeout=10)
    shown += log.read_text()
    for secret in ("wrong-secret-abc", "cache-secret-xyz", READER_PASSWORD):
        assert secret not in shown


def test_a_client_over_its_rate_gets_429_with_retry_after(
    pg: PostgresServer, seeded: tuple[str, Seeded]
) -> None:
    dsn, _ = seeded
    process, base, _ = start_dashboard(pg, dsn.rsplit("/", 1)[1], "--rate", "0.2", "--burst", "5")
    try:
        codes = [get(base, "/api/v1/suites").status_code for _ in range(8)]
        assert codes[:5] == [200] * 5 and codes[5:] == [429] * 3
        refused = get(base, "/api/v1/suites")
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["reason"] == "TooManyRequests"
        # Probes and scrapes are never refused.
        assert all(get(base, p).status_code == 200 for p in ("/healthz", "/metrics") * 5)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket(
    pg: PostgresServer, seeded: tuple[str, Seeded]
) -> None:
    """The ingress is the peer of every request: with it trusted, each user behind it has a
    bucket of their own; a client's own X-Forwarded-For entries cannot buy it a fresh one."""
    dsn, _ = seeded
    dbname = dsn.rsplit("/", 1)[1]

    def codes(base: str, forwarded_for: str, n: int) -> list[int]:
        headers = {"X-Forwarded-For": forwarded_for}
        url = base + "/api/v1/suites"
        return [httpx.get(url, headers=headers, timeout=30).status_code for _ in range(n)]

    process, base, _ = start_dashboard(
        pg, dbname, "--rate", "0.2", "--burst", "3",
        EVAL_DASHBOARD_TRUSTED_PROXIES="127.0.0.0/8,::1/128",
    )  # fmt: skip
    try:
        assert codes(base, "203.0.113.1", 4) == [200, 200, 200, 429]
        assert codes(base, "203.0.113.2", 3) == [200, 200, 200]  # another user
        # The first user, prepending made-up addresses: still the ingress's right-most entry.
        assert codes(base, "198.51.100.9, 203.0.113.1", 1) == [429]
        assert codes(base, "203.0.113.3, 203.0.113.1", 1) == [429]
    finally:
        process.terminate()
        process.wait(timeout=10)
    # Without trusted proxies the header is anyone's to write: one bucket, the peer's.
    process, base, _ = start_dashboard(pg, dbname, "--rate", "0.2", "--burst", "3")
    try:
        assert codes(base, "203.0.113.1", 3) == [200, 200, 200]
        assert codes(base, "203.0.113.2", 1) == [429]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_metrics_count_requests_by_route_and_show_the_pool_and_the_store(
    dashboard: tuple[str, Seeded, Path],
) -> None:
    base, _, _ = dashboard
    get(base, "/api/v1/suites")
    text = get(base, "/metrics").text
    assert 'http_requests_total{code="200",method="GET",route="/api/v1/suites"}' in text
    assert "http_request_duration_seconds_bucket" in text
    assert 'eval_dashboard_db_pool_connections{state="max"} 10.0' in text
    # The store's figures come from the stats refresh at start: the seeded runs succeeded
    # in November, none in the last day, and none is active.
    assert "eval_evaluation_duration_seconds_count 0.0" in text
    assert "eval_active_evaluations 0.0" in text


def test_the_openapi_document_describes_every_route_and_answers_match_it(
    dashboard: tuple[str, Seeded, Path],
) -> None:
    import jsonschema

    base, data, _ = dashboard
    document = get(base, "/api/v1/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    run = data.latest("small", "sums")
    checks = {
        "/api/v1/suites": ("/api/v1/suites", {}),
        "/api/v1/suites/{namespace}/{suite}/leaderboard": (
            "/api/v1/suites/team-a/nightly/leaderboard",
            {},
        ),
        "/api/v1/suites/{namespace}/{suite}/history": ("/api/v1/suites/team-a/nightly/history", {}),
        "/api/v1/evaluations": ("/api/v1/evaluations", {}),
        "/api/v1/evaluations/{namespace}/{name}/runs": (
            "/api/v1/evaluations/team-a/nightly-small-sums/runs",
            {},
        ),
        "/api/v1/runs/{uid}/{run}": (f"/api/v1/runs/{run.evaluation_uid}/{run.run}", {}),
        "/api/v1/runs/{uid}/{run}/samples": (
            f"/api/v1/runs/{run.evaluation_uid}/{run.run}/samples",
            {},
        ),
        "/api/v1/compare": (
            "/api/v1/compare",
            {
                "baselineUid": run.evaluation_uid,
                "baselineRun": data.of_cell("small", "sums")[0].run,
                "candidateUid": run.evaluation_uid,
                "candidateRun": run.run,
            },
        ),
        "/readyz": ("/readyz", {}),
    }
    assert set(document["paths"]) == set(checks)
    for template, (path, params) in checks.items():
        schema = document["paths"][template]["get"]["responses"]["200"]["content"][
            "application/json"
        ]["schema"]
        answer = get(base, path, **params)
        assert answer.status_code == 200, (path, answer.text)
        resolver = {**schema, "components": document["components"]}
        jsonschema.validate(answer.json(), resolver)


def test_pages_render_the_leaderboard_history_run_and_comparison(
    dashboard: tuple[str, Seeded, Path],
) -> None:
    base, data, _ = dashboard
    home = get(base, "/")
    assert home.status_code == 200 and "/suites/team-a/nightly" in home.text
    page = get(base, "/suites/team-a/nightly")
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert page.text.count('class="mark best"') == 2  # one best model per task
    assert page.text.count("<polyline") == 6  # one history line per cell
    latest = data.latest("large", "sums")
    assert f"/runs/{latest.evaluation_uid}/{latest.run}" in page.text
    run_page = get(base, f"/runs/{latest.evaluation_uid}/{latest.run}")
    assert run_page.status_code == 200 and "Worst samples" in run_page.text
    assert "large thinks" in run_page.text  # a wrong answer shown with its question
    before = data.of_cell("large", "sums")[-2]
    compare_page = get(
        base,
        "/compare",
        baselineUid=before.evaluation_uid,
        baselineRun=before.run,
        candidateUid=latest.evaluation_uid,
        candidateRun=latest.run,
    )
    assert compare_page.status_code == 200
    assert compare_page.text.count('<rect class="mark') == 4


def test_a_response_the_model_gave_is_escaped_not_run(
    pg: PostgresServer, dashboard: tuple[str, Seeded, Path], seeded: tuple[str, Seeded]
) -> None:
    dsn, _ = seeded
    base, _, _ = dashboard
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"

    async def write() -> str:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                """INSERT INTO runs (evaluation_uid, run, namespace, evaluation_name, provider,
                   model, dataset_source, spec_hash, shards, scorers)
                   VALUES ('u-hostile', 'r1', 'team-b', 'hostile', 'openai', $1, 'x', 'h', 1,
                   ARRAY['exact_match'])""",
                hostile,
            )
            await conn.execute(
                """INSERT INTO samples (evaluation_uid, run, sample_id, shard, attempt,
                   input_hash, prompt_hash, prompt, response, scores)
                   VALUES ('u-hostile', 'r1', 0, 0, 1, 'h', 'p', $1, $2, '{"exact_match": 0}')""",
                json.dumps([{"role": "user", "content": hostile}]),
                hostile,
            )
        finally:
            await conn.close()
        return "/runs/u-hostile/r1"

    path = asyncio.run(write())
    page = get(base, path)
    assert page.status_code == 200
    assert "<script>" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;" in page.text


async def _seed_grouped(dsn: str) -> dict[str, ScoreSums]:
    """Two models of one task scoring 24 of 40: "a-grouped" on 8 passages of 5 questions
    (task.groupField) answered alike within a passage, "b-plain" on 40 independent questions.
    Rows as the runner writes them (eval_runner.store.sample_row); returns each model's sums
    as the runner sums them for the status."""
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        expected = {}
        for model, grouped in (("a-grouped", True), ("b-plain", False)):
            uid, run = f"uid-{model}", f"grouped-{model}-r0"
            await conn.execute(
                """INSERT INTO runs (evaluation_uid, run, namespace, evaluation_name, suite,
                   provider, model, dataset_source, spec_hash, shards, scorers, cell, suite_run,
                   succeeded_at)
                   VALUES ($1, $2, 'team-b', $3, 'grouped', 'openai', $3, 'inline', 'h', 1,
                   ARRAY['exact_match'], $4, '20261201-000000', now())""",
                uid,
                run,
                model,
                f"{model}/reading",
            )
            sums, groups, rows = ScoreSums(), {}, []
            identity = RunIdentity(uid, run, "team-b", model, "grouped")
            for i in range(40):
                group = f"passage-{i // 5}" if grouped else None
                # Passages 0-4 right, 5-7 wrong; the plain model right on the same 24.
                value = 1.0 if i < 24 else 0.0
                sample = Sample(id=i, input=f"q{i}", target="a", record={"q": i}, group=group)
                result = SampleResult(
                    sample, [{"role": "user", "content": f"q{i}"}], Completion("a", 5, 1),
                    {"exact_match": value},
                )  # fmt: skip
                rows.append(sample_row(result, identity, 0, 1, None))
                sums.add(value, None if group is None else groups.setdefault(group, [0, 0.0]))
            await conn.copy_records_to_table("samples", records=rows, columns=COLUMNS)
            expected[model] = sums
        stored = await conn.fetchval("SELECT count(DISTINCT sample_group) FROM samples")
        assert stored == 8  # the runner writes each sample's group
        return expected
    finally:
        await conn.close()


async def _grouped_leaderboard(dsn: str) -> models.Leaderboard:
    conn = await asyncpg.connect(dsn)
    try:
        return await queries.leaderboard(conn, queries.Summaries(), "team-b", "grouped")
    finally:
        await conn.close()


def test_a_grouped_tasks_interval_is_the_status_cluster_robust_one_and_ranks_it(
    pg: PostgresServer,
) -> None:
    dsn = asyncio.run(create_database(pg))
    sums = asyncio.run(_seed_grouped(dsn))
    (task,) = asyncio.run(_grouped_leaderboard(dsn)).tasks
    by_model = {e.model: e for e in task.entries}
    for model, expected in sums.items():
        status = score_result("exact_match", expected)  # what the Evaluation's status shows
        assert by_model[model].score == status.value == 0.6
        assert by_model[model].ci95 == pytest.approx(status.ci95, abs=1e-6)
    # Eight clusters, not forty samples: wider than the independent samples' Wilson interval.
    grouped, plain = by_model["a-grouped"].ci95, by_model["b-plain"].ci95
    assert plain == pytest.approx(wilson(0.6, 40), abs=1e-6)
    assert grouped[1] - grouped[0] > 1.5 * (plain[1] - plain[0])
    # Equal scores rank by the interval's lower bound: the independent samples' first.
    assert [e.model for e in task.entries] == ["b-plain", "a-grouped"]
