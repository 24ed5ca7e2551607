"""Prometheus metrics of the runner process, served at GET /metrics.

The names and labels are a contract (dashboards and the chart's PrometheusRule alerts use
them; the README lists them): change them only with a new name. Labels never hold a key or a
URL: `role` is "model" or "judge", `model` the model name from the spec.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LABELS = ("role", "model")

REQUESTS = Counter(
    "eval_runner_requests_total",
    "HTTP requests sent to model endpoints (every attempt), by outcome: ok, or an error class "
    "such as http_429, http_500, timeout, connection, invalid_json.",
    [*LABELS, "outcome"],
)
REQUEST_DURATION = Histogram(
    "eval_runner_request_duration_seconds",
    "Duration of one HTTP request to a model endpoint, failed ones included.",
    LABELS,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
RETRIES = Counter(
    "eval_runner_retries_total",
    "Requests repeated after a retryable failure, by the error class that caused the retry.",
    [*LABELS, "error_class"],
)
TOKENS = Counter(
    "eval_runner_tokens_total",
    "Tokens reported by the provider, by kind: input or output.",
    [*LABELS, "kind"],
)
COST = Counter(
    "eval_runner_cost_usd_total",
    "Cost in US dollars from the spec's pricing: answered requests at their reported tokens, "
    "timed-out ones at their worst case.",
    LABELS,
)
PROMPT_CACHE_TOKENS = Counter(
    "eval_runner_prompt_cache_tokens_total",
    "Input tokens the provider reported as read from its prompt cache.",
    LABELS,
)
TRUNCATED = Counter(
    "eval_runner_truncated_answers_total",
    "Answers cut at maxTokens (finish_reason length, stop_reason max_tokens).",
    LABELS,
)
ERRORS = Counter(
    "eval_runner_errors_total",
    "Samples counted as errored (never scored), by error class.",
    ["error_class"],
)
SAMPLES = Counter(
    "eval_runner_samples_total",
    "Samples finished, by result: scored, or errored (failed after retries, never scored).",
    ["result"],
)
CONCURRENCY = Gauge(
    "eval_runner_concurrency",
    "Current adaptive concurrency limit (maxConcurrency, halved on 429/503, grown back on "
    "success).",
    LABELS,
)
CONCURRENCY_CUTS = Counter(
    "eval_runner_concurrency_cuts_total",
    "Times the adaptive concurrency limit was cut because of 429/503 answers.",
    LABELS,
)
IN_FLIGHT = Gauge(
    "eval_runner_in_flight_requests",
    "Requests currently waiting for an answer.",
    LABELS,
)
BREAKER_STATE = Gauge(
    "eval_runner_circuit_breaker_state",
    "Circuit breaker of the endpoint: 0 closed, 1 half-open, 2 open.",
    LABELS,
)
BREAKER_OPENS = Counter(
    "eval_runner_circuit_breaker_opens_total",
    "Times the endpoint's circuit breaker opened.",
    LABELS,
)
BUDGET_EXCEEDED = Counter(
    "eval_runner_budget_exceeded_total",
    "Shards stopped because the next request could exceed their share of the budget.",
)
CACHE_LOOKUPS = Counter(
    "eval_runner_cache_lookups_total",
    "Response cache lookups, by result: hit (not sent to the model), miss, error (Redis "
    "failed: the model was asked), skipped (the cache is paused after a failure).",
    ["result"],
)
CACHE_ERRORS = Counter(
    "eval_runner_cache_errors_total",
    "Response cache operations that failed (Redis down, refusing, out of memory), by "
    "operation: get or set. Each pauses the cache for 30 s.",
    ["operation"],
)
STORE_ROWS = Counter(
    "eval_runner_store_rows_written_total",
    "Sample rows written to the store (rows already there, re-sent after a lost answer, are "
    "not counted).",
)
STORE_FLUSH_ERRORS = Counter(
    "eval_runner_store_flush_errors_total",
    "Batches of sample rows the store failed to take; each is kept and sent again whole.",
)
STORE_WRITE_DURATION = Histogram(
    "eval_runner_store_write_duration_seconds",
    "Duration of one successful batch write to the store (COPY and insert, one transaction).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STORE_BUFFERED = Gauge(
    "eval_runner_store_buffered_rows",
    "Finished samples not yet written to the store (they pile up while it is unreachable).",
)
