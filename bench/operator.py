"""`make bench-operator`: our operator next to a bare kopf floor, on the API emulator, in one run.

    python bench/operator.py [--evaluations 1000] [--idle-seconds 60] [--lifecycles 5]

Each operator runs as a process of its own (kopf run --standalone --all-namespaces) against a
fresh emulator (tests/support/kubeapi) in this process; every request the operator makes
carries a token of its own, so the emulator's request log tells its calls apart. Printed:

1. scale (both operators): N suspended Evaluations are created one after another; the time from
   the first create until all N Jobs exist; the operator's RSS once everything settled; then,
   with nothing changing for --idle-seconds, the API writes it makes and the CPU it burns.
   Ratios ours / floor (goals: time <= 1.5x, RSS <= 1.3x, idle writes 0).
2. lifecycle (ours): --lifecycles two-shard Evaluations run to Succeeded (real runner processes
   against the local model server, the stand-in Job controller); API writes per Evaluation from
   create to Succeeded, by kind (goal <= 8).

The floor (bench/floor_operator.py) only creates a Job and patches the status once per
Evaluation: what any operator of this kind must at least do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "api"), str(ROOT / "operator"), str(ROOT)]

from tests.support.job_controller import FakeJobController  # noqa: E402
from tests.support.kubeapi import KubeAPIServer, running_kubeapi  # noqa: E402
from tests.support.model_server import ModelServer  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

TOKEN = "bench-operator-token"
GROUP, VERSION, PLURAL = "evals.io", "v1alpha1", "evaluations"
WRITES = ("POST", "PUT", "PATCH", "DELETE")
OURS = "eval_operator.main"
FLOOR = "bench.floor_operator"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# A create's commit in a real etcd on this project's CI machine (bench/etcd_write_latency.py:
# etcd 3.4.23, data on the machine's ext4 disk, a 3 KiB Job-sized create transaction): p50
# 1.49-1.56 ms one client at a time (about 600 creates/s), 7.7-8.2 ms with 8 clients at once
# (about 830 creates/s), 30 ms with 32 (about 720/s): a fixed latency and a commit rate that
# bursts queue for. The emulator makes each write wait both; a real apiserver's own work is
# the emulator's CPU time.
WRITE_LATENCY_MS = 1.5
WRITE_THROUGHPUT = 830.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/operator.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--evaluations", "-n", type=int, default=1000, help="N (default 1000)")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="idle window")
    parser.add_argument("--lifecycles", type=int, default=5, help="runs to Succeeded (ours)")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound of every wait")
    parser.add_argument(
        "--creators",
        type=int,
        default=8,
        help="clients creating the Evaluations at once, as a GitOps sync does (default 8)",
    )
    parser.add_argument(
        "--write-latency-ms",
        type=float,
        default=WRITE_LATENCY_MS,
        help=f"what each API write waits, as for etcd's commit (default {WRITE_LATENCY_MS})",
    )
    parser.add_argument(
        "--write-throughput",
        type=float,
        default=WRITE_THROUGHPUT,
        help=f"commits a second; a burst of writes queues for them (default {WRITE_THROUGHPUT:g})",
    )
    return parser.parse_args(argv)


def evaluation(name: str, *, suspend: bool, base_url: str = "http://model.invalid/v1") -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Evaluation",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "model": {"name": "bench", "baseURL": base_url, "maxConcurrency": 4},
            "dataset": {
                "inline": [
                    {"input": f"What is {i} + {i}?", "target": str(2 * i)} for i in range(10)
                ]
            },
            "task": {"scorers": [{"type": "exact_match"}]},
            "execution": {"shards": 2},
            "suspend": suspend,
        },
    }


# --- one operator process -----------------------------------------------------------------------


@dataclass
class Process:
    popen: subprocess.Popen[bytes]

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


@contextlib.contextmanager
def operator(module: str, api: KubeAPIServer, workdir: Path, timeout: float) -> Iterator[Process]:
    kubeconfig = api.write_kubeconfig(workdir / f"kubeconfig-{module}", token=TOKEN)
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PYTHONPATH": os.pathsep.join(str(ROOT / r) for r in ("api", "operator", "runner", ".")),
        "EVAL_OPERATOR_RUNNER_IMAGE": "eval-runner:bench",
        "EVAL_OPERATOR_PROGRESS_INTERVAL_SECONDS": "1",
    }
    log = (workdir / f"{module}.log").open("wb")
    popen = subprocess.Popen(
        [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces", "--quiet",
         f"--liveness=http://127.0.0.1:{port}/healthz", "-m", module],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            if popen.poll() is not None:
                raise RuntimeError(f"{module} exited {popen.returncode}: see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{module} did not become ready")
            time.sleep(0.2)
        yield Process(popen)
    finally:
        popen.terminate()
        try:
            popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            popen.kill()
        log.close()


def operator_writes(api: KubeAPIServer) -> list[Any]:
    return [r for r in list(api.requests) if r.token == TOKEN and r.method in WRITES]


def wait_until(what: str, predicate: Any, timeout: float, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)


def settle(api: KubeAPIServer, quiet: float, timeout: float) -> None:
    """Until the operator made no write for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = len(operator_writes(api)), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            recent = [f"{r.method} {r.path}" for r in operator_writes(api)[-10:]]
            raise RuntimeError(f"the operator never went quiet; its last writes: {recent}")
        time.sleep(0.5)
        now = len(operator_writes(api))
        if now != last:
            last, since = now, time.monotonic()


# --- the phases -----------------------------------------------------------------------------


def scale(module: str, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    crd = yaml.safe_load((ROOT / "crds" / "evaluations.evals.io.yaml").read_text())
    with running_kubeapi(
        bookmark_interval=5.0,
        write_latency=args.write_latency_ms / 1000,
        write_throughput=args.write_throughput,
    ) as api:
        api.create(crd)
        with operator(module, api, workdir, args.timeout) as process, httpx.Client() as http:
            url = f"{api.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"

            def create(i: int) -> None:
                response = http.post(url, json=evaluation(f"ev-{i:05d}", suspend=True))
                response.raise_for_status()

            started = time.monotonic()
            with ThreadPoolExecutor(args.creators) as pool:
                list(pool.map(create, range(args.evaluations)))
            created = time.monotonic() - started

            def all_jobs() -> bool:
                return len(api.list("batch", "v1", "jobs", "default")) >= args.evaluations

            wait_until("every Job", all_jobs, args.timeout, interval=0.1)
            to_jobs = time.monotonic() - started
            settle(api, quiet=5.0, timeout=args.timeout)
            rss = process.rss_mb()
            writes_before, cpu_before = len(operator_writes(api)), process.cpu_seconds()
            time.sleep(args.idle_seconds)
            idle_writes = len(operator_writes(api)) - writes_before
            idle_cpu = (process.cpu_seconds() - cpu_before) / args.idle_seconds
            return {
                "create_seconds": created,
                "to_jobs_seconds": to_jobs,
                "rss_mb": rss,
                "idle_writes_per_minute": idle_writes * 60 / args.idle_seconds,
                "idle_cpu_percent": 100 * idle_cpu,
                "writes_total": len(operator_writes(api)),
            }


def write_kind(request: Any) -> str:
    """'POST jobs', 'PATCH status', ... of a recorded request."""
    parts = [p for p in request.path.split("/") if p]
    what = parts[-1] if parts[-1] == "status" else parts[-2 if request.method != "POST" else -1]
    return f"{request.method} {what}"


def writes_before_its_job(api: KubeAPIServer, name: str) -> list[Any]:
    """The operator's writes about Evaluation `name` up to and including its Job's create."""
    found = []
    for request in operator_writes(api):
        body_name = ((request.body or {}).get("metadata") or {}).get("name", "")
        about = body_name.startswith(f"{name}-") or f"/{name}/" in f"{request.path}/"
        if about:
            found.append(request)
            if request.method == "POST" and request.path.endswith("/jobs"):
                return found
    raise RuntimeError(f"the operator made no Job for {name}")


def lifecycle(args: argparse.Namespace, workdir: Path) -> tuple[float, Counter[str], Counter[str]]:
    crd = yaml.safe_load((ROOT / "crds" / "evaluations.evals.io.yaml").read_text())
    with (
        running_kubeapi(
            bookmark_interval=5.0,
            write_latency=args.write_latency_ms / 1000,
            write_throughput=args.write_throughput,
        ) as api,
        ModelServer().in_thread() as model,
    ):
        api.create(crd)
        controller = FakeJobController(api.url, workdir / "pods")
        loop = asyncio.new_event_loop()
        task = loop.create_task(controller.run())

        def drive() -> None:
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(task)

        thread = threading.Thread(target=drive, daemon=True)
        thread.start()
        try:
            with operator(OURS, api, workdir, args.timeout), httpx.Client() as http:
                url = f"{api.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
                names = [f"run-{i}" for i in range(args.lifecycles)]
                for name in names:
                    body = evaluation(name, suspend=False, base_url=model.base_url)
                    http.post(url, json=body).raise_for_status()

                def done() -> bool:
                    phases = [
                        (api.get(GROUP, VERSION, PLURAL, "default", n) or {}).get("status", {})
                        for n in names
                    ]
                    return all(p.get("phase") in ("Succeeded", "Failed") for p in phases)

                wait_until("every run to finish", done, args.timeout)
                settle(api, quiet=3.0, timeout=args.timeout)
                failed = [
                    n
                    for n in names
                    if api.get(GROUP, VERSION, PLURAL, "default", n)["status"]["phase"]
                    != "Succeeded"
                ]
                if failed:
                    raise RuntimeError(f"runs failed: {failed}")
                kinds: Counter[str] = Counter()
                before_job: Counter[str] = Counter()
                for request in operator_writes(api):
                    kinds[write_kind(request)] += 1
                for name in names:
                    for request in writes_before_its_job(api, name):
                        before_job[write_kind(request)] += 1
                return sum(kinds.values()) / len(names), kinds, before_job
        finally:
            loop.call_soon_threadsafe(task.cancel)
            thread.join(timeout=20)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # figures as they come, even into a file
    with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
        workdir = Path(tmp)
        print(
            f"scale: {args.evaluations} suspended Evaluations, idle {args.idle_seconds:.0f} s; "
            f"each API write waits {args.write_latency_ms:g} ms and its turn among "
            f"{args.write_throughput:g} commits a second (etcd's)"
        )
        results = {}
        for label, module in (("floor", FLOOR), ("ours", OURS)):
            results[label] = scale(module, args, workdir)
            r = results[label]
            print(
                f"  {label:5}: all Jobs {r['to_jobs_seconds']:.1f} s after the first create "
                f"(creates took {r['create_seconds']:.1f} s); RSS {r['rss_mb']:.0f} MB; idle: "
                f"{r['idle_writes_per_minute']:.1f} writes/min, {r['idle_cpu_percent']:.1f}% CPU; "
                f"{r['writes_total']} writes in all"
            )
        floor, ours = results["floor"], results["ours"]
        time_ratio = ours["to_jobs_seconds"] / floor["to_jobs_seconds"]
        rss_ratio = ours["rss_mb"] / floor["rss_mb"]
        print(f"  ratio time-to-all-Jobs: {time_ratio:.2f} (goal <= 1.5)")
        print(f"  ratio RSS: {rss_ratio:.2f} (goal <= 1.3)")
        print(f"  idle writes/min (ours): {ours['idle_writes_per_minute']:.1f} (goal 0)")
        per_run, kinds, before_job = lifecycle(args, workdir)
        breakdown = ", ".join(f"{k} {v / args.lifecycles:.1f}" for k, v in sorted(kinds.items()))
        first = ", ".join(f"{k} {v / args.lifecycles:.1f}" for k, v in sorted(before_job.items()))
        print(f"lifecycle: {args.lifecycles} two-shard runs to Succeeded")
        print(f"  API writes per Evaluation: {per_run:.1f} (goal <= 8): {breakdown}")
        print(f"  of which up to its Job (the Job included): {first}")
        ok = (
            time_ratio <= 1.5
            and rss_ratio <= 1.3
            and ours["idle_writes_per_minute"] == 0
            and per_run <= 8
        )
        print("goals met" if ok else "goals NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
