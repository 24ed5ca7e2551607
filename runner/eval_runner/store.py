"""The per-sample store (PostgreSQL): every finished sample becomes a row as it completes, and
a shard that starts again resumes from its rows, asking the model only for the rest.

A row is keyed by (evaluation uid, run, sample id). Rows are written in batches by one
writer task: a batch is sent when it has `batch_rows` rows or its oldest row is
`flush_seconds` old, by binary COPY into a session's temporary staging table and one
INSERT ... ON CONFLICT DO NOTHING in the same transaction, so a batch sent twice (its commit
went through, its answer was lost) adds nothing the second time. A batch that failed stays
in memory and is sent again whole, with exponential backoff and jitter, for as long as the
store has been failing for less than `unavailable_after_seconds`; past that the shard stops
with reason StoreUnavailable, a retryable error: the Job starts the shard again (pod back-off)
and the new attempt resumes from the rows that were written. The rows still buffered then are
not lost answers: their samples are asked again by the next attempt (from the response cache,
when the run has one: it keeps the answers of its own run). Only a store that answers wrongly
(a schema it cannot migrate, another spec under the same run, refused credentials) stops the
shard for good. The last rows are written before the shard's summary is reported, however the
shard ends (a SIGTERM gives them TERMINATION_FLUSH_SECONDS).

A sample that failed for a reason that passes (429, 5xx, a timeout, a lost connection) is not
a final answer: it is counted in the shard's summary as errored, but not stored, so a resumed
attempt asks it again.

When a shard opens the store it applies the schema migrations (idempotent; the operator has
usually done it already), registers the run (a run id reused with another spec is refused:
StoreConflict), numbers its attempt (1 + the attempts before it, from shard_attempts, so an
attempt that died before its first row still counts), and reads the rows its earlier
attempts stored. Those samples are not asked again; the pipeline counts them in the summary.
A stored row whose input or rendered prompt differs from this run's sample (the dataset or
the template changed under the same run id) is refused too: StoreConflict.

Passwords: the settings' secret forms are registered for redaction when the store is made,
and messages name the store by its URI without the password.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import random
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import structlog

from eval_api import environment
from eval_api.cellreport import BASELINE_PREVIOUS, BASELINE_SUITE_RUN_PREFIX
from eval_api.shard import ShardUsage
from eval_api.store import MigrationError, StoreSettings, migrate
from eval_api.tasks import TaskPlan, task_plan
from eval_api.v1alpha1.evaluation import Evaluation, EvaluationSpec
from eval_api.v1alpha1.model import Pricing
from eval_runner import metrics
from eval_runner.client import Spend
from eval_runner.dataset import Sample
from eval_runner.errors import PermanentError, RetryableError
from eval_runner.prompt import Message
from eval_runner.results import SampleResult
from eval_runner.secrets import SECRETS

STORE_UNAVAILABLE = "StoreUnavailable"
STORE_CREDENTIALS_REFUSED = "StoreCredentialsRefused"
STORE_CONFLICT = "StoreConflict"
STORE_SCHEMA_INVALID = "StoreSchemaInvalid"
STORE_CONFIG_INVALID = "StoreConfigInvalid"

# Rows of one batch: bench/store.py (make bench) writes fastest at about this size;
# rows that come slower than this a second are written within flush_seconds anyway.
DEFAULT_BATCH_ROWS = 2000
DEFAULT_FLUSH_SECONDS = 1.0
DEFAULT_UNAVAILABLE_AFTER_SECONDS = 120.0
# A SIGTERM leaves the pod its grace period (30 s by default): the last rows get this much.
TERMINATION_FLUSH_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 5.0
# A statement the server does not answer within this long counts as a failure (a network
# partition looks like that): the batch is sent again on a new connection.
COMMAND_TIMEOUT_SECONDS = 30.0
BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0

# What a store that is down, restarting or unreachable raises (asyncpg's own errors, and the
# socket's); anything else is a bug and stops the shard as one.
STORE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
# Refused credentials: no retry changes them.
REFUSED = (asyncpg.InvalidAuthorizationSpecificationError,)

COLUMNS = (
    "evaluation_uid",
    "run",
    "sample_id",
    "shard",
    "attempt",
    "input_hash",
    "prompt_hash",
    "prompt",
    "response",
    "scores",
    "requests",
    "input_tokens",
    "output_tokens",
    "truncated",
    "timed_out",
    "cost_usd",
    "cache_hit",
    "cache_saved_usd",
    "latency_ms",
    "error_class",
    "error_message",
    "sample_group",
    "details",
)
STAGING = "samples_incoming"
# ON COMMIT DELETE ROWS: each batch's transaction leaves the staging table empty.
CREATE_STAGING = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} (LIKE samples INCLUDING DEFAULTS) "
    "ON COMMIT DELETE ROWS"
)
INSERT_STAGED = (
    f"INSERT INTO samples ({', '.join(COLUMNS)}, created_at) "
    f"SELECT {', '.join(COLUMNS)}, created_at FROM {STAGING} "
    "ON CONFLICT (evaluation_uid, run, sample_id) DO NOTHING"
)
# A cell's baseline run (what `eval-runner cell-report` compares with, and the regression gate
# pairs with): `previous`, the cell's newest succeeded run started before this one; a suite run,
# the cell's succeeded run in it.
PREVIOUS_RUN = """
SELECT evaluation_uid, run, suite_run, scorers FROM runs
WHERE namespace = $1 AND suite = $2 AND cell = $3 AND succeeded_at IS NOT NULL
  AND started_at < $4 AND NOT (evaluation_uid = $5 AND run = $6)
ORDER BY started_at DESC LIMIT 1
"""
RUN_OF_SUITE_RUN = """
SELECT evaluation_uid, run, suite_run, scorers FROM runs
WHERE namespace = $1 AND suite = $2 AND cell = $3 AND succeeded_at IS NOT NULL
  AND suite_run = $4
ORDER BY started_at DESC LIMIT 1
"""
STARTED_AT = "SELECT started_at FROM runs WHERE evaluation_uid = $1 AND run = $2"
# Every baseline row of these records, errored or not: a record the baseline holds more than
# once pairs with none of them.
BASELINE_ROWS = """
SELECT input_hash, scores, error_class FROM samples
WHERE evaluation_uid = $1 AND run = $2 AND input_hash = ANY($3::text[])
"""
REGISTER_RUN = """
INSERT INTO runs (evaluation_uid, run, namespace, evaluation_name, suite, provider, model,
                  dataset_source, spec_hash, shards, scorers)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (evaluation_uid, run) DO NOTHING
"""
NEXT_ATTEMPT = """
INSERT INTO shard_attempts (evaluation_uid, run, shard, attempt, resumed)
SELECT $1, $2, $3, coalesce(max(attempt), 0) + 1, $4
FROM shard_attempts WHERE evaluation_uid = $1 AND run = $2 AND shard = $3
RETURNING attempt
"""
SELECT_STORED = """
SELECT sample_id, attempt, input_hash, prompt_hash, scores, requests, input_tokens,
       output_tokens, truncated, timed_out, cost_usd, cache_hit, cache_saved_usd, error_class
FROM samples WHERE evaluation_uid = $1 AND run = $2 AND shard = $3
"""
LATEST_RUN = """
SELECT run FROM runs WHERE evaluation_uid = $1 AND spec_hash = $2
ORDER BY started_at DESC LIMIT 1
"""

log = structlog.get_logger()
T = TypeVar("T")


class StoreUnavailable(RetryableError):
    """The store failed for longer than the outage bound: the Job retries the shard."""

    def __init__(self, message: str) -> None:
        super().__init__(STORE_UNAVAILABLE, message)


# --- identity and rows (pure) -----------------------------------------------------------


@dataclass(frozen=True)
class RunIdentity:
    """Whose rows these are: the Evaluation (by uid) and its run (the Job's name). A suite
    cell's run with execution.earlyStop and a baseline also knows its cell (<model>/<task>) and
    the baseline (BASELINE_PREVIOUS or BASELINE_SUITE_RUN_PREFIX + id) its gate pairs with."""

    evaluation_uid: str
    run: str
    namespace: str
    evaluation_name: str
    suite: str | None = None
    cell: str | None = None
    baseline: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], evaluation: Evaluation) -> RunIdentity:
        """A runner pod's identity, from the env contract (its Job sets it)."""
        uid, run = env.get(environment.EVALUATION_UID), env.get(environment.RUN)
        if not uid or not run:
            raise PermanentError(
                STORE_CONFIG_INVALID,
                f"a store is configured but {environment.EVALUATION_UID} and "
                f"{environment.RUN} are not both set: the rows would have no owner",
            )
        return cls(
            evaluation_uid=uid,
            run=run,
            namespace=env.get(environment.EVALUATION_NAMESPACE)
            or evaluation.metadata.namespace
            or "default",
            evaluation_name=env.get(environment.EVALUATION_NAME) or evaluation.metadata.name,
            suite=env.get(environment.SUITE) or None,
            cell=env.get(environment.CELL) or None,
            baseline=env.get(environment.BASELINE) or None,
        )


@dataclass(frozen=True)
class Baseline:
    """The run a suite cell's regression gate pairs with: which, its results, and the scores
    it gave each record it holds exactly once (by input_hash)."""

    run: str | None
    suite_run: str | None
    scores: dict[str, dict[str, float]]
    scorers: tuple[str, ...] = ()


async def find_baseline_run(
    conn: Any,
    selector: str,
    *,
    namespace: str,
    suite: str,
    cell: str,
    started_at: Any,
    evaluation_uid: str,
    run: str,
) -> Any:
    """The row (evaluation_uid, run, suite_run, scorers) of cell `cell`'s baseline run for run
    `run` (started at `started_at`): BASELINE_PREVIOUS, the cell's newest succeeded run started
    before it; BASELINE_SUITE_RUN_PREFIX + id, the cell's succeeded run in that suite run. None
    when there is none; ValueError for a selector that is neither. The cell report and the
    regression gate's shards both find it here."""
    if selector == BASELINE_PREVIOUS:
        return await conn.fetchrow(
            PREVIOUS_RUN, namespace, suite, cell, started_at, evaluation_uid, run
        )
    if selector.startswith(BASELINE_SUITE_RUN_PREFIX):
        wanted = selector.removeprefix(BASELINE_SUITE_RUN_PREFIX)
        return await conn.fetchrow(RUN_OF_SUITE_RUN, namespace, suite, cell, wanted)
    raise ValueError(f"baseline {selector!r} is not understood")


def canonical_hash(value: Any) -> str:
    """sha256 of `value` as canonical JSON (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def input_hash(sample: Sample) -> str:
    return canonical_hash(sample.record)


def prompt_hash(messages: list[Message]) -> str:
    return canonical_hash(messages)


def spec_hash(spec: EvaluationSpec) -> str:
    return canonical_hash(spec.model_dump(mode="json", by_alias=True, exclude_none=True))


def local_evaluation_uid(namespace: str | None, name: str) -> str:
    """A local run's stand-in for metadata.uid: the same for every run of the same
    namespace/name, and never a cluster's (a cluster's uids are random, version 4)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"eval-runner-local:{namespace or 'default'}/{name}"))


def new_local_run(digest: str) -> str:
    """A new local run's id: the spec's hash (what --resume matches) and a random part."""
    return f"local-{digest[:12]}-{secrets.token_hex(4)}"


def _text(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; a model may well answer one.
    return None if value is None else SECRETS.redact(value).replace("\x00", "\ufffd")


def sample_row(
    result: SampleResult, identity: RunIdentity, shard: int, attempt: int, pricing: Pricing | None
) -> tuple[Any, ...]:
    """The row of one finished sample, in the order of COLUMNS."""
    completion = result.completion
    spend = completion.spend if completion is not None else (result.spend or Spend())
    saved = Decimal(0)
    if completion is not None and completion.cache_hit and pricing is not None:
        saved = pricing.cost(completion.input_tokens, completion.output_tokens)
    return (
        identity.evaluation_uid,
        identity.run,
        result.sample.id,
        shard,
        attempt,
        input_hash(result.sample),
        prompt_hash(result.messages),
        _text(json.dumps(result.messages, ensure_ascii=False)) if result.messages else None,
        None if completion is None else _text(completion.text),
        json.dumps(result.scores),
        spend.requests,
        0 if completion is None else completion.input_tokens,
        0 if completion is None else completion.output_tokens,
        False if completion is None else completion.truncated,
        spend.timed_out,
        spend.cost,
        False if completion is None else completion.cache_hit,
        saved,
        None if completion is None else round(completion.latency * 1000, 3),
        result.error_class,
        _text(result.error),
        result.sample.group,
        None if result.details is None else _text(json.dumps(result.details, ensure_ascii=False)),
    )


@dataclass(frozen=True)
class StoredSample:
    """What a resumed shard needs of a row its earlier attempts wrote."""

    sample_id: int
    attempt: int
    input_hash: str
    prompt_hash: str
    scores: dict[str, float]
    error_class: str | None
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    truncated: bool = False
    timed_out: int = 0
    cost: Decimal = Decimal(0)
    cache_hit: bool = False
    cache_saved: Decimal = Decimal(0)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> StoredSample:
        return cls(
            sample_id=record["sample_id"],
            attempt=record["attempt"],
            input_hash=record["input_hash"],
            prompt_hash=record["prompt_hash"],
            scores=json.loads(record["scores"]),
            error_class=record["error_class"],
            requests=record["requests"],
            input_tokens=record["input_tokens"],
            output_tokens=record["output_tokens"],
            truncated=record["truncated"],
            timed_out=record["timed_out"],
            cost=record["cost_usd"],
            cache_hit=record["cache_hit"],
            cache_saved=record["cache_saved_usd"],
        )


def carried_usage(stored: Iterable[StoredSample]) -> ShardUsage:
    """What stored samples used when they were asked, as the model's usage counts it: a
    cache hit's tokens were not the provider's, its price is what the cache saved."""
    usage = ShardUsage()
    cost = saved = Decimal(0)
    for sample in stored:
        usage.requests += sample.requests
        usage.timed_out += sample.timed_out
        usage.truncated += int(sample.truncated)
        cost += sample.cost
        if sample.cache_hit:
            usage.cache_hits += 1
            saved += sample.cache_saved
        else:
            usage.input_tokens += sample.input_tokens
            usage.output_tokens += sample.output_tokens
    usage.cost_usd = format(cost.normalize(), "f")
    usage.cache_saved_usd = format(saved.normalize(), "f")
    return usage


def conflicts(
    stored: Mapping[int, StoredSample], work: Iterable[tuple[Sample, list[Message]]]
) -> list[int]:
    """The stored samples that are not this shard's samples as they are now."""
    left = dict(stored)
    bad = []
    for sample, messages in work:
        row = left.pop(sample.id, None)
        if row is not None and (
            row.input_hash != input_hash(sample) or row.prompt_hash != prompt_hash(messages)
        ):
            bad.append(sample.id)
    return sorted(bad + list(left))


# --- the settings of the writer ---------------------------------------------------------


@dataclass(frozen=True)
class WriterSettings:
    batch_rows: int = DEFAULT_BATCH_ROWS
    flush_seconds: float = DEFAULT_FLUSH_SECONDS
    unavailable_after_seconds: float = DEFAULT_UNAVAILABLE_AFTER_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WriterSettings:
        """EVAL_STORE_BATCH_ROWS and EVAL_STORE_UNAVAILABLE_AFTER_SECONDS, when set."""
        batch = env.get(environment.STORE_BATCH_ROWS) or str(DEFAULT_BATCH_ROWS)
        bound = env.get(environment.STORE_UNAVAILABLE_AFTER_SECONDS) or str(
            DEFAULT_UNAVAILABLE_AFTER_SECONDS
        )
        try:
            settings = cls(batch_rows=int(batch), unavailable_after_seconds=float(bound))
        except ValueError:
            settings = cls(batch_rows=0)
        if settings.batch_rows < 1 or not settings.unavailable_after_seconds > 0:
            raise PermanentError(
                STORE_CONFIG_INVALID,
                f"{environment.STORE_BATCH_ROWS}={batch!r} must be a whole number >= 1 and "
                f"{environment.STORE_UNAVAILABLE_AFTER_SECONDS}={bound!r} a number > 0",
            )
        return settings


# --- retrying through an outage ---------------------------------------------------------


class Outage:
    """How long the store has been failing, and the retries through it: exponential backoff
    with jitter, until it has failed for `bound_seconds` in a row (StoreUnavailable)."""

    def __init__(
        self,
        bound_seconds: float,
        where: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.bound_seconds = bound_seconds
        self.since: float | None = None
        self._where = where
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter

    async def call(
        self,
        operation: Callable[[], Awaitable[T]],
        doing: str,
        on_error: Callable[[BaseException], Awaitable[None]],
    ) -> T:
        delay = BACKOFF_FIRST_SECONDS
        while True:
            try:
                result = await operation()
            except STORE_ERRORS as err:
                await on_error(err)
                detail = SECRETS.redact(f"{type(err).__name__}: {err}")
                if isinstance(err, REFUSED):
                    raise PermanentError(
                        STORE_CREDENTIALS_REFUSED,
                        f"the store {self._where} refused the credentials while {doing}: {detail}",
                    ) from None
                now = self._clock()
                if self.since is None:
                    self.since = now
                    log.warning(
                        "the store is unreachable; keeping the samples and retrying",
                        store=self._where,
                        doing=doing,
                        error=detail,
                        gives_up_after_seconds=self.bound_seconds,
                    )
                failing = now - self.since
                if failing >= self.bound_seconds:
                    raise StoreUnavailable(
                        f"the store {self._where} failed for {failing:.0f} s while {doing} "
                        f"(the bound is {self.bound_seconds:g} s): {detail}"
                    ) from None
                # Full jitter on the upper half: shards that lost the store together do not
                # come back together.
                wait = delay * (0.5 + self._jitter() / 2)
                await self._sleep(min(wait, self.bound_seconds - failing))
                delay = min(delay * 2, BACKOFF_MAX_SECONDS)
                continue
            if self.since is not None:
                log.info(
                    "the store is back", store=self._where, after_seconds=self._clock() - self.since
                )
                self.since = None
            return result


# --- the writer --------------------------------------------------------------------------

Row = tuple[Any, ...]


class SampleWriter:
    """Rows in, batches out: `add` (from the tally, never blocking) queues a row; `run` (one
    task) writes a batch when it is full or its oldest row is flush_seconds old, and once
    `finish` was called, everything left. Rows leave the queue only once written."""

    def __init__(
        self,
        write: Callable[[list[Row]], Awaitable[int]],
        outage: Outage,
        settings: WriterSettings,
        on_error: Callable[[BaseException], Awaitable[None]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.written = 0
        self._write = write
        self._outage = outage
        self._on_error = on_error
        self._clock = clock
        self._pending: list[tuple[float, Row]] = []  # (arrival, row)
        self._wake = asyncio.Event()
        self._finished = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, row: Row) -> None:
        self._pending.append((self._clock(), row))
        metrics.STORE_BUFFERED.inc()
        count = len(self._pending)
        if count == 1 or count >= self.settings.batch_rows:
            self._wake.set()

    def finish(self) -> None:
        self._finished = True
        self._wake.set()

    async def run(self) -> None:
        while batch := await self._next_batch():
            self.written += await self._outage.call(
                functools.partial(self._write, batch), "writing samples", self._failed
            )
            del self._pending[: len(batch)]
            metrics.STORE_BUFFERED.dec(len(batch))

    async def _failed(self, err: BaseException) -> None:
        metrics.STORE_FLUSH_ERRORS.inc()
        await self._on_error(err)

    async def _next_batch(self) -> list[Row]:
        size, lag = self.settings.batch_rows, self.settings.flush_seconds
        while True:
            count = len(self._pending)
            timeout = None
            if count >= size or (count and self._finished):
                break
            if self._finished:
                return []
            if count:
                timeout = self._pending[0][0] + lag - self._clock()
                if timeout <= 0:
                    break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
        return [row for _, row in self._pending[:size]]


# --- the store of one shard --------------------------------------------------------------


class SampleStore:
    """One shard's connection to the store: `open` (migrate, register the run, number the
    attempt, read what is stored), `record` each finished sample, `writing(ask)` to run the
    asking while rows are written, `close`."""

    def __init__(
        self,
        settings: StoreSettings,
        identity: RunIdentity,
        writer: WriterSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        for form in settings.secrets():
            SECRETS.add(form)
        self.settings = settings
        self.identity = identity
        self.where = settings.display()
        self.attempt = 0
        self.shard = 0
        self._pricing: Pricing | None = None
        self._conn: Any = None  # asyncpg.Connection
        self._staged = False
        writer = writer or WriterSettings()
        self.outage = Outage(writer.unavailable_after_seconds, self.where, clock=clock, sleep=sleep)
        self.writer = SampleWriter(self.write_batch, self.outage, writer, self._drop, clock=clock)

    async def open(
        self,
        evaluation: Evaluation,
        shard: int,
        shards: int,
        work: list[tuple[Sample, list[Message]]],
        plan: TaskPlan | None = None,
    ) -> dict[int, StoredSample]:
        """What this shard's earlier attempts stored, by sample id (and this attempt numbered).
        Waits for an unreachable store up to the outage bound (StoreUnavailable). `plan` is
        the run's task (its result names and dataset; by default the spec's scorers')."""
        self.shard = shard
        self._pricing = evaluation.spec.model.pricing
        plan = plan if plan is not None else task_plan(evaluation.spec)
        stored = await self.outage.call(
            lambda: self._open(evaluation, shard, shards, plan), "opening the run", self._drop
        )
        bad = conflicts(stored, work)
        if bad:
            shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if len(bad) > 10 else "")
            raise PermanentError(
                STORE_CONFLICT,
                f"{len(bad)} samples stored for run {self.identity.run} shard {shard} are not "
                f"this run's (their input or prompt differ, or they are not in this shard): "
                f"{shown}; the dataset or the template changed under the same run",
            )
        self.attempt = await self.outage.call(
            lambda: self._next_attempt(len(stored)), "numbering the attempt", self._drop
        )
        log.info(
            "store opened",
            store=self.where,
            run=self.identity.run,
            attempt=self.attempt,
            resumed=len(stored),
        )
        return stored

    def record(self, result: SampleResult) -> None:
        if result.transient:
            return  # no answer yet: a resumed attempt asks it again
        self.writer.add(sample_row(result, self.identity, self.shard, self.attempt, self._pricing))

    async def writing(self, ask: Awaitable[None]) -> None:
        """Run `ask` while the writer writes. A writer that fails (StoreUnavailable) stops the
        asking; however the asking ends (done, failed, cancelled), what was recorded is
        written before this returns or raises."""
        writer = asyncio.create_task(self.writer.run())
        asking = asyncio.ensure_future(ask)
        try:
            # asyncio.wait leaves the tasks running when this is cancelled: the handler below
            # decides what becomes of them.
            await asyncio.wait({writer, asking}, return_when=asyncio.FIRST_COMPLETED)
            if not asking.done():
                # The writer ends early only by failing: the store is gone for longer than the
                # outage bound (or refused), and the rows it holds cannot be written.
                asking.cancel()
                await asyncio.gather(asking, return_exceptions=True)
                self._raise_unwritten(writer)
            self.writer.finish()
            await asyncio.wait({writer})
        except asyncio.CancelledError:
            # SIGTERM or Ctrl-C: stop asking, write what is recorded within the grace period.
            asking.cancel()
            await asyncio.gather(asking, return_exceptions=True)
            self.writer.finish()
            await asyncio.wait({writer}, timeout=TERMINATION_FLUSH_SECONDS)
            writer.cancel()
            if self.writer.pending:
                log.warning("rows not written at termination", rows=self.writer.pending)
            raise
        failed = writer.exception()
        if failed is not None and asking.exception() is not None:
            # The asking failed first: its error is the shard's; the store's is logged.
            log.error(
                "the last rows could not be written; a retry asks their samples again",
                rows=self.writer.pending,
                error=str(failed),
            )
        elif failed is not None:
            self._raise_unwritten(writer)
        asking.result()

    def _raise_unwritten(self, writer: asyncio.Task[None]) -> None:
        """The writer's error, saying what became of the rows it still held."""
        err = writer.exception()
        assert err is not None
        pending = self.writer.pending
        if isinstance(err, StoreUnavailable) and pending:
            log.warning("rows not written: the store is unavailable", rows=pending)
            raise StoreUnavailable(
                f"{err.message}; {pending} finished samples were not written: the shard's "
                "next attempt asks them again (answered from the run's response cache when "
                "there is one)"
            ) from None
        raise err

    async def close(self) -> None:
        await self._drop(None)

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                **self.settings.connect_kwargs(),
                timeout=CONNECT_TIMEOUT_SECONDS,
                command_timeout=COMMAND_TIMEOUT_SECONDS,
                server_settings={"application_name": "eval-runner"},
            )
            self._staged = False
        return self._conn

    async def _drop(self, err: BaseException | None) -> None:
        """Forget the connection (after a failure: a new one is made for the retry)."""
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        if err is None:
            try:
                await conn.close(timeout=2)
                return
            except STORE_ERRORS:
                pass
        conn.terminate()

    async def _open(
        self, evaluation: Evaluation, shard: int, shards: int, plan: TaskPlan
    ) -> dict[int, StoredSample]:
        conn = await self._connection()
        try:
            applied = await migrate(conn)
        except MigrationError as err:
            raise PermanentError(STORE_SCHEMA_INVALID, str(err)) from None
        if applied:
            log.info("store migrations applied", versions=applied)
        spec = evaluation.spec
        identity = self.identity
        digest = spec_hash(spec)
        await conn.execute(
            REGISTER_RUN,
            identity.evaluation_uid,
            identity.run,
            identity.namespace,
            identity.evaluation_name,
            identity.suite,
            spec.model.provider,
            spec.model.name,
            plan.dataset.source(),
            digest,
            shards,
            plan.names,
        )
        registered = await conn.fetchval(
            "SELECT spec_hash FROM runs WHERE evaluation_uid = $1 AND run = $2",
            identity.evaluation_uid,
            identity.run,
        )
        if registered != digest:
            raise PermanentError(
                STORE_CONFLICT,
                f"run {identity.run} of evaluation {identity.evaluation_uid} is already in the "
                f"store with another spec (spec hash {registered[:12]}, this one {digest[:12]})",
            )
        records = await conn.fetch(SELECT_STORED, identity.evaluation_uid, identity.run, shard)
        return {r["sample_id"]: StoredSample.from_record(r) for r in records}

    async def baseline(self, hashes: Iterable[str]) -> Baseline | None:
        """The baseline of the regression gate (identity.baseline), as the cell report finds it,
        with its scores of the records `hashes`; None without a gate; Baseline(run=None) when
        the cell has no such run yet."""
        identity = self.identity
        if not (identity.baseline and identity.cell and identity.suite):
            return None
        wanted = sorted(set(hashes))
        return await self.outage.call(
            lambda: self._baseline(wanted), "reading the baseline run", self._drop
        )

    async def _baseline(self, hashes: list[str]) -> Baseline:
        conn = await self._connection()
        identity = self.identity
        assert identity.suite is not None and identity.cell is not None
        started = await conn.fetchval(STARTED_AT, identity.evaluation_uid, identity.run)
        try:
            found = await find_baseline_run(
                conn,
                identity.baseline or "",
                namespace=identity.namespace,
                suite=identity.suite,
                cell=identity.cell,
                started_at=started,
                evaluation_uid=identity.evaluation_uid,
                run=identity.run,
            )
        except ValueError as err:
            raise PermanentError(STORE_CONFIG_INVALID, str(err)) from None
        if found is None:
            return Baseline(run=None, suite_run=None, scores={})
        scorers = tuple(found["scorers"] or ())
        rows = await conn.fetch(BASELINE_ROWS, found["evaluation_uid"], found["run"], hashes)
        seen: dict[str, int] = {}
        scored: dict[str, dict[str, float]] = {}
        for row in rows:
            seen[row["input_hash"]] = seen.get(row["input_hash"], 0) + 1
            if row["error_class"] is None:
                values = row["scores"]
                if isinstance(values, str):
                    values = json.loads(values)
                scored[row["input_hash"]] = {k: float(v) for k, v in values.items()}
        once = {key: value for key, value in scored.items() if seen[key] == 1}
        log.info("baseline found", baseline=found["run"], records=len(once))
        return Baseline(
            run=found["run"], suite_run=found["suite_run"], scores=once, scorers=scorers
        )

    async def _next_attempt(self, resumed: int) -> int:
        conn = await self._connection()
        identity = self.identity
        return int(
            await conn.fetchval(
                NEXT_ATTEMPT, identity.evaluation_uid, identity.run, self.shard, resumed
            )
        )

    async def write_batch(self, rows: list[Row]) -> int:
        """Write rows (in the order of COLUMNS) in one transaction; returns how many were new."""
        conn = await self._connection()
        if not self._staged:
            await conn.execute(CREATE_STAGING)
            self._staged = True
        started = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table(STAGING, records=rows, columns=COLUMNS)
            status = await conn.execute(INSERT_STAGED)
        metrics.STORE_WRITE_DURATION.observe(time.perf_counter() - started)
        inserted = int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <rows>"
        metrics.STORE_ROWS.inc(inserted)
        return inserted


async def latest_run(settings: StoreSettings, evaluation_uid: str, digest: str) -> str | None:
    """The newest run of an evaluation with this spec hash (what `eval-runner run --resume`
    continues), after applying the migrations; None when there is none. One attempt: a local
    run reports an unreachable store at once."""
    for form in settings.secrets():
        SECRETS.add(form)
    try:
        conn = await asyncpg.connect(**settings.connect_kwargs(), timeout=CONNECT_TIMEOUT_SECONDS)
    except STORE_ERRORS as err:
        raise StoreUnavailable(
            f"cannot connect to the store {settings.display()}: "
            + SECRETS.redact(f"{type(err).__name__}: {err}")
        ) from None
    try:
        try:
            await migrate(conn)
        except MigrationError as err:
            raise PermanentError(STORE_SCHEMA_INVALID, str(err)) from None
        return await conn.fetchval(LATEST_RUN, evaluation_uid, digest)
    finally:
        await conn.close()
