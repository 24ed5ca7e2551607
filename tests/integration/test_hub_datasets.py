"""dataset.huggingface end to end: `eval-runner run` and an Evaluation on the emulator read a
gated dataset from a stand-in hub (the operator's huggingface endpoint), with the token from
its Secret, and the token appears nowhere but in the requests to the hub."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.support.hfhub import StandInHub
from tests.support.model_server import ModelServer
from tests.support.operator_cluster import NS, RECORDS, manifest, running_cluster

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_integration_token_never_shown_0001"  # noqa: S105 - the stand-in hub's
REPO = "evals-test/arithmetic"


def published(hub: StandInHub) -> str:
    """The records as a gated parquet dataset, tagged v1.0; main moves on to other rows."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(RECORDS), buffer)
    repo = hub.repo(REPO, token=TOKEN)
    commit = repo.add_commit(
        {"README.md": b"# arithmetic\n", "default/test/0000.parquet": buffer.getvalue()},
        refs=("main", "v1.0"),
    )
    repo.add_commit({"default/test/0000.parquet": b"not parquet"}, refs=("main",))
    return commit


def dataset_requests(hub: StandInHub) -> list:
    """What the client asked of the dataset (not, say, its user-agent registry)."""
    return [r for r in hub.requests if "/datasets/" in r.path]


def hub_dataset() -> dict:
    return {
        "huggingface": {
            "repo": REPO,
            "revision": "v1.0",
            "config": "default",
            "split": "test",
            "tokenSecretRef": {"name": "hub-token", "key": "token"},
        },
        "inputField": "question",
        "targetField": "answer",
    }


def test_eval_runner_run_reads_a_gated_hub_dataset(tmp_path: Path) -> None:
    hub = StandInHub()
    model = ModelServer()
    with hub.in_thread(), model.in_thread():
        published(hub)
        spec = manifest("hub-local", model, dataset=hub_dataset())
        spec["metadata"] = {"name": "hub-local"}
        path = tmp_path / "evaluation.yaml"
        path.write_text(yaml.safe_dump(spec))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "EVAL_"))}
        env["PYTHONPATH"] = os.pathsep.join(str(ROOT / p) for p in ("api", "runner", "operator"))
        done = subprocess.run(
            [sys.executable, "-m", "eval_runner", "run", str(path), "--no-progress",
             "--output", "json", "--base-url", model.base_url],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
            env={**env, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HOME": str(tmp_path),
                 "EVAL_API_KEY": "local-key"},
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert TOKEN not in done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert report["progress"]["completed"] == len(RECORDS)
        assert {r.token for r in dataset_requests(hub)} == {TOKEN}


def test_an_evaluation_reads_a_gated_hub_dataset_through_the_operators_mirror(
    tmp_path: Path,
) -> None:
    hub = StandInHub()
    with hub.in_thread():
        published(hub)
        with running_cluster(
            tmp_path, environment={"EVAL_OPERATOR_HF_ENDPOINT": hub.url}
        ) as cluster:
            cluster.api.create(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "hub-token", "namespace": NS},
                    "data": {"token": base64.b64encode(f"{TOKEN}\n".encode()).decode()},
                }
            )
            cluster.apply(manifest("hub", cluster.model, dataset=hub_dataset()))
            done = cluster.wait_phase("hub", "Succeeded", timeout=180)
            assert done["status"]["progress"]["completed"] == len(RECORDS)
            assert done["status"]["datasetSource"] == (f"huggingface {REPO}@v1.0 default test")
            seen = json.dumps(done) + json.dumps(cluster.api.list("", "v1", "events", NS))
            seen += json.dumps(cluster.api.list("", "v1", "configmaps", NS))
            assert TOKEN not in seen
        assert {r.token for r in dataset_requests(hub)} == {TOKEN}  # its newline stripped
