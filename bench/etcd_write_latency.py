"""What a write costs behind etcd: the figure `make bench-operator` gives the API emulator.

    python bench/etcd_write_latency.py [--writes 2000] [--clients 1 8]

The emulator keeps objects in memory and answers a write as soon as its CPU work is done; a real
apiserver answers once etcd has committed the object (Raft and fdatasync on the member's disk).
This starts a real etcd (Debian's etcd-server: `apt-get install etcd-server`) on loopback with
its data on this machine's disk, and times what the apiserver's storage layer asks of it for a
create: a transaction "if the key's mod revision is 0, put the object" with a Job-sized value
(3 KiB), over etcd's HTTP gateway, one client after another and several at once. The median is
the per-write latency the emulator adds (KubeAPIServer(write_latency=...)); the apiserver's own
CPU work is the emulator's (in Python, more than the Go apiserver's), so the two together are a
write's cost, not less.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def create_txn(key: str, value: bytes) -> dict:
    """The apiserver's create: put only where the key does not exist yet (mod_revision 0)."""
    return {
        "compare": [{"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": "0"}],
        "success": [{"request_put": {"key": b64(key), "value": b64(value)}}],
        "failure": [{"request_range": {"key": b64(key)}}],
    }


def timed_creates(url: str, prefix: str, count: int, value: bytes) -> list[float]:
    took = []
    with httpx.Client(timeout=30) as http:
        for i in range(count):
            started = time.perf_counter()
            answer = http.post(f"{url}/v3/kv/txn", json=create_txn(f"{prefix}/{i:06d}", value))
            took.append(time.perf_counter() - started)
            answer.raise_for_status()
            if not answer.json().get("succeeded"):
                raise RuntimeError(f"the create of {prefix}/{i} did not succeed: {answer.text}")
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/etcd_write_latency.py", description=__doc__)
    parser.add_argument("--writes", type=int, default=2000, help="creates per client count")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args(argv)
    etcd = shutil.which("etcd")
    if etcd is None:
        print("etcd is not installed: apt-get install etcd-server (Debian)")
        return 2
    value = b"x" * 3072
    with tempfile.TemporaryDirectory(prefix="etcd-latency-", dir=Path.home()) as data:
        client, peer = free_port(), free_port()
        url = f"http://127.0.0.1:{client}"
        process = subprocess.Popen(
            [etcd, "--data-dir", data, "--listen-client-urls", url, "--advertise-client-urls",
             url, "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).json().get("health") == "true":
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("etcd did not start")
                time.sleep(0.1)
            print(f"{etcd_version(etcd)}, data on {data}'s disk; {args.writes} creates of 3 KiB")
            timed_creates(url, "/registry/warmup", 200, value)
            for clients in args.clients:
                results: list[list[float]] = [[] for _ in range(clients)]

                def run(n: int, clients: int = clients, results: list = results) -> None:
                    prefix = f"/registry/jobs/c{clients}-{n}"
                    results[n] = timed_creates(url, prefix, args.writes // clients, value)

                threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
                started = time.perf_counter()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                wall = time.perf_counter() - started
                took = sorted(t for r in results for t in r)
                p50, p90, p99 = (took[int(q * (len(took) - 1))] * 1000 for q in (0.5, 0.9, 0.99))
                print(
                    f"  {clients} client(s) at once: p50 {p50:.2f} ms, p90 {p90:.2f} ms, "
                    f"p99 {p99:.2f} ms, mean {statistics.fmean(took) * 1000:.2f} ms; "
                    f"{len(took) / wall:.0f} creates/s"
                )
        finally:
            process.terminate()
            process.wait(timeout=30)
    return 0


def etcd_version(etcd: str) -> str:
    out = subprocess.run([etcd, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "etcd"


if __name__ == "__main__":
    sys.exit(main())
