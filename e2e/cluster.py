"""The cluster the e2e tests and the demo run on: a kind cluster made from this checkout, or
the cluster of the current kubeconfig (E2E_EXISTING_CLUSTER=1, as kubebuilder's envtest has
USE_EXISTING_CLUSTER).

Every step is the command a person would type (kind, docker, helm, kubectl), run in order and
logged, so a failing step reads like a terminal session.

- kind (the default): a kind cluster, the images built from this checkout and loaded into it,
  cert-manager and the Prometheus Operator's CRDs installed (pinned releases; E2E_PLATFORMS=0
  leaves them out, and the suite then says CertManagerNotInstalled and
  PrometheusOperatorNotInstalled), the chart installed into eval-system.
- an existing cluster: no kind and no image builds; the images come from E2E_OPERATOR_IMAGE
  and E2E_RUNNER_IMAGE (images that cluster can pull); the chart is installed into a
  throw-away namespace, watching only a throw-away test namespace, and both are removed (with
  the release) afterwards. The CRDs stay: other installations may use them.

`python -m e2e.cluster preflight` prints why the cluster cannot be used here (and exits 1), or
nothing (and exits 0).
"""

from __future__ import annotations

import abc
import copy
import json
import os
import secrets
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
MODEL_SERVER_MANIFEST = ROOT / "e2e" / "manifests" / "model-server.yaml"
MODEL_PORT = 8000
CHART = ROOT / "charts" / "eval-operator"
# The optional platforms an EvalSuite uses, pinned (E2E_CERT_MANAGER_MANIFEST and
# E2E_PROMETHEUS_OPERATOR_CRDS override them, e.g. with a mirror's copy).
CERT_MANAGER_MANIFEST = (
    "https://github.com/cert-manager/cert-manager/releases/download/v1.18.2/cert-manager.yaml"
)
PROMETHEUS_OPERATOR_CRDS = (
    "https://github.com/prometheus-operator/prometheus-operator/releases/download/v0.84.0/"
    "stripped-down-crds.yaml"
)


def tool(name: str) -> str | None:
    """$NAME, .tools/bin/NAME (make tools), or PATH."""
    for candidate in (os.environ.get(name.upper()), str(TOOLS_BIN / name), shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def existing_cluster() -> bool:
    return os.environ.get("E2E_EXISTING_CLUSTER", "").lower() in ("1", "true", "yes")


def preflight() -> str | None:
    """Why an e2e run cannot happen on this machine, in one line; None when it can."""
    if existing_cluster():
        return _preflight_existing()
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


def _preflight_existing() -> str | None:
    for name in ("helm", "kubectl"):
        if tool(name) is None:
            return f"e2e skipped: {name} not found (run make tools)"
    missing = [v for v in ("E2E_OPERATOR_IMAGE", "E2E_RUNNER_IMAGE") if not os.environ.get(v)]
    if missing:
        return (
            f"e2e skipped: E2E_EXISTING_CLUSTER=1 needs {' and '.join(missing)} "
            "(images the cluster can pull)"
        )
    kubectl = tool("kubectl")
    assert kubectl is not None
    done = subprocess.run(
        [kubectl, "get", "--raw", "/version"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no answer"])[0]
        return f"e2e skipped: E2E_EXISTING_CLUSTER=1 but the current kubeconfig's cluster: {first}"
    return None


def model_base_url(namespace: str) -> str:
    """Where runner pods reach the demo model server; E2E_MODEL_BASE_URL overrides it (a model
    reachable by another name, e.g. when the runner pods do not run in the cluster's network)."""
    return os.environ.get("E2E_MODEL_BASE_URL") or (
        f"http://model-server.{namespace}.svc:{MODEL_PORT}/v1"
    )


def example(name: str, namespace: str, base_url: str) -> list[dict[str, Any]]:
    """The documents of examples/NAME.yaml, pointed at the in-cluster model server."""
    documents = [d for d in yaml.safe_load_all((ROOT / "examples" / name).read_text()) if d]
    for doc in documents:
        doc.setdefault("metadata", {})["namespace"] = namespace
        if doc["kind"] == "Evaluation":
            doc["spec"]["model"]["baseURL"] = base_url
        if doc["kind"] == "EvalSuite":
            for entry in doc["spec"].get("models") or []:
                entry["model"]["baseURL"] = base_url
    return documents


def model_server(
    namespace: str, image: str = RUNNER_IMAGE, pull_policy: str = "Never"
) -> list[dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all(MODEL_SERVER_MANIFEST.read_text()) if d]
    for doc in documents:
        doc["metadata"]["namespace"] = namespace
        if doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            container["image"], container["imagePullPolicy"] = image, pull_policy
    return copy.deepcopy(documents)


def image_values(prefix: str, reference: str, pull_policy: str) -> list[str]:
    """`--set` flags of the chart for one image reference (repository[:tag][@digest])."""
    repository, digest = reference.partition("@")[::2]
    name_part = repository.rsplit("/", 1)[-1]
    tag = ""
    if ":" in name_part:
        repository, tag = repository.rsplit(":", 1)
    flags = [f"{prefix}.repository={repository}", f"{prefix}.pullPolicy={pull_policy}"]
    if tag:
        flags.append(f"{prefix}.tag={tag}")
    if digest:
        flags.append(f"{prefix}.digest={digest}")
    return [arg for flag in flags for arg in ("--set", flag)]


class Step(Exception):
    """A command failed: its output is in the message."""


class Cluster(abc.ABC):
    """What every e2e cluster does: run commands against it, install the chart, run a model."""

    operator_namespace = "eval-system"
    release = "eval-operator"
    test_namespace = "evals-e2e"

    def __init__(self, kubeconfig: Path | None, log: Callable[[str], None] = print) -> None:
        self.kubeconfig = kubeconfig
        self.log = log
        self.helm, self.kubectl_bin = tool("helm"), tool("kubectl")
        self.runner_image, self.runner_pull_policy = RUNNER_IMAGE, "Never"

    # --- running commands -------------------------------------------------------------------

    def run(
        self,
        *command: str | Path | None,
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

    def _kubeconfig_flag(self) -> list[str]:
        return [f"--kubeconfig={self.kubeconfig}"] if self.kubeconfig else []

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run(self.kubectl_bin, *self._kubeconfig_flag(), *args, **kwargs)

    def helm_run(self, *args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run(self.helm, *args, *self._kubeconfig_flag(), **kwargs)

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

    @abc.abstractmethod
    def chart_values(self) -> list[str]:
        """The chart's --set flags for this cluster's images (and scope)."""

    def install_operator(self) -> None:
        self.helm_run(
            "upgrade", "--install", self.release, CHART,
            "--namespace", self.operator_namespace, "--create-namespace",
            *self.chart_values(),
            "--set", "operator.progressIntervalSeconds=2",
            "--wait", "--timeout", "5m", timeout=600,
        )  # fmt: skip

    def serves(self, group: str) -> bool:
        """The cluster serves this API group (cert-manager.io, monitoring.coreos.com)."""
        done = self.kubectl("api-resources", f"--api-group={group}", "-o", "name", check=False)
        return done.returncode == 0 and bool(done.stdout.strip())

    def install_platforms(self) -> None:
        """cert-manager (its controller and webhook) and the Prometheus Operator's CRDs."""
        if os.environ.get("E2E_PLATFORMS", "1") == "0":
            return
        cert_manager = os.environ.get("E2E_CERT_MANAGER_MANIFEST", CERT_MANAGER_MANIFEST)
        crds = os.environ.get("E2E_PROMETHEUS_OPERATOR_CRDS", PROMETHEUS_OPERATOR_CRDS)
        self.kubectl("apply", "-f", cert_manager, timeout=300)
        self.kubectl("apply", "--server-side", "-f", crds, timeout=300)
        for deployment in ("cert-manager", "cert-manager-webhook", "cert-manager-cainjector"):
            self.kubectl(
                "rollout", "status", f"deployment/{deployment}", "-n", "cert-manager",
                "--timeout=300s", timeout=400,
            )  # fmt: skip

    def deploy_model_server(self, namespace: str) -> None:
        self.kubectl("create", "namespace", namespace, check=False)
        self.apply(model_server(namespace, self.runner_image, self.runner_pull_policy))
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
                "logs", "-n", self.operator_namespace, f"deployment/{self.release}",
                "--all-containers", "--tail=-1",
            ),
            ("describe", "pods", "-A", "-l", "app.kubernetes.io/managed-by=eval-operator"),
        ):  # fmt: skip
            done = self.kubectl(*args, check=False, timeout=120)
            parts.append(f"==== kubectl {' '.join(args)}\n{done.stdout}{done.stderr}")
        return "\n".join(parts)

    @abc.abstractmethod
    def up(self) -> None:
        """Everything but the Evaluations: the operator installed and ready."""

    @abc.abstractmethod
    def down(self) -> None:
        """Remove what up() made (E2E_KEEP_CLUSTER=1 keeps it for a look)."""


class KindCluster(Cluster):
    """A kind cluster with the images built from this checkout."""

    def __init__(self, name: str, workdir: Path, log: Callable[[str], None] = print) -> None:
        super().__init__(workdir / f"kubeconfig-{name}", log)
        self.name = name
        self.kind, self.docker = tool("kind"), tool("docker")

    def exists(self) -> bool:
        done = self.run(self.kind, "get", "clusters", check=False)
        return self.name in done.stdout.split()

    def create(self) -> None:
        if self.exists():
            self.run(
                self.kind, "export", "kubeconfig", "--name", self.name,
                "--kubeconfig", self.kubeconfig,
            )  # fmt: skip
            return
        self.run(
            self.kind, "create", "cluster", "--name", self.name,
            "--config", ROOT / "kind-config.yml",
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

    def chart_values(self) -> list[str]:
        return image_values("image", OPERATOR_IMAGE, "Never") + image_values(
            "runner.image", RUNNER_IMAGE, "Never"
        )

    def delete(self) -> None:
        self.run(self.kind, "delete", "cluster", "--name", self.name, check=False, timeout=300)

    def up(self) -> None:
        """Cluster, images, chart: everything but the Evaluations."""
        self.create()
        self.build_images()
        self.load_images()
        self.install_platforms()
        self.install_operator()

    def down(self) -> None:
        if os.environ.get("E2E_KEEP_CLUSTER") != "1":
            self.delete()


class ExistingCluster(Cluster):
    """The current kubeconfig's cluster: the chart in a throw-away namespace, cleaned up after."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        super().__init__(None, log)
        suffix = secrets.token_hex(3)
        self.operator_namespace = f"eval-e2e-system-{suffix}"
        self.test_namespace = f"evals-e2e-{suffix}"
        # The chart names its objects after a release whose name holds "eval-operator".
        self.release = f"eval-operator-e2e-{suffix}"
        self.operator_image = os.environ["E2E_OPERATOR_IMAGE"]
        self.runner_image = os.environ["E2E_RUNNER_IMAGE"]
        self.runner_pull_policy = "IfNotPresent"

    def chart_values(self) -> list[str]:
        return [
            *image_values("image", self.operator_image, "IfNotPresent"),
            *image_values("runner.image", self.runner_image, "IfNotPresent"),
            # Only its own test namespace: other Evaluations of the cluster are not its business.
            "--set", f"watchNamespaces[0]={self.test_namespace}",
            # Cluster-wide roles of a throw-away release would clash with a real installation.
            "--set", "rbac.aggregateToDefaultRoles=false",
        ]  # fmt: skip

    def up(self) -> None:
        self.kubectl("create", "namespace", self.test_namespace)
        self.install_operator()

    def down(self) -> None:
        if os.environ.get("E2E_KEEP_CLUSTER") == "1":
            return
        self.helm_run(
            "uninstall", self.release, "--namespace", self.operator_namespace, "--wait",
            check=False, timeout=300,
        )  # fmt: skip
        for namespace in (self.test_namespace, self.operator_namespace):
            self.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


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
