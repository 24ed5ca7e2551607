"""The eval-runner command: `run` a manifest locally, or run one `shard` inside a Job's pod."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn, TextIO

import structlog
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from eval_api import cel, environment
from eval_api.aggregate import Aggregate, aggregate
from eval_api.checks import spec_problems
from eval_api.environment import judge_key_env
from eval_api.exitcodes import EXIT_OK, EXIT_PERMANENT, EXIT_STORE_AWAY
from eval_api.ledger import Ledger, Spent
from eval_api.matrix import cell_problems, cells_of
from eval_api.shard import ShardSummary
from eval_api.store import StoreSettings, StoreSettingsError
from eval_api.v1alpha1.evalsuite import EvalSuite
from eval_api.v1alpha1.evaluation import Evaluation
from eval_api.verdict import Verdict, judge_thresholds
from eval_runner.budget import Budget
from eval_runner.cache import (
    DEFAULT_TTL_SECONDS,
    CacheSettingsError,
    ResponseCache,
    redacted_url,
)
from eval_runner.checkpoint import TerminationLog
from eval_runner.dashboard import cli as dashboard_cli
from eval_runner.dataset import DEFAULT_DATASET_DIR
from eval_runner.errors import PermanentError, RetryableError
from eval_runner.pipeline import BudgetStopped, run_shard
from eval_runner.results import SampleResult
from eval_runner.runtime import run as run_async
from eval_runner.secrets import SECRETS, read_key
from eval_runner.server import ProgressServer
from eval_runner.stackcheck import cmd_migrate
from eval_runner.store import (
    STORE_CONFIG_INVALID,
    RunIdentity,
    SampleStore,
    WriterSettings,
    latest_run,
    local_evaluation_uid,
    new_local_run,
    spec_hash,
)

EXIT_THRESHOLDS_FAILED = 1
EXIT_CRASHED = 1  # unexpected error in a pod: the Job retries the index
EXIT_INVALID = 2
# SIGTERM (eviction, activeDeadlineSeconds, a cancelled run): the shell's 128 + 15. Not a
# permanent failure: an evicted pod is retried.
EXIT_TERMINATED = 128 + signal.SIGTERM
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
DEFAULT_LEDGER_FILE = "/etc/eval/ledger/ledger.json"
# How often a running shard rewrites its termination message (and under a budget also before
# each request), and how long a retry waits for the ledger of its earlier attempts.
CHECKPOINT_SECONDS = 1.0
LEDGER_WAIT_SECONDS = 120
DEFAULT_PROGRESS_PORT = 9090

RUN_EPILOG = """\
exit codes:
  0  the run finished and every threshold holds (or there are none)
  1  the run finished and a threshold failed: CI can gate on it
  2  invalid manifest or arguments
  3  the run cannot succeed: dataset not found, checksum mismatch, template error, a key the
     endpoint refused (AuthenticationFailed), no such model (ModelNotFound), an endpoint that
     cannot be reached (EndpointUnreachable), more errored samples than
     spec.execution.maxErroredFraction or none scored (TooManyErrors), or it stopped at
     spec.budget (BudgetExceeded); the results so far are printed

The API key is read from --api-key-env, else EVAL_API_KEY, else OPENAI_API_KEY or
ANTHROPIC_API_KEY by provider; it is never printed. The llm_judge scorers' judges read
EVAL_JUDGE_API_KEY (the first judge), EVAL_JUDGE_API_KEY_1, ... EVAL_CA_BUNDLE may name a
PEM file of extra CA certificates to trust. HTTP_PROXY, HTTPS_PROXY and NO_PROXY apply.

store and cache (the same code a Job's pods run):
  --store postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=MODE&sslrootcert=PATH]
      writes every finished sample to PostgreSQL (the schema is applied first). The password
      may come from EVAL_STORE_PASSWORD instead (it then stays out of the process list);
      it is never printed. A local run is the evaluation uid uuid5(namespace/name) with run
      id local-<spec hash[:12]>-<random>: each run without --resume is a new run.
  --resume  continue the latest run in the store of this manifest with the same spec (the
      same flags): its stored samples are not asked again, and the results cover them all.
      Without such a run, a new one starts. Safe after Ctrl-C (the last rows are written)
      and after kill -9 (what was answered in its last second is asked again). --samples
      and --output jsonl list the samples asked by this invocation only.
  --cache redis://[:PASSWORD@]HOST[:PORT][/DB]  answers identical requests from Redis
      (EVAL_CACHE_TTL_SECONDS, default 7 days); a cache that fails is left out, and said so.
      Answers are reused within the run only (a --resume of it, a prompt asked twice), unless
      the manifest's spec.execution.cache.reuse is AcrossRuns.
  EVAL_STORE_BATCH_ROWS (2000), EVAL_STORE_UNAVAILABLE_AFTER_SECONDS (120) tune the writer.
"""

SHARD_EPILOG = """\
environment:
  JOB_COMPLETION_INDEX  shard index when --shard is not given (set by an Indexed Job)
  EVAL_API_KEY          the model API key (mounted from the referenced Secret)
  EVAL_JUDGE_API_KEY    the first llm_judge scorer's judge key (EVAL_JUDGE_API_KEY_1, ... next)
  EVAL_DATASET_DIR      where a configMapRef dataset's key is mounted (default /etc/eval/dataset)
  EVAL_PROGRESS_PORT    port of GET /progress, /healthz, /metrics (default 9090)
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


def main(argv: list[str] | None = None) -> int:
    # A password in a --store or --cache URL is redacted from everything, argparse's own
    # errors included (they repeat the arguments they could not parse).
    for arg in sys.argv[1:] if argv is None else argv:
        SECRETS.add_url(arg.partition("=")[2] if arg.startswith("--") else arg)
    args = _parser().parse_args(argv)
    try:
        return int(args.command(args))
    except KeyboardInterrupt:
        return 130
    except Exception:
        # Never Python's own report: it would print whatever an exception's text holds.
        report = "error: the runner crashed\n" + traceback.format_exc()
        print(SECRETS.redact(report), file=sys.stderr)
        return EXIT_CRASHED


class _Parser(argparse.ArgumentParser):
    """argparse, its error messages redacted."""

    def error(self, message: str) -> NoReturn:
        super().error(SECRETS.redact(message))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="eval-runner", description="Run model evaluations (evals.io/v1alpha1 Evaluation)."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run an Evaluation (or an EvalSuite's matrix) locally and print its results",
        description=(
            "Run an Evaluation manifest locally, as one shard, and print its results; or an "
            "EvalSuite manifest's matrix, cell by cell, and print its leaderboard (with --store "
            "each cell is also compared with its baseline, spec.baseline, in that store)."
        ),
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "manifest",
        type=Path,
        metavar="FILE.yaml",
        help="an Evaluation manifest, or an EvalSuite's (its whole matrix runs, cell by cell)",
    )
    run.add_argument("--base-url", help="override spec.model.baseURL")
    run.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the key")
    run.add_argument(
        "--dataset-file", type=Path, metavar="PATH", help="the file of a configMapRef dataset"
    )
    run.add_argument("--limit", type=int, metavar="N", help="override spec.dataset.limit")
    run.add_argument(
        "--output",
        choices=["table", "json", "jsonl"],
        default="table",
        help="table or json: the results on stdout; jsonl: one line per sample on stdout "
        "(the results table goes to stderr)",
    )
    run.add_argument(
        "--samples",
        type=Path,
        metavar="FILE",
        help="write one JSON line per sample to FILE: id, prompt, response, scores, tokens, "
        "latency, error class",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    run.add_argument(
        "--store",
        metavar="URI",
        help="write every sample to this PostgreSQL store (postgresql://...; see below)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue this manifest's latest run in the store (needs --store)",
    )
    run.add_argument("--cache", metavar="URL", help="Redis response cache (redis://...)")
    run.set_defaults(command=cmd_run)

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

    migrate = commands.add_parser(
        "migrate",
        help="apply the store's schema migrations and check the cache (an EvalSuite's Job)",
        description=(
            "Apply the shipped schema migrations to the store of the environment "
            f"({environment.STORE_URI}, or {environment.STORE_HOST} and its parts) under an "
            f"advisory lock, ping the cache ({environment.CACHE_URL}), and write the report to "
            "the termination log. Exit 0 done, 3 when retrying cannot help, 1 to be retried."
        ),
    )
    migrate.add_argument("--termination-log", type=Path, default=Path(DEFAULT_TERMINATION_LOG))
    migrate.set_defaults(command=lambda args: cmd_migrate(args.termination_log))

    report = commands.add_parser(
        "cell-report",
        help="report EvalSuite matrix cells' runs from the store (an EvalSuite's Job)",
        description=(
            "For each cell asked (--cell-run, once per cell, on one store connection): record "
            "its succeeded run in the store, measure its latency percentiles, and compare it "
            "sample by sample with its baseline run; write the reports (what the suite's "
            "status keeps of each) to the termination log. Exit 0 done, 3 when retrying "
            "cannot help, 1 to be retried."
        ),
    )
    for flag in ("--namespace", "--suite", "--suite-run"):
        report.add_argument(flag, required=True)
    report.add_argument(
        "--cell-run",
        nargs=3,
        action="append",
        required=True,
        metavar=("CELL", "EVALUATION_UID", "RUN"),
        help="a cell (model/task), its Evaluation's uid and its run; once per cell",
    )
    report.add_argument(
        "--baseline", default="none", help="none, previous, or suite-run:<id> (default none)"
    )
    report.add_argument("--max-drop", default="0", help='largest drop tolerated (default "0")')
    report.add_argument("--alpha", default="0.05", help='significance level (default "0.05")')
    report.add_argument("--termination-log", type=Path, default=Path(DEFAULT_TERMINATION_LOG))
    report.set_defaults(command=_cell_report)

    pair = commands.add_parser(
        "compare-runs",
        help="compare two stored runs sample by sample (kubectl evals compare runs it as a Job)",
        description=(
            "The paired comparison of two runs in the store (candidate minus baseline), per "
            "scorer: a one-sided test of 'worse by more than maxDrop' (McNemar's exact test, and "
            "Tango's score test at a margin, for 0/1 scores; a paired t-test of the mean "
            "otherwise), a seeded paired bootstrap interval and the minimum detectable effect; "
            "written to the termination log."
        ),
    )
    for flag in ("--baseline-uid", "--baseline-run", "--candidate-uid", "--candidate-run"):
        pair.add_argument(flag, required=True)
    pair.add_argument("--max-drop", default="0", help='largest drop tolerated (default "0")')
    pair.add_argument("--alpha", default="0.05", help='significance level (default "0.05")')
    pair.add_argument("--termination-log", type=Path, default=Path(DEFAULT_TERMINATION_LOG))
    pair.set_defaults(command=_compare_runs)

    dashboard_cli.add_parser(commands)
    return parser


# The comparisons' statistics (scipy, numpy: ~75 MB and a second to import) are loaded by the
# commands that compare, not by every process of the image (a shard, the dashboard).
def _cell_report(args: Any) -> int:
    from eval_runner.cellreport import cmd_cell_report

    return cmd_cell_report(args)


def _compare_runs(args: Any) -> int:
    from eval_runner.cellreport import cmd_compare_runs

    return cmd_compare_runs(args)


def _redact_event(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """The last processor before rendering: no key leaves in any value, however nested."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return SECRETS.redact(value)
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [clean(item) for item in value]
        return value

    return {key: clean(value) for key, value in event.items()}


def configure_logging(stream: TextIO, *, json_logs: bool, level: int = logging.INFO) -> None:
    # Tracebacks never show local variables: the key is a local of the frames that call the
    # model. They are rendered to plain values first, so the redaction sees their text.
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    exceptions: Any = (
        structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        if json_logs
        else structlog.processors.format_exc_info
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            exceptions,
            _redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )


def judge_api_keys(evaluation: Evaluation) -> list[str | None]:
    """The judges' keys, in the order of the llm_judge scorers (as the Job builder mounts them)."""
    judges = sum(1 for s in evaluation.spec.task.scorers if s.judge is not None)
    names = [judge_key_env(index) for index in range(judges)]
    return [read_key(name, os.environ.get(name)) for name in names]


def _ca_bundle() -> Path | None:
    value = os.environ.get(environment.CA_BUNDLE)
    return Path(value) if value else None


# --- run ------------------------------------------------------------------------------------


class InvalidInput(Exception):
    """The manifest or the arguments are wrong: exit 2 with this message."""


class SampleLog:
    """What a local run keeps of its samples: the first failure of each error class (for the
    error table), and one JSON line per sample for --output jsonl / --samples."""

    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self.examples: dict[str, SampleResult] = {}

    def __call__(self, result: SampleResult) -> None:
        if result.error_class is not None:
            self.examples.setdefault(result.error_class, result)
        if self.out is not None:
            self.out.write(json.dumps(sample_line(result), ensure_ascii=False) + "\n")
            self.out.flush()


def sample_line(result: SampleResult) -> dict[str, Any]:
    completion = result.completion
    return {
        "id": result.sample.id,
        "input": result.sample.input,
        "target": result.sample.target,
        "prompt": result.messages,
        "response": None if completion is None else completion.text,
        "scores": result.scores,
        "inputTokens": None if completion is None else completion.input_tokens,
        "outputTokens": None if completion is None else completion.output_tokens,
        "truncated": None if completion is None else completion.truncated,
        "latencySeconds": None if completion is None else round(completion.latency, 6),
        "errorClass": result.error_class,
        "error": result.error,
    }


def cmd_run(args: argparse.Namespace) -> int:
    # Logs go to stderr with the progress bar; stdout carries only the results.
    configure_logging(sys.stderr, json_logs=False, level=logging.WARNING)
    try:
        suite = load_suite_manifest(args.manifest)
    except InvalidInput as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    if suite is not None:
        return cmd_run_suite(args, suite)
    try:
        evaluation = load_manifest(args.manifest)
        spec = evaluation.spec
        if args.base_url:
            if not args.base_url.startswith(("http://", "https://")):
                raise InvalidInput(f"--base-url {args.base_url!r} must start with http(s)://")
            spec.model.base_url = args.base_url
        if args.limit is not None:
            if args.limit < 1:
                raise InvalidInput("--limit must be at least 1")
            spec.dataset.limit = args.limit
        if (spec.dataset.config_map_ref is None) != (args.dataset_file is None):
            raise InvalidInput(
                "a dataset.configMapRef needs its file passed with --dataset-file PATH, "
                "and --dataset-file is only for a configMapRef dataset"
            )
        local_store = _local_store(args)
        try:
            cache_ttl = _cache_ttl_seconds()
            if args.cache is not None:
                redacted_url(args.cache)
        except CacheSettingsError as err:
            raise InvalidInput(f"--cache: {err}") from None
    except InvalidInput as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID

    try:
        api_key = _local_api_key(args.api_key_env, spec.model.provider)
        judge_keys = judge_api_keys(evaluation)
    except PermanentError as err:
        print(f"error: {err.reason}: {err.message}", file=sys.stderr)
        return EXIT_PERMANENT
    _warn_missing_keys(evaluation, api_key, judge_keys)
    if args.samples is not None:
        try:
            samples_out: TextIO | None = args.samples.open("w")
        except OSError as err:
            print(f"error: cannot write {args.samples}: {err.strerror}", file=sys.stderr)
            return EXIT_INVALID
    else:
        samples_out = sys.stdout if args.output == "jsonl" else None
    sample_log = SampleLog(samples_out)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=args.no_progress,
    )
    name = evaluation.metadata.name
    bar = progress.add_task(name, total=None)

    def show(summary: ShardSummary) -> None:
        description = f"{name} ({summary.failed} errored)" if summary.failed else name
        progress.update(
            bar,
            total=summary.total,
            completed=summary.completed + summary.failed,
            description=description,
        )

    summary = ShardSummary()
    stopped: PermanentError | RetryableError | None = None

    async def run() -> None:
        store = await local_store.open(evaluation) if local_store is not None else None
        cache = None
        if args.cache is not None:
            cache = ResponseCache.from_url(
                args.cache,
                run=_local_cache_run(evaluation, store),
                ttl_seconds=cache_ttl,
                max_connections=spec.model.max_concurrency,
            )
        await run_shard(
            evaluation,
            0,
            1,
            api_key,
            judge_api_keys=judge_keys,
            dataset_file=args.dataset_file,
            ca_bundle=_ca_bundle(),
            summary=summary,
            on_progress=show,
            on_sample=sample_log,
            store=store,
            cache=cache,
        )

    try:
        with progress:
            run_async(run())
    except (PermanentError, RetryableError) as err:
        if not summary.total:
            print(f"error: {err.reason}: {err.message}", file=sys.stderr)
            return EXIT_PERMANENT
        stopped = err  # the run had started: the results so far are printed below
    finally:
        if args.samples is not None and samples_out is not None:
            samples_out.close()

    scorer_names = [s.effective_name for s in spec.task.scorers]
    # A resumed run's usage: this invocation's plus what its stored samples used when asked.
    whole = summary
    if summary.resumed is not None:
        usage = summary.usage.merged(summary.resumed.usage)
        whole = summary.model_copy(update={"usage": usage})
    result = aggregate([whole], scorer_names, total=summary.total)
    too_many = result.too_many_errors(spec.execution.max_errored_fraction)
    verdict = judge_thresholds(spec.thresholds, {r.name: r.value for r in result.results})
    passed = verdict.passed if verdict.checks and too_many is None else None
    if too_many is not None and verdict.checks:
        passed = False
    if summary.cache_unavailable is not None:
        print(f"warning: {summary.cache_unavailable}", file=sys.stderr)
    if args.output == "json":
        report = _json_report(evaluation, result, verdict, passed)
        if local_store is not None and local_store.store is not None:
            report["store"] = local_store.report(summary)
        if summary.cache_unavailable is not None:
            report["cacheUnavailable"] = summary.cache_unavailable
        if stopped is not None:
            report["stopped"] = {"reason": stopped.reason, "message": stopped.message}
        elif too_many is not None:
            report["stopped"] = {"reason": "TooManyErrors", "message": too_many}
        print(json.dumps(report, indent=2))
    else:
        console = Console(highlight=False, stderr=args.output == "jsonl")
        _print_table(console, evaluation, result, verdict, sample_log)
        if local_store is not None and local_store.store is not None:
            store_report = local_store.report(summary)
            console.print(
                Text(
                    f"store: run {store_report['run']} attempt {store_report['attempt']} in "
                    f"{store_report['store']}, {store_report['resumed']} samples resumed"
                )
            )
    note = result.truncated_note()
    if note is not None:
        print(f"warning: {note}", file=sys.stderr)
    if stopped is not None:
        print(f"error: {stopped.reason}: {stopped.message}", file=sys.stderr)
        return EXIT_PERMANENT
    if too_many is not None:
        print(f"error: TooManyErrors: {too_many}", file=sys.stderr)
        return EXIT_PERMANENT
    return EXIT_THRESHOLDS_FAILED if passed is False else EXIT_OK


class LocalStore:
    """The store of a local run, and which run its rows belong to.

    A local run has no metadata.uid: its evaluation uid is uuid5 of its namespace/name, the
    same every time. Its run id is local-<spec hash[:12]>-<random>: a run without --resume is
    a new run; --resume continues the newest run of the same evaluation with the same spec
    hash (the same manifest and flags), or starts one when there is none."""

    def __init__(self, settings: StoreSettings, resume: bool) -> None:
        self.settings = settings
        self.resume = resume
        self.store: SampleStore | None = None

    async def open(self, evaluation: Evaluation) -> SampleStore:
        metadata = evaluation.metadata
        uid = local_evaluation_uid(metadata.namespace, metadata.name)
        digest = spec_hash(evaluation.spec)
        # Fails at once when the store cannot be reached (and applies the migrations).
        latest = await latest_run(self.settings, uid, digest)
        run = latest if self.resume and latest is not None else new_local_run(digest)
        if self.resume:
            said = f"resuming run {run}" if latest else f"no run to resume: starting run {run}"
            print(f"{said} in the store {self.settings.display()}", file=sys.stderr)
        identity = RunIdentity(uid, run, metadata.namespace or "default", metadata.name)
        self.store = SampleStore(self.settings, identity, WriterSettings.from_env(os.environ))
        return self.store

    def report(self, summary: ShardSummary) -> dict[str, Any]:
        assert self.store is not None
        return {
            "store": self.settings.display(),
            "evaluationUID": self.store.identity.evaluation_uid,
            "run": self.store.identity.run,
            "attempt": self.store.attempt,
            "resumed": summary.resumed.samples if summary.resumed else 0,
        }


def _local_store(args: argparse.Namespace) -> LocalStore | None:
    if args.store is None:
        if args.resume:
            raise InvalidInput("--resume needs --store: the run to resume is in the store")
        return None
    try:
        settings = StoreSettings.from_uri(
            args.store, password=os.environ.get(environment.STORE_PASSWORD), source="--store"
        )
        settings.connect_kwargs()  # a CA bundle that cannot be read fails now
    except StoreSettingsError as err:
        raise InvalidInput(str(err)) from None
    return LocalStore(settings, args.resume)


def _local_cache_run(evaluation: Evaluation, store: SampleStore | None) -> str:
    """The run a local invocation's cached answers belong to: the store's run (which --resume
    continues), else this invocation alone."""
    if store is not None:
        return f"{store.identity.evaluation_uid}/{store.identity.run}"
    meta = evaluation.metadata
    uid = local_evaluation_uid(meta.namespace, meta.name)
    return f"{uid}/{new_local_run(spec_hash(evaluation.spec))}"


def _cache_ttl_seconds() -> int:
    value = os.environ.get(environment.CACHE_TTL_SECONDS) or str(DEFAULT_TTL_SECONDS)
    if not value.isdigit() or int(value) < 1:
        raise CacheSettingsError(
            f"{environment.CACHE_TTL_SECONDS}={value!r} is not a whole number of seconds"
        )
    return int(value)


class _StrictLoader(yaml.SafeLoader):
    """YAML with duplicate keys rejected: PyYAML keeps the last one silently, Kubernetes'
    decoder rejects the manifest; either way the first value would be lost."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _documents(path: Path) -> list[Any]:
    try:
        return [d for d in yaml.load_all(path.read_text(), _StrictLoader) if d is not None]
    except OSError as err:
        raise InvalidInput(f"cannot read {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise InvalidInput(f"{path} is not valid YAML: {err}") from err


def load_suite_manifest(path: Path) -> EvalSuite | None:
    """The EvalSuite with a matrix in a YAML file, or None when it holds none."""
    suites = [d for d in _documents(path) if isinstance(d, dict) and d.get("kind") == "EvalSuite"]
    if not suites:
        return None
    if len(suites) > 1:
        raise InvalidInput(f"{path} holds {len(suites)} EvalSuites; run one at a time")
    try:
        suite = EvalSuite.model_validate(suites[0])
    except ValidationError as err:
        raise InvalidInput(f"{path} is not a valid EvalSuite:\n{format_errors(err)}") from err
    if not suite.spec.has_matrix:
        raise InvalidInput(f"{path}: the EvalSuite has no matrix (spec.models and spec.tasks)")
    problems = cell_problems(cells_of(suite.metadata.name, suite.spec))
    if problems:
        raise InvalidInput(f"{path} is not a valid EvalSuite:\n" + "\n".join(problems))
    return suite


def cmd_run_suite(args: argparse.Namespace, suite: EvalSuite) -> int:
    """Every cell of the suite's matrix in turn, then the leaderboard (eval_runner.localsuite)."""
    unsupported = [
        flag
        for flag, given in (
            ("--dataset-file", args.dataset_file is not None),
            ("--samples", args.samples is not None),
            ("--resume", args.resume),
            ("--cache", args.cache is not None),
            ("--output", args.output != "table"),
        )
        if given
    ]
    if unsupported:
        print(f"error: {', '.join(unsupported)}: not for an EvalSuite", file=sys.stderr)
        return EXIT_INVALID
    try:
        for entry in suite.spec.models or []:
            if args.base_url:
                if not args.base_url.startswith(("http://", "https://")):
                    raise InvalidInput(f"--base-url {args.base_url!r} must start with http(s)://")
                entry.model.base_url = args.base_url
        for task in suite.spec.tasks or []:
            if args.limit is not None:
                if args.limit < 1:
                    raise InvalidInput("--limit must be at least 1")
                task.dataset.limit = args.limit
        store = _local_store(args)
    except InvalidInput as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    providers = {m.model.provider for m in suite.spec.models or []}
    if len(providers) > 1 and args.api_key_env:
        print("warning: --api-key-env applies to every model", file=sys.stderr)
    keys = {p: _local_api_key(args.api_key_env, p) for p in providers}

    async def run() -> int:
        # One key per provider: the models' own Secrets are the cluster's business.
        # Wide enough for the leaderboard when stdout is a file or a pipe (CI logs).
        console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
        from eval_runner import localsuite

        return await localsuite.run_suite(
            suite,
            keys,
            judge_api_keys,
            store.settings if store is not None else None,
            console,
        )

    try:
        return run_async(run())
    except (PermanentError, RetryableError) as err:
        print(f"error: {err.reason}: {err.message}", file=sys.stderr)
        return EXIT_PERMANENT


def load_manifest(path: Path) -> Evaluation:
    """The Evaluation in a YAML file (which may hold other documents too, e.g. its Secret)."""
    try:
        documents = [d for d in yaml.load_all(path.read_text(), _StrictLoader) if d is not None]
    except OSError as err:
        raise InvalidInput(f"cannot read {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise InvalidInput(f"{path} is not valid YAML: {err}") from err
    evaluations = [d for d in documents if isinstance(d, dict) and d.get("kind") == "Evaluation"]
    if len(evaluations) > 1:
        raise InvalidInput(f"{path} holds {len(evaluations)} Evaluations; run one at a time")
    if not evaluations and len(documents) != 1:
        raise InvalidInput(f"{path} holds no Evaluation")
    document = evaluations[0] if evaluations else documents[0]
    try:
        evaluation = Evaluation.model_validate(document)
    except ValidationError as err:
        raise InvalidInput(f"{path} is not a valid Evaluation:\n{format_errors(err)}") from err
    # What the operator checks before a run starts (InvalidSpec in a cluster).
    problems = spec_problems(evaluation.spec)
    if problems:
        raise InvalidInput(f"{path} is not a valid Evaluation:\n" + "\n".join(problems))
    return evaluation


def format_errors(err: ValidationError) -> str:
    """One line per problem, named by its field path as written in the manifest."""
    lines = []
    for error in err.errors():
        path = ""
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        lines.append(f"  {path or '(document)'}: {error['msg']}")
    return "\n".join(lines)


def _local_api_key(env_var: str | None, provider: str) -> str | None:
    names = [env_var] if env_var else [environment.API_KEY, f"{provider.upper()}_API_KEY"]
    for name in names:
        if os.environ.get(name):
            return read_key(name, os.environ[name])
    if env_var:
        print(f"warning: {env_var} is not set; requests carry no API key", file=sys.stderr)
    return None


def _warn_missing_keys(
    evaluation: Evaluation, api_key: str | None, judge_keys: list[str | None]
) -> None:
    """A manifest that references a key Secret, run without the key: every request would be
    refused, so say where the key goes."""
    spec = evaluation.spec
    if spec.model.api_key_secret_ref is not None and api_key is None:
        names = f"{environment.API_KEY} or {spec.model.provider.upper()}_API_KEY"
        print(
            f"warning: spec.model.apiKeySecretRef names Secret {spec.model.api_key_secret_ref.name}"
            f", but no key is set here: set {names} (or pass --api-key-env); requests carry "
            "no API key",
            file=sys.stderr,
        )
    judged = [s for s in spec.task.scorers if s.judge is not None]
    for index, (scorer, key) in enumerate(zip(judged, judge_keys, strict=True)):
        assert scorer.judge is not None
        if scorer.judge.api_key_secret_ref is not None and key is None:
            print(
                f"warning: the judge of scorer {scorer.effective_name} names Secret "
                f"{scorer.judge.api_key_secret_ref.name}, but {judge_key_env(index)} is not "
                "set: its requests carry no API key",
                file=sys.stderr,
            )


def _json_report(
    evaluation: Evaluation,
    result: Aggregate,
    verdict: Verdict,
    passed: bool | None,
) -> dict[str, Any]:
    return {
        "evaluation": evaluation.metadata.name,
        "model": evaluation.spec.model.name,
        "results": [r.model_dump(mode="json", by_alias=True) for r in result.results],
        "usage": result.usage.model_dump(mode="json", by_alias=True, exclude_none=True),
        "progress": result.progress.model_dump(mode="json", by_alias=True),
        "errors": result.errors,
        "thresholds": [{"threshold": c.text, "passed": c.holds} for c in verdict.checks],
        "passed": passed,
    }


def _print_table(
    console: Console,
    evaluation: Evaluation,
    result: Aggregate,
    verdict: Verdict,
    samples: SampleLog,
) -> None:
    spec = evaluation.spec
    table = Table(title=Text(f"{evaluation.metadata.name}: {spec.model.name}"))
    table.add_column("scorer")
    for column in ("value", "stderr", "ci95", "n"):
        table.add_column(column, justify="right")
    for r in result.results:
        table.add_row(
            Text(r.name),
            "-" if r.value is None else f"{r.value:.4f}",
            "-" if r.stderr is None else f"{r.stderr:.4f}",
            Text("-" if r.ci95 is None else f"[{r.ci95[0]:.4f}, {r.ci95[1]:.4f}]"),
            str(r.n),
        )
    console.print(table)
    if result.errors:
        console.print(Text("errored samples (never scored), by class:"))
        for error_class, count in sorted(result.errors.items(), key=lambda item: -item[1]):
            line = f"  {error_class}: {count}"
            example = samples.examples.get(error_class)
            if example is not None and example.url:
                line += f"; the first: POST {example.url}"
            if example is not None and example.error:
                line += f" -> {example.error}"
            console.print(Text(line))
    p, u = result.progress, result.usage
    lines = [f"samples: {p.completed} scored, {p.failed} errored, {p.total} total"]
    lines.append(
        f"usage: {u.requests} requests ({u.timed_out} timed out), {u.input_tokens} input "
        f"tokens, {u.output_tokens} output tokens, {u.prompt_cache_tokens} prompt-cache tokens, "
        f"{u.truncated} truncated answers, cost ${u.cost_usd}"
        + (f", {u.cache_hits} cache hits saving ${u.cache_saved_usd}" if u.cache_hits else "")
    )
    if u.judge is not None:
        j = u.judge
        lines.append(
            f"judge usage: {j.requests} requests ({j.timed_out} timed out), {j.input_tokens} "
            f"input tokens, {j.output_tokens} output tokens, cost ${j.cost_usd}"
        )
    lines += [f"threshold {c.text}: {'PASS' if c.holds else 'FAIL'}" for c in verdict.checks]
    for line in lines:
        console.print(Text(line))


# --- shard ----------------------------------------------------------------------------------


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
            ttl_seconds=_cache_ttl_seconds(),
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
    run = asyncio.create_task(
        run_shard(
            evaluation,
            shard,
            shards,
            api_key,
            judge_api_keys=judge_keys,
            dataset_dir=dataset_dir,
            ca_bundle=_ca_bundle(),
            summary=summary,
            budget=budget,
            store=store,
            cache=cache,
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
        async with ProgressServer(summary, port=port):
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
