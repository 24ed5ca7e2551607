"""kubectl-evals: the kubectl plugin for Evaluations and EvalSuites (`kubectl evals results NAME`,
`compare A B`, `suite NAME`, `history NAME`, `accept NAME`).

It reads Evaluations with `kubectl get -o json` in a subprocess rather than through a Python
Kubernetes client: a kubectl plugin only ever runs where kubectl is, and so it honours the
user's kubeconfig, contexts, exec credential plugins and proxies exactly as kubectl does, with
no client dependency of its own. The paired test of `compare` runs where the store is: as a Job
in the suite's namespace (the user needs to be allowed to create Jobs there), whose report the
plugin reads back; the store's password never leaves the cluster.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

from pydantic import ValidationError

from eval_api import cel
from eval_api.cellreport import CellReport, comparison_columns
from eval_api.v1alpha1.common import GROUP
from eval_api.v1alpha1.evalsuite import EvalSuiteSpec, EvalSuiteStatus
from eval_api.v1alpha1.evaluation import EvaluationStatus, ScoreResult
from eval_api.v1alpha1.matrix import ACCEPT_RUN_ANNOTATION, CellComparison, RegressionSpec
from eval_operator.builders import tls
from eval_operator.builders.suite import SUITE_LABEL
from eval_operator.matrix import build_store_job


def _tls_on(suite: dict[str, Any]) -> bool:
    """The suite's servers are on TLS (spec.tls with cert-manager: its TLSReady says so)."""
    for condition in (suite.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "TLSReady":
            return condition.get("reason") in ("Ready", "CertificatesNotReady")
    return False


RESOURCE = f"evaluations.{GROUP}"
SUITE_RESOURCE = f"evalsuites.{GROUP}"
# How long `compare` waits for its paired comparison Job.
PAIRED_TIMEOUT_SECONDS = 300
EXIT_OK = 0
EXIT_NOT_PASSED = 1  # the run failed or missed a threshold: CI can gate on it
EXIT_ERROR = 2  # bad arguments, or the Evaluation cannot be read

EPILOG = """\
exit codes of `results` and `suite`: 0 shown (passed, no thresholds, or not finished yet); 1 the
run failed, missed a threshold or (a suite) regressed; 2 bad arguments or the object cannot be
read. kubectl is found on PATH, or set KUBECTL to its path.
"""


class PluginError(Exception):
    """Shown as `error: ...` with exit code 2."""


class Kubectl:
    """Runs `kubectl get` with the user's global flags."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None):
        self.binary = os.environ.get("KUBECTL") or "kubectl"
        self.flags: list[str] = []
        if kubeconfig:
            self.flags.append(f"--kubeconfig={kubeconfig}")
        if context:
            self.flags.append(f"--context={context}")
        if namespace:
            self.flags.append(f"--namespace={namespace}")

    def run(self, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
        command = [self.binary, *self.flags, *args]
        try:
            done = subprocess.run(
                command, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
            )
        except FileNotFoundError as err:
            raise PluginError(
                f"{self.binary} not found: put kubectl on PATH or set KUBECTL"
            ) from err
        except subprocess.TimeoutExpired as err:
            raise PluginError(f"kubectl {' '.join(args[:3])} timed out after {timeout:g}s") from err
        if done.returncode != 0:
            raise PluginError(done.stderr.strip() or f"kubectl exited with {done.returncode}")
        return done.stdout

    def get(self, resource: str, name: str, kind: str) -> dict[str, Any]:
        text = self.run("get", resource, name, "--output=json")
        try:
            obj = json.loads(text)
        except ValueError as err:
            raise PluginError(f"kubectl printed no JSON for {name}") from err
        if obj.get("kind") != kind:
            raise PluginError(f"{name} is a {obj.get('kind')}, not an {kind}")
        return obj

    def list(self, resource: str, selector: str) -> list[dict[str, Any]]:
        text = self.run("get", resource, f"--selector={selector}", "--output=json")
        return list(json.loads(text).get("items") or [])

    def get_evaluation(self, name: str) -> dict[str, Any]:
        return self.get(RESOURCE, name, "Evaluation")

    def get_suite(self, name: str) -> dict[str, Any]:
        return self.get(SUITE_RESOURCE, name, "EvalSuite")


class View:
    """What the plugin shows of one Evaluation, read through the typed status model."""

    def __init__(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        self.name = meta.get("name", "")
        self.namespace = meta.get("namespace", "")
        self.model = ((obj.get("spec") or {}).get("model") or {}).get("name", "")
        try:
            self.status = EvaluationStatus.model_validate(obj.get("status") or {})
        except ValidationError as err:
            raise PluginError(f"{self.name}: unreadable status: {err}") from err
        conditions = {c.type: c for c in self.status.conditions}
        self.passed = conditions["Passed"].status if "Passed" in conditions else "Unknown"
        self.passed_message = conditions["Passed"].message if "Passed" in conditions else ""
        ready = conditions.get("Ready")
        self.ready_message = f"{ready.reason}: {ready.message}" if ready else ""

    @property
    def phase(self) -> str:
        return self.status.phase or "Pending"

    @property
    def title(self) -> str:
        return f"{self.namespace}/{self.name}"

    def result(self, scorer: str) -> ScoreResult | None:
        return next((r for r in self.status.results if r.name == scorer), None)

    def to_json(self) -> dict[str, Any]:
        status = self.status
        return {
            "name": self.name,
            "namespace": self.namespace,
            "model": self.model,
            "phase": self.phase,
            "passed": self.passed,
            "results": [r.model_dump(by_alias=True) for r in status.results],
            "usage": status.usage.model_dump(by_alias=True) if status.usage else None,
            "progress": status.progress.model_dump(by_alias=True) if status.progress else None,
        }


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """kubectl's layout: upper-case header, columns padded, three spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        line = "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(line.rstrip(), file=out)


PAIRED_TEST_NOTE = (
    "Deltas are differences of means, not tests: whether B differs from A takes a paired test "
    "on the per-sample scores of both runs, which needs them in an EvalSuite store "
    "(spec.suiteRef). Overlapping or not, two intervals are no such test."
)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _interval(r: ScoreResult) -> str:
    return "-" if r.ci95 is None else f"[{r.ci95[0]:.4f}, {r.ci95[1]:.4f}]"


def _score(r: ScoreResult | None) -> str:
    if r is None:
        return "-"
    return f"{_number(r.value)} {_interval(r)} n={r.n}"


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        return Decimal(0)


def _signed(value: Decimal | int | float, digits: int | None = None) -> str:
    if digits is not None:
        return f"{value:+.{digits}f}"
    return f"{value:+}"


def print_results(view: View, out: TextIO) -> None:
    status = view.status
    print(
        f"Evaluation {view.title}   model {view.model}   phase {view.phase}   passed {view.passed}",
        file=out,
    )
    if not status.results:
        print(f"no results yet ({view.ready_message or 'not started'})", file=out)
    else:
        rows = [["SCORER", "VALUE", "STDERR", "CI95", "N"]]
        for r in status.results:
            rows.append([r.name, _number(r.value), _number(r.stderr), _interval(r), str(r.n)])
        print(file=out)
        _table(rows, out)
        print(file=out)
    if status.progress is not None:
        p = status.progress
        print(f"samples: {p.completed} scored, {p.failed} errored, {p.total} total", file=out)
    if status.usage is not None:
        u = status.usage
        print(
            f"usage: {u.requests} requests ({u.timed_out} timed out), {u.input_tokens} input "
            f"tokens, {u.output_tokens} output tokens, {u.prompt_cache_tokens} prompt-cache "
            f"tokens, {u.truncated} truncated answers, {u.cache_hits} cache hits, "
            f"cost ${u.cost_usd}",
            file=out,
        )
        if u.judge is not None:
            j = u.judge
            print(
                f"judge: {j.requests} requests, {j.input_tokens} input tokens, "
                f"{j.output_tokens} output tokens, cost ${j.cost_usd}",
                file=out,
            )
    if view.passed_message:
        print(f"thresholds: {view.passed_message}", file=out)


def print_comparison(a: View, b: View, out: TextIO, paired: bool = False) -> None:
    """Side by side, with the differences; no verdict on them (see PAIRED_TEST_NOTE)."""
    rows = [["", f"A: {a.title}", f"B: {b.title}", "DELTA (B-A)"]]
    rows.append(["model", a.model, b.model, ""])
    rows.append(["phase", a.phase, b.phase, ""])
    rows.append(["passed", a.passed, b.passed, ""])
    names = [r.name for r in a.status.results]
    names += [r.name for r in b.status.results if r.name not in names]
    for scorer in names:
        ra, rb = a.result(scorer), b.result(scorer)
        delta = ""
        if ra is not None and rb is not None and ra.value is not None and rb.value is not None:
            delta = _signed(rb.value - ra.value, 4)
        rows.append([scorer, _score(ra), _score(rb), delta])
    ua, ub = a.status.usage, b.status.usage
    if ua is not None and ub is not None:
        for label, va, vb in (
            ("requests", ua.requests, ub.requests),
            ("timed out", ua.timed_out, ub.timed_out),
            ("input tokens", ua.input_tokens, ub.input_tokens),
            ("output tokens", ua.output_tokens, ub.output_tokens),
            ("prompt-cache tokens", ua.prompt_cache_tokens, ub.prompt_cache_tokens),
            ("truncated answers", ua.truncated, ub.truncated),
            ("cache hits", ua.cache_hits, ub.cache_hits),
        ):
            rows.append([label, str(va), str(vb), _signed(vb - va)])
        cost_a, cost_b = _decimal(ua.cost_usd), _decimal(ub.cost_usd)
        rows.append(["cost USD", ua.cost_usd, ub.cost_usd, _signed(cost_b - cost_a)])
        if ua.judge is not None or ub.judge is not None:
            ja, jb = (u.judge.cost_usd if u.judge else "0" for u in (ua, ub))
            rows.append(["judge cost USD", ja, jb, _signed(_decimal(jb) - _decimal(ja))])
    _table(rows, out)
    if not paired:
        print(f"\n{PAIRED_TEST_NOTE}", file=out)


# --- EvalSuites -----------------------------------------------------------------------------


def _suite_status(obj: dict[str, Any]) -> EvalSuiteStatus:
    try:
        return EvalSuiteStatus.model_validate(obj.get("status") or {})
    except ValidationError as err:
        raise PluginError(f"{obj['metadata']['name']}: unreadable status: {err}") from err


def _condition(status: EvalSuiteStatus, type_: str) -> str:
    found = next((c for c in status.conditions if c.type == type_), None)
    return f"{found.status} ({found.reason})" if found else "-"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms"


def print_suite(obj: dict[str, Any], out: TextIO) -> None:
    """The leaderboard: per task, every model with its score, interval, cost, latency and its
    comparison with the baseline; the best model of each task is starred."""
    status = _suite_status(obj)
    name = obj["metadata"]["name"]
    run = status.current_run
    print(f"suite {obj['metadata'].get('namespace', '')}/{name}", file=out)
    if run is not None:
        done = status.matrix.done if status.matrix else "?"
        print(f"run {run.id} ({run.trigger}, started {run.start_time}): {done} cells finished",
              file=out)  # fmt: skip
    print(f"passed: {_condition(status, 'Passed')}   regressed: {_condition(status, 'Regressed')}",
          file=out)  # fmt: skip
    for board in status.leaderboard:
        print(f"\ntask {board.task}", file=out)
        rows = [["", "MODEL", "PHASE", "SCORE", "CI95", "N", "COST USD", "P50", "P95",
                 "DELTA", "P-VALUE", "REGRESSED"]]  # fmt: skip
        for e in board.entries:
            delta, p_value, regressed = comparison_columns(e.comparison)
            rows.append(
                [
                    "*" if board.best == e.model else "",
                    e.model,
                    e.phase or "-",
                    _number(e.score),
                    "-" if e.ci95 is None else f"[{e.ci95[0]:.4f}, {e.ci95[1]:.4f}]",
                    "-" if e.n is None else str(e.n),
                    e.cost_usd or "-",
                    _ms(e.latency_p50_ms),
                    _ms(e.latency_p95_ms),
                    delta,
                    p_value,
                    regressed,
                ]
            )
        _table(rows, out)


def print_history(obj: dict[str, Any], out: TextIO) -> None:
    status = _suite_status(obj)
    runs = list(status.history)
    current = status.current_run
    if current is not None and current.completion_time is None:
        runs.insert(0, current)
    rows = [["RUN", "TRIGGER", "STARTED", "FINISHED", "OUTCOME", "PASSED", "CELLS", "REGRESSED"]]
    for r in runs:
        rows.append(
            [
                r.id + (" (accepted)" if r.id == status.accepted_run else ""),
                r.trigger,
                r.start_time,
                r.completion_time or "-",
                r.outcome or "Running",
                "-" if r.passed is None else ("yes" if r.passed else "no"),
                f"{r.succeeded}/{r.cells}",
                ", ".join(r.regressed) or "-",
            ]
        )
    _table(rows, out)


def accept(kubectl: Kubectl, name: str, run: str | None, out: TextIO) -> int:
    """Mark a suite run as the accepted baseline (spec.baseline: accepted)."""
    obj = kubectl.get_suite(name)
    status = _suite_status(obj)
    known = {r.id: r for r in status.history}
    if run is None:
        finished = [r for r in status.history if r.outcome in ("Succeeded", "Failed")]
        if not finished:
            raise PluginError(f"suite {name} has no finished run to accept yet")
        run = finished[0].id
    elif run not in known:
        raise PluginError(
            f"suite {name} has no run {run} in its history ({', '.join(known) or 'none'})"
        )
    kubectl.run("annotate", SUITE_RESOURCE, name, f"{ACCEPT_RUN_ANNOTATION}={run}", "--overwrite")
    print(f"suite {name}: run {run} accepted as the baseline", file=out)
    return EXIT_OK


# --- the paired comparison of two stored runs ----------------------------------------------


def _stored_run(obj: dict[str, Any], run: str | None = None) -> tuple[str, str, str] | None:
    """(suite, evaluation uid, run) of an Evaluation in a suite: its finished current run, or
    `run` (one of its earlier runs, as the store and a leaderboard's baselineRun name it)."""
    suite = ((obj.get("spec") or {}).get("suiteRef") or {}).get("name")
    status = obj.get("status") or {}
    if not suite:
        return None
    if run is not None:
        return suite, obj["metadata"]["uid"], run
    if not status.get("jobName") or status.get("phase") not in ("Succeeded", "Failed"):
        return None
    return suite, obj["metadata"]["uid"], status["jobName"]


def _name_and_run(argument: str) -> tuple[str, str | None]:
    """NAME, or NAME@RUN for one of the Evaluation's earlier runs."""
    name, _, run = argument.partition("@")
    return name, run or None


def paired_comparison(
    kubectl: Kubectl,
    stored_a: tuple[str, str, str],
    stored_b: tuple[str, str, str],
    image: str | None,
) -> CellComparison:
    """Run `eval-runner compare-runs` as a Job in the cluster (the store is only reachable, and
    its password only readable, from there), wait for it, and read its report."""
    suite_obj = kubectl.get_suite(stored_a[0])
    spec = EvalSuiteSpec.model_validate(suite_obj.get("spec") or {}, context=cel.ADMITTED)
    regression = spec.regression or RegressionSpec()
    if image is None:
        migrations = kubectl.list(
            "jobs.batch",
            f"{SUITE_LABEL}={stored_a[0]},app.kubernetes.io/component=store-migration",
        )
        images = [j["spec"]["template"]["spec"]["containers"][0]["image"] for j in migrations]
        if not images:
            raise PluginError(f"suite {stored_a[0]} has no migration Job to take the runner "
                              "image from: pass --image")  # fmt: skip
        image = images[0]
    digest = hashlib.sha256(f"{stored_a[1:]}{stored_b[1:]}".encode()).hexdigest()[:10]
    name = f"evals-compare-{digest}"
    args = [
        "compare-runs",
        "--baseline-uid", stored_a[1], "--baseline-run", stored_a[2],
        "--candidate-uid", stored_b[1], "--candidate-run", stored_b[2],
        "--max-drop", regression.max_drop, "--alpha", regression.alpha,
    ]  # fmt: skip
    job = build_store_job(
        suite_obj,
        spec,
        name=name,
        component="compare",
        args=args,
        extra_labels={},
        image=image,
        pull_policy="IfNotPresent",
    )
    job["spec"]["ttlSecondsAfterFinished"] = 600
    job["spec"]["backoffLimit"] = 2
    if _tls_on(suite_obj):  # the store takes TLS only: verify it as the suite's pods do
        job = tls.with_tls_clients(job, suite_obj["metadata"]["name"], spec)
    kubectl.run("apply", "-f", "-", stdin=json.dumps(job))
    try:
        deadline = time.monotonic() + PAIRED_TIMEOUT_SECONDS
        while True:
            seen = kubectl.get("jobs.batch", name, "Job")
            conditions = (seen.get("status") or {}).get("conditions") or []
            if any(c["type"] in ("Complete", "Failed") and c["status"] == "True"
                   for c in conditions):  # fmt: skip
                break
            if time.monotonic() > deadline:
                raise PluginError(f"Job {name} did not finish in {PAIRED_TIMEOUT_SECONDS}s")
            time.sleep(1.0)
        pods = kubectl.list("pods", f"job-name={name}")
        messages = [
            ((st.get("state") or {}).get("terminated") or {}).get("message") or ""
            for p in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
            for st in (p.get("status") or {}).get("containerStatuses") or []
        ]
        text = next((m for m in reversed(messages) if m), "")
        try:
            report = CellReport.model_validate_json(text)
        except ValidationError as err:
            raise PluginError(f"Job {name} left no report") from err
        if report.state != "done" or report.comparison is None:
            raise PluginError(f"paired comparison failed: {report.reason}: {report.message}")
        return report.comparison
    finally:
        kubectl.run("delete", "jobs.batch", name, "--ignore-not-found", "--wait=false",
                    "--cascade=background")  # fmt: skip


def print_paired(comparison: CellComparison, out: TextIO) -> None:
    rows = [["SCORER", "TEST", "PAIRS", "EXCLUDED", "DELTA (B-A)", "CI95", "P-VALUE", "MDE"]]
    for c in comparison.scorers:
        rows.append(
            [
                c.name,
                c.test,
                str(c.pairs),
                str(c.excluded),
                "-" if c.difference is None else f"{c.difference:+.4f}",
                "-" if c.ci95 is None else f"[{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}]",
                "-" if c.p_value is None else f"{c.p_value:.4g}",
                "-" if c.min_detectable_effect is None else f"{c.min_detectable_effect:.4f}",
            ]
        )
    print("\npaired comparison of the per-sample scores (from the suite's store):", file=out)
    _table(rows, out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl evals",
        description="Show and compare the results of evals.io Evaluations.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    common.add_argument("--context", help="kubeconfig context")
    common.add_argument("--kubeconfig", help="path to the kubeconfig file")
    common.add_argument("-o", "--output", choices=["table", "json"], default="table")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    results = commands.add_parser(
        "results", parents=[common], help="scores with ci95, usage and cost of one Evaluation"
    )
    results.add_argument("name", metavar="NAME")
    compare = commands.add_parser(
        "compare", parents=[common], help="two Evaluations side by side, with deltas"
    )
    compare.add_argument("a", metavar="A", help="an Evaluation, or NAME@RUN for an earlier run")
    compare.add_argument("b", metavar="B", help="an Evaluation, or NAME@RUN for an earlier run")
    compare.add_argument(
        "--no-paired",
        action="store_true",
        help="skip the paired test even when both runs are in a suite's store",
    )
    compare.add_argument(
        "--image", help="runner image of the paired test's Job (default: the suite's)"
    )
    suite = commands.add_parser(
        "suite", parents=[common], help="an EvalSuite's leaderboard, per task"
    )
    suite.add_argument("name", metavar="NAME")
    history = commands.add_parser(
        "history", parents=[common], help="an EvalSuite's runs and their verdicts"
    )
    history.add_argument("name", metavar="NAME")
    accept_ = commands.add_parser(
        "accept", parents=[common], help="accept a suite run as the baseline (default: the last)"
    )
    accept_.add_argument("name", metavar="NAME")
    accept_.add_argument("--run", help="the suite run id (default: the last finished run)")
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    kubectl = Kubectl(args.kubeconfig, args.context, args.namespace)
    try:
        if args.command == "results":
            view = View(kubectl.get_evaluation(args.name))
            if args.output == "json":
                print(json.dumps(view.to_json(), indent=2), file=out)
            else:
                print_results(view, out)
            return EXIT_NOT_PASSED if view.phase == "Failed" or view.passed == "False" else EXIT_OK
        if args.command in ("suite", "history"):
            obj = kubectl.get_suite(args.name)
            status = _suite_status(obj)
            if args.output == "json":
                print(json.dumps(obj.get("status") or {}, indent=2), file=out)
            elif args.command == "suite":
                print_suite(obj, out)
            else:
                print_history(obj, out)
            passed = next((c for c in status.conditions if c.type == "Passed"), None)
            failed = args.command == "suite" and passed is not None and passed.status == "False"
            return EXIT_NOT_PASSED if failed else EXIT_OK
        if args.command == "accept":
            return accept(kubectl, args.name, args.run, out)
        (name_a, run_a), (name_b, run_b) = _name_and_run(args.a), _name_and_run(args.b)
        raw_a, raw_b = kubectl.get_evaluation(name_a), kubectl.get_evaluation(name_b)
        a, b = View(raw_a), View(raw_b)
        stored_a, stored_b = _stored_run(raw_a, run_a), _stored_run(raw_b, run_b)
        paired = None
        if (run_a or run_b) and not (stored_a and stored_b and stored_a[0] == stored_b[0]):
            raise PluginError("NAME@RUN compares stored runs: both need the same spec.suiteRef")
        if not args.no_paired and stored_a and stored_b and stored_a[0] == stored_b[0]:
            paired = paired_comparison(kubectl, stored_a, stored_b, args.image)
        if args.output == "json":
            body = {"a": a.to_json(), "b": b.to_json()}
            if paired is not None:
                body["paired"] = paired.model_dump(mode="json", by_alias=True, exclude_none=True)
            print(json.dumps(body, indent=2), file=out)
        elif run_a or run_b:
            print(f"A: {args.a}   B: {args.b}", file=out)  # earlier runs: no status to show
            if paired is not None:
                print_paired(paired, out)
        else:
            print_comparison(a, b, out, paired is not None)
            if paired is not None:
                print_paired(paired, out)
        return EXIT_OK
    except PluginError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
