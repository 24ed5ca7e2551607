"""Plays the Job controller and the kubelet for the operator's Indexed Jobs, over the real API.

There is no cluster here, so this stands in for the two controllers a cluster would run: it
watches (by listing) Jobs the operator created, creates a Pod object per completion index, runs
that pod's container as a real `eval-runner shard` process on this machine with the env and
files the pod spec asks for (Secret and ConfigMap values read from the API, as the kubelet
does), reports the pod's status and termination message, retries a failed index up to
backoffLimitPerIndex (honouring the FailIndex podFailurePolicy rule), and finally sets the
Job's Complete or Failed condition.

`crash_first_attempt` ({evaluation name: indexes}) kills the first attempt of those indexes once
it has scored at least one sample (as an OOM kill would), so tests can see a failed index being
retried.

What a kubelet would refuse to start is refused the same way, with the kubelet's reasons and
messages, and retried at every step until it can start (as the kubelet does):
- an env var from a Secret (or key) that does not exist: CreateContainerConfigError;
- an image under `unpullable.invalid/`: ErrImagePull, then ImagePullBackOff;
- a nodeSelector on `evals.io/test-unschedulable`: PodScheduled False, Unschedulable.
The image `noop.invalid/exit-zero` is a container that exits 0 at once and writes nothing (an
image that is not eval-runner); every other image runs `eval-runner`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.ports import free_port

MANAGED = "app.kubernetes.io/managed-by=eval-operator"
ROOT = Path(__file__).resolve().parents[2]
# The runner runs from the source roots, as in the image, whatever way the venv was installed.
SOURCE_PATH = os.pathsep.join(str(ROOT / root) for root in ("api", "runner"))
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def index_ranges(indexes: set[int]) -> str | None:
    """Kubernetes' compressed form: {0,1,2,5} -> "0-2,5"."""
    if not indexes:
        return None
    ordered = sorted(indexes)
    parts, start, prev = [], ordered[0], ordered[0]
    for value in ordered[1:] + [None]:  # type: ignore[list-item]
        if value is not None and value == prev + 1:
            prev = value
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if value is not None:
            start = prev = value
    return ",".join(parts)


UNPULLABLE_PREFIX = "unpullable.invalid/"
EXIT_ZERO_IMAGE = "noop.invalid/exit-zero"
UNSCHEDULABLE_LABEL = "evals.io/test-unschedulable"
# The kubelet brings mounted ConfigMaps up to date within its sync period (about a minute);
# this one, every second.
VOLUME_REFRESH_SECONDS = 1.0


def with_hosts_file(hosts: Path, command: list[str]) -> list[str]:
    """`command` in a mount namespace of its own whose /etc/hosts is `hosts`, as the kubelet
    gives every pod its own /etc/hosts and the cluster DNS answers for Services. As root, a
    plain mount namespace; otherwise a user namespace maps this user to root inside it."""
    unshare = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "-r", "--mount"]
    script = 'mount --bind "$0" /etc/hosts && exec "$@"'
    return [*unshare, "--", "sh", "-c", script, str(hosts), *command]


class NotStartable(Exception):
    """The kubelet cannot start the container yet: (reason, message) for its waiting state."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class Attempt:
    pod_name: str
    workdir: Path
    port: int
    process: asyncio.subprocess.Process | None = None  # None while the kubelet cannot start it
    killed: bool = False
    pull_failures: int = 0
    pod_spec: dict[str, Any] | None = None  # once started
    refreshed: float = 0.0  # when its volumes were last brought up to date (monotonic)
    scheduled_at: str = ""  # PodScheduled's lastTransitionTime, once bound to the node


@dataclass
class JobState:
    namespace: str
    name: str
    uid: str
    evaluation: str
    completions: int
    parallelism: int
    backoff_limit_per_index: int
    fail_index_exit_codes: set[int]
    # podFailurePolicy's Ignore rules: a new pod, no retry counted.
    ignored_exit_codes: set[int] = field(default_factory=set)
    retries: dict[int, int] = field(default_factory=dict)
    ignored: dict[int, int] = field(default_factory=dict)  # failures Ignored, per index
    running: dict[int, Attempt] = field(default_factory=dict)
    succeeded: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    finished: bool = False
    started: str = field(default_factory=now)
    indexed: bool = True
    fail_job_exit_codes: set[int] = field(default_factory=set)
    fail_reason: str = "FailedIndexes"
    # When an index that failed may start again (the Job controller's backoff), monotonic.
    not_before: dict[int, float] = field(default_factory=dict)


class FakeJobController:
    def __init__(
        self,
        api_url: str,
        workdir: Path,
        *,
        crash_first_attempt: dict[str, set[int]] | None = None,
        poll_interval: float = 0.2,
        hosts_file: Path | None = None,
        runner_env: dict[str, str] | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        # What every container gets besides its own env (a test's shorter bounds).
        self.runner_env = runner_env or {}
        # The cluster DNS stand-in: each pod's /etc/hosts (tests/support/stack_controller.py).
        self.hosts_file = hosts_file
        self.workdir = workdir
        self.crash_first_attempt = crash_first_attempt or {}
        self.poll_interval = poll_interval
        self.jobs: dict[tuple[str, str], JobState] = {}
        self.pods_created: list[str] = []
        self._session: aiohttp.ClientSession | None = None

    # --- plumbing -------------------------------------------------------------------------

    async def _request(
        self, method: str, path: str, body: Any = None, content_type: str | None = None
    ) -> Any:
        assert self._session is not None
        headers = {"Content-Type": content_type or "application/json"}
        data = json.dumps(body) if body is not None else None
        async with self._session.request(
            method, self.api_url + path, data=data, headers=headers
        ) as rsp:
            payload = await rsp.json(content_type=None)
            if rsp.status == 404:
                raise LookupError(f"{method} {path} -> 404: {payload}")
            if rsp.status >= 400:
                raise RuntimeError(f"{method} {path} -> {rsp.status}: {payload}")
            return payload

    async def _merge_status(self, path: str, status: dict[str, Any]) -> None:
        await self._request(
            "PATCH", f"{path}/status", {"status": status}, "application/merge-patch+json"
        )

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        async with aiohttp.ClientSession() as self._session:
            try:
                while True:
                    await self.step()
                    await asyncio.sleep(self.poll_interval)
            finally:
                for state in self.jobs.values():
                    for attempt in state.running.values():
                        if attempt.process is not None:
                            with contextlib.suppress(ProcessLookupError):
                                attempt.process.kill()

    async def step(self) -> None:
        listing = await self._request("GET", f"/apis/batch/v1/jobs?labelSelector={MANAGED}")
        present = set()
        for job in listing["items"]:
            key = (job["metadata"]["namespace"], job["metadata"]["name"])
            present.add(key)
            state = self.jobs.get(key)
            if state is None or state.uid != job["metadata"]["uid"]:
                state = self.jobs[key] = self._new_state(job)
            try:
                await self._drive(job, state)
            except LookupError:
                pass  # the Job (or a pod) was deleted meanwhile: the next step sees it gone
        for key in set(self.jobs) - present:
            # Deleted Job: its pods are garbage-collected; their containers stop.
            for attempt in self.jobs.pop(key).running.values():
                if attempt.process is not None:
                    with contextlib.suppress(ProcessLookupError):
                        attempt.process.kill()

    def _new_state(self, job: dict[str, Any]) -> JobState:
        spec = job["spec"]
        codes: set[int] = set()
        fail_job: set[int] = set()
        ignored: set[int] = set()
        for rule in (spec.get("podFailurePolicy") or {}).get("rules", []):
            if rule["action"] == "FailIndex" and "onExitCodes" in rule:
                codes |= set(rule["onExitCodes"]["values"])
            if rule["action"] == "FailJob" and "onExitCodes" in rule:
                fail_job |= set(rule["onExitCodes"]["values"])
            if rule["action"] == "Ignore" and "onExitCodes" in rule:
                ignored |= set(rule["onExitCodes"]["values"])
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions", 1)
        return JobState(
            namespace=job["metadata"]["namespace"],
            name=job["metadata"]["name"],
            uid=job["metadata"]["uid"],
            evaluation=job["metadata"].get("labels", {}).get("evals.io/evaluation", ""),
            completions=completions,
            parallelism=spec.get("parallelism", completions),
            # A NonIndexed Job of one completion: its backoffLimit is that one index's.
            backoff_limit_per_index=spec.get(
                "backoffLimitPerIndex", 0 if indexed else spec.get("backoffLimit", 6)
            ),
            fail_index_exit_codes=codes | fail_job,
            ignored_exit_codes=ignored,
            indexed=indexed,
            fail_job_exit_codes=fail_job,
            fail_reason="FailedIndexes" if indexed else "BackoffLimitExceeded",
        )

    async def _drive(self, job: dict[str, Any], state: JobState) -> None:
        if state.finished:
            return
        job_path = f"/apis/batch/v1/namespaces/{state.namespace}/jobs/{state.name}"
        if job["spec"].get("suspend"):
            for index, attempt in list(state.running.items()):
                if attempt.process is not None:
                    attempt.process.kill()
                    await attempt.process.wait()
                del state.running[index]
            await self._merge_status(job_path, {"active": 0})
            return

        for index, attempt in list(state.running.items()):
            if attempt.process is not None and attempt.process.returncode is None:
                pod_path = f"/api/v1/namespaces/{state.namespace}/pods/{attempt.pod_name}"
                try:
                    await self._request("GET", pod_path)
                except LookupError:
                    # The pod was deleted (`kubectl delete pod`): the kubelet stops its
                    # container, and the Job controller counts a failed attempt and retries.
                    attempt.process.kill()
                    await attempt.process.wait()
                    await self._finish_attempt(state, index, attempt, deleted=True)
                    continue
            if attempt.process is None:
                await self._try_start(job, state, index, attempt)
                continue
            await self._refresh_volumes(state, attempt)
            crash = index in self.crash_first_attempt.get(state.evaluation, set())
            if (
                crash
                and attempt.process.returncode is None
                and not state.retries.get(index)
                and not attempt.killed
            ):
                if await self._scored_some(attempt):
                    attempt.killed = True
                    attempt.process.send_signal(signal.SIGKILL)
            if attempt.process.returncode is not None:
                await self._finish_attempt(state, index, attempt)

        clock = asyncio.get_running_loop().time()
        pending = [
            i
            for i in range(state.completions)
            if i not in state.succeeded
            and i not in state.failed
            and i not in state.running
            and state.not_before.get(i, 0.0) <= clock
        ]
        for index in pending[: max(state.parallelism - len(state.running), 0)]:
            state.running[index] = await self._start_pod(job, state, index)

        done = state.succeeded | state.failed
        status: dict[str, Any] = {
            "startTime": state.started,
            "active": len(state.running),
            "ready": sum(1 for a in state.running.values() if a.process is not None),
            "succeeded": len(state.succeeded),
            "failed": sum(state.retries.values()) + len(state.failed),
            "completedIndexes": index_ranges(state.succeeded),
            "failedIndexes": index_ranges(state.failed),
        }
        if not state.indexed:
            for key in ("completedIndexes", "failedIndexes"):
                del status[key]
        if len(done) == state.completions and not state.running:
            state.finished = True
            if state.failed:
                status["conditions"] = [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": state.fail_reason,
                        "message": "Job has failed indexes"
                        if state.indexed
                        else "Job has reached the specified backoff limit",
                        "lastTransitionTime": now(),
                    }
                ]
            else:
                status["completionTime"] = now()
                status["conditions"] = [
                    {
                        "type": "Complete",
                        "status": "True",
                        "lastTransitionTime": now(),
                    }
                ]
        await self._merge_status(job_path, status)

    def kill(self, namespace: str, job: str, index: int = 0) -> bool:
        """SIGKILL the running container of one index (the node died, OOM): the Job controller
        then retries it as a failed attempt. Safe to call from another thread."""
        state = self.jobs.get((namespace, job))
        attempt = state.running.get(index) if state is not None else None
        if attempt is None or attempt.process is None or attempt.process.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(attempt.process.pid, signal.SIGKILL)
        return True

    def running_attempt(self, namespace: str, job: str, index: int = 0) -> Attempt | None:
        state = self.jobs.get((namespace, job))
        return state.running.get(index) if state is not None else None

    async def _scored_some(self, attempt: Attempt) -> bool:
        assert self._session is not None
        try:
            async with self._session.get(f"http://127.0.0.1:{attempt.port}/progress") as rsp:
                return rsp.status == 200 and (await rsp.json()).get("completed", 0) >= 1
        except aiohttp.ClientError:
            return False

    # --- one pod ----------------------------------------------------------------------------

    async def _start_pod(self, job: dict[str, Any], state: JobState, index: int) -> Attempt:
        template = job["spec"]["template"]
        pod_spec = json.loads(json.dumps(template["spec"]))
        container = pod_spec["containers"][0]
        port = free_port()
        # Every "pod" shares this host's network, so each gets its own port.
        for entry in container.get("ports", []):
            entry["containerPort"] = port
        name = f"{state.name}-{index}-{uuid.uuid4().hex[:5]}"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": state.namespace,
                "labels": {
                    **template["metadata"].get("labels", {}),
                    "batch.kubernetes.io/job-name": state.name,
                    "job-name": state.name,
                    INDEX_ANNOTATION: str(index),
                },
                "annotations": {
                    INDEX_ANNOTATION: str(index),
                    # What the Job controller counts for backoffLimitPerIndex.
                    "batch.kubernetes.io/job-index-failure-count": str(state.retries.get(index, 0)),
                    "batch.kubernetes.io/job-index-ignored-failure-count": str(
                        state.ignored.get(index, 0)
                    ),
                },
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": state.name,
                        "uid": state.uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": pod_spec,
        }
        pod_path = f"/api/v1/namespaces/{state.namespace}/pods"
        await self._request("POST", pod_path, pod)
        self.pods_created.append(name)
        workdir = self.workdir / name
        workdir.mkdir(parents=True)
        attempt = Attempt(pod_name=name, workdir=workdir, port=port)
        await self._try_start(job, state, index, attempt, pod_spec=pod_spec)
        return attempt

    async def _try_start(
        self,
        job: dict[str, Any],
        state: JobState,
        index: int,
        attempt: Attempt,
        pod_spec: dict[str, Any] | None = None,
    ) -> None:
        """Start the attempt's container, or report why the kubelet cannot (yet)."""
        pod_path = f"/api/v1/namespaces/{state.namespace}/pods/{attempt.pod_name}"
        pod = await self._request("GET", pod_path)
        pod_spec = pod_spec or pod["spec"]
        annotations = pod["metadata"].get("annotations") or {}
        container = pod_spec["containers"][0]
        try:
            if UNSCHEDULABLE_LABEL in (pod_spec.get("nodeSelector") or {}):
                await self._merge_status(
                    pod_path,
                    {
                        "phase": "Pending",
                        "conditions": [
                            {
                                "type": "PodScheduled",
                                "status": "False",
                                "reason": "Unschedulable",
                                "message": "0/1 nodes are available: 1 node(s) didn't match "
                                "Pod's node affinity/selector. preemption: 0/1 nodes are "
                                "available: 1 Preemption is not helpful for scheduling.",
                                "lastTransitionTime": now(),
                            }
                        ],
                    },
                )
                return
            image = container["image"]
            if image.startswith(UNPULLABLE_PREFIX):
                attempt.pull_failures += 1
                reason = "ErrImagePull" if attempt.pull_failures == 1 else "ImagePullBackOff"
                raise NotStartable(
                    reason,
                    f'Back-off pulling image "{image}"'
                    if reason == "ImagePullBackOff"
                    else f'failed to pull and unpack image "{image}": not found',
                )
            env = await self._container_env(
                state.namespace, container, attempt.workdir, annotations
            )
            env.update(JOB_COMPLETION_INDEX=str(index), EVAL_PROGRESS_PORT=str(attempt.port))
            config_path = await self._materialize_volumes(
                state.namespace, pod_spec, container, attempt.workdir, env
            )
        except NotStartable as blocked:
            # Bound to the node (PodScheduled True since then); the kubelet cannot start it.
            attempt.scheduled_at = attempt.scheduled_at or now()
            await self._merge_status(
                pod_path,
                {
                    "phase": "Pending",
                    "conditions": [
                        {
                            "type": "PodScheduled",
                            "status": "True",
                            "lastTransitionTime": attempt.scheduled_at,
                        }
                    ],
                    "containerStatuses": [
                        {
                            "name": "runner",
                            "ready": False,
                            "restartCount": 0,
                            "image": container["image"],
                            "imageID": "",
                            "state": {
                                "waiting": {"reason": blocked.reason, "message": blocked.message}
                            },
                        }
                    ],
                },
            )
            return
        attempt.pod_spec = pod_spec
        termination_log = attempt.workdir / "termination-log"
        if container["image"] == EXIT_ZERO_IMAGE:
            command = [sys.executable, "-c", "pass"]
        else:
            args = list(container["args"])
            if "--config" in args:
                args[args.index("--config") + 1] = config_path
            command = [
                sys.executable, "-m", "eval_runner", *args,
                "--termination-log", str(termination_log),
            ]  # fmt: skip
        if self.hosts_file is not None:
            command = with_hosts_file(self.hosts_file, command)
        attempt.process = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdout=(attempt.workdir / "stdout.log").open("wb"),  # noqa: ASYNC230 (a local file, once per pod)
            stderr=asyncio.subprocess.STDOUT,
        )
        await self._merge_status(
            pod_path,
            {
                "phase": "Running",
                "podIP": "127.0.0.1",
                "startTime": now(),
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "True",
                        "lastTransitionTime": attempt.scheduled_at or now(),
                    }
                ],
                "containerStatuses": [
                    {
                        "name": "runner",
                        "ready": True,
                        "restartCount": 0,
                        "image": container["image"],
                        "imageID": "",
                        "state": {"running": {"startedAt": now()}},
                    }
                ],
            },
        )

    async def _finish_attempt(
        self, state: JobState, index: int, attempt: Attempt, *, deleted: bool = False
    ) -> None:
        del state.running[index]
        assert attempt.process is not None
        code = attempt.process.returncode
        exit_code = 128 + -code if code < 0 else code
        log_path = attempt.workdir / "termination-log"
        message = log_path.read_text() if log_path.exists() else ""
        if deleted:
            state.retries[index] = state.retries.get(index, 0) + 1
            if state.retries[index] > state.backoff_limit_per_index:
                state.failed.add(index)
            return
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": state.started,
            "finishedAt": now(),
        }
        if message:
            terminated["message"] = message
        await self._merge_status(
            f"/api/v1/namespaces/{state.namespace}/pods/{attempt.pod_name}",
            {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "containerStatuses": [
                    {
                        "name": "runner",
                        "ready": False,
                        "restartCount": 0,
                        "image": "",
                        "imageID": "",
                        "state": {"terminated": terminated},
                    }
                ],
            },
        )
        if exit_code == 0:
            state.succeeded.add(index)
        elif exit_code in state.ignored_exit_codes:
            state.ignored[index] = state.ignored.get(index, 0) + 1
        elif exit_code in state.fail_index_exit_codes:
            state.failed.add(index)
            if exit_code in state.fail_job_exit_codes:
                state.fail_reason = "PodFailurePolicy"
        else:
            state.retries[index] = state.retries.get(index, 0) + 1
            if state.retries[index] > state.backoff_limit_per_index:
                state.failed.add(index)
            elif not state.indexed:
                # The Job controller's backoff between retries (10 s doubling, up to 6 min),
                # shortened here: a retry never follows a failure at once.
                delay = min(0.5 * 2 ** (state.retries[index] - 1), 5.0)
                state.not_before[index] = asyncio.get_running_loop().time() + delay

    async def _container_env(
        self,
        namespace: str,
        container: dict[str, Any],
        workdir: Path,
        annotations: dict[str, str],
    ) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        env.update(TMPDIR=str(workdir), PYTHONPATH=SOURCE_PATH, **self.runner_env)
        for source in container.get("envFrom", []):
            # A whole Secret, each key (prefixed) a variable; env entries below win.
            ref = source.get("secretRef")
            if ref is None:
                continue
            try:
                secret = await self._request(
                    "GET", f"/api/v1/namespaces/{namespace}/secrets/{ref['name']}"
                )
            except LookupError:
                if ref.get("optional"):
                    continue
                raise NotStartable(
                    "CreateContainerConfigError", f'secret "{ref["name"]}" not found'
                ) from None
            for key, value in (secret.get("data") or {}).items():
                env[source.get("prefix", "") + key] = base64.b64decode(value).decode()
        for entry in container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = entry["value"]
            elif "fieldRef" in entry["valueFrom"]:
                # The downward API: of the pod's fields, what the runner reads are annotations.
                path = entry["valueFrom"]["fieldRef"]["fieldPath"]
                match = re.fullmatch(r"metadata\.annotations\['([^']+)'\]", path)
                assert match, f"the stand-in kubelet knows no fieldPath {path}"
                env[entry["name"]] = annotations.get(match[1], "")
            elif "secretKeyRef" in entry["valueFrom"]:
                ref = entry["valueFrom"]["secretKeyRef"]
                try:
                    secret = await self._request(
                        "GET", f"/api/v1/namespaces/{namespace}/secrets/{ref['name']}"
                    )
                except LookupError:
                    if ref.get("optional"):
                        continue  # an optional reference to a missing Secret sets nothing
                    raise NotStartable(
                        "CreateContainerConfigError", f'secret "{ref["name"]}" not found'
                    ) from None
                if ref["key"] not in (secret.get("data") or {}):
                    if ref.get("optional"):
                        continue
                    raise NotStartable(
                        "CreateContainerConfigError",
                        f"couldn't find key {ref['key']} in Secret {namespace}/{ref['name']}",
                    )
                env[entry["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        return env

    async def _refresh_volumes(self, state: JobState, attempt: Attempt) -> None:
        """As the kubelet does, now and then: ConfigMaps and Secrets changed (or created, for
        optional ones) since the pod started show up in its mounted files."""
        now = asyncio.get_running_loop().time()
        if attempt.pod_spec is None or now - attempt.refreshed < VOLUME_REFRESH_SECONDS:
            return
        attempt.refreshed = now
        container = attempt.pod_spec["containers"][0]
        with contextlib.suppress(NotStartable, LookupError):
            await self._materialize_volumes(
                state.namespace, attempt.pod_spec, container, attempt.workdir, {}
            )

    async def _materialize_volumes(
        self,
        namespace: str,
        pod_spec: dict[str, Any],
        container: dict[str, Any],
        workdir: Path,
        env: dict[str, str],
    ) -> str:
        """Write ConfigMap/Secret volumes to disk and point the container's paths at them."""
        volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
        config_path = ""
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            target = workdir / mount["name"]
            target.mkdir(exist_ok=True)
            if "configMap" in volume:
                try:
                    cm = await self._request(
                        "GET",
                        f"/api/v1/namespaces/{namespace}/configmaps/{volume['configMap']['name']}",
                    )
                except LookupError:
                    if volume["configMap"].get("optional"):
                        cm = {"data": {}}  # an empty directory, filled in once it exists
                    else:
                        # The kubelet keeps the pod in ContainerCreating (FailedMount events).
                        raise NotStartable("ContainerCreating", "") from None
                items = volume["configMap"].get("items") or [
                    {"key": k, "path": k} for k in cm.get("data", {})
                ]
                for item in items:
                    if item["key"] not in cm.get("data", {}):
                        raise NotStartable("ContainerCreating", "")  # FailedMount: no such key
                    _write_atomically(target / item["path"], cm["data"][item["key"]].encode())
            elif "secret" in volume:
                try:
                    secret = await self._request(
                        "GET",
                        f"/api/v1/namespaces/{namespace}/secrets/{volume['secret']['secretName']}",
                    )
                except LookupError:
                    raise NotStartable("ContainerCreating", "") from None
                for item in volume["secret"].get("items", []):
                    if item["key"] not in (secret.get("data") or {}):
                        raise NotStartable("ContainerCreating", "")  # FailedMount: no such key
                    _write_atomically(
                        target / item["path"], base64.b64decode(secret["data"][item["key"]])
                    )
            elif "projected" in volume:
                # Secrets' keys side by side (an EvalSuite's CA files, spec.tls).
                for source in volume["projected"].get("sources", []):
                    ref = source.get("secret")
                    if ref is None:
                        continue
                    try:
                        secret = await self._request(
                            "GET", f"/api/v1/namespaces/{namespace}/secrets/{ref['name']}"
                        )
                    except LookupError:
                        raise NotStartable("ContainerCreating", "") from None
                    for item in ref.get("items", []):
                        if item["key"] not in (secret.get("data") or {}):
                            raise NotStartable("ContainerCreating", "")
                        _write_atomically(
                            target / item["path"], base64.b64decode(secret["data"][item["key"]])
                        )
            for key, value in list(env.items()):
                if value == mount["mountPath"] or value.startswith(mount["mountPath"] + "/"):
                    env[key] = str(target) + value[len(mount["mountPath"]) :]
            if mount["name"] == "config":
                config_path = str(target / "evaluation.json")
        return config_path


def _write_atomically(path: Path, data: bytes) -> None:
    """As the kubelet's atomic writer: a process reading the file (while the volume is
    refreshed) sees the old content or the new, never a truncated file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
