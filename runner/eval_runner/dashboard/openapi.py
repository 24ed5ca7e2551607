"""The dashboard API's OpenAPI 3.1 document, its schemas generated from the response models
(eval_runner.dashboard.models): what the API answers and what it documents cannot drift."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic.json_schema import models_json_schema

from eval_runner.dashboard import models

API_VERSION = "v1"
_RESPONSES = (
    models.SuiteList,
    models.Leaderboard,
    models.History,
    models.EvaluationList,
    models.RunList,
    models.RunSummary,
    models.SamplePage,
    models.Comparison,
    models.Readiness,
    models.Problem,
)


def _query(name: str, description: str, schema: dict[str, Any], required: bool = False) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _ref(model: type) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


_PROBLEMS = {
    "400": _json(models.Problem, "A parameter is wrong (the message names it)."),
    "404": _json(models.Problem, "No such run in the store."),
    "429": {
        "description": "Too many requests from this client; retry after Retry-After seconds.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        "content": {"application/json": {"schema": _ref(models.Problem)}},
    },
    "503": _json(models.Problem, "The store does not answer."),
}


def _get(summary: str, model: type, parameters: list[dict[str, Any]] | None = None) -> dict:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters or [],
            "responses": {"200": _json(model, summary), **_PROBLEMS},
        }
    }


_NS, _SUITE = _path("namespace", "The suite's namespace."), _path("suite", "The suite's name.")
_UID = _path("uid", "The Evaluation's metadata.uid.")
_RUN = _path("run", "The run (the Job's name).")
_LIMIT = {"type": "integer", "minimum": 1}


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(model, "serialization") for model in _RESPONSES],
        by_alias=True,
        ref_template="#/components/schemas/{model}",
    )
    sample_filters = [
        _query("cursor", "From the previous page's nextCursor.", {"type": "string"}),
        _query("limit", "Samples per page (at most 200).", {**_LIMIT, "maximum": 200}),
        _query("scorer", "Only samples this scorer scored.", {"type": "string"}),
        _query("wrong", "Only samples the scorer scored below `below`.", {"type": "boolean"}),
        _query("below", "What wrong means (default 0.5).", {"type": "number"}),
        _query("errored", "Only samples that errored.", {"type": "boolean"}),
    ]
    pair = [
        _query("baselineUid", "The baseline run's Evaluation uid.", {"type": "string"}, True),
        _query("baselineRun", "The baseline run.", {"type": "string"}, True),
        _query("candidateUid", "The candidate run's Evaluation uid.", {"type": "string"}, True),
        _query("candidateRun", "The candidate run.", {"type": "string"}, True),
        _query("alpha", "Significance level (default 0.05).", {"type": "number"}),
        _query("maxDrop", "Largest drop tolerated (default 0).", {"type": "number"}),
    ]
    paths = {
        "/api/v1/suites": _get("The suites with runs in the store.", models.SuiteList),
        "/api/v1/suites/{namespace}/{suite}/leaderboard": _get(
            "Per task, every model's newest succeeded run, best first.",
            models.Leaderboard,
            [_NS, _SUITE],
        ),
        "/api/v1/suites/{namespace}/{suite}/history": _get(
            "Each cell's succeeded runs, oldest first.",
            models.History,
            [
                _NS,
                _SUITE,
                _query("cell", "Only this cell (<model>/<task>).", {"type": "string"}),
                _query("limit", "Newest runs per cell (default 30).", {**_LIMIT, "maximum": 500}),
            ],
        ),
        "/api/v1/evaluations": _get(
            "Evaluations with runs in the store, each with its newest run.",
            models.EvaluationList,
            [
                _query("namespace", "Only this namespace.", {"type": "string"}),
                _query("suite", "Only this suite's.", {"type": "string"}),
            ],
        ),
        "/api/v1/evaluations/{namespace}/{name}/runs": _get(
            "An Evaluation's runs, newest first.",
            models.RunList,
            [
                _NS,
                _path("name", "The Evaluation's name."),
                _query("limit", "At most this many (default 20).", {**_LIMIT, "maximum": 200}),
            ],
        ),
        "/api/v1/runs/{uid}/{run}": _get(
            "One run: per-scorer means and intervals, errors, tokens, cost, latency.",
            models.RunSummary,
            [_UID, _RUN],
        ),
        "/api/v1/runs/{uid}/{run}/samples": _get(
            "A run's samples in order, a page at a time.",
            models.SamplePage,
            [_UID, _RUN, *sample_filters],
        ),
        "/api/v1/compare": _get(
            "Two runs compared sample by sample (one-sided McNemar / Tango or paired t-test, "
            "paired bootstrap).",
            models.Comparison,
            pair,
        ),
        "/readyz": _get("The store and the cache answer.", models.Readiness),
    }
    paths["/readyz"]["get"]["responses"]["503"] = _json(
        models.Readiness, "A component does not answer."
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "eval-operator results dashboard",
            "version": API_VERSION,
            "description": "Read-only access to an EvalSuite's stored runs and samples.",
        },
        "paths": paths,
        "components": {"schemas": schemas["$defs"]},
    }
