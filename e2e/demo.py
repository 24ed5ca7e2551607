"""`make demo`: the main job on a machine with Docker and kind.

A kind cluster named eval-demo, the operator and runner images built from this checkout, the
chart installed, the demo model server deployed, and examples/quickstart.yaml run to the end;
then its results as kubectl and the kubectl-evals plugin show them. The cluster stays up for a
look around; `make kind-down` deletes it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from e2e.cluster import KindCluster, Step, example, model_base_url, preflight

CLUSTER = "eval-demo"
NAMESPACE = "evals-demo"


def main() -> int:
    reason = preflight()
    if reason:
        print(reason.replace("e2e skipped", "demo needs Docker and kind"), file=sys.stderr)
        return 1
    workdir = Path(tempfile.gettempdir()) / "eval-operator-demo"
    workdir.mkdir(exist_ok=True)
    cluster = KindCluster(CLUSTER, workdir)
    try:
        cluster.up()
        cluster.deploy_model_server(NAMESPACE)
        cluster.apply(example("quickstart.yaml", NAMESPACE, model_base_url(NAMESPACE)))
        cluster.wait_finished("quickstart", NAMESPACE)
    except Step as err:
        print(f"demo failed: {err}\n{cluster.diagnostics()}", file=sys.stderr)
        return 1
    print(cluster.kubectl("get", "evals", "-n", NAMESPACE, "-o", "wide").stdout)
    # kubectl finds plugins on PATH, and only when no flag comes before the plugin's name.
    plugin_dir = Path(sys.executable).parent
    os.environ["PATH"] = f"{plugin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    results = cluster.run(
        cluster.kubectl_bin, "evals", "results", "quickstart", "-n", NAMESPACE,
        f"--kubeconfig={cluster.kubeconfig}", check=False,
    )  # fmt: skip
    print(results.stdout)
    print(
        f"The cluster {CLUSTER} stays up. Try:\n"
        f"  export KUBECONFIG={cluster.kubeconfig}\n"
        f"  kubectl get evals -n {NAMESPACE}\n"
        f"  kubectl evals results quickstart -n {NAMESPACE}\n"
        "Delete it with: make kind-down"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
