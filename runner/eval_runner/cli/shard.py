"""`eval-runner shard`: one shard of an Evaluation inside an Indexed Job's pod, its summary kept
current in the termination log, its progress served on /progress, and under a budget the
ledger of its earlier attempts read first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from eval_api import cel, environment
from eval_api.exitcodes import EXIT_OK, EXIT_PERMANENT, EXIT_STORE_AWAY
from eval_api.ledger import Ledger, Spent
from eval_api.shard import ShardSummary
from eval_api.store import StoreSettings, StoreSettingsError
from eval_api.tasks import LM_EVAL_TASK_KEY
from eval_api.v1alpha1.evaluation import Evaluation
from eval_runner.budget import Budget
from eval_runner.cache import CacheSettingsError, ResponseCache
from eval_runner.checkpoint import TerminationLog
from eval_runner.cli.common import (
    DEFAULT_TERMINATION_LOG,
    EXIT_CRASHED,
    ca_bundle,
    cache_ttl_seconds,
    configure_logging,
    judge_api_keys,
)
from eval_runner.cli.manifest import format_errors
from eval_runner.dataset import DEFAULT_DATASET_DIR
from eval_runner.errors import PermanentError, RetryableError
from eval_runner.pipeline import BudgetStopped, run_shard
from eval_runner.runtime import run as run_async
from eval_runner.secrets import SECRETS, read_key
from eval_runner.server import ProgressServer
from eval_runner.stop import StopSignal
from eval_runner.store import STORE_CONFIG_INVALID, RunIdentity, SampleStore, WriterSettings

# SIGTERM (eviction, activeDeadlineSeconds, a cancelled run): the shell's 128 + 15. Not a
# permanent failure: an evicted pod is retried.
EXIT_TERMINATED = 128 + signal.SIGTERM
DEFAULT_LEDGER_FILE = "/etc/eval/ledger/ledger.json"
# How often a running shard rewrites its termination message (and under a budget also before
# each request), and how long a retry waits for the ledger of its earlier attempts.
CHECKPOINT_SECONDS = 1.0
LEDGER_WAIT_SECONDS = 120
DEFAULT_PROGRESS_PORT = 9090

SHARD_EPILOG = """\
environment:
  JOB_COMPLETION_INDEX  shard index when --shard is not given (set by an Indexed Job)
  EVAL_API_KEY          the model API key (mounted from the referenced Secret)
  EVAL_JUDGE_API_KEY    the first llm_judge scorer's judge key (EVAL_JUDGE_API_KEY_1, ... next)
  EVAL_DATASET_DIR      where a configMapRef dataset's key is mounted (default /etc/eval/dataset)
  EVAL_PROGRESS_PORT    port of GET /progress, /healthz, /metrics (default 9090)
  EVAL_STOP_TOKEN       the run's token POST /stop must carry (execution.earlyStop; from
                        the run's control Secret): no /stop without it
  EVAL_CA_BUNDLE        PEM file of extra CA certificates for the model endpoint
  HTTP_PROXY, HTTPS_PROXY, NO_PROXY  proxies for the model endpoints and dataset URLs
  EVAL_STORE_URI, or EVAL_STORE_HOST/PORT/DBNAME/USER/PASSWORD  the per-sample store
      (PostgreSQL; EVAL_STORE_SSLMODE, EVAL_STORE_SSLROOTCERT), with EVAL_EVALUATION_UID and
      EVAL_RUN (whose rows), EVAL_EVALUATION_NAME, EVAL_EVALUATION_NAMESPACE, EVAL_SUITE:
      each sample is written as it finishes, and a retried pod resumes from them
  EVAL_STORE_BATCH_ROWS (2000), EVAL_STORE_UNAVAILABLE_AFTER_SECONDS (120)  the writer:
      rows per batch, and how long the store may fail before StoreUnavailable (exit 1: the
      Job retries the shard, which resumes from the store)
  EVAL_CACHE_URL, EVAL_CACHE_TTL_SECONDS  the response cache (Redis); never fatal. Unless
      spec.execution.cache.reuse is AcrossRuns, answers are reused only within the run
      (EVAL_EVALUATION_UID and EVAL_RUN): a retried shard, a prompt asked twice

exit codes: 0 done; 3 permanent error or BudgetExceeded (the Job fails the index); 4 the store
was unavailable for longer than its bound (the Job makes a new pod, no retry spent); 143
stopped by SIGTERM (eviction, deadline, cancel); 1 anything else (retried).
The final ShardSummary JSON is written to the termination log in every case.
"""

log = structlog.get_logger()


def add_parser(commands: Any) -> None:
    shard = commands.add_parser(
        "shard",
        help="run one shard inside a Job's pod",
        description="Run one shard of an Evaluation inside an Indexed Job's pod.",
        epilog=SHARD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    shard.add_argument("--config", type=Path, required=True, help="the Evaluation as JSON")
    shard.add_argument("--shard", type=int, help="shard index (default $JOB_COMPLETION_INDEX)")
    shard.add_argument("--shards", type=int, help="shard count (default spec.execution.shards)")
    shard.add_argument("--termination-log", type=Path, default=Path(DEFAULT_TERMINATION_LOG))
    shard.add_argument("--port", type=int, help="progress port (default $EVAL_PROGRESS_PORT)")
    shard.set_defaults(command=cmd_shard)


def cmd_shard(args: argparse.Namespace) -> int:
    # Before anything can print them: the store's and the cache's passwords.
    for name in (environment.STORE_URI, environment.CACHE_URL):
        SECRETS.add_url(os.environ.get(name, ""))
    if os.environ.get(environment.STORE_PASSWORD):
        SECRETS.add(os.environ[environment.STORE_PASSWORD])
    configure_logging(sys.stdout, json_logs=True)
    summary = ShardSummary()
    termination = TerminationLog(args.termination_log)
    store: SampleStore | None = None
    cache: ResponseCache | None = None
    try:
        evaluation = _read_config(args.config)
        task_file = _read_task_file(args.config, evaluation)
        shard = args.shard if args.shard is not None else _completion_index()
        shards = args.shards or evaluation.spec.execution.shards
        summary.shard, summary.shards = shard, shards
        structlog.contextvars.bind_contextvars(
            evaluation=evaluation.metadata.name,
            namespace=evaluation.metadata.namespace,
            shard=shard,
        )
        port = args.port or _progress_port()
        api_key = read_key(environment.API_KEY, os.environ.get(environment.API_KEY))
        judge_keys = judge_api_keys(evaluation)
        store = _pod_store(evaluation)
        cache = _pod_cache(evaluation, summary)
    except PermanentError as err:
        summary.state, summary.reason, summary.message = "error", err.reason, err.message
        log.error("invalid shard configuration", reason=err.reason, message=err.message)
        code = EXIT_PERMANENT
    else:
        code = run_async(
            _serve_shard(
                evaluation,
                task_file,
                shard,
                shards,
                summary,
                port,
                api_key,
                judge_keys,
                termination,
                store=store,
                cache=cache,
            )
        )
    message = termination.write(summary)
    termination.close()
    log.info("shard summary", summary=json.loads(message))
    return code


def _pod_store(evaluation: Evaluation) -> SampleStore | None:
    """The store of the env contract, or None (a standalone Evaluation)."""
    try:
        settings = StoreSettings.from_env(os.environ)
        if settings is not None:
            settings.connect_kwargs()  # a CA bundle that cannot be read fails now
    except StoreSettingsError as err:
        raise PermanentError(STORE_CONFIG_INVALID, str(err)) from None
    if settings is None:
        return None
    identity = RunIdentity.from_env(os.environ, evaluation)
    return SampleStore(settings, identity, WriterSettings.from_env(os.environ))


def _pod_cache(evaluation: Evaluation, summary: ShardSummary) -> ResponseCache | None:
    """The cache of the env contract, or None. A cache that is misconfigured is left out
    (and said so in the summary), as one that is down would be: it never stops a run."""
    url = os.environ.get(environment.CACHE_URL)
    if not url:
        return None
    # The run its answers belong to: every shard and every retry of this Job's run (the
    # Evaluation's uid and its run, the Job's name: a re-run is a new Job).
    uid, run = os.environ.get(environment.EVALUATION_UID), os.environ.get(environment.RUN)
    try:
        if not uid or not run:
            raise CacheSettingsError(
                f"{environment.EVALUATION_UID} and {environment.RUN} are not both set: the "
                "run its answers belong to is unknown"
            )
        return ResponseCache.from_url(
            url,
            run=f"{uid}/{run}",
            ttl_seconds=cache_ttl_seconds(),
            max_connections=evaluation.spec.model.max_concurrency,
            ca_file=os.environ.get(environment.CACHE_CA_FILE) or None,
        )
    except CacheSettingsError as err:
        summary.cache_unavailable = f"the response cache is not used: {err}"
        log.warning("the response cache is not used", error=str(err))
        return None


def _read_config(path: Path) -> Evaluation:
    """The run's frozen spec, from the ConfigMap the operator wrote: an object the apiserver
    admitted, so its CEL rules are not evaluated again."""
    try:
        return Evaluation.model_validate_json(path.read_bytes(), context=cel.ADMITTED)
    except OSError as err:
        raise PermanentError("ConfigInvalid", f"cannot read {path}: {err.strerror}") from err
    except ValidationError as err:
        raise PermanentError("ConfigInvalid", f"{path}:\n{format_errors(err)}") from err


def _read_task_file(config: Path, evaluation: Evaluation) -> str | None:
    """task.lmEval's task file, frozen beside the spec in the run's ConfigMap (the operator
    read and checked the user's ConfigMap key when it started the run)."""
    if evaluation.spec.task.lm_eval is None:
        return None
    path = config.with_name(LM_EVAL_TASK_KEY)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise PermanentError("ConfigInvalid", f"cannot read {path}: {err.strerror}") from err


def _completion_index() -> int:
    value = os.environ.get("JOB_COMPLETION_INDEX", "0")
    try:
        return int(value)
    except ValueError as err:
        raise PermanentError("InvalidShard", f"JOB_COMPLETION_INDEX={value!r}") from err


def _progress_port() -> int:
    value = os.environ.get(environment.PROGRESS_PORT, str(DEFAULT_PROGRESS_PORT))
    try:
        return int(value)
    except ValueError as err:
        raise PermanentError(
            "ConfigInvalid", f"{environment.PROGRESS_PORT}={value!r} is not a port"
        ) from err


async def _serve_shard(
    evaluation: Evaluation,
    task_file: str | None,
    shard: int,
    shards: int,
    summary: ShardSummary,
    port: int,
    api_key: str | None,
    judge_keys: list[str | None],
    termination: TerminationLog,
    *,
    store: SampleStore | None = None,
    cache: ResponseCache | None = None,
) -> int:
    dataset_dir = Path(os.environ.get(environment.DATASET_DIR, str(DEFAULT_DATASET_DIR)))
    budget = Budget.for_shard(evaluation.spec.budget, shard, shards)
    if budget.limited:
        try:
            budget.after(await earlier_attempts(shard))
        except PermanentError as err:
            summary.state, summary.reason, summary.message = "error", err.reason, err.message
            log.error("no ledger of the earlier attempts", reason=err.reason)
            return EXIT_CRASHED  # retried: the ledger may be there for the next attempt
        budget.on_sent = lambda: termination.write(summary, budget.reserved)
    stop = StopSignal()
    stop_token = os.environ.get(environment.STOP_TOKEN) or None
    if stop_token:
        SECRETS.add(stop_token)
    run = asyncio.create_task(
        run_shard(
            evaluation,
            shard,
            shards,
            api_key,
            judge_api_keys=judge_keys,
            dataset_dir=dataset_dir,
            ca_bundle=ca_bundle(),
            summary=summary,
            budget=budget,
            store=store,
            cache=cache,
            task_file=task_file,
            stop=stop,
        )
    )
    checkpoints = asyncio.create_task(
        _checkpoint_every(CHECKPOINT_SECONDS, termination, summary, budget)
    )
    # SIGTERM (eviction, activeDeadlineSeconds, a cancelled run) stops the requests in flight
    # at once, so the summary reaches the termination log well within the grace period.
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, run.cancel)
    try:
        async with ProgressServer(summary, port=port, stop=stop, stop_token=stop_token):
            try:
                await run
            except asyncio.CancelledError:
                done = summary.completed + summary.failed
                summary.state, summary.reason = "error", "Terminated"
                summary.message = (
                    f"stopped by SIGTERM (eviction, activeDeadlineSeconds or cancel) after "
                    f"{done} of {summary.total} samples; the results so far are kept"
                )
                log.warning("shard terminated", completed=summary.completed, failed=summary.failed)
                return EXIT_TERMINATED
            except BudgetStopped as err:
                log.warning("shard stopped at its budget", reason=err.reason, message=err.message)
                return EXIT_PERMANENT
            except PermanentError as err:
                log.error("shard failed permanently", reason=err.reason, message=err.message)
                return EXIT_PERMANENT
            except RetryableError as err:
                log.error(
                    "shard stopped; the Job retries it", reason=err.reason, message=err.message
                )
                return EXIT_STORE_AWAY
            except Exception:
                log.exception("shard crashed")
                return EXIT_CRASHED
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        checkpoints.cancel()
    return EXIT_OK


async def _checkpoint_every(
    seconds: float, termination: TerminationLog, summary: ShardSummary, budget: Budget
) -> None:
    """The summary so far in the termination message, every `seconds`: what a killed pod
    used is counted, if no more than `seconds` late (under a budget, every request is)."""
    while True:
        await asyncio.sleep(seconds)
        termination.write(summary, budget.reserved)


async def earlier_attempts(shard: int, clock: Any = time.monotonic) -> Spent:
    """What this shard's earlier attempts spent, from the run's ledger.

    The Job controller counts the index's earlier failures in the pod's annotations (the
    downward API passes them in); the operator writes what each ended attempt spent into
    the ledger ConfigMap, which the kubelet refreshes in the mounted file. A retry waits,
    boundedly, until the ledger knows all its earlier attempts: it never spends a share
    that was already spent.
    """
    before = sum(
        _count(os.environ.get(name))
        for name in (environment.INDEX_FAILURES, environment.INDEX_IGNORED_FAILURES)
    )
    if before == 0:
        return Spent()
    path = Path(os.environ.get(environment.LEDGER_FILE, DEFAULT_LEDGER_FILE))
    deadline = clock() + float(os.environ.get("EVAL_LEDGER_WAIT_SECONDS", LEDGER_WAIT_SECONDS))
    while True:
        spent = _read_ledger(path, shard)
        if spent.attempts >= before:
            log.info(
                "earlier attempts",
                attempts=spent.attempts,
                cost=spent.cost_usd,
                requests=spent.requests,
            )
            return spent
        if clock() > deadline:
            raise PermanentError(
                "BudgetLedgerMissing",
                f"{before} earlier attempt(s) of shard {shard}, but the run's ledger ({path}) "
                f"accounts for {spent.attempts}: what they spent is unknown, so nothing is sent",
            )
        await asyncio.sleep(1.0)


def _read_ledger(path: Path, shard: int) -> Spent:
    """The shard's entry of the mounted ledger (a small local file); empty until it exists."""
    try:
        return Ledger.model_validate_json(path.read_bytes()).of(shard)
    except (OSError, ValidationError):
        return Spent()


def _count(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0
