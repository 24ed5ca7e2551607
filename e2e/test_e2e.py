"""End to end: the chart installed, the examples run, as a user does it with kubectl.

From nothing to Succeeded Evaluations, then a re-run and the deletion (garbage collection). On
kind the images are built from this checkout; with E2E_EXISTING_CLUSTER=1 the cluster of the
current kubeconfig runs E2E_OPERATOR_IMAGE and E2E_RUNNER_IMAGE in throw-away namespaces
(e2e/cluster.py). The model is the runner image's demo server, deployed in the cluster: it
answers arithmetic exactly and echoes anything else, so the expected scores are known.
Run with `make e2e` (skipped with one line when neither kind nor a cluster can be used).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from e2e.cluster import Cluster, example, model_base_url

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

ARITHMETIC_SAMPLES = 40
CAPITALS_SAMPLES = 46


def condition(ev: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in ev["status"]["conditions"] if c["type"] == type_)


@pytest.fixture(scope="module")
def cluster(e2e_cluster: Cluster) -> Cluster:
    e2e_cluster.deploy_model_server(e2e_cluster.test_namespace)
    return e2e_cluster


@pytest.fixture(scope="module")
def ns(cluster: Cluster) -> str:
    return cluster.test_namespace


@pytest.fixture(scope="module")
def quickstart(cluster: Cluster, ns: str) -> dict[str, Any]:
    cluster.apply(example("quickstart.yaml", ns, model_base_url(ns)))
    return cluster.wait_finished("quickstart", ns)


def test_operator_is_ready(cluster: Cluster) -> None:
    deployment = cluster.get("deployment", cluster.release, cluster.operator_namespace)
    assert deployment is not None
    assert deployment["status"].get("readyReplicas") == 1


def test_quickstart_succeeds_with_exact_scores(cluster: Cluster, ns: str, quickstart: dict) -> None:
    ev = quickstart
    status = ev["status"]
    assert status["phase"] == "Succeeded", status
    assert status["observedGeneration"] == ev["metadata"]["generation"]
    for type_, expected in (("Ready", "True"), ("Succeeded", "True"), ("Passed", "True")):
        assert condition(ev, type_)["status"] == expected, condition(ev, type_)
        assert condition(ev, type_)["observedGeneration"] == ev["metadata"]["generation"]
    assert condition(ev, "Stalled")["status"] == "False"
    results = {r["name"]: r for r in status["results"]}
    # The demo model computes arithmetic exactly: every sample is right.
    assert results["exact_match"]["value"] == 1.0
    assert results["exact_match"]["n"] == ARITHMETIC_SAMPLES
    assert status["progress"]["completed"] == ARITHMETIC_SAMPLES
    assert status["progress"]["failed"] == 0
    assert status["usage"]["requests"] >= ARITHMETIC_SAMPLES
    job = cluster.get("job", status["jobName"], ns)
    assert job is not None
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Evaluation",
        "quickstart",
        ev["metadata"]["uid"],
    )


def test_kubectl_shows_the_printer_columns(cluster: Cluster, ns: str, quickstart: dict) -> None:
    out = cluster.kubectl("get", "evaluations", "-n", ns).stdout
    header, row = (
        out.splitlines()[0].split(),
        next(line.split() for line in out.splitlines() if line.startswith("quickstart")),
    )
    assert header[:7] == ["NAME", "PHASE", "READY", "MODEL", "PROGRESS", "SCORE", "PASSED"]
    assert row[1:7] == [
        "Succeeded",
        "True",
        "demo",
        f"{ARITHMETIC_SAMPLES}/{ARITHMETIC_SAMPLES}",
        "1",
        "True",
    ]


def test_sharded_example_with_a_key_and_prices(cluster: Cluster, ns: str) -> None:
    """examples/sharded-openai.yaml: 4 shards, an API key from a Secret, pricing and a gate."""
    cluster.kubectl(
        "create", "secret", "generic", "openai-api-key", "-n", ns,
        "--from-literal=api-key=e2e-not-a-real-key",
    )  # fmt: skip
    cluster.apply(example("sharded-openai.yaml", ns, model_base_url(ns)))
    ev = cluster.wait_finished("capitals-gpt", ns)
    status = ev["status"]
    assert status["phase"] == "Succeeded", status
    assert status["progress"]["completed"] + status["progress"]["failed"] == CAPITALS_SAMPLES
    # The demo model echoes questions about capitals: the threshold cannot hold.
    assert condition(ev, "Passed")["status"] == "False"
    assert Decimal(status["usage"]["costUSD"]) > 0
    job = cluster.get("job", status["jobName"], ns)
    assert job["spec"]["completions"] == 4 and job["spec"]["completionMode"] == "Indexed"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "evals"
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    key = next(e for e in env if e["name"] == "EVAL_API_KEY")
    assert key == {
        "name": "EVAL_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "openai-api-key", "key": "api-key"}},
    }


def sums_config_map(name: str, ns: str, samples: int, step: int) -> dict[str, Any]:
    """A ConfigMap of `samples` questions "What is i + (i + step)?" in data.jsonl."""
    lines = "".join(
        json.dumps({"input": f"What is {i} + {i + step}?", "target": str(2 * i + step)}) + "\n"
        for i in range(samples)
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": {"data.jsonl": lines},
    }


def test_early_stop_stops_a_run_whose_verdict_is_known(cluster: Cluster, ns: str) -> None:
    """execution.earlyStop on a real cluster: 2,000 questions to the sloppy demo model (three
    in four right) against `exact_match >= 0.5`; the operator decides on the shards' live sums
    and stops both shards long before the end."""
    samples = 2000
    config_map = sums_config_map("early-stop-data", ns, samples, step=1)
    evaluation = {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "Evaluation",
        "metadata": {"name": "early-stop", "namespace": ns},
        "spec": {
            "model": {"name": "demo-sloppy", "baseURL": model_base_url(ns), "maxConcurrency": 2},
            "dataset": {"configMapRef": {"name": "early-stop-data", "key": "data.jsonl"}},
            "task": {"promptTemplate": "{{ input }}", "scorers": [{"type": "exact_match"}]},
            "execution": {"shards": 2, "earlyStop": {"when": "Verdict"}},
            "thresholds": ["exact_match >= 0.5"],
        },
    }
    cluster.apply([config_map, evaluation])
    ev = cluster.wait_finished("early-stop", ns)
    status = ev["status"]
    assert status["phase"] == "Succeeded", status
    stopped = status["stoppedEarly"]
    assert stopped["reason"] == "VerdictKnown" and stopped["of"] == samples, stopped
    assert stopped["samples"] < samples // 2, stopped
    result = status["results"][0]
    assert 0.5 < result["csInterval"][0] <= result["value"], result
    assert condition(ev, "Passed")["status"] == "True"
    assert cluster.get("secret", f"{status['jobName']}-control", ns) is not None
    wide = cluster.kubectl("get", "evl", "early-stop", "-n", ns, "-o", "wide").stdout
    assert "VerdictKnown" in wide


def test_rerun_annotation_runs_again(cluster: Cluster, ns: str, quickstart: dict) -> None:
    first_job = quickstart["status"]["jobName"]
    cluster.kubectl("annotate", "evaluation", "quickstart", "-n", ns, "evals.io/rerun=e2e-1")

    def rerun_done() -> dict[str, Any] | None:
        ev = cluster.get("evaluations.evals.io", "quickstart", ns)
        status = (ev or {}).get("status") or {}
        done = status.get("rerunToken") == "e2e-1" and status.get("phase") == "Succeeded"
        return ev if done else None

    ev = cluster.wait_for("the re-run to succeed", rerun_done, timeout=600)
    assert ev["status"]["jobName"] != first_job
    assert ev["status"]["results"][0]["value"] == 1.0
    cluster.wait_for(
        "the first run's Job to be deleted", lambda: cluster.get("job", first_job, ns) is None
    )


def test_deleting_the_evaluation_collects_its_job_config_and_pods(
    cluster: Cluster, ns: str, quickstart: dict
) -> None:
    ev = cluster.get("evaluations.evals.io", "quickstart", ns)
    run = ev["status"]["jobName"]

    def of_the_run(kind: str) -> str:
        return cluster.kubectl(
            "get", kind, "-n", ns, "-l", f"evals.io/run={run}", "-o", "name"
        ).stdout.strip()

    assert of_the_run("configmaps")  # the run's frozen spec
    cluster.kubectl("delete", "evaluation", "quickstart", "-n", ns, "--wait=true", "--timeout=120s")

    def collected() -> bool:
        return (
            cluster.get("job", run, ns) is None
            and not of_the_run("configmaps")
            and not of_the_run("pods")
        )

    cluster.wait_for("the garbage collector to delete the run's objects", collected, timeout=300)


def test_an_evalsuite_stores_every_sample_and_a_killed_pod_resumes(
    cluster: Cluster, ns: str
) -> None:
    """A suite with a managed PostgreSQL; an Evaluation in it whose runner pod is deleted in
    the middle of its shard: the retry asks the model only for what is not stored yet."""
    suite = {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "EvalSuite",
        "metadata": {"name": "e2e-stack", "namespace": ns},
        "spec": {
            "store": {
                "managed": {"size": "1Gi", "retainOnDelete": False, "backup": {"enabled": False}}
            },
            "cache": {"mode": "Disabled"},
        },
    }
    cluster.apply([suite])

    def suite_ready() -> dict[str, Any] | None:
        found = cluster.get("evalsuites.evals.io", "e2e-stack", ns)
        conditions = ((found or {}).get("status") or {}).get("conditions") or []
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        return found if ready else None

    stack = cluster.wait_for("the EvalSuite to be ready", suite_ready, timeout=900)
    assert stack["status"]["store"]["endpoint"] == f"e2e-stack-store.{ns}.svc:5432/evals"
    samples = 600
    records = [{"input": f"What is {i} + {i}?", "target": str(2 * i)} for i in range(samples)]
    (evaluation,) = example("quickstart.yaml", ns, model_base_url(ns))
    evaluation["metadata"]["name"] = "resumed"
    evaluation["spec"]["suiteRef"] = {"name": "e2e-stack"}
    evaluation["spec"]["dataset"] = {"inline": records}
    evaluation["spec"]["model"]["maxConcurrency"] = 1
    evaluation["spec"]["execution"] = {"shards": 1, "backoffLimitPerIndex": 3}
    cluster.apply([evaluation])

    def midway() -> dict[str, Any] | None:
        ev = cluster.get("evaluations.evals.io", "resumed", ns)
        progress = ((ev or {}).get("status") or {}).get("progress") or {}
        # Late enough that the shard has written rows to the store (it writes at least every
        # second: 50 samples take 2.5 s at concurrency 1), early enough that the pod is still
        # running when it is deleted a moment later (200 samples, 10 s, to go).
        return ev if 50 <= progress.get("completed", 0) < samples * 2 // 3 else None

    run = cluster.wait_for("the run to be under way", midway, timeout=600)["status"]["jobName"]
    pods = json.loads(
        cluster.kubectl("get", "pods", "-n", ns, "-l", f"evals.io/run={run}", "-o", "json").stdout
    )["items"]
    (running,) = [p for p in pods if p["status"].get("phase") == "Running"]
    cluster.kubectl(
        "delete", "pod", running["metadata"]["name"], "-n", ns,
        "--grace-period=0", "--force", "--wait=false",
    )  # fmt: skip
    ev = cluster.wait_finished("resumed", ns, timeout=900)
    status = ev["status"]
    assert status["phase"] == "Succeeded", status
    results = {r["name"]: r for r in status["results"]}
    assert results["exact_match"]["n"] == samples and results["exact_match"]["value"] == 1.0
    attempts = json.loads(
        cluster.kubectl("get", "pods", "-n", ns, "-l", f"evals.io/run={run}", "-o", "json").stdout
    )["items"]
    names = {p["metadata"]["name"] for p in attempts}
    assert names and running["metadata"]["name"] not in names  # a new attempt finished it
    # The retry resumed: its own summary (termination message) says it found samples stored
    # and asked the model only for the rest. (Status also counts what the deleted attempt was
    # seen to spend, so its total may be the whole run's.)
    (retry,) = [p for p in attempts if p["status"].get("phase") == "Succeeded"]
    (container,) = retry["status"]["containerStatuses"]
    summary = json.loads(container["state"]["terminated"]["message"])
    stored = (summary.get("resumed") or {}).get("samples", 0)
    assert 0 < stored < samples, summary
    assert summary["usage"]["requests"] == samples - stored, summary


def test_an_evalsuite_matrix_runs_every_cell_and_ranks_the_models(
    cluster: Cluster, ns: str
) -> None:
    """examples/evalsuite-matrix.yaml: 3 models x 2 tasks as child Evaluations, each cell
    reported on from the store by a cell report Job, the leaderboard in status."""
    (suite,) = example("evalsuite-matrix.yaml", ns, model_base_url(ns))
    suite["spec"]["store"] = {
        "managed": {"size": "1Gi", "retainOnDelete": False, "backup": {"enabled": False}}
    }
    suite["spec"]["cache"] = {"mode": "Disabled"}
    cluster.apply([suite])

    def run_finished() -> dict[str, Any] | None:
        found = cluster.get("evalsuites.evals.io", "nightly", ns)
        current = ((found or {}).get("status") or {}).get("currentRun") or {}
        return found if current.get("completionTime") else None

    done = cluster.wait_for("the matrix's first run", run_finished, timeout=1200)
    status = done["status"]
    assert status["matrix"]["done"] == "6/6" and status["matrix"]["succeeded"] == 6, status
    for board in status["leaderboard"]:
        assert board["best"] == "exact"
        scores = {e["model"]: e["score"] for e in board["entries"]}
        assert scores["exact"] == 1.0 and scores["sloppy"] < 1.0
        for entry in board["entries"]:
            assert entry["latencyP50Ms"] > 0 and entry["comparison"]["reason"] == "NoBaseline"
    assert condition(done, "Passed")["status"] == "True"
    cells = json.loads(
        cluster.kubectl(
            "get", "evaluations.evals.io", "-n", ns, "-l", "evals.io/suite=nightly", "-o", "json"
        ).stdout
    )["items"]
    assert sorted(c["metadata"]["name"] for c in cells) == sorted(
        f"nightly-{m}-{t}"
        for m in ("exact", "sloppy", "sloppy-again")
        for t in ("arithmetic", "arithmetic-first-20")
    )
    table = cluster.kubectl("get", "evalsuites.evals.io", "nightly", "-n", ns).stdout
    assert table.splitlines()[0].split() == [
        "NAME", "READY", "MODELS", "TASKS", "DONE", "BEST", "REGRESSED", "AGE"
    ]  # fmt: skip
    assert table.splitlines()[1].split()[1:6] == ["True", "3", "2", "6/6", "exact"]
    cluster.kubectl("delete", "evalsuites.evals.io", "nightly", "-n", ns, "--wait=true")


def test_an_evalsuite_cell_stops_once_its_regression_is_decided(cluster: Cluster, ns: str) -> None:
    """The regression gate deciding early on a real cluster: a cell's first run (the exact demo
    model) answers all 2,000 questions; the suite then turns earlyStop on and the cell's model
    becomes the sloppy one (wrong on a quarter). The second run's shards pair their samples
    with the first run's stored scores and the operator stops them once the drop is shown."""
    samples = 2000
    config_map = sums_config_map("gate-data", ns, samples, step=3)

    def spec(model: str, early_stop: bool, concurrency: int) -> dict[str, Any]:
        execution: dict[str, Any] = {"shards": 2}
        if early_stop:
            execution["earlyStop"] = {"when": "Verdict"}
        return {
            "store": {
                "managed": {"size": "1Gi", "retainOnDelete": False, "backup": {"enabled": False}}
            },
            "cache": {"mode": "Disabled"},
            "models": [
                {"name": "m", "model": {
                    "name": model, "baseURL": model_base_url(ns), "maxConcurrency": concurrency
                }}
            ],
            "tasks": [
                {
                    "name": "sums",
                    "dataset": {"configMapRef": {"name": "gate-data", "key": "data.jsonl"}},
                    "task": {"promptTemplate": "{{ input }}", "scorers": [{"type": "exact_match"}]},
                    "thresholds": ["exact_match >= 0.5"],
                }
            ],
            "defaults": {"execution": execution},
            "baseline": "previous",
            "regression": {"maxDrop": "0.05"},
        }  # fmt: skip

    suite = {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "EvalSuite",
        "metadata": {"name": "e2e-gate", "namespace": ns},
        "spec": spec("demo", early_stop=False, concurrency=2),
    }
    cluster.apply([config_map, suite])

    def finished_after(run_id: str | None):
        def check() -> dict[str, Any] | None:
            found = cluster.get("evalsuites.evals.io", "e2e-gate", ns)
            current = ((found or {}).get("status") or {}).get("currentRun") or {}
            done = current.get("completionTime") and current.get("id") != run_id
            return found if done else None

        return check

    first = cluster.wait_for("the baseline run", finished_after(None), timeout=1200)
    first_id = first["status"]["currentRun"]["id"]
    baseline_run = cluster.get("evaluations.evals.io", "e2e-gate-m-sums", ns)["status"]["jobName"]
    suite["metadata"]["annotations"] = {"evals.io/rerun": "gate-2"}
    # One request at a time per shard: half the run takes long enough for the operator to
    # decide and stop it on a slow or busy cluster.
    suite["spec"] = spec("demo-sloppy", early_stop=True, concurrency=1)
    cluster.apply([suite])
    second = cluster.wait_for("the gated run", finished_after(first_id), timeout=1200)
    cell = cluster.get("evaluations.evals.io", "e2e-gate-m-sums", ns)
    stopped = cell["status"]["stoppedEarly"]
    assert stopped["reason"] == "VerdictKnown" and stopped["samples"] < samples // 2, stopped
    regression = stopped["regression"]
    assert regression["decision"] == "Regressed" and regression["baselineRun"] == baseline_run
    assert regression["differences"]["exact_match"][1] < -0.05, regression
    entry = second["status"]["leaderboard"][0]["entries"][0]
    comparison = entry["comparison"]
    assert comparison["decidedEarly"] is True and comparison["regressed"] is True, comparison
    assert condition(second, "Regressed")["status"] == "True"
    cluster.kubectl("delete", "evalsuites.evals.io", "e2e-gate", "-n", ns, "--wait=true")


def test_an_evalsuite_with_tls_and_monitoring_says_what_the_cluster_has(
    cluster: Cluster, ns: str
) -> None:
    """spec.tls and spec.monitoring: where cert-manager and the Prometheus Operator are
    installed (kind installs both), the certificates are issued, the stack serves TLS only and
    an Evaluation in it runs; where they are not, the suite says so and runs without them."""
    has_cert_manager = cluster.serves("cert-manager.io")
    has_prometheus = cluster.serves("monitoring.coreos.com")
    suite = {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "EvalSuite",
        "metadata": {"name": "e2e-secure", "namespace": ns},
        "spec": {
            "store": {
                "managed": {"size": "1Gi", "retainOnDelete": False, "backup": {"enabled": False}}
            },
            "tls": {"enabled": True},
            "monitoring": {"enabled": True},
        },
    }
    cluster.apply([suite])
    final = {"Ready", "CertManagerNotInstalled", "PrometheusOperatorNotInstalled"}

    def settled() -> dict[str, Any] | None:
        found = cluster.get("evalsuites.evals.io", "e2e-secure", ns)
        if found is None:
            return None
        reasons = {c["type"]: c["reason"] for c in found.get("status", {}).get("conditions", [])}
        if reasons.get("Ready") != "Ready":
            return None
        if reasons.get("TLSReady") in final and reasons.get("MonitoringReady") in final:
            return found
        return None

    found = cluster.wait_for("the secure EvalSuite to settle", settled, timeout=900)
    tls = condition(found, "TLSReady")
    monitoring = condition(found, "MonitoringReady")
    assert tls["reason"] == ("Ready" if has_cert_manager else "CertManagerNotInstalled"), tls
    assert monitoring["reason"] == (
        "Ready" if has_prometheus else "PrometheusOperatorNotInstalled"
    ), monitoring
    assert condition(found, "DashboardReady")["status"] == "True"
    if has_cert_manager:
        assert found["status"]["dashboard"]["url"].startswith("https://")
        certificates = json.loads(
            cluster.kubectl("get", "certificates.cert-manager.io", "-n", ns, "-o", "json").stdout
        )["items"]
        names = {c["metadata"]["name"] for c in certificates}
        assert {"e2e-secure-store-tls", "e2e-secure-cache-tls", "e2e-secure-dashboard-tls"} <= names
    if has_prometheus:
        monitors = json.loads(
            cluster.kubectl(
                "get", "servicemonitors.monitoring.coreos.com", "-n", ns, "-o", "json"
            ).stdout
        )["items"]
        assert "e2e-secure-dashboard" in {m["metadata"]["name"] for m in monitors}
    # An Evaluation in it: over verify-full TLS to the store and the cache where TLS is on.
    (evaluation,) = example("quickstart.yaml", ns, model_base_url(ns))
    evaluation["metadata"]["name"] = "secure-run"
    evaluation["spec"]["suiteRef"] = {"name": "e2e-secure"}
    cluster.apply([evaluation])
    done = cluster.wait_finished("secure-run", ns, timeout=900)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    cluster.kubectl("delete", "evalsuites.evals.io", "e2e-secure", "-n", ns, "--wait=true")
