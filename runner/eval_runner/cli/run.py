"""`eval-runner run`: an Evaluation manifest run locally as one shard, or an EvalSuite's matrix
cell by cell (eval_runner.localsuite), with an optional store and cache; exit 0 when every
threshold holds, 1 when one fails, 2 on an invalid manifest, 3 when the run cannot succeed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from eval_api import environment
from eval_api.aggregate import aggregate
from eval_api.checks import spec_problems
from eval_api.environment import judge_key_env
from eval_api.exitcodes import EXIT_OK, EXIT_PERMANENT
from eval_api.shard import ShardSummary
from eval_api.store import StoreSettings, StoreSettingsError
from eval_api.tasks import task_plan
from eval_api.v1alpha1.evalsuite import EvalSuite
from eval_api.v1alpha1.evaluation import Evaluation
from eval_api.verdict import judge_thresholds
from eval_runner.cache import CacheSettingsError, ResponseCache, redacted_url
from eval_runner.cli.common import ca_bundle, cache_ttl_seconds, configure_logging, judge_api_keys
from eval_runner.cli.manifest import InvalidInput, load_manifest, load_suite_manifest
from eval_runner.cli.output import SampleLog, json_report, print_table
from eval_runner.errors import PermanentError, RetryableError
from eval_runner.pipeline import run_shard
from eval_runner.runtime import run as run_async
from eval_runner.secrets import read_key
from eval_runner.stop import EarlyStopWatch, StopSignal
from eval_runner.store import (
    RunIdentity,
    SampleStore,
    WriterSettings,
    latest_run,
    local_evaluation_uid,
    new_local_run,
    spec_hash,
)

EXIT_THRESHOLDS_FAILED = 1
EXIT_INVALID = 2

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


def add_parser(commands: Any) -> None:
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
    run.add_argument(
        "--task-file", type=Path, metavar="PATH", help="the task file of a task.lmEval"
    )
    run.add_argument(
        "--limit", type=int, metavar="N", help="override spec.dataset.limit (or the preset's)"
    )
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
            if spec.task.preset is not None:
                spec.task.preset.limit = args.limit
            else:
                assert spec.dataset is not None  # the schema requires it without a preset
                spec.dataset.limit = args.limit
        from_config_map = spec.dataset is not None and spec.dataset.config_map_ref is not None
        if from_config_map != (args.dataset_file is not None):
            raise InvalidInput(
                "a dataset.configMapRef needs its file passed with --dataset-file PATH, "
                "and --dataset-file is only for a configMapRef dataset"
            )
        task_file = _task_file(args, evaluation)
        local_store = _local_store(args)
        try:
            cache_ttl = cache_ttl_seconds()
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
    # execution.earlyStop: the run decides for itself, as the operator does for a Job.
    stop = StopSignal()
    watch = EarlyStopWatch(spec, stop) if spec.execution.early_stop is not None else None

    def progressed(summary: ShardSummary) -> None:
        show(summary)
        if watch is not None:
            watch.update(summary)

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
            ca_bundle=ca_bundle(),
            summary=summary,
            on_progress=progressed,
            on_sample=sample_log,
            store=store,
            cache=cache,
            task_file=task_file,
            stop=stop,
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

    scorer_names = task_plan(spec, task_file).names
    # A resumed run's usage: this invocation's plus what its stored samples used when asked.
    whole = summary
    if summary.resumed is not None:
        usage = summary.usage.merged(summary.resumed.usage)
        whole = summary.model_copy(update={"usage": usage})
    result = aggregate([whole], scorer_names, total=summary.total)
    too_many = result.too_many_errors(spec.execution.max_errored_fraction)
    verdict = judge_thresholds(spec.thresholds, {r.name: r.value for r in result.results})
    passed = verdict.passed if verdict.checks and too_many is None else None
    stopped_early_report = None
    if watch is not None:
        stopped_early_report, decided = watch.finish(result)
        if stopped_early_report is not None and decided is not None and too_many is None:
            passed = decided
    if too_many is not None and verdict.checks:
        passed = False
    if summary.cache_unavailable is not None:
        print(f"warning: {summary.cache_unavailable}", file=sys.stderr)
    if args.output == "json":
        report = json_report(evaluation, result, verdict, passed)
        if local_store is not None and local_store.store is not None:
            report["store"] = local_store.report(summary)
        if summary.cache_unavailable is not None:
            report["cacheUnavailable"] = summary.cache_unavailable
        if stopped_early_report is not None:
            report["stoppedEarly"] = stopped_early_report
        if stopped is not None:
            report["stopped"] = {"reason": stopped.reason, "message": stopped.message}
        elif too_many is not None:
            report["stopped"] = {"reason": "TooManyErrors", "message": too_many}
        print(json.dumps(report, indent=2))
    else:
        console = Console(highlight=False, stderr=args.output == "jsonl")
        print_table(console, evaluation, result, verdict, sample_log)
        if stopped_early_report is not None:
            console.print(
                Text(
                    f"stopped early ({stopped_early_report['reason']}) after "
                    f"{stopped_early_report['samples']} of {stopped_early_report['of']} samples: "
                    f"{stopped_early_report['message']}; passed: {passed}"
                )
            )
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


def _task_file(args: argparse.Namespace, evaluation: Evaluation) -> str | None:
    """The text of task.lmEval's task file (--task-file), checked as the operator checks the
    ConfigMap's before a run: its fields, and the result names the thresholds name."""
    lm_eval = evaluation.spec.task.lm_eval
    if (lm_eval is None) != (args.task_file is None):
        raise InvalidInput(
            "a task.lmEval needs its task file passed with --task-file PATH (the content of "
            "its ConfigMap key), and --task-file is only for a task.lmEval"
        )
    if args.task_file is None:
        return None
    try:
        text = args.task_file.read_text(encoding="utf-8")
    except OSError as err:
        raise InvalidInput(f"cannot read {args.task_file}: {err.strerror}") from err
    problems = spec_problems(evaluation.spec, text)
    if problems:
        raise InvalidInput(f"{args.manifest} is not a valid Evaluation:\n" + "\n".join(problems))
    return text


def cmd_run_suite(args: argparse.Namespace, suite: EvalSuite) -> int:
    """Every cell of the suite's matrix in turn, then the leaderboard (eval_runner.localsuite)."""
    unsupported = [
        flag
        for flag, given in (
            ("--dataset-file", args.dataset_file is not None),
            ("--task-file", args.task_file is not None),
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
    judged = [s for s in spec.task.scorer_list if s.judge is not None]
    for index, (scorer, key) in enumerate(zip(judged, judge_keys, strict=True)):
        assert scorer.judge is not None
        if scorer.judge.api_key_secret_ref is not None and key is None:
            print(
                f"warning: the judge of scorer {scorer.effective_name} names Secret "
                f"{scorer.judge.api_key_secret_ref.name}, but {judge_key_env(index)} is not "
                "set: its requests carry no API key",
                file=sys.stderr,
            )
