"""`make e2e` itself, in its existing-cluster mode, against the API emulator (issue 7 item 0).

The e2e suite (e2e/test_e2e.py) runs unchanged in a pytest process of its own with
E2E_EXISTING_CLUSTER=1 and a kubeconfig that points at the emulator, so every e2e step goes
through the same kubectl and helm binaries as on a real cluster: `helm upgrade --install
--wait` of the chart into a throw-away namespace, `kubectl apply` of the model server and
`kubectl rollout status`, `kubectl apply` of the examples, `kubectl create secret`, `kubectl
get` with printer columns, `kubectl annotate` for a re-run, `kubectl delete --wait`, and at
the end `helm uninstall` and the namespaces' deletion.

What a cluster's nodes would run is played here: the operator (the chart's Deployment) runs
in this process, the runner pods are local processes (tests/support/job_controller.py), the
demo model server is a local process reached through E2E_MODEL_BASE_URL, and Deployments are
reported rolled out (tests/support/workload_controller.py). Not exercised here: kind itself,
the image builds and loads, and the operator's container as the chart runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.cert_manager import StandInCertManager
from tests.support.job_controller import FakeJobController
from tests.support.kubeapi import running_kubeapi, use_kubeconfig
from tests.support.operator_cluster import Operator, controller_thread, operator_environment
from tests.support.ports import free_port
from tests.support.stack_controller import StackController
from tests.support.thirdparty import thirdparty_crds
from tests.support.tools import ROOT, tool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

RUNNER_IMAGE = "eval-runner:e2e"


def test_the_e2e_suite_passes_against_the_emulator_as_an_existing_cluster(tmp_path: Path) -> None:
    thirdparty = thirdparty_crds()  # kind's e2e installs the upstream CRDs
    crd = yaml.safe_load((ROOT / "crds" / "evaluations.evals.io.yaml").read_text())
    model_port = free_port()
    model = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eval_runner.demo_server",
            "--port",
            str(model_port),
            "--latency",
            "0.05",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        with (
            operator_environment({"EVAL_OPERATOR_RUNNER_IMAGE": RUNNER_IMAGE}),
            running_kubeapi(bookmark_interval=2.0) as api,
            StackController(api) as stack,
            StandInCertManager(api) as cert_manager,
        ):
            api.create(crd)  # helm installs it too (and finds it there, as on a cluster)
            # The optional platforms, as kind's e2e installs them: the upstream CRDs, and
            # cert-manager's controller played by a stand-in.
            for path in sorted(thirdparty.glob("*.yaml")):
                api.create(yaml.safe_load(path.read_text()))
            kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
            controller = FakeJobController(api.url, tmp_path / "pods", hosts_file=stack.hosts_file)
            operator = Operator(
                ["run", "--standalone", "--all-namespaces", "-m", "eval_operator.main"]
            )
            with use_kubeconfig(kubeconfig), controller_thread(controller):
                operator.start()
                try:
                    done = run_e2e(kubeconfig, model_port, tmp_path)
                finally:
                    operator.stop()
            assert api.internal_errors == []
            assert stack.errors == [] and cert_manager.errors == []
    finally:
        model.terminate()
        model.wait(timeout=10)
    assert done.returncode == 0, done.stdout[:12000] + done.stderr[-3000:]
    assert "11 passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-3000:]


def run_e2e(kubeconfig: Path, model_port: int, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "E2E_EXISTING_CLUSTER": "1",
        "E2E_OPERATOR_IMAGE": "registry.example/eval-operator:e2e",
        "E2E_RUNNER_IMAGE": RUNNER_IMAGE,
        "E2E_MODEL_BASE_URL": f"http://127.0.0.1:{model_port}/v1",
        "KUBECACHEDIR": str(home / "kube-cache"),
        "HELM_CACHE_HOME": str(home / "helm-cache"),
        "HELM_CONFIG_HOME": str(home / "helm-config"),
        "HELM_DATA_HOME": str(home / "helm-data"),
        "HELM": tool("helm"),
        "KUBECTL": tool("kubectl"),
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "e2e",
            "e2e/",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
