"""The dashboard's reads of the store, and the summaries it keeps of finished runs.

Every query is keyed by an index (runs_by_cell, runs_by_suite, runs_by_evaluation, the samples'
primary key): none scans the whole samples table. A run's summary (per-scorer sums, tokens, cost,
latency percentiles) reads its rows once; a succeeded run's rows never change (samples are
written once and never updated, and no shard writes after the operator saw the run succeed), so
its summary is kept until evicted, and a leaderboard over a million rows reads none of them
again. A run still going is summarised again after `live_seconds`.
"""

from __future__ import annotations

import base64
import json
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from eval_api.shard import ScoreSums
from eval_api.stats import score_result
from eval_runner.dashboard import models

RIGHT_AT = 0.5  # a score at least this counts as right in "wrong only" and in changes
MAX_PAGE = 200
CHANGED_SHOWN = 50

RUN_COLUMNS = """evaluation_uid, run, namespace, evaluation_name, suite, cell, suite_run, model,
provider, dataset_source, started_at, succeeded_at, scorers"""
RUNS_BY_KEYS = f"""
SELECT {RUN_COLUMNS} FROM runs
WHERE (evaluation_uid, run) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""
TOTALS = """
SELECT s.evaluation_uid, s.run, count(*) AS samples,
       count(*) FILTER (WHERE s.error_class IS NOT NULL) AS errored,
       coalesce(sum(s.input_tokens), 0) AS input_tokens,
       coalesce(sum(s.output_tokens), 0) AS output_tokens,
       coalesce(sum(s.cost_usd), 0)::float8 AS cost_usd,
       count(*) FILTER (WHERE s.cache_hit) AS cache_hits,
       percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY s.latency_ms)
           FILTER (WHERE NOT s.cache_hit AND s.error_class IS NULL AND s.latency_ms IS NOT NULL)
           AS latency,
       max(s.created_at) AS last_sample_at
FROM unnest($1::text[], $2::text[]) AS k(evaluation_uid, run)
JOIN samples s ON s.evaluation_uid = k.evaluation_uid AND s.run = k.run
GROUP BY s.evaluation_uid, s.run
"""
# Per scorer, the sums of eval_api.shard.ScoreSums: with task.groupField (samples with a group)
# also the sums over the groups g (n_g samples scoring S_g) that its cluster-robust standard
# error needs: G, sum S_g^2, sum n_g S_g, sum n_g^2. A sample without a group (a row written
# before schema 6) is a group of its own: 1, v^2, v, 1.
SCORE_SUMS = """
SELECT evaluation_uid, run, scorer, sum(n)::bigint AS n, sum(total) AS sum,
       sum(squares) AS sumsq, bool_or(sample_group IS NOT NULL) AS grouped,
       sum(CASE WHEN sample_group IS NULL THEN n ELSE 1 END)::bigint AS groups,
       sum(CASE WHEN sample_group IS NULL THEN squares ELSE total * total END) AS group_sumsq,
       sum(CASE WHEN sample_group IS NULL THEN total ELSE n * total END) AS group_cross,
       sum(CASE WHEN sample_group IS NULL THEN n ELSE n * n END)::bigint AS group_nsq
FROM (
    SELECT s.evaluation_uid, s.run, e.key AS scorer, s.sample_group, count(*) AS n,
           sum(e.value::float8) AS total, sum(e.value::float8 * e.value::float8) AS squares
    FROM unnest($1::text[], $2::text[]) AS k(evaluation_uid, run)
    JOIN samples s ON s.evaluation_uid = k.evaluation_uid AND s.run = k.run
    CROSS JOIN LATERAL jsonb_each_text(s.scores) AS e(key, value)
    WHERE s.error_class IS NULL
    GROUP BY s.evaluation_uid, s.run, e.key, s.sample_group
) AS by_group
GROUP BY evaluation_uid, run, scorer
"""
ERRORS = """
SELECT s.evaluation_uid, s.run, s.error_class, count(*) AS n
FROM unnest($1::text[], $2::text[]) AS k(evaluation_uid, run)
JOIN samples s ON s.evaluation_uid = k.evaluation_uid AND s.run = k.run
WHERE s.error_class IS NOT NULL
GROUP BY s.evaluation_uid, s.run, s.error_class
"""
SUITES = """
SELECT namespace, suite, count(DISTINCT cell) AS cells, count(*) AS runs,
       max(started_at) AS last_run_at
FROM runs WHERE suite IS NOT NULL GROUP BY namespace, suite ORDER BY namespace, suite
"""
LATEST_CELL_RUNS = """
SELECT DISTINCT ON (cell) evaluation_uid, run FROM runs
WHERE namespace = $1 AND suite = $2 AND cell IS NOT NULL AND succeeded_at IS NOT NULL
ORDER BY cell, started_at DESC
"""
CELL_RUNS = """
SELECT evaluation_uid, run FROM (
    SELECT evaluation_uid, run, started_at,
           row_number() OVER (PARTITION BY cell ORDER BY started_at DESC) AS newest
    FROM runs
    WHERE namespace = $1 AND suite = $2 AND cell IS NOT NULL AND succeeded_at IS NOT NULL
      AND ($3::text IS NULL OR cell = $3)
) AS r WHERE newest <= $4
"""
EVALUATIONS = """
SELECT DISTINCT ON (evaluation_uid) evaluation_uid, namespace, evaluation_name, suite, cell,
       model, provider, run, started_at, succeeded_at,
       count(*) OVER (PARTITION BY evaluation_uid) AS runs
FROM runs
WHERE ($1::text IS NULL OR namespace = $1) AND ($2::text IS NULL OR suite = $2)
ORDER BY evaluation_uid, started_at DESC
"""
RUNS_OF_EVALUATION = """
SELECT evaluation_uid, run FROM runs
WHERE namespace = $1 AND evaluation_name = $2
ORDER BY started_at DESC LIMIT $3
"""
SAMPLE_COLUMNS = """sample_id, shard, attempt, input_hash, prompt, response, scores,
error_class, error_message, latency_ms, cost_usd::float8 AS cost_usd, cache_hit, input_tokens,
output_tokens, details"""
WORST = f"""
SELECT {SAMPLE_COLUMNS} FROM samples
WHERE evaluation_uid = $1 AND run = $2
ORDER BY (error_class IS NULL), (scores->>$3)::float8 NULLS FIRST, sample_id
LIMIT $4
"""
PAIRING = """
SELECT sample_id, input_hash, scores FROM samples
WHERE evaluation_uid = $1 AND run = $2 AND error_class IS NULL
ORDER BY sample_id
"""
SAMPLES_BY_ID = f"""
SELECT {SAMPLE_COLUMNS} FROM samples
WHERE evaluation_uid = $1 AND run = $2 AND sample_id = ANY($3::int[])
"""


class BadRequest(ValueError):
    """A request's parameter is wrong; the message names it."""


class NotFound(LookupError):
    pass


def encode_cursor(sample_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": sample_id}).encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return -1
    try:
        after = json.loads(base64.urlsafe_b64decode(cursor.encode()))["after"]
    except (ValueError, KeyError, TypeError):
        raise BadRequest("cursor is not one this API gave") from None
    if not isinstance(after, int) or isinstance(after, bool):
        raise BadRequest("cursor is not one this API gave")
    return after


def _messages(text: str | None) -> list[dict[str, Any]] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return [{"role": "user", "content": text}]
    return value if isinstance(value, list) else [{"role": "user", "content": text}]


def _scores(value: Any) -> dict[str, float]:
    if isinstance(value, str):
        value = json.loads(value)
    return {key: float(item) for key, item in (value or {}).items()}


def sample_of(row: Any) -> models.Sample:
    return models.Sample(
        sample_id=row["sample_id"],
        shard=row["shard"],
        attempt=row["attempt"],
        input_hash=row["input_hash"],
        prompt=_messages(row["prompt"]),
        response=row["response"],
        scores=_scores(row["scores"]),
        error_class=row["error_class"],
        error_message=row["error_message"],
        latency_ms=row["latency_ms"],
        cost_usd=row["cost_usd"],
        cache_hit=row["cache_hit"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        details=json.loads(row["details"]) if isinstance(row["details"], str) else row["details"],
    )


def _score_sums(row: Any) -> ScoreSums:
    """A SCORE_SUMS row as the runner's ScoreSums: the grouped sums only with task.groupField,
    so that the interval is the status's (eval_api.stats)."""
    sums = ScoreSums(n=row["n"], sum=row["sum"], sumsq=row["sumsq"])
    if row["grouped"]:
        sums.groups = row["groups"]
        sums.group_sumsq = row["group_sumsq"]
        sums.group_cross = row["group_cross"]
        sums.group_nsq = row["group_nsq"]
    return sums


def _score(sums: ScoreSums | None, name: str) -> models.ScorerSummary:
    result = score_result(name, sums or ScoreSums())
    return models.ScorerSummary(
        name=name, value=result.value, stderr=result.stderr, ci95=result.ci95, n=result.n
    )


class Summaries:
    """Run summaries by (evaluation uid, run): a succeeded run's kept (LRU), others for
    `live_seconds`."""

    def __init__(self, *, capacity: int = 20_000, live_seconds: float = 5.0) -> None:
        self.capacity = capacity
        self.live_seconds = live_seconds
        self._kept: OrderedDict[tuple[str, str], tuple[models.RunSummary, float | None]] = (
            OrderedDict()
        )
        self.reads = 0  # summaries computed from samples (the benchmark reports it)

    def _cached(self, key: tuple[str, str], now: float) -> models.RunSummary | None:
        found = self._kept.get(key)
        if found is None:
            return None
        summary, expires = found
        if expires is not None and expires < now:
            del self._kept[key]
            return None
        self._kept.move_to_end(key)
        return summary

    async def get(self, conn: Any, keys: Iterable[tuple[str, str]]) -> list[models.RunSummary]:
        """The summaries of these runs, in their order (runs not in the store left out)."""
        keys = list(dict.fromkeys(keys))
        now = time.monotonic()
        found = {key: s for key in keys if (s := self._cached(key, now)) is not None}
        missing = [key for key in keys if key not in found]
        if missing:
            for summary in await summarise(conn, missing):
                key = (summary.evaluation_uid, summary.run)
                found[key] = summary
                expires = None if summary.succeeded_at else now + self.live_seconds
                self._kept[key] = (summary, expires)
                self.reads += 1
            while len(self._kept) > self.capacity:
                self._kept.popitem(last=False)
        return [found[key] for key in keys if key in found]


async def summarise(conn: Any, keys: list[tuple[str, str]]) -> list[models.RunSummary]:
    """Read the runs' rows and sum them up: four queries however many runs."""
    uids, runs = [k[0] for k in keys], [k[1] for k in keys]
    meta = await conn.fetch(RUNS_BY_KEYS, uids, runs)
    totals = {(r["evaluation_uid"], r["run"]): r for r in await conn.fetch(TOTALS, uids, runs)}
    sums: dict[tuple[str, str], dict[str, ScoreSums]] = defaultdict(dict)
    for r in await conn.fetch(SCORE_SUMS, uids, runs):
        sums[(r["evaluation_uid"], r["run"])][r["scorer"]] = _score_sums(r)
    errors: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for r in await conn.fetch(ERRORS, uids, runs):
        errors[(r["evaluation_uid"], r["run"])][r["error_class"]] = r["n"]
    found = []
    for row in meta:
        key = (row["evaluation_uid"], row["run"])
        total = totals.get(key)
        latency = (total["latency"] if total else None) or [None, None]
        scorers = [_score(sums[key].get(name), name) for name in row["scorers"]]
        main = scorers[0] if scorers else None
        found.append(
            models.RunSummary(
                evaluation_uid=row["evaluation_uid"],
                run=row["run"],
                namespace=row["namespace"],
                evaluation=row["evaluation_name"],
                suite=row["suite"],
                cell=row["cell"],
                suite_run=row["suite_run"],
                model=row["model"],
                provider=row["provider"],
                dataset=row["dataset_source"],
                started_at=row["started_at"],
                succeeded_at=row["succeeded_at"],
                last_sample_at=total["last_sample_at"] if total else None,
                samples=total["samples"] if total else 0,
                errored=total["errored"] if total else 0,
                errors_by_class=errors.get(key, {}),
                input_tokens=total["input_tokens"] if total else 0,
                output_tokens=total["output_tokens"] if total else 0,
                cost_usd=total["cost_usd"] if total else 0.0,
                cache_hits=total["cache_hits"] if total else 0,
                latency_p50_ms=latency[0],
                latency_p95_ms=latency[1],
                main_scorer=main.name if main else None,
                score=main.value if main else None,
                ci95=main.ci95 if main else None,
                scorers=scorers,
            )
        )
    return found


def split_cell(cell: str) -> tuple[str, str]:
    model, _, task = cell.partition("/")
    return model, task


async def suites(conn: Any) -> models.SuiteList:
    rows = await conn.fetch(SUITES)
    return models.SuiteList(items=[models.Suite(**dict(r)) for r in rows])


async def leaderboard(
    conn: Any, summaries: Summaries, namespace: str, suite: str
) -> models.Leaderboard:
    """Per task, every model's newest succeeded run, best first (by score, then the narrower
    interval's lower bound, then the name)."""
    keys = [
        (r["evaluation_uid"], r["run"])
        for r in await conn.fetch(LATEST_CELL_RUNS, namespace, suite)
    ]
    by_task: dict[str, list[models.RunSummary]] = defaultdict(list)
    for summary in await summaries.get(conn, keys):
        by_task[split_cell(summary.cell or "")[1]].append(summary)
    tasks = []
    for task in sorted(by_task):
        ranked = sorted(
            by_task[task],
            key=lambda s: (
                s.score is None,
                -(s.score or 0.0),
                -(s.ci95[0] if s.ci95 else 0.0),
                split_cell(s.cell or "")[0],
            ),
        )
        entries = [
            models.LeaderboardEntry(
                rank=rank,
                model=split_cell(s.cell or "")[0],
                cell=s.cell or "",
                evaluation=s.evaluation,
                evaluation_uid=s.evaluation_uid,
                run=s.run,
                suite_run=s.suite_run,
                score=s.score,
                ci95=s.ci95,
                n=s.scorers[0].n if s.scorers else 0,
                errored=s.errored,
                cost_usd=s.cost_usd,
                latency_p50_ms=s.latency_p50_ms,
                latency_p95_ms=s.latency_p95_ms,
                succeeded_at=s.succeeded_at,
            )
            for rank, s in enumerate(ranked, start=1)
        ]
        best = entries[0].model if entries and entries[0].score is not None else None
        scorer = ranked[0].main_scorer if ranked else None
        tasks.append(models.LeaderboardTask(task=task, scorer=scorer, best=best, entries=entries))
    return models.Leaderboard(namespace=namespace, suite=suite, tasks=tasks)


async def history(
    conn: Any, summaries: Summaries, namespace: str, suite: str, cell: str | None, limit: int
) -> models.History:
    rows = await conn.fetch(CELL_RUNS, namespace, suite, cell, limit)
    by_cell: dict[str, list[models.RunSummary]] = defaultdict(list)
    for summary in await summaries.get(conn, [(r["evaluation_uid"], r["run"]) for r in rows]):
        by_cell[summary.cell or ""].append(summary)
    cells = []
    for name in sorted(by_cell):
        model, task = split_cell(name)
        points = [
            models.HistoryPoint(
                evaluation_uid=s.evaluation_uid,
                run=s.run,
                suite_run=s.suite_run,
                started_at=s.started_at,
                score=s.score,
                ci95=s.ci95,
                n=s.scorers[0].n if s.scorers else 0,
            )
            for s in sorted(by_cell[name], key=lambda s: s.started_at)
        ]
        cells.append(models.CellHistory(cell=name, model=model, task=task, points=points))
    return models.History(namespace=namespace, suite=suite, cells=cells)


async def evaluations(conn: Any, namespace: str | None, suite: str | None) -> models.EvaluationList:
    rows = await conn.fetch(EVALUATIONS, namespace, suite)
    items = [
        models.Evaluation(
            namespace=r["namespace"],
            name=r["evaluation_name"],
            evaluation_uid=r["evaluation_uid"],
            suite=r["suite"],
            cell=r["cell"],
            model=r["model"],
            provider=r["provider"],
            runs=r["runs"],
            latest_run=r["run"],
            latest_started_at=r["started_at"],
            latest_succeeded_at=r["succeeded_at"],
        )
        for r in rows
    ]
    items.sort(key=lambda e: (e.namespace, e.name))
    return models.EvaluationList(items=items)


async def runs_of_evaluation(
    conn: Any, summaries: Summaries, namespace: str, name: str, limit: int
) -> models.RunList:
    rows = await conn.fetch(RUNS_OF_EVALUATION, namespace, name, limit)
    keys = [(r["evaluation_uid"], r["run"]) for r in rows]
    return models.RunList(items=await summaries.get(conn, keys))


async def run(conn: Any, summaries: Summaries, uid: str, run_id: str) -> models.RunSummary:
    found = await summaries.get(conn, [(uid, run_id)])
    if not found:
        raise NotFound(f"run {run_id} of evaluation {uid} is not in the store")
    return found[0]


def _sample_filter(
    scorer: str | None, wrong: bool, errored: bool, below: float
) -> tuple[str, list[Any]]:
    clauses, args = [], []
    if errored:
        clauses.append("error_class IS NOT NULL")
    if scorer is not None:
        args.append(scorer)
        clauses.append(f"scores ? ${len(args) + 4}")
    if wrong:
        if scorer is None:
            raise BadRequest("wrong=true needs scorer (the run's scorers are in its summary)")
        args.append(below)
        clauses.append(f"(scores->>${len(args) + 3})::float8 < ${len(args) + 4}")
    return "".join(f" AND {c}" for c in clauses), args


async def samples(
    conn: Any,
    uid: str,
    run_id: str,
    *,
    cursor: str | None,
    limit: int,
    scorer: str | None,
    wrong: bool,
    errored: bool,
    below: float = RIGHT_AT,
) -> models.SamplePage:
    """A page of a run's samples in sample order (keyset paging on the primary key)."""
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE}")
    after = decode_cursor(cursor)
    where, args = _sample_filter(scorer, wrong, errored, below)
    sql = (
        f"SELECT {SAMPLE_COLUMNS} FROM samples "
        f"WHERE evaluation_uid = $1 AND run = $2 AND sample_id > $3{where} "
        f"ORDER BY sample_id LIMIT $4"
    )
    rows = await conn.fetch(sql, uid, run_id, after, limit + 1, *args)
    if (
        not rows
        and await conn.fetchval(
            "SELECT 1 FROM runs WHERE evaluation_uid = $1 AND run = $2", uid, run_id
        )
        is None
    ):
        raise NotFound(f"run {run_id} of evaluation {uid} is not in the store")
    items = [sample_of(r) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].sample_id) if len(rows) > limit else None
    return models.SamplePage(items=items, next_cursor=next_cursor)


async def worst(conn: Any, uid: str, run_id: str, scorer: str, limit: int) -> list[models.Sample]:
    """The errored samples first, then the lowest scores."""
    return [sample_of(r) for r in await conn.fetch(WORST, uid, run_id, scorer, limit)]


def _pairs(rows: list[Any], scorer: str) -> dict[tuple[str, int], tuple[int, float]]:
    seen: dict[str, int] = defaultdict(int)
    found = {}
    for row in rows:
        occurrence = seen[row["input_hash"]]
        seen[row["input_hash"]] += 1
        value = _scores(row["scores"]).get(scorer)
        if value is not None:
            found[(row["input_hash"], occurrence)] = (row["sample_id"], value)
    return found


async def compare(
    conn: Any,
    baseline: tuple[str, str],
    candidate: tuple[str, str],
    *,
    alpha: float,
    max_drop: float,
) -> models.Comparison:
    """The paired comparison of eval_runner.cellreport (the regression gate's test) and which
    samples changed outcome."""
    from eval_runner.cellreport import compare_runs  # scipy: imported on first comparison

    scorer_lists = {}
    for key in (baseline, candidate):
        found = await conn.fetchval(
            "SELECT scorers FROM runs WHERE evaluation_uid = $1 AND run = $2", *key
        )
        if found is None:
            raise NotFound(f"run {key[1]} of evaluation {key[0]} is not in the store")
        scorer_lists[key] = list(found)
    scorers = scorer_lists[candidate]
    base_rows = await conn.fetch(PAIRING, *baseline)
    cand_rows = await conn.fetch(PAIRING, *candidate)
    compared = compare_runs(
        base_rows,
        cand_rows,
        scorers,
        max_drop=Decimal(str(max_drop)),
        alpha=Decimal(str(alpha)),
    )
    main = scorers[0] if scorers else None
    base = _pairs(base_rows, main) if main else {}
    cand = _pairs(cand_rows, main) if main else {}
    counts = {"both_right": 0, "both_wrong": 0, "fixed": 0, "broken": 0}
    flipped = []
    for key in sorted(base.keys() & cand.keys(), key=lambda k: base[k][0]):
        was, now = base[key][1] >= RIGHT_AT, cand[key][1] >= RIGHT_AT
        if was and now:
            counts["both_right"] += 1
        elif not was and not now:
            counts["both_wrong"] += 1
        else:
            counts["fixed" if now else "broken"] += 1
            flipped.append(key)
    unpaired = len(base.keys() ^ cand.keys())
    shown = flipped[:CHANGED_SHOWN]
    base_samples = await _samples_by_id(conn, baseline, [base[k][0] for k in shown])
    cand_samples = await _samples_by_id(conn, candidate, [cand[k][0] for k in shown])
    changed = []
    for key in shown:
        before, after = base_samples[base[key][0]], cand_samples[cand[key][0]]
        changed.append(
            models.ChangedSample(
                input_hash=key[0],
                occurrence=key[1],
                baseline_sample_id=before.sample_id,
                candidate_sample_id=after.sample_id,
                baseline_score=base[key][1],
                candidate_score=cand[key][1],
                prompt=after.prompt or before.prompt,
                baseline_response=before.response,
                candidate_response=after.response,
            )
        )
    return models.Comparison(
        baseline=models.RunRef(evaluation_uid=baseline[0], run=baseline[1]),
        candidate=models.RunRef(evaluation_uid=candidate[0], run=candidate[1]),
        scorer=main,
        alpha=alpha,
        max_drop=max_drop,
        regressed=any(s.regressed for s in compared),
        scorers=compared,
        changes=models.Changes(**counts, unpaired=unpaired),
        changed=changed,
    )


async def _samples_by_id(
    conn: Any, key: tuple[str, str], ids: list[int]
) -> dict[int, models.Sample]:
    if not ids:
        return {}
    rows = await conn.fetch(SAMPLES_BY_ID, *key, ids)
    return {r["sample_id"]: sample_of(r) for r in rows}
