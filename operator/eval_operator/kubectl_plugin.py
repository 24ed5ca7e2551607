"""kubectl-evals: the kubectl plugin for Evaluations (`kubectl evals results NAME`, `compare A B`).

It reads Evaluations with `kubectl get -o json` in a subprocess rather than through a Python
Kubernetes client: a kubectl plugin only ever runs where kubectl is, and so it honours the
user's kubeconfig, contexts, exec credential plugins and proxies exactly as kubectl does, with
no client dependency of its own (the plugin needs only pydantic from this package).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

from pydantic import ValidationError

from eval_api.v1alpha1 import GROUP, EvaluationStatus, ScoreResult

RESOURCE = f"evaluations.{GROUP}"
EXIT_OK = 0
EXIT_NOT_PASSED = 1  # the run failed or missed a threshold: CI can gate on it
EXIT_ERROR = 2  # bad arguments, or the Evaluation cannot be read

EPILOG = """\
exit codes of `results`: 0 shown (passed, no thresholds, or not finished yet); 1 the run failed
or missed a threshold; 2 bad arguments or the Evaluation cannot be read.
kubectl is found on PATH, or set KUBECTL to its path.
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

    def get_evaluation(self, name: str) -> dict[str, Any]:
        command = [self.binary, *self.flags, "get", RESOURCE, name, "--output=json"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        except FileNotFoundError as err:
            raise PluginError(
                f"{self.binary} not found: put kubectl on PATH or set KUBECTL"
            ) from err
        except subprocess.TimeoutExpired as err:
            raise PluginError(f"kubectl get {RESOURCE} {name} timed out after 60s") from err
        if done.returncode != 0:
            raise PluginError(done.stderr.strip() or f"kubectl exited with {done.returncode}")
        try:
            obj = json.loads(done.stdout)
        except ValueError as err:
            raise PluginError(f"kubectl printed no JSON for {name}") from err
        if obj.get("kind") != "Evaluation":
            raise PluginError(f"{name} is a {obj.get('kind')}, not an Evaluation")
        return obj


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


def print_comparison(a: View, b: View, out: TextIO) -> None:
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
    print(f"\n{PAIRED_TEST_NOTE}", file=out)


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
    compare.add_argument("a", metavar="A")
    compare.add_argument("b", metavar="B")
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
        a, b = View(kubectl.get_evaluation(args.a)), View(kubectl.get_evaluation(args.b))
        if args.output == "json":
            print(json.dumps({"a": a.to_json(), "b": b.to_json()}, indent=2), file=out)
        else:
            print_comparison(a, b, out)
        return EXIT_OK
    except PluginError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
