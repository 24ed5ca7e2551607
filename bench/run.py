"""`make bench`: the runner against the local model server, clean and then under fire.

    python bench/run.py [--samples 5000] [--latency 0.05] [--concurrency 64]

The model server (tests/support/model_server.py) runs as a process of its own with a fixed
latency L; the runner runs `run_shard` in another process, so the CPU it reports is the
runner's alone (time.process_time() in the runner process). Printed, in one run:

- clean run: start-up (process spawn -> first request: interpreter, imports, dataset load and
  the rendering of every prompt, which the runner does before its first request), the wall
  time from the first request to the last sample scored, the physical limit N*L/C, their
  ratio, and the runner's CPU milliseconds per sample (all of run_shard: load, rendering,
  requests, scoring);
- fault run (the same run with 429s carrying Retry-After, 500s, hangs longer than the request
  timeout, optionally truncated bodies): its wall, the ratio of its scores to the clean run's
  (must be identical: exit code 1 otherwise), the samples errored, retries by class, and what
  the adaptive concurrency did (its gauge's minimum and the number of cuts);
- provider-like run (the server enforces a requests-per-minute and a tokens-per-minute bucket,
  refilled continuously, and sends OpenAI's x-ratelimit-* headers): its wall against the time
  the buckets allow (all that fits in a full bucket at once, the rest at the refill rate, plus
  one latency), and the share of requests answered 429; its scores must equal the clean run's.

All traffic goes to 127.0.0.1; every loop is bounded by N and by timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = [ROOT / "api", ROOT / "runner", ROOT / "operator", ROOT]
MODEL = "bench-model"
SERVER_START_TIMEOUT = 30.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--samples", "-n", type=int, default=5000, help="N (default 5000)")
    parser.add_argument("--latency", "-l", type=float, default=0.05, help="L, seconds")
    parser.add_argument("--concurrency", "-c", type=int, default=64, help="C (maxConcurrency)")
    parser.add_argument("--rate-limit", type=float, default=0.20, help="fraction of 429s")
    parser.add_argument("--retry-after", default="1", help="Retry-After of the 429s")
    parser.add_argument("--server-error", type=float, default=0.05, help="fraction of 500s")
    parser.add_argument("--timeout", type=float, default=0.02, help="fraction of hangs")
    parser.add_argument("--truncated", type=float, default=0.0, help="fraction cut short")
    parser.add_argument(
        "--request-timeout", type=int, default=1, help="model.timeoutSeconds (both runs)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-faults", action="store_true", help="skip the fault run")
    parser.add_argument(
        "--provider-rpm",
        type=int,
        default=3750,
        help="provider-like run: requests per minute of the server's bucket (0: no such run)",
    )
    parser.add_argument(
        "--provider-tpm",
        type=int,
        default=120_000,
        help="provider-like run: tokens per minute (prompt characters / 4 + maxTokens each)",
    )
    parser.add_argument(
        "--provider-window",
        type=float,
        default=60.0,
        help="provider-like run: seconds the buckets refill in (a minute, as providers say)",
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the runner process ---------------------------------------------------------------------


def child(config_path: Path) -> None:
    """Runs in the runner process: one shard, timed; prints one JSON line."""
    imported = time.monotonic()
    config = json.loads(config_path.read_text())
    from prometheus_client import REGISTRY

    from eval_api.v1alpha1 import Evaluation
    from eval_runner.metrics import CONCURRENCY
    from eval_runner.pipeline import run_shard
    from eval_runner.runtime import run as run_async

    evaluation = Evaluation.model_validate(config["evaluation"])
    labels = {"role": "model", "model": MODEL}

    def sample(name: str, extra: dict[str, str] | None = None) -> float:
        return REGISTRY.get_sample_value(name, {**labels, **(extra or {})}) or 0.0

    def concurrency() -> float:
        # Only this gauge is collected: a full registry collect every tick would cost the
        # runner CPU (and latency) that the run itself does not spend.
        for metric in CONCURRENCY.collect():
            for s in metric.samples:
                if s.labels == labels:
                    return s.value
        return float(evaluation.spec.model.max_concurrency)

    async def main() -> dict[str, Any]:
        lowest = [float(evaluation.spec.model.max_concurrency)]
        stop = asyncio.Event()

        async def watch_concurrency() -> None:
            # The gauge as a scrape would see it; bounded by the run's end.
            while not stop.is_set():
                lowest[0] = min(lowest[0], concurrency())
                try:
                    await asyncio.wait_for(stop.wait(), 0.05)
                except TimeoutError:
                    pass

        watcher = asyncio.create_task(watch_concurrency())
        ready: list[float] = []

        def progress(_: object) -> None:
            # Called first when every prompt is rendered, just before the first request.
            if not ready:
                ready.append(time.monotonic())

        started = time.monotonic()
        cpu_started = time.process_time()
        summary = await run_shard(
            evaluation,
            0,
            1,
            None,
            dataset_file=Path(config["dataset"]),
            on_progress=progress,
        )
        cpu = time.process_time() - cpu_started
        finished = time.monotonic()
        stop.set()
        await watcher
        outcomes: dict[str, float] = {}
        retries: dict[str, float] = {}
        for metric in REGISTRY.collect():
            for s in metric.samples:
                if s.labels.get("model") != MODEL:
                    continue
                if s.name == "eval_runner_requests_total":
                    outcomes[s.labels["outcome"]] = s.value
                elif s.name == "eval_runner_retries_total":
                    retries[s.labels["error_class"]] = s.value
        return {
            "run_started": started,
            "ready": ready[0],
            "imported": imported,
            "wall": finished - ready[0],
            "prepare": ready[0] - started,
            "cpu": cpu,
            "summary": json.loads(summary.model_dump_json(by_alias=True)),
            "outcomes": outcomes,
            "retries": retries,
            "concurrency_min": lowest[0],
            "concurrency_cuts": sample("eval_runner_concurrency_cuts_total"),
            "breaker_opens": sample("eval_runner_circuit_breaker_opens_total"),
            "request_seconds": sample("eval_runner_request_duration_seconds_sum"),
            "request_count": sample("eval_runner_request_duration_seconds_count"),
        }

    result = run_async(main())
    print(json.dumps(result), flush=True)


# --- the driver -------------------------------------------------------------------------------


def env() -> dict[str, str]:
    variables = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    variables["PYTHONPATH"] = os.pathsep.join(str(p) for p in SOURCE_ROOTS)
    return variables


def write_dataset(path: Path, samples: int) -> None:
    """N arithmetic questions; every 7th target is off by one, so scores are not all 1."""
    with path.open("w") as out:
        for i in range(samples):
            a, b = 17 * i % 1000, 31 * i % 997
            target = a + b + (1 if i % 7 == 3 else 0)
            out.write(json.dumps({"input": f"What is {a} + {b}?", "target": str(target)}) + "\n")


def evaluation(args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "Evaluation",
        "metadata": {"name": "bench", "namespace": "bench"},
        "spec": {
            "model": {
                "name": MODEL,
                "baseURL": base_url,
                "maxConcurrency": args.concurrency,
                "timeoutSeconds": args.request_timeout,
                "parameters": {"temperature": "0", "maxTokens": 16},
                "pricing": {"inputPerMillionUSD": "0.15", "outputPerMillionUSD": "0.60"},
            },
            "dataset": {"configMapRef": {"name": "bench", "key": "bench.jsonl"}},
            "task": {
                "systemPrompt": "You are a careful calculator.",
                "promptTemplate": "Answer with only the number. {{ input }}",
                "scorers": [{"type": "exact_match"}, {"type": "numeric"}],
            },
            # Generous: the hot path includes the budget's reservations, never its stop.
            "budget": {"maxCostUSD": "1000", "maxRequests": 10_000_000},
        },
    }


class Server:
    """The model server in a process of its own."""

    def __init__(self, latency: float, faults: list[str]) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.model_server",
                "--latency",
                str(latency),
                *faults,
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env(),
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "listening on PORT", or "" if it died
        if not line.startswith("listening on "):
            self.process.kill()
            raise SystemExit(f"the model server did not start: {line!r}")
        self.port = int(line.split()[-1])

    def stats(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as rsp:
            return json.loads(rsp.read())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def run_once(
    args: argparse.Namespace, workdir: Path, name: str, faults: list[str]
) -> dict[str, Any]:
    server = Server(args.latency, faults)
    try:
        config = workdir / f"{name}.json"
        config.write_text(
            json.dumps(
                {
                    "evaluation": evaluation(args, f"http://127.0.0.1:{server.port}/v1"),
                    "dataset": str(workdir / "bench.jsonl"),
                }
            )
        )
        spawned = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(config)],
            capture_output=True,
            text=True,
            env=env(),
            cwd=ROOT,
            timeout=600,
        )
        if done.returncode != 0:
            raise SystemExit(f"the runner failed ({done.returncode}):\n{done.stderr[-4000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["startup"] = result["ready"] - spawned
        result["server"] = server.stats()
        return result
    finally:
        server.stop()


def aiohttp_version() -> str:
    from importlib.metadata import version

    return version("aiohttp")


def means(summary: dict[str, Any]) -> dict[str, float]:
    return {
        name: sums["sum"] / sums["n"] if sums["n"] else float("nan")
        for name, sums in summary["scores"].items()
    }


def report(args: argparse.Namespace) -> int:
    n, latency, c = args.samples, args.latency, args.concurrency
    limit = n * latency / c
    with tempfile.TemporaryDirectory(prefix="eval-bench-") as tmp:
        workdir = Path(tmp)
        write_dataset(workdir / "bench.jsonl", n)
        clean = run_once(args, workdir, "clean", [])
        s = clean["summary"]
        transport = f"aiohttp {aiohttp_version()}"
        print(f"clean run: N={n} L={latency * 1000:g} ms C={c} transport={transport}")
        print(
            f"  start-up: {clean['startup']:.3f} s (not in the wall: process spawn -> first "
            f"request, of which {clean['prepare']:.3f} s dataset load and prompt rendering)"
        )
        print(f"  wall: {clean['wall']:.3f} s (first request -> last sample scored)")
        print(f"  physical limit N*L/C: {limit:.3f} s")
        print(f"  ratio wall/limit: {clean['wall'] / limit:.3f}")
        mean = clean["request_seconds"] / max(clean["request_count"], 1)
        late = clean["server"]["meanLatenessSeconds"]
        print(
            f"  mean request duration: {mean * 1000:.2f} ms (L = {latency * 1000:g} ms; the "
            f"server's timers answered {late * 1000:.2f} ms past L on average)"
        )
        print(
            f"  runner CPU: {clean['cpu'] * 1000 / n:.3f} ms/sample "
            f"({clean['cpu']:.3f} s in run_shard, dataset load and rendering included)"
        )
        print(f"  samples: {s['completed']} scored, {s['failed']} errored")
        ok = True
        if not args.no_faults:
            ok = report_faults(args, clean, run_once(args, workdir, "faults", fault_flags(args)))
        if args.provider_rpm or args.provider_tpm:
            flags = ["--window", str(args.provider_window)]
            if args.provider_rpm:
                flags += ["--rpm", str(args.provider_rpm)]
            if args.provider_tpm:
                flags += ["--tpm", str(args.provider_tpm)]
            paced = run_once(args, workdir, "provider", flags)
            ok = report_provider(args, clean, paced) and ok
    return 0 if ok else 1


def fault_flags(args: argparse.Namespace) -> list[str]:
    return [
        "--rate-limit",
        str(args.rate_limit),
        "--retry-after",
        args.retry_after,
        "--server-error",
        str(args.server_error),
        "--timeout",
        str(args.timeout),
        "--hang-seconds",
        str(args.request_timeout + 2),
        "--truncated",
        str(args.truncated),
        "--seed",
        str(args.seed),
    ]


def same_scores(clean: dict[str, Any], other: dict[str, Any]) -> bool:
    return (
        clean["summary"]["scores"] == other["summary"]["scores"]
        and not (other["summary"]["failed"])
    )


def report_faults(args: argparse.Namespace, clean: dict[str, Any], fault: dict[str, Any]) -> bool:
    s, f = clean["summary"], fault["summary"]
    clean_scores, fault_scores = means(s), means(f)
    identical = same_scores(clean, fault)
    print(
        f"fault run: {args.rate_limit:.0%} 429 (Retry-After: {args.retry_after}), "
        f"{args.server_error:.0%} 500, {args.timeout:.0%} timeouts "
        f"(timeoutSeconds {args.request_timeout}), {args.truncated:.0%} truncated bodies"
    )
    print(f"  wall: {fault['wall']:.3f} s ({fault['wall'] / clean['wall']:.2f} x the clean run)")
    for name in clean_scores:
        ratio = fault_scores[name] / clean_scores[name] if clean_scores[name] else float("nan")
        print(
            f"  ratio of scores, {name}: {ratio:.6f} "
            f"({fault_scores[name]:.6f} / {clean_scores[name]:.6f})"
        )
    print(f"  scores identical to the clean run: {'yes' if identical else 'NO'}")
    print(f"  samples: {f['completed']} scored, {f['failed']} errored {f['errors'] or ''}")
    injected = fault["server"]["injected"]
    print(
        "  injected by the server: "
        + ", ".join(f"{k}={v}" for k, v in sorted(injected.items()))
        + f" of {fault['server']['requests']} requests"
    )
    print(
        "  retries: "
        + ", ".join(f"{k}={v:g}" for k, v in sorted(fault["retries"].items()))
        + f" (total {sum(fault['retries'].values()):g})"
    )
    print(
        f"  adaptive concurrency: gauge minimum {fault['concurrency_min']:g} of "
        f"{args.concurrency}, {fault['concurrency_cuts']:g} cuts; circuit breaker opened "
        f"{fault['breaker_opens']:g} times"
    )
    return identical


def bucket_allows(stats: dict[str, Any], latency: float) -> float:
    """The earliest the last request could have been answered: what fits in each full bucket
    goes at once, the rest at its refill rate (limit per window), plus one latency."""
    buckets = stats["rateLimits"]
    window = buckets["windowSeconds"]
    waits = [
        max(0.0, buckets["charged"][name] - limit) * window / limit
        for name, limit in buckets["limits"].items()
    ]
    return max(waits) + latency


def report_provider(args: argparse.Namespace, clean: dict[str, Any], paced: dict[str, Any]) -> bool:
    stats = paced["server"]
    allowed = bucket_allows(stats, args.latency)
    throttled = stats["rateLimits"]["throttled"]
    identical = same_scores(clean, paced)
    print(
        f"provider-like run: buckets of {args.provider_rpm} requests and {args.provider_tpm} "
        f"tokens per {args.provider_window:g} s, refilled continuously, x-ratelimit-* headers "
        "on every answer"
    )
    print(f"  wall: {paced['wall']:.3f} s; the buckets allow {allowed:.3f} s")
    print(f"  ratio wall/allowed: {paced['wall'] / allowed:.3f}")
    print(
        f"  answered 429: {throttled} of {stats['requests']} requests "
        f"({100 * throttled / stats['requests']:.2f}%)"
    )
    print(
        f"  samples: {paced['summary']['completed']} scored, {paced['summary']['failed']} "
        f"errored; scores identical to the clean run: {'yes' if identical else 'NO'}"
    )
    return identical


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        child(args.child)
        return 0
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
