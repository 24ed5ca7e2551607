"""The real kopf operator against the API emulator over HTTP, with real runner processes.

A `Cluster` is: an emulated API server with our CRD installed, a local model server with known
answers, the operator (kopf.testing.KopfRunner, in a thread), and a stand-in Job controller that
runs each index's pod as an `eval-runner shard` process. Tests create Evaluations the way
`kubectl apply` would (HTTP POST) and assert the status a user sees.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kopf.testing
import yaml

from tests.support.job_controller import FakeJobController
from tests.support.kubeapi import KubeAPIServer, RequestRecord, running_kubeapi, use_kubeconfig
from tests.support.kubeapi.authz import RBACAuthorizer
from tests.support.model_server import ModelServer
from tests.support.stack_controller import StackController

ROOT = Path(__file__).resolve().parents[2]
NS = "default"
GROUP, VERSION, PLURAL = "evals.io", "v1alpha1", "evaluations"
# Ten questions; the model server answers the ones in WRONG off by one.
QUESTIONS = [
    f"What is {a} + {b}?"
    for a, b in [
        (1, 2),
        (3, 4),
        (5, 6),
        (7, 8),
        (9, 10),
        (11, 12),
        (13, 14),
        (15, 16),
        (17, 18),
        (19, 20),
    ]
]
WRONG = ["What is 5 + 6?", "What is 15 + 16?"]
RECORDS = [
    {"question": q, "answer": str(sum(int(x) for x in q[8:-1].split(" + ")))} for q in QUESTIONS
]
API_KEY = "canary-key-for-integration-tests-0001"
OPERATOR_TOKEN = "eval-operator-service-account-token"


@dataclass
class Cluster:
    api: KubeAPIServer
    model: ModelServer
    controller: FakeJobController
    operator: Operator
    stack: StackController | None = None  # with stack=True: real PostgreSQL and Redis

    # --- what kubectl would do ------------------------------------------------------------

    def apply(self, obj: dict[str, Any]) -> httpx.Response:
        kind_paths = {
            "Evaluation": f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}",
            "EvalSuite": f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/evalsuites",
            "Secret": f"/api/v1/namespaces/{NS}/secrets",
            "ConfigMap": f"/api/v1/namespaces/{NS}/configmaps",
        }
        return httpx.post(self.api.url + kind_paths[obj["kind"]], json=obj, timeout=10)

    def evaluation(self, name: str) -> dict[str, Any] | None:
        return self.api.get(GROUP, VERSION, PLURAL, NS, name)

    def suite(self, name: str) -> dict[str, Any] | None:
        return self.api.get(GROUP, VERSION, "evalsuites", NS, name)

    def wait_suite(
        self, name: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.suite(name)
            if last is not None and predicate(last):
                return last
            time.sleep(0.1)
        failures = self.stack.start_failures if self.stack is not None else []
        raise AssertionError(
            f"suite {name} did not reach the state in {timeout}s; "
            f"status: {json.dumps((last or {}).get('status'), indent=1)}; "
            f"servers that failed to start: {failures}"
        )

    def wait(
        self, name: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.evaluation(name)
            if last is not None and predicate(last):
                return last
            time.sleep(0.1)
        raise AssertionError(
            f"{name} did not reach the state in {timeout}s; "
            f"status: {json.dumps((last or {}).get('status'), indent=1)}"
        )

    def wait_phase(self, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait(name, lambda ev: ev.get("status", {}).get("phase") == phase, timeout)

    def job_posts(self) -> list[str]:
        return [
            r.body["metadata"]["name"]
            for r in self.api.find_requests("POST", path_prefix="/apis/batch/v1/")
            if r.path.endswith("/jobs")
        ]

    def annotate(self, name: str, annotations: dict[str, str]) -> None:
        self.api.patch(GROUP, VERSION, PLURAL, NS, name, {"metadata": {"annotations": annotations}})

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.api.patch(GROUP, VERSION, PLURAL, NS, name, {"spec": spec})

    def operator_requests(self, method: str | None = None) -> list[RequestRecord]:
        return [
            r
            for r in list(self.api.requests)
            if r.token == OPERATOR_TOKEN and (method is None or r.method == method)
        ]

    def events_of(self, name: str, namespace: str = NS) -> list[dict[str, Any]]:
        """The Events about the Evaluation `name`, oldest first."""
        events = [
            e
            for e in self.api.list("", "v1", "events", namespace)
            if e["involvedObject"].get("kind") == "Evaluation"
            and e["involvedObject"].get("name") == name
        ]
        return sorted(events, key=lambda e: int(e["metadata"]["resourceVersion"]))

    def wait_event(
        self, name: str, reasons: tuple[str, ...], timeout: float = 60
    ) -> list[dict[str, Any]]:
        """The events of these reasons about `name`, once there is at least one (the operator
        posts an event right after the status write that announces it)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events_of(name) if e["reason"] in reasons]
            if found or time.monotonic() > deadline:
                assert found, f"no {reasons} event for {name}: {self.events_of(name)}"
                return found
            time.sleep(0.1)


def events_when(
    api: KubeAPIServer,
    until: Callable[[list[dict[str, Any]]], bool],
    *,
    namespace: str = NS,
    timeout: float = 60,
) -> list[dict[str, Any]]:
    """The namespace's Events, oldest first, once `until` holds for them. The operator posts an
    event after the status write that announces it: a test that has seen the status waits for
    the event rather than reading the events at once."""
    deadline = time.monotonic() + timeout
    while True:
        events = sorted(
            api.list("", "v1", "events", namespace),
            key=lambda e: int(e["metadata"]["resourceVersion"]),
        )
        if until(events):
            return events
        reasons = [(e["involvedObject"].get("name"), e["reason"]) for e in events]
        assert time.monotonic() < deadline, f"the events never got there: {reasons}"
        time.sleep(0.1)


def condition(ev: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in ev["status"]["conditions"] if c["type"] == type_)


def manifest(name: str, model: ModelServer, **spec_changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {
            "name": "stand-in",
            "baseURL": model.base_url,
            "apiKeySecretRef": {"name": "model-key", "key": "api-key"},
            "maxConcurrency": 4,
        },
        "dataset": {"inline": RECORDS, "inputField": "question", "targetField": "answer"},
        "task": {
            "promptTemplate": "{{ input }}",
            "scorers": [
                {"type": "exact_match"},
                {"type": "numeric", "name": "close", "tolerance": "1"},
            ],
        },
        "execution": {"shards": 2, "backoffLimitPerIndex": 2},
        "thresholds": ["exact_match >= 0.75"],
    }
    spec.update(spec_changes)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Evaluation",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def secret(name: str = "model-key") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "type": "Opaque",
        "data": {"api-key": base64.b64encode(API_KEY.encode()).decode()},
    }


@contextmanager
def controller_thread(controller: FakeJobController) -> Iterator[None]:
    loop = asyncio.new_event_loop()
    task_holder: dict[str, asyncio.Task[None]] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        task_holder["task"] = loop.create_task(controller.run())
        try:
            loop.run_until_complete(task_holder["task"])
        except asyncio.CancelledError:
            pass

    thread = threading.Thread(target=run, name="job-controller", daemon=True)
    thread.start()
    try:
        yield
    finally:
        while "task" not in task_holder:
            time.sleep(0.01)
        loop.call_soon_threadsafe(task_holder["task"].cancel)
        thread.join(timeout=20)


class Operator:
    """The real operator (kopf run -m eval_operator.main) in a thread; stoppable, restartable."""

    ARGS = ["run", "--standalone", "--namespace", NS, "--verbose", "-m", "eval_operator.main"]

    def __init__(self, args: list[str] | None = None) -> None:
        self.args = args or self.ARGS
        self.runner: kopf.testing.KopfRunner | None = None
        self.output = ""  # what the operator printed while it ran (after stop())

    def start(self) -> None:
        self.runner = kopf.testing.KopfRunner(self.args, timeout=60)
        self.runner.__enter__()

    def stop(self) -> None:
        assert self.runner is not None
        self.runner.__exit__(None, None, None)
        assert self.runner.exception is None, repr(self.runner.exception)
        assert self.runner.exit_code == 0, self.runner.output
        self.output = self.runner.output
        self.runner = None


OPERATOR_ENVIRONMENT = {
    "EVAL_OPERATOR_PROGRESS_INTERVAL_SECONDS": "0.5",
    "EVAL_OPERATOR_PROGRESS_WRITE_INTERVAL_SECONDS": "1",
    "EVAL_OPERATOR_MISSING_INPUT_RECHECK_SECONDS": "0.5",
    "EVAL_OPERATOR_POD_START_TIMEOUT_SECONDS": "3",
    "EVAL_OPERATOR_RUNNER_IMAGE": "eval-runner:test",
}


@contextmanager
def operator_environment(extra: dict[str, str] | None = None) -> Iterator[None]:
    """The operator's settings (read at its start-up) for the duration of a test module."""
    wanted = {**OPERATOR_ENVIRONMENT, **(extra or {})}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def running_cluster(
    workdir: Path,
    *,
    wrong: list[str] = WRONG,
    operator_args: list[str] | None = None,
    stack: bool = False,
    model: ModelServer | None = None,
    environment: dict[str, str] | None = None,
    extra_crds: list[Path] | None = None,
    authorizer: RBACAuthorizer | None = None,
    runner_env: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """`stack`: EvalSuites' StatefulSets and Deployments run real PostgreSQL and Redis
    servers (tests/support/stack_controller.py), which pods reach by their Services' names.
    `environment`: more operator settings (EVAL_OPERATOR_*); `extra_crds`: CRD files installed
    before the operator starts (an optional platform's); `authorizer`: RBAC for the tokens it
    names (OPERATOR_TOKEN is the operator's), as the apiserver's authorizer decides;
    `runner_env`: what every runner container gets besides its own env."""
    with (
        operator_environment(environment),
        running_kubeapi(bookmark_interval=2.0, authorizer=authorizer) as api,
        (model or ModelServer(wrong=wrong)).in_thread() as model,
        StackController(api) if stack else contextlib.nullcontext() as stack_controller,
    ):
        for path in [*sorted((ROOT / "crds").glob("*.yaml")), *(extra_crds or [])]:
            api.create(yaml.safe_load(path.read_text()))
        assert api.create(secret())
        # The operator's requests carry a token of their own: tests can tell them apart.
        kubeconfig = api.write_kubeconfig(workdir / "kubeconfig", token=OPERATOR_TOKEN)
        controller = FakeJobController(
            api.url,
            workdir / "pods",
            hosts_file=stack_controller.hosts_file if stack_controller else None,
            runner_env=runner_env,
        )
        with use_kubeconfig(kubeconfig), controller_thread(controller):
            running = Operator(operator_args)
            running.start()
            try:
                yield Cluster(
                    api=api,
                    model=model,
                    controller=controller,
                    operator=running,
                    stack=stack_controller,
                )
            finally:
                running.stop()
        if stack_controller is not None:
            assert stack_controller.errors == [], stack_controller.errors
