"""The emulator's write latency (what etcd's commit costs a real apiserver's writes): writes
wait it side by side, reads and dry runs do not wait."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.kubeapi import running_kubeapi

pytestmark = pytest.mark.integration
LATENCY = 0.5


def config_map(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}}


def test_writes_wait_for_the_commit_side_by_side_and_reads_do_not() -> None:
    with running_kubeapi(write_latency=LATENCY) as api, httpx.Client(timeout=30) as http:
        url = f"{api.url}/api/v1/namespaces/default/configmaps"
        started = time.monotonic()
        http.post(url, json=config_map("one")).raise_for_status()
        assert time.monotonic() - started >= LATENCY
        # Reads, and a dry run (which never reaches etcd), are answered without the wait.
        started = time.monotonic()
        http.get(f"{url}/one").raise_for_status()
        http.post(url, params={"dryRun": "All"}, json=config_map("dry")).raise_for_status()
        assert time.monotonic() - started < LATENCY
        # Ten writes at once wait together, as etcd commits them together: not ten times over.
        started = time.monotonic()
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda n: http.post(url, json=config_map(f"c{n}")), range(10)))
        assert all(a.status_code == 201 for a in answers)
        assert LATENCY <= time.monotonic() - started < 5 * LATENCY
        assert api.get("", "v1", "configmaps", "default", "c9") is not None


def test_a_burst_of_writes_queues_for_the_commits_a_second_it_may_make() -> None:
    with running_kubeapi(write_throughput=20.0) as api, httpx.Client(timeout=30) as http:
        url = f"{api.url}/api/v1/namespaces/default/configmaps"
        started = time.monotonic()
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda n: http.post(url, json=config_map(f"b{n}")), range(20)))
        assert all(a.status_code == 201 for a in answers)
        assert time.monotonic() - started >= 19 / 20  # 20 commits at 20 a second
