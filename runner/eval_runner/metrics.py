"""Prometheus metrics of the runner process, served at GET /metrics."""

from __future__ import annotations

from prometheus_client import Counter

SAMPLES = Counter(
    "eval_runner_samples_total",
    "Samples finished, by outcome (scored, or failed after retries and never scored).",
    ["outcome"],
)
REQUESTS = Counter(
    "eval_runner_requests_total",
    "Model requests sent (every attempt), by outcome: ok or an error class such as http_429.",
    ["outcome"],
)
