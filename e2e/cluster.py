"""A kind cluster running the operator from this checkout, for the e2e tests and the demo.

Every step is the command a person would type (kind, docker, helm, kubectl), run in order and
logged, so a failing step reads like a terminal session. `python -m e2e.cluster preflight` prints
why the cluster cannot be made here (and exits 1), or nothing (and exits 0).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TOOLS_BIN = ROOT / ".tools" / "bin"
IMAGE_TAG = "e2e"
OPERATOR_IMAGE = f"eval-operator:{IMAGE_TAG}"
RUNNER_IMAGE = f"eval-runner:{IMAGE_TAG}"
OPERATOR_NAMESPACE = "eval-system"
RELEASE = "eval-operator"
MODEL_SERVER_MANIFEST = ROOT / "e2e" / "manifests" / "model-server.yaml"
MODEL_PORT = 8000


def tool(name: str) -> str | None:
    """$NAME, .tools/bin/NAME (make tools), or PATH."""
    for candidate in (os.environ.get(name.upper()), str(TOOLS_BIN / name), shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def preflight() -> str | None:
    """Why an e2e run cannot happen on this machine, in one line; None when it can."""
    docker = tool("docker")
    if docker is None:
        return "e2e skipped: no Docker (docker not found on PATH)"
    if subprocess.run([docker, "info"], capture_output=True, check=False).returncode != 0:
        return "e2e skipped: no Docker engine (docker info failed)"
    for name, hint in (
        ("kind", "install kind v0.27+"),
        ("helm", "run make tools"),
        ("kubectl", "run make tools"),
    ):
        if tool(name) is None:
            return f"e2e skipped: {name} not found ({hint})"
    return None


def model_base_url(namespace: str) -> str:
    return f"http://model-server.{namespace}.svc:{MODEL_PORT}/v1"


def example(name: str, namespace: str, base_url: str) -> list[dict[str, Any]]:
    """The documents of examples/NAME.yaml, pointed at the in-cluster model server."""
    documents = [d for d in yaml.safe_load_all((ROOT / "examples" / name).read_text()) if d]
    for doc in documents:
        doc.setdefault("metadata", {})["namespace"] = namespace
        if doc["kind"] == "Evaluation":
            doc["spec"]["model"]["baseURL"] = base_url
    return documents


def model_server(namespace: str) -> list[dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all(MODEL_SERVER_MANIFEST.read_text()) if d]
    for doc in documents:
        doc["metadata"]["namespace"] = namespace
    return copy.deepcopy(documents)


class Step(Exception):
    """A command failed: its output is in the message."""


class KindCluster:
    def __init__(self, name: str, workdir: Path, log: Callable[[str], None] = print) -> None:
        self.name = name
        self.kubeconfig = workdir / f"kubeconfig-{name}"
        self.log = log
        self.kind, self.docker = tool("kind"), tool("docker")
        self.helm, self.kubectl_bin = tool("helm"), tool("kubectl")

    # --- running commands -------------------------------------------------------------------

    def run(
        self,
        *command: str | None,
        input: str | None = None,
        timeout: float = 600,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        args = [str(c) for c in command if c is not None]
        self.log("$ " + " ".join(args))
        done = subprocess.run(
            args,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=ROOT,
        )
        if check and done.returncode != 0:
            raise Step(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run(self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args, **kwargs)

    def apply(self, documents: Sequence[dict[str, Any]]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        done = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if done.returncode != 0:
            if "NotFound" in done.stderr:
                return None
            raise Step(done.stderr)
        return json.loads(done.stdout)

    def wait_for(
        self, what: str, probe: Callable[[], Any], timeout: float = 300, interval: float = 2
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise Step(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)

    # --- the steps ----------------------------------------------------------------------------

    def exists(self) -> bool:
        done = self.run(self.kind, "get", "clusters", check=False)
        return self.name in done.stdout.split()

    def create(self) -> None:
        if self.exists():
            self.run(
                self.kind,
                "export",
                "kubeconfig",
                "--name",
                self.name,
                "--kubeconfig",
                self.kubeconfig,
            )
            return
        config = ROOT / "kind-config.yml"
        self.run(
            self.kind, "create", "cluster", "--name", self.name, "--config", config,
            "--kubeconfig", self.kubeconfig, "--wait", "180s", timeout=900,
        )  # fmt: skip

    def build_images(self) -> None:
        revision = self.run("git", "rev-parse", "HEAD", check=False).stdout.strip() or "unknown"
        for dockerfile, image in (
            ("Dockerfile.operator", OPERATOR_IMAGE),
            ("Dockerfile.runner", RUNNER_IMAGE),
        ):
            self.run(
                self.docker, "build", "-f", dockerfile, "-t", image,
                "--build-arg", f"REVISION={revision}", ".", timeout=1800,
            )  # fmt: skip

    def load_images(self) -> None:
        for image in (OPERATOR_IMAGE, RUNNER_IMAGE):
            self.run(self.kind, "load", "docker-image", image, "--name", self.name, timeout=900)

    def install_operator(self) -> None:
        self.run(
            self.helm, "upgrade", "--install", RELEASE, ROOT / "charts" / "eval-operator",
            "--kubeconfig", self.kubeconfig,
            "--namespace", OPERATOR_NAMESPACE, "--create-namespace",
            "--set", "image.repository=eval-operator",
            "--set", f"image.tag={IMAGE_TAG}",
            "--set", "image.pullPolicy=Never",
            "--set", "runner.image.repository=eval-runner",
            "--set", f"runner.image.tag={IMAGE_TAG}",
            "--set", "runner.image.pullPolicy=Never",
            "--set", "operator.progressIntervalSeconds=2",
            "--wait", "--timeout", "5m", timeout=600,
        )  # fmt: skip

    def deploy_model_server(self, namespace: str) -> None:
        self.kubectl("create", "namespace", namespace, check=False)
        self.apply(model_server(namespace))
        self.kubectl(
            "rollout", "status", "deployment/model-server", "-n", namespace, "--timeout=180s"
        )

    def wait_finished(self, name: str, namespace: str, timeout: float = 600) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            ev = self.get("evaluations.evals.io", name, namespace)
            phase = ((ev or {}).get("status") or {}).get("phase")
            return ev if phase in ("Succeeded", "Failed") else None

        return self.wait_for(f"Evaluation {namespace}/{name} to finish", finished, timeout)

    def diagnostics(self) -> str:
        """What to read when a step failed: every object, the Evaluations, events, operator logs."""
        parts = []
        for args in (
            ("get", "all", "-A", "-o", "wide"),
            ("get", "evaluations.evals.io", "-A", "-o", "yaml"),
            ("get", "events", "-A", "--sort-by=.lastTimestamp"),
            (
                "logs",
                "-n",
                OPERATOR_NAMESPACE,
                f"deployment/{RELEASE}",
                "--all-containers",
                "--tail=-1",
            ),
            ("describe", "pods", "-A", "-l", "app.kubernetes.io/managed-by=eval-operator"),
        ):
            done = self.kubectl(*args, check=False, timeout=120)
            parts.append(f"==== kubectl {' '.join(args)}\n{done.stdout}{done.stderr}")
        return "\n".join(parts)

    def delete(self) -> None:
        self.run(self.kind, "delete", "cluster", "--name", self.name, check=False, timeout=300)

    def up(self) -> None:
        """Cluster, images, chart: everything but the Evaluations."""
        self.create()
        self.build_images()
        self.load_images()
        self.install_operator()


def main(argv: list[str]) -> int:
    if argv[:1] == ["preflight"]:
        reason = preflight()
        if reason:
            print(reason)
            return 1
        return 0
    print("usage: python -m e2e.cluster preflight", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
